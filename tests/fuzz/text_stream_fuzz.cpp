// Detokenized pieces -> text_stream, the streamer that decides what text a client sees. The input
// is: 1 byte whose low 2 bits give the number of stop strings (0..3); per stop string a length
// byte (1..8 bytes) and its bytes; 1 byte seeding how the text is cut; then the text. Stop
// strings are made valid UTF-8, as the JSON layer delivers them. The same text is fed whole,
// cut at pseudo-random points (empty pieces included), and one byte at a time, and every run
// must honour text_stream's contract:
//   - each emitted chunk is valid UTF-8, and what is emitted never contains a stop string;
//   - the concatenation is the same however the text was cut;
//   - without a stop, it equals utf8_sanitize(text); with one, it is the text before the stop
//     string that completes first (the earliest end), which is what stopped() reports;
//   - nothing more is held back than a possible stop-string prefix plus one partial character;
//   - after the stop, push() and finish() return nothing.

#include "common/text_stream.h"
#include "common/utf8.h"
#include "fuzz_check.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace inferbox;

namespace {

struct outcome {
    std::string all;
    bool        stopped = false;
    std::string matched;
};

outcome run(const std::vector<std::string> &stops, const std::vector<std::string_view> &pieces) {
    size_t max_stop = 0;
    for (const auto &s : stops) {
        max_stop = std::max(max_stop, s.size());
    }
    text_stream ts(stops);
    outcome     o;
    std::string received;
    for (auto piece : pieces) {
        const bool        was_stopped = ts.stopped();
        const std::string out         = ts.push(piece);
        FUZZ_CHECK(utf8_valid(out));
        if (was_stopped) {
            FUZZ_CHECK(out.empty());
            continue;
        }
        o.all += out;
        received.append(piece);
        if (!ts.stopped()) {
            // Emitted so far is a prefix of the sanitized input, short of it by at most a
            // possible stop prefix and one partial character (up to 3 bytes, 3 U+FFFD later).
            const std::string sanitized = utf8_sanitize(received);
            FUZZ_CHECK(sanitized.compare(0, o.all.size(), o.all) == 0);
            FUZZ_CHECK(sanitized.size() - o.all.size() <= (max_stop > 0 ? max_stop - 1 : 0) + 9);
        }
    }
    const bool        was_stopped = ts.stopped();
    const std::string rest        = ts.finish();
    FUZZ_CHECK(utf8_valid(rest));
    FUZZ_CHECK(!was_stopped || rest.empty());
    o.all += rest;
    FUZZ_CHECK(ts.finish().empty());
    o.stopped = ts.stopped();
    o.matched = ts.matched_stop();
    return o;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view in(reinterpret_cast<const char *>(data), size);
    auto             take = [&in](size_t n) {
        const std::string_view out = in.substr(0, n);
        in.remove_prefix(out.size());
        return out;
    };
    if (in.empty()) {
        return 0;
    }
    const size_t             n_stops = static_cast<uint8_t>(take(1)[0]) & 3u;
    std::vector<std::string> stops;
    for (size_t i = 0; i < n_stops && !in.empty(); ++i) {
        const size_t len = 1 + (static_cast<uint8_t>(take(1)[0]) & 7u);
        stops.push_back(utf8_sanitize(take(len)));
    }
    std::erase_if(stops, [](const std::string &s) { return s.empty(); });
    uint32_t               rng  = 0x9E3779B9u ^ (in.empty() ? 0u : static_cast<uint8_t>(take(1)[0]));
    const std::string_view text = in;

    std::vector<std::string_view> whole = {text};
    std::vector<std::string_view> bytes;
    std::vector<std::string_view> random;
    for (size_t i = 0; i < text.size(); ++i) {
        bytes.push_back(text.substr(i, 1));
    }
    for (size_t i = 0; i < text.size();) {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        const size_t len = rng % 7; // 0..6: tokens can detokenize to nothing
        random.push_back(text.substr(i, len));
        i += len;
    }

    const outcome a = run(stops, whole);
    const outcome b = run(stops, random);
    const outcome c = run(stops, bytes);
    FUZZ_CHECK(a.all == b.all && a.all == c.all);
    FUZZ_CHECK(a.stopped == b.stopped && a.stopped == c.stopped);
    FUZZ_CHECK(a.matched == b.matched && a.matched == c.matched);

    const std::string sanitized = utf8_sanitize(text);
    FUZZ_CHECK(a.all.size() <= 3 * text.size());
    for (const auto &s : stops) {
        FUZZ_CHECK(a.all.find(s) == std::string::npos);
    }
    if (!a.stopped) {
        FUZZ_CHECK(a.matched.empty());
        FUZZ_CHECK(a.all == sanitized);
        return 0;
    }
    FUZZ_CHECK(std::find(stops.begin(), stops.end(), a.matched) != stops.end());
    FUZZ_CHECK(sanitized.compare(0, a.all.size(), a.all) == 0);
    FUZZ_CHECK(sanitized.compare(a.all.size(), a.matched.size(), a.matched) == 0);
    const size_t end = a.all.size() + a.matched.size();
    for (const auto &s : stops) {
        const size_t pos = sanitized.find(s);
        FUZZ_CHECK(pos == std::string::npos || pos + s.size() > end ||
                   (pos + s.size() == end && pos >= a.all.size())); // ties: the longest
    }
    return 0;
}
