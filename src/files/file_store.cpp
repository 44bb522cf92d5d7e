#include "files/file_store.h"

#include "common/random_id.h"
#include "common/sqlite_statement.h"
#include "common/unix_time.h"
#include "common/utf8.h"
#include "files/multipart.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <system_error>

namespace inferbox {

using sqlite::exec;
using sqlite::statement;

namespace {

constexpr const char *tmp_prefix = ".tmp-";

error internal(const std::string &what) {
    return error{error_kind::internal, "the file store failed: " + what, "", ""};
}

// Writes `bytes` to a new file at `path` (which must not exist) and flushes it to disk.
std::optional<error> write_new_file(const std::filesystem::path &path, std::string_view bytes) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return internal("cannot create " + path.string() + ": " + std::strerror(errno));
    }
    size_t done = 0;
    while (done < bytes.size()) {
        const auto n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            const std::string why = std::strerror(errno);
            ::close(fd);
            return internal("cannot write " + path.string() + ": " + why);
        }
        done += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0) {
        const std::string why = std::strerror(errno);
        ::close(fd);
        return internal("cannot flush " + path.string() + ": " + why);
    }
    if (::close(fd) != 0) {
        return internal("cannot close " + path.string() + ": " + std::strerror(errno));
    }
    return std::nullopt;
}

// Reads a whole blob, which must be `expected` bytes long; nullopt when it is missing or not.
std::optional<std::string> read_blob(const std::filesystem::path &path, int64_t expected) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return std::nullopt;
    }
    std::string out(static_cast<size_t>(expected), '\0');
    size_t      done = 0;
    for (;;) {
        // One byte of room past the expected size, so that a longer file is noticed.
        char       extra = 0;
        char      *dst   = done < out.size() ? out.data() + done : &extra;
        const auto want  = done < out.size() ? out.size() - done : 1;
        const auto n     = ::read(fd, dst, want);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || done >= out.size()) {
            ::close(fd);
            return n == 0 && done == out.size() ? std::optional<std::string>(std::move(out)) : std::nullopt;
        }
        done += static_cast<size_t>(n);
    }
}

file_record record_at(const statement &st) {
    return file_record{st.text(0), st.text(1), st.text(2), st.integer(3), st.integer(4)};
}

bool valid_filename(std::string_view name) {
    return !name.empty() && name.size() <= 255 && utf8_valid(name) &&
           std::none_of(name.begin(), name.end(), [](char c) {
               const auto u = static_cast<unsigned char>(c);
               return u < 0x20 || u == 0x7F;
           });
}

} // namespace

bool valid_file_purpose(std::string_view purpose) {
    static constexpr std::array<std::string_view, 6> purposes = {"assistants", "batch",     "fine-tune",
                                                                 "vision",     "user_data", "evals"};
    return std::find(purposes.begin(), purposes.end(), purpose) != purposes.end();
}

error file_not_found(const std::string &id) {
    return error{error_kind::not_found, "no file '" + id.substr(0, 200) + "'", "file_id", "file_not_found"};
}

result<std::unique_ptr<file_store>> file_store::open(const std::filesystem::path &dir, file_limits limits) {
    const auto      blobs = dir / "blobs";
    std::error_code ec;
    std::filesystem::create_directories(blobs, ec);
    if (ec) {
        return internal("cannot create " + blobs.string() + ": " + ec.message());
    }
    // seq orders listings (created_at has one-second steps) and is the `after` cursor's position.
    auto db = sqlite::open_store(dir / "files.sqlite3", "the file store",
                                 {"CREATE TABLE IF NOT EXISTS files (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT "
                                  "NOT NULL UNIQUE, owner TEXT NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT "
                                  "NULL, bytes INTEGER NOT NULL, created INTEGER NOT NULL)",
                                  "CREATE INDEX IF NOT EXISTS files_owner ON files (owner, seq)"});
    if (!db) {
        return db.err();
    }
    std::unique_ptr<file_store> store(new file_store(*db, blobs, limits));
    store->reconcile();
    return store;
}

file_store::~file_store() {
    sqlite3_close(db_);
}

void file_store::reconcile() {
    std::set<std::string>    kept;
    std::vector<std::string> lost;
    {
        statement st(db_, "SELECT id, bytes FROM files");
        while (st.ok() && st.step() == SQLITE_ROW) {
            const auto      id = st.text(0);
            std::error_code ec;
            const auto      size = std::filesystem::file_size(blob_path(id), ec);
            if (ec || size != static_cast<uint64_t>(st.integer(1))) {
                lost.push_back(id);
            } else {
                kept.insert(id);
            }
        }
    }
    for (const auto &id : lost) {
        statement del(db_, "DELETE FROM files WHERE id = ?1");
        del.bind(1, id);
        del.step();
        spdlog::warn("file store: {}'s content is missing or damaged; the file is dropped", id);
    }
    std::error_code ec;
    for (std::filesystem::directory_iterator it(blobs_, ec), end; !ec && it != end; it.increment(ec)) {
        const auto name = it->path().filename().string();
        if (kept.count(name) != 0) {
            continue;
        }
        std::error_code rm;
        std::filesystem::remove(it->path(), rm);
        if (name.rfind(tmp_prefix, 0) != 0) {
            spdlog::warn("file store: {} has no metadata (an upload cut short); removed", it->path().string());
        }
    }
}

