#pragma once
// Stored Responses (the Responses API's `store`): each finished Response object with the input
// items it answered, in SQLite under the data directory, so that GET /v1/responses/{id},
// /v1/responses/{id}/input_items, DELETE and `previous_response_id` work across requests and
// restarts. Bounded: responses older than the retention are dropped, and the oldest go first when
// the total exceeds the size bound. Each response belongs to the API key that made it (its owner):
// one key never sees another's. Thread-safe (one connection behind a mutex; each call is one short
// transaction).

#include "common/status.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

struct sqlite3;

namespace inferbox {

struct response_store_limits {
    std::chrono::seconds max_age{30 * 24 * 3600}; // a response is kept this long
    int64_t              max_bytes = 256 << 20;   // all responses together; the oldest go first
};

struct stored_response {        // NOLINT(bugprone-exception-escape): two documents; copying may throw bad_alloc only
    nlohmann::json response;    // the Response object
    nlohmann::json input_items; // what it answered: the previous response's items and output included
};

class response_store {
  public:
    // Opens (creating) the database file; its folder is created too.
    static result<std::unique_ptr<response_store>> open(const std::filesystem::path &file,
                                                        response_store_limits        limits);
    ~response_store();
    response_store(const response_store &)            = delete;
    response_store &operator=(const response_store &) = delete;

    // Keeps a finished response (replacing one with the same id), then applies the bounds. A
    // response larger than the size bound alone is refused.
    std::optional<error>           put(const std::string &owner, const nlohmann::json &response,
                                       const nlohmann::json &input_items);
    std::optional<stored_response> get(const std::string &owner, const std::string &id);
    // One item (an output or input item with an id) of the owner's stored responses: what an
    // `item_reference` input item names.
    std::optional<nlohmann::json> item(const std::string &owner, const std::string &item_id);
    bool                          remove(const std::string &owner, const std::string &id);
    int64_t                       total_bytes();

  private:
    response_store(sqlite3 *db, response_store_limits limits) : db_(db), limits_(limits) {}
    void prune(); // caller holds mu_

    std::mutex            mu_;
    sqlite3              *db_;
    response_store_limits limits_;
};

// The owner id of an API key: a hash, so the database holds no key ("" when keys are off).
std::string response_owner(std::string_view api_key);

} // namespace inferbox
