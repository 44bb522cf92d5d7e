#include "store/store.h"

#include "store/gguf.h"

#include "common/quoted.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>

namespace inferbox {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view model_file_name    = "model.gguf";
constexpr std::string_view manifest_file_name = "manifest";
constexpr uint64_t         max_manifest_bytes = uint64_t{64} * 1024;
constexpr int              manifest_format    = 1;
// Staging folders older than this are left-overs of killed imports; import() deletes them.
constexpr auto stale_staging_age = std::chrono::hours(24);

error invalid(std::string message) {
    return error{error_kind::invalid_request, std::move(message), {}, {}};
}

error not_found(std::string message) {
    return error{error_kind::not_found, std::move(message), {}, {}};
}

error internal(std::string message) {
    return error{error_kind::internal, std::move(message), {}, {}};
}

std::string errno_text(int e) {
    return std::strerror(e);
}

bool ends_with_gguf(std::string_view s) {
    if (s.size() < 5) {
        return false;
    }
    std::string tail(s.substr(s.size() - 5));
    std::transform(tail.begin(), tail.end(), tail.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return tail == ".gguf";
}

bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

bool alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    size_t                        start = 0;
    for (;;) {
        const size_t at = s.find(sep, start);
        parts.push_back(s.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
        if (at == std::string_view::npos) {
            return parts;
        }
        start = at + 1;
    }
}

std::string dir_for_name(std::string_view name) {
    std::string d(name);
    std::replace(d.begin(), d.end(), '/', '+');
    return d;
}

std::string name_for_dir(std::string_view dir) {
    std::string n(dir);
    std::replace(n.begin(), n.end(), '+', '/');
    return n;
}

// weakly_canonical, or the error's text.
result<fs::path> canonical_of(const fs::path &p) {
    std::error_code ec;
    fs::path        c = fs::weakly_canonical(p, ec);
    if (ec) {
        return internal("cannot resolve " + p.string() + ": " + ec.message());
    }
    return c;
}

std::string now_utc() {
    const std::time_t t = std::time(nullptr);
    std::tm           tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

// --- manifest ---------------------------------------------------------------------------------

std::string escape_value(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else {
            out += c;
        }
    }
    return out;
}

std::string unescape_value(std::string_view v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '\\' && i + 1 < v.size()) {
            const char n = v[++i];
            out += n == 'n' ? '\n' : n == 'r' ? '\r' : n;
        } else {
            out += v[i];
        }
    }
    return out;
}

std::string manifest_text(const model_manifest &m) {
    return "format=" + std::to_string(manifest_format) + "\nname=" + escape_value(m.name) +
           "\nsource=" + escape_value(m.source) + "\nsha256=" + m.sha256 + "\nsize=" + std::to_string(m.size) +
           "\nimported_at=" + m.imported_at + "\n";
}

// Parses manifest text; the error string says what is wrong.
result<model_manifest> parse_manifest(std::string_view text) {
    model_manifest m;
    bool           have_size = false;
    for (std::string_view line : split(text, '\n')) {
        if (line.empty() || line.front() == '#') {
            continue;
        }
        const size_t eq = line.find('=');
        if (eq == std::string_view::npos) {
            return invalid("manifest line without '=': " + quoted_for_message(line));
        }
        const std::string_view key   = line.substr(0, eq);
        const std::string      value = unescape_value(line.substr(eq + 1));
        if (key == "format") {
            if (value != std::to_string(manifest_format)) {
                return invalid("manifest format " + quoted_for_message(value) + " is not supported (expected " +
                               std::to_string(manifest_format) + ")");
            }
        } else if (key == "name") {
            m.name = value;
        } else if (key == "source") {
            m.source = value;
        } else if (key == "sha256") {
            m.sha256 = value;
        } else if (key == "imported_at") {
            m.imported_at = value;
        } else if (key == "size") {
            const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), m.size);
            if (ec != std::errc() || end != value.data() + value.size()) {
                return invalid("manifest size " + quoted_for_message(value) + " is not a number");
            }
            have_size = true;
        } // unknown keys: written by a newer inferbox; ignored
    }
    if (!have_size) {
        return invalid("manifest has no size");
    }
    return m;
}

