#pragma once
// The model store: a cache of GGUF files under one root, addressed by validated names, and the
// parser for model references (`hf://…`, URLs, local paths, cached names).
//
// Layout (root = $INFERBOX_CACHE, default ~/.cache/inferbox):
//
//   <root>/models/<dir>/model.gguf   the model, validated as GGUF when it was added
//   <root>/models/<dir>/manifest     key=value lines: format, name, source, sha256, size, imported_at
//   <root>/tmp/                      work area: imports are staged here, removals retired here
//   <root>/downloads/                partial downloads (<key>.part) and their locks; see fetch/pull.h
//
// <dir> is the model name with '/' written as '+' ("org/name" → "org+name"; '+' is not allowed
// in names, so the mapping is one-to-one and the models folder stays one level deep). A model is
// added by building its whole folder under tmp/ (copy, fsync, validate, manifest, fsync) and
// renaming the folder into models/ in one step, and removed by renaming it back into tmp/ before
// deleting it, so a reader never sees half a model and a killed import leaves nothing that looks
// complete. Two imports of the same name race safely: the rename refuses to replace, one wins.
//
// Names: 1 to 200 characters, `name` or `org/name`; each part is [A-Za-z0-9._-], starts with a
// letter or digit (so never "." or ".."), and may not end in ".gguf" (that reads as a file).
// Every path the store opens is checked with weakly_canonical to lie inside <root>/models, and
// model folders and files must not be symlinks: a name never reaches outside the store.
//
// Thread safety: a model_store is immutable after construction; its methods may run
// concurrently from threads and processes (the file system serialises the renames).

#include "common/status.h"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace inferbox {

inline constexpr size_t max_model_name_length = 200;

// nullopt when `name` is a valid model name, else why not (one sentence, naming the name).
std::optional<error> validate_model_name(std::string_view name);

// What a manifest records about a cached model.
struct model_manifest {
    std::string name;
    std::string source;      // where it was imported or downloaded from
    std::string sha256;      // lower-case hex of model.gguf
    uint64_t    size = 0;    // bytes of model.gguf
    std::string imported_at; // UTC, ISO 8601 ("2025-01-31T12:00:00Z")
};

struct model_entry {
    std::string           name;
    std::filesystem::path dir;  // <root>/models/<dir>
    std::filesystem::path file; // <dir>/model.gguf
    model_manifest        manifest;
    // Empty for a healthy entry; list() reports broken entries (unreadable manifest, missing
    // file, symlink) with the reason here instead of failing the whole listing.
    std::string problem;
};

// SHA-256 of a file as lower-case hex (OpenSSL EVP).
result<std::string> sha256_file(const std::filesystem::path &path);

// SHA-256 over bytes that arrive piece by piece (a copy, a download). Not thread-safe.
class sha256_stream {
  public:
    sha256_stream();
    ~sha256_stream();
    sha256_stream(const sha256_stream &)            = delete;
    sha256_stream &operator=(const sha256_stream &) = delete;

    void reset();
    void update(const void *data, size_t n);
    // Hashes the first `n` bytes of `path` (the part of a download already on disk); an error
    // names the file when it is shorter or unreadable.
    std::optional<error> update_from_file(const std::filesystem::path &path, uint64_t n);
    // Lower-case hex of everything so far. Ends the stream: reset() before reusing it.
    std::string hex_digest();

  private:
    void *ctx_; // EVP_MD_CTX, kept opaque so OpenSSL stays out of this header
};

// True for 64 hex digits (either case): the shape of a SHA-256 as sources publish it.
bool looks_like_sha256(std::string_view s);

class model_store {
  public:
    // The store rooted at `root`; nothing is created until the first import.
    explicit model_store(const std::filesystem::path &root);

    // $INFERBOX_CACHE when set and non-empty, else $HOME/.cache/inferbox.
    static result<std::filesystem::path> default_root();

    const std::filesystem::path &root() const { return root_; }

    // Copies the GGUF at `source` into the store as `name` (default: the file's stem) and
    // records its SHA-256. The copy is validated as GGUF before it becomes visible. Fails if the
    // name is taken; on failure nothing is left in models/. Blocks for the copy and the hash.
    result<model_entry> import(const std::filesystem::path &source, std::string name = {}) const;

