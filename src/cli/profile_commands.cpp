#include "cli/profile_commands.h"

#include "cli/output.h"
#include "common/micro_batch.h"
#include "engine/kernel_probe.h"
#include "server/profile_json.h"
#include "server/roofline_cache.h"

#include "store/gguf.h"
#include "store/hardware.h"
#include "store/latency_targets.h"
#include "store/profiles.h"
#include "store/roofline.h"
#include "store/store.h"
#include "store/weight_types.h"

#include "llama.h"
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace inferbox {

namespace {

using json = nlohmann::json;

// A string from a model file or /proc, safe to print on one line.
std::string display(const std::string &s, size_t max_chars = 60) {
    return display_text(s, max_chars);
}

template <typename T> std::string opt_text(const std::optional<T> &v) {
    return v ? std::to_string(*v) : "-";
}

std::string opt_bytes(const std::optional<uint64_t> &v) {
    return v ? format_memory_size(*v) : "-";
}

} // namespace

namespace {

// --- the roofline: measured limits, cached per machine ------------------------------------------

// Measures this machine at its effective thread count (a few seconds) and caches the result;
// `measured_at` gets the time. Unless `fresh`, a figure this run measured slower than the cached
// measurement of this machine keeps the cached one (keep_faster: a busy minute reads low), and
// stderr says which. A cache that cannot be written is reported, not fatal.
machine_roofline measure_roofline(const hardware_info &hw, std::string &measured_at, bool fresh) {
    machine_roofline r;
    r.threads          = hw.n_threads_effective;
    r.read_bytes_per_s = measure_read_bandwidth(r.threads).bytes_per_s;
    // ggml reports each repacked tensor on stderr; the table below says it better.
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    // The types llama.cpp's quantizer writes for the common file types (Q4_K_M and Q5_K_M fall
    // back to q5_0/q8_0 for rows not a multiple of 256, and keep f32 norms).
    static const std::vector<std::string> types = {"f32",  "f16",  "bf16", "q8_0", "q6_k", "q5_k",
                                                   "q5_0", "q4_k", "q4_0", "q3_k", "q2_k"};
    for (const auto &k : measure_kernels(static_cast<int>(r.threads), types)) {
        r.kernel_bytes_per_s[k.type] = k.bytes_per_s;
        if (k.batch_bytes_per_s > 0) {
            r.batch_kernel_bytes_per_s[k.type] = k.batch_bytes_per_s;
        }
    }
    if (auto earlier = fresh ? std::nullopt : read_roofline_cache(hw)) {
        std::vector<std::string> kept;
        r = keep_faster(earlier->roofline, r, &kept);
        if (!kept.empty()) {
            std::string list;
            for (const auto &k : kept) {
                list += (list.empty() ? "" : ", ") + k;
            }
            std::fprintf(stderr,
                         "inferbox hardware: kept the faster earlier figure (measured %s) for: %s; this run read "
                         "slower, as a busy machine does (--fresh replaces them all)\n",
                         earlier->measured_at.empty() ? "at an unknown time" : earlier->measured_at.c_str(),
                         list.c_str());
        }
    }
    const std::time_t now = std::time(nullptr);
    char              when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    measured_at     = when;
    const auto file = default_roofline_file();
    if (!file) {
        std::fprintf(stderr, "inferbox hardware: no cache folder (set INFERBOX_CACHE or HOME): not saved\n");
        return r;
    }
    if (!write_roofline_cache(*file, hw, r, measured_at)) {
        std::fprintf(stderr, "inferbox hardware: could not save the measurement in %s\n", file->string().c_str());
    }
    return r;
}

std::string rate_text(double bytes_per_s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f GB/s", bytes_per_s / 1e9);
    return buf;
}

std::string tps_text(double tps) {
    char buf[32];
    std::snprintf(buf, sizeof buf, tps >= 100 ? "%.0f" : "%.1f", tps);
    return buf;
}

json prediction_json(const decode_prediction &p) {
    return {{"tokens_per_s", p.tokens_per_s},
            {"bandwidth_limit_tokens_per_s", p.bandwidth_tps},
            {"kernel_limit_tokens_per_s", p.kernel_tps > 0 ? json(p.kernel_tps) : json(nullptr)},
            {"bytes_per_token", p.bytes_per_token},
            {"prefill_tokens_per_s", p.prefill_tps > 0 ? json(p.prefill_tps) : json(nullptr)},
            {"bound", p.bound},
            {"unmeasured_types", p.unmeasured}};
}

// A path as one shell word.
std::string shell_word(const std::string &s) {
    if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./+-=:") ==
                          std::string::npos) {
        return s;
    }
    std::string out = "'";
    for (const char c : s) {
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    }
    return out + "'";
}

// The command that makes `type` from `file` (`cached_name`: the model's name in the cache, or "").
std::string quantize_command(const std::filesystem::path &file, const std::string &cached_name,
                             const weight_type &type) {
    std::string cmd = "inferbox import " + shell_word(file.string()) + " --quantize " + std::string(type.name);
    if (!cached_name.empty()) {
        cmd += " --name " + shell_word(cached_name + "-" + std::string(type.name));
    }
    return cmd;
}

json advice_json(const weight_type_advice &a, const std::string &command) {
    json options = json::array();
    for (const auto &o : a.options) {
        options.push_back({{"type", o.type.name},
                           {"quality", o.type.quality},
                           {"ppl_delta", o.type.ppl_delta},
                           {"tokens_per_s", o.prediction.tokens_per_s},
                           {"bytes_per_token", o.prediction.bytes_per_token},
                           {"bound", o.prediction.bound}});
    }
    json rec = nullptr;
    if (a.recommended) {
        rec = {{"type", a.recommended->type.name},
               {"tokens_per_s", a.recommended->prediction.tokens_per_s},
               {"speedup", a.speedup},
               {"needs_original_weights", a.needs_original},
               {"command", a.needs_original ? json(nullptr) : json(command)}};
    }
    return {{"current", a.current},
            {"known", a.known},
            {"quantized", a.quantized},
            {"current_tokens_per_s", a.current_tps},
            {"min_speedup", k_min_weight_type_speedup},
            {"options", std::move(options)},
            {"recommendation", std::move(rec)}};
}

int run_hardware(bool as_json, bool measure, bool fresh) {
    const hardware_info             hw = detect_hardware();
    std::optional<machine_roofline> roof;
    std::string                     measured_at;
    if (measure) {
        roof = measure_roofline(hw, measured_at, fresh);
    } else if (auto c = read_roofline_cache(hw)) {
        roof        = c->roofline;
        measured_at = c->measured_at;
    }
    if (as_json) {
        json j = hardware_json(hw);
        if (roof) {
            j["roofline"]                = roofline_json(*roof);
            j["roofline"]["measured_at"] = measured_at;
        } else {
            j["roofline"] = nullptr;
        }
        print_json(j);
        return 0;
    }
    const auto line = [](const char *key, const std::string &value) { std::printf("%-18s%s\n", key, value.c_str()); };
    line("cpu:", (hw.cpu_model.empty() ? std::string("-") : display(hw.cpu_model)) + " (" + hw.arch + ")");
    std::string isa;
    for (auto name : isa_feature_names(hw.isa)) {
        isa += (isa.empty() ? "" : " ") + std::string(name);
    }
    line("isa:", isa.empty() ? "-" : isa);
    line("logical cpus:", opt_text(hw.n_logical_cpus) + " (this process may use " + opt_text(hw.n_cpus_allowed) + ")");
    line("physical cores:", opt_text(hw.n_physical_cores));
    if (hw.cgroup_cpu_quota) {
        char q[32];
        std::snprintf(q, sizeof q, "%.2f CPUs", *hw.cgroup_cpu_quota);
        line("cgroup cpu quota:", q);
    } else {
        line("cgroup cpu quota:", "none");
    }
    line("effective:",
         std::to_string(hw.n_cores_effective) + " cores, " + std::to_string(hw.n_threads_effective) + " threads");
    line("caches:",
         "L1d " + opt_bytes(hw.l1d_bytes) + ", L2 " + opt_bytes(hw.l2_bytes) + ", L3 " + opt_bytes(hw.l3_bytes));
    line("ram:", opt_bytes(hw.ram_total) + " total, " + opt_bytes(hw.ram_available) + " available");
    line("cgroup memory:", hw.cgroup_mem_limit ? "limit " + format_memory_size(*hw.cgroup_mem_limit) + ", using " +
                                                     opt_bytes(hw.cgroup_mem_usage)
                                               : std::string("no limit"));
    line("effective ram:", format_memory_size(hw.ram_total_effective) + " total, " +
                               format_memory_size(hw.ram_available_effective) + " available");
    line("memlock limit:", !hw.memlock_limit                 ? std::string("-")
                           : *hw.memlock_limit == UINT64_MAX ? std::string("unlimited")
                                                             : format_memory_size(*hw.memlock_limit));
    if (hw.gpus.empty()) {
        line("gpus:", "none");
    }
    for (const auto &g : hw.gpus) {
        line("gpu:", display(g.name) + " (" + g.backend + ", " + format_memory_size(g.free_bytes) + " free of " +
                         format_memory_size(g.total_bytes) + ")");
    }
    if (!roof) {
        line("memory read:", "not measured (inferbox hardware --measure)");
        return 0;
    }
    line("memory read:", rate_text(roof->read_bytes_per_s) + " on " + std::to_string(roof->threads) + " threads" +
                             (measured_at.empty() ? "" : " (measured " + measured_at + ")"));
    for (const auto &[type, bps] : roof->kernel_bytes_per_s) {
        const auto batched = roof->batch_kernel_bytes_per_s.find(type);
        line(("kernel " + type + ":").c_str(),
             rate_text(bps) + " of weights through the matrix-vector product" +
                 (bps < roof->read_bytes_per_s ? " (below the memory limit: the kernel binds)" : "") +
                 (batched != roof->batch_kernel_bytes_per_s.end()
                      ? "; " + rate_text(batched->second) + " through a " + std::to_string(k_probe_batch_columns) +
                            "-token product (prompts)"
                      : std::string()));
    }
    return 0;
}

// The weight-type advice for a model, with the command that makes the recommended type.
struct weight_advice {
    weight_type_advice advice;
    std::string        command; // "" without a recommendation
};

std::optional<weight_advice> advise_model(const gguf_info &info, const machine_roofline &roof,
                                          const std::filesystem::path &file, const std::string &model_text) {
    auto a = advise_weight_type(info, roof);
    if (!a) {
        return std::nullopt;
    }
    weight_advice out{std::move(*a), {}};
    if (out.advice.recommended) {
        const auto ref = parse_model_ref(model_text);
        out.command =
            quantize_command(file, ref && ref->kind == model_ref_kind::cached_name ? ref->name : std::string(),
                             out.advice.recommended->type);
    }
    return out;
}

// One line when a faster type of equal or better quality exists.
void print_advice(const weight_advice &w) {
    const weight_type_advice *advice = &w.advice;
    if (!advice->recommended) {
        return;
    }
    const auto        &r              = *advice->recommended;
    const std::string &advice_command = w.command;
    if (advice->needs_original) {
        std::printf("weight type: %s would decode %.0f%% faster (%s tokens/s) at equal or better quality than "
                    "%s, but only made from the original F32/F16/BF16 weights: requantizing this file cannot "
                    "restore what it lost (inferbox import ORIGINAL.gguf --quantize %s)\n",
                    std::string(r.type.name).c_str(), (advice->speedup - 1) * 100,
                    tps_text(r.prediction.tokens_per_s).c_str(), advice->current.c_str(),
                    std::string(r.type.name).c_str());
    } else {
        std::printf(
            "weight type: %s would decode %.0f%% faster (%s tokens/s, %s a token) at equal or better "
            "quality than %s: %s\n",
            std::string(r.type.name).c_str(), (advice->speedup - 1) * 100, tps_text(r.prediction.tokens_per_s).c_str(),
            format_memory_size(r.prediction.bytes_per_token).c_str(), advice->current.c_str(), advice_command.c_str());
    }
}

// The predicted decode rate and, when another weight type would be faster, that advice.
void print_decode(const std::optional<decode_prediction> &predicted, const std::optional<weight_advice> &advice) {
    if (predicted) {
        std::printf("decode, 1 stream, short context (predicted from `inferbox hardware --measure`): %s tokens/s "
                    "(memory limit %s, kernel limit %s; %s bound; %s of weights a token)\n",
                    tps_text(predicted->tokens_per_s).c_str(), tps_text(predicted->bandwidth_tps).c_str(),
                    predicted->kernel_tps > 0 ? tps_text(predicted->kernel_tps).c_str() : "-", predicted->bound.c_str(),
                    format_memory_size(predicted->bytes_per_token).c_str());
        if (predicted->prefill_tps > 0) {
            std::printf("prompt, short (predicted from the batched kernels): %s tokens/s\n",
                        tps_text(predicted->prefill_tps).c_str());
        }
    } else {
        std::printf("decode prediction: run `inferbox hardware --measure` once to measure this machine's limits\n");
    }
    if (advice) {
        print_advice(*advice);
    }
}

// --- profiles ---------------------------------------------------------------------------------

struct profiles_options {
    std::string model;
    bool        json = false;
    std::string goal = "latency";
    // A custom configuration to estimate next to the candidates (0: not given).
    int32_t     ctx_size   = 0;
    int32_t     parallel   = 0;
    int32_t     batch_size = 0;
    int32_t     threads    = 0;
    std::string kv_type;
    std::string memory_budget; // "" or a size: the budget instead of the detected one
    std::string draft_model;   // "" or a model reference: every estimate includes it (serve --draft-model)
};

// "512M", "2G", "1.5G", "300000000": bytes, with K/M/G/T as binary units (an optional "iB" or
// "B" after the letter). nullopt when malformed or beyond 2^60.
std::optional<uint64_t> parse_size(std::string text) {
    for (const char *suffix : {"iB", "B"}) {
        const std::string s(suffix);
        if (text.size() > s.size() && text.compare(text.size() - s.size(), s.size(), s) == 0) {
            text.resize(text.size() - s.size());
            break;
        }
    }
    double unit = 1;
    if (!text.empty()) {
        switch (text.back()) {
        case 'K':
        case 'k':
            unit = 1024.0;
            break;
        case 'M':
        case 'm':
            unit = 1024.0 * 1024;
            break;
        case 'G':
        case 'g':
            unit = 1024.0 * 1024 * 1024;
            break;
        case 'T':
        case 't':
            unit = 1024.0 * 1024 * 1024 * 1024;
            break;
        default:
            break;
        }
        if (unit != 1) {
            text.pop_back();
        }
    }
    if (text.empty() || text.find_first_not_of("0123456789.") != std::string::npos ||
        std::count(text.begin(), text.end(), '.') > 1 || text == ".") {
        return std::nullopt;
    }
    const double v = std::strtod(text.c_str(), nullptr) * unit;
    if (!(v >= 0) || v > double(uint64_t(1) << 60)) {
        return std::nullopt;
    }
    return uint64_t(v);
}

json shape_json(const model_shape &m) {
    json notes = json::array();
    for (const auto &n : m.notes) {
        notes.push_back(n);
    }
    return json{{"architecture", m.architecture},
                {"recurrent", m.recurrent},
                {"hybrid", m.hybrid},
                {"context_length", m.n_ctx_train},
                {"block_count", m.n_layer},
                {"embedding_length", m.n_embd},
                {"head_count", m.n_head},
                {"head_count_kv", m.n_head_kv},
                {"key_length", m.n_embd_head_k},
                {"value_length", m.n_embd_head_v},
                {"feed_forward_length", m.n_ff},
                {"vocab_size", m.n_vocab},
                {"weight_bytes", m.weight_bytes},
                {"repacked_bytes", m.repacked_bytes},
                {"problem", m.problem.empty() ? json(nullptr) : json(m.problem)},
                {"notes", std::move(notes)}};
}

std::string status_text(const model_profile &p) {
    std::string s(profile_status_name(p.status));
    if (!p.detail.empty()) {
        s += p.status == profile_status::low_memory ? ": fits with " + p.detail : ": " + p.detail;
    }
    return s;
}

// The local file behind a model reference (a path, a cached name, or a pulled hf:// or https://
// reference), as `show` resolves it, and its GGUF header.
struct model_file {
    std::filesystem::path file;
    gguf_info             info;
};

result<model_file> read_model_ref(const std::string &text) {
    auto ref = parse_model_ref(text);
    if (!ref) {
        return ref.err();
    }
    std::filesystem::path file;
    std::string           label = text;
    if (ref->kind == model_ref_kind::local_path) {
        file = ref->path;
    } else {
        auto root = model_store::default_root();
        if (!root) {
            return root.err();
        }
        const model_store store(*root);
        auto e = ref->kind == model_ref_kind::cached_name ? store.find(ref->name) : find_pulled(store, *ref);
        if (!e) {
            return e.err();
        }
        file  = e->file;
        label = file.string();
    }
    auto info = read_gguf_file(file, label);
    if (!info) {
        return info.err();
    }
    return model_file{file, std::move(*info)};
}

// The candidates as a table, each with its default latency targets (`targets_of`), and a line
// saying what those were predicted from.
template <typename TargetsOf> void print_profile_table(const profile_set &set, const TargetsOf &targets_of) {
    std::vector<std::vector<std::string>> table = {{"NAME", "FLAVOUR", "THREADS", "PARALLEL", "CTX", "BATCH/UBATCH",
                                                    "KV", "FLASH", "GPU-LAYERS", "EST.MEMORY", "TTFT/ITL", "STATUS"}};
    std::string                           basis; // what the listed targets come from (every CPU profile's is the same)
    for (const auto &p : set.profiles) {
        const profile_settings &s       = p.settings;
        const latency_defaults  targets = targets_of(p);
        if (!targets.basis.empty()) {
            basis = targets.basis;
        }
        table.push_back(
            {p.name, std::string(profile_flavour_name(p.flavour)), std::to_string(s.n_threads),
             std::to_string(s.parallel), std::to_string(s.n_ctx_slot),
             std::to_string(s.n_batch) + "/" + std::to_string(s.n_ubatch), std::string(kv_cache_type_name(s.kv_type)),
             s.flash_attn ? "on" : "off", std::to_string(s.n_gpu_layers), format_memory_size(p.memory.total()),
             targets.basis.empty() ? std::string("-")
                                   : std::to_string(targets.ttft_ms) + "/" + std::to_string(targets.itl_ms) + "ms",
             status_text(p)});
    }
    print_table(table);
    if (basis == "measured") {
        std::printf("latency targets (TTFT/ITL): serve's defaults, from the decode prediction of the measured "
                    "roofline\n");
    } else if (!basis.empty()) {
        std::printf("latency targets (TTFT/ITL): serve's defaults, from an assumed %.0f GB/s memory read "
                    "(no measurement: `inferbox hardware --measure` makes them fit this machine)\n",
                    k_fallback_read_bytes_per_s / 1e9);
    }
}

int run_profiles(const profiles_options &o) {
    auto found = read_model_ref(o.model);
    if (!found) {
        return cli_fail("profiles", found.err().message);
    }
    const std::filesystem::path &file = found->file;
    const gguf_info *const       info = &found->info;

    profile_options           po;
    std::optional<model_file> draft; // outlives list_profiles(), which reads po.draft
    if (!o.draft_model.empty()) {
        auto read = read_model_ref(o.draft_model);
        if (!read) {
            return cli_fail("profiles", "--draft-model: " + read.err().message);
        }
        draft    = std::move(*read);
        po.draft = &draft->info;
    }
    if (!o.memory_budget.empty()) {
        po.budget_bytes = parse_size(o.memory_budget);
        if (!po.budget_bytes) {
            return cli_fail("profiles", "--memory-budget '" + display(o.memory_budget, 40) +
                                            "' is not a size (bytes, or a number with K, M, G or T)");
        }
    }
    hardware_info hw = detect_hardware();
    if (auto cached = read_roofline_cache(hw)) {
        hw.roofline = cached->roofline;
    }
    profile_set set = list_profiles(*info, hw, po);
    if (o.ctx_size > 0 || o.parallel > 0 || o.batch_size > 0 || o.threads > 0 || !o.kv_type.empty()) {
        profile_settings s;
        s.parallel   = o.parallel > 0 ? o.parallel : 1;
        s.n_ctx_slot = o.ctx_size; // 0: trained
        s.n_batch    = o.batch_size > 0 ? o.batch_size : 2048;
        s.n_ubatch   = micro_batch_for(true, s.n_batch); // as the engine configures llama.cpp on the CPU
        s.n_threads  = o.threads > 0 ? o.threads : int32_t(hw.n_threads_effective);
        // The KV type and flash attention serve would settle for these flags (no GPU layers).
        const std::optional<kv_cache_type> kv = parse_kv_cache_type(o.kv_type); // "" or "auto": nullopt
        // llama.cpp runs grok without flash attention.
        const std::optional<bool> flash = set.model.architecture == "grok" ? std::optional(false) : std::nullopt;
        set.profiles.push_back(evaluate_attention_options(
            set.model, hw, set.budget, "custom",
            s.parallel > 1 ? profile_flavour::throughput : profile_flavour::latency, s,
            attention_candidates(kv, flash, cpu_attention_site(set.model)), set.draft ? &*set.draft : nullptr));
    }
    const pick_goal goal   = o.goal == "throughput" ? pick_goal::throughput : pick_goal::latency;
    auto            picked = pick_profile(set, goal);
    // The single-stream decode rate the measured roofline predicts (none before a measurement).
    std::optional<decode_prediction> predicted;
    std::optional<weight_advice>     advice; // another weight type, when one decodes faster
    if (hw.roofline) {
        predicted = predict_decode(*info, *hw.roofline);
        advice    = advise_model(*info, *hw.roofline, file, o.model);
    }
    // Each candidate's default latency targets (what serve runs with when no --slo-* flag is given).
    const machine_roofline *roof = hw.roofline ? &*hw.roofline : nullptr;
    const auto targets_of = [&](const model_profile &p) { return profile_latency_defaults(*info, p.settings, roof); };

    if (o.json) {
        json profiles = json::array();
        for (const auto &p : set.profiles) {
            json j               = profile_to_json(p);
            j["latency_targets"] = latency_defaults_json(targets_of(p));
            profiles.push_back(std::move(j));
        }
        json pick = nullptr;
        if (picked) {
            pick = {{"name", set.profiles[picked->index].name},
                    {"adjusted", picked->adjusted},
                    {"settings", settings_to_json(picked->settings)},
                    {"memory", memory_to_json(picked->memory)},
                    {"latency_targets", latency_defaults_json(profile_latency_defaults(*info, picked->settings, roof))},
                    {"reason", picked->reason}};
        }
        print_json(
            json{{"file", file.string()},
                 {"model", shape_json(set.model)},
                 {"hardware", hardware_json(hw)},
                 {"budget",
                  {{"available", set.budget.available}, {"margin", set.budget.margin}, {"bytes", set.budget.bytes}}},
                 {"goal", o.goal},
                 {"profiles", std::move(profiles)},
                 {"pick", std::move(pick)},
                 {"pick_error", picked ? json(nullptr) : json(picked.err().message)},
                 {"decode_prediction", predicted ? prediction_json(*predicted) : json(nullptr)},
                 {"weight_type_advice", advice ? advice_json(advice->advice, advice->command) : json(nullptr)}});
        return 0;
    }

    const model_shape &m = set.model;
    std::printf(
        "model:  %s (%s, %s params, %s, %s of weights, trained context %s)\n", display(file.string(), 200).c_str(),
        m.architecture.empty() ? "-" : display(m.architecture, 30).c_str(), format_param_count(info->n_params).c_str(),
        info->quantization.empty() ? "-" : info->quantization.c_str(), format_memory_size(m.weight_bytes).c_str(),
        m.n_ctx_train > 0 ? std::to_string(m.n_ctx_train).c_str() : "-");
    if (po.budget_bytes) {
        std::printf("budget: %s (--memory-budget)\n", format_memory_size(set.budget.bytes).c_str());
    } else {
        std::printf("budget: %s (available %s - margin %s)\n", format_memory_size(set.budget.bytes).c_str(),
                    format_memory_size(set.budget.available).c_str(), format_memory_size(set.budget.margin).c_str());
    }
    print_profile_table(set, targets_of);
    print_decode(predicted, advice);
    for (const auto &n : m.notes) {
        std::printf("note: %s\n", n.c_str());
    }
    if (picked) {
        std::printf("serve would pick (%s): %s\n", o.goal.c_str(), picked->reason.c_str());
    } else {
        std::printf("serve would refuse to start: %s\n", picked.err().message.c_str());
    }
    return 0;
}

} // namespace