// --- POSIX helpers ----------------------------------------------------------------------------

class fd_guard {
  public:
    explicit fd_guard(int fd) : fd_(fd) {}
    ~fd_guard() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    fd_guard(const fd_guard &)            = delete;
    fd_guard &operator=(const fd_guard &) = delete;
    int       get() const { return fd_; }
    // Closes now and reports the result (close can report a deferred write error).
    bool close() {
        const int fd = fd_;
        fd_          = -1;
        return ::close(fd) == 0;
    }

  private:
    int fd_;
};

bool write_all(int fd, const void *data, size_t n) {
    const auto *p = static_cast<const uint8_t *>(data);
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        p += w;
        n -= size_t(w);
    }
    return true;
}

ssize_t read_some(int fd, void *data, size_t n) {
    for (;;) {
        const ssize_t r = ::read(fd, data, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        return r;
    }
}

bool fsync_dir(const fs::path &dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    const bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
}

std::string hex(const unsigned char *d, unsigned n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string           out;
    for (unsigned i = 0; i < n; ++i) {
        out += digits[d[i] >> 4];
        out += digits[d[i] & 15];
    }
    return out;
}

// Copies `from` to the new file `to` (which must not exist), fsyncs it, and returns the copy's
// SHA-256 and size.
result<std::pair<std::string, uint64_t>> copy_and_hash(const fs::path &from, const fs::path &to) {
    fd_guard in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
    if (in.get() < 0) {
        return invalid(from.string() + ": cannot open: " + errno_text(errno));
    }
    fd_guard out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (out.get() < 0) {
        return internal(to.string() + ": cannot create: " + errno_text(errno));
    }
    sha256_stream        hash;
    std::vector<uint8_t> buf(1 << 20);
    uint64_t             total = 0;
    for (;;) {
        const ssize_t r = read_some(in.get(), buf.data(), buf.size());
        if (r < 0) {
            return invalid(from.string() + ": read error: " + errno_text(errno));
        }
        if (r == 0) {
            break;
        }
        hash.update(buf.data(), size_t(r));
        if (!write_all(out.get(), buf.data(), size_t(r))) {
            return internal(to.string() + ": write error: " + errno_text(errno));
        }
        total += uint64_t(r);
    }
    if (::fsync(out.get()) != 0 || !out.close()) {
        return internal(to.string() + ": cannot flush to disk: " + errno_text(errno));
    }
    return std::pair{hash.hex_digest(), total};
}

result<std::string> read_small_file(const fs::path &p, uint64_t max) {
    fd_guard fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) {
        return invalid("cannot open " + p.string() + ": " + errno_text(errno));
    }
    std::string text;
    char        buf[4096];
    for (;;) {
        const ssize_t r = read_some(fd.get(), buf, sizeof buf);
        if (r < 0) {
            return invalid("cannot read " + p.string() + ": " + errno_text(errno));
        }
        if (r == 0) {
            return text;
        }
        text.append(buf, size_t(r));
        if (text.size() > max) {
            return invalid(p.string() + " is larger than the limit of " + std::to_string(max) + " bytes");
        }
    }
}

result<bool> write_file_synced(const fs::path &p, std::string_view text) {
    fd_guard fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (fd.get() < 0) {
        return internal("cannot create " + p.string() + ": " + errno_text(errno));
    }
    if (!write_all(fd.get(), text.data(), text.size()) || ::fsync(fd.get()) != 0 || !fd.close()) {
        return internal("cannot write " + p.string() + ": " + errno_text(errno));
    }
    return true;
}

std::string unique_suffix() {
    static std::atomic<uint64_t> counter{0};
    std::random_device           rd;
    char                         buf[64];
    std::snprintf(buf, sizeof buf, "%d-%llu-%08x", int(::getpid()), (unsigned long long)counter.fetch_add(1),
                  unsigned(rd()));
    return buf;
}