namespace {

// Whether `owner` may add a file of `n` bytes (the caller holds the store's lock).
std::optional<error> check_room(sqlite3 *db, const file_limits &lim, const std::string &owner, int64_t n) {
    statement mine(db, "SELECT COUNT(*) FROM files WHERE owner = ?1");
    statement all(db, "SELECT COALESCE(SUM(bytes), 0) FROM files");
    if (!mine.ok() || !all.ok()) {
        return internal(mine.ok() ? all.error() : mine.error());
    }
    mine.bind(1, owner);
    if (mine.step() != SQLITE_ROW || all.step() != SQLITE_ROW) {
        return internal(mine.error());
    }
    if (mine.integer(0) >= lim.max_files_per_owner) {
        return error::invalid("this API key has " + std::to_string(mine.integer(0)) + " files, the limit (" +
                                  std::to_string(lim.max_files_per_owner) + ", --files-max-count); delete some first",
                              "file", "too_many_files");
    }
    if (all.integer(0) + n > lim.max_total_bytes) {
        return error{error_kind::payload_too_large,
                     "the server's files would exceed " + std::to_string(lim.max_total_bytes) +
                         " bytes in all (the limit, --files-max-total-bytes): " + std::to_string(all.integer(0)) +
                         " are stored and this file has " + std::to_string(n),
                     "file", "storage_full"};
    }
    return std::nullopt;
}

} // namespace

