#pragma once
// The Files API's storage (/v1/files): each file's bytes in a file of its own under
// <data dir>/files/blobs/ (named by its id, never by the client's file name; written to a
// temporary name, flushed, then renamed, so a crash leaves no half file under a real id), and its
// metadata in SQLite (<data dir>/files/files.sqlite3). Each file belongs to the API key that
// uploaded it (its owner, the hash api/response_store.h's response_owner makes; "" when keys are
// off): one key never sees, reads or deletes another's. Bounded: bytes per file, files per owner,
// bytes of all files together; a put over a bound is refused with an error naming it.
// Opening reconciles the two halves: a blob without a row (a crash between rename and commit) and
// leftover temporary files are removed, and a row whose blob is missing or has the wrong size is
// dropped, each with a warning.
// Thread-safe: the metadata behind a mutex, each call one short transaction; blobs are written
// and read outside the lock.

#include "common/status.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct sqlite3;

namespace inferbox {

struct file_limits {
    int64_t max_file_bytes      = int64_t{32} << 20; // one file (--files-max-bytes)
    int64_t max_files_per_owner = 1000;              // files of one API key (--files-max-count)
    int64_t max_total_bytes     = int64_t{4} << 30;  // all files of all keys together (--files-max-total-bytes)
};

struct file_record {
    std::string id; // "file-" and 24 hex digits
    std::string filename;
    std::string purpose;
    int64_t     bytes      = 0;
    int64_t     created_at = 0; // unix seconds
};

struct file_page {
    std::vector<file_record> data;
    bool                     has_more = false;
};

// The purposes OpenAI's Files API takes: assistants, batch, fine-tune, vision, user_data, evals.
bool valid_file_purpose(std::string_view purpose);

class file_store {
  public:
    // Opens (creating) `dir` (<data dir>/files), its blobs folder and its database, and
    // reconciles them.
    static result<std::unique_ptr<file_store>> open(const std::filesystem::path &dir, file_limits limits);
    ~file_store();
    file_store(const file_store &)            = delete;
    file_store &operator=(const file_store &) = delete;

    // Stores a file. The caller has checked the name (file_upload does) and the purpose; the
    // limits are checked here (payload_too_large naming the limit, code file_too_large,
    // too_many_files or storage_full).
    result<file_record>        put(const std::string &owner, const std::string &filename, const std::string &purpose,
                                   std::string_view bytes);
    std::optional<file_record> get(const std::string &owner, const std::string &id);
    // The file's bytes; not_found (file_not_found) when the owner has no such file.
    result<std::string> content(const std::string &owner, const std::string &id);
    // Whether the owner had the file (it is gone either way).
    bool remove(const std::string &owner, const std::string &id);
    // The owner's files with `purpose` ("" for all), oldest first (`ascending`) or newest first,
    // after the file `after` ("" from the start; an id the owner has not: invalid_request naming
    // it); at most `limit` (1..10000) of them.
    result<file_page> list(const std::string &owner, const std::string &purpose, int32_t limit, bool ascending,
                           const std::string &after);

    const file_limits &limits() const { return limits_; }

  private:
    file_store(sqlite3 *db, std::filesystem::path blobs, file_limits limits)
        : db_(db), blobs_(std::move(blobs)), limits_(limits) {}
    void                  reconcile();
    std::filesystem::path blob_path(const std::string &id) const { return blobs_ / id; }

    std::mutex            mu_;
    sqlite3              *db_;
    std::filesystem::path blobs_;
    file_limits           limits_;
};

// The one answer for a file the caller does not have (missing, or another key's: the two are
// indistinguishable on purpose).
error file_not_found(const std::string &id);

// What an upload's body may hold besides its file: the multipart framing, part headers and the
// purpose field. POST /v1/files admits a body of max_file_bytes plus this (api/routes.h).
constexpr int64_t file_upload_overhead_bytes = int64_t{64} << 10;

// A multipart/form-data upload as POST /v1/files takes it: a `file` part with a file name and a
// `purpose` field. `bytes` views the request body.
struct file_upload {
    std::string      filename;
    std::string      purpose;
    std::string_view bytes;
};

// Reads an upload body: the parts (files/multipart.h), exactly one `file` part with a file name
// (1 to 255 bytes of UTF-8 without control characters) of at most `max_file_bytes` bytes
// (payload_too_large, file_too_large, naming the limit and --files-max-bytes), and a `purpose`
// (valid_file_purpose). Any other field is an error naming it.
result<file_upload> parse_file_upload(std::string_view content_type, std::string_view body, int64_t max_file_bytes);

} // namespace inferbox
