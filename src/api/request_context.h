#pragma once
// Identity of one HTTP request for logs and clients: its request id (X-Request-Id, echoed when
// the client sent a sane one, generated otherwise) and its W3C trace context (traceparent).

#include <string>
#include <string_view>

namespace inferbox {

// The client's X-Request-Id when it is 1..128 characters of [A-Za-z0-9._:+=/-]; otherwise (absent,
// too long, odd bytes that could forge log lines) a new random 32-hex-digit id.
std::string request_id_from(std::string_view header);

// W3C Trace Context (https://www.w3.org/TR/trace-context/). The server is one span: it keeps the
// caller's trace id, records the caller's span as parent, and answers with a traceparent that
// names its own span, so a client or proxy can join the server's logs to its trace.
struct trace_context {
    std::string trace_id;  // 32 lower-case hex digits
    std::string parent_id; // the caller's span (16 hex), empty when the trace starts here
    std::string span_id;   // this server's span (16 hex)
    std::string flags = "01";
    std::string header() const; // the traceparent value naming our span
};

// Parses a traceparent header; an absent or invalid one (wrong length, non-hex, all-zero ids,
// version ff) starts a new trace, as the specification asks.
trace_context trace_from(std::string_view traceparent);

std::string random_hex(size_t n_digits);

} // namespace inferbox
