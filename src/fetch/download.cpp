#include "fetch/download.h"

#include "store/store.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

namespace inferbox {

namespace fs = std::filesystem;

namespace {

using clock_type = std::chrono::steady_clock;

error failure(error_kind kind, std::string message) {
    return error{kind, std::move(message), {}, {}};
}

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
        s.remove_suffix(1);
    }
    return s;
}

std::optional<uint64_t> to_u64(std::string_view s) {
    uint64_t v         = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) {
        return std::nullopt;
    }
    return v;
}

// Printable, one line, bounded: for server-provided text in our messages.
std::string printable(std::string_view s, size_t max = 200) {
    std::string out;
    for (char c : s) {
        if (out.size() >= max) {
            out += "...";
            break;
        }
        const auto u = uint8_t(c);
        out += (u >= 0x20 && u < 0x7f) ? c : ' ';
    }
    return std::string(trim(out));
}

std::string host_of(const std::string &url) {
    const size_t scheme = url.find("://");
    if (scheme == std::string::npos) {
        return {};
    }
    const size_t start = scheme + 3;
    const size_t end   = url.find_first_of("/?#", start);
    std::string  auth  = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (const size_t at = auth.rfind('@'); at != std::string::npos) {
        auth = auth.substr(at + 1);
    }
    return auth;
}

// The validator of a partial file, kept beside it so a later process can resume it safely.
fs::path validator_path(const fs::path &part) {
    return fs::path(part.string() + ".validator");
}

std::string read_validator(const fs::path &part) {
    std::string v;
    FILE       *f = std::fopen(validator_path(part).c_str(), "re");
    if (f == nullptr) {
        return v;
    }
    char buf[512];
    if (std::fgets(buf, sizeof buf, f) != nullptr) {
        v = std::string(trim(buf));
    }
    std::fclose(f);
    return v;
}

void write_validator(const fs::path &part, const std::string &v) {
    std::error_code ec;
    if (v.empty()) {
        fs::remove(validator_path(part), ec);
        return;
    }
    FILE *f = std::fopen(validator_path(part).c_str(), "we");
    if (f != nullptr) {
        std::fputs((v + "\n").c_str(), f);
        std::fclose(f);
    }
}

struct curl_deleter {
    void operator()(CURL *c) const { curl_easy_cleanup(c); }
};
struct slist_deleter {
    void operator()(curl_slist *l) const { curl_slist_free_all(l); }
};

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// State of one attempt, shared with curl's callbacks.
struct attempt_state {
    const download_options *opts         = nullptr;
    CURL                   *curl         = nullptr;
    int                     fd           = -1;
    sha256_stream          *hash         = nullptr;
    uint64_t                offset       = 0; // bytes on disk when the attempt began
    uint64_t                on_disk      = 0; // bytes on disk now
    uint64_t                resumed_from = 0;
    clock_type::time_point  began;
    clock_type::time_point  last_progress;
    int                     attempt = 1;

    // Headers of the current response (reset at each status line; redirects have their own).
    std::optional<content_range> range;
    std::string                  etag, last_modified, retry_after;
    std::string                  linked_etag; // the first one seen in the chain
    bool                         weak_etag = false;

    bool                    body_started = false;
    long                    status       = 0;
    std::optional<uint64_t> total;
    std::string             error_body; // a refused response's first bytes
    std::optional<error>    abort_reason;
};

size_t on_header(char *data, size_t size, size_t n, void *user) {
    auto            *st  = static_cast<attempt_state *>(user);
    const size_t     len = size * n;
    std::string_view line(data, len);
    if (line.rfind("HTTP/", 0) == 0) {
        st->range.reset();
        st->etag.clear();
        st->last_modified.clear();
        st->retry_after.clear();
        st->weak_etag = false;
        return len;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
        return len;
    }
    const std::string      key   = lower(trim(line.substr(0, colon)));
    const std::string_view value = trim(line.substr(colon + 1));
    if (key == "content-range") {
        st->range = parse_content_range(value);
    } else if (key == "etag") {
        st->weak_etag = value.rfind("W/", 0) == 0;
        st->etag      = std::string(value);
    } else if (key == "last-modified") {
        st->last_modified = std::string(value);
    } else if (key == "retry-after") {
        st->retry_after = std::string(value);
    } else if (key == "x-linked-etag" && st->linked_etag.empty()) {
        st->linked_etag = std::string(value);
    }
    return len;
}

