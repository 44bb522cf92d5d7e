#include "backend/remote_backend.h"

#include "api/schema.h"
#include "backend/sse_reader.h"

#include <boost/asio/post.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>

namespace inferbox {

using json  = nlohmann::json;
using clock = std::chrono::steady_clock;

const char *circuit_name(circuit_state s) {
    switch (s) {
    case circuit_state::closed:
        return "closed";
    case circuit_state::open:
        return "open";
    case circuit_state::half_open:
        return "half_open";
    }
    return "closed";
}

namespace {

constexpr size_t k_max_error_body = size_t{64} * 1024;

std::optional<std::chrono::milliseconds> retry_after_of(const http_headers &headers) {
    for (const auto &[k, v] : headers) {
        if (k.size() == 11 && std::equal(k.begin(), k.end(), "retry-after", [](char a, char b) {
                return std::tolower(static_cast<unsigned char>(a)) == b;
            })) {
            int64_t    s  = 0;
            const auto rc = std::from_chars(v.data(), v.data() + v.size(), s);
            if (rc.ec == std::errc() && s >= 0) {
                return std::chrono::milliseconds(std::min<int64_t>(s, 3600) * 1000);
            }
        }
    }
    return std::nullopt;
}

// A backend's non-200 answer as our error: its own message, the backend named.
error error_from_status(const std::string &name, int status, const std::string &body) {
    std::string message, param;
    json        j = json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("error")) {
        const auto &e = j["error"];
        if (e.is_object()) {
            message = e.value("message", "");
            if (e.contains("param") && e["param"].is_string()) {
                param = e["param"].get<std::string>();
            }
        } else if (e.is_string()) {
            message = e.get<std::string>();
        }
    }
    if (message.empty()) {
        message = body.substr(0, 200);
    }
    const std::string who = "backend '" + name + "'";
    const std::string st  = " (HTTP " + std::to_string(status) + ")";
    switch (status) {
    case 400:
    case 422:
        return error{error_kind::invalid_request, who + " refused the request" + st + ": " + message, param,
                     "backend_invalid_request"};
    case 401:
    case 403:
        return error{error_kind::upstream, who + " refused inferbox's credentials" + st + ": " + message, "",
                     "backend_unauthorized"};
    case 408:
    case 504:
        return error{error_kind::timeout, who + " timed out" + st + ": " + message, "", "backend_timeout"};
    case 413:
        return error{error_kind::payload_too_large, who + " refused the request's size" + st + ": " + message, "",
                     "backend_payload_too_large"};
    case 429:
        return error{error_kind::overloaded, who + " is at capacity" + st + ": " + message, "", "backend_overloaded"};
    case 503:
        return error{error_kind::unavailable, who + " is unavailable" + st + ": " + message, "", "backend_unavailable"};
    default:
        return error{error_kind::upstream, who + " failed" + st + ": " + message, "", "backend_error"};
    }
}

// One request on a remote server: the HTTP call and the reading of its stream. Handlers run on
// the call's strand; take() and cancel() on the job's executor.
class remote_stream final : public generation_stream, public std::enable_shared_from_this<remote_stream> {
  public:
    remote_stream(std::shared_ptr<remote_backend> owner, const backend_request &req, bool trial,
                  std::function<void()> notify)
        : owner_(std::move(owner)), trial_(trial), notify_(std::move(notify)),
          reader_(owner_->name(), req.req.kind == api_kind::chat, req.tools, req.n_choices()) {}

    ~remote_stream() override { settle(remote_backend::outcome::neutral, std::nullopt); }

    void start(const backend_request &req) {
        const auto        &body = *std::static_pointer_cast<const std::string>(req.detail);
        auto               weak = std::weak_ptr<remote_stream>(shared_from_this());
        http_call_handlers h;
        h.on_response = [weak](int status, const http_headers &headers) {
            if (auto self = weak.lock()) {
                self->on_response(status, headers);
            }
        };
        h.on_body = [weak](std::string_view piece) {
            if (auto self = weak.lock()) {
                self->on_body(piece);
            }
        };
        h.on_done = [weak](std::optional<error> err) {
            if (auto self = weak.lock()) {
                self->on_done(std::move(err));
            }
        };
        auto headers = owner_->request_headers();
        headers.emplace_back("Accept", "text/event-stream");
        const char     *path = req.req.kind == api_kind::chat ? "/chat/completions" : "/completions";
        std::lock_guard lock(mu_);
        call_ = start_http_call(owner_->executor(), owner_->url(), "POST", path, headers, body,
                                owner_->client_options(), std::move(h));
    }

