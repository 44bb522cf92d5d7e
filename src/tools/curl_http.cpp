#include "tools/curl_http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <memory>

namespace inferbox {

namespace {

constexpr size_t max_idle_handles = 8;
constexpr size_t max_header_bytes = size_t{64} << 10; // all response headers together

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct slist_deleter {
    void operator()(curl_slist *l) const { curl_slist_free_all(l); }
};

// One exchange's state, shared with curl's callbacks.
struct exchange_state {
    const curl_http_request *req = nullptr;
    curl_http_response       resp;
    size_t                   body_bytes = 0, header_bytes = 0;
    bool                     over_body = false, over_headers = false;
};

std::string trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
        s.remove_suffix(1);
    }
    return std::string(s);
}

size_t on_header(char *data, size_t size, size_t n, void *user) {
    auto            &st  = *static_cast<exchange_state *>(user);
    const size_t     len = size * n;
    std::string_view line(data, len);
    st.header_bytes += len;
    if (st.header_bytes > max_header_bytes) {
        st.over_headers = true;
        return 0;
    }
    if (line.rfind("HTTP/", 0) == 0) {
        // A status line: a new response (an interim 1xx came before, or this is the first).
        st.resp.headers.clear();
        const auto sp = line.find(' ');
        st.resp.status =
            sp == std::string_view::npos ? 0 : std::strtol(std::string(line.substr(sp + 1, 3)).c_str(), nullptr, 10);
        return len;
    }
    const auto colon = line.find(':');
    if (colon != std::string_view::npos && colon > 0) {
        std::string name(line.substr(0, colon));
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        st.resp.headers.emplace_back(std::move(name), trim(line.substr(colon + 1)));
    }
    return len;
}

size_t on_body(char *data, size_t size, size_t n, void *user) {
    auto        &st  = *static_cast<exchange_state *>(user);
    const size_t len = size * n;
    st.body_bytes += len;
    if (st.body_bytes > st.req->max_body_bytes) {
        st.over_body = true;
        return 0; // curl ends the exchange with CURLE_WRITE_ERROR
    }
    if (st.req->on_body) {
        if (!st.req->on_body(st.resp, std::string_view(data, len))) {
            st.resp.stopped = true;
            return 0;
        }
        return len;
    }
    st.resp.body.append(data, len);
    return len;
}

} // namespace

std::string curl_http_response::header(std::string_view lower_name) const {
    for (const auto &[k, v] : headers) {
        if (k == lower_name) {
            return v;
        }
    }
    return "";
}

curl_http_client::~curl_http_client() {
    for (void *h : idle_) {
        curl_easy_cleanup(static_cast<CURL *>(h));
    }
}

result<curl_http_response> curl_http_client::perform(const curl_http_request &req) {
    global_init();
    CURL *c = nullptr;
    {
        std::lock_guard lock(mu_);
        if (!idle_.empty()) {
            c = static_cast<CURL *>(idle_.back());
            idle_.pop_back();
        }
    }
    if (c == nullptr) {
        c = curl_easy_init();
        if (c == nullptr) {
            return error{error_kind::internal, "cannot create an HTTP client handle (libcurl)", "", ""};
        }
    }
    std::unique_ptr<curl_slist, slist_deleter> headers;
    for (const auto &[k, v] : req.headers) {
        const std::string line = k + ": " + v;
        curl_slist       *next = curl_slist_append(headers.get(), line.c_str());
        if (next == nullptr) {
            curl_easy_cleanup(c);
            return error{error_kind::internal, "out of memory building an HTTP request", "", ""};
        }
        static_cast<void>(headers.release());
        headers.reset(next);
    }
    // No "Expect: 100-continue" round trip before a larger body.
    if (curl_slist *next = curl_slist_append(headers.get(), "Expect:"); next != nullptr) {
        static_cast<void>(headers.release());
        headers.reset(next);
    }

    exchange_state st;
    st.req                             = &req;
    char       errbuf[CURL_ERROR_SIZE] = {0};
    const long timeout_ms              = std::max<long>(1, static_cast<long>(req.timeout.count()));
    curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 10'000L));
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "inferbox");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &st);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    if (req.method == "POST") {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.data());
    } else if (req.method == "GET") {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    }
    const CURLcode rc = curl_easy_perform(c);
    curl_easy_reset(c); // drops the options (and the pointers to our locals); keeps the connection
    const bool ok = rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && st.resp.stopped);
    {
        std::lock_guard lock(mu_);
        if (ok && idle_.size() < max_idle_handles) {
            idle_.push_back(c);
            c = nullptr;
        }
    }
    if (c != nullptr) {
        curl_easy_cleanup(c);
    }
    if (ok) {
        return std::move(st.resp);
    }
    if (st.over_body) {
        return error{error_kind::upstream,
                     req.url + " answered with more than " + std::to_string(req.max_body_bytes) + " bytes", "",
                     "response_too_large"};
    }
    if (st.over_headers) {
        return error{error_kind::upstream,
                     req.url + " answered with more than " + std::to_string(max_header_bytes) + " bytes of headers", "",
                     "response_too_large"};
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        return error{error_kind::timeout,
                     req.url + " did not answer within " + std::to_string(req.timeout.count()) + " ms", "", "timeout"};
    }
    return error{error_kind::upstream,
                 "cannot reach " + req.url + ": " + (errbuf[0] != '\0' ? std::string(errbuf) : curl_easy_strerror(rc)),
                 "", "unreachable"};
}

bool sse_parser::feed(std::string_view                                                              bytes,
                      const std::function<bool(const std::string &event, const std::string &data)> &on_event) {
    size_t start = 0;
    for (size_t i = 0; i < bytes.size(); ++i) {
        const char ch = bytes[i];
        if (ch != '\n' && ch != '\r') {
            continue;
        }
        const bool lf_after_cr = ch == '\n' && after_cr_ && i == start && pending_.empty();
        after_cr_              = ch == '\r';
        if (lf_after_cr) {
            start = i + 1; // the \n of a \r\n: the line ended at the \r
            continue;
        }
        pending_.append(bytes.substr(start, i - start));
        start = i + 1;
        if (pending_.size() > max_) {
            too_long_ = true;
            return false;
        }
        const std::string l = std::move(pending_);
        pending_.clear();
        if (!line(l, on_event)) {
            return false;
        }
    }
    if (start < bytes.size()) {
        after_cr_ = false;
        pending_.append(bytes.substr(start));
        if (pending_.size() > max_) {
            too_long_ = true;
            return false;
        }
    }
    return true;
}

bool sse_parser::line(std::string_view                                                     l,
                      const std::function<bool(const std::string &, const std::string &)> &on_event) {
    if (l.empty()) {
        // The end of an event: dispatched when it carried data.
        const bool  had  = has_data_;
        std::string name = event_.empty() ? std::string("message") : event_;
        std::string data = std::move(data_);
        event_.clear();
        data_.clear();
        has_data_ = false;
        return !had || on_event(name, data);
    }
    if (l.front() == ':') {
        return true; // a comment (keep-alive)
    }
    const auto       colon = l.find(':');
    std::string_view field = l.substr(0, colon), value;
    if (colon != std::string_view::npos) {
        value = l.substr(colon + 1);
        if (!value.empty() && value.front() == ' ') {
            value.remove_prefix(1);
        }
    }
    if (field == "data") {
        if (has_data_) {
            data_ += '\n';
        }
        data_.append(value);
        has_data_ = true;
        if (data_.size() > max_) {
            too_long_ = true;
            return false;
        }
    } else if (field == "event") {
        event_ = std::string(value);
    }
    return true;
}

} // namespace inferbox
