#include "host/model_host.h"

#include <algorithm>

namespace inferbox {

std::optional<std::vector<size_t>> choose_evictions(std::vector<resident_model> loaded, uint64_t need,
                                                    uint64_t budget) {
    std::vector<size_t> victims;
    if (budget == 0) {
        return victims;
    }
    if (need > budget) {
        return std::nullopt;
    }
    uint64_t used = 0;
    for (const auto &r : loaded) {
        used += r.bytes;
    }
    std::sort(loaded.begin(), loaded.end(),
              [](const resident_model &a, const resident_model &b) { return a.last_used < b.last_used; });
    for (const auto &r : loaded) {
        if (used + need <= budget) {
            break;
        }
        if (!r.busy) {
            victims.push_back(r.index);
            used -= r.bytes;
        }
    }
    if (used + need > budget) {
        return std::nullopt; // only unloading a busy model would make room: wait for it
    }
    return victims;
}

const char *hosted_state_name(hosted_state s) {
    switch (s) {
    case hosted_state::unloaded:
        return "unloaded";
    case hosted_state::loading:
        return "loading";
    case hosted_state::loaded:
        return "loaded";
    case hosted_state::failed:
        return "failed";
    case hosted_state::pulling:
        return "pulling";
    }
    return "unknown";
}

} // namespace inferbox