// A real directory (not a symlink) at `p`, created if missing.
std::optional<error> ensure_real_dir(const fs::path &p) {
    std::error_code ec;
    fs::create_directories(p, ec);
    if (ec) {
        return internal("cannot create " + p.string() + ": " + ec.message());
    }
    const auto st = fs::symlink_status(p, ec);
    if (ec || st.type() != fs::file_type::directory) {
        return invalid(p.string() + " is not a directory (a symlink?); the store's folders must be real directories");
    }
    return std::nullopt;
}

// Deletes a staging folder when it goes out of scope unless released.
class staging_guard {
  public:
    explicit staging_guard(fs::path p) : p_(std::move(p)) {}
    ~staging_guard() {
        if (!p_.empty()) {
            std::error_code ec;
            fs::remove_all(p_, ec);
        }
    }
    staging_guard(const staging_guard &)            = delete;
    staging_guard &operator=(const staging_guard &) = delete;
    void           release() { p_.clear(); }

  private:
    fs::path p_;
};

void remove_stale_staging(const fs::path &tmp) {
    std::error_code ec;
    const auto      now = fs::file_time_type::clock::now();
    for (fs::directory_iterator it(tmp, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string n = it->path().filename().string();
        if (n.rfind("import-", 0) != 0 && n.rfind("rm-", 0) != 0) {
            continue;
        }
        std::error_code e2;
        const auto      t = fs::last_write_time(it->path(), e2);
        if (!e2 && now - t > stale_staging_age) {
            fs::remove_all(it->path(), e2);
        }
    }
}

// Renames without replacing an existing target. false with errno EEXIST/ENOTEMPTY when taken.
bool rename_noreplace(const fs::path &from, const fs::path &to) {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
        return true;
    }
    if (errno != EINVAL && errno != ENOSYS) {
        return false;
    }
    // The file system cannot refuse to replace: a plain rename still refuses a non-empty folder.
    std::error_code ec;
    if (fs::exists(fs::symlink_status(to, ec))) {
        errno = EEXIST;
        return false;
    }
    return ::rename(from.c_str(), to.c_str()) == 0;
}

// ORG / REPO part of an hf:// reference.
std::optional<std::string> hf_part_problem(std::string_view part, std::string_view what) {
    if (part.empty() || part.size() > 96) {
        return std::string(what) + " must be 1 to 96 characters";
    }
    if (part == "." || part == "..") {
        return std::string(what) + " may not be '.' or '..'";
    }
    if (!std::all_of(part.begin(), part.end(), name_char)) {
        return std::string(what) + " " + quoted_for_message(part) +
               " may only contain letters, digits, '.', '_' and '-'";
    }
    return std::nullopt;
}

} // namespace

std::optional<error> validate_model_name(std::string_view name) {
    if (name.empty()) {
        return invalid("a model name may not be empty");
    }
    if (name.size() > max_model_name_length) {
        return invalid("model name " + quoted_for_message(name) + " is " + std::to_string(name.size()) +
                       " characters long, more than the limit of " + std::to_string(max_model_name_length));
    }
    if (name.front() == '/') {
        return invalid("model name " + quoted_for_message(name) + " may not start with '/' (a name is not a path)");
    }
    const auto parts = split(name, '/');
    for (std::string_view p : parts) {
        if (p == ".." || p == ".") {
            return invalid("model name " + quoted_for_message(name) + " may not contain '.' or '..' parts");
        }
    }
    if (parts.size() > 2) {
        return invalid("model name " + quoted_for_message(name) + " has more than two parts; use NAME or ORG/NAME");
    }
    for (std::string_view p : parts) {
        if (p.empty()) {
            return invalid("model name " + quoted_for_message(name) + " has an empty part");
        }
        if (!std::all_of(p.begin(), p.end(), name_char)) {
            return invalid("model name " + quoted_for_message(name) +
                           " may only contain letters, digits, '.', '_', '-' and one '/'");
        }
        // Only '.' and '..' as a whole part traverse (refused above); a leading '-' reads as a flag.
        if (p.front() == '-') {
            return invalid("model name " + quoted_for_message(name) +
                           ": a part may not start with '-' (it reads as an option)");
        }
    }
    if (ends_with_gguf(name)) {
        return invalid("model name " + quoted_for_message(name) +
                       " may not end in '.gguf' (that reads as a file name)");
    }
    return std::nullopt;
}

