#include "backend/sse_reader.h"

#include "backend/message_stream.h"

#include <nlohmann/json.hpp>

namespace inferbox {

using json = nlohmann::json;

namespace {

std::string string_or(const json &j, const char *key, std::string fallback = {}) {
    if (j.is_object()) {
        auto it = j.find(key);
        if (it != j.end() && it->is_string()) {
            return it->get<std::string>();
        }
    }
    return fallback;
}

// j[key] when j is an object and that member is one too, else an empty object.
json object_or_empty(const json &j, const char *key) {
    if (j.is_object()) {
        auto it = j.find(key);
        if (it != j.end() && it->is_object()) {
            return *it;
        }
    }
    return json::object();
}

int32_t int_or(const json &j, const char *key) {
    if (j.is_object()) {
        auto it = j.find(key);
        if (it != j.end() && it->is_number_integer()) {
            return it->get<int32_t>();
        }
    }
    return 0;
}

float float_or(const json &j, const char *key) {
    if (j.is_object()) {
        auto it = j.find(key);
        if (it != j.end() && it->is_number()) {
            return it->get<float>();
        }
    }
    return 0.0f;
}

// A token's text: its `bytes` when given (a token may be part of a character), else `token`.
std::string token_text(const json &e) {
    auto it = e.find("bytes");
    if (it != e.end() && it->is_array()) {
        std::string s;
        for (const auto &b : *it) {
            if (b.is_number_integer()) {
                s.push_back(static_cast<char>(b.get<int>() & 0xff));
            }
        }
        return s;
    }
    return string_or(e, "token");
}

std::vector<token_logprob> chat_logprobs(const json &lp) {
    std::vector<token_logprob> out;
    const auto                 it = lp.is_object() ? lp.find("content") : lp.end();
    if (!lp.is_object() || it == lp.end() || !it->is_array()) {
        return out;
    }
    for (const auto &e : *it) {
        token_logprob t;
        t.token   = token_text(e);
        t.logprob = float_or(e, "logprob");
        if (auto top = e.find("top_logprobs"); top != e.end() && top->is_array()) {
            for (const auto &alt : *top) {
                t.top.emplace_back(token_text(alt), float_or(alt, "logprob"));
            }
        }
        out.push_back(std::move(t));
    }
    return out;
}

std::vector<token_logprob> completion_logprobs(const json &lp) {
    std::vector<token_logprob> out;
    if (!lp.is_object()) {
        return out;
    }
    const auto tokens = lp.find("tokens"), values = lp.find("token_logprobs"), tops = lp.find("top_logprobs");
    if (tokens == lp.end() || !tokens->is_array()) {
        return out;
    }
    for (size_t i = 0; i < tokens->size(); ++i) {
        token_logprob t;
        t.token = (*tokens)[i].is_string() ? (*tokens)[i].get<std::string>() : "";
        if (values != lp.end() && values->is_array() && i < values->size() && (*values)[i].is_number()) {
            t.logprob = (*values)[i].get<float>();
        }
        if (tops != lp.end() && tops->is_array() && i < tops->size() && (*tops)[i].is_object()) {
            for (const auto &[k, v] : (*tops)[i].items()) {
                t.top.emplace_back(k, v.is_number() ? v.get<float>() : 0.0f);
            }
        }
        out.push_back(std::move(t));
    }
    return out;
}

} // namespace

sse_reader::sse_reader(std::string backend, bool chat, bool tools, size_t n_choices, size_t max_event_bytes)
    : backend_(std::move(backend)), chat_(chat), tools_(tools), max_event_bytes_(max_event_bytes), choices_(n_choices) {
}

void sse_reader::fail(std::string message, std::vector<backend_event> &out) {
    if (failed_) {
        return;
    }
    failed_ = true;
    backend_event ev;
    ev.err = error{error_kind::upstream, "backend '" + backend_ + "': " + std::move(message), "", "backend_error"};
    out.push_back(std::move(ev));
}

void sse_reader::feed(std::string_view bytes, std::vector<backend_event> &out) {
    if (failed_ || done_) {
        return;
    }
    buf_.append(bytes);
    size_t start = 0;
    while (!failed_ && !done_) {
        // An event ends at a blank line ("\n\n", or "\r\n\r\n" from servers that write CRLF).
        size_t end = buf_.find("\n\n", start);
        size_t sep = 2;
        if (const size_t crlf = buf_.find("\r\n\r\n", start); crlf != std::string::npos && crlf < end) {
            end = crlf;
            sep = 4;
        }
        if (end == std::string::npos) {
            break;
        }
        std::string data;
        size_t      line_start = start;
        while (line_start < end) {
            size_t line_end = buf_.find('\n', line_start);
            if (line_end == std::string::npos || line_end > end) {
                line_end = end;
            }
            std::string_view line(buf_.data() + line_start, line_end - line_start);
            if (!line.empty() && line.back() == '\r') {
                line.remove_suffix(1);
            }
            if (line.rfind("data:", 0) == 0) {
                line.remove_prefix(5);
                if (!line.empty() && line.front() == ' ') {
                    line.remove_prefix(1);
                }
                if (!data.empty()) {
                    data.push_back('\n');
                }
                data.append(line);
            }
            line_start = line_end + 1;
        }
        start = end + sep;
        if (!data.empty()) {
            on_data(data, out);
        }
    }
    buf_.erase(0, start);
    if (!failed_ && !done_ && buf_.size() > max_event_bytes_) {
        fail("an event of its stream exceeds " + std::to_string(max_event_bytes_) + " bytes", out);
    }
}

void sse_reader::on_data(std::string_view data, std::vector<backend_event> &out) {
    if (data == "[DONE]") {
        release(out);
        if (!failed_) {
            end(out);
        }
        done_ = true;
        return;
    }
    json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
        fail("its stream carried an event that is not a JSON object", out);
        return;
    }
    if (auto e = j.find("error"); e != j.end() && !e->is_null()) {
        fail(e->is_object() ? string_or(*e, "message", "an error without a message") : e->dump(), out);
        return;
    }
    if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
        usage_seen_  = true;
        n_prompt_    = int_or(*u, "prompt_tokens");
        n_generated_ = int_or(*u, "completion_tokens");
        if (auto d = u->find("prompt_tokens_details"); d != u->end()) {
            n_cached_ = int_or(*d, "cached_tokens");
        }
    }
    if (auto cs = j.find("choices"); cs != j.end() && cs->is_array()) {
        for (const auto &c : *cs) {
            if (!c.is_object()) {
                fail("its stream carried a choice that is not a JSON object", out);
                return;
            }
            const int32_t index = int_or(c, "index");
            if (index < 0 || static_cast<size_t>(index) >= choices_.size()) {
                fail("its stream names choice " + std::to_string(index) + " of a request for " +
                         std::to_string(choices_.size()),
                     out);
                return;
            }
            auto         &st = choices_[static_cast<size_t>(index)];
            backend_event ev;
            ev.choice = static_cast<size_t>(index);
            if (chat_) {
                const json delta = object_or_empty(c, "delta");
                ev.content       = string_or(delta, "content");
                if (auto tcs = delta.find("tool_calls"); tcs != delta.end() && tcs->is_array()) {
                    for (const auto &tc : *tcs) {
                        if (!tc.is_object()) {
                            fail("its stream carried a tool call that is not a JSON object", out);
                            return;
                        }
                        tool_call_delta d;
                        const int32_t   call = int_or(tc, "index");
                        if (call < 0 || static_cast<size_t>(call) > st.message.tool_calls.size() || call > 1024) {
                            fail("its stream skips to tool call " + std::to_string(call), out);
                            return;
                        }
                        d.call        = static_cast<size_t>(call);
                        const json fn = tc.value("function", json::object());
                        d.arguments   = string_or(fn, "arguments");
                        if (d.call == st.message.tool_calls.size()) {
                            d.first = true;
                            d.id    = string_or(tc, "id");
                            if (d.id.empty()) {
                                d.id = new_call_id();
                            }
                            d.name = string_or(fn, "name");
                            st.message.tool_calls.push_back({d.id, d.name, ""});
                        }
                        st.message.tool_calls[d.call].arguments += d.arguments;
                        if (d.first && !d.arguments.empty()) {
                            // Our events announce a call and carry its arguments separately.
                            tool_call_delta rest;
                            rest.call      = d.call;
                            rest.arguments = std::move(d.arguments);
                            d.arguments.clear();
                            ev.calls.push_back(std::move(d));
                            ev.calls.push_back(std::move(rest));
                        } else {
                            ev.calls.push_back(std::move(d));
                        }
                    }
                }
                ev.logprobs = chat_logprobs(c.value("logprobs", json()));
            } else {
                ev.content  = string_or(c, "text");
                ev.logprobs = completion_logprobs(c.value("logprobs", json()));
            }
            if (tools_) {
                st.message.content += ev.content;
            }
            const std::string reason = string_or(c, "finish_reason");
            if (!reason.empty() && !st.finished) {
                st.finished = true;
                st.finish   = reason == "length" ? finish_reason::length : finish_reason::stop;
            }
            if (!ev.content.empty() || !ev.calls.empty() || !ev.logprobs.empty()) {
                any_ = true;
                out.push_back(std::move(ev));
            }
        }
    }
    bool all_finished = true;
    for (const auto &st : choices_) {
        all_finished = all_finished && st.finished;
    }
    if (all_finished && usage_seen_) {
        release(out);
    }
}

void sse_reader::release(std::vector<backend_event> &out) {
    bool counts_given = false;
    for (size_t i = 0; i < choices_.size(); ++i) {
        auto &st = choices_[i];
        if (!st.finished || st.released) {
            continue;
        }
        st.released = true;
        any_        = true;
        backend_event ev;
        ev.choice = i;
        ev.finish = st.finish;
        if (tools_) {
            ev.message = st.message;
        }
        if (!counts_given) {
            // The server counts the whole request: the first choice carries it.
            counts_given   = true;
            ev.n_prompt    = n_prompt_;
            ev.n_cached    = n_cached_;
            ev.n_generated = n_generated_;
        }
        out.push_back(std::move(ev));
    }
}

void sse_reader::end(std::vector<backend_event> &out) {
    if (failed_ || done_) {
        return;
    }
    for (size_t i = 0; i < choices_.size(); ++i) {
        if (!choices_[i].finished) {
            fail("its stream ended before choice " + std::to_string(i) + " finished", out);
            return;
        }
    }
    release(out);
    done_ = true;
}

} // namespace inferbox
