#include "retrieval/hnsw_index.h"

// hnswlib defines functions in its headers without `inline`: this is the one translation unit
// that includes it (see hnsw_index.h).
//
// hnswlib 0.6.2 prefetches the neighbour after the last one (`_mm_prefetch(... *(datal + j + 1))`),
// which reads 4 bytes past the end of a full upper-layer neighbour list: a heap overflow ASan
// reports on ordinary inserts (fixed upstream in 0.7). The prefetch itself is only a hint; its
// argument is the out-of-bounds read. Defining it away before hnswlib's headers see it removes the
// read (and the hint) and keeps the SIMD distances; the intrinsics header comes first so that its
// own definition is already in place.
#if defined(__SSE__)
#include <x86intrin.h>
#ifdef _mm_prefetch // a macro in clang's header, and in gcc's without optimization
#undef _mm_prefetch
#endif
#define _mm_prefetch(address, hint) ((void)0) // NOLINT(bugprone-reserved-identifier)
#endif
#include <hnswlib/hnswlib.h>
#if defined(__SSE__)
#undef _mm_prefetch
#endif
#include <openssl/evp.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

namespace inferbox::retrieval {

namespace {

using hnsw = hnswlib::HierarchicalNSW<float>;

constexpr size_t max_dimension   = 65536;
constexpr size_t max_m           = 256;
constexpr size_t max_ef          = 100000;
constexpr int    max_level       = 64;   // levels are ~log_m(n): 64 is far beyond any real index
constexpr size_t initial_room    = 1024; // an empty index's capacity when the caller asks for less
constexpr size_t read_block      = 1 << 20;
constexpr size_t header_bytes    = 96; // hnswlib 0.6.2's saveIndex header, field by field below
constexpr size_t label_bytes     = sizeof(hnswlib::labeltype);
constexpr size_t link_id_bytes   = sizeof(hnswlib::tableint);
constexpr size_t link_size_bytes = sizeof(hnswlib::linklistsizeint);

error file_error(const std::filesystem::path &file, const std::string &what) {
    return error{error_kind::internal, "the vector index file " + file.string() + " " + what, "", "index_corrupt"};
}

std::string hex(const unsigned char *p, size_t n) {
    static const char *digits = "0123456789abcdef";
    std::string        out;
    for (size_t i = 0; i < n; ++i) {
        out += digits[p[i] >> 4];
        out += digits[p[i] & 15];
    }
    return out;
}

// Reads a file front to back, hashing every byte it reads, so one pass both checks the structure
// and computes the SHA-256.
class hashing_reader {
  public:
    explicit hashing_reader(const std::filesystem::path &file) : in_(file, std::ios::binary), ctx_(EVP_MD_CTX_new()) {
        std::error_code ec;
        size_ = std::filesystem::file_size(file, ec);
        ok_   = !ec && in_.is_open() && ctx_ != nullptr && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1;
    }
    ~hashing_reader() { EVP_MD_CTX_free(ctx_); }
    hashing_reader(const hashing_reader &)            = delete;
    hashing_reader &operator=(const hashing_reader &) = delete;

    bool      ok() const { return ok_; }
    uintmax_t size() const { return size_; }
    // Reads exactly n bytes; false at the end of the file or on an error.
    bool read(void *out, size_t n) {
        if (!ok_) {
            return false;
        }
        in_.read(static_cast<char *>(out), static_cast<std::streamsize>(n));
        if (static_cast<size_t>(in_.gcount()) != n) {
            ok_ = false;
            return false;
        }
        EVP_DigestUpdate(ctx_, out, n);
        return true;
    }
    template <typename T> bool pod(T &v) { return read(&v, sizeof v); }
    // Whether every byte has been read.
    bool at_end() { return ok_ && in_.peek() == std::char_traits<char>::eof(); }
    // Reads the rest of the file (hashing it) and returns the digest.
    std::string finish() {
        std::vector<char> buf(read_block);
        while (ok_ && in_) {
            in_.read(buf.data(), static_cast<std::streamsize>(buf.size()));
            EVP_DigestUpdate(ctx_, buf.data(), static_cast<size_t>(in_.gcount()));
        }
        std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
        unsigned int                               len = 0;
        EVP_DigestFinal_ex(ctx_, md.data(), &len);
        return hex(md.data(), len);
    }

