#include "server/profile_json.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace inferbox {

using json = nlohmann::json;

namespace {

template <typename T> json opt_json(const std::optional<T> &v) {
    return v ? json(*v) : json(nullptr);
}

} // namespace

json hardware_json(const hardware_info &hw) {
    json isa = json::array();
    for (auto name : isa_feature_names(hw.isa)) {
        isa.push_back(std::string(name));
    }
    json gpus = json::array();
    for (const auto &g : hw.gpus) {
        gpus.push_back(
            {{"name", g.name}, {"backend", g.backend}, {"total_bytes", g.total_bytes}, {"free_bytes", g.free_bytes}});
    }
    const bool unlimited = hw.memlock_limit && *hw.memlock_limit == UINT64_MAX;
    return json{
        {"arch", hw.arch},
        {"cpu_model", hw.cpu_model.empty() ? json(nullptr) : json(hw.cpu_model)},
        {"isa", std::move(isa)},
        {"logical_cpus", opt_json(hw.n_logical_cpus)},
        {"physical_cores", opt_json(hw.n_physical_cores)},
        {"cpus_allowed", opt_json(hw.n_cpus_allowed)},
        {"cgroup_cpu_quota", opt_json(hw.cgroup_cpu_quota)},
        {"effective_cores", hw.n_cores_effective},
        {"effective_threads", hw.n_threads_effective},
        {"cache",
         {{"l1d_bytes", opt_json(hw.l1d_bytes)},
          {"l2_bytes", opt_json(hw.l2_bytes)},
          {"l3_bytes", opt_json(hw.l3_bytes)}}},
        {"ram_total_bytes", opt_json(hw.ram_total)},
        {"ram_available_bytes", opt_json(hw.ram_available)},
        {"cgroup_memory_limit_bytes", opt_json(hw.cgroup_mem_limit)},
        {"cgroup_memory_usage_bytes", opt_json(hw.cgroup_mem_usage)},
        {"effective_ram_total_bytes", hw.ram_total_effective},
        {"effective_ram_available_bytes", hw.ram_available_effective},
        {"memlock_limit_bytes", unlimited ? json("unlimited") : opt_json(hw.memlock_limit)},
        {"gpus", std::move(gpus)},
    };
}

json latency_defaults_json(const latency_defaults &d) {
    const auto ms = [](int32_t v) { return v > 0 ? json(v) : json(nullptr); };
    return json{{"ttft_ms", ms(d.ttft_ms)},
                {"itl_ms", ms(d.itl_ms)},
                {"basis", d.basis.empty() ? json(nullptr) : json(d.basis)},
                {"note", d.note.empty() ? json(nullptr) : json(d.note)},
                {"decode_tokens_per_s", d.decode_tokens_per_s},
                {"step_ms", d.step_ms},
                {"prefill_ms", d.prefill_ms},
                {"prefill_basis", d.basis.empty()     ? json(nullptr)
                                  : d.prefill_batched ? json("batched kernels")
                                                      : json("matrix-vector kernels")},
                {"prompt_tokens", d.prompt_tokens}};
}

json latency_targets_json(const settled_targets &t) {
    const auto ms = [](int32_t v) { return v > 0 ? json(v) : json(nullptr); };
    return json{{"ttft_ms", ms(t.ttft_ms)},
                {"itl_ms", ms(t.itl_ms)},
                {"ttft_source", std::string(target_source_name(t.ttft_source))},
                {"itl_source", std::string(target_source_name(t.itl_source))},
                {"profile_defaults", latency_defaults_json(t.defaults)}};
}

json memory_to_json(const memory_estimate &m) {
    return json{{"weights", m.weights},     {"kv_cache", m.kv_cache}, {"compute", m.compute},
                {"overhead", m.overhead},   {"total", m.total()},     {"page_cache", m.page_cache},
                {"peak_rss", m.peak_rss()}, {"remote", m.remote},     {"draft", m.draft}};
}

json settings_to_json(const profile_settings &s) {
    return json{{"device", s.gpu ? "gpu" : (s.rpc ? "rpc" : "cpu")},
                {"threads", s.n_threads},
                {"parallel", s.parallel},
                {"ctx_size", s.n_ctx_slot},
                {"batch_size", s.n_batch},
                {"ubatch_size", s.n_ubatch},
                {"kv_cache_type", std::string(kv_cache_type_name(s.kv_type))},
                {"flash_attn", s.flash_attn},
                {"mmap", s.use_mmap},
                {"mlock", s.use_mlock},
                {"gpu_layers", s.n_gpu_layers}};
}

json profile_to_json(const model_profile &p) {
    json j = {{"name", p.name}, {"flavour", std::string(profile_flavour_name(p.flavour))}};
    j.update(settings_to_json(p.settings));
    j["memory"] = memory_to_json(p.memory);
    j["status"] = std::string(profile_status_name(p.status));
    j["detail"] = p.detail.empty() ? json(nullptr) : json(p.detail);
    if (p.fit && p.fit_memory) {
        j["fit"]           = settings_to_json(*p.fit);
        j["fit"]["memory"] = memory_to_json(*p.fit_memory);
    } else {
        j["fit"] = nullptr;
    }
    return j;
}

} // namespace inferbox
