#include "server/roofline_cache.h"

#include "store/store.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <system_error>

#include <unistd.h>

namespace inferbox {

using json = nlohmann::json;

std::string roofline_machine_key(const hardware_info &hw) {
    std::string isa;
    for (auto name : isa_feature_names(hw.isa)) {
        isa += std::string(name) + " ";
    }
    return hw.arch + "|" + hw.cpu_model + "|" + isa + "|" + std::to_string(hw.n_threads_effective);
}

std::optional<std::filesystem::path> default_roofline_file() {
    auto root = model_store::default_root();
    if (!root) {
        return std::nullopt;
    }
    return *root / "roofline.json";
}

json roofline_json(const machine_roofline &r) {
    // A map of type name to rate is a JSON object (an empty one when nothing was measured).
    return {{"threads", r.threads},
            {"read_bytes_per_s", r.read_bytes_per_s},
            {"kernel_bytes_per_s", json(r.kernel_bytes_per_s)},
            {"batch_kernel_bytes_per_s", json(r.batch_kernel_bytes_per_s)}};
}

std::optional<cached_roofline> read_roofline_cache(const std::filesystem::path &file, const hardware_info &hw) {
    std::ifstream in(file);
    if (!in) {
        return std::nullopt;
    }
    const json j = json::parse(in, nullptr, false);
    // Every field is checked for its type before it is read: a damaged file is ignored.
    const auto field = [&j](const char *key) { return j.is_object() && j.contains(key) ? j[key] : json(); };
    if (!field("machine").is_string() || field("machine").get<std::string>() != roofline_machine_key(hw) ||
        !field("read_bytes_per_s").is_number() || !field("threads").is_number_unsigned()) {
        return std::nullopt;
    }
    cached_roofline c;
    c.roofline.threads          = field("threads").get<uint32_t>();
    c.roofline.read_bytes_per_s = field("read_bytes_per_s").get<double>();
    const auto rates            = [&field](const char *key, std::map<std::string, double> &into) {
        if (const json kernels = field(key); kernels.is_object()) {
            for (const auto &[type, v] : kernels.items()) {
                if (v.is_number()) {
                    into[type] = v.get<double>();
                }
            }
        }
    };
    rates("kernel_bytes_per_s", c.roofline.kernel_bytes_per_s);
    // Absent from a cache written before the batched probe: prompt predictions fall back.
    rates("batch_kernel_bytes_per_s", c.roofline.batch_kernel_bytes_per_s);
    const json when = field("measured_at");
    c.measured_at   = when.is_string() ? when.get<std::string>() : std::string();
    return c;
}

std::optional<cached_roofline> read_roofline_cache(const hardware_info &hw) {
    const auto file = default_roofline_file();
    return file ? read_roofline_cache(*file, hw) : std::nullopt;
}

bool write_roofline_cache(const std::filesystem::path &file, const hardware_info &hw, const machine_roofline &r,
                          const std::string &measured_at) {
    json j           = roofline_json(r);
    j["machine"]     = roofline_machine_key(hw);
    j["measured_at"] = measured_at;
    std::error_code ec;
    std::filesystem::create_directories(file.parent_path(), ec);
    const auto partial = file.string() + ".partial." + std::to_string(::getpid());
    bool       written = false;
    {
        std::ofstream out(partial);
        out << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
        out.close();
        written = !out.fail();
    }
    if (written) {
        std::filesystem::rename(partial, file, ec);
    }
    if (!written || ec) {
        std::filesystem::remove(partial, ec);
        return false;
    }
    return true;
}

} // namespace inferbox
