#include "console/conversation_store.h"

#include "common/random_id.h"
#include "common/sqlite_statement.h"
#include "common/unix_time.h"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <system_error>

namespace inferbox {

using json = nlohmann::json;
using sqlite::exec;
using sqlite::statement;

namespace {

size_t code_points(const std::string &s) {
    return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// The first `n` code points of a string (it is valid UTF-8: the JSON parser checked it).
std::string first_code_points(const std::string &s, size_t n) {
    size_t i = 0;
    for (size_t seen = 0; i < s.size(); ++i) {
        if ((s[i] & 0xC0) != 0x80 && seen++ == n) {
            break;
        }
    }
    return s.substr(0, i);
}

std::string ascii_lower(std::string s) {
    for (auto &c : s) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return s;
}

error internal(const std::string &what) {
    return error{error_kind::internal, "the conversation store failed: " + what, "", ""};
}

// Checks one field of a create/update body and copies it into the document.
std::optional<error> take_field(const std::string &key, const json &value, json &doc, const conversation_limits &lim) {
    if (key == "title") {
        if (!value.is_string()) {
            return error::invalid("title must be a string", "title");
        }
        const auto n = code_points(value.get_ref<const std::string &>());
        if (n > static_cast<size_t>(lim.max_title_chars)) {
            return error::invalid("title is " + std::to_string(n) + " characters; the limit is " +
                                      std::to_string(lim.max_title_chars),
                                  "title", "title_too_long");
        }
    } else if (key == "model") {
        if (!value.is_string() && !value.is_null()) {
            return error::invalid("model must be a string or null", "model");
        }
        if (value.is_string() && value.get_ref<const std::string &>().size() > 256) {
            return error::invalid("model is longer than 256 bytes", "model");
        }
    } else if (key == "settings") {
        if (!value.is_object() && !value.is_null()) {
            return error::invalid("settings must be an object or null", "settings");
        }
    } else if (key == "messages") {
        if (!value.is_array()) {
            return error::invalid("messages must be an array", "messages");
        }
        if (value.size() > static_cast<size_t>(lim.max_messages)) {
            return error::invalid("a conversation holds at most " + std::to_string(lim.max_messages) +
                                      " messages; this one has " + std::to_string(value.size()),
                                  "messages", "too_many_messages");
        }
        for (size_t i = 0; i < value.size(); ++i) {
            const auto &m     = value[i];
            const auto  where = "messages[" + std::to_string(i) + "]";
            if (!m.is_object()) {
                return error::invalid(where + " must be an object", where);
            }
            const auto role = m.find("role");
            if (role == m.end() || !role->is_string() ||
                (*role != "system" && *role != "user" && *role != "assistant" && *role != "tool")) {
                return error::invalid(where + ".role must be one of system, user, assistant, tool", where + ".role");
            }
            const auto content = m.find("content");
            if (content == m.end() || !(content->is_string() || (content->is_null() && *role == "assistant"))) {
                return error::invalid(where + ".content must be a string (null only for an assistant turn)",
                                      where + ".content");
            }
        }
    } else {
        return error::invalid("unknown field '" + key + "' (a conversation has title, model, settings, messages)", key);
    }
    doc[key] = value;
    return std::nullopt;
}

// The text a search matches: the title and every message's content, lower-cased.
std::string search_text(const json &doc) {
    std::string out = doc.value("title", std::string());
    for (const auto &m : doc["messages"]) {
        if (const auto c = m.find("content"); c != m.end() && c->is_string()) {
            out += '\n';
            out += c->get_ref<const std::string &>();
        }
    }
    return ascii_lower(std::move(out));
}

// A title for a conversation created without one: the first user message's first line.
std::string default_title(const json &doc) {
    for (const auto &m : doc["messages"]) {
        if (m.value("role", "") == "user" && m["content"].is_string()) {
            auto text = m["content"].get<std::string>();
            text      = text.substr(0, text.find('\n'));
            if (!text.empty()) {
                return first_code_points(text, 60);
            }
        }
    }
    return "New conversation";
}

json conversation_json(const std::string &id, int64_t created, int64_t updated, const json &doc) {
    return json{{"id", id},
                {"object", "console.conversation"},
                {"title", doc.value("title", "")},
                {"model", doc.contains("model") ? doc["model"] : json(nullptr)},
                {"settings", doc.contains("settings") ? doc["settings"] : json(nullptr)},
                {"messages", doc.contains("messages") ? doc["messages"] : json::array()},
                {"created_at", created},
                {"updated_at", updated}};
}

} // namespace

error conversation_not_found(const std::string &id) {
    return error{error_kind::not_found, "no conversation '" + id.substr(0, 200) + "'", "id", "conversation_not_found"};
}

json to_json(const conversation_summary &s) {
    return json{{"id", s.id},
                {"object", "console.conversation"},
                {"title", s.title},
                {"model", s.model.empty() ? json(nullptr) : json(s.model)},
                {"created_at", s.created_at},
                {"updated_at", s.updated_at},
                {"message_count", s.message_count},
                {"bytes", s.bytes}};
}

result<std::unique_ptr<conversation_store>> conversation_store::open(const std::filesystem::path &file,
                                                                     conversation_limits          limits) {
    auto db = sqlite::open_store(
        file, "the conversation store",
        {"CREATE TABLE IF NOT EXISTS conversations (id TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT NOT NULL, "
         "model TEXT NOT NULL, created INTEGER NOT NULL, updated INTEGER NOT NULL, message_count INTEGER NOT NULL, "
         "bytes INTEGER NOT NULL, doc TEXT NOT NULL, search TEXT NOT NULL)",
         "CREATE INDEX IF NOT EXISTS conversations_owner ON conversations (owner, updated)"});
    if (!db) {
        return db.err();
    }
    return std::unique_ptr<conversation_store>(new conversation_store(*db, limits));
}

conversation_store::~conversation_store() {
    sqlite3_close(db_);
}

result<json> conversation_store::create(const std::string &owner, const json &body) {
    if (!body.is_object()) {
        return error::invalid("the body must be a JSON object");
    }
    json doc        = json::object();
    doc["messages"] = json::array();
    for (const auto &[key, value] : body.items()) {
        if (auto err = take_field(key, value, doc, limits_)) {
            return *err;
        }
    }
    if (doc.value("title", std::string()).empty()) {
        doc["title"] = default_title(doc);
    }
    return write(owner, random_id("conv_"), unix_seconds(), std::move(doc), true);
}

result<json> conversation_store::update(const std::string &owner, const std::string &id, const json &body) {
    if (!body.is_object()) {
        return error::invalid("the body must be a JSON object");
    }
    // Checked here against an empty document; merged into the stored one inside write()'s
    // transaction, so that two partial updates (a rename, a save) never undo each other.
    json checked = json::object();
    for (const auto &[key, value] : body.items()) {
        if (auto err = take_field(key, value, checked, limits_)) {
            return *err;
        }
    }
    return write(owner, id, 0, std::move(checked), false);
}

result<json> conversation_store::write(const std::string &owner, const std::string &id, int64_t created, json doc,
                                       bool is_new) {
    std::lock_guard lock(mu_);
    if (!exec(db_, "BEGIN IMMEDIATE")) {
        return internal(sqlite3_errmsg(db_));
    }
    auto rollback = [this](error e) {
        exec(db_, "ROLLBACK");
        return e;
    };
    if (!is_new) { // an update: `doc` holds the changed fields; the rest comes from the stored row
        statement st(db_, "SELECT created, doc FROM conversations WHERE owner = ? AND id = ?");
        st.bind(1, owner);
        st.bind(2, id);
        if (!st.ok() || st.step() != SQLITE_ROW) {
            return rollback(conversation_not_found(id));
        }
        created     = st.integer(0);
        json stored = json::parse(st.text(1), nullptr, false);
        if (!stored.is_object()) {
            stored = json::object();
        }
        for (auto &[key, value] : doc.items()) {
            stored[key] = std::move(value);
        }
        doc = std::move(stored);
        if (!doc.contains("messages") || !doc["messages"].is_array()) {
            doc["messages"] = json::array();
        }
        if (doc.value("title", std::string()).empty()) {
            doc["title"] = default_title(doc);
        }
    }
    const std::string text   = doc.dump(-1, ' ', false, json::error_handler_t::replace);
    const std::string search = search_text(doc);
    if (static_cast<int64_t>(text.size()) > limits_.max_bytes) {
        return rollback(error{error_kind::payload_too_large,
                              "the conversation is " + std::to_string(text.size()) +
                                  " bytes; one conversation holds at most " + std::to_string(limits_.max_bytes) +
                                  " bytes",
                              "messages", "conversation_too_large"});
    }
    // What the row holds on disk: the document and its search text.
    const auto bytes = static_cast<int64_t>(text.size() + search.size());
    int64_t    count = 0;
    int64_t    total = 0;
    {
        statement st(db_, "SELECT count(*), coalesce(sum(bytes), 0) FROM conversations WHERE owner = ? AND id <> ?");
        st.bind(1, owner);
        st.bind(2, id);
        if (!st.ok() || st.step() != SQLITE_ROW) {
            return rollback(internal(st.error()));
        }
        count = st.integer(0);
        total = st.integer(1);
    }
    if (is_new && count >= limits_.max_per_owner) {
        return rollback(error::invalid("this API key already has " + std::to_string(count) +
                                           " conversations, the limit; delete some first",
                                       "", "too_many_conversations"));
    }
    if (total + bytes > limits_.max_bytes_per_owner) {
        return rollback(error{error_kind::payload_too_large,
                              "this API key's conversations would take " + std::to_string(total + bytes) +
                                  " bytes; the limit is " + std::to_string(limits_.max_bytes_per_owner) +
                                  " bytes; delete some first",
                              "", "conversation_storage_full"});
    }
    const int64_t updated = std::max(unix_seconds(), created);
    statement     st(db_, "INSERT OR REPLACE INTO conversations (id, owner, title, model, created, updated, "
                              "message_count, bytes, doc, search) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!st.ok()) {
        return rollback(internal(st.error()));
    }
    st.bind(1, id);
    st.bind(2, owner);
    st.bind(3, doc.value("title", std::string()));
    st.bind(4, doc["model"].is_string() ? doc["model"].get<std::string>() : std::string());
    st.bind(5, created);
    st.bind(6, updated);
    st.bind(7, static_cast<int64_t>(doc["messages"].size()));
    st.bind(8, bytes);
    st.bind(9, text);
    st.bind(10, search);
    if (st.step() != SQLITE_DONE || !exec(db_, "COMMIT")) {
        return rollback(internal(sqlite3_errmsg(db_)));
    }
    return conversation_json(id, created, updated, doc);
}

std::optional<json> conversation_store::get(const std::string &owner, const std::string &id) {
    std::lock_guard lock(mu_);
    statement       st(db_, "SELECT created, updated, doc FROM conversations WHERE owner = ? AND id = ?");
    st.bind(1, owner);
    st.bind(2, id);
    if (!st.ok() || st.step() != SQLITE_ROW) {
        return std::nullopt;
    }
    auto doc = json::parse(st.text(2), nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
        return std::nullopt; // written by this class only; a damaged row reads as absent
    }
    if (!doc.contains("messages") || !doc["messages"].is_array()) {
        doc["messages"] = json::array();
    }
    return conversation_json(id, st.integer(0), st.integer(1), doc);
}

bool conversation_store::remove(const std::string &owner, const std::string &id) {
    std::lock_guard lock(mu_);
    statement       st(db_, "DELETE FROM conversations WHERE owner = ? AND id = ?");
    st.bind(1, owner);
    st.bind(2, id);
    return st.ok() && st.step() == SQLITE_DONE && sqlite3_changes(db_) > 0;
}

result<std::vector<conversation_summary>> conversation_store::list(const std::string &owner, const std::string &query,
                                                                   int32_t limit) {
    if (query.size() > 200) {
        return error::invalid("q is " + std::to_string(query.size()) + " bytes; the limit is 200", "q");
    }
    if (limit < 1 || limit > 100) {
        return error::invalid("limit must be from 1 to 100, got " + std::to_string(limit), "limit");
    }
    std::lock_guard lock(mu_);
    statement       st(db_, "SELECT id, title, model, created, updated, message_count, bytes FROM conversations "
                                  "WHERE owner = ? AND instr(search, ?) > 0 ORDER BY updated DESC, rowid DESC LIMIT ?");
    if (!st.ok()) {
        return internal(st.error());
    }
    st.bind(1, owner);
    st.bind(2, ascii_lower(query));
    st.bind(3, static_cast<int64_t>(limit));
    std::vector<conversation_summary> out;
    int                               rc = 0;
    while ((rc = st.step()) == SQLITE_ROW) {
        out.push_back({st.text(0), st.text(1), st.text(2), st.integer(3), st.integer(4), st.integer(5), st.integer(6)});
    }
    if (rc != SQLITE_DONE) {
        return internal(st.error());
    }
    return out;
}

} // namespace inferbox