result<std::string> sha256_file(const fs::path &path) {
    std::error_code ec;
    const auto      size = fs::file_size(path, ec);
    if (ec) {
        return invalid(path.string() + ": cannot open: " + ec.message());
    }
    sha256_stream hash;
    if (auto e = hash.update_from_file(path, size)) {
        return *e;
    }
    return hash.hex_digest();
}

// --- sha256_stream --------------------------------------------------------------------------

sha256_stream::sha256_stream() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr) {
        throw std::bad_alloc();
    }
    reset();
}

sha256_stream::~sha256_stream() {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX *>(ctx_));
}

void sha256_stream::reset() {
    // Cannot fail for a built-in digest short of memory exhaustion, which the allocation above
    // already reports.
    EVP_DigestInit_ex(static_cast<EVP_MD_CTX *>(ctx_), EVP_sha256(), nullptr);
}

void sha256_stream::update(const void *data, size_t n) {
    EVP_DigestUpdate(static_cast<EVP_MD_CTX *>(ctx_), data, n);
}

std::optional<error> sha256_stream::update_from_file(const fs::path &path, uint64_t n) {
    fd_guard in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (in.get() < 0) {
        return invalid(path.string() + ": cannot open: " + errno_text(errno));
    }
    std::vector<uint8_t> buf(1 << 20);
    while (n > 0) {
        const ssize_t r = read_some(in.get(), buf.data(), size_t(std::min<uint64_t>(n, buf.size())));
        if (r < 0) {
            return invalid(path.string() + ": read error: " + errno_text(errno));
        }
        if (r == 0) {
            return invalid(path.string() + " is shorter than expected (" + std::to_string(n) + " bytes missing)");
        }
        update(buf.data(), size_t(r));
        n -= uint64_t(r);
    }
    return std::nullopt;
}

std::string sha256_stream::hex_digest() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned      n = 0;
    EVP_DigestFinal_ex(static_cast<EVP_MD_CTX *>(ctx_), digest, &n);
    return hex(digest, n);
}

bool looks_like_sha256(std::string_view s) {
    return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(uint8_t(c)) != 0; });
}

// --- model_store ----------------------------------------------------------------------------

model_store::model_store(const fs::path &root) {
    std::error_code ec;
    fs::path        abs = fs::absolute(root, ec);
    root_               = (ec ? root : abs).lexically_normal();
}

result<fs::path> model_store::default_root() {
    if (const char *c = std::getenv("INFERBOX_CACHE"); c && *c) {
        return fs::path(c);
    }
    if (const char *h = std::getenv("HOME"); h && *h) {
        return fs::path(h) / ".cache" / "inferbox";
    }
    return invalid("cannot find the model cache: neither INFERBOX_CACHE nor HOME is set");
}

result<fs::path> model_store::model_dir(std::string_view name) const {
    if (auto problem = validate_model_name(name)) {
        return *problem;
    }
    const std::string leaf   = dir_for_name(name);
    const fs::path    models = root_ / "models";
    auto              cm     = canonical_of(models);
    if (!cm) {
        return cm.err();
    }
    auto cd = canonical_of(models / leaf);
    if (!cd) {
        return cd.err();
    }
    if (cd->parent_path() != *cm || cd->filename() != leaf) {
        return invalid("model " + quoted_for_message(name) + " resolves to " + cd->string() + ", outside the store " +
                       cm->string() + " (a symlink?); refusing to use it");
    }
    return models / leaf;
}

