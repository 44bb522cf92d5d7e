#include "fetch/pull.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace inferbox {

namespace fs = std::filesystem;

namespace {

error failure(error_kind kind, std::string message) {
    return error{kind, std::move(message), {}, {}};
}

std::string env(const char *name) {
    const char *v = std::getenv(name);
    return v != nullptr ? std::string(v) : std::string();
}

bool truthy(const std::string &v) {
    std::string l(v);
    std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return l == "1" || l == "true" || l == "yes" || l == "on";
}

std::string first_line(const fs::path &p) {
    std::ifstream in(p);
    std::string   line;
    std::getline(in, line);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())) != 0) {
        line.pop_back();
    }
    return line;
}

// Percent-encodes everything but RFC 3986's unreserved characters (and '/' when `keep_slash`).
std::string percent_encode(std::string_view s, bool keep_slash) {
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string           out;
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
            out += ch;
        } else {
            out += '%';
            out += digits[c >> 4];
            out += digits[c & 15];
        }
    }
    return out;
}

// A file name made into a model-name part: other characters become '-', leading ones that
// cannot start a name are dropped.
std::string name_part(std::string_view s) {
    std::string out;
    for (char c : s) {
        const bool ok = std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
        out += ok ? c : '-';
    }
    const size_t start = out.find_first_not_of("._-");
    out                = start == std::string::npos ? std::string() : out.substr(start);
    if (out.size() > 120) {
        out.resize(120);
    }
    return out;
}

// What the manifest records as the model's source, and what a later pull compares.
std::string source_label(const model_ref &ref) {
    if (ref.kind == model_ref_kind::hugging_face) {
        return "hf://" + ref.org + "/" + ref.repo + "/" + ref.file + (ref.revision.empty() ? "" : "@" + ref.revision);
    }
    return ref.url;
}

// An exclusive advisory lock on a file, held until destruction (or process exit).
class file_lock {
  public:
    explicit file_lock(int fd) : fd_(fd) {}
    ~file_lock() {
        if (fd_ >= 0) {
            ::close(fd_); // releases the flock
        }
    }
    file_lock(const file_lock &)            = delete;
    file_lock &operator=(const file_lock &) = delete;

  private:
    int fd_;
};

// Finds `name` in the store: the entry when it came from `label`, nullopt when absent, an
// error when the name holds something else.
result<std::optional<model_entry>> cached(const model_store &store, const std::string &name, const std::string &label) {
    auto found = store.find(name);
    if (!found) {
        if (found.err().kind == error_kind::not_found) {
            return std::optional<model_entry>();
        }
        return found.err();
    }
    if (!found->problem.empty()) {
        return failure(error_kind::invalid_request, "model '" + name + "' in the cache is broken (" + found->problem +
                                                        "); remove it with inferbox rm " + name);
    }
    if (found->manifest.source != label) {
        return failure(error_kind::invalid_request,
                       "the cache already has a model named '" + name + "' from " + found->manifest.source +
                           ", not from " + label + "; choose another --name or remove it (inferbox rm " + name + ")");
    }
    return std::optional<model_entry>(std::move(*found));
}

} // namespace

void apply_pull_environment(pull_options &opts) {
    opts.offline = opts.offline || truthy(env("INFERBOX_OFFLINE"));
    if (opts.hf_endpoint.empty()) {
        opts.hf_endpoint = env("HF_ENDPOINT");
    }
    if (opts.hf_endpoint.empty()) {
        opts.hf_endpoint = "https://huggingface.co";
    }
    while (opts.hf_endpoint.size() > 1 && opts.hf_endpoint.back() == '/') {
        opts.hf_endpoint.pop_back();
    }
    if (opts.hf_token.empty()) {
        opts.hf_token = env("HF_TOKEN");
    }
    if (opts.hf_token.empty()) {
        // Where huggingface-cli login keeps it.
        fs::path file;
        if (const std::string home = env("HF_HOME"); !home.empty()) {
            file = fs::path(home) / "token";
        } else if (const std::string h = env("HOME"); !h.empty()) {
            file = fs::path(h) / ".cache" / "huggingface" / "token";
        }
        std::error_code ec;
        if (!file.empty() && fs::is_regular_file(file, ec)) {
            opts.hf_token = first_line(file);
        }
    }
}

std::string source_url(const model_ref &ref, const std::string &hf_endpoint) {
    if (ref.kind != model_ref_kind::hugging_face) {
        return ref.url;
    }
    // The revision is one path segment (a branch like "refs/pr/1" has its '/' encoded); the
    // file keeps its folders.
    return hf_endpoint + "/" + ref.org + "/" + ref.repo + "/resolve/" +
           percent_encode(ref.revision.empty() ? "main" : ref.revision, false) + "/" + percent_encode(ref.file, true);
}

