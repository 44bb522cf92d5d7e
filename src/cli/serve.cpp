#include "cli/serve.h"

#include "api/errors.h"
#include "api/routes.h"
#include "cli/output.h"
#include "cli/profile_commands.h"
#include "engine/model.h"
#include "fetch/pull.h"
#include "store/gguf.h"
#include "store/hardware.h"
#include "store/profiles.h"

#include <nlohmann/json.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include "llama.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#ifndef INFERBOX_VERSION
#define INFERBOX_VERSION "0.0.0"
#endif

namespace inferbox {

namespace net = boost::asio;

namespace {

// Settles the engine's configuration from the model file and the hardware, before any weights
// load: --profile auto picks the best runnable profile, --profile NAME applies a listed one, and
// explicit flags are estimated as a "custom" profile. A configuration that cannot fit is refused
// here, with the numbers. Also publishes /v1/metadata and /v1/manifest.
std::optional<error> choose_profile(const serve_options &opts, const std::string &model_id, const gguf_info &info,
                                    engine_config &ecfg, model_options &mo, api_router &router) {
    const hardware_info hw  = detect_hardware();
    const profile_set   set = list_profiles(info, hw);
    model_profile       active;
    if (opts.profile == "auto") {
        auto pick = pick_profile(set);
        if (!pick) {
            return pick.err();
        }
        active          = set.profiles[pick->index];
        active.settings = pick->settings;
        active.memory   = pick->memory;
        spdlog::info("profile {}", pick->reason);
    } else if (!opts.profile.empty()) {
        const auto i = find_profile(set, opts.profile);
        if (!i) {
            std::string names;
            for (const auto &p : set.profiles) {
                names += (names.empty() ? "" : ", ") + p.name;
            }
            return error::invalid("no profile '" + opts.profile + "' for this model; profiles: " + names, "profile");
        }
        active = set.profiles[*i];
        if (active.status != profile_status::runnable) {
            return error::invalid("profile " + active.name + " is " + std::string(profile_status_name(active.status)) +
                                      ": " + active.detail,
                                  "profile");
        }
        spdlog::info("profile {} (chosen with --profile)", active.name);
    } else {
        profile_settings s;
        s.n_threads    = ecfg.n_threads > 0 ? ecfg.n_threads
                                            : static_cast<int32_t>(std::max(1U, std::thread::hardware_concurrency()));
        s.n_slots      = ecfg.n_slots;
        s.n_ctx_slot   = ecfg.n_ctx_slot;
        s.n_batch      = ecfg.step_tokens;
        s.n_ubatch     = std::min(ecfg.step_tokens, 512);
        s.kv_type      = ecfg.kv_type == kv_precision::q8_0 ? kv_cache_type::q8_0 : kv_cache_type::f16;
        s.flash_attn   = ecfg.flash_attn != flash_attention::off;
        s.use_mmap     = mo.use_mmap;
        s.use_mlock    = mo.use_mlock;
        s.n_gpu_layers = mo.n_gpu_layers;
        s.gpu          = mo.n_gpu_layers > 0;
        active         = evaluate_profile(set.model, hw, set.budget, "custom", profile_flavour::latency, s);
        if (active.status == profile_status::incompatible) {
            return error::invalid("this configuration cannot run here: " + active.detail, "");
        }
        if (active.status == profile_status::low_memory) {
            return error::invalid("this configuration needs about " + std::to_string(active.memory.total() >> 20) +
                                      " MiB but " + std::to_string(set.budget.bytes >> 20) +
                                      " MiB are available; try " + active.detail +
                                      " (inferbox profiles --model lists what fits)",
                                  "");
        }
        spdlog::info("memory estimate: {} MiB (weights {}, KV {}, compute {}) of {} MiB available",
                     active.memory.total() >> 20, active.memory.weights >> 20, active.memory.kv_cache >> 20,
                     active.memory.compute >> 20, set.budget.bytes >> 20);
    }
    if (!opts.profile.empty()) { // explicit flags (or their defaults) otherwise stay as given
        ecfg.n_threads   = active.settings.n_threads;
        ecfg.n_slots     = active.settings.n_slots;
        ecfg.n_ctx_slot  = active.settings.n_ctx_slot;
        ecfg.step_tokens = active.settings.n_batch;
        ecfg.kv_type     = active.settings.kv_type == kv_cache_type::q8_0 ? kv_precision::q8_0 : kv_precision::f16;
        // A profile's "flash attention" means "where supported": llama.cpp decides per model.
        ecfg.flash_attn = active.settings.flash_attn ? flash_attention::automatic : flash_attention::off;
        mo.use_mmap     = active.settings.use_mmap;
        mo.use_mlock    = active.settings.use_mlock;
        mo.n_gpu_layers = active.settings.n_gpu_layers;
    }

    nlohmann::json profile  = profile_to_json(active);
    nlohmann::json metadata = {
        {"object", "metadata"},
        {"version", INFERBOX_VERSION},
        {"llama_cpp", llama_cpp_version()},
        {"models", nlohmann::json::array(
                       {{{"id", model_id}, {"architecture", info.architecture}, {"file_bytes", info.file_size}}})},
        {"profile", profile},
        // What the engine takes from the profile (with --profile; otherwise the flags).
        {"applied_settings",
         {"threads", "parallel", "ctx_size", "batch_size", "kv_cache_type", "flash_attn", "mmap", "mlock",
          "gpu_layers"}}};
    nlohmann::json manifest = {{"object", "manifest"},
                               {"model", model_id},
                               {"budget_bytes", set.budget.bytes},
                               {"profiles", nlohmann::json::array()}};
    for (const auto &p : set.profiles) {
        manifest["profiles"].push_back(profile_to_json(p));
    }
    router.set_documents(metadata.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                         manifest.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return std::nullopt;
}

} // namespace

int run_serve(const serve_options &given) {
    // --model is a path, a cached name, or a reference to pull (hf://, https://) into the cache.
    serve_options resolved_opts = given;
    {
        pull_options po;
        auto         last = std::make_shared<std::chrono::steady_clock::time_point>();
        po.on_progress    = [last](const download_progress &p) {
            const auto now  = std::chrono::steady_clock::now();
            const bool done = p.total && p.received >= *p.total;
            if (done || now - *last >= std::chrono::seconds(5)) {
                *last = now;
                spdlog::info("{}{}", done ? "downloaded " : "downloading: ", format_progress(p, false));
            }
        };
        po.on_notice = [](const std::string &msg) { spdlog::info("download: {}", msg); };
        auto found   = resolve_model(given.model_path, po);
        if (!found) {
            spdlog::error("{}", found.err().message);
            return 1;
        }
        resolved_opts.model_path = found->file.string();
        if (resolved_opts.model_name.empty() && found->from_store) {
            resolved_opts.model_name = found->name;
        }
        if (!given.draft_model.empty()) {
            auto draft = resolve_model(given.draft_model, po);
            if (!draft) {
                spdlog::error("--draft-model: {}", draft.err().message);
                return 1;
            }
            resolved_opts.draft_model = draft->file.string();
        }
    }
    const serve_options &opts = resolved_opts;

    llama_log_set(
        [](ggml_log_level level, const char *text, void *) {
            // Warnings and errors always; llama.cpp's own info lines (the KV cache's types and
            // size, flash attention, mmap) at --log-level debug.
            const bool problem = level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR;
            if (!problem && (level != GGML_LOG_LEVEL_INFO || !spdlog::should_log(spdlog::level::debug))) {
                return;
            }
            std::string s(text);
            while (!s.empty() && s.back() == '\n') {
                s.pop_back();
            }
            if (s.empty()) {
                return;
            }
            if (problem) {
                spdlog::warn("llama.cpp: {}", s);
            } else {
                spdlog::debug("llama.cpp: {}", s);
            }
        },
        nullptr);
    llama_backend_init();

    api_config cfg;
    cfg.model_id = opts.model_name.empty() ? std::filesystem::path(opts.model_path).stem().string() : opts.model_name;
    cfg.version  = INFERBOX_VERSION;
    cfg.limits   = opts.api;

    // API keys: --api-key, --api-key-file and INFERBOX_API_KEYS together.
    cfg.api_keys = opts.api_keys;
    if (!opts.api_key_file.empty()) {
        std::string err;
        if (!read_key_file(opts.api_key_file, cfg.api_keys, err)) {
            spdlog::error("{}", err);
            return 1;
        }
    }
    if (const char *env = std::getenv("INFERBOX_API_KEYS")) {
        for (auto &k : split_key_list(env)) {
            cfg.api_keys.push_back(std::move(k));
        }
    }
    for (const auto &k : cfg.api_keys) {
        if (k.size() < 8) {
            spdlog::error("an API key is {} characters long; keys must have at least 8", k.size());
            return 1;
        }
    }
    cfg.metrics_public   = opts.metrics_public;
    cfg.cors_origins     = opts.cors_origins;
    cfg.rate             = opts.rate;
    cfg.metrics_registry = std::make_shared<registry>();
    cfg.metrics       = std::make_shared<serving_metrics>(*cfg.metrics_registry, cfg.model_id, opts.metrics_vllm_names);
    cfg.embedding     = opts.embedding;
    cfg.embed_metrics = std::make_shared<embedding_metrics>(*cfg.metrics_registry, cfg.model_id);
    engine_config ecfg = opts.engine;
    ecfg.metrics       = cfg.metrics;
    // Validate the file ourselves, once: llama.cpp's loader reports a bad file only as "failed to
    // load", and aborts on some malformed ones. A bad file is reported below, once listening.
    const auto checked = read_gguf_file(opts.model_path, opts.model_path);
    if (!opts.lora_dir.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_directory(opts.lora_dir, ec)) {
            spdlog::error("--lora-dir {} is not a folder", opts.lora_dir);
            return 1;
        }
        // Adapters must match the base model's architecture.
        std::string arch = checked ? checked->architecture : std::string();
        cfg.loras        = std::make_shared<lora_catalog>(opts.lora_dir, arch);
        for (const auto &why : cfg.loras->rescan()) {
            spdlog::warn("LoRA adapter skipped: {}", why);
        }
        spdlog::info("LoRA adapters in {}: {} (loaded on first use, at most {} at once)", opts.lora_dir,
                     cfg.loras->list().size(), ecfg.max_loras);
    }
    api_router router(cfg);
    if (!cfg.api_keys.empty()) {
        spdlog::info("API keys: {} configured; every route except /v1/health/*{} requires one", cfg.api_keys.size(),
                     cfg.metrics_public ? " and /metrics" : "");
    }

