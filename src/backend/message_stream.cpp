#include "backend/message_stream.h"

#include <cstdio>
#include <random>

namespace inferbox {

namespace {

bool extends(const std::string &s, const std::string &prefix) {
    return s.size() > prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

} // namespace

std::string new_call_id() {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    char                                buf[17];
    snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
    return std::string("call_") + buf;
}

void message_stream::update(chat_output reading, std::string &content, std::vector<tool_call_delta> &calls) {
    for (size_t i = 0; i < reading.tool_calls.size(); ++i) {
        auto &tc = reading.tool_calls[i];
        if (tc.id.empty()) {
            const bool known = i < current_.tool_calls.size() && !current_.tool_calls[i].id.empty();
            tc.id            = known ? current_.tool_calls[i].id : new_call_id();
        }
    }
    current_ = std::move(reading);

    if (extends(current_.content, sent_content_)) {
        content += current_.content.substr(sent_content_.size());
        sent_content_ = current_.content;
    }
    for (size_t i = 0; i < current_.tool_calls.size(); ++i) {
        const auto &tc = current_.tool_calls[i];
        if (i >= sent_args_.size()) {
            // A call is announced once its name is known, and only after the calls before it.
            if (tc.name.empty() || i > sent_args_.size()) {
                break;
            }
            sent_args_.emplace_back();
            tool_call_delta d;
            d.call  = i;
            d.first = true;
            d.id    = tc.id;
            d.name  = tc.name;
            calls.push_back(std::move(d));
        }
        auto &sent = sent_args_[i];
        if (extends(tc.arguments, sent)) {
            tool_call_delta d;
            d.call      = i;
            d.arguments = tc.arguments.substr(sent.size());
            calls.push_back(std::move(d));
            sent = tc.arguments;
        }
    }
}

} // namespace inferbox