    std::vector<backend_event> take() override {
        std::lock_guard lock(mu_);
        return std::exchange(events_, {});
    }

    void cancel() override {
        std::shared_ptr<http_call> call;
        {
            std::lock_guard lock(mu_);
            call = call_;
        }
        if (call) {
            call->cancel();
        }
        settle(remote_backend::outcome::neutral, std::nullopt);
    }

  private:
    void on_response(int status, const http_headers &headers) {
        status_      = status;
        retry_after_ = retry_after_of(headers);
    }

    void on_body(std::string_view piece) {
        if (status_ != 200) {
            error_body_.append(piece.substr(0, k_max_error_body - std::min(k_max_error_body, error_body_.size())));
            return;
        }
        std::vector<backend_event> evs;
        reader_.feed(piece, evs);
        publish(std::move(evs));
        if (reader_.failed()) {
            settle(remote_backend::outcome::failure, std::nullopt);
        } else if (reader_.done()) {
            settle(remote_backend::outcome::success, std::nullopt);
        }
    }

    void on_done(std::optional<error> err) {
        std::vector<backend_event> evs;
        if (status_ != 200 && status_ != 0) {
            backend_event ev;
            ev.err          = error_from_status(owner_->name(), status_, error_body_);
            const bool busy = status_ == 429 || status_ == 503;
            const bool client_error =
                ev.err->kind == error_kind::invalid_request || ev.err->kind == error_kind::payload_too_large;
            evs.push_back(std::move(ev));
            publish(std::move(evs));
            settle(busy || client_error ? remote_backend::outcome::neutral : remote_backend::outcome::failure,
                   busy ? std::optional(retry_after_.value_or(std::chrono::milliseconds(1000))) : std::nullopt);
            return;
        }
        if (err) {
            if (!reader_.failed() && !reader_.done()) {
                backend_event ev;
                ev.err = std::move(err);
                evs.push_back(std::move(ev));
            }
            publish(std::move(evs));
            settle(remote_backend::outcome::failure, std::nullopt);
            return;
        }
        reader_.end(evs);
        publish(std::move(evs));
        settle(reader_.failed() ? remote_backend::outcome::failure : remote_backend::outcome::success, std::nullopt);
    }

    void publish(std::vector<backend_event> evs) {
        if (evs.empty()) {
            return;
        }
        {
            std::lock_guard lock(mu_);
            for (auto &ev : evs) {
                events_.push_back(std::move(ev));
            }
        }
        notify_();
    }

    // Reports how the request ended, once: the backend's in-flight count, breaker and cooldown.
    void settle(remote_backend::outcome o, std::optional<std::chrono::milliseconds> cooldown) {
        if (settled_.exchange(true)) {
            return;
        }
        owner_->finished(o, trial_, cooldown);
    }

    std::shared_ptr<remote_backend>          owner_;
    bool                                     trial_;
    std::function<void()>                    notify_;
    sse_reader                               reader_; // the call's strand only
    int                                      status_ = 0;
    std::optional<std::chrono::milliseconds> retry_after_;
    std::string                              error_body_;
    std::atomic<bool>                        settled_{false};
    std::mutex                               mu_;
    std::vector<backend_event>               events_;
    std::shared_ptr<http_call>               call_;
};

} // namespace

remote_backend::remote_backend(backend_spec spec, std::string key, http_url url, http_client_options opts,
                               boost::asio::any_io_executor exec)
    : spec_(std::move(spec)), key_(std::move(key)), url_(std::move(url)), opts_(std::move(opts)),
      exec_(std::move(exec)) {}