// Decides, at the first byte of the final response's body, what the bytes are: the rest of
// the file (206 at our offset), the whole file (200: start over), or an error page.
bool start_body(attempt_state &st) {
    st.body_started = true;
    curl_easy_getinfo(st.curl, CURLINFO_RESPONSE_CODE, &st.status);
    if (st.status != 200 && st.status != 206) {
        return true; // collected as error_body; the status decides after the transfer
    }
    curl_off_t cl = -1;
    curl_easy_getinfo(st.curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (st.status == 206) {
        if (!st.range || st.range->first != st.offset) {
            st.abort_reason = failure(error_kind::unavailable,
                                      "the server answered a resumed download with a different range; starting over");
            return false;
        }
        st.total = st.range->total;
        if (!st.total && cl >= 0) {
            st.total = st.offset + uint64_t(cl);
        }
    } else {
        if (st.offset > 0) {
            // The server ignored the range or the file changed (If-Range): start from zero.
            if (::ftruncate(st.fd, 0) != 0 || ::lseek(st.fd, 0, SEEK_SET) != 0) {
                st.abort_reason = failure(error_kind::internal, "cannot truncate " + st.opts->part_file.string() +
                                                                    ": " + std::strerror(errno));
                return false;
            }
            if (st.opts->on_notice) {
                st.opts->on_notice("the server sent the whole file; the partial download is discarded");
            }
            st.offset = st.on_disk = st.resumed_from = 0;
            st.hash->reset();
        }
        if (cl >= 0) {
            st.total = uint64_t(cl);
        }
    }
    if (st.total && *st.total > st.opts->max_bytes) {
        st.abort_reason = failure(error_kind::invalid_request, "the file is " + std::to_string(*st.total) +
                                                                   " bytes, more than the limit of " +
                                                                   std::to_string(st.opts->max_bytes));
        return false;
    }
    // Remember what makes a later resume safe. A weak ETag cannot guard a byte range.
    write_validator(st.opts->part_file, !st.etag.empty() && !st.weak_etag ? st.etag : st.last_modified);
    return true;
}

size_t on_body(char *data, size_t size, size_t n, void *user) {
    auto        *st  = static_cast<attempt_state *>(user);
    const size_t len = size * n;
    if (!st->body_started && !start_body(*st)) {
        return 0; // makes curl fail with CURLE_WRITE_ERROR; abort_reason says why
    }
    if (st->status != 200 && st->status != 206) {
        if (st->error_body.size() < 4096) {
            st->error_body.append(data, std::min(len, 4096 - st->error_body.size()));
        }
        return len;
    }
    if (st->on_disk + len > st->opts->max_bytes) {
        st->abort_reason = failure(error_kind::invalid_request,
                                   "the file grew past the limit of " + std::to_string(st->opts->max_bytes) + " bytes");
        return 0;
    }
    const char *p    = data;
    size_t      left = len;
    while (left > 0) {
        const ssize_t w = ::write(st->fd, p, left);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            st->abort_reason = failure(error_kind::internal,
                                       "cannot write " + st->opts->part_file.string() + ": " + std::strerror(errno));
            return 0;
        }
        p += w;
        left -= size_t(w);
    }
    st->hash->update(data, len);
    st->on_disk += len;
    return len;
}

error cancelled_error() {
    return error{error_kind::unavailable, "the download was cancelled", "", "cancelled"};
}

int on_xfer(void *user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto      *st  = static_cast<attempt_state *>(user);
    const auto now = clock_type::now();
    if (st->opts->cancelled && st->opts->cancelled()) {
        st->abort_reason = cancelled_error();
        return 1; // curl ends the transfer with CURLE_ABORTED_BY_CALLBACK
    }
    if (st->opts->on_progress && st->body_started && now - st->last_progress >= std::chrono::milliseconds(100)) {
        st->last_progress = now;
        download_progress p;
        p.received     = st->on_disk;
        p.total        = st->total;
        p.resumed_from = st->resumed_from;
        p.seconds      = std::chrono::duration<double>(now - st->began).count();
        p.attempt      = st->attempt;
        st->opts->on_progress(p);
    }
    return 0;
}