result<std::string> default_model_name(const model_ref &ref) {
    std::string file;
    if (ref.kind == model_ref_kind::hugging_face) {
        file = ref.file;
    } else if (ref.kind == model_ref_kind::url) {
        file                = ref.url.substr(0, ref.url.find_first_of("?#"));
        const size_t scheme = file.find("://");
        if (scheme != std::string::npos && file.find('/', scheme + 3) == std::string::npos) {
            file.clear(); // no path: only a host
        }
    } else {
        return error::invalid("only hf:// and http(s):// references have a default cache name");
    }
    file                   = file.substr(file.find_last_of('/') + 1);
    std::string lower_file = file;
    std::transform(lower_file.begin(), lower_file.end(), lower_file.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    const bool        gguf = lower_file.size() >= 5 && lower_file.compare(lower_file.size() - 5, 5, ".gguf") == 0;
    const std::string stem = name_part(gguf ? file.substr(0, file.size() - 5) : fs::path(file).stem().string());
    if (stem.empty()) {
        return error::invalid("cannot derive a model name from " + ref.text + "; give one with --name");
    }
    std::string name = ref.kind == model_ref_kind::hugging_face ? name_part(ref.org) + "/" + stem : stem;
    if (auto problem = validate_model_name(name)) {
        return error::invalid("cannot derive a model name from " + ref.text + " (" + problem->message +
                              "); give one with --name");
    }
    return name;
}

namespace {

// The cache name: --name (validated), else the reference's default.
result<std::string> pull_name(const model_ref &ref, const pull_options &opts) {
    if (opts.name.empty()) {
        return default_model_name(ref);
    }
    if (auto problem = validate_model_name(opts.name)) {
        return *problem;
    }
    return opts.name;
}

// --sha256, lower-cased; empty when not given.
result<std::string> expected_sha256(const pull_options &opts) {
    if (!opts.expected_sha256.empty() && !looks_like_sha256(opts.expected_sha256)) {
        return error::invalid("--sha256 must be 64 hexadecimal digits, not '" + opts.expected_sha256 + "'");
    }
    std::string expected = opts.expected_sha256;
    std::transform(expected.begin(), expected.end(), expected.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    return expected;
}

// Sets out.entry and returns true when the cache already holds `name` from `label` (cached()).
result<bool> take_cached(const model_store &store, const std::string &name, const std::string &label,
                         pull_outcome &out) {
    auto have = cached(store, name, label);
    if (!have) {
        return have.err();
    }
    if (!*have) {
        return false;
    }
    out.entry = std::move(**have);
    return true;
}

// Takes the exclusive lock on `fd` (the file `lock`), waiting for another pull of `url` that holds
// it. Returns whether it waited: the other pull may have finished the job.
result<bool> lock_download(int fd, const fs::path &lock, const pull_options &opts, const std::string &url) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
        return false;
    }
    if (opts.on_notice) {
        opts.on_notice("another pull of " + url + " is running; waiting for it");
    }
    while (::flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            return failure(error_kind::internal, "cannot lock " + lock.string() + ": " + std::strerror(errno));
        }
    }
    return true;
}

// Downloads `url` into `part`; an unauthorized answer from Hugging Face says what to do about the
// token.
result<download_result> download_part(const model_ref &ref, const pull_options &opts, const std::string &url,
                                      const fs::path &part) {
    download_options d;
    d.url          = url;
    d.part_file    = part;
    d.max_bytes    = opts.max_bytes;
    d.max_attempts = opts.max_attempts;
    d.retry_delay  = opts.retry_delay;
    d.on_progress  = opts.on_progress;
    d.on_notice    = opts.on_notice;
    d.cancelled    = opts.cancelled;
    d.user_agent   = std::string("inferbox/") + INFERBOX_VERSION;
    // The Hugging Face token goes to the Hugging Face endpoint only.
    if (url.rfind(opts.hf_endpoint + "/", 0) == 0) {
        d.bearer_token = opts.hf_token;
    }
    auto got = download_file(d);
    if (!got) {
        error e = got.err();
        if (e.kind == error_kind::unauthorized && ref.kind == model_ref_kind::hugging_face) {
            e.message += d.bearer_token.empty() ? "; for a gated or private repository set HF_TOKEN"
                                                : "; check that HF_TOKEN has access to " + ref.org + "/" + ref.repo;
        }
        return e;
    }
    return got;
}

// Checks the download against the hash the source publishes and the one --sha256 gives (each
// when known), discarding `part` on a mismatch; sets out.verified when one matched.
std::optional<error> verify_download(const download_result &got, const std::string &expected, const fs::path &part,
                                     pull_outcome &out) {
    for (const auto &[want, what] : {std::pair{got.published_sha256, std::string("the source publishes")},
                                     std::pair{expected, std::string("--sha256 expects")}}) {
        if (!want.empty() && want != got.sha256) {
            std::error_code ec;
            fs::remove(part, ec);
            return failure(error_kind::invalid_request, "SHA-256 mismatch for " + out.url + ": " + what + " " + want +
                                                            ", the download has " + got.sha256 +
                                                            "; the file was discarded");
        }
        out.verified = out.verified || !want.empty();
    }
    return std::nullopt;
}

} // namespace