result<std::shared_ptr<remote_backend>> remote_backend::create(backend_spec spec, std::string api_key,
                                                               boost::asio::any_io_executor exec) {
    auto url = parse_http_url(spec.url);
    if (!url) {
        return error::invalid("backend '" + spec.name + "': " + url.err().message);
    }
    http_client_options opts;
    opts.connect_timeout    = spec.connect_timeout;
    opts.first_byte_timeout = spec.first_byte_timeout;
    opts.idle_timeout       = spec.idle_timeout;
    if (url->tls) {
        auto tls = make_client_tls(spec.ca_file);
        if (!tls) {
            return error::invalid("backend '" + spec.name + "': " + tls.err().message);
        }
        opts.tls = std::move(*tls);
    } else if (!spec.ca_file.empty()) {
        return error::invalid("backend '" + spec.name + "': ca-file is set but the URL is not https");
    }
    return std::shared_ptr<remote_backend>(
        new remote_backend(std::move(spec), std::move(api_key), std::move(*url), std::move(opts), std::move(exec)));
}

std::vector<backend_model> remote_backend::models() const {
    if (!spec_.models.empty()) {
        return spec_.models;
    }
    std::lock_guard lock(mu_);
    return discovered_;
}

bool remote_backend::serves(const std::string &id) const {
    const auto ms = models();
    return std::any_of(ms.begin(), ms.end(), [&](const backend_model &m) { return m.id == id; });
}

remote_status remote_backend::status() const {
    std::lock_guard lock(mu_);
    remote_status   s;
    const auto      now = clock::now();
    s.reachable         = reachable_;
    s.circuit           = open_until_ == clock::time_point{} ? circuit_state::closed
                          : now < open_until_                ? circuit_state::open
                                                             : circuit_state::half_open;
    s.in_flight         = in_flight_;
    s.cooldown_ms       = now < cooldown_until_
                              ? std::chrono::duration_cast<std::chrono::milliseconds>(cooldown_until_ - now).count()
                              : 0;
    s.requests          = requests_;
    s.failures          = n_failures_;
    return s;
}

http_headers remote_backend::request_headers() const {
    http_headers h;
    if (!key_.empty()) {
        h.emplace_back("Authorization", "Bearer " + key_);
    }
    return h;
}

std::optional<error> remote_backend::admission(int32_t n, bool claim, bool *trial) const {
    const auto        now = clock::now();
    const std::string who = "backend '" + spec_.name + "'";
    if (stopped_) {
        return error{error_kind::unavailable, who + " is shutting down", "", "backend_unavailable"};
    }
    if (now < cooldown_until_) {
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(cooldown_until_ - now).count();
        return error{error_kind::overloaded,
                     who + " is cooling down for " + std::to_string(ms) + " ms after answering 429/503", "",
                     "backend_cooldown"};
    }
    if (open_until_ != clock::time_point{}) {
        if (now < open_until_ || trial_out_) {
            return error{error_kind::unavailable,
                         who + "'s circuit is open after " + std::to_string(failures_) +
                             " consecutive failures; a trial request follows after " +
                             std::to_string(spec_.open_time.count()) + " ms",
                         "", "backend_circuit_open"};
        }
        if (claim) {
            trial_out_ = true;
            *trial     = true;
        }
    }
    if (in_flight_ + n > spec_.max_in_flight) {
        return error{error_kind::overloaded,
                     who + " has " + std::to_string(in_flight_) + " requests in flight, its max-in-flight is " +
                         std::to_string(spec_.max_in_flight),
                     "", "backend_overloaded"};
    }
    return std::nullopt;
}

result<bool> remote_backend::claim() {
    std::lock_guard lock(mu_);
    bool            trial = false;
    if (auto err = admission(1, /*claim=*/true, &trial)) {
        return *err;
    }
    ++in_flight_;
    ++requests_;
    return trial;
}

std::optional<error> remote_backend::check(const api_request &req) const {
    if (!req.model.empty() && !serves(req.model)) {
        return error{error_kind::not_found, "backend '" + spec_.name + "' does not serve the model '" + req.model + "'",
                     "model", "model_not_found"};
    }
    if (req.lora) {
        return error::invalid("LoRA adapters run on this server only; backend '" + spec_.name + "' cannot apply one",
                              "model");
    }
    return std::nullopt;
}

std::optional<error> remote_backend::over_capacity(int32_t /*n_sequences*/) const {
    std::lock_guard lock(mu_);
    bool            trial = false;
    return admission(1, /*claim=*/false, &trial); // one HTTP request, whatever its choices
}