void add_profile_commands(CLI::App &app, std::function<int()> &action) {
    auto po = std::make_shared<profiles_options>();
    auto cmd =
        app.add_subcommand("profiles", "list serving profiles for a model on this machine, with memory estimates");
    cmd->add_option("-m,--model", po->model, "cached model name or path of a GGUF file")->required();
    cmd->add_flag("--json", po->json, "print JSON");
    cmd->add_option("--goal", po->goal, "what the pick optimises: latency | throughput")
        ->capture_default_str()
        ->check(CLI::IsMember({"latency", "throughput"}));
    cmd->add_option("-c,--ctx-size", po->ctx_size, "also estimate a custom profile with this context per sequence")
        ->check(CLI::Range(1, 1 << 24));
    cmd->add_option("--parallel", po->parallel, "also estimate a custom profile with this many slots")
        ->check(CLI::Range(1, 256));
    cmd->add_option("-b,--batch-size", po->batch_size, "batch size of the custom profile")
        ->check(CLI::Range(2, 1 << 16));
    cmd->add_option("-t,--threads", po->threads, "threads of the custom profile")->check(CLI::Range(1, 1024));
    cmd->add_option("--kv-type", po->kv_type,
                    "KV cache type of the custom profile: auto (as serve settles it) | f32 | f16 | q8_0")
        ->check(CLI::IsMember({"auto", "f32", "f16", "q8_0"}));
    cmd->add_option("--memory-budget", po->memory_budget,
                    "estimate against this budget instead of the detected one (e.g. 6G, 512M)");
    cmd->add_option("--draft-model", po->draft_model,
                    "include this draft model (serve --draft-model) in every estimate: a path or a cached name");
    cmd->callback([&action, po] { action = [po] { return run_profiles(*po); }; });

    auto as_json = std::make_shared<bool>(false);
    auto measure = std::make_shared<bool>(false);
    auto hw      = app.add_subcommand("hardware", "print the detected hardware (CPU, cores, caches, memory, limits)");
    hw->add_flag("--json", *as_json, "print JSON");
    hw->add_flag("--measure", *measure,
                 "measure memory read bandwidth and each weight type's kernel throughput (seconds) and cache them; "
                 "`profiles` predicts decode speed from them");
    auto fresh = std::make_shared<bool>(false);
    hw->add_flag("--fresh", *fresh,
                 "with --measure: replace the cached figures even where this run measured slower (by default a "
                 "slower figure keeps the cached one: a busy machine reads low)");
    hw->callback([&action, as_json, measure, fresh] {
        action = [as_json, measure, fresh] { return run_hardware(*as_json, *measure || *fresh, *fresh); };
    });
}

} // namespace inferbox