result<file_record> file_store::put(const std::string &owner, const std::string &filename, const std::string &purpose,
                                    std::string_view bytes) {
    const auto n = static_cast<int64_t>(bytes.size());
    if (n > limits_.max_file_bytes) {
        return error{error_kind::payload_too_large,
                     "the file is " + std::to_string(n) + " bytes; the limit is " +
                         std::to_string(limits_.max_file_bytes) + " bytes (--files-max-bytes)",
                     "file", "file_too_large"};
    }
    {
        // A cheap check first, so that a refused file is not written; repeated in the transaction.
        std::lock_guard lock(mu_);
        if (auto err = check_room(db_, limits_, owner, n)) {
            return *err;
        }
    }
    file_record rec{random_id("file-"), filename, purpose, n, unix_seconds()};
    const auto  tmp = blobs_ / (tmp_prefix + rec.id);
    if (auto err = write_new_file(tmp, bytes)) {
        std::error_code rm;
        std::filesystem::remove(tmp, rm);
        return *err;
    }
    std::lock_guard lock(mu_);
    const auto      fail = [&](error err) -> result<file_record> {
        exec(db_, "ROLLBACK");
        std::error_code rm;
        std::filesystem::remove(tmp, rm);
        return err;
    };
    if (!exec(db_, "BEGIN IMMEDIATE")) {
        return fail(internal(sqlite3_errmsg(db_)));
    }
    if (auto err = check_room(db_, limits_, owner, n)) {
        return fail(*err);
    }
    statement ins(db_,
                  "INSERT INTO files (id, owner, filename, purpose, bytes, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    ins.bind(1, rec.id);
    ins.bind(2, owner);
    ins.bind(3, rec.filename);
    ins.bind(4, rec.purpose);
    ins.bind(5, rec.bytes);
    ins.bind(6, rec.created_at);
    if (!ins.ok() || ins.step() != SQLITE_DONE) {
        return fail(internal(ins.error()));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, blob_path(rec.id), ec);
    if (ec) {
        return fail(internal("cannot rename " + tmp.string() + ": " + ec.message()));
    }
    if (!exec(db_, "COMMIT")) {
        const auto why = std::string(sqlite3_errmsg(db_));
        exec(db_, "ROLLBACK");
        std::filesystem::remove(blob_path(rec.id), ec);
        return internal(why);
    }
    return rec;
}

std::optional<file_record> file_store::get(const std::string &owner, const std::string &id) {
    std::lock_guard lock(mu_);
    statement       st(db_, "SELECT id, filename, purpose, bytes, created FROM files WHERE owner = ?1 AND id = ?2");
    st.bind(1, owner);
    st.bind(2, id);
    if (!st.ok() || st.step() != SQLITE_ROW) {
        return std::nullopt;
    }
    return record_at(st);
}

result<std::string> file_store::content(const std::string &owner, const std::string &id) {
    const auto rec = get(owner, id);
    if (!rec) {
        return file_not_found(id);
    }
    auto bytes = read_blob(blob_path(rec->id), rec->bytes);
    if (!bytes) {
        // Deleted since the lookup, or damaged on disk (the next start drops it).
        return get(owner, id) ? internal(rec->id + "'s content is missing or damaged") : file_not_found(id);
    }
    return std::move(*bytes);
}

bool file_store::remove(const std::string &owner, const std::string &id) {
    std::string found;
    {
        std::lock_guard lock(mu_);
        statement       st(db_, "DELETE FROM files WHERE owner = ?1 AND id = ?2 RETURNING id");
        st.bind(1, owner);
        st.bind(2, id);
        if (!st.ok() || st.step() != SQLITE_ROW) {
            return false;
        }
        found = st.text(0);
    }
    std::error_code ec;
    std::filesystem::remove(blob_path(found), ec); // a failure leaves an orphan the next start removes
    return true;
}

result<file_page> file_store::list(const std::string &owner, const std::string &purpose, int32_t limit, bool ascending,
                                   const std::string &after) {
    limit = std::clamp(limit, 1, 10000);
    std::lock_guard lock(mu_);
    int64_t         after_seq = 0;
    if (!after.empty()) {
        statement st(db_, "SELECT seq FROM files WHERE owner = ?1 AND id = ?2");
        st.bind(1, owner);
        st.bind(2, after);
        if (!st.ok() || st.step() != SQLITE_ROW) {
            return error::invalid("after names no file of this API key: '" + after.substr(0, 200) + "'", "after",
                                  "file_not_found");
        }
        after_seq = st.integer(0);
    }
    statement st(db_, ascending ? "SELECT id, filename, purpose, bytes, created FROM files WHERE owner = ?1 AND "
                                  "(?2 = '' OR purpose = ?2) AND seq > ?3 ORDER BY seq ASC LIMIT ?4"
                                : "SELECT id, filename, purpose, bytes, created FROM files WHERE owner = ?1 AND "
                                  "(?2 = '' OR purpose = ?2) AND (?3 = 0 OR seq < ?3) ORDER BY seq DESC LIMIT ?4");
    if (!st.ok()) {
        return internal(st.error());
    }
    st.bind(1, owner);
    st.bind(2, purpose);
    st.bind(3, after_seq);
    st.bind(4, int64_t{limit} + 1);
    file_page page;
    int       rc = 0;
    while ((rc = st.step()) == SQLITE_ROW) {
        if (page.data.size() == static_cast<size_t>(limit)) {
            page.has_more = true;
            break;
        }
        page.data.push_back(record_at(st));
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return internal(st.error());
    }
    return page;
}

result<file_upload> parse_file_upload(std::string_view content_type, std::string_view body, int64_t max_file_bytes) {
    multipart_limits lim;
    lim.max_parts      = 8;
    lim.max_body_bytes = static_cast<size_t>(max_file_bytes + file_upload_overhead_bytes);
    auto parts         = parse_multipart(content_type, body, lim);
    if (!parts) {
        return parts.err();
    }
    file_upload up;
    bool        has_file = false, has_purpose = false;
    for (const auto &p : *parts) {
        if (p.name == "file") {
            if (has_file) {
                return error::invalid("the upload has two file fields; send one file per request", "file");
            }
            has_file = true;
            if (!p.filename) {
                return error::invalid("the file field has no filename (send it as a file)", "file");
            }
            if (!valid_filename(*p.filename)) {
                return error::invalid("the filename must be 1 to 255 bytes of UTF-8 without control characters", "file",
                                      "invalid_filename");
            }
            if (static_cast<int64_t>(p.data.size()) > max_file_bytes) {
                return error{error_kind::payload_too_large,
                             "the file is " + std::to_string(p.data.size()) + " bytes; the limit is " +
                                 std::to_string(max_file_bytes) + " bytes (--files-max-bytes)",
                             "file", "file_too_large"};
            }
            up.filename = *p.filename;
            up.bytes    = p.data;
        } else if (p.name == "purpose") {
            if (has_purpose) {
                return error::invalid("the upload has two purpose fields", "purpose");
            }
            has_purpose = true;
            up.purpose  = std::string(p.data.substr(0, 64));
            if (p.filename || p.data.size() > 64 || !valid_file_purpose(up.purpose)) {
                return error::invalid("purpose must be one of assistants, batch, fine-tune, vision, user_data, evals",
                                      "purpose");
            }
        } else {
            return error::invalid("unknown field '" + p.name.substr(0, 100) +
                                      "' (POST /v1/files takes the fields file and purpose)",
                                  p.name.substr(0, 100));
        }
    }
    if (!has_file) {
        return error::invalid("the upload has no file field", "file");
    }
    if (!has_purpose) {
        return error::invalid("purpose is required (assistants, batch, fine-tune, vision, user_data, evals)",
                              "purpose");
    }
    return up;
}

} // namespace inferbox
