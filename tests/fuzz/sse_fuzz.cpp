// A remote backend's answer bytes -> sse_reader, the reader of OpenAI-compatible event streams
// (backend/sse_reader.h). The input is: 1 byte of settings (bit 0: chat, bit 1: tools, bits 2-3:
// choices 1..4, bits 4-7: the cut seed), then the stream. The same stream is fed whole and cut at
// pseudo-random points, and every run must honour the reader's contract:
//   - the events are the same however the stream was cut;
//   - every event names a choice the request has; after an error event nothing follows;
//   - each choice finishes at most once, and a finished choice gets no further event;
//   - a run ends done or failed once end() was called.

#include "backend/sse_reader.h"
#include "fuzz_check.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace inferbox;

namespace {

std::vector<backend_event> run(bool chat, bool tools, size_t n, std::string_view stream, uint32_t seed) {
    sse_reader                 r("fuzz", chat, tools, n, /*max_event_bytes=*/4096);
    std::vector<backend_event> out;
    size_t                     at = 0;
    while (at < stream.size()) {
        size_t piece = stream.size() - at;
        if (seed != 0) {
            seed  = seed * 1103515245u + 12345u;
            piece = std::min<size_t>(piece, (seed >> 16) % 64);
        }
        r.feed(stream.substr(at, piece), out);
        at += piece;
    }
    r.end(out);
    FUZZ_CHECK(r.done() || r.failed());
    return out;
}

std::string describe(const std::vector<backend_event> &evs) {
    std::string s;
    for (const auto &e : evs) {
        s += std::to_string(e.choice) + "|" + e.content + "|" + std::to_string(static_cast<int>(e.finish)) + "|" +
             std::to_string(e.calls.size()) + "|" + std::to_string(e.logprobs.size()) + "|" +
             (e.err ? e.err->message : "") + "\n";
        for (const auto &c : e.calls) {
            s += c.id + "/" + c.name + "/" + c.arguments + "/" + std::to_string(c.call) + (c.first ? "F" : "") + "\n";
        }
    }
    return s;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) {
        return 0;
    }
    const bool             chat  = (data[0] & 1) != 0;
    const bool             tools = (data[0] & 2) != 0;
    const size_t           n     = 1 + ((data[0] >> 2) & 3);
    const uint32_t         seed  = 1 + (data[0] >> 4);
    const std::string_view stream(reinterpret_cast<const char *>(data + 1), size - 1);

    const auto whole = run(chat, tools, n, stream, 0);
    const auto cut   = run(chat, tools, n, stream, seed);
    // Call ids the stream does not give are made up per run: compare without them.
    auto strip = [](std::vector<backend_event> evs) {
        for (auto &e : evs) {
            for (auto &c : e.calls) {
                c.id.clear();
            }
            if (e.message) {
                for (auto &c : e.message->tool_calls) {
                    c.id.clear();
                }
            }
        }
        return evs;
    };
    FUZZ_CHECK(describe(strip(whole)) == describe(strip(cut)));

    std::vector<bool> finished(n, false);
    for (size_t i = 0; i < whole.size(); ++i) {
        const auto &e = whole[i];
        if (e.err) {
            FUZZ_CHECK(i + 1 == whole.size());
            continue;
        }
        FUZZ_CHECK(e.choice < n);
        FUZZ_CHECK(!finished[e.choice]);
        if (e.finish != finish_reason::none) {
            finished[e.choice] = true;
            FUZZ_CHECK(tools == e.message.has_value());
        }
    }
    return 0;
}