  private:
    std::ifstream in_;
    EVP_MD_CTX   *ctx_;
    uintmax_t     size_ = 0;
    bool          ok_   = false;
};

// What a file written by save() for this dimension and m must hold in its header.
struct expected_layout {
    size_t dimension = 0, m = 0, elements = 0;
    size_t links0() const { return 2 * m * link_id_bytes + link_size_bytes; }
    size_t links() const { return m * link_id_bytes + link_size_bytes; }
    size_t per_element() const { return links0() + dimension * sizeof(float) + label_bytes; }
};

struct file_header {
    size_t offset_level0 = 0, max_elements = 0, count = 0, per_element = 0, label_offset = 0, data_offset = 0;
    int    max_level        = 0;
    hnswlib::tableint entry = 0;
    size_t            max_m = 0, max_m0 = 0, m = 0;
    double            mult            = 0;
    size_t            ef_construction = 0;
};

std::optional<std::string> read_header(hashing_reader &r, const expected_layout &want, file_header &h) {
    const bool read = r.pod(h.offset_level0) && r.pod(h.max_elements) && r.pod(h.count) && r.pod(h.per_element) &&
                      r.pod(h.label_offset) && r.pod(h.data_offset) && r.pod(h.max_level) && r.pod(h.entry) &&
                      r.pod(h.max_m) && r.pod(h.max_m0) && r.pod(h.m) && r.pod(h.mult) && r.pod(h.ef_construction);
    if (!read) {
        return "is shorter than its header (" + std::to_string(header_bytes) + " bytes)";
    }
    if (h.offset_level0 != 0 || h.per_element != want.per_element() || h.data_offset != want.links0() ||
        h.label_offset != want.links0() + want.dimension * sizeof(float) || h.m != want.m || h.max_m != want.m ||
        h.max_m0 != 2 * want.m) {
        return "was not written for " + std::to_string(want.dimension) +
               "-dimensional vectors with m=" + std::to_string(want.m);
    }
    if (h.count != want.elements) {
        return "holds " + std::to_string(h.count) + " vectors; the metadata records " + std::to_string(want.elements);
    }
    if (h.count > (r.size() - header_bytes) / want.per_element()) { // before anything is sized by the count
        return "is too short for the " + std::to_string(h.count) + " vectors it claims";
    }
    if (!std::isfinite(h.mult) || h.mult <= 0 || h.ef_construction == 0 || h.ef_construction > max_ef) {
        return "has invalid construction parameters";
    }
    if (h.count > 0 && (h.entry >= h.count || h.max_level < 0 || h.max_level > max_level)) {
        return "has an invalid entry point";
    }
    return std::nullopt;
}

// A neighbour list: its count (the low 16 bits; hnswlib keeps the deleted mark in byte 2) within
// `cap`, and each id below `count`.
bool list_ok(const unsigned char *list, size_t cap, size_t count) {
    uint16_t n = 0;
    std::memcpy(&n, list, sizeof n);
    if (n > cap) {
        return false;
    }
    for (size_t j = 0; j < n; ++j) {
        hnswlib::tableint id = 0;
        std::memcpy(&id, list + link_size_bytes + j * link_id_bytes, sizeof id);
        if (id >= count) {
            return false;
        }
    }
    return true;
}

// Walks the whole file: the header, each element's bottom-layer list, label and vector, then each
// element's upper layers (a neighbour on layer L must itself reach layer L, and the entry point
// the top layer: hnswlib follows them without checking). Leaves the reader at the end.
std::optional<std::string> check_structure(hashing_reader &r, const expected_layout &want) {
    file_header h;
    if (auto why = read_header(r, want, h)) {
        return why;
    }
    std::vector<unsigned char> element(want.per_element());
    for (size_t i = 0; i < h.count; ++i) {
        if (!r.read(element.data(), element.size())) {
            return "is truncated in its vectors";
        }
        if (!list_ok(element.data(), 2 * want.m, h.count)) {
            return "has an invalid neighbour list at element " + std::to_string(i);
        }
    }
    std::vector<int>                        levels(h.count, 0);
    std::vector<std::vector<unsigned char>> upper(h.count);
    for (size_t i = 0; i < h.count; ++i) {
        unsigned int size = 0;
        if (!r.pod(size)) {
            return "is truncated in its upper layers";
        }
        if (size % want.links() != 0 || size / want.links() > static_cast<size_t>(h.max_level)) {
            return "has an invalid upper-layer size at element " + std::to_string(i);
        }
        levels[i] = static_cast<int>(size / want.links());
        upper[i].resize(size);
        if (size > 0 && !r.read(upper[i].data(), size)) {
            return "is truncated in its upper layers";
        }
    }
    if (!r.at_end()) {
        return "has bytes after its last element";
    }
    if (h.count > 0 && levels[h.entry] != h.max_level) {
        return "has an entry point below the top layer";
    }
    for (size_t i = 0; i < h.count; ++i) {
        for (int level = 1; level <= levels[i]; ++level) {
            const unsigned char *list = upper[i].data() + static_cast<size_t>(level - 1) * want.links();
            if (!list_ok(list, want.m, h.count)) {
                return "has an invalid upper-layer list at element " + std::to_string(i);
            }
            uint16_t n = 0;
            std::memcpy(&n, list, sizeof n);
            for (size_t j = 0; j < n; ++j) {
                hnswlib::tableint id = 0;
                std::memcpy(&id, list + link_size_bytes + j * link_id_bytes, sizeof id);
                if (levels[id] < level) {
                    return "links element " + std::to_string(i) + " to one below its layer";
                }
            }
        }
    }
    return std::nullopt;
}

std::optional<error> check_params(size_t dimension, const hnsw_params &p) {
    if (dimension < 1 || dimension > max_dimension) {
        return error::invalid("the vector dimension must be between 1 and " + std::to_string(max_dimension) +
                              "; it is " + std::to_string(dimension));
    }
    if (p.m < 2 || p.m > max_m || p.ef_construction < 1 || p.ef_construction > max_ef || p.ef_search < 1 ||
        p.ef_search > max_ef) {
        return error::invalid("hnsw parameters out of range (m 2.." + std::to_string(max_m) + ", ef 1.." +
                              std::to_string(max_ef) + ")");
    }
    return std::nullopt;
}

bool fsync_path(const std::filesystem::path &p, bool directory) {
    const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) {
        return false;
    }
    const bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
}

} // namespace