// Seconds from a Retry-After value (delta-seconds only; an HTTP date falls back to backoff).
std::optional<std::chrono::milliseconds> retry_after_delay(const std::string &v) {
    if (auto s = to_u64(v)) {
        return std::chrono::milliseconds(std::min<uint64_t>(*s, 300) * 1000);
    }
    return std::nullopt;
}

bool retryable_curl_code(CURLcode c) {
    switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP3:
        return true;
    default:
        return false;
    }
}

} // namespace

std::string sha256_from_linked_etag(std::string_view value) {
    std::string_view v = trim(value);
    if (v.rfind("W/", 0) == 0) {
        v.remove_prefix(2);
    }
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
        v = v.substr(1, v.size() - 2);
    }
    return looks_like_sha256(v) ? lower(v) : std::string();
}

std::optional<content_range> parse_content_range(std::string_view value) {
    std::string_view v = trim(value);
    if (v.rfind("bytes ", 0) != 0) {
        return std::nullopt;
    }
    v.remove_prefix(6);
    const size_t slash = v.find('/');
    if (slash == std::string_view::npos) {
        return std::nullopt;
    }
    const std::string_view span = v.substr(0, slash), total = v.substr(slash + 1);
    content_range          r;
    if (total != "*") {
        r.total = to_u64(total);
        if (!r.total) {
            return std::nullopt;
        }
    }
    if (span == "*") {
        return std::nullopt; // an unsatisfied-range answer carries no first byte
    }
    const size_t dash = span.find('-');
    if (dash == std::string_view::npos) {
        return std::nullopt;
    }
    const auto first = to_u64(span.substr(0, dash)), last = to_u64(span.substr(dash + 1));
    if (!first || !last || *last < *first || (r.total && *last >= *r.total)) {
        return std::nullopt;
    }
    r.first = *first;
    return r;
}

bool retryable_status(long status) {
    return status == 408 || status == 425 || status == 429 || (status >= 500 && status <= 599);
}

namespace {

// Closes the part file when the download ends, however it ends.
struct fd_closer {
    int fd;
    ~fd_closer() { ::close(fd); }
};

// One download_into call, across its attempts.
struct download_run {
    download_run(const download_options &o, int part_fd) : opts(o), fd(part_fd), delay(o.retry_delay) {}

    const download_options   &opts;
    int                       fd;
    sha256_stream             hash;
    uint64_t                  hashed = 0; // bytes of the part file the hash covers
    download_result           out;
    clock_type::time_point    began = clock_type::now();
    std::chrono::milliseconds delay;            // before the next retry
    bool                      restarts = false; // one 416 restart per call
};

// The offset the next attempt resumes at (the part file's size), with the hash brought to cover
// exactly those bytes.
result<uint64_t> resume_offset(download_run &d) {
    const fs::path &part = d.opts.part_file;
    const off_t     end  = ::lseek(d.fd, 0, SEEK_END);
    if (end < 0) {
        return failure(error_kind::internal, "cannot seek " + part.string() + ": " + std::strerror(errno));
    }
    const auto offset = uint64_t(end);
    if (d.hashed != offset) {
        d.hash.reset();
        if (auto e = d.hash.update_from_file(part, offset)) {
            return *e;
        }
        d.hashed = offset;
    }
    return offset;
}

// Empties the part file and forgets its validator: the next attempt starts from byte 0.
std::optional<error> drop_part(const download_run &d) {
    if (::ftruncate(d.fd, 0) != 0) {
        return failure(error_kind::internal,
                       "cannot truncate " + d.opts.part_file.string() + ": " + std::strerror(errno));
    }
    write_validator(d.opts.part_file, {});
    return std::nullopt;
}

// Sets up `c` for one attempt that resumes at `offset` (0: the whole file). `headers` must
// outlive the transfer.
void configure_attempt(CURL *c, const download_options &opts, attempt_state &st, uint64_t offset, curl_slist *headers) {
    curl_easy_setopt(c, CURLOPT_URL, opts.url.c_str());
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, opts.user_agent.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, long(opts.connect_timeout.count()));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, long(opts.stall_timeout.count()));
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &st);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &st);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (offset > 0) {
        // CURLOPT_RANGE rather than RESUME_FROM: a 200 answer (the file changed, or the
        // server ignores ranges) must restart the file, not fail the transfer. libcurl copies
        // the string.
        const std::string range = std::to_string(offset) + "-";
        curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
    }
    if (headers != nullptr) {
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    }
    if (!opts.bearer_token.empty()) {
        // Bearer auth, not a raw header: libcurl sends credentials only to the original
        // host, so a redirect to a CDN never sees the token.
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, long(CURLAUTH_BEARER));
        curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, opts.bearer_token.c_str());
    }
}

