#include "cli/store_commands.h"

#include "cli/output.h"
#include "common/failpoint.h"
#include "engine/quantize.h"
#include "store/hardware.h"

#include "store/gguf.h"
#include "store/imatrix.h"
#include "store/store.h"
#include "store/weight_types.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace inferbox {

namespace {

using json = nlohmann::json;

// A string from a model file, safe to print on one line.
std::string display(const std::string &s, size_t max_chars = 40) {
    return display_text(s, max_chars);
}

std::string opt_text(const std::optional<uint64_t> &v) {
    return v ? std::to_string(*v) : "-";
}

json opt_json(const std::optional<uint64_t> &v) {
    return v ? json(*v) : json(nullptr);
}

result<model_store> open_store() {
    auto root = model_store::default_root();
    if (!root) {
        return root.err();
    }
    return model_store(*root);
}

json value_json(const gguf_value &v) {
    return std::visit(
        [&](const auto &x) -> json {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, gguf_array>) {
                return json{{"type", "array"},
                            {"element_type", std::string(gguf_type_name(x.element_type))},
                            {"length", x.length}};
            } else {
                return json(x);
            }
        },
        v.value);
}

json summary_json(const gguf_info &g) {
    return json{
        {"architecture", g.architecture},
        {"general_name", g.name},
        {"parameters", g.n_params},
        {"parameters_text", format_param_count(g.n_params)},
        {"quantization", g.quantization},
        {"context_length", opt_json(g.context_length)},
        {"embedding_length", opt_json(g.embedding_length)},
        {"block_count", opt_json(g.block_count)},
        {"head_count", opt_json(g.head_count)},
        {"head_count_kv", opt_json(g.head_count_kv)},
        {"vocab_size", opt_json(g.vocab_size)},
        {"chat_template", g.has_chat_template},
    };
}

// --- import ---------------------------------------------------------------------------------

struct import_options {
    std::string path;
    std::string name;
    std::string quantize; // "": copy as is
    std::string imatrix;
    int32_t     threads          = 0;
    bool        allow_requantize = false;
};

// The quantizer's output while it is being written: a SIGINT or SIGTERM deletes it (and its
// staging folder, empty then) before the process dies, so an interrupted import leaves nothing.
char g_partial_file[4096];
char g_partial_dir[4096];

