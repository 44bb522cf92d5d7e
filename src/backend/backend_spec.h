#pragma once
// A remote backend as the configuration declares it: `--backend NAME=URL;key=value;...`, or an
// entry of serve's `backend:` list in the config file (a mapping there, the same keys). Parsing
// is pure (unit-tested); reading the API key from its variable or file happens in
// resolve_backend_key, at start, so a missing key stops `serve` with the entry named.
//
//   --backend
//   'cloud=https://api.example.com/v1;models=big,small=vendor/small-v2;api-key-env=CLOUD_KEY;label.tier=cloud'
//
// Keys: models (client ids, `id=remote-id` to rename; empty: discovered from the server's
// /v1/models), api-key-env, api-key-file, ca-file, max-in-flight, connect-timeout-ms,
// first-byte-timeout-ms, idle-timeout-ms, probe-interval-ms, failure-threshold, open-ms,
// label.NAME.

#include "common/status.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace inferbox {

struct backend_model {
    std::string id;        // what clients send
    std::string remote_id; // what the backend calls it
};

struct backend_spec {
    std::string                        name;
    std::string                        url; // base URL, e.g. http://10.0.0.5:8000/v1
    std::vector<backend_model>         models;
    std::string                        api_key_env;
    std::string                        api_key_file;
    std::string                        ca_file;
    int32_t                            max_in_flight = 64;
    std::chrono::milliseconds          connect_timeout{5000};
    std::chrono::milliseconds          first_byte_timeout{60000};
    std::chrono::milliseconds          idle_timeout{30000};
    std::chrono::milliseconds          probe_interval{5000};  // active health probe; 0: off
    int32_t                            failure_threshold = 3; // consecutive failures that open the circuit
    std::chrono::milliseconds          open_time{10000};      // how long an open circuit refuses before a trial
    std::map<std::string, std::string> labels;
};

// Parses one `NAME=URL;key=value;...` entry. Errors name the entry and the key at fault.
result<backend_spec> parse_backend_spec(const std::string &text);

// The API key the spec points to ("" when none): the variable's value or the file's first line.
// Errors name the backend and the variable or file, never the key.
result<std::string> resolve_backend_key(const backend_spec &spec);

} // namespace inferbox
