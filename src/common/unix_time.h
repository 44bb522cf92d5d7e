#pragma once
// Wall-clock seconds since the Unix epoch: the created_at / last_active_at of stored objects
// (responses, files, vector stores, conversations), as OpenAI's objects carry them.

#include <chrono>
#include <cstdint>

namespace inferbox {

inline int64_t unix_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

} // namespace inferbox
