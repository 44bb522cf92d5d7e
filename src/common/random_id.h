#pragma once
// Identifiers of stored objects (conversations, files, vector stores): a prefix and 24 hex digits
// from OpenSSL's generator. Header-only; callers link OpenSSL::Crypto.

#include <openssl/rand.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace inferbox {

inline std::string random_id(std::string_view prefix) {
    std::array<unsigned char, 12> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        // OpenSSL's generator failed (it never does once seeded); the clock keeps ids unique.
        const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
        for (size_t i = 0; i < bytes.size(); ++i) {
            bytes[i] = static_cast<unsigned char>(static_cast<uint64_t>(t) >> ((i % 8) * 8));
        }
    }
    static constexpr std::string_view hex = "0123456789abcdef";
    std::string                       out(prefix);
    for (auto b : bytes) {
        out += hex[b >> 4];
        out += hex[b & 15];
    }
    return out;
}

} // namespace inferbox