result<model_entry> model_store::load_entry(const std::string &name, const fs::path &dir) const {
    model_entry e;
    e.name = name;
    e.dir  = dir;
    e.file = dir / model_file_name;

    std::error_code ec;
    const auto      dst = fs::symlink_status(dir, ec);
    if (ec || !fs::exists(dst)) {
        return not_found("model " + quoted_for_message(name) + " is not in the cache (" + root_.string() + ")");
    }
    if (dst.type() == fs::file_type::symlink) {
        e.problem = dir.string() + " is a symlink; the store does not follow symlinks";
        return e;
    }
    if (dst.type() != fs::file_type::directory) {
        e.problem = dir.string() + " is not a directory";
        return e;
    }
    auto cdir = canonical_of(dir);
    if (!cdir) {
        e.problem = cdir.err().message;
        return e;
    }
    for (std::string_view leaf : {model_file_name, manifest_file_name}) {
        const fs::path p  = dir / leaf;
        const auto     st = fs::symlink_status(p, ec);
        if (ec || !fs::exists(st)) {
            e.problem = std::string(leaf) + " is missing in " + dir.string();
            return e;
        }
        if (st.type() != fs::file_type::regular) {
            e.problem = p.string() + " is not a regular file (a symlink?); the store does not follow symlinks";
            return e;
        }
        auto cp = canonical_of(p);
        if (!cp || *cp != *cdir / leaf) {
            e.problem = p.string() + " resolves outside the store";
            return e;
        }
    }
    auto text = read_small_file(dir / manifest_file_name, max_manifest_bytes);
    if (!text) {
        e.problem = text.err().message;
        return e;
    }
    auto m = parse_manifest(*text);
    if (!m) {
        e.problem = (dir / manifest_file_name).string() + ": " + m.err().message;
        return e;
    }
    e.manifest = std::move(*m);
    if (e.manifest.name != name) {
        e.problem = "the manifest names " + quoted_for_message(e.manifest.name) + " but the folder is for " +
                    quoted_for_message(name);
        return e;
    }
    const uint64_t actual = fs::file_size(e.file, ec);
    if (ec) {
        e.problem = e.file.string() + ": " + ec.message();
    } else if (actual != e.manifest.size) {
        e.problem = e.file.string() + " has " + std::to_string(actual) + " bytes but the manifest records " +
                    std::to_string(e.manifest.size) + " (modified or truncated?)";
    }
    return e;
}

result<model_entry> model_store::find(std::string_view name) const {
    auto dir = model_dir(name);
    if (!dir) {
        return dir.err();
    }
    auto e = load_entry(std::string(name), *dir);
    if (!e) {
        return e;
    }
    if (!e->problem.empty()) {
        return invalid("model " + quoted_for_message(name) + " in the cache is broken: " + e->problem);
    }
    return e;
}

result<std::vector<model_entry>> model_store::list() const {
    std::vector<model_entry> out;
    const fs::path           models = root_ / "models";
    std::error_code          ec;
    if (!fs::exists(fs::symlink_status(models, ec))) {
        return out;
    }
    fs::directory_iterator it(models, ec);
    if (ec) {
        return internal("cannot list " + models.string() + ": " + ec.message());
    }
    for (fs::directory_iterator end; it != end; it.increment(ec)) {
        if (ec) {
            return internal("cannot list " + models.string() + ": " + ec.message());
        }
        const std::string name = name_for_dir(it->path().filename().string());
        if (validate_model_name(name)) {
            continue; // not something the store created
        }
        auto dir = model_dir(name);
        if (!dir) {
            model_entry e;
            e.name    = name;
            e.dir     = it->path();
            e.file    = it->path() / model_file_name;
            e.problem = dir.err().message;
            out.push_back(std::move(e));
            continue;
        }
        auto e = load_entry(name, *dir);
        if (e) {
            out.push_back(std::move(*e));
        } // not_found: removed while we listed
    }
    if (ec) {
        return internal("cannot list " + models.string() + ": " + ec.message());
    }
    std::sort(out.begin(), out.end(), [](const model_entry &a, const model_entry &b) { return a.name < b.name; });
    return out;
}