extern "C" void on_quantize_signal(int sig) {
    ::unlink(g_partial_file); // async-signal-safe, as are rmdir and raise
    ::rmdir(g_partial_dir);
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

class partial_output_guard {
  public:
    explicit partial_output_guard(const std::filesystem::path &file) {
        const std::string f = file.string();
        const std::string d = file.parent_path().string();
        if (f.size() < sizeof g_partial_file && d.size() < sizeof g_partial_dir) {
            std::memcpy(g_partial_file, f.c_str(), f.size() + 1);
            std::memcpy(g_partial_dir, d.c_str(), d.size() + 1);
            struct sigaction sa {};
            sa.sa_handler = on_quantize_signal;
            sigemptyset(&sa.sa_mask);
            sigaction(SIGINT, &sa, &old_int_);
            sigaction(SIGTERM, &sa, &old_term_);
            armed_ = true;
        }
    }
    ~partial_output_guard() {
        if (armed_) {
            sigaction(SIGINT, &old_int_, nullptr);
            sigaction(SIGTERM, &old_term_, nullptr);
        }
    }
    partial_output_guard(const partial_output_guard &)            = delete;
    partial_output_guard &operator=(const partial_output_guard &) = delete;

  private:
    struct sigaction old_int_ {};
    struct sigaction old_term_ {};
    bool             armed_ = false;
};

int run_quantized_import(const import_options &o, model_store &store) {
    const auto type = find_weight_type(o.quantize);
    if (!type) {
        return cli_fail("import", "unknown weight type '" + display(o.quantize) +
                                      "' for --quantize; accepted: " + weight_type_names());
    }
    auto info = read_gguf_file(o.path, o.path);
    if (!info) {
        return cli_fail("import", info.err().message);
    }
    // A matrix already quantized loses precision again: refuse unless asked.
    const auto quantized = std::find_if(info->tensors.begin(), info->tensors.end(), [](const gguf_tensor_info &t) {
        return t.n_dims >= 2 && t.type != 0 && t.type != 1 && t.type != 30;
    });
    if (quantized != info->tensors.end() && !o.allow_requantize) {
        return cli_fail("import", o.path + " is already quantized (" + info->quantization + ", e.g. " +
                                      display(quantized->name) + " is " +
                                      std::string(ggml_type_traits_of(quantized->type)->name) +
                                      "): quantizing it again adds a second rounding error to the first, so the "
                                      "result is worse than " +
                                      std::string(type->name) +
                                      " made from the original F32/F16/BF16 weights. Quantize those, or pass "
                                      "--allow-requantize to accept the loss");
    }
    std::optional<imatrix> importance;
    if (!o.imatrix.empty()) {
        auto m = read_imatrix_file(o.imatrix);
        if (!m) {
            return cli_fail("import", m.err().message);
        }
        if (auto misfit = check_imatrix_fits(*m, *info, o.imatrix)) {
            return cli_fail("import", misfit->message);
        }
        importance = std::move(*m);
        std::fprintf(stderr, "inferbox import: importance matrix %s (%s format, %zu entries)\n", o.imatrix.c_str(),
                     importance->format.c_str(), importance->entries.size());
    }
    std::string name = o.name;
    if (name.empty()) {
        name = std::filesystem::path(o.path).stem().string() + "-" + std::string(type->name);
        if (auto problem = validate_model_name(name)) {
            return cli_fail("import", "cannot use " + name + " as a model name (" + problem->message +
                                          "); choose one with --name");
        }
    }
    const auto threads = o.threads > 0 ? o.threads : int32_t(detect_hardware().n_threads_effective);
    std::fprintf(stderr, "inferbox import: quantizing %s (%s, %s) to %s on %d threads\n", o.path.c_str(),
                 info->quantization.c_str(), format_memory_size(info->file_size).c_str(),
                 std::string(type->name).c_str(), threads);
    const auto      start = std::chrono::steady_clock::now();
    std::error_code ec;
    auto            e = store.import_generated(
                   name, std::filesystem::absolute(o.path, ec).string(), [&](const std::filesystem::path &out) {
            partial_output_guard guard(out);
            int                  shown_step = 0;
            quantize_request     r;
            r.input            = o.path;
            r.output           = out;
            r.file_type        = type->file_type;
            r.threads          = threads;
            r.allow_requantize = o.allow_requantize;
            r.importance       = importance ? &importance->entries : nullptr;
            r.progress         = [&](int done, int total) {
                const int step = done * 10 / total; // a line per tenth
                if (step > shown_step || done == total) {
                    shown_step = step;
                    std::fprintf(stderr, "inferbox import: %d/%d tensors (%.1f s)\n", done, total,
                                                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
                }
            };
            auto failed = quantize_model(r);
            if (!failed) {
                // Tests interrupt here, with the whole output written but not yet in the cache.
                if (const int ms = failpoint_ms("INFERBOX_FAILPOINT_QUANTIZE_DELAY_MS"); ms > 0) {
                    std::fprintf(stderr, "inferbox import: quantized; waiting %d ms (failpoint)\n", ms);
                    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
                }
            }
            return failed;
        });
    if (!e) {
        return cli_fail("import", e.err().message);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("quantized %s to %s in %.1f s: imported %s (%s, sha256 %s) into %s\n", o.path.c_str(),
                std::string(type->name).c_str(), seconds, e->name.c_str(), format_memory_size(e->manifest.size).c_str(),
                e->manifest.sha256.c_str(), e->file.c_str());
    return 0;
}

int run_import(const import_options &o) {
    auto store = open_store();
    if (!store) {
        return cli_fail("import", store.err().message);
    }
    if (!o.quantize.empty()) {
        return run_quantized_import(o, *store);
    }
    auto e = store->import(o.path, o.name);
    if (!e) {
        return cli_fail("import", e.err().message);
    }
    std::printf("imported %s (%s, sha256 %s) into %s\n", e->name.c_str(), format_memory_size(e->manifest.size).c_str(),
                e->manifest.sha256.c_str(), e->file.c_str());
    return 0;
}

// --- pull -----------------------------------------------------------------------------------

struct pull_command_options {
    std::string  ref;
    pull_options pull;
    bool         json = false;
};

int run_pull(pull_command_options &o) {
    auto ref = parse_model_ref(o.ref);
    if (!ref) {
        return cli_fail("pull", ref.err().message);
    }
    auto store = open_store();
    if (!store) {
        return cli_fail("pull", store.err().message);
    }
    report_pull_on_stderr(o.pull, "pull");
    auto got = pull_model(*store, *ref, o.pull);
    if (!got) {
        return cli_fail("pull", got.err().message);
    }
    const model_entry &e = got->entry;
    if (o.json) {
        print_json(json{{"name", e.name},
                        {"file", e.file.string()},
                        {"source", e.manifest.source},
                        {"url", got->url},
                        {"sha256", e.manifest.sha256},
                        {"size", e.manifest.size},
                        {"downloaded", got->downloaded},
                        {"resumed_from", got->resumed_from},
                        {"verified", got->verified}});
        return 0;
    }
    if (!got->downloaded) {
        std::printf("%s is already in the cache (%s)\n", e.name.c_str(), e.file.c_str());
        return 0;
    }
    std::printf("pulled %s (%s, sha256 %s, %s) into %s\n", e.name.c_str(), format_memory_size(e.manifest.size).c_str(),
                e.manifest.sha256.c_str(),
                got->verified ? "matches the published hash" : "the source publishes no hash to check", e.file.c_str());
    return 0;
}

// --- models ---------------------------------------------------------------------------------

int run_models(bool as_json) {
    auto store = open_store();
    if (!store) {
        return cli_fail("models", store.err().message);
    }
    auto entries = store->list();
    if (!entries) {
        return cli_fail("models", entries.err().message);
    }

    struct row {
        const model_entry       *entry;
        std::optional<gguf_info> info;
        std::string              problem;
    };
    std::vector<row> rows;
    for (const model_entry &e : *entries) {
        row r{&e, std::nullopt, e.problem};
        if (r.problem.empty()) {
            auto info = read_gguf_file(e.file);
            if (info) {
                r.info = std::move(*info);
                if (r.info->architecture.empty()) {
                    r.problem = "no general.architecture in the file";
                }
            } else {
                r.problem = info.err().message;
            }
        }
        rows.push_back(std::move(r));
    }

    if (as_json) {
        json out = json::array();
        for (const row &r : rows) {
            json j = {
                {"name", r.entry->name},
                {"file", r.entry->file.string()},
                {"source", r.entry->manifest.source},
                {"sha256", r.entry->manifest.sha256},
                {"size", r.entry->manifest.size},
                {"imported_at", r.entry->manifest.imported_at},
                {"problem", r.problem.empty() ? json(nullptr) : json(r.problem)},
            };
            if (r.info) {
                j.update(summary_json(*r.info));
            }
            out.push_back(std::move(j));
        }
        print_json(out);
        return 0;
    }

    if (rows.empty()) {
        std::printf("no models in %s; add one with: inferbox pull hf://ORG/REPO/FILE.gguf, or inferbox import PATH\n",
                    store->root().c_str());
        return 0;
    }
    std::vector<std::vector<std::string>> table = {
        {"NAME", "FILE", "SIZE", "ARCH", "PARAMS", "QUANT", "CONTEXT", "TEMPLATE"}};
    for (const row &r : rows) {
        const std::string file = std::filesystem::path(r.entry->manifest.source).filename().string();
        if (!r.info) {
            table.push_back(
                {r.entry->name, display(file), format_memory_size(r.entry->manifest.size), "-", "-", "-", "-", "-"});
            continue;
        }
        const gguf_info &g = *r.info;
        table.push_back({r.entry->name, display(file), format_memory_size(g.file_size),
                         g.architecture.empty() ? "-" : display(g.architecture, 20), format_param_count(g.n_params),
                         g.quantization.empty() ? "-" : g.quantization, opt_text(g.context_length),
                         g.has_chat_template ? "yes" : "no"});
    }
    print_table(table);
    for (const row &r : rows) {
        if (!r.problem.empty()) {
            std::printf("warning: %s: %s\n", r.entry->name.c_str(), r.problem.c_str());
        }
    }
    return 0;
}

// --- show -----------------------------------------------------------------------------------

struct show_options {
    std::string model;
    bool        json = false;
};

int run_show(const show_options &o) {
    auto ref = parse_model_ref(o.model);
    if (!ref) {
        return cli_fail("show", ref.err().message);
    }
    std::optional<model_entry> cached;
    std::filesystem::path      file;
    switch (ref->kind) {
    case model_ref_kind::hugging_face:
    case model_ref_kind::url: {
        auto store = open_store();
        if (!store) {
            return cli_fail("show", store.err().message);
        }
        auto e = find_pulled(*store, *ref);
        if (!e) {
            return cli_fail("show", e.err().message);
        }
        cached = std::move(*e);
        file   = cached->file;
        break;
    }
    case model_ref_kind::local_path:
        file = ref->path;
        break;
    case model_ref_kind::cached_name: {
        auto store = open_store();
        if (!store) {
            return cli_fail("show", store.err().message);
        }
        auto e = store->find(ref->name);
        if (!e) {
            return cli_fail("show", e.err().message);
        }
        cached = std::move(*e);
        file   = cached->file;
        break;
    }
    }
    auto info = read_gguf_file(file, ref->kind == model_ref_kind::local_path ? o.model : file.string());
    if (!info) {
        return cli_fail("show", info.err().message);
    }
    const gguf_info &g = *info;

    if (o.json) {
        json j            = summary_json(g);
        j["file"]         = file.string();
        j["size"]         = g.file_size;
        j["version"]      = g.version;
        j["alignment"]    = g.alignment;
        j["data_offset"]  = g.data_offset;
        j["tensor_count"] = g.tensors.size();
        j["tensor_bytes"] = g.tensor_bytes;
        j["cached"]       = cached ? json{{"name", cached->name},
                                    {"source", cached->manifest.source},
                                    {"sha256", cached->manifest.sha256},
                                    {"imported_at", cached->manifest.imported_at}}
                                   : json(nullptr);
        json meta         = json::object();
        for (const auto &[k, v] : g.metadata) {
            meta[k] = value_json(v);
        }
        j["metadata"] = std::move(meta);
        json tensors  = json::array();
        for (const auto &t : g.tensors) {
            tensors.push_back({{"name", t.name},
                               {"type", std::string(ggml_type_traits_of(t.type)->name)},
                               {"dims", std::vector<uint64_t>(t.dims.begin(), t.dims.begin() + t.n_dims)},
                               {"offset", t.offset},
                               {"bytes", t.n_bytes}});
        }
        j["tensors"] = std::move(tensors);
        print_json(j);
        return 0;
    }

    auto line = [](const char *key, const std::string &value) { std::printf("%-17s%s\n", key, value.c_str()); };
    if (cached) {
        line("model:", cached->name + " (cached)");
    }
    line("file:", display(file.string(), 200));
    line("size:", format_memory_size(g.file_size) + " (" + std::to_string(g.file_size) + " bytes)");
    line("format:", "GGUF v" + std::to_string(g.version) + ", " + std::to_string(g.tensors.size()) + " tensors (" +
                        format_memory_size(g.tensor_bytes) + "), alignment " + std::to_string(g.alignment));
    line("architecture:", g.architecture.empty() ? "- (general.architecture is missing)" : display(g.architecture));
    if (!g.name.empty()) {
        line("name:", display(g.name, 80));
    }
    line("parameters:", format_param_count(g.n_params) + " (" + std::to_string(g.n_params) + ")");
    line("quantization:", g.quantization.empty() ? "-" : g.quantization);
    line("context length:", opt_text(g.context_length));
    line("embedding:", opt_text(g.embedding_length));
    line("blocks:", opt_text(g.block_count));
    line("heads:", opt_text(g.head_count) + " (" + opt_text(g.head_count_kv) + " key-value)");
    line("vocabulary:", opt_text(g.vocab_size));
    line("chat template:", g.has_chat_template ? "yes" : "no");
    if (cached) {
        line("source:", display(cached->manifest.source, 200));
        line("sha256:", cached->manifest.sha256);
        line("imported:", cached->manifest.imported_at);
    }
    std::printf("metadata (%zu keys):\n", g.metadata.size());
    for (const auto &[k, v] : g.metadata) {
        std::printf("  %s = %s\n", display(k, 80).c_str(), v.to_display(80).c_str());
    }
    return 0;
}

// --- rm -------------------------------------------------------------------------------------

int run_rm(const std::string &name) {
    auto store = open_store();
    if (!store) {
        return cli_fail("rm", store.err().message);
    }
    auto e = store->remove(name);
    if (!e) {
        return cli_fail("rm", e.err().message);
    }
    std::printf("removed %s (%s)\n", e->name.c_str(), format_memory_size(e->manifest.size).c_str());
    return 0;
}

} // namespace

void add_store_commands(CLI::App &app, std::function<int()> &action) {
    auto po   = std::make_shared<pull_command_options>();
    auto pull = app.add_subcommand("pull", "download a model into the cache (hf://ORG/REPO/FILE.gguf[@REV] or a URL)");
    pull->add_option("ref", po->ref, "hf://ORG/REPO/FILE.gguf[@REVISION] or an http(s):// URL")->required();
    pull->add_option("--name", po->pull.name, "name in the cache (default: ORG/FILE for hf://, FILE for a URL)");
    pull->add_option("--sha256", po->pull.expected_sha256, "refuse the file unless its SHA-256 is this");
    pull->add_flag("--offline", po->pull.offline,
                   "never use the network; fail naming what would be downloaded (also INFERBOX_OFFLINE=1)");
    pull->add_option("--max-attempts", po->pull.max_attempts, "attempts before giving up on a failing network")
        ->check(CLI::Range(1, 100));
    pull->add_flag("--json", po->json, "print the result as JSON");
    pull->callback([&action, po] { action = [po] { return run_pull(*po); }; });

    auto io  = std::make_shared<import_options>();
    auto imp = app.add_subcommand("import", "add a local GGUF file to the model cache ($INFERBOX_CACHE)");
    imp->add_option("path", io->path, "the GGUF file")->required();
    imp->add_option("--name", io->name,
                    "name in the cache (default: the file name without .gguf, then -TYPE with --quantize)");
    auto *q = imp->add_option("--quantize", io->quantize,
                              "write a quantized copy instead (llama.cpp's quantizer): q8_0, q6_k, q5_k_m, q4_k_m, "
                              "q4_0, f16, bf16, … (docs/profiles.md, \"Choosing a weight type\")");
    imp->add_option("--imatrix", io->imatrix, "importance matrix for --quantize (llama-imatrix's GGUF or .dat file)")
        ->needs(q);
    imp->add_option("--threads", io->threads, "threads for --quantize (default: the effective thread count)")
        ->check(CLI::Range(1, 1024))
        ->needs(q);
    imp->add_flag("--allow-requantize", io->allow_requantize,
                  "let --quantize start from an already quantized file (loses quality)")
        ->needs(q);
    imp->callback([&action, io] { action = [io] { return run_import(*io); }; });

    auto as_json = std::make_shared<bool>(false);
    auto models  = app.add_subcommand("models", "list the cached models");
    models->add_flag("--json", *as_json, "print JSON");
    models->callback([&action, as_json] { action = [as_json] { return run_models(*as_json); }; });

    auto so   = std::make_shared<show_options>();
    auto show = app.add_subcommand("show", "print a model's metadata (a cached name or a GGUF file)");
    show->add_option("model", so->model, "cached model name or path of a GGUF file")->required();
    show->add_flag("--json", so->json, "print JSON");
    show->callback([&action, so] { action = [so] { return run_show(*so); }; });

    auto name = std::make_shared<std::string>();
    auto rm   = app.add_subcommand("rm", "remove a model from the cache");
    rm->add_option("name", *name, "cached model name")->required();
    rm->callback([&action, name] { action = [name] { return run_rm(*name); }; });
}

} // namespace inferbox
