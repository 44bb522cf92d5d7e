#include "common/text_stream.h"

#include "common/utf8.h"

#include <algorithm>

namespace inferbox {

text_stream::text_stream(std::vector<std::string> stop_strings) : stops_(std::move(stop_strings)) {
    std::erase_if(stops_, [](const std::string &s) { return s.empty(); });
    for (auto &s : stops_) {
        s = utf8_sanitize(s);
    }
}

std::string text_stream::push(std::string_view piece) {
    if (stopped_) {
        return {};
    }
    // Sanitizing up to a cut that splits no character gives the same bytes as sanitizing the
    // whole text at once, so pending_ is always a prefix of the sanitized text.
    partial_.append(piece);
    const size_t n_complete = partial_.size() - utf8_incomplete_tail(partial_);
    pending_ += utf8_sanitize(std::string_view(partial_).substr(0, n_complete));
    partial_.erase(0, n_complete);
    return release();
}

std::string text_stream::finish() {
    if (stopped_) {
        return {};
    }
    pending_ += utf8_sanitize(partial_);
    partial_.clear();
    std::string out = release();
    if (!stopped_) {
        out += pending_;
        pending_.clear();
    }
    return out;
}

std::string text_stream::release() {
    // A stop string can only start inside pending_: nothing that could begin one was emitted.
    // Of the matches, the first to end wins (a stream sees that one first), then the longest.
    size_t best_end   = std::string::npos;
    size_t best_start = std::string::npos;
    for (const auto &stop : stops_) {
        const size_t pos = pending_.find(stop);
        if (pos == std::string::npos) {
            continue;
        }
        const size_t end = pos + stop.size();
        if (end < best_end || (end == best_end && pos < best_start)) {
            best_end   = end;
            best_start = pos;
            matched_   = stop;
        }
    }
    if (best_start != std::string::npos) {
        stopped_        = true;
        std::string out = pending_.substr(0, best_start);
        pending_.clear();
        partial_.clear();
        return out;
    }

    // Hold back the longest suffix that is a proper prefix of some stop string. Stop strings are
    // valid UTF-8, so that suffix starts on a character boundary of the (valid) pending_.
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
    std::string out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, out.size());
    return out;
}

} // namespace inferbox
