#include "api/response_store.h"

#include "common/sqlite_statement.h"
#include "common/unix_time.h"

#include <openssl/sha.h>
#include <sqlite3.h>

#include <system_error>

namespace inferbox {

using json = nlohmann::json;

namespace {

using sqlite::exec;
using sqlite::statement;

} // namespace

std::string response_owner(std::string_view api_key) {
    if (api_key.empty()) {
        return {};
    }
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char *>(api_key.data()), api_key.size(), digest);
    static const char *hex = "0123456789abcdef";
    std::string        out;
    for (size_t i = 0; i < 16; ++i) {
        out += hex[digest[i] >> 4];
        out += hex[digest[i] & 15];
    }
    return out;
}

result<std::unique_ptr<response_store>> response_store::open(const std::filesystem::path &file,
                                                             response_store_limits        limits) {
    auto db = sqlite::open_store(
        file, "the response store",
        {"CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, created INTEGER NOT NULL, "
         "bytes INTEGER NOT NULL, response TEXT NOT NULL, input_items TEXT NOT NULL)",
         "CREATE INDEX IF NOT EXISTS responses_created ON responses (created)",
         "CREATE TABLE IF NOT EXISTS items (id TEXT NOT NULL, owner TEXT NOT NULL, response_id TEXT NOT NULL, "
         "item TEXT NOT NULL, PRIMARY KEY (owner, id))",
         "CREATE INDEX IF NOT EXISTS items_response ON items (response_id)"});
    if (!db) {
        return db.err();
    }
    auto store = std::unique_ptr<response_store>(new response_store(*db, limits));
    {
        std::lock_guard lock(store->mu_);
        store->prune();
    }
    return store;
}

response_store::~response_store() {
    sqlite3_close(db_);
}

std::optional<error> response_store::put(const std::string &owner, const json &response, const json &input_items) {
    const std::string r     = response.dump(-1, ' ', false, json::error_handler_t::replace);
    const std::string items = input_items.dump(-1, ' ', false, json::error_handler_t::replace);
    const auto        bytes = static_cast<int64_t>(r.size() + items.size());
    if (bytes > limits_.max_bytes) {
        return error{error_kind::payload_too_large,
                     "the response and its input are " + std::to_string(bytes) +
                         " bytes, more than the response store holds (" + std::to_string(limits_.max_bytes) +
                         " bytes, --store-max-bytes)",
                     "store", "store_full"};
    }
    std::lock_guard lock(mu_);
    statement       st(db_, "INSERT OR REPLACE INTO responses (id, owner, created, bytes, response, input_items) "
                                  "VALUES (?, ?, ?, ?, ?, ?)");
    if (!st.ok()) {
        return error{error_kind::internal, "the response store failed: " + st.error(), "", ""};
    }
    st.bind(1, response.value("id", std::string()));
    st.bind(2, owner);
    st.bind(3, unix_seconds());
    st.bind(4, bytes);
    st.bind(5, r);
    st.bind(6, items);
    if (st.step() != SQLITE_DONE) {
        return error{error_kind::internal, "the response store failed: " + st.error(), "", ""};
    }
    // Every item with an id, input and output, so that an item_reference can name it.
    statement it(db_, "INSERT OR REPLACE INTO items (id, owner, response_id, item) VALUES (?, ?, ?, ?)");
    if (it.ok()) {
        for (const json *list : {&input_items, response.contains("output") ? &response["output"] : nullptr}) {
            if (list == nullptr || !list->is_array()) {
                continue;
            }
            for (const auto &item : *list) {
                if (!item.is_object() || !item.contains("id") || !item["id"].is_string()) {
                    continue;
                }
                it.reset();
                it.bind(1, item["id"].get<std::string>());
                it.bind(2, owner);
                it.bind(3, response.value("id", std::string()));
                it.bind(4, item.dump(-1, ' ', false, json::error_handler_t::replace));
                it.step();
            }
        }
    }
    prune();
    return std::nullopt;
}

std::optional<json> response_store::item(const std::string &owner, const std::string &item_id) {
    std::lock_guard lock(mu_);
    statement       st(db_, "SELECT item FROM items WHERE owner = ? AND id = ?");
    if (!st.ok()) {
        return std::nullopt;
    }
    st.bind(1, owner);
    st.bind(2, item_id);
    if (st.step() != SQLITE_ROW) {
        return std::nullopt;
    }
    auto v = json::parse(st.text(0), nullptr, false);
    return v.is_discarded() ? std::nullopt : std::optional<json>(std::move(v));
}

std::optional<stored_response> response_store::get(const std::string &owner, const std::string &id) {
    std::lock_guard lock(mu_);
    statement       st(db_, "SELECT response, input_items FROM responses WHERE id = ? AND owner = ? AND created >= ?");
    if (!st.ok()) {
        return std::nullopt;
    }
    st.bind(1, id);
    st.bind(2, owner);
    st.bind(3, unix_seconds() - limits_.max_age.count());
    if (st.step() != SQLITE_ROW) {
        return std::nullopt;
    }
    stored_response out;
    out.response    = json::parse(st.text(0), nullptr, false);
    out.input_items = json::parse(st.text(1), nullptr, false);
    if (out.response.is_discarded() || out.input_items.is_discarded()) {
        return std::nullopt;
    }
    return out;
}

bool response_store::remove(const std::string &owner, const std::string &id) {
    std::lock_guard lock(mu_);
    statement       st(db_, "DELETE FROM responses WHERE id = ? AND owner = ?");
    if (!st.ok()) {
        return false;
    }
    st.bind(1, id);
    st.bind(2, owner);
    const bool removed = st.step() == SQLITE_DONE && sqlite3_changes(db_) > 0;
    exec(db_, "DELETE FROM items WHERE response_id NOT IN (SELECT id FROM responses)");
    return removed;
}

int64_t response_store::total_bytes() {
    std::lock_guard lock(mu_);
    statement       st(db_, "SELECT COALESCE(SUM(bytes), 0) FROM responses");
    return st.ok() && st.step() == SQLITE_ROW ? st.integer(0) : 0;
}

void response_store::prune() {
    {
        statement old(db_, "DELETE FROM responses WHERE created < ?");
        if (old.ok()) {
            old.bind(1, unix_seconds() - limits_.max_age.count());
            old.step();
        }
    }
    // Oldest first until the total fits: one statement, the running sum over newest-first rows.
    statement over(db_, "DELETE FROM responses WHERE id IN (SELECT id FROM (SELECT id, SUM(bytes) OVER "
                        "(ORDER BY created DESC, rowid DESC) AS running FROM responses) WHERE running > ?)");
    if (over.ok()) {
        over.bind(1, limits_.max_bytes);
        over.step();
    }
    exec(db_, "DELETE FROM items WHERE response_id NOT IN (SELECT id FROM responses)");
}

} // namespace inferbox
