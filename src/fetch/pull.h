#pragma once
// `inferbox pull`: from a model reference to a model in the store, and the resolution that
// `serve --model` and `profiles --model` share (a path, a cached name, or a reference to
// download).
//
// Downloads land in <store>/downloads/<key>.part (key: a hash of the source URL), guarded by an
// exclusive lock on <key>.lock, so two pulls of the same file (threads or processes) never
// write it together: the second waits, then finds the model in the cache. A killed pull leaves
// only the .part file, which the next pull resumes; nothing under models/ appears until the
// whole file is there, its SHA-256 matches what the source published (or what --sha256 says),
// and it parses as GGUF.

#include "common/status.h"
#include "fetch/download.h"
#include "store/store.h"

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace inferbox {

struct pull_options {
    std::string               name;            // cache name; empty: default_model_name(ref)
    std::string               expected_sha256; // from --sha256; checked in addition to a published hash
    bool                      offline = false; // --offline / INFERBOX_OFFLINE=1
    std::string               hf_endpoint;     // default: $HF_ENDPOINT or https://huggingface.co
    std::string               hf_token;        // default: $HF_TOKEN, else the huggingface-cli token file
    uint64_t                  max_bytes    = uint64_t{1} << 42;
    int                       max_attempts = 6;
    std::chrono::milliseconds retry_delay{1000};
    std::function<void(const download_progress &)> on_progress;
    std::function<void(const std::string &)>       on_notice;
    std::function<bool()>                          cancelled; // download_options::cancelled
};

// Fills the defaults of `opts` from the environment: INFERBOX_OFFLINE, HF_ENDPOINT, HF_TOKEN
// (or $HF_HOME/token, ~/.cache/huggingface/token).
void apply_pull_environment(pull_options &opts);

struct pull_outcome {
    model_entry entry;
    bool        downloaded = false; // false: it was already in the cache
    std::string url;                // where it came (or would come) from
    uint64_t    resumed_from = 0;
    bool        verified     = false; // the SHA-256 matched a published or given hash
};

// The URL a download reference points at: hf refs become <endpoint>/ORG/REPO/resolve/REV/FILE
// (path segments percent-encoded; REV defaults to "main").
std::string source_url(const model_ref &ref, const std::string &hf_endpoint);

// The cache name a reference gets when none is given: hf → "ORG/<file stem>", url → "<file
// stem>" (characters a name cannot hold become '-'). An error when nothing usable remains.
result<std::string> default_model_name(const model_ref &ref);

// Downloads an hf:// or https:// reference into the store (or finds it there). A cached model
// of the same name from the same source is reused without touching the network; one from a
// different source is an error naming both.
result<pull_outcome> pull_model(const model_store &store, const model_ref &ref, pull_options opts);

// The cached model an hf:// or URL reference was pulled as (default name, or `name`), without
// the network: not_found, saying to pull it, when it is not there.
result<model_entry> find_pulled(const model_store &store, const model_ref &ref, const std::string &name = {});

// What serve and profiles load.
struct resolved_model {
    std::filesystem::path file;
    std::string           name;   // the cached name, or the file's stem for a path
    std::string           source; // the reference as given
    bool                  from_store = false;
};

// A local path is used as it is (its errors come later, from the GGUF reader); a cached name
// comes from the store; hf:// and URLs are pulled first (unless offline, which fails naming
// what would have been fetched).
result<resolved_model> resolve_model(std::string_view text, pull_options opts);

} // namespace inferbox
