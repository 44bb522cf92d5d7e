#include "backend/routing.h"

#include <algorithm>
#include <cctype>

namespace inferbox {

const char *route_policy_name(route_policy p) {
    switch (p) {
    case route_policy::automatic:
        return "auto";
    case route_policy::local_first:
        return "local-first";
    case route_policy::remote_first:
        return "remote-first";
    case route_policy::local_only:
        return "local-only";
    case route_policy::remote_only:
        return "remote-only";
    case route_policy::balanced:
        return "balanced";
    }
    return "auto";
}

result<route_policy> parse_route_policy(std::string_view s) {
    for (auto p : {route_policy::automatic, route_policy::local_first, route_policy::remote_first,
                   route_policy::local_only, route_policy::remote_only, route_policy::balanced}) {
        if (s == route_policy_name(p)) {
            return p;
        }
    }
    return error::invalid("unknown routing policy '" + std::string(s) +
                          "' (local-first, remote-first, local-only, remote-only, balanced or auto)");
}

result<route_arg> parse_route_arg(std::string_view text) {
    const auto bad = [&](const std::string &why) {
        return error::invalid("--route " + std::string(text.substr(0, 200)) + ": " + why, "route");
    };
    const auto semi = text.find(';');
    const auto head = text.substr(0, semi);
    const auto eq   = head.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == head.size()) {
        return bad("expected MODEL=POLICY[;pull=REF][;sha256=HEX]");
    }
    route_arg out;
    out.model   = std::string(head.substr(0, eq));
    auto policy = parse_route_policy(head.substr(eq + 1));
    if (!policy) {
        return bad(policy.err().message);
    }
    out.policy = *policy;
    for (auto rest = semi == std::string_view::npos ? std::string_view() : text.substr(semi + 1); !rest.empty();) {
        const auto next = rest.find(';');
        const auto item = rest.substr(0, next);
        rest            = next == std::string_view::npos ? std::string_view() : rest.substr(next + 1);
        const auto kv   = item.find('=');
        const auto key  = item.substr(0, kv);
        const auto val  = kv == std::string_view::npos ? std::string_view() : item.substr(kv + 1);
        if (val.empty()) {
            return bad("'" + std::string(key) + "' needs a value (KEY=VALUE)");
        }
        if (key == "pull") {
            out.pull = std::string(val);
        } else if (key == "sha256") {
            if (val.size() != 64 || !std::all_of(val.begin(), val.end(), [](char c) { return std::isxdigit(c); })) {
                return bad("sha256 must be 64 hexadecimal digits");
            }
            out.sha256 = std::string(val);
            std::transform(out.sha256.begin(), out.sha256.end(), out.sha256.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        } else {
            return bad("unknown setting '" + std::string(key) + "' (pull, sha256)");
        }
    }
    if (!out.pull.empty() && out.policy != route_policy::local_first && out.policy != route_policy::automatic) {
        return bad("pull= needs a local-first (or auto) route: the model's requests go remote only while it downloads");
    }
    if (!out.sha256.empty() && out.pull.empty()) {
        return bad("sha256= checks a pulled file: add pull=REF");
    }
    return out;
}

result<placement_pin> parse_placement(std::string_view s, const std::string &param) {
    if (s == "auto") {
        return placement_pin::automatic;
    }
    if (s == "local-only") {
        return placement_pin::local_only;
    }
    if (s == "remote-only") {
        return placement_pin::remote_only;
    }
    return error::invalid(
        param + " must be local-only, remote-only or auto, got '" + std::string(s.substr(0, 64)) + "'", param);
}

route_order order_candidates(route_policy policy, placement_pin pin, const std::vector<candidate_load> &candidates,
                             const std::string &affinity, const std::string &model) {
    route_order out;
    bool        has_local = false, has_remote = false;
    for (const auto &c : candidates) {
        (c.local ? has_local : has_remote) = true;
    }
    if (policy == route_policy::automatic) {
        const auto n_remote =
            std::count_if(candidates.begin(), candidates.end(), [](const candidate_load &c) { return !c.local; });
        policy = has_local && has_remote ? route_policy::local_first
                 : has_local             ? route_policy::local_only
                 : n_remote > 1          ? route_policy::balanced
                                         : route_policy::remote_first;
    }
    // A pin narrows what the policy allows; it never widens a -only policy.
    const bool          local_ok  = pin != placement_pin::remote_only && policy != route_policy::remote_only;
    const bool          remote_ok = pin != placement_pin::local_only && policy != route_policy::local_only;
    std::vector<size_t> locals, remotes;
    for (size_t i = 0; i < candidates.size(); ++i) {
        if (candidates[i].local ? local_ok : remote_ok) {
            (candidates[i].local ? locals : remotes).push_back(i);
        }
    }
    // Remote backends in order of load (admissible first, then fewest in flight; ties keep the
    // configuration's order).
    auto by_load = [&](std::vector<size_t> &v) {
        std::stable_sort(v.begin(), v.end(), [&](size_t a, size_t b) {
            if (candidates[a].admissible != candidates[b].admissible) {
                return candidates[a].admissible;
            }
            return candidates[a].in_flight < candidates[b].in_flight;
        });
    };
    by_load(remotes);
    const bool pinned         = pin != placement_pin::automatic;
    auto       any_admissible = [&](const std::vector<size_t> &v) {
        return std::any_of(v.begin(), v.end(), [&](size_t i) { return candidates[i].admissible; });
    };
    // `first` before `then`, unless nothing in `first` has room and something in `then` does:
    // then the request spills over ("overflow"), and `first` stays as the last resort.
    auto preferring = [&](const std::vector<size_t> &first, const std::vector<size_t> &then, const char *reason,
                          const char *other) {
        const bool  spill = !first.empty() && !any_admissible(first) && any_admissible(then);
        const auto &a     = spill ? then : first;
        const auto &b     = spill ? first : then;
        out.order         = a;
        out.order.insert(out.order.end(), b.begin(), b.end());
        out.reason = spill ? "overflow" : (first.empty() ? other : reason);
    };
    switch (policy) {
    case route_policy::local_first:
    case route_policy::local_only:
    case route_policy::automatic:
        preferring(locals, remotes, "local", "remote");
        break;
    case route_policy::remote_first:
    case route_policy::remote_only:
        preferring(remotes, locals, "remote", "local");
        break;
    case route_policy::balanced: {
        out.order = locals;
        out.order.insert(out.order.end(), remotes.begin(), remotes.end());
        by_load(out.order);
        out.reason = "balanced";
        if (!affinity.empty() && !out.order.empty()) {
            // Prefix affinity wins unless that backend is refusing or has clearly more in flight
            // than the least loaded one (a cache hit is not worth queueing behind a crowd).
            const auto least = candidates[out.order.front()].in_flight;
            for (size_t k = 0; k < out.order.size(); ++k) {
                const auto &c = candidates[out.order[k]];
                if (c.name == affinity && c.admissible && c.in_flight <= least + 2) {
                    std::rotate(out.order.begin(), out.order.begin() + static_cast<std::ptrdiff_t>(k),
                                out.order.begin() + static_cast<std::ptrdiff_t>(k) + 1);
                    out.reason = "affinity";
                    break;
                }
            }
        }
        break;
    }
    }
    if (pinned && !out.order.empty()) {
        out.reason = "pinned";
    }
    if (out.order.empty()) {
        const char *why = pin == placement_pin::local_only    ? "the request is pinned local-only"
                          : pin == placement_pin::remote_only ? "the request is pinned remote-only"
                                                              : "its routing policy allows none of them";
        out.err         = error{error_kind::unavailable,
                        "no backend may serve the model '" + model + "' for this request: " + why +
                            (pin == placement_pin::local_only    ? " and the model is not on this server"
                                     : pin == placement_pin::remote_only ? " and no remote backend serves it"
                                                                         : ""),
                        "model", "no_backend"};
    }
    return out;
}

std::string affinity_table::find(uint64_t prefix) const {
    std::lock_guard lock(mu_);
    auto            it = map_.find(prefix);
    if (it == map_.end()) {
        return "";
    }
    lru_.splice(lru_.begin(), lru_, it->second.second);
    return it->second.first;
}

void affinity_table::remember(uint64_t prefix, const std::string &backend) {
    std::lock_guard lock(mu_);
    if (auto it = map_.find(prefix); it != map_.end()) {
        it->second.first = backend;
        lru_.splice(lru_.begin(), lru_, it->second.second);
        return;
    }
    lru_.push_front(prefix);
    map_.emplace(prefix, std::make_pair(backend, lru_.begin()));
    while (map_.size() > capacity_) {
        map_.erase(lru_.back());
        lru_.pop_back();
    }
}

size_t affinity_table::size() const {
    std::lock_guard lock(mu_);
    return map_.size();
}

uint64_t prefix_key(std::string_view text, size_t bytes) {
    // FNV-1a: stable across runs and platforms, cheap, and collisions only cost a cache miss.
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < text.size() && i < bytes; ++i) {
        h ^= static_cast<unsigned char>(text[i]);
        h *= 1099511628211ULL;
    }
    return h;
}

} // namespace inferbox