result<pull_outcome> pull_model(const model_store &store, const model_ref &ref, pull_options opts) {
    if (ref.kind != model_ref_kind::hugging_face && ref.kind != model_ref_kind::url) {
        return error::invalid("pull downloads hf://ORG/REPO/FILE.gguf or an http(s):// URL; '" + ref.text +
                              "' is neither (inferbox import adds a local file)");
    }
    apply_pull_environment(opts);
    pull_outcome out;
    out.url   = source_url(ref, opts.hf_endpoint);
    auto name = pull_name(ref, opts);
    if (!name) {
        return name.err();
    }
    auto expected = expected_sha256(opts);
    if (!expected) {
        return expected.err();
    }
    const std::string label = source_label(ref);

    auto have = take_cached(store, *name, label, out);
    if (!have) {
        return have.err();
    }
    if (*have) {
        return out;
    }
    if (opts.offline) {
        return failure(error_kind::unavailable, "offline (--offline or INFERBOX_OFFLINE=1): model '" + *name +
                                                    "' is not in the cache at " + store.root().string() +
                                                    " and would be downloaded from " + out.url +
                                                    "; pull it where the network is reachable and copy the cache, "
                                                    "or add a local copy with inferbox import FILE --name " +
                                                    *name);
    }

    auto dir = store.downloads_dir();
    if (!dir) {
        return dir.err();
    }
    sha256_stream key_hash;
    key_hash.update(out.url.data(), out.url.size());
    const std::string key  = key_hash.hex_digest().substr(0, 32);
    const fs::path    part = *dir / (key + ".part");
    const fs::path    lock = *dir / (key + ".lock");
    const int         fd   = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return failure(error_kind::internal, "cannot open " + lock.string() + ": " + std::strerror(errno));
    }
    file_lock held(fd);
    auto      waited = lock_download(fd, lock, opts, out.url);
    if (!waited) {
        return waited.err();
    }
    if (*waited) {
        have = take_cached(store, *name, label, out);
        if (!have) {
            return have.err();
        }
        if (*have) {
            return out;
        }
    }

    auto got = download_part(ref, opts, out.url, part);
    if (!got) {
        return got.err();
    }
    out.resumed_from = got->resumed_from;
    if (auto e = verify_download(*got, *expected, part, out)) {
        return *e;
    }
    auto entry = store.adopt(part, *name, label, got->sha256, got->size);
    if (!entry) {
        error e   = entry.err();
        e.message = "the file downloaded from " + out.url + " was not added: " + e.message;
        return e;
    }
    out.entry      = std::move(*entry);
    out.downloaded = true;
    return out;
}

result<model_entry> find_pulled(const model_store &store, const model_ref &ref, const std::string &name) {
    pull_options opts;
    opts.offline = true;
    opts.name    = name;
    auto got     = pull_model(store, ref, opts);
    if (!got) {
        if (got.err().kind == error_kind::unavailable) {
            return failure(error_kind::not_found, "'" + ref.text + "' is not in the cache at " + store.root().string() +
                                                      "; run inferbox pull " + ref.text + " first");
        }
        return got.err();
    }
    return got->entry;
}

result<resolved_model> resolve_model(std::string_view text, pull_options opts) {
    resolved_model out;
    out.source = std::string(text);
    auto ref   = parse_model_ref(text);
    if (!ref || ref->kind == model_ref_kind::local_path) {
        // Paths (even missing ones) go to the GGUF reader, whose errors name the file; a bad
        // hf:// or URL reference is reported as such.
        if (!ref && text.find("://") != std::string_view::npos) {
            return ref.err();
        }
        out.file = fs::path(std::string(text));
        out.name = out.file.stem().string();
        return out;
    }
    auto root = model_store::default_root();
    if (!root) {
        return root.err();
    }
    const model_store store(*root);
    if (ref->kind == model_ref_kind::cached_name) {
        auto found = store.find(ref->name);
        if (!found) {
            error e = found.err();
            if (e.kind == error_kind::not_found) {
                e.message += "; add it with inferbox pull hf://ORG/REPO/FILE.gguf --name " + ref->name +
                             " or inferbox import FILE --name " + ref->name;
            }
            return e;
        }
        if (!found->problem.empty()) {
            return error::invalid("model '" + ref->name + "' in the cache is broken: " + found->problem);
        }
        out.file       = found->file;
        out.name       = found->name;
        out.from_store = true;
        return out;
    }
    auto pulled = pull_model(store, *ref, std::move(opts));
    if (!pulled) {
        return pulled.err();
    }
    out.file       = pulled->entry.file;
    out.name       = pulled->entry.name;
    out.from_store = true;
    return out;
}

} // namespace inferbox