// The space must outlive the graph, which keeps a pointer to its distance function's parameter:
// members are destroyed in reverse order.
struct hnsw_index::impl {
    hnswlib::InnerProductSpace space;
    std::unique_ptr<hnsw>      graph;
    hnsw_params                params;
    explicit impl(size_t dimension, const hnsw_params &p) : space(dimension), params(p) {}
};

bool normalize(std::vector<float> &v) {
    double sum = 0;
    for (const float x : v) {
        if (!std::isfinite(x)) {
            return false;
        }
        sum += static_cast<double>(x) * x;
    }
    if (!(sum > 0) || !std::isfinite(sum)) {
        return false;
    }
    const double inv = 1.0 / std::sqrt(sum);
    for (float &x : v) {
        x = static_cast<float>(x * inv);
    }
    return true;
}

float dot_product(const float *a, const float *b, size_t n) {
    std::array<float, 8> sums{};
    size_t               i = 0;
    for (; i + 8 <= n; i += 8) {
        for (size_t j = 0; j < 8; ++j) {
            sums[j] += a[i + j] * b[i + j];
        }
    }
    float dot = 0;
    for (; i < n; ++i) {
        dot += a[i] * b[i];
    }
    for (const float s : sums) {
        dot += s;
    }
    return dot;
}

hnsw_index::hnsw_index(size_t dimension, std::unique_ptr<impl> impl) : dimension_(dimension), impl_(std::move(impl)) {}
hnsw_index::~hnsw_index() = default;

result<std::unique_ptr<hnsw_index>> hnsw_index::create(size_t dimension, const hnsw_params &params, size_t capacity) {
    if (auto err = check_params(dimension, params)) {
        return *err;
    }
    auto state = std::make_unique<impl>(dimension, params);
    try {
        state->graph =
            std::make_unique<hnsw>(&state->space, std::max(capacity, initial_room), params.m, params.ef_construction);
    } catch (const std::exception &e) {
        return error{error_kind::internal, std::string("cannot allocate the vector index: ") + e.what(), "", ""};
    }
    state->graph->setEf(params.ef_search);
    return std::unique_ptr<hnsw_index>(new hnsw_index(dimension, std::move(state)));
}

result<std::unique_ptr<hnsw_index>> hnsw_index::load(const std::filesystem::path &file, size_t dimension,
                                                     const hnsw_params &params, const std::string &expected_sha256,
                                                     size_t expected_elements) {
    if (auto err = check_params(dimension, params)) {
        return *err;
    }
    {
        hashing_reader reader(file);
        if (!reader.ok()) {
            return file_error(file, "cannot be opened");
        }
        const auto why    = check_structure(reader, expected_layout{dimension, params.m, expected_elements});
        const auto digest = reader.finish();
        if (digest != expected_sha256) {
            return file_error(file, "does not match its recorded checksum");
        }
        if (why) {
            return file_error(file, *why);
        }
    }
    auto state = std::make_unique<impl>(dimension, params);
    // hnswlib's loading constructor leaves num_deleted_ (and, if it throws, the pointers its
    // destructor frees) uninitialized: start from the empty-index constructor's state instead.
    state->graph          = std::make_unique<hnsw>(&state->space);
    auto &g               = *state->graph;
    g.num_deleted_        = 0;
    g.cur_element_count   = 0;
    g.data_level0_memory_ = nullptr;
    g.linkLists_          = nullptr;
    g.visited_list_pool_  = nullptr;
    try {
        g.loadIndex(file.string(), &state->space, std::max(expected_elements + expected_elements / 4, initial_room));
    } catch (const std::exception &e) {
        g.cur_element_count = 0; // its destructor walks that many link lists
        return file_error(file, std::string("cannot be read: ") + e.what());
    }
    g.setEf(params.ef_search);
    return std::unique_ptr<hnsw_index>(new hnsw_index(dimension, std::move(state)));
}