std::string remote_backend::remote_id_of(const std::string &id) const {
    for (const auto &m : models()) {
        if (m.id == id) {
            return m.remote_id;
        }
    }
    return "";
}

result<std::shared_ptr<http_call>> remote_backend::relay(const std::string &path, std::string body,
                                                         std::function<void(result<relayed>)> done) {
    auto claimed = claim();
    if (!claimed) {
        return claimed.err();
    }
    const bool trial = *claimed;
    struct state {
        relayed                                  answer;
        std::optional<std::chrono::milliseconds> retry_after;
        std::atomic<bool>                        settled{false}; // finished() told, by on_done or cancel
    };
    // Cancelling still settles the backend's in-flight count (on_done then never runs).
    class relay_call final : public http_call {
      public:
        relay_call(std::shared_ptr<http_call> inner, std::shared_ptr<state> st, std::shared_ptr<remote_backend> owner,
                   bool trial)
            : inner_(std::move(inner)), st_(std::move(st)), owner_(std::move(owner)), trial_(trial) {}
        void cancel() override {
            inner_->cancel();
            if (!st_->settled.exchange(true)) {
                owner_->finished(outcome::neutral, trial_, std::nullopt);
            }
        }

      private:
        std::shared_ptr<http_call>      inner_;
        std::shared_ptr<state>          st_;
        std::shared_ptr<remote_backend> owner_;
        bool                            trial_;
    };
    auto               st = std::make_shared<state>();
    http_call_handlers h;
    h.on_response = [st](int status, const http_headers &headers) {
        st->answer.status = status;
        st->retry_after   = retry_after_of(headers);
        for (const auto &[k, v] : headers) {
            if (k.size() == 12 && std::equal(k.begin(), k.end(), "content-type", [](char a, char b) {
                    return std::tolower(static_cast<unsigned char>(a)) == b;
                })) {
                st->answer.content_type = v;
            }
        }
    };
    h.on_body = [st](std::string_view piece) { st->answer.body.append(piece); };
    h.on_done = [self = shared_from_this(), st, trial, done = std::move(done)](std::optional<error> err) {
        if (st->settled.exchange(true)) {
            return;
        }
        const int  status = st->answer.status;
        const bool busy   = status == 429 || status == 503;
        if (err) {
            self->finished(outcome::failure, trial, std::nullopt);
            done(std::move(*err));
            return;
        }
        self->finished(status >= 500 && !busy ? outcome::failure
                       : busy                 ? outcome::neutral
                                              : outcome::success,
                       trial,
                       busy ? std::optional(st->retry_after.value_or(std::chrono::milliseconds(1000))) : std::nullopt);
        done(std::move(st->answer));
    };
    auto opts           = opts_;
    opts.max_body_bytes = std::size_t{64} << 20;
    auto call = start_http_call(exec_, url_, "POST", path, request_headers(), std::move(body), opts, std::move(h));
    return std::shared_ptr<http_call>(std::make_shared<relay_call>(std::move(call), st, shared_from_this(), trial));
}

result<backend_request> remote_backend::prepare(api_request req) const {
    const std::string remote_id = remote_id_of(req.model);
    if (remote_id.empty()) {
        return error{error_kind::not_found, "backend '" + spec_.name + "' does not serve the model '" + req.model + "'",
                     "model", "model_not_found"};
    }
    backend_request p;
    if (req.kind == api_kind::chat) {
        p.prompts.push_back({});
        p.tools = req.tools_active();
    } else {
        for (const auto &prompt : req.prompts) {
            prepared_prompt pp;
            if (const auto *s = std::get_if<std::string>(&prompt)) {
                pp.echo_text = *s;
            }
            p.prompts.push_back(std::move(pp));
        }
    }
    p.max_tokens = req.max_tokens.value_or(0);
    p.detail     = std::make_shared<const std::string>(request_to_json(req, remote_id));
    p.req        = std::move(req);
    return p;
}