    // Adds a model that `write` creates: it is called with a path inside a fresh staging folder
    // under <root>/tmp (never visible as a model) and writes the GGUF there (a quantizer's
    // output). The file is then hashed, validated and moved into models/ as import() does;
    // `source` is recorded in the manifest. When `write` fails, or anything after it, the staging
    // folder is deleted and nothing is left in models/. A process killed meanwhile leaves only
    // the staging folder, which a later import deletes once it is a day old.
    result<model_entry>
    import_generated(const std::string &name, const std::string &source,
                     const std::function<std::optional<error>(const std::filesystem::path &)> &write) const;

    // Adds the GGUF file `file` as `name`, moving it (a rename: `file` must be on the store's
    // file system, e.g. under downloads_dir()) instead of copying it. `sha256` and `size` are
    // what the caller measured while writing it; `source` is recorded in the manifest. The file
    // is validated as GGUF before the model becomes visible; on any failure it is deleted and
    // nothing is left in models/.
    result<model_entry> adopt(const std::filesystem::path &file, const std::string &name, const std::string &source,
                              const std::string &sha256, uint64_t size) const;

    // <root>/downloads: where partial downloads live (created, checked to be a real directory).
    result<std::filesystem::path> downloads_dir() const;

    // Every model in the store, sorted by name (broken ones included, with `problem` set).
    // A missing store is an empty list.
    result<std::vector<model_entry>> list() const;

    // The model called `name`: not_found when absent, invalid_request for a bad name, a broken
    // entry or a path that leads outside the store.
    result<model_entry> find(std::string_view name) const;

    // Removes the model called `name` and returns what it was. Errors as for find(); a symlink
    // is never followed, so nothing outside the store is deleted.
    result<model_entry> remove(std::string_view name) const;

  private:
    // <root>/models/<dir> for a valid name, checked to stay inside the store.
    result<std::filesystem::path> model_dir(std::string_view name) const;
    result<model_entry>           load_entry(const std::string &name, const std::filesystem::path &dir) const;
    // The shared head of import() and adopt(): checks `name` is free and creates a staging
    // folder under <root>/tmp. Returns {the model's folder, the staging folder}.
    result<std::pair<std::filesystem::path, std::filesystem::path>> open_stage(std::string_view name) const;
    // The shared tail of import() and adopt(): `stage` (under <root>/tmp) holds model.gguf;
    // validates it, writes the manifest and renames the folder into models/ as `dir`.
    result<model_entry> commit_stage(const std::filesystem::path &stage, const std::filesystem::path &dir,
                                     const model_manifest &m, const std::string &shown_source) const;

    std::filesystem::path root_;
};

// --- model references -------------------------------------------------------------------------

enum class model_ref_kind {
    hugging_face, // hf://ORG/REPO/FILE.gguf[@REVISION]
    url,          // https://… or http://…
    local_path,   // an existing file
    cached_name,  // a name for model_store::find
};

struct model_ref {
    model_ref_kind kind = model_ref_kind::cached_name;
    std::string    text; // the reference as given

    // hugging_face
    std::string org, repo, file; // file may contain '/' (a folder in the repository)
    std::string revision;        // empty: the default branch

    std::string           url;  // url
    std::filesystem::path path; // local_path
    std::string           name; // cached_name
};

// Classifies and validates a reference:
//   hf://ORG/REPO/FILE.gguf[@REVISION] → hugging_face (ORG, REPO: [A-Za-z0-9._-]{1,96}; FILE ends
//                                        in .gguf; REVISION: [A-Za-z0-9._/-]{1,255}; no ".." parts)
//   http:// or https://URL             → url (a host is required; no spaces or control characters)
//   starts with "/", "./", "../" or ends in ".gguf", or contains '/' and names an existing file
//                                      → local_path (the file must exist)
//   a valid model name                 → cached_name
// Other schemes and anything else are invalid_request errors that say what is accepted.
// Reads the file system only to tell paths from names.
result<model_ref> parse_model_ref(std::string_view text);

} // namespace inferbox