// The whole file is on disk: flushes it, fills d.out and reports the final progress.
std::optional<error> complete(download_run &d, const attempt_state &st, int attempt) {
    if (::fsync(d.fd) != 0) {
        return failure(error_kind::internal, "cannot flush " + d.opts.part_file.string() + ": " + std::strerror(errno));
    }
    d.out.size   = st.on_disk;
    d.out.sha256 = d.hash.hex_digest();
    if (d.opts.on_progress) {
        download_progress p;
        p.received     = st.on_disk;
        p.total        = st.on_disk;
        p.resumed_from = d.out.resumed_from;
        p.seconds      = std::chrono::duration<double>(clock_type::now() - d.began).count();
        p.attempt      = attempt;
        d.opts.on_progress(p);
    }
    write_validator(d.opts.part_file, {});
    return std::nullopt;
}

// A completed transfer that got an HTTP error status: the error that ends the download, or the
// problem to retry after (waiting at least the server's Retry-After).
result<std::string> http_status_problem(download_run &d, const attempt_state &st) {
    const download_options &opts  = d.opts;
    const std::string       where = host_of(d.out.final_url);
    const std::string       body  = printable(st.error_body);
    const std::string       detail =
        "HTTP " + std::to_string(st.status) + " from " + where + (body.empty() ? "" : ": " + body);
    if (st.status == 401 || st.status == 403) {
        return failure(error_kind::unauthorized,
                       detail + (opts.bearer_token.empty() ? " (no token was sent)" : " (the token was refused)"));
    }
    if (st.status == 404 || st.status == 410) {
        return failure(error_kind::not_found, "not found: " + opts.url + " (" + detail + ")");
    }
    if (!retryable_status(st.status)) {
        return failure(error_kind::invalid_request, "cannot download " + opts.url + ": " + detail);
    }
    if (auto delay = retry_after_delay(st.retry_after)) {
        d.delay = std::max(d.delay, *delay);
    }
    return detail;
}

// How an attempt ended: the file is complete, another attempt may help (`problem` says why), or
// the part was dropped to start over, which does not count as an attempt.
enum class attempt_end { complete, retry, restart };

result<attempt_end> settle_attempt(download_run &d, const attempt_state &st, CURLcode rc, uint64_t offset, int attempt,
                                   std::string &problem) {
    const download_options &opts = d.opts;
    if (rc == CURLE_OK && (st.status == 200 || st.status == 206)) {
        if (st.total && st.on_disk != *st.total) {
            problem = "the connection ended at byte " + std::to_string(st.on_disk) + " of " + std::to_string(*st.total);
            return attempt_end::retry;
        }
        if (auto e = complete(d, st, attempt)) {
            return *e;
        }
        return attempt_end::complete;
    }
    if (st.abort_reason) {
        if (st.abort_reason->kind != error_kind::unavailable || st.abort_reason->code == "cancelled") {
            return *st.abort_reason;
        }
        // A range we did not ask for: drop what is on disk and start over.
        if (auto e = drop_part(d)) {
            return *e;
        }
        problem = st.abort_reason->message;
        return attempt_end::retry;
    }
    if (rc == CURLE_OK && st.status == 416 && offset > 0 && !d.restarts) {
        // The range starts at or past the end: the part is complete, longer than the file,
        // or belongs to another version. Only a full download settles which.
        d.restarts = true;
        if (auto e = drop_part(d)) {
            return *e;
        }
        if (opts.on_notice) {
            opts.on_notice("the server cannot resume at byte " + std::to_string(offset) + "; starting over");
        }
        return attempt_end::restart; // not a failure of the network
    }
    if (rc == CURLE_OK) {
        auto p = http_status_problem(d, st);
        if (!p) {
            return p.err();
        }
        problem = std::move(*p);
        return attempt_end::retry;
    }
    if (retryable_curl_code(rc)) {
        problem = curl_easy_strerror(rc);
        return attempt_end::retry;
    }
    return failure(rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_TOO_MANY_REDIRECTS
                       ? error_kind::invalid_request
                       : error_kind::unavailable,
                   "cannot download " + opts.url + ": " + curl_easy_strerror(rc));
}

