#pragma once
// The console's conversations, kept on the server (not in one browser): in SQLite under the data
// directory, so they survive restarts and follow a user from one machine to another. Each
// conversation belongs to the API key that made it (its owner, a hash of the key): one key never
// sees, finds, changes or deletes another's. Bounded per conversation (bytes, messages, title)
// and per owner (count and bytes); a write over a bound is refused with an error naming it.
// Thread-safe (one connection behind a mutex; each call is one short transaction).
//
// A conversation is a JSON document: {title, model, settings, messages}. Messages are objects
// with a `role` (system, user, assistant, tool) and a `content` (a string, or null for an
// assistant turn that only called tools); their other fields (the console's per-message figures,
// tool calls, validation results) are kept as given.

#include "common/status.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace inferbox {

struct conversation_limits {
    int64_t max_bytes           = 1 << 20;  // one conversation's JSON
    int32_t max_messages        = 2000;     // in one conversation
    int32_t max_title_chars     = 200;      // code points
    int32_t max_per_owner       = 1000;     // conversations per API key
    int64_t max_bytes_per_owner = 64 << 20; // all of one key's conversations together
};

// One row of a listing: the conversation without its messages.
struct conversation_summary {
    std::string id, title, model;
    int64_t     created_at = 0, updated_at = 0; // unix seconds
    int64_t     message_count = 0, bytes = 0;
};

class conversation_store {
  public:
    // Opens (creating) the database file; its folder is created too.
    static result<std::unique_ptr<conversation_store>> open(const std::filesystem::path &file,
                                                            conversation_limits          limits);
    ~conversation_store();
    conversation_store(const conversation_store &)            = delete;
    conversation_store &operator=(const conversation_store &) = delete;

    // Creates a conversation from a request body ({title?, model?, settings?, messages?}); the
    // answer is the stored conversation object.
    result<nlohmann::json> create(const std::string &owner, const nlohmann::json &body);
    // Replaces the fields the body names (title, model, settings, messages); not_found when the
    // owner has no such conversation.
    result<nlohmann::json>        update(const std::string &owner, const std::string &id, const nlohmann::json &body);
    std::optional<nlohmann::json> get(const std::string &owner, const std::string &id);
    bool                          remove(const std::string &owner, const std::string &id);
    // The owner's conversations, most recently updated first; `query` (may be empty) matches the
    // title or any message's text, case-insensitively for ASCII letters.
    result<std::vector<conversation_summary>> list(const std::string &owner, const std::string &query, int32_t limit);

    const conversation_limits &limits() const { return limits_; }

  private:
    conversation_store(sqlite3 *db, conversation_limits limits) : db_(db), limits_(limits) {}
    // Checks a candidate document against the per-conversation bounds and writes it (insert or
    // replace), checking the owner's bounds inside the same transaction.
    result<nlohmann::json> write(const std::string &owner, const std::string &id, int64_t created, nlohmann::json doc,
                                 bool is_new);

    std::mutex          mu_;
    sqlite3            *db_;
    conversation_limits limits_;
};

// The one answer for a conversation the caller does not have (missing, or another key's: the
// two are indistinguishable on purpose).
error conversation_not_found(const std::string &id);

// The JSON object a listing row becomes.
nlohmann::json to_json(const conversation_summary &s);

} // namespace inferbox
