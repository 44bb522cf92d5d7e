#pragma once
// Streams an assistant message whose text is read again as it grows (llama.cpp's chat parser
// on the partial output): each reading is compared with what was already sent, and only what
// extends it goes out — new content, a new call's id and name, more of a call's arguments. What
// the parser revises (a reading that no longer extends what was sent) is held back; the whole
// message, read once the text is complete, is authoritative.

#include "backend/generation_backend.h"

#include <string>
#include <vector>

namespace inferbox {

class message_stream {
  public:
    // A new reading of the message. Calls without an id get one (the id given to the same call
    // earlier stays). Appends to `content` and `calls` what may be streamed now.
    void update(chat_output reading, std::string &content, std::vector<tool_call_delta> &calls);
    // The latest reading, with ids filled in.
    const chat_output &message() const { return current_; }

  private:
    chat_output              current_;
    std::string              sent_content_;
    std::vector<std::string> sent_args_; // per streamed call: what of its arguments was sent
};

// "call_" followed by 16 random hex digits.
std::string new_call_id();

} // namespace inferbox
