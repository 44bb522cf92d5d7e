#pragma once
// Resumable HTTP(S) download of one file with libcurl: what `inferbox pull` runs.
//
// The bytes go to `part_file`, appended to whatever a previous attempt (or a killed process)
// left there: each attempt asks for the rest with a Range request, guarded by If-Range with the
// validator the server gave earlier, so a file that changed upstream restarts from zero instead
// of being spliced. Transient failures (connection errors, stalls, 408/429/5xx) are retried with
// backoff; the SHA-256 of the whole file is computed while it is written. The caller decides
// what to do with a finished part file (check the hash, move it into the store).
//
// Only http and https are followed, redirects included. A bearer token is sent to the URL's
// own host and never to a host a redirect leads to (Hugging Face redirects to a CDN).

#include "common/status.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace inferbox {

struct download_progress {
    uint64_t                received = 0; // bytes of the file on disk (resumed bytes included)
    std::optional<uint64_t> total;        // when the server said
    uint64_t                resumed_from = 0;
    double                  seconds      = 0; // since the download (not the attempt) began
    int                     attempt      = 1;
};

struct download_options {
    std::string           url;
    std::string           bearer_token; // empty: none
    std::filesystem::path part_file;    // created or resumed
    // Files larger than this are refused (from Content-Length, or as soon as they grow past it).
    uint64_t             max_bytes    = uint64_t{1} << 42; // 4 TiB
    int                  max_attempts = 6;
    std::chrono::seconds connect_timeout{30};
    // An attempt that moves fewer than 1 KiB in this long is abandoned (and retried).
    std::chrono::seconds stall_timeout{60};
    // First pause between attempts; doubles each time, at most 30 s.
    std::chrono::milliseconds retry_delay{1000};
    std::string               user_agent = "inferbox";
    // Called at most ~10 times a second, and once at the end.
    std::function<void(const download_progress &)> on_progress;
    // Messages about retries and resumption, for the user ("retrying in 2 s: ...").
    std::function<void(const std::string &)> on_notice;
    // Asked ~10 times a second during a transfer and between attempts: true ends the download
    // with an error coded "cancelled" (the part file stays for a later resume).
    std::function<bool()> cancelled;
};

struct download_result {
    uint64_t    size = 0;
    std::string sha256;           // of the whole file, lower-case hex
    std::string published_sha256; // from X-Linked-Etag (Hugging Face's LFS hash), lower-case; empty if none
    std::string final_url;        // after redirects
    uint64_t    resumed_from = 0; // bytes already on disk when this call began
    int         attempts     = 0;
};

// Downloads `opts.url` into `opts.part_file`. On success the part file holds the whole file.
// Errors: not_found (404/410), permission (401/403, the message says whether a token was sent),
// invalid_request (bad URL, refused scheme, too large), unavailable (network failure after the
// last attempt), internal (local disk errors). A failed download keeps the part file for the
// next attempt unless what is on disk cannot be resumed.
result<download_result> download_file(const download_options &opts);

// --- pieces, exposed for unit tests -----------------------------------------------------------

// The SHA-256 a Hugging Face response publishes in X-Linked-Etag (`"<64 hex>"`, perhaps weak
// `W/"…"`), lower-cased; empty when the value is not one (a git blob id, for small files).
std::string sha256_from_linked_etag(std::string_view value);

// The first byte of a `Content-Range: bytes FIRST-LAST/TOTAL` value, and TOTAL when known.
struct content_range {
    uint64_t                first = 0;
    std::optional<uint64_t> total;
};
std::optional<content_range> parse_content_range(std::string_view value);

// Whether an HTTP status is worth another attempt (408, 425, 429, 5xx).
bool retryable_status(long status);

} // namespace inferbox
