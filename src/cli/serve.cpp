#include "cli/serve.h"

#include "api/errors.h"
#include "api/routes.h"
#include "backend/remote_backend.h"
#include "cli/output.h"
#include "engine/rpc.h"
#include "fetch/pull.h"
#include "host/model_host.h"
#include "model/model.h"
#include "server/model_loader.h"
#include "server/model_puller.h"
#include "server/roofline_cache.h"
#include "server/serve_plan.h"
#include "server/server_runtime.h"
#include "server/service_config.h"
#include "store/gguf.h"
#include "store/hardware.h"
#include "store/lora_catalog.h"
#include "store/profiles.h"

#include <boost/asio/io_context.hpp>
#include <spdlog/spdlog.h>

#include "llama.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#include <unistd.h>

namespace inferbox {

namespace net = boost::asio;

namespace {

struct resolved_models {
    std::vector<hosted_ref> refs;       // (id, file) per --model, in order, then the pulled models
    std::string             draft_path; // --draft-model's file; empty without one
    // Routes' pull= models not in the cache: each has a refs entry with an empty file, and is
    // downloaded after the server listens while its requests go remote (start remote, move home).
    std::vector<pull_job> pulls;
};

// The log line a download's progress gets, at most every 5 s and at the end.
std::function<void(const download_progress &)> progress_logger(std::string what) {
    auto last = std::make_shared<std::chrono::steady_clock::time_point>();
    return [last, what = std::move(what)](const download_progress &p) {
        const auto now  = std::chrono::steady_clock::now();
        const bool done = p.total && p.received >= *p.total;
        if (done || now - *last >= std::chrono::seconds(5)) {
            *last = now;
            spdlog::info("{}{}{}", what, done ? "downloaded " : "downloading: ", format_progress(p, false));
        }
    };
}

// Each route's pull= model: found in the cache, it is hosted like a --model; otherwise it is
// pulled later. Its id must not be one --model already hosts.
std::optional<error> add_route_pulls(const serve_settings &settings, const pull_options &po, resolved_models &out) {
    std::vector<const route_arg *> later; // hosted after every model that is here, in order
    for (const auto &r : settings.routes) {
        if (r.pull.empty()) {
            continue;
        }
        for (const auto &h : out.refs) {
            if (h.id == r.model) {
                return error::invalid("--route " + r.model +
                                      ": pull= names a model this server already hosts "
                                      "(--model); drop one of them");
            }
        }
        pull_options offline    = po;
        offline.offline         = true;
        offline.expected_sha256 = r.sha256;
        auto cached             = resolve_model(r.pull, offline);
        if (cached) {
            spdlog::info("model '{}' ({}) is in the cache: it is served here", r.model, r.pull);
            out.refs.push_back({r.model, cached->file.string()});
        } else if (cached.err().kind == error_kind::unavailable) { // offline: it would be downloaded
            later.push_back(&r);
        } else {
            return error::invalid("--route " + r.model + ": " + cached.err().message);
        }
    }
    for (const auto *r : later) {
        out.pulls.push_back({out.refs.size(), r->model, r->pull, r->sha256});
        out.refs.push_back({r->model, ""});
    }
    return std::nullopt;
}

// Each --model as a file: a path, a cached name, or a reference pulled (hf://, https://) into the
// cache with its progress in the log, optionally as ID=REF. Ids must differ.
result<resolved_models> resolve_models(const serve_options &opts, const serve_settings &settings) {
    pull_options po;
    po.on_progress = progress_logger("");
    po.on_notice   = [](const std::string &msg) { spdlog::info("download: {}", msg); };
    resolved_models out;
    for (size_t i = 0; i < opts.models.size(); ++i) {
        auto [id, ref] = split_model_arg(opts.models[i]);
        auto found     = resolve_model(ref, po);
        if (!found) {
            return found.err();
        }
        if (id.empty() && i == 0) {
            id = opts.model_name;
        }
        if (id.empty()) {
            id = found->from_store ? found->name : std::filesystem::path(found->file).stem().string();
        }
        for (const auto &r : out.refs) {
            if (r.id == id) {
                return error::invalid("two models have the id '" + id +
                                      "': name one with --model ID=PATH (or --model-name for the first)");
            }
        }
        out.refs.push_back({id, found->file.string()});
    }
    if (!opts.draft_model.empty()) {
        auto draft = resolve_model(opts.draft_model, po);
        if (!draft) {
            return error::invalid("--draft-model: " + draft.err().message);
        }
        out.draft_path = draft->file.string();
    }
    if (auto err = add_route_pulls(settings, po, out)) {
        return *err;
    }
    return out;
}

// llama.cpp's log into ours, its backends up, and SIGPIPE ignored: a peer that vanishes must not
// kill the process (ggml's RPC client writes to its sockets without MSG_NOSIGNAL; Asio's own
// writes never raise SIGPIPE).
void start_llama() {
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
    std::signal(SIGPIPE, SIG_IGN);
}

// The RPC workers, probed (with a timeout) and attached before any model is settled, so that the
// profiles see their memory. Until the server is ready, a worker that fails makes ggml abort, and
// the fatal handler set here turns that into a clear exit 1. `list` gets "host:port, ...".
result<std::vector<rpc_device>> attach_workers(const std::vector<rpc_endpoint> &eps, int32_t timeout_s,
                                               std::string &list) {
    for (const auto &ep : eps) {
        list += (list.empty() ? "" : ", ") + ep.text();
    }
    set_fatal_handler([list](const std::string &msg) {
        spdlog::critical("ggml: {}", msg);
        spdlog::critical("an RPC worker ({}) failed during start-up; exiting", list);
        spdlog::shutdown();
        std::_Exit(1);
    });
    auto attached = attach_rpc_workers(eps, std::chrono::seconds(std::min(timeout_s, 30)));
    if (!attached) {
        return attached.err();
    }
    for (const auto &d : *attached) {
        spdlog::info("RPC device {} on {}: {} ({} MiB free of {} MiB)", d.name, d.endpoint, d.description,
                     d.free_bytes >> 20, d.total_bytes >> 20);
    }
    return attached;
}

// The machine with its measured decode roofline, when `inferbox hardware --measure` cached one:
// the profiles' default latency targets are predicted from it.
hardware_info with_cached_roofline(hardware_info hw) {
    if (auto cached = read_roofline_cache(hw)) {
        hw.roofline = std::move(cached->roofline);
    }
    return hw;
}

// What a request for a model being pulled is told (503 with the reason; a request that may leave
// the box goes to a remote backend instead) and what /v1/models shows as its status.
error pulling_status(const pull_job &p, const std::string &doing, uint64_t received, uint64_t total) {
    std::string what = doing;
    if (total > 0) {
        what += ": " + std::to_string(received * 100 / total) + " % of " + std::to_string(total >> 20) + " MiB";
    } else if (received > 0) {
        what += ": " + std::to_string(received >> 20) + " MiB";
    }
    return error{error_kind::unavailable,
                 "the model '" + p.id + "' is not on this server yet (" + what + " from " + p.ref +
                     "); until it is loaded, requests that may leave the box run on the remote backends that serve it",
                 "model", "model_pulling"};
}

// What host_models settles: the host, what the router shows of each entry, and the plans the
// host's loader reads.
struct hosted_models {
    std::shared_ptr<served_models>            host;
    std::vector<hosted_model_info>            infos;
    std::shared_ptr<std::vector<hosted_plan>> plans; // a pulled model's entry is written once, when it is here
    hardware_info                             hw;    // this host's, with the RPC workers
};

// Every model planned on `machine` (this host's hardware, detected once; the RPC workers are added
// here) and a host that loads them; the LoRA catalogue (adapters must match the first model's
// architecture) into `cfg`.
result<hosted_models> host_models(const serve_options &opts, const serve_settings &settings,
                                  const resolved_models &models, const hardware_info &machine,
                                  const std::vector<rpc_device> &remote, api_config &cfg) {
    std::optional<gguf_info> draft_info; // read once here: its shape counts in the first model's estimate
    if (!models.draft_path.empty()) {
        auto read = read_gguf_file(models.draft_path, models.draft_path);
        if (!read) {
            return error::invalid("--draft-model: " + read.err().message);
        }
        draft_info = std::move(*read);
    }
    hardware_info hw = machine;
    for (const auto &d : remote) {
        hw.remote.push_back({d.name, d.endpoint, d.total_bytes, d.free_bytes});
    }
    // Models still to be pulled (the last refs) are planned once their file is here (start_pulls).
    const std::vector<hosted_ref> here(models.refs.begin(),
                                       models.refs.begin() +
                                           static_cast<std::ptrdiff_t>(models.refs.size() - models.pulls.size()));
    auto planned = plan_models(opts, here, draft_info ? &*draft_info : nullptr, hw, *cfg.metrics_registry);
    for (const auto &p : models.pulls) {
        hosted_plan placeholder;
        placeholder.id = p.id;
        planned.plans.push_back(std::move(placeholder));
    }
    const hosted_plan &first = planned.plans.front();
    if (!opts.lora_dir.empty()) {
        cfg.loras = std::make_shared<lora_catalog>(opts.lora_dir, first.info.architecture);
        for (const auto &why : cfg.loras->rescan()) {
            spdlog::warn("LoRA adapter skipped: {}", why);
        }
        spdlog::info("LoRA adapters in {}: {} (loaded on first use, at most {} at once)", opts.lora_dir,
                     cfg.loras->list().size(), first.ecfg.max_loras);
    }
    host_options hopts;
    hopts.budget_bytes = settings.budget_bytes.value_or(planned.machine_budget);
    hopts.load_wait    = std::chrono::seconds(opts.model_load_timeout);
    if (planned.plans.size() > 1 || settings.budget_bytes) {
        spdlog::info("hosting {} models under a memory budget of {}; each loads on its first request, the least "
                     "recently used idle one unloads when another would not fit",
                     planned.plans.size(),
                     hopts.budget_bytes == 0 ? std::string("(none)")
                                             : std::to_string(hopts.budget_bytes >> 20) + " MiB");
    }
    hosted_models out;
    for (const auto &p : planned.plans) {
        out.infos.push_back(p.info);
    }
    out.plans = std::make_shared<std::vector<hosted_plan>>(std::move(planned.plans));
    out.host  = make_model_host(out.plans, hopts, models.draft_path, !remote.empty());
    out.hw    = std::move(hw);
    for (const auto &p : models.pulls) {
        out.host->mark_pulling(p.index, pulling_status(p, "downloading", 0, 0));
    }
    return out;
}

// Start remote, move home: pulls `jobs` one after another; each model comes home (is planned,
// loaded and routed here by its local-first route) once its file is verified. Progress goes to the
// log, the host's entry (/v1/models) and the metrics.
std::unique_ptr<model_puller> start_pulls(const serve_options &opts, const std::vector<pull_job> &jobs,
                                          const hosted_models &hosted, api_router &router, registry &metrics) {
    if (jobs.empty()) {
        return nullptr;
    }
    const auto gauge = [&metrics](const char *name, const char *help, const std::string &id) {
        return &metrics.add_gauge(name, help, {{"model", id}});
    };
    pull_hooks hooks;
    hooks.fetch = [](const pull_job &j, const pull_hooks::progress_fn &progress,
                     const std::function<bool()> &cancelled) -> result<std::string> {
        pull_options po;
        po.expected_sha256 = j.sha256;
        po.cancelled       = cancelled;
        po.on_progress     = [log = progress_logger("model '" + j.id + "': "), progress](const download_progress &p) {
            log(p);
            progress(p.received, p.total.value_or(0));
        };
        po.on_notice = [id = j.id](const std::string &msg) { spdlog::info("model '{}': download: {}", id, msg); };
        auto got     = resolve_model(j.ref, po);
        if (!got) {
            return got.err();
        }
        return got->file.string();
    };
    hooks.on_progress = [host = hosted.host, gauge](const pull_job &j, uint64_t received, uint64_t total) {
        host->mark_pulling(j.index, pulling_status(j, "downloading", received, total), received, total);
        gauge("inferbox_model_pull_received_bytes", "Bytes downloaded so far of a model being pulled.", j.id)
            ->set(static_cast<double>(received));
        gauge("inferbox_model_pull_size_bytes", "The size of a model being pulled, when the source says (else 0).",
              j.id)
            ->set(static_cast<double>(total));
    };
    const auto count = [&metrics](const pull_job &j, const char *outcome) {
        metrics
            .add_counter("inferbox_model_pulls_total",
                         "Background model pulls (routes' pull=), by outcome: pulled, retry or failed.",
                         {{"model", j.id}, {"outcome", outcome}})
            .inc();
    };
    hooks.on_failed = [host = hosted.host, count](const pull_job &j, const error &e, std::chrono::milliseconds again) {
        count(j, again.count() > 0 ? "retry" : "failed");
        if (again.count() > 0) {
            spdlog::warn("model '{}': pulling {} failed: {}; trying again in {} s (its requests stay remote)", j.id,
                         j.ref, e.message, again.count() / 1000);
            host->mark_pulling(j.index, pulling_status(j, "the download failed and is retried: " + e.message, 0, 0));
            return;
        }
        spdlog::error("model '{}': pulling {} failed for good: {} (its requests stay remote)", j.id, j.ref, e.message);
        host->mark_failed(j.index, error{error_kind::unavailable,
                                         "the model '" + j.id + "' could not be pulled to this server: " + e.message,
                                         "model", "model_pull_failed"});
    };
    hooks.on_pulled = [&opts, &hosted, &router, &metrics, count](const pull_job &j, const std::string &file) {
        count(j, "pulled");
        auto  planned = plan_models(opts, {{j.id, file}}, nullptr, hosted.hw, metrics, j.index);
        auto &plan    = planned.plans.front();
        if (plan.refused) {
            spdlog::error("model '{}' was pulled but cannot be served: {}", j.id, plan.refused->message);
            hosted.host->mark_failed(j.index, error{error_kind::unavailable,
                                                    "the model '" + j.id + "' cannot be served: " +
                                                        without_paths(plan.refused->message, {file}),
                                                    "model", "model_load_failed"});
            return;
        }
        (*hosted.plans)[j.index] = plan; // before pulled(): see make_model_host
        router.set_model_info(j.index, plan.info);
        hosted.host->pulled(j.index, plan.memory_bytes);
        const auto began = std::chrono::steady_clock::now();
        hosted.host->acquire_async(j.index, [id = j.id, began](const result<served_models::lease> &r) {
            if (r) {
                spdlog::info("model '{}' pulled and loaded in {:.1f} s: its requests run here now", id,
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
            } else {
                spdlog::error("model '{}' was pulled but did not load: {} (its requests stay remote)", id,
                              r.err().message);
            }
        });
    };
    for (const auto &j : jobs) {
        spdlog::info("model '{}' is not here: pulling it from {} while its requests run remotely", j.id, j.ref);
    }
    auto puller = std::make_unique<model_puller>(jobs, std::move(hooks));
    puller->start();
    return puller;
}

// The error body the HTTP server writes for what it refuses before any handler runs.
std::string refusal_body(http::status status, const std::string &msg) {
    error_kind kind = error_kind::invalid_request;
    if (status == http::status::payload_too_large) {
        kind = error_kind::payload_too_large;
    } else if (status == http::status::internal_server_error) {
        kind = error_kind::internal;
    }
    return error_body(error{kind, msg, "", ""});
}

// --http-threads, or (auto) from the CPU facts only, not the memory and ISA detect_hardware() reads.
int32_t io_thread_count(const serve_options &opts) {
    if (opts.http_threads > 0) {
        return opts.http_threads;
    }
    hardware_info cpus;
    read_cpus("/", cpus);
    return http_threads_for(cpus);
}

// What the runtime drives: the router's readiness, the listener, the hosted models and the remote
// backends.
class serving_target final : public runtime_target {
  public:
    serving_target(api_router &router, http_server &server, served_models &host, const api_config &cfg,
                   std::function<void()> watchdog)
        : router_(router), server_(server), host_(host), cfg_(cfg), watchdog_(std::move(watchdog)) {}

    bool healthy() override {
        const auto loaded = host_.loaded();
        return std::all_of(loaded.begin(), loaded.end(), [](const auto &m) { return m->healthy(); });
    }
    void watchdog() override {
        if (watchdog_) {
            watchdog_();
        }
    }
    void stop_admitting() override {
        router_.set_draining(true);
        server_.stop_accepting();
    }
    bool quiet() override {
        const auto loaded = host_.loaded();
        return !host_.loading() && router_.preparing() == 0 &&
               std::all_of(loaded.begin(), loaded.end(), [](const auto &m) { return m->idle(); }) &&
               std::all_of(cfg_.backends.begin(), cfg_.backends.end(),
                           [](const auto &b) { return b->status().in_flight == 0; });
    }
    void    end_remaining() override { host_.shutdown(); }
    int64_t writing() override { return static_cast<int64_t>(server_.open_exchanges()); }
    int64_t preparing() override { return router_.preparing(); }

  private:
    api_router           &router_;
    http_server          &server_;
    served_models        &host_;
    const api_config     &cfg_;
    std::function<void()> watchdog_;
};

// Serving with remote layers: a worker lost mid-request (ggml aborts inside the decode) or silent
// past --rpc-timeout fails every in-flight request with a 503 or an SSE error event naming the
// workers, and the process exits 2 for the orchestrator to restart it: ggml's client cannot
// reconnect, so nothing else could serve again.
std::function<void(const std::string &)> rpc_loss_handler(api_router &router, http_server &server,
                                                          const std::shared_ptr<served_models> &host,
                                                          const std::string                    &rpc_list) {
    return [&router, &server, host, rpc_list](const std::string &why) {
        static std::atomic<bool> once{false};
        if (once.exchange(true)) {
            for (;;) { // another thread is already exiting the process
                ::pause();
            }
        }
        spdlog::critical("RPC workers ({}) lost: {}; failing in-flight requests and exiting", rpc_list, why);
        router.set_draining(true);
        server.stop_accepting();
        const error err{error_kind::unavailable,
                        "the server lost its RPC workers (" + rpc_list + ") and is restarting; retry shortly", "",
                        "rpc_worker_lost"};
        for (const auto &m : host->loaded()) {
            m->eng->abandon(err);
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while (server.open_exchanges() > 0 && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        spdlog::shutdown();
        std::_Exit(2);
    };
}

// Serves until stopped, then drains (server/server_runtime.h); returns the exit code.
int run_until_stopped(const serve_options &opts, api_router &router, http_server &server, served_models &host,
                      const api_config &cfg, const std::function<void(const std::string &)> &lost) {
    std::function<void()> watchdog;
    if (lost) { // an engine step waiting on the workers past --rpc-timeout
        watchdog = [&host, &lost, timeout = std::chrono::seconds(opts.rpc_timeout), secs = opts.rpc_timeout] {
            for (const auto &m : host.loaded()) {
                if (m->eng->busy_for() > timeout) {
                    lost("an engine step has waited on them for more than " + std::to_string(secs) +
                         " s (--rpc-timeout)");
                }
            }
        };
    }
    serving_target target(router, server, host, cfg, std::move(watchdog));
    runtime_timing timing;
    timing.shutdown_timeout = std::chrono::seconds(opts.shutdown_timeout);
    timing.flush_timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(opts.http.write_timeout + std::chrono::seconds(1));
    server_runtime  runtime(target, timing);
    runtime_outcome outcome;
    {
        signal_watcher signals(runtime, opts.shutdown_timeout);
        outcome = runtime.run();
    }
    if (outcome.preparing > 0) {
        // The preparation threads cannot be interrupted inside llama.cpp and would hold the exit
        // (joining them) for as long as their input takes: SIGTERM's timeout wins.
        spdlog::warn("{} requests were still being prepared at the shutdown deadline; exiting without them",
                     outcome.preparing);
        spdlog::info("stopped");
        spdlog::shutdown();
        std::_Exit(outcome.exit_code);
    }
    return outcome.exit_code;
}

// Listens, loads the first model (readiness waits for it; a server whose default model cannot load
// exits 1), serves until stopped, and tears down. Returns the exit code.
int listen_and_serve(const serve_options &opts, api_config &cfg, hosted_models &hosted,
                     const std::vector<pull_job> &pulls, const std::string &rpc_list) {
    const auto       &host  = hosted.host;
    const hosted_plan first = hosted.plans->front();
    net::io_context   ioc;
    // Remote backends run their HTTP calls and probes on the I/O threads' io_context.
    if (auto err = configure_routing(opts, ioc.get_executor(), cfg)) {
        spdlog::error("{}", err->message);
        return 1;
    }
    api_router router(cfg);
    router.set_models(host, hosted.infos);
    if (!cfg.api_keys.empty()) {
        spdlog::info("API keys: {} configured; every route except /v1/health/*{} requires one", cfg.api_keys.size(),
                     cfg.metrics_public ? " and /metrics" : "");
    }
    http_server server(
        ioc, [&router](const std::shared_ptr<http_exchange> &ex) { router.handle(ex); }, refusal_body, opts.http);
    server.set_access_log(&api_router::log_access);
    // The router outlives the server (declared first); its upload route admits the file store's limit.
    server.set_body_limit([&router, fallback = opts.http.max_body_bytes](std::string_view target, http::verb verb) {
        return router.body_limit(target, verb, fallback);
    });
    // Exceptions that reached the last line of defence (a handler, an I/O thread): logged and
    // counted; the request gets a 500 and the server keeps serving.
    const auto count_unhandled = [reg = cfg.metrics_registry](const char *where, const std::string &what) {
        spdlog::error("unexpected exception in {}: {}", where, what);
        reg->add_counter("inferbox_unhandled_exceptions_total",
                         "exceptions caught by the last line of defence (handler, I/O thread, engine loop)",
                         {{"where", where}})
            .inc();
    };
    server.set_on_unhandled(count_unhandled);
    if (!opts.tls_cert.empty()) {
        if (auto err = server.enable_tls({opts.tls_cert, opts.tls_key, opts.tls_client_ca})) {
            spdlog::error("{}", *err);
            return 1;
        }
    }
    uint16_t port = 0;
    try {
        port = server.listen(opts.host, opts.port);
    } catch (const std::exception &e) {
        spdlog::error("cannot listen on {}:{}: {}", opts.host, opts.port, e.what());
        return 1;
    }
    spdlog::info("inferbox {} listening on {}://{}:{}{} (live; loading {})", cfg.version,
                 opts.tls_cert.empty() ? "http" : "https", opts.host, port,
                 opts.tls_client_ca.empty() ? "" : " with client certificates", first.path);
    const int32_t n_io = io_thread_count(opts);
    spdlog::debug("{} I/O thread{}", n_io, n_io == 1 ? "" : "s");
    io_thread_pool io(ioc, n_io, count_unhandled);
    for (const auto &b : cfg.backends) {
        b->start_probes();
    }
    auto puller = start_pulls(opts, pulls, hosted, router, *cfg.metrics_registry);

    int exit_code = 0;
    if (first.refused) {
        spdlog::error("{}", first.refused->message);
        exit_code = 1;
    } else if (auto loaded = host->acquire_blocking(0); !loaded) {
        spdlog::error("{}", loaded.err().message);
        exit_code = 1;
    } else {
        router.set_ready();
    }
    std::function<void(const std::string &)> lost;
    if (!rpc_list.empty() && exit_code == 0) {
        lost = rpc_loss_handler(router, server, host, rpc_list);
        set_fatal_handler([lost](const std::string &msg) { lost("ggml: " + msg); });
    }
    if (exit_code == 0) {
        exit_code = run_until_stopped(opts, router, server, *host, cfg, lost);
    }
    if (lost) { // the router and server the handler uses go away below; freeing remote buffers may still fail
        set_fatal_handler([](const std::string &msg) {
            spdlog::critical("ggml: {} (while stopping)", msg);
            spdlog::shutdown();
            std::_Exit(2);
        });
    }
    if (puller) {
        puller->stop(); // cancels a download in progress; its part file is resumed next time
    }
    host->shutdown();
    for (const auto &b : cfg.backends) {
        b->stop();
    }
    io.stop();
    router.set_models(nullptr, {});
    // The backends' probe timers and pooled connections belong to `ioc`: they must go before it
    // does (the router's copies go with the router, which is destroyed before `ioc` too).
    cfg.backends.clear();
    return exit_code;
}

} // namespace

int run_serve(const serve_options &opts) {
    auto settings = check_serve_options(opts, std::getenv("INFERBOX_API_KEYS"));
    if (!settings) {
        spdlog::error("{}", settings.err().message);
        return 1;
    }
    auto models = resolve_models(opts, *settings);
    if (!models) {
        spdlog::error("{}", models.err().message);
        return 1;
    }
    start_llama();
    std::vector<rpc_device> remote;
    std::string             rpc_list;
    if (!settings->rpc.empty()) {
        auto attached = attach_workers(settings->rpc, opts.rpc_timeout, rpc_list);
        if (!attached) {
            spdlog::error("{}", attached.err().message);
            return 1;
        }
        remote = std::move(*attached);
    }
    const hardware_info machine = with_cached_roofline(detect_hardware());
    auto                cfg     = make_api_config(opts, *settings, machine);
    if (!cfg) {
        spdlog::error("{}", cfg.err().message);
        return 1;
    }
    cfg->model_id          = models->refs.front().id;
    cfg->llama_cpp_version = llama_cpp_version();
    auto hosted            = host_models(opts, *settings, *models, machine, remote, *cfg);
    if (!hosted) {
        spdlog::error("{}", hosted.err().message);
        return 1;
    }
    const int exit_code = listen_and_serve(opts, *cfg, *hosted, models->pulls, rpc_list);
    hosted->host.reset();
    llama_backend_free();
    spdlog::info("stopped");
    return exit_code;
}

} // namespace inferbox
