#include "api/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <fstream>

namespace inferbox {

namespace {

std::string sha256(std::string_view s) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int  len = 0;
    EVP_Digest(s.data(), s.size(), out, &len, EVP_sha256(), nullptr);
    return std::string(reinterpret_cast<const char *>(out), len);
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
        s.remove_suffix(1);
    }
    return s;
}

} // namespace

api_keys::api_keys(const std::vector<std::string> &keys) {
    for (const auto &k : keys) {
        if (!k.empty()) {
            digests_.push_back(sha256(k));
        }
    }
}

std::optional<size_t> api_keys::match(std::string_view presented) const {
    const std::string     d = sha256(presented);
    std::optional<size_t> found;
    for (size_t i = 0; i < digests_.size(); ++i) {
        // Every configured key is compared; the branch below depends only on the result.
        const bool eq = CRYPTO_memcmp(d.data(), digests_[i].data(), d.size()) == 0;
        if (eq && !found) {
            found = i;
        }
    }
    return found;
}

bool read_key_file(const std::string &path, std::vector<std::string> &out, std::string &err) {
    std::ifstream in(path);
    if (!in) {
        err = "cannot read the API key file " + path;
        return false;
    }
    std::string line;
    size_t      n = 0;
    while (std::getline(in, line)) {
        if (++n > 100000) {
            err = path + ": more than 100000 lines";
            return false;
        }
        const auto t = trim(line);
        if (!t.empty() && t.front() != '#') {
            out.emplace_back(t);
        }
    }
    return true;
}

std::vector<std::string> split_key_list(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        const auto comma = s.find(',');
        const auto part  = trim(s.substr(0, comma));
        if (!part.empty()) {
            out.emplace_back(part);
        }
        if (comma == std::string_view::npos) {
            break;
        }
        s.remove_prefix(comma + 1);
    }
    return out;
}

rate_limiter::rate_limiter(rate_limits limits, size_t n_keys) : limits_(limits), buckets_(n_keys + 1) {
    const auto now = clock::now();
    for (auto &b : buckets_) {
        b.requests = limits_.requests_per_minute;
        b.tokens   = limits_.tokens_per_minute;
        b.last     = now;
    }
}

void rate_limiter::refill(bucket &b, clock::time_point now) const {
    const double minutes = std::chrono::duration<double>(now - b.last).count() / 60.0;
    if (minutes <= 0) {
        return;
    }
    b.last = now;
    // A bucket holds at most one minute's allowance, so a burst is bounded by the per-minute rate.
    b.requests = std::min(limits_.requests_per_minute, b.requests + minutes * limits_.requests_per_minute);
    b.tokens   = std::min(limits_.tokens_per_minute, b.tokens + minutes * limits_.tokens_per_minute);
}

std::optional<double> rate_limiter::admit_request(size_t key_index, clock::time_point now) {
    std::lock_guard lock(mu_);
    bucket         &b = buckets_[std::min(key_index, buckets_.size() - 1)];
    refill(b, now);
    double wait = 0;
    if (limits_.requests_per_minute > 0 && b.requests < 1.0) {
        wait = std::max(wait, (1.0 - b.requests) / limits_.requests_per_minute * 60.0);
    }
    if (limits_.tokens_per_minute > 0 && b.tokens <= 0.0) {
        wait = std::max(wait, (1.0 - b.tokens) / limits_.tokens_per_minute * 60.0);
    }
    if (wait > 0) {
        return std::ceil(wait);
    }
    if (limits_.requests_per_minute > 0) {
        b.requests -= 1.0;
    }
    return std::nullopt;
}

void rate_limiter::charge_tokens(size_t key_index, int64_t n, clock::time_point now) {
    if (limits_.tokens_per_minute <= 0 || n <= 0) {
        return;
    }
    std::lock_guard lock(mu_);
    bucket         &b = buckets_[std::min(key_index, buckets_.size() - 1)];
    refill(b, now);
    b.tokens -= static_cast<double>(n);
}

} // namespace inferbox
