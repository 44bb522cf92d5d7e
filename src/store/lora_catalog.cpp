#include "store/lora_catalog.h"

#include "store/gguf.h"

#include <algorithm>
#include <system_error>

namespace inferbox {

namespace fs = std::filesystem;

namespace {

bool inside(const fs::path &root, const fs::path &p) {
    std::error_code ec;
    const fs::path  r = fs::weakly_canonical(root, ec);
    if (ec) {
        return false;
    }
    const fs::path c = fs::weakly_canonical(p, ec);
    if (ec) {
        return false;
    }
    auto [ri, ci] = std::mismatch(r.begin(), r.end(), c.begin(), c.end());
    return ri == r.end();
}

std::string string_value(const gguf_info &info, std::string_view key) {
    const gguf_value  *v = info.find(key);
    const std::string *s = v != nullptr ? v->as_string() : nullptr;
    return s != nullptr ? *s : std::string();
}

} // namespace

bool lora_catalog::valid_name(std::string_view name) {
    if (name.empty() || name.size() > 128 || name.front() == '.') {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == '-';
    });
}

lora_catalog::lora_catalog(fs::path dir, std::string base_architecture)
    : dir_(std::move(dir)), arch_(std::move(base_architecture)) {}

std::vector<std::string> lora_catalog::rescan() {
    std::vector<lora_entry>  found;
    std::vector<std::string> skipped;
    std::error_code          ec;
    fs::directory_iterator   it(dir_, ec);
    if (ec) {
        skipped.push_back(dir_.filename().string() + ": cannot read the adapter folder (" + ec.message() + ")");
    }
    for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
        const fs::path p = it->path();
        std::string    name;
        fs::path       file;
        if (fs::is_directory(p, ec)) {
            name = p.filename().string();
            std::vector<fs::path> ggufs;
            std::error_code       ec2;
            for (fs::directory_iterator in(p, ec2); !ec2 && in != fs::directory_iterator(); in.increment(ec2)) {
                if (in->path().extension() == ".gguf") {
                    ggufs.push_back(in->path());
                }
            }
            if (ggufs.size() != 1) {
                skipped.push_back(name + ": an adapter folder must hold exactly one .gguf file, it holds " +
                                  std::to_string(ggufs.size()));
                continue;
            }
            file = ggufs.front();
        } else if (p.extension() == ".gguf") {
            name = p.stem().string();
            file = p;
        } else {
            continue; // other files (READMEs, checksums) are not adapters
        }
        ec.clear();
        if (!valid_name(name)) {
            skipped.push_back(name.substr(0, 128) + ": not a valid adapter name (letters, digits, '.', '_', '-')");
            continue;
        }
        if (!inside(dir_, file)) {
            skipped.push_back(name + ": resolves outside the adapter folder");
            continue;
        }
        auto info = read_gguf_file(file, name);
        if (!info) {
            skipped.push_back(info.err().message);
            continue;
        }
        if (string_value(*info, "general.type") != "adapter" || string_value(*info, "adapter.type") != "lora") {
            skipped.push_back(name + ": not a LoRA adapter (general.type '" + string_value(*info, "general.type") +
                              "', adapter.type '" + string_value(*info, "adapter.type") + "')");
            continue;
        }
        if (info->architecture != arch_) {
            skipped.push_back(name + ": an adapter for architecture '" + info->architecture + "', the base model is '" +
                              arch_ + "'");
            continue;
        }
        found.push_back({name, file, info->file_size, info->n_params});
    }
    std::sort(found.begin(), found.end(), [](const lora_entry &a, const lora_entry &b) { return a.name < b.name; });
    std::lock_guard lock(mu_);
    entries_   = std::move(found);
    last_scan_ = std::chrono::steady_clock::now();
    return skipped;
}

std::vector<lora_entry> lora_catalog::list() const {
    std::lock_guard lock(mu_);
    return entries_;
}

std::optional<lora_entry> lora_catalog::find(std::string_view name) {
    const auto lookup = [&]() -> std::optional<lora_entry> {
        std::lock_guard lock(mu_);
        for (const auto &e : entries_) {
            if (e.name == name) {
                return e;
            }
        }
        return std::nullopt;
    };
    if (auto e = lookup()) {
        return e;
    }
    if (!valid_name(name)) {
        return std::nullopt;
    }
    {
        std::lock_guard lock(mu_);
        if (std::chrono::steady_clock::now() - last_scan_ < min_rescan_interval) {
            return std::nullopt;
        }
    }
    rescan();
    return lookup();
}

} // namespace inferbox