result<std::shared_ptr<generation_stream>> remote_backend::submit(std::shared_ptr<const backend_request> req,
                                                                  std::function<void()>                  notify) {
    auto claimed = claim();
    if (!claimed) {
        return claimed.err();
    }
    const bool trial  = *claimed;
    auto       stream = std::make_shared<remote_stream>(shared_from_this(), *req, trial, std::move(notify));
    stream->start(*req);
    return std::shared_ptr<generation_stream>(std::move(stream));
}

bool remote_backend::healthy() const {
    const auto s = status();
    return s.reachable && s.circuit != circuit_state::open;
}

void remote_backend::finished(outcome o, bool trial, std::optional<std::chrono::milliseconds> cooldown) {
    std::lock_guard lock(mu_);
    --in_flight_;
    if (trial) {
        trial_out_ = false;
    }
    if (cooldown) {
        cooldown_until_ = clock::now() + *cooldown;
    }
    switch (o) {
    case outcome::success:
        failures_   = 0;
        open_until_ = {};
        reachable_  = true;
        break;
    case outcome::failure:
        ++failures_;
        ++n_failures_;
        if (trial || failures_ >= spec_.failure_threshold) {
            open_until_ = clock::now() + spec_.open_time;
        }
        break;
    case outcome::neutral:
        break;
    }
}

void remote_backend::start_probes() {
    if (spec_.probe_interval.count() == 0 && !spec_.models.empty()) {
        return;
    }
    timer_ = std::make_shared<boost::asio::steady_timer>(exec_);
    boost::asio::post(exec_, [self = shared_from_this()] { self->probe(); });
}

void remote_backend::stop() {
    std::shared_ptr<http_call> call;
    {
        std::lock_guard lock(mu_);
        stopped_ = true;
        call     = probe_call_;
    }
    if (call) {
        call->cancel();
    }
    if (timer_) {
        boost::asio::post(exec_, [t = timer_] { t->cancel(); });
    }
}

void remote_backend::schedule_probe() {
    std::lock_guard lock(mu_);
    if (stopped_ || spec_.probe_interval.count() == 0) {
        return;
    }
    timer_->expires_after(spec_.probe_interval);
    timer_->async_wait([weak = weak_from_this()](const boost::system::error_code &ec) {
        if (auto self = weak.lock(); self && !ec) {
            self->probe();
        }
    });
}

// GET {base}/models: reachable or not, and (without configured models) which models it serves.
// A probe that reaches an open circuit's backend lets the next request be its trial at once.
void remote_backend::probe() {
    auto               body = std::make_shared<std::string>();
    auto               code = std::make_shared<int>(0);
    http_call_handlers h;
    h.on_response = [code](int status, const http_headers & /*headers*/) { *code = status; };
    h.on_body     = [body](std::string_view piece) {
        if (body->size() < (4u << 20)) {
            body->append(piece);
        }
    };
    h.on_done = [weak = weak_from_this(), body, code](const std::optional<error> &err) {
        auto self = weak.lock();
        if (!self) {
            return;
        }
        const bool                 ok = !err && *code == 200;
        std::vector<backend_model> found;
        if (ok) {
            json j = json::parse(*body, nullptr, false);
            if (j.is_object() && j.contains("data") && j["data"].is_array()) {
                for (const auto &m : j["data"]) {
                    if (m.is_object() && m.contains("id") && m["id"].is_string()) {
                        found.push_back({m["id"].get<std::string>(), m["id"].get<std::string>()});
                    }
                }
            }
        }
        {
            std::lock_guard lock(self->mu_);
            self->reachable_ = ok;
            if (ok) {
                if (self->spec_.models.empty()) {
                    self->discovered_ = std::move(found);
                }
                if (self->open_until_ != clock::time_point{}) {
                    self->open_until_ = std::min(self->open_until_, clock::now());
                }
            }
        }
        self->schedule_probe();
    };
    auto opts               = opts_;
    opts.first_byte_timeout = std::min(opts.first_byte_timeout, std::chrono::milliseconds(5000));
    opts.idle_timeout       = std::min(opts.idle_timeout, std::chrono::milliseconds(5000));
    auto            call    = start_http_call(exec_, url_, "GET", "/models", request_headers(), "", opts, std::move(h));
    std::lock_guard lock(mu_);
    probe_call_ = std::move(call);
}

} // namespace inferbox