result<std::pair<fs::path, fs::path>> model_store::open_stage(std::string_view name) const {
    auto dir = model_dir(name);
    if (!dir) {
        return dir.err();
    }
    std::error_code ec;
    if (fs::exists(fs::symlink_status(*dir, ec))) {
        return invalid("model " + quoted_for_message(name) + " is already in the cache; remove it first (inferbox rm " +
                       std::string(name) + ")");
    }
    const fs::path models = root_ / "models";
    const fs::path tmp    = root_ / "tmp";
    for (const fs::path &p : {models, tmp}) {
        if (auto problem = ensure_real_dir(p)) {
            return *problem;
        }
    }
    remove_stale_staging(tmp);
    fs::path stage = tmp / ("import-" + unique_suffix());
    if (!fs::create_directory(stage, ec) || ec) {
        return internal("cannot create " + stage.string() + ": " + (ec ? ec.message() : "it exists"));
    }
    return std::pair{std::move(*dir), std::move(stage)};
}

result<model_entry> model_store::import(const fs::path &source, std::string name) const {
    if (name.empty()) {
        name = source.stem().string();
        if (auto problem = validate_model_name(name)) {
            return invalid("cannot use the file name " + quoted_for_message(name) + " as a model name (" +
                           problem->message + "); choose a name");
        }
    }
    if (auto problem = validate_model_name(name)) {
        return *problem;
    }
    // Validate the source first: a file that is not GGUF fails before anything is copied.
    if (auto info = read_gguf_file(source); !info) {
        return info.err();
    }
    auto staged = open_stage(name);
    if (!staged) {
        return staged.err();
    }
    const auto &[dir, stage] = *staged;
    staging_guard   guard(stage);
    std::error_code ec;
    auto            copied = copy_and_hash(source, stage / model_file_name);
    if (!copied) {
        return copied.err();
    }
    model_manifest m;
    m.name   = name;
    m.source = fs::absolute(source, ec).string();
    m.sha256 = copied->first;
    m.size   = copied->second;
    auto e   = commit_stage(stage, dir, m, source.string());
    if (e) {
        guard.release();
    }
    return e;
}

result<model_entry>
model_store::import_generated(const std::string &name, const std::string &source,
                              const std::function<std::optional<error>(const fs::path &)> &write) const {
    if (auto problem = validate_model_name(name)) {
        return *problem;
    }
    auto staged = open_stage(name);
    if (!staged) {
        return staged.err();
    }
    const auto &[dir, stage] = *staged;
    staging_guard  guard(stage);
    const fs::path file = stage / model_file_name;
    if (auto failed = write(file)) {
        return *failed;
    }
    // The writer's bytes reach the disk before the model can become visible.
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
        const int e = errno;
        if (fd >= 0) {
            ::close(fd);
        }
        return internal("cannot flush " + file.string() + " to disk: " + errno_text(e));
    }
    ::close(fd);
    auto hash = sha256_file(file);
    if (!hash) {
        return hash.err();
    }
    std::error_code ec;
    const auto      size = fs::file_size(file, ec);
    if (ec) {
        return internal("cannot read " + file.string() + ": " + ec.message());
    }
    model_manifest m;
    m.name   = name;
    m.source = source;
    m.sha256 = *hash;
    m.size   = size;
    auto e   = commit_stage(stage, dir, m, source);
    if (e) {
        guard.release();
    }
    return e;
}

result<model_entry> model_store::commit_stage(const fs::path &stage, const fs::path &dir, const model_manifest &meta,
                                              const std::string &shown_source) const {
    // Validate what will be served, not what was there a moment ago.
    auto info = read_gguf_file(stage / model_file_name, shown_source);
    if (!info) {
        return info.err();
    }
    model_manifest m = meta;
    m.imported_at    = now_utc();
    if (auto w = write_file_synced(stage / manifest_file_name, manifest_text(m)); !w) {
        return w.err();
    }
    if (!fsync_dir(stage)) {
        return internal("cannot flush " + stage.string() + " to disk: " + errno_text(errno));
    }
    if (!rename_noreplace(stage, dir)) {
        const int e = errno;
        if (e == EEXIST || e == ENOTEMPTY) {
            return invalid("model " + quoted_for_message(m.name) +
                           " is already in the cache; remove it first (inferbox rm " + m.name + ")");
        }
        return internal("cannot move " + stage.string() + " to " + dir.string() + ": " + errno_text(e));
    }
    fsync_dir(root_ / "models"); // best effort: the model is complete either way
    return find(m.name);
}

