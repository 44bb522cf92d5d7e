#pragma once
// API keys and per-key rate limits.
//
// Keys are never stored or compared in the clear: each configured key is kept as its SHA-256
// digest, a presented key is hashed the same way, and the digests are compared with OpenSSL's
// constant-time CRYPTO_memcmp against every configured key (no early exit), so neither the
// content nor the length of a key leaks through response timing.
//
// Rate limits are token buckets per key (or one shared bucket when no keys are configured):
// requests per minute, checked when a request arrives, and tokens per minute, checked before
// generation and charged with the prompt at admission and the completion when it ends. A bucket
// may go negative (a long completion); the next request then waits until it refills, and the
// 429 says how long.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

class api_keys {
  public:
    // Empty keys are ignored. Keys shorter than 8 bytes are refused by the caller (serve).
    explicit api_keys(const std::vector<std::string> &keys);

    bool enabled() const { return !digests_.empty(); }
    // Index of the matching key, or nothing. Constant time in the presented key's content.
    std::optional<size_t> match(std::string_view presented) const;
    size_t                size() const { return digests_.size(); }

  private:
    std::vector<std::string> digests_; // 32-byte SHA-256 digests
};

// Reads keys from a file: one per line; blank lines and lines starting with '#' are skipped,
// surrounding whitespace is trimmed. Errors name the file.
bool read_key_file(const std::string &path, std::vector<std::string> &out, std::string &err);

// Splits INFERBOX_API_KEYS-style lists ("k1,k2").
std::vector<std::string> split_key_list(std::string_view s);

struct rate_limits {
    double requests_per_minute = 0; // 0 = unlimited
    double tokens_per_minute   = 0; // 0 = unlimited
};

class rate_limiter {
  public:
    using clock = std::chrono::steady_clock;
    rate_limiter(rate_limits limits, size_t n_keys);

    bool enabled() const { return limits_.requests_per_minute > 0 || limits_.tokens_per_minute > 0; }
    // Takes one request from `key`'s bucket, or says after how many seconds to retry. Also
    // refuses while the key's token bucket is in debt.
    std::optional<double> admit_request(size_t key_index, clock::time_point now = clock::now());
    // Charges generated or prompt tokens; the bucket may go negative.
    void charge_tokens(size_t key_index, int64_t n, clock::time_point now = clock::now());

  private:
    struct bucket {
        double            requests = 0, tokens = 0;
        clock::time_point last;
    };
    void refill(bucket &b, clock::time_point now) const;

    rate_limits         limits_;
    std::mutex          mu_;
    std::vector<bucket> buckets_; // one per key; index n_keys is the shared anonymous bucket
};

} // namespace inferbox