    net::io_context ioc;
    http_server     server(
            ioc, [&router](const std::shared_ptr<http_exchange> &ex) { router.handle(ex); },
            [](http::status status, const std::string &msg) {
            error_kind kind = error_kind::invalid_request;
            if (status == http::status::payload_too_large) {
                kind = error_kind::payload_too_large;
            }
            return error_body(error{kind, msg, "", ""});
        },
            opts.http);
    server.set_access_log(&api_router::log_access);
    if (opts.tls_cert.empty() != opts.tls_key.empty() || (opts.tls_cert.empty() && !opts.tls_client_ca.empty())) {
        spdlog::error("TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)");
        return 1;
    }
    if (!opts.tls_cert.empty()) {
        if (auto err = server.enable_tls({opts.tls_cert, opts.tls_key, opts.tls_client_ca})) {
            spdlog::error("{}", *err);
            return 1;
        }
    }
    const char *scheme = opts.tls_cert.empty() ? "http" : "https";
    uint16_t    port   = 0;
    try {
        port = server.listen(opts.host, opts.port);
    } catch (const std::exception &e) {
        spdlog::error("cannot listen on {}:{}: {}", opts.host, opts.port, e.what());
        return 1;
    }
    spdlog::info("inferbox {} listening on {}://{}:{}{} (live; loading {})", cfg.version, scheme, opts.host, port,
                 opts.tls_client_ca.empty() ? "" : " with client certificates", opts.model_path);

