#include "common/failpoint.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace inferbox {

#ifdef INFERBOX_FAILPOINTS
bool failpoint(const char *env) {
    const char *path = std::getenv(env);
    if (path == nullptr || *path == '\0') {
        return false;
    }
    static std::mutex     mu; // one countdown at a time, whichever thread asks
    const std::lock_guard lock(mu);
    std::FILE            *f = std::fopen(path, "r");
    if (f == nullptr) {
        return false;
    }
    long n = 1;
    if (std::fscanf(f, "%ld", &n) != 1 || n < 1) {
        n = 1;
    }
    std::fclose(f);
    if (n > 1) {
        if (std::FILE *w = std::fopen(path, "w"); w != nullptr) {
            std::fprintf(w, "%ld\n", n - 1);
            std::fclose(w);
        }
    } else {
        std::remove(path);
    }
    spdlog::warn("failpoint {}: firing ({} left)", env, n - 1);
    return true;
}

int failpoint_ms(const char *env) {
    const char *v = std::getenv(env);
    if (v == nullptr || *v == '\0') {
        return 0;
    }
    const long ms = std::strtol(v, nullptr, 10);
    return ms > 0 && ms <= 10000 ? static_cast<int>(ms) : 0;
}
#endif

} // namespace inferbox
