#pragma once
// Turns a sequence of detokenized pieces into text that is safe to send: it never emits a
// partial stop string (text that might still become a stop string is held back), never splits
// a multi-byte character, and never emits invalid UTF-8. The concatenation of everything emitted
// is the same however the pieces were cut, so streamed and non-streamed responses agree.
//
// Stop strings are matched against the text as it will be sent (invalid bytes already replaced
// by U+FFFD). When several could match, the one that completes first wins, and of those ending
// at the same byte the longest: that is the only rule a token-by-token stream can follow, so a
// whole text must follow it too.
//
// Not thread-safe: one instance per generated sequence, used by one thread at a time.

#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

class text_stream {
  public:
    // Empty stop strings are ignored; invalid UTF-8 in one is replaced as in the text.
    explicit text_stream(std::vector<std::string> stop_strings);

    // Adds a piece; returns the text that became safe to emit (possibly empty). After a stop
    // string completes, stopped() is true, the returned text ends just before the stop string,
    // and later calls return nothing.
    std::string push(std::string_view piece);

    // Ends the stream: returns whatever was held back (a prefix of a stop string that never
    // completed, or a truncated character, which becomes U+FFFD and may itself complete a stop
    // string, in which case stopped() turns true).
    std::string finish();

    bool               stopped() const { return stopped_; }
    const std::string &matched_stop() const { return matched_; }

  private:
    // Moves what is safe out of pending_: all of it but a possible stop-string prefix, or the
    // text before a completed stop string.
    std::string release();

    std::vector<std::string> stops_;
    std::string              partial_; // bytes of a character still arriving (0..3), not yet in pending_
    std::string              pending_; // valid UTF-8 received but not yet emitted
    std::string              matched_;
    bool                     stopped_ = false;
};

} // namespace inferbox