    std::vector<std::thread> io_threads;
    for (int32_t i = 0; i < std::max(1, opts.http_threads); ++i) {
        io_threads.emplace_back([&ioc] { ioc.run(); });
    }

    std::shared_ptr<engine>   eng;
    std::shared_ptr<embedder> emb;
    int                       exit_code = 0;
    {
        model_options mo;
        mo.path                      = opts.model_path;
        mo.chat_template             = opts.chat_template;
        mo.n_gpu_layers              = opts.gpu_layers;
        mo.use_mmap                  = !opts.no_mmap;
        mo.use_mlock                 = opts.mlock;
        std::optional<error> refused = checked ? choose_profile(opts, cfg.model_id, checked.value(), ecfg, mo, router)
                                               : std::optional<error>(checked.err());
        auto                 m       = refused ? result<std::shared_ptr<model>>(*refused) : model::load(mo);
        if (m && !opts.draft_model.empty()) {
            if (const auto draft_checked = read_gguf_file(opts.draft_model, opts.draft_model); !draft_checked) {
                m = result<std::shared_ptr<model>>(draft_checked.err());
            } else {
                model_options dmo;
                dmo.path         = opts.draft_model;
                dmo.n_gpu_layers = mo.n_gpu_layers > 0 ? 100000 : 0; // a small draft goes where the model goes
                dmo.use_mmap     = mo.use_mmap;
                auto draft       = model::load(dmo);
                if (!draft) {
                    m = result<std::shared_ptr<model>>(draft.err());
                } else {
                    ecfg.draft_model = *draft;
                }
            }
        }
        if (!m) {
            spdlog::error("{}", m.err().message);
            exit_code = 1;
        } else {
            auto e = engine::start(*m, ecfg);
            if (!e) {
                spdlog::error("{}", e.err().message);
                exit_code = 1;
            } else {
                eng           = std::shared_ptr<engine>(std::move(*e));
                const auto &c = eng->config();
                spdlog::info("model '{}' ({}) ready: {} slots × {} tokens, {} threads, {} tokens per step, queue {}, "
                             "chat template: {}",
                             cfg.model_id, (*m)->description(), c.n_slots, c.n_ctx_slot, c.n_threads, c.step_tokens,
                             c.max_waiting, (*m)->has_chat_template() ? "yes" : "no");
                router.attach(eng);
                // The embedder shares the weights, not the context: see engine/embedder.h.
                embedder_config ecfg_embed = opts.embedder;
                ecfg_embed.metrics         = cfg.embed_metrics;
                ecfg_embed.n_threads       = c.n_threads;
                auto started               = embedder::start(*m, ecfg_embed);
                if (!started) {
                    spdlog::error("{}", started.err().message);
                    exit_code = 1;
                } else {
                    emb = std::shared_ptr<embedder>(std::move(*started));
                    router.attach_embedder(emb);
                }
            }
        }
    }

