#include "cli/commands.h"

#include "bench/bench.h"
#include "cli/config.h"
#include "cli/profile_commands.h"
#include "cli/run_command.h"
#include "cli/serve.h"
#include "cli/store_commands.h"
#include "cli/team_command.h"
#include "cli/tool_commands.h"
#include "common/log.h"
#include "engine/rpc.h"
#include "store/latency_targets.h"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>

namespace inferbox {

namespace {

// serve's flags as CLI11 fills them: serve_options, plus the flags whose type or unit differs
// from the field they settle (settle_serve_flags() converts them after parsing).
struct serve_flags {
    serve_options so;
    std::string   positional_model;
    std::string   kv_type = "auto", flash_attn = "auto", pooling = "auto";
    std::string   slo_ttft = "auto", slo_itl = "auto"; // --slo-*-ms: auto, off or ms (parse_target_flag)
    bool          no_prefix_reuse  = false;
    size_t        max_body         = so.http.max_body_bytes;
    size_t        max_header_bytes = so.http.max_header_bytes, max_header_count = so.http.max_header_count;
    int64_t       request_timeout = so.http.header_timeout.count(), idle_timeout = so.http.idle_timeout.count(),
            write_timeout = so.http.write_timeout.count();
};

// Which model(s) to serve.
void add_serve_model_options(CLI::App *serve, serve_flags &f) {
    serve->add_option("-m,--model", f.so.models,
                      "a model to serve: a GGUF file, a cached name, or hf://ORG/REPO/FILE.gguf or a URL to pull "
                      "first; repeat it to host several (ID=REF names one; the first is the default)");
    serve->add_option("MODEL", f.positional_model, "serve this one model (replaces --model and the configured ones)")
        ->configurable(false);
    serve->add_option("--model-name", f.so.model_name, "the first model's id (default: its cached name or file name)");
    serve
        ->add_option("--memory-budget", f.so.memory_budget,
                     "memory the hosted models may hold together: auto (what the profile says this machine can "
                     "hold), off, or a size (8GiB); the least recently used idle model unloads to make room")
        ->capture_default_str();
    serve
        ->add_option("--model-load-timeout", f.so.model_load_timeout,
                     "seconds a request waits for its model to load (or for room to load it)")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    serve->add_option("--host", f.so.host, "address to listen on")->capture_default_str();
    serve->add_option("--port", f.so.port, "port to listen on (0 = any free port)")->capture_default_str();
    serve->add_option("--chat-template", f.so.chat_template, "Jinja chat template overriding the model's");
}

// The engine: slots, context, threads, batching, KV cache, weights, LoRA, speculative decoding.
void add_serve_engine_options(CLI::App *serve, serve_flags &f) {
    serve->add_option("--parallel", f.so.engine.parallel, "sequences decoded together (KV slots)")
        ->capture_default_str()
        ->check(CLI::Range(1, 256));
    serve
        ->add_option("-c,--ctx-size", f.so.engine.n_ctx_slot,
                     "context per sequence in tokens (0 = the model's trained context)")
        ->capture_default_str()
        ->check(CLI::Range(0, 1 << 20));
    serve->add_option("-t,--threads", f.so.engine.n_threads, "compute threads (0 = all cores)")
        ->capture_default_str()
        ->check(CLI::Range(0, 1024));
    serve->add_option("-b,--batch-size", f.so.engine.step_tokens, "tokens per engine step")
        ->capture_default_str()
        ->check(CLI::Range(2, 1 << 16));
    serve
        ->add_option("--prefill-chunk", f.so.engine.prefill_while_decode,
                     "prompt tokens per step while streams run (bounds their inter-token latency; lifted while more "
                     "prompts wait than streams run)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 16));
    serve
        ->add_option("--prefill-step-ms", f.so.engine.prefill_step_ms,
                     "once a step holds this much estimated prefill, other prompts wait for the next step, so the "
                     "first of a burst of requests gets its first token sooner (0 = a burst is prefilled together)")
        ->capture_default_str()
        ->check(CLI::Range(0, 3600000));
    // auto (the profile's default target), off or 0 (none), or whole milliseconds.
    const CLI::Validator slo_value(
        [](const std::string &v) {
            return parse_target_flag(v) ? std::string()
                                        : "'" + v + "' is not auto, off or whole milliseconds from 0 to 3600000";
        },
        "auto|off|MS");
    serve
        ->add_option("--slo-ttft-ms", f.slo_ttft,
                     "time-to-first-token target: waiting prompts are admitted and computed earliest deadline "
                     "(arrival + target) first; auto = the profile's default (inferbox profiles lists it), off or 0 "
                     "= none: first come, first served")
        ->capture_default_str()
        ->check(slo_value);
    serve
        ->add_option("--slo-itl-ms", f.slo_itl,
                     "inter-token target: while streams decode, each step takes only the prompt tokens its measured "
                     "costs fit beside the decode in this time; auto = the profile's default, off or 0 = none "
                     "(--prefill-chunk and --prefill-step-ms as they are)")
        ->capture_default_str()
        ->check(slo_value);
    serve->add_option("--max-queue", f.so.engine.max_queue, "waiting sequences beyond which requests get 429")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    serve->add_flag(
        "--kv-unified", f.so.engine.kv_unified,
        "one KV buffer shared by all sequences (default: one stream per sequence; see docs/architecture.md)");
    serve
        ->add_option("--gpu-layers", f.so.gpu_layers,
                     "layers offloaded to the GPU (0 = CPU only; a number past the model's layers offloads all)")
        ->capture_default_str()
        ->check(CLI::Range(0, 100000));
    serve
        ->add_option("--kv-type", f.kv_type,
                     "KV cache precision: auto (f16; f32 on the CPU with --flash-attn off, when it fits the memory "
                     "budget), f32, f16, or q8_0 (half of f16's memory; needs flash attention)")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "f32", "f16", "q8_0"}));
    serve
        ->add_option("--flash-attn", f.flash_attn,
                     "flash attention: auto (on where the model and backend support it), on, off")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "on", "off"}));
    serve->add_flag("--no-mmap", f.so.no_mmap, "read the weights into memory instead of mapping the file");
    serve->add_flag("--mlock", f.so.mlock, "pin the weights in RAM (RLIMIT_MEMLOCK must cover them)");
    serve->add_option("--lora-dir", f.so.lora_dir,
                      "folder of LoRA adapters (NAME.gguf or NAME/x.gguf), each served as model id NAME");
    serve
        ->add_option("--max-loras", f.so.engine.max_loras, "LoRA adapters loaded at once (least recently used unloads)")
        ->capture_default_str()
        ->check(CLI::Range(1, 256));
    serve->add_option("--draft-model", f.so.draft_model,
                      "speculative decoding with this small model (same tokenizer): a GGUF file or cached name");
    serve->add_option("--rpc", f.so.rpc,
                      "ggml-rpc-server workers HOST:PORT[,HOST:PORT...] that hold some of the layers "
                      "(the profile splits them; --gpu-layers N puts the last N there)");
    serve
        ->add_option("--rpc-timeout", f.so.rpc_timeout,
                     "seconds a worker may take to answer at start-up, and an engine step may wait on the "
                     "workers, before they count as lost (the server then exits 2)")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    serve->add_flag("--draft-ngram", f.so.engine.draft_ngram,
                    "speculative decoding from prompt lookup: guess that repeated text continues as before");
    serve->add_option("--draft-max", f.so.engine.draft_max, "most draft tokens per sequence and step")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
    serve
        ->add_option("--draft-max-batch", f.so.engine.draft_max_batch,
                     "draft only while at most this many sequences decode (a fuller batch gains nothing)")
        ->capture_default_str()
        ->check(CLI::Range(1, 256));
    serve
        ->add_option("--draft-p-min", f.so.engine.draft_p_min,
                     "the draft model stops guessing when it is less sure than this")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
}