result<fs::path> model_store::downloads_dir() const {
    const fs::path d = root_ / "downloads";
    if (auto problem = ensure_real_dir(d)) {
        return *problem;
    }
    return d;
}

result<model_entry> model_store::adopt(const fs::path &file, const std::string &name, const std::string &source,
                                       const std::string &sha256, uint64_t size) const {
    // Whatever happens, `file` does not survive: it becomes the model or it is deleted.
    struct file_guard {
        const fs::path &p;
        ~file_guard() {
            std::error_code e;
            fs::remove(p, e);
        }
    } drop{file};
    auto staged = open_stage(name);
    if (!staged) {
        return staged.err();
    }
    const auto &[dir, stage] = *staged;
    staging_guard guard(stage);
    if (::rename(file.c_str(), (stage / model_file_name).c_str()) != 0) {
        return internal("cannot move " + file.string() + " into " + stage.string() + ": " + errno_text(errno));
    }
    model_manifest m;
    m.name   = name;
    m.source = source;
    m.sha256 = sha256;
    m.size   = size;
    auto e   = commit_stage(stage, dir, m, source);
    if (e) {
        guard.release();
    }
    return e;
}

result<model_entry> model_store::remove(std::string_view name) const {
    auto dir = model_dir(name);
    if (!dir) {
        return dir.err();
    }
    auto e = load_entry(std::string(name), *dir);
    if (!e) {
        return e;
    }
    std::error_code ec;
    if (fs::symlink_status(*dir, ec).type() != fs::file_type::directory) {
        return invalid("refusing to remove " + dir->string() + ": " + e->problem);
    }
    const fs::path tmp = root_ / "tmp";
    if (auto problem = ensure_real_dir(tmp)) {
        return *problem;
    }
    // Retire the folder in one rename, so no reader sees it half deleted, then delete it.
    // remove_all deletes symlinks inside it without following them.
    const fs::path retired = tmp / ("rm-" + unique_suffix());
    if (::rename(dir->c_str(), retired.c_str()) != 0) {
        const int err = errno;
        if (err == ENOENT) {
            return not_found("model " + quoted_for_message(name) + " is not in the cache (" + root_.string() + ")");
        }
        return internal("cannot remove " + dir->string() + ": " + errno_text(err));
    }
    fs::remove_all(retired, ec);
    if (ec) {
        return internal("removed " + quoted_for_message(name) + " from the cache but could not delete " +
                        retired.string() + ": " + ec.message());
    }
    return e;
}

// --- references -----------------------------------------------------------------------------