    if (exit_code == 0) {
        // SIGTERM/SIGINT: stop admitting, let in-flight requests finish, then exit 0. A second
        // signal exits at once.
        std::atomic<int>                                            signals{0};
        net::io_context                                             sig_ioc;
        net::signal_set                                             sigs(sig_ioc, SIGINT, SIGTERM);
        std::function<void(const boost::system::error_code &, int)> on_signal;
        on_signal = [&](const boost::system::error_code &ec, int sig) {
            if (ec) {
                return;
            }
            if (signals.fetch_add(1) > 0) {
                spdlog::warn("second signal ({}): exiting now", sig);
                std::_Exit(1);
            }
            spdlog::info("signal {}: draining (readiness is now 503, up to {} s)", sig, opts.shutdown_timeout);
            sigs.async_wait(on_signal);
        };
        sigs.async_wait(on_signal);
        std::thread sig_thread([&] { sig_ioc.run(); });

        while (signals.load() == 0 && eng->healthy()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (!eng->healthy()) {
            spdlog::error("the engine cannot continue; exiting so the orchestrator restarts the server");
            exit_code = 2;
        }
        router.set_draining(true);
        server.stop_accepting();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(opts.shutdown_timeout);
        while (std::chrono::steady_clock::now() < deadline) {
            const auto s = eng->stats();
            if (s.n_running == 0 && s.n_waiting == 0 && (!emb || emb->idle())) {
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        eng->stop(); // anything still running ends with an error event
        if (emb) {
            emb->stop(); // queued embedding requests end with an error
        }
        // Let the last bytes of every answer go out. A client that stopped reading is dropped by
        // the write timeout, so this wait is bounded by it; a fixed pause would lose the final
        // events on a busy machine.
        const auto flush_deadline =
            std::chrono::steady_clock::now() + opts.http.write_timeout + std::chrono::seconds(1);
        while (server.open_exchanges() > 0 && std::chrono::steady_clock::now() < flush_deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (server.open_exchanges() > 0) {
            spdlog::warn("{} responses were still being written at exit", server.open_exchanges());
        }
        sig_ioc.stop();
        sig_thread.join();
    }
    ioc.stop();
    for (auto &t : io_threads) {
        t.join();
    }
    router.attach_embedder(nullptr);
    emb.reset();
    eng.reset();
    llama_backend_free();
    spdlog::info("stopped");
    return exit_code;
}

} // namespace inferbox