std::optional<error> hnsw_index::add(uint64_t label, const float *unit_vector) {
    auto &g = *impl_->graph;
    if (g.label_lookup_.count(label) != 0) {
        return error{error_kind::internal, "vector label " + std::to_string(label) + " is already in the index", "",
                     ""};
    }
    try {
        if (g.cur_element_count >= g.max_elements_) {
            g.resizeIndex(std::max(2 * g.max_elements_, initial_room));
        }
        g.addPoint(unit_vector, label);
    } catch (const std::exception &e) {
        return error{error_kind::internal, std::string("cannot add to the vector index: ") + e.what(), "", ""};
    }
    return std::nullopt;
}

bool hnsw_index::mark_deleted(uint64_t label) {
    auto      &g  = *impl_->graph;
    const auto it = g.label_lookup_.find(label);
    if (it == g.label_lookup_.end() || g.isMarkedDeleted(it->second)) {
        return false;
    }
    g.markDeletedInternal(it->second);
    return true;
}

void hnsw_index::set_ef_search(size_t ef) {
    impl_->graph->setEf(std::clamp<size_t>(ef, 1, max_ef));
}

std::vector<std::pair<uint64_t, float>> hnsw_index::search(const float *unit_query, size_t k) const {
    std::vector<std::pair<uint64_t, float>> out;
    if (k == 0) {
        return out;
    }
    auto found = impl_->graph->searchKnn(unit_query, k);
    out.resize(found.size());
    for (size_t i = out.size(); i-- > 0;) { // the queue pops the farthest first
        out[i] = {found.top().second, 1.0F - found.top().first};
        found.pop();
    }
    return out;
}

std::optional<float> hnsw_index::similarity(uint64_t label, const float *unit_query) const {
    const auto &g  = *impl_->graph;
    const auto  it = g.label_lookup_.find(label);
    if (it == g.label_lookup_.end() || g.isMarkedDeleted(it->second)) {
        return std::nullopt;
    }
    return dot_product(reinterpret_cast<const float *>(g.getDataByInternalId(it->second)), unit_query, dimension_);
}

bool hnsw_index::contains(uint64_t label) const {
    const auto &g  = *impl_->graph;
    const auto  it = g.label_lookup_.find(label);
    return it != g.label_lookup_.end() && !g.isMarkedDeleted(it->second);
}

size_t hnsw_index::elements() const {
    return impl_->graph->cur_element_count;
}

size_t hnsw_index::deleted() const {
    return impl_->graph->num_deleted_;
}

result<std::string> hnsw_index::save(const std::filesystem::path &file) const {
    const auto tmp = std::filesystem::path(file.string() + ".tmp");
    try {
        impl_->graph->saveIndex(tmp.string());
    } catch (const std::exception &e) {
        return error{error_kind::internal, "cannot write " + tmp.string() + ": " + e.what(), "", ""};
    }
    // saveIndex reports no write errors (a full disk leaves a short file): read it back.
    std::string digest;
    {
        hashing_reader reader(tmp);
        const auto     why = check_structure(reader, expected_layout{dimension_, impl_->params.m, elements()});
        digest             = reader.finish();
        if (why || !reader.ok()) {
            std::error_code ec;
            std::filesystem::remove(tmp, ec);
            return file_error(tmp, "was not written completely (" + why.value_or("read error") + ")");
        }
    }
    std::error_code ec;
    if (!fsync_path(tmp, false)) {
        return error{error_kind::internal, "cannot flush " + tmp.string() + " to disk", "", ""};
    }
    std::filesystem::rename(tmp, file, ec);
    if (ec) {
        return error{error_kind::internal, "cannot rename " + tmp.string() + ": " + ec.message(), "", ""};
    }
    fsync_path(file.parent_path().empty() ? std::filesystem::path(".") : file.parent_path(), true);
    return digest;
}

result<std::string> sha256_file(const std::filesystem::path &file) {
    hashing_reader reader(file);
    if (!reader.ok()) {
        return error{error_kind::internal, "cannot open " + file.string(), "", ""};
    }
    return reader.finish();
}

} // namespace inferbox::retrieval