result<model_ref> parse_model_ref(std::string_view text) {
    constexpr size_t max_ref = 4096;
    if (text.empty()) {
        return invalid("the model reference is empty");
    }
    if (text.size() > max_ref) {
        return invalid("the model reference is " + std::to_string(text.size()) +
                       " characters long, more than the limit of " + std::to_string(max_ref));
    }
    for (char c : text) {
        if (uint8_t(c) < 0x20 || c == 0x7f) {
            return invalid("the model reference " + quoted_for_message(text) + " contains control characters");
        }
    }
    model_ref ref;
    ref.text = std::string(text);

    if (text.starts_with("hf://")) {
        std::string_view rest = text.substr(5);
        std::string_view rev;
        if (const size_t at = rest.find('@'); at != std::string_view::npos) {
            rev  = rest.substr(at + 1);
            rest = rest.substr(0, at);
            if (rev.empty() || rev.size() > 255) {
                return invalid(quoted_for_message(text) + ": the revision after '@' must be 1 to 255 characters");
            }
            for (char c : rev) {
                if (!name_char(c) && c != '/') {
                    return invalid(quoted_for_message(text) +
                                   ": the revision may only contain letters, digits, '.', '_', '-', '/'");
                }
            }
            for (std::string_view p : split(rev, '/')) {
                if (p.empty() || p == "." || p == "..") {
                    return invalid(quoted_for_message(text) +
                                   ": the revision may not contain empty, '.' or '..' parts");
                }
            }
        }
        const auto parts = split(rest, '/');
        if (parts.size() < 3) {
            return invalid(quoted_for_message(text) + " is not hf://ORG/REPO/FILE.gguf[@REVISION]");
        }
        if (auto p = hf_part_problem(parts[0], "the organisation")) {
            return invalid(quoted_for_message(text) + ": " + *p);
        }
        if (auto p = hf_part_problem(parts[1], "the repository")) {
            return invalid(quoted_for_message(text) + ": " + *p);
        }
        std::string file;
        for (size_t i = 2; i < parts.size(); ++i) {
            const std::string_view p = parts[i];
            if (p.empty() || p == "." || p == ".." || p.size() > 255) {
                return invalid(quoted_for_message(text) + ": the file path may not contain empty, '.' or '..' parts");
            }
            if (!std::all_of(p.begin(), p.end(), [](char c) { return name_char(c) || c == '+'; })) {
                return invalid(quoted_for_message(text) +
                               ": the file path may only contain letters, digits, '.', '_', '-', '+'");
            }
            file += (i > 2 ? "/" : "") + std::string(p);
        }
        if (!ends_with_gguf(file)) {
            return invalid(quoted_for_message(text) + ": the file must be a .gguf file");
        }
        ref.kind     = model_ref_kind::hugging_face;
        ref.org      = std::string(parts[0]);
        ref.repo     = std::string(parts[1]);
        ref.file     = std::move(file);
        ref.revision = std::string(rev);
        return ref;
    }

    if (text.starts_with("https://") || text.starts_with("http://")) {
        const std::string_view rest = text.substr(text.find("://") + 3);
        const std::string_view host = rest.substr(0, rest.find_first_of("/?#"));
        if (host.empty()) {
            return invalid(quoted_for_message(text) + ": the URL has no host");
        }
        if (text.find(' ') != std::string_view::npos) {
            return invalid(quoted_for_message(text) + ": the URL contains a space (write it as %20)");
        }
        ref.kind = model_ref_kind::url;
        ref.url  = std::string(text);
        return ref;
    }

    if (const size_t sep = text.find("://");
        sep != std::string_view::npos && sep > 0 && std::all_of(text.begin(), text.begin() + long(sep), [](char c) {
            return alnum(c) || c == '+' || c == '.' || c == '-';
        })) {
        return invalid(quoted_for_message(text) + ": the scheme " + quoted_for_message(text.substr(0, sep)) +
                       " is not supported; use hf://, https:// or http://");
    }

    const fs::path  path(text);
    std::error_code ec;
    const auto      st    = fs::status(path, ec);
    const bool looks_path = text.starts_with("/") || text.starts_with("./") || text.starts_with("../") || text == "." ||
                            text == ".." || ends_with_gguf(text);
    if (looks_path || (text.find('/') != std::string_view::npos && fs::is_regular_file(st))) {
        if (!fs::exists(st)) {
            return error{error_kind::not_found, quoted_for_message(text) + ": no such file", {}, {}};
        }
        if (fs::is_directory(st)) {
            return invalid(quoted_for_message(text) + " is a directory, not a GGUF file");
        }
        ref.kind = model_ref_kind::local_path;
        ref.path = path;
        return ref;
    }

    if (auto problem = validate_model_name(text)) {
        return invalid(quoted_for_message(text) + " is neither a model name nor an existing file (" + problem->message +
                       "); a reference is NAME, ORG/NAME, a path to a .gguf file, hf://ORG/REPO/FILE.gguf[@REVISION] "
                       "or an http(s) URL");
    }
    ref.kind = model_ref_kind::cached_name;
    ref.name = std::string(text);
    return ref;
}

} // namespace inferbox
