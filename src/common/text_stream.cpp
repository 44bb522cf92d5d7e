#include "common/text_stream.h"

#include "common/utf8.h"

#include <algorithm>

namespace inferbox {

text_stream::text_stream(std::vector<std::string> stop_strings) : stops_(std::move(stop_strings)) {
    std::erase_if(stops_, [](const std::string &s) { return s.empty(); });
}

std::string text_stream::push(std::string_view piece) {
    if (stopped_) {
        return {};
    }
    pending_.append(piece);

    // A stop string can only start inside pending_: nothing that could begin one was emitted.
    size_t first = std::string::npos;
    for (const auto &stop : stops_) {
        const size_t pos = pending_.find(stop);
        if (pos < first || (pos == first && pos != std::string::npos && stop.size() > matched_.size())) {
            first    = pos;
            matched_ = stop;
        }
    }
    if (first != std::string::npos) {
        stopped_        = true;
        std::string out = utf8_sanitize(std::string_view(pending_).substr(0, first));
        pending_.clear();
        return out;
    }

    // Hold back the longest suffix that is a proper prefix of some stop string.
    size_t hold = 0;
    for (const auto &stop : stops_) {
        const size_t max_len = std::min(stop.size() - 1, pending_.size());
        for (size_t len = max_len; len > hold; --len) {
            if (std::string_view(pending_).substr(pending_.size() - len) == std::string_view(stop).substr(0, len)) {
                hold = len;
                break;
            }
        }
    }
    size_t cut = pending_.size() - hold;
    // Never cut inside a character whose bytes are still arriving.
    cut -= utf8_incomplete_tail(std::string_view(pending_).substr(0, cut));
    std::string out = utf8_sanitize(std::string_view(pending_).substr(0, cut));
    pending_.erase(0, cut);
    return out;
}

std::string text_stream::finish() {
    if (stopped_) {
        return {};
    }
    std::string out = utf8_sanitize(pending_);
    pending_.clear();
    return out;
}

} // namespace inferbox