// HTTP, the state the server keeps, and the limits on what clients send.
void add_serve_http_options(CLI::App *serve, serve_flags &f) {
    serve->add_flag("--no-prefix-reuse", f.no_prefix_reuse, "never reuse cached prompt prefixes");
    serve->add_option("--max-body-bytes", f.max_body, "largest request body accepted")->capture_default_str();
    serve->add_option("--max-n", f.so.api.max_n, "most choices (n × prompts) in one request")
        ->capture_default_str()
        ->check(CLI::Range(1, 128));
    serve
        ->add_option("--http-threads", f.so.http_threads,
                     "I/O threads (0 = auto: a quarter of the CPUs this process may use, 1 to 4)")
        ->capture_default_str()
        ->check(CLI::Range(0, 64));
    serve->add_option("--shutdown-timeout", f.so.shutdown_timeout, "seconds in-flight requests get on SIGTERM")
        ->capture_default_str()
        ->check(CLI::Range(0, 3600));
    serve->add_option(
        "--data-dir", f.so.data_dir,
        "where the server keeps state: stored Responses, console conversations, files (default $INFERBOX_DATA, else "
        "~/.local/share/inferbox)");
    serve
        ->add_option("--store-max-bytes", f.so.store_max_bytes,
                     "stored Responses in all (256MiB, 1GiB, ...); the oldest go first; off: store nothing")
        ->capture_default_str();
    serve->add_option("--store-max-age-days", f.so.store_max_age_days, "days a stored Response is kept")
        ->capture_default_str()
        ->check(CLI::Range(1, 3650));
    serve->add_flag("--no-console", f.so.no_console, "do not serve the web console at / (the API is unchanged)");
    serve
        ->add_option("--conversations-max-bytes", f.so.conversations_max_bytes,
                     "the console's conversations kept per API key under the data directory (64MiB, ...); off: none")
        ->capture_default_str();
    serve
        ->add_option("--files-max-bytes", f.so.files_max_bytes,
                     "largest file POST /v1/files accepts (32MiB, ...; at most 1GiB): the upload is held in memory")
        ->capture_default_str();
    serve->add_option("--files-max-count", f.so.files_max_count, "files each API key may keep (/v1/files)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000000));
    serve
        ->add_option("--files-max-total-bytes", f.so.files_max_total_bytes,
                     "all files of /v1/files together, under the data directory (4GiB, ...); off: no Files API")
        ->capture_default_str();
    serve
        ->add_option("--vector-stores-max-count", f.so.vector_stores_max_count,
                     "vector stores each API key may keep (/v1/vector_stores, file_search); 0: none")
        ->capture_default_str()
        ->check(CLI::Range(0, 100000));
    serve->add_option("--retrieval-embedding-model", f.so.retrieval_embedding_model,
                      "the hosted model that embeds vector store chunks and queries (default: the default model)");
    // Security and limits (docs/operations.md).
    serve->add_option("--api-key", f.so.api_keys, "an accepted API key (repeatable; also INFERBOX_API_KEYS=k1,k2)");
    serve->add_option("--api-key-file", f.so.api_key_file, "file with one accepted API key per line")
        ->check(CLI::ExistingFile);
    serve->add_option("--profile", f.so.profile,
                      "auto (the best profile for this machine) or a name from `inferbox profiles`; "
                      "overrides --threads, --parallel, --ctx-size and --batch-size");
    serve->add_option("--tls-cert", f.so.tls_cert, "PEM certificate chain: serve HTTPS")->check(CLI::ExistingFile);
    serve->add_option("--tls-key", f.so.tls_key, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
    serve->add_option("--tls-client-ca", f.so.tls_client_ca, "PEM CA bundle: require client certificates (mTLS)")
        ->check(CLI::ExistingFile);
    serve->add_flag("--metrics-public", f.so.metrics_public, "serve /metrics without an API key");
    serve->add_flag("--metrics-vllm-names", f.so.metrics_vllm_names,
                    "also expose every metric under vLLM's \"vllm:\" name (for vLLM dashboards)");
    serve->add_option("--cors-origin", f.so.cors_origins,
                      "allowed browser origin (repeatable; * for any; default: none)");
    serve->add_option("--rate-limit-rpm", f.so.rate.requests_per_minute, "requests per minute per API key (0 = off)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1e9));
    serve->add_option("--rate-limit-tpm", f.so.rate.tokens_per_minute, "tokens per minute per API key (0 = off)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1e12));
    serve->add_option("--max-header-bytes", f.max_header_bytes, "largest request header block")
        ->capture_default_str()
        ->check(CLI::Range(1024, 1 << 20));
    serve->add_option("--max-header-count", f.max_header_count, "most header fields in a request")
        ->capture_default_str()
        ->check(CLI::Range(8, 10000));
    serve->add_option("--request-timeout", f.request_timeout, "seconds a client has to send a whole request")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    serve->add_option("--idle-timeout", f.idle_timeout, "seconds an idle keep-alive connection stays open")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    serve
        ->add_option("--write-timeout", f.write_timeout, "seconds one write may wait for a client that stopped reading")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    serve->add_option("--max-stop", f.so.api.max_stop, "most stop strings per request")
        ->capture_default_str()
        ->check(CLI::Range(0, 1024));
    serve->add_option("--max-messages", f.so.api.max_messages, "most chat messages per request")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    serve->add_option("--max-json-depth", f.so.api.max_json_depth, "deepest nesting of a request body")
        ->capture_default_str()
        ->check(CLI::Range(4, 1024));
}

// Built-in tools, remote backends and routing, embeddings.
void add_serve_feature_options(CLI::App *serve, serve_flags &f) {
    // Built-in tools (docs/agents.md).
    serve->add_option("--sql-database", f.so.sql_databases,
                      "NAME=PATH: a SQLite file the `sql` tool of /v1/responses may read, opened read-only "
                      "(repeatable)");
    serve->add_option("--mcp-server", f.so.mcp_servers,
                      "NAME=stdio:COMMAND ARGS...[;allowed-tools=a,b][;timeout-ms=N]: an MCP server, started by "
                      "inferbox, whose tools /v1/responses may call (repeatable; docs/agents.md)");
    serve->add_option("--team", f.so.teams,
                      "NAME=CAPTAIN_MODEL;instructions=...;member.M=MODEL;member.M.instructions=...;"
                      "member.M.tools=sql:DB,mcp:LABEL: a team served as the model team/NAME, whose captain calls "
                      "its members as tools (repeatable; docs/agents.md)");

    // Remote backends and routing (docs/routing.md).
    serve->add_option("--backend", f.so.backends,
                      "a remote OpenAI-compatible server: NAME=URL[;models=a,b=remote-b][;api-key-env=VAR]"
                      "[;ca-file=PEM][;max-in-flight=N]... (repeatable; docs/routing.md)");
    serve->add_option("--route", f.so.routes,
                      "MODEL=POLICY: local-first, remote-first, local-only, remote-only, balanced or auto "
                      "(repeatable)");
    serve
        ->add_option("--overflow-after", f.so.overflow_after,
                     "local-first spills a request to a remote backend once this many wait here for a slot "
                     "(0: as soon as every slot is busy)")
        ->capture_default_str()
        ->check(CLI::Range(0, 100000));
    serve
        ->add_option("--route-affinity-bytes", f.so.route_affinity_bytes,
                     "balanced routing sends a prompt whose first N bytes match an earlier one's to the backend "
                     "that served it (prefix affinity; 0: off, fewest in flight only)")
        ->capture_default_str()
        ->check(CLI::Range(0, 1 << 20));
    serve
        ->add_option("--request-timeout-ms", f.so.request_timeout_ms,
                     "deadline of a generation request that sets none (X-Inferbox-Timeout-Ms, nvext.timeout_ms); "
                     "past it the answer is a 504 (0: none)")
        ->capture_default_str()
        ->check(CLI::Range(0, 3'600'000));
    serve
        ->add_option("--route-retries", f.so.route_retries,
                     "rounds over a routed request's backends after all of them failed before any output, each "
                     "after a backoff, never past the request's deadline (0: none)")
        ->capture_default_str()
        ->check(CLI::Range(0, 10));
    serve
        ->add_option("--route-retry-backoff-ms", f.so.route_retry_backoff_ms,
                     "the pause before the first retry; it doubles for each next one, up to 8 times this")
        ->capture_default_str()
        ->check(CLI::Range(1, 60'000));
    // Embeddings and ranking (docs/operations.md).
    serve
        ->add_option("--pooling", f.pooling,
                     "pooling of /v1/embeddings: auto (the model's metadata; mean for a generative model), mean, cls, "
                     "last, or none (embeddings off)")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "mean", "cls", "last", "none"}));
    serve
        ->add_option("--embedding-batch-tokens", f.so.embedder.n_batch_tokens,
                     "tokens the embedder encodes in one batch (its context size; also bounds one input)")
        ->capture_default_str()
        ->check(CLI::Range(8, 1 << 20));
    serve
        ->add_option("--embedding-batch-inputs", f.so.embedder.n_batch_inputs,
                     "inputs the embedder encodes in one batch")
        ->capture_default_str()
        ->check(CLI::Range(1, 256));
    serve
        ->add_option("--embedding-max-queue", f.so.embedder.max_queue_inputs,
                     "queued embedding inputs beyond which requests get 429")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    serve
        ->add_option("--embedding-max-inputs", f.so.embedding.max_inputs,
                     "most inputs in one /v1/embeddings request (passages in one /v1/ranking request)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 16));
}

// The flags CLI11 cannot put straight into serve_options, converted once parsing is done.
void settle_serve_flags(serve_flags &f) {
    f.so.http.max_body_bytes   = f.max_body;
    f.so.http.max_header_bytes = f.max_header_bytes;
    f.so.http.max_header_count = f.max_header_count;
    f.so.http.header_timeout   = std::chrono::seconds(f.request_timeout);
    f.so.http.idle_timeout     = std::chrono::seconds(f.idle_timeout);
    f.so.http.write_timeout    = std::chrono::seconds(f.write_timeout);
    f.so.engine.prefix_reuse   = !f.no_prefix_reuse;
    f.so.engine.kv_type        = parse_kv_cache_type(f.kv_type); // nullopt: "auto"
    f.so.engine.flash_attn     = f.flash_attn == "on"    ? flash_attention::on
                                 : f.flash_attn == "off" ? flash_attention::off
                                                         : flash_attention::automatic;
    f.so.embedder.pooling      = parse_pooling_choice(f.pooling).value_or(pooling_choice::model);
    f.so.slo_ttft_ms           = parse_target_flag(f.slo_ttft).value_or(target_flag{true, 0}).value(); // checked
    f.so.slo_itl_ms            = parse_target_flag(f.slo_itl).value_or(target_flag{true, 0}).value();
}

CLI::App *add_bench_command(CLI::App &app, bench_options &bo) {
    auto *bench = app.add_subcommand("bench", "load-test any OpenAI-compatible server");
    bench->add_option("--url", bo.url, "base URL of the server")->capture_default_str();
    bench->add_option("--endpoint", bo.endpoint, "completions | chat")
        ->capture_default_str()
        ->check(CLI::IsMember({"completions", "chat"}));
    bench->add_option("--model", bo.model, "model id (default: the first of /v1/models)");
    bench->add_option("--concurrency", bo.concurrency, "requests in flight")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    bench->add_option("--requests", bo.requests, "requests in total")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000000));
    bench->add_option("--prompt-tokens", bo.prompt_tokens, "approximate prompt length")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    bench->add_option("--max-tokens", bo.max_tokens, "output tokens per request")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    bench->add_option("--shared-prefix-tokens", bo.shared_prefix_tokens, "tokens of prefix every prompt shares")
        ->capture_default_str();
    bench->add_option("--seed", bo.seed, "prompt (and arrival) generator seed")->capture_default_str();
    bench
        ->add_option("--request-rate", bo.request_rate,
                     "open loop: Poisson arrivals at this many requests/s, at most --concurrency in flight (0 = closed "
                     "loop)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1e6));
    bench
        ->add_option("--rates", bo.rates,
                     "a sweep: one open-loop run of --requests per rate R1,R2,... (requests/s, each > 0), and the "
                     "highest rate at which --slo-attainment of the requests meet both latency targets")
        ->delimiter(',');
    bench
        ->add_option("--slo-ttft-ms", bo.slo_ttft_ms,
                     "time-to-first-token target, from when a request is due (0 = none); reports the share meeting it "
                     "and goodput")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 3.6e6));
    bench
        ->add_option("--slo-itl-ms", bo.slo_itl_ms,
                     "inter-token target: each request's own p99 gap between tokens (0 = none)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 3.6e6));
    bench
        ->add_option("--slo-attainment", bo.slo_attainment,
                     "share of requests that must meet both targets at a rate of the sweep (0 < share <= 1)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
    bench->add_option("--json-out", bo.json_out, "also write the results as JSON here");
    bench->add_option("--label", bo.label, "label for the report");
    return bench;
}

CLI::App *add_worker_command(CLI::App &app, rpc_worker_options &wo) {
    auto *worker = app.add_subcommand(
        "rpc-worker", "serve this machine's devices to a leader's `serve --rpc` (ggml's RPC server; no authentication: "
                      "private networks only)");
    worker->add_option("--host", wo.host, "address to listen on")->capture_default_str();
    worker->add_option("--port", wo.port, "port to listen on")->capture_default_str()->check(CLI::Range(1, 65535));
    worker->add_option("-t,--threads", wo.n_threads, "CPU threads (0: half the logical CPUs)")
        ->capture_default_str()
        ->check(CLI::Range(0, 1024));
    worker->add_option("--cache-dir", wo.cache_dir, "cache tensors a leader sent here, so a restart sends less");
    worker->add_option("--device", wo.devices, "devices to serve, e.g. CUDA0,CUDA1 (default: the GPUs, else the CPU)");
    return worker;
}

// `inferbox serve` once parsed: MODEL replaces the configured models; the rest is run_serve's.
int start_serve(serve_flags &f) {
    if (!f.positional_model.empty()) {
        // `inferbox serve NAME` serves NAME: it replaces the models of the config file, the
        // environment and --model.
        if (!f.so.models.empty()) {
            spdlog::info("serving {} only: MODEL replaces the {} model(s) --model, INFERBOX_MODEL or the config "
                         "file named",
                         f.positional_model, f.so.models.size());
        }
        f.so.models = {f.positional_model};
    }
    if (f.so.models.empty()) {
        spdlog::error("no model to serve: run inferbox serve NAME|PATH|hf://ORG/REPO/FILE.gguf, or set serve.model in "
                      "the config file or INFERBOX_MODEL (inferbox models lists the cached ones; inferbox pull "
                      "adds one)");
        return 1;
    }
    settle_serve_flags(f);
    return run_serve(f.so);
}

} // namespace

int run_cli(int argc, char **argv) {
    CLI::App app{"inferbox: a self-hosted, OpenAI-compatible LLM inference server on llama.cpp"};
    app.require_subcommand(1);
    app.fallthrough(); // global options (--log-format) may follow the subcommand

    serve_flags sf;
    auto       *serve = app.add_subcommand("serve", "serve a GGUF model over the OpenAI API");
    add_serve_model_options(serve, sf);
    add_serve_engine_options(serve, sf);
    add_serve_http_options(serve, sf);
    add_serve_feature_options(serve, sf);
    bench_options      bo;
    auto              *bench = add_bench_command(app, bo);
    rpc_worker_options wo;
    auto              *worker = add_worker_command(app, wo);

    app.add_subcommand("version", "print the version");
    std::function<int()> store_action; // import | models | show | rm (cli/store_commands.h)
    add_store_commands(app, store_action);
    add_profile_commands(app, store_action);       // profiles | hardware (cli/profile_commands.h)
    add_config_command(app, *serve, store_action); // config (cli/config.h)
    add_run_command(app, store_action);            // run (cli/run_command.h)
    add_tool_commands(app, store_action);          // sql (cli/tool_commands.h)
    add_team_commands(app, store_action);          // team run (cli/team_command.h)

    std::string log_format_name = "text";
    app.add_option("--log-format", log_format_name, "text | json (one JSON object per line)")
        ->envname("INFERBOX_LOG_FORMAT")
        ->capture_default_str()
        ->check(CLI::IsMember({"text", "json", "TEXT", "JSON"}));
    std::string log_level = "info";
    app.add_option("--log-level", log_level, "trace | debug | info | warn | error")
        ->envname("INFERBOX_LOG_LEVEL")
        ->capture_default_str()
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));

    // defaults < config file < INFERBOX_* < command line (cli/config.h); after every option exists.
    enable_layered_config(app, *serve);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &e) {
        return app.exit(e);
    }
    log_format fmt = log_format::text;
    parse_log_format(log_format_name, fmt);
    init_logging(fmt, spdlog::level::from_str(log_level));
    if (store_action) {
        return store_action();
    }
    if (worker->parsed()) {
        return run_rpc_worker(wo);
    }
    if (serve->parsed()) {
        return start_serve(sf);
    }
    if (bench->parsed()) {
        return run_bench(bo);
    }
    std::printf("inferbox %s\n", INFERBOX_VERSION);
    return 0;
}

} // namespace inferbox
