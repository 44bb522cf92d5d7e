#include "metrics/registry.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace inferbox {

namespace {

bool valid_name(const std::string &s, bool allow_colon) {
    if (s.empty()) {
        return false;
    }
    for (size_t i = 0; i < s.size(); ++i) {
        const char c  = s[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':') ||
                        (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return false;
        }
    }
    return true;
}

// Prometheus floats: integers print without an exponent, others with enough digits to round-trip.
std::string format_value(double v) {
    if (std::isnan(v)) {
        return "NaN";
    }
    if (std::isinf(v)) {
        return v > 0 ? "+Inf" : "-Inf";
    }
    char buf[64];
    if (v == std::floor(v) && std::fabs(v) < 1e15) {
        std::snprintf(buf, sizeof(buf), "%.0f", v);
        return buf;
    }
    // Shortest text that reads back as the same double (0.005, not 0.0050000000000000001).
    const auto res = std::to_chars(buf, buf + sizeof(buf), v);
    return std::string(buf, res.ptr);
}

std::string format_labels(const label_list &labels, const char *extra_name = nullptr,
                          const std::string &extra_value = {}) {
    if (labels.empty() && extra_name == nullptr) {
        return {};
    }
    std::string out   = "{";
    bool        first = true;
    for (const auto &[k, v] : labels) {
        out += (first ? "" : ",") + k + "=\"" + prometheus_escape(v) + "\"";
        first = false;
    }
    if (extra_name != nullptr) {
        out += (first ? "" : ",") + std::string(extra_name) + "=\"" + extra_value + "\"";
    }
    return out + "}";
}

std::string escape_help(const std::string &s) {
    std::string out;
    for (char c : s) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

} // namespace

std::string prometheus_escape(const std::string &s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
    for (size_t i = 0; i < bounds_.size(); ++i) {
        if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1])) {
            throw std::invalid_argument("histogram bounds must be finite and strictly increasing");
        }
    }
    buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
}

void histogram::observe(double v) {
    size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) {
        ++i;
    }
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
}

registry::family &registry::family_for(const std::string &name, const std::string &help, kind type,
                                       const std::vector<std::string> &aliases) {
    // Names are fixed strings in our code, never input: a bad one is a programming error.
    if (!valid_name(name, true)) {
        throw std::invalid_argument("invalid metric name: " + name);
    }
    for (const auto &a : aliases) {
        if (!valid_name(a, true)) {
            throw std::invalid_argument("invalid metric name: " + a);
        }
    }
    for (auto &f : families_) {
        if (f.name == name) {
            if (f.type != type) {
                throw std::invalid_argument("metric " + name + " registered with two types");
            }
            return f;
        }
    }
    families_.push_back(family{name, help, type, aliases, {}});
    return families_.back();
}

registry::series *registry::find(family &f, const label_list &labels) {
    for (const auto &[k, v] : labels) {
        if (!valid_name(k, false) || k == "le") {
            throw std::invalid_argument("invalid label name: " + k);
        }
    }
    for (auto &s : f.items) {
        if (s.labels == labels) {
            return &s;
        }
    }
    f.items.push_back(series{labels, nullptr, nullptr, nullptr, nullptr});
    return &f.items.back();
}

counter &registry::add_counter(const std::string &name, const std::string &help, const label_list &labels,
                               const std::vector<std::string> &aliases) {
    std::lock_guard lock(mu_);
    series         *s = find(family_for(name, help, kind::counter, aliases), labels);
    if (!s->c) {
        s->c = std::make_unique<counter>();
    }
    return *s->c;
}

gauge &registry::add_gauge(const std::string &name, const std::string &help, const label_list &labels,
                           const std::vector<std::string> &aliases) {
    std::lock_guard lock(mu_);
    series         *s = find(family_for(name, help, kind::gauge, aliases), labels);
    if (!s->g) {
        s->g = std::make_unique<gauge>();
    }
    return *s->g;
}

void registry::add_gauge_fn(const std::string &name, const std::string &help, const label_list &labels,
                            std::function<double()> fn, const std::vector<std::string> &aliases) {
    std::lock_guard lock(mu_);
    series         *s = find(family_for(name, help, kind::gauge, aliases), labels);
    s->g.reset();
    s->fn = std::move(fn);
}

void registry::add_gauge_set(const std::string &name, const std::string &help, std::function<series_list()> fn,
                             const std::vector<std::string> &aliases) {
    std::lock_guard lock(mu_);
    family_for(name, help, kind::gauge, aliases).dynamic = std::move(fn);
}

void registry::add_counter_fn(const std::string &name, const std::string &help, const label_list &labels,
                              std::function<double()> fn) {
    std::lock_guard lock(mu_);
    series         *s = find(family_for(name, help, kind::counter, {}), labels);
    s->c.reset();
    s->fn = std::move(fn);
}

histogram &registry::add_histogram(const std::string &name, const std::string &help, std::vector<double> bounds,
                                   const label_list &labels, const std::vector<std::string> &aliases) {
    std::lock_guard lock(mu_);
    series         *s = find(family_for(name, help, kind::histogram, aliases), labels);
    if (!s->h) {
        s->h = std::make_unique<histogram>(std::move(bounds));
    }
    return *s->h;
}

std::string registry::render() const {
    std::lock_guard lock(mu_);
    std::string     out;
    out.reserve(4096);
    for (const auto &f : families_) {
        std::vector<std::string> names{f.name};
        names.insert(names.end(), f.aliases.begin(), f.aliases.end());
        for (const auto &name : names) {
            const char *type = f.type == kind::counter ? "counter" : f.type == kind::gauge ? "gauge" : "histogram";
            out += "# HELP " + name + " " + escape_help(f.help) + "\n";
            out += "# TYPE " + name + " " + type + "\n";
            if (f.dynamic) {
                for (const auto &[labels, v] : f.dynamic()) {
                    out += name + format_labels(labels) + " " + format_value(v) + "\n";
                }
            }
            for (const auto &s : f.items) {
                if (f.type == kind::counter) {
                    const double v = s.fn ? s.fn() : static_cast<double>(s.c->value());
                    out += name + format_labels(s.labels) + " " + format_value(v) + "\n";
                } else if (f.type == kind::gauge) {
                    const double v = s.fn ? s.fn() : s.g->value();
                    out += name + format_labels(s.labels) + " " + format_value(v) + "\n";
                } else {
                    const histogram &h          = *s.h;
                    uint64_t         cumulative = 0;
                    for (size_t i = 0; i <= h.bounds().size(); ++i) {
                        cumulative += h.bucket(i);
                        const std::string le = i < h.bounds().size() ? format_value(h.bounds()[i]) : "+Inf";
                        out += name + "_bucket" + format_labels(s.labels, "le", le) + " " +
                               format_value(static_cast<double>(cumulative)) + "\n";
                    }
                    // _count equals the +Inf bucket by construction (read from the same buckets).
                    out += name + "_sum" + format_labels(s.labels) + " " + format_value(h.sum()) + "\n";
                    out += name + "_count" + format_labels(s.labels) + " " +
                           format_value(static_cast<double>(cumulative)) + "\n";
                }
            }
        }
    }
    return out;
}

} // namespace inferbox
