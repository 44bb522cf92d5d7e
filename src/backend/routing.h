#pragma once
// Routing policy: for one request, which backends may answer and in what order. Pure functions
// and a bounded affinity table, so the decisions are unit-tested without servers.
//
//   local-first   here unless this box is full or cannot serve, then the remote backends
//   remote-first  the remote backends, then here
//   local-only    here only (a privacy promise: never leaves the box, not even on failure)
//   remote-only   the remote backends only
//   balanced      every backend that serves the model, fewest requests in flight first; a prompt
//                 that begins like an earlier one goes where that one went (prefix affinity),
//                 unless that backend is clearly busier
//
// A client may pin a request (X-Inferbox-Placement or nvext.placement): local-only, remote-only
// or auto (the policy decides).

#include "common/status.h"

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace inferbox {

enum class route_policy { automatic, local_first, remote_first, local_only, remote_only, balanced };
enum class placement_pin { automatic, local_only, remote_only };

const char           *route_policy_name(route_policy p);
result<route_policy>  parse_route_policy(std::string_view s);
result<placement_pin> parse_placement(std::string_view s, const std::string &param);

// One --route argument: MODEL=POLICY[;pull=REF][;sha256=HEX]. `pull` (local-first or auto only)
// names where to download the model when this server does not have it: until the download is
// verified and loaded, the model's requests go to the remote backends (start remote, move home).
struct route_arg {
    std::string  model;
    route_policy policy = route_policy::automatic;
    std::string  pull;   // a download reference (hf://… or http(s)://…); empty: none
    std::string  sha256; // the pulled file's expected SHA-256 (lower-case hex); empty: none
};

// An error names the argument and what is wrong with it.
result<route_arg> parse_route_arg(std::string_view text);

// One backend that serves the request's model, as the router sees it now.
struct candidate_load {
    std::string name; // "local" or the remote's name
    bool        local = false;
    // Has room now: no capacity, cooldown or circuit refusal (local: a free slot, or no more than
    // the configured number of requests waiting for one).
    bool    admissible = true;
    int32_t in_flight  = 0; // requests it runs now (local: running + waiting sequences)
};

struct route_order {
    std::vector<size_t>  order;  // indices into the candidates, first choice first
    std::string          reason; // why the first is first: local, remote, pinned, balanced, affinity
    std::optional<error> err;    // when no candidate may take the request at all
};

// `automatic` policy means: local-first when the model is both here and remote, else whichever
// exists. `affinity`: the backend that served this prompt's prefix before ("" when none).
route_order order_candidates(route_policy policy, placement_pin pin, const std::vector<candidate_load> &candidates,
                             const std::string &affinity, const std::string &model);

// The prompt-prefix → backend memory behind `balanced` routing, bounded (least recently used
// entries go). Thread-safe.
class affinity_table {
  public:
    explicit affinity_table(size_t capacity = 4096) : capacity_(capacity) {}
    std::string find(uint64_t prefix) const;
    void        remember(uint64_t prefix, const std::string &backend);
    size_t      size() const;

  private:
    size_t                                                                              capacity_;
    mutable std::mutex                                                                  mu_;
    mutable std::list<uint64_t>                                                         lru_; // most recent first
    std::unordered_map<uint64_t, std::pair<std::string, std::list<uint64_t>::iterator>> map_;
};

// The key of a prompt's prefix: a hash of its first `bytes` bytes.
uint64_t prefix_key(std::string_view text, size_t bytes = 512);

} // namespace inferbox
