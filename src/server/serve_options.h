#pragma once

// Everything `inferbox serve` is told: its flags and config keys, as one plain struct that the
// CLI fills and server/serve_plan.h checks.

#include "api/auth.h"
#include "api/embeddings_schema.h"
#include "api/http_server.h"
#include "api/schema.h"
#include "engine/embedder.h"
#include "engine/engine.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace inferbox {

struct serve_options {
    // --model (repeatable; the first is the default model): a path, a cached name or a reference
    // to pull, each optionally as ID=REF.
    std::vector<std::string> models;
    std::string              model_name; // the first model's id (default: the cached name or file stem)
    std::string              memory_budget      = "auto"; // --memory-budget: auto (the profile's), off, or a size
    int32_t                  model_load_timeout = 120;    // seconds a request waits for its model to load
    std::string              chat_template;
    std::string              host             = "127.0.0.1";
    uint16_t                 port             = 8000;
    int32_t                  http_threads     = 0;  // 0: auto (http_threads_for())
    int32_t                  shutdown_timeout = 30; // seconds to let in-flight requests finish
    int32_t                  gpu_layers       = 0;  // --gpu-layers: layers offloaded to a GPU backend
    bool                     no_mmap          = false;
    bool                     mlock            = false;
    std::string              lora_dir;    // --lora-dir: the LoRA adapter folder (store/lora_catalog.h)
    std::string              draft_model; // --draft-model: speculative decoding's draft (a path or cached name)
    // --rpc HOST:PORT,...: ggml-rpc-server workers that hold some of the layers (engine/rpc.h).
    std::string rpc;
    // --rpc-timeout: seconds a worker may take to answer the start-up handshake, and an engine
    // step may wait on the workers before the server declares them lost and exits.
    int32_t       rpc_timeout = 60;
    engine_config engine;
    http_limits   http;
    api_limits    api;

    embedder_config  embedder;  // --pooling, --embedding-* (the embedder's batches and queue)
    embedding_limits embedding; // --embedding-max-inputs

    std::vector<std::string> api_keys;     // --api-key (repeatable)
    std::string              api_key_file; // --api-key-file
    bool                     metrics_public     = false;
    bool                     metrics_vllm_names = false; // also expose "vllm:"-prefixed names
    std::vector<std::string> cors_origins;
    rate_limits              rate;
    std::string              tls_cert, tls_key, tls_client_ca; // HTTPS when tls_cert is set
    std::string              profile;                          // "auto", a profile name, or empty: the flags as given
    // --slo-ttft-ms, --slo-itl-ms as given: nullopt ("auto", the default) takes the profile's
    // default target, 0 ("off") none, else that many ms. choose_profile settles engine.slo_ttft_ms
    // and engine.slo_itl_ms from them (store/latency_targets.h).
    std::optional<int32_t> slo_ttft_ms, slo_itl_ms;

    // Where the server keeps its state (stored Responses): --data-dir, else $INFERBOX_DATA, else
    // ~/.local/share/inferbox.
    std::string data_dir;
    std::string store_max_bytes    = "256MiB"; // --store-max-bytes: stored Responses in all ("off": none)
    int32_t     store_max_age_days = 30;       // --store-max-age-days
    // The web console: --no-console turns the page off; --conversations-max-bytes bounds each API
    // key's stored conversations ("off": none kept).
    bool        no_console              = false;
    std::string conversations_max_bytes = "64MiB";
    // The Files API (/v1/files) under the data directory: --files-max-bytes bounds one file (its
    // whole upload is held in memory while it arrives, so at most 1GiB), --files-max-count each API
    // key's files, --files-max-total-bytes all files together ("off": no Files API).
    std::string files_max_bytes       = "32MiB";
    int32_t     files_max_count       = 1000;
    std::string files_max_total_bytes = "4GiB";
    // Vector stores (/v1/vector_stores and the file_search tool), beside the Files API:
    // --vector-stores-max-count bounds each API key's stores (0: no vector stores);
    // --retrieval-embedding-model names the hosted model that embeds chunks and queries ("": the
    // default model).
    int32_t     vector_stores_max_count = 100;
    std::string retrieval_embedding_model;

    // --backend NAME=URL;key=value;... (repeatable): remote OpenAI-compatible servers
    // (backend/backend_spec.h); --route MODEL=POLICY (repeatable): a model's routing policy.
    std::vector<std::string> backends;
    std::vector<std::string> routes;
    int32_t                  overflow_after         = 0;   // --overflow-after (api_config::overflow_after)
    int32_t                  request_timeout_ms     = 0;   // --request-timeout-ms (api_config::request_timeout)
    int32_t                  route_retries          = 2;   // --route-retries (api_config::route_retries)
    int32_t                  route_retry_backoff_ms = 250; // --route-retry-backoff-ms
    // --route-affinity-bytes: leading prompt bytes that balanced routing's prefix affinity hashes (0: off).
    int32_t route_affinity_bytes = 512;

    // --sql-database NAME=PATH (repeatable): SQLite files the `sql` built-in tool reads (read-only).
    std::vector<std::string> sql_databases;
    // --mcp-server NAME=stdio:COMMAND ARGS...[;allowed-tools=a,b][;timeout-ms=N] (repeatable): MCP
    // servers whose tools /v1/responses may call (tools/mcp_client.h).
    std::vector<std::string> mcp_servers;
    // --team NAME=CAPTAIN_MODEL;member.M=MODEL;... (repeatable): teams served as "team/NAME"
    // (agent/team.h, docs/agents.md).
    std::vector<std::string> teams;
};

// "512MiB", "8GiB", "16GB", "2G" → bytes; "off" and "0" → 0 (no budget); nullopt when not a size.
std::optional<uint64_t> parse_memory_size(const std::string &text);

} // namespace inferbox