// One transfer that resumes at `offset`, and what it means (settle_attempt).
result<attempt_end> run_attempt(download_run &d, uint64_t offset, int attempt, std::string &problem) {
    const download_options             &opts = d.opts;
    std::unique_ptr<CURL, curl_deleter> curl(curl_easy_init());
    if (!curl) {
        return failure(error_kind::internal, "cannot initialise libcurl");
    }
    attempt_state st;
    st.opts          = &opts;
    st.curl          = curl.get();
    st.fd            = d.fd;
    st.hash          = &d.hash;
    st.offset        = offset;
    st.on_disk       = offset;
    st.resumed_from  = d.out.resumed_from;
    st.began         = d.began;
    st.last_progress = clock_type::now() - std::chrono::seconds(1);
    st.attempt       = attempt;

    std::unique_ptr<curl_slist, slist_deleter> headers;
    const std::string                          validator = offset > 0 ? read_validator(opts.part_file) : std::string();
    if (!validator.empty()) {
        headers.reset(curl_slist_append(nullptr, ("If-Range: " + validator).c_str()));
    }
    CURL *c = curl.get();
    configure_attempt(c, opts, st, offset, headers.get());

    const CURLcode rc = curl_easy_perform(c);
    d.hashed          = st.on_disk;
    if (!st.body_started) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st.status);
    }
    if (d.out.published_sha256.empty()) {
        d.out.published_sha256 = sha256_from_linked_etag(st.linked_etag);
    }
    char *final_url = nullptr;
    curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &final_url);
    d.out.final_url = final_url != nullptr ? final_url : opts.url;
    return settle_attempt(d, st, rc, offset, attempt, problem);
}

result<download_result> download_into(const download_options &opts) {
    global_init();
    if (opts.url.rfind("https://", 0) != 0 && opts.url.rfind("http://", 0) != 0) {
        return failure(error_kind::invalid_request, "only http:// and https:// URLs can be downloaded: " + opts.url);
    }
    const fs::path &part = opts.part_file;
    const int       fd   = ::open(part.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return failure(error_kind::internal, "cannot open " + part.string() + ": " + std::strerror(errno));
    }
    const fd_closer closer{fd};
    download_run    d(opts, fd);

    for (int attempt = 1;; ++attempt) {
        d.out.attempts = attempt;
        // Resume from whatever is on disk.
        auto offset = resume_offset(d);
        if (!offset) {
            return offset.err();
        }
        if (attempt == 1) {
            d.out.resumed_from = *offset;
            if (*offset > 0 && opts.on_notice) {
                opts.on_notice("resuming a partial download at byte " + std::to_string(*offset));
            }
        }
        std::string problem; // set when this attempt failed in a way worth retrying
        auto        end = run_attempt(d, *offset, attempt, problem);
        if (!end) {
            return end.err();
        }
        if (*end == attempt_end::complete) {
            return d.out;
        }
        if (*end == attempt_end::restart) {
            --attempt;
            continue;
        }
        if (attempt >= opts.max_attempts) {
            return failure(error_kind::unavailable, "cannot download " + opts.url + " after " +
                                                        std::to_string(attempt) + " attempts: " + problem +
                                                        " (the partial file is kept; run the same command to resume)");
        }
        if (opts.on_notice) {
            opts.on_notice("attempt " + std::to_string(attempt) + " failed (" + problem + "); retrying in " +
                           std::to_string(d.delay.count()) + " ms");
        }
        for (auto waited = std::chrono::milliseconds(0); waited < d.delay; waited += std::chrono::milliseconds(100)) {
            if (opts.cancelled && opts.cancelled()) {
                return cancelled_error();
            }
            std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(std::chrono::milliseconds(100), d.delay));
        }
        d.delay = std::min<std::chrono::milliseconds>(d.delay * 2, std::chrono::seconds(30));
    }
}

} // namespace

result<download_result> download_file(const download_options &opts) {
    auto r = download_into(opts);
    if (!r) {
        // Nothing worth resuming: leave no empty file behind.
        std::error_code ec;
        if (fs::exists(opts.part_file, ec) && fs::file_size(opts.part_file, ec) == 0 && !ec) {
            fs::remove(opts.part_file, ec);
            write_validator(opts.part_file, {});
        }
    }
    return r;
}

} // namespace inferbox
