#include "store/gguf.h"

#include "common/utf8.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <bitset>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <new>
#include <unordered_set>

namespace inferbox {

namespace {

// --- ggml type table -----------------------------------------------------------------------------
// ggml's type_traits (ggml.c), ids from ggml.h. Removed ids (4, 5, 31-33, 36-38) have no entry.
struct type_row {
    uint32_t         id;
    std::string_view name;
    uint32_t         block_size;
    uint32_t         type_size;
};

constexpr type_row type_rows[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},      {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},      {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},   {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},   {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},        {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},   {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
    {40, "NVFP4", 64, 36},    {41, "Q1_0", 128, 18},    {42, "Q2_0", 64, 18},
};

// llama.cpp's llama_ftype (llama.h): general.file_type → the name llama.cpp prints.
struct file_type_row {
    uint32_t         id;
    std::string_view name;
};

constexpr file_type_row file_type_rows[] = {
    {0, "F32"},     {1, "F16"},     {2, "Q4_0"},       {3, "Q4_1"},    {7, "Q8_0"},     {8, "Q5_0"},
    {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"},    {12, "Q3_K_M"}, {13, "Q3_K_L"},  {14, "Q4_K_S"},
    {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"},    {18, "Q6_K"},   {19, "IQ2_XXS"}, {20, "IQ2_XS"},
    {21, "Q2_K_S"}, {22, "IQ3_XS"}, {23, "IQ3_XXS"},   {24, "IQ1_S"},  {25, "IQ4_NL"},  {26, "IQ3_S"},
    {27, "IQ3_M"},  {28, "IQ2_S"},  {29, "IQ2_M"},     {30, "IQ4_XS"}, {31, "IQ1_M"},   {32, "BF16"},
    {36, "TQ1_0"},  {37, "TQ2_0"},  {38, "MXFP4_MOE"}, {39, "NVFP4"},  {40, "Q1_0"},    {41, "Q2_0"},
};

// --- byte sources ---------------------------------------------------------------------------------

// Random access to the file's bytes. read_at is only called with offset + n <= size().
class byte_source {
  public:
    virtual ~byte_source()                                         = default;
    virtual uint64_t size() const                                  = 0;
    virtual bool     read_at(uint64_t offset, void *dst, size_t n) = 0;
};

class memory_source final : public byte_source {
  public:
    explicit memory_source(std::span<const uint8_t> bytes) : bytes_(bytes) {}
    uint64_t size() const override { return bytes_.size(); }
    bool     read_at(uint64_t offset, void *dst, size_t n) override {
        if (n > 0) {
                std::memcpy(dst, bytes_.data() + offset, n);
        }
        return true;
    }

  private:
    std::span<const uint8_t> bytes_;
};

// pread through a small window, so scanning a vocabulary costs a few system calls per 64 KiB.
class file_source final : public byte_source {
  public:
    file_source(int fd, uint64_t size) : fd_(fd), size_(size), window_(size_t{64} * 1024) {}
    ~file_source() override { ::close(fd_); }
    file_source(const file_source &)            = delete;
    file_source &operator=(const file_source &) = delete;

    uint64_t size() const override { return size_; }

    bool read_at(uint64_t offset, void *dst, size_t n) override {
        auto *out = static_cast<uint8_t *>(dst);
        while (n > 0) {
            if (offset < window_offset_ || offset >= window_offset_ + window_len_) {
                if (!fill(offset)) {
                    return false;
                }
            }
            const size_t at    = size_t(offset - window_offset_);
            const size_t chunk = std::min(n, window_len_ - at);
            std::memcpy(out, window_.data() + at, chunk);
            out += chunk;
            offset += chunk;
            n -= chunk;
        }
        return true;
    }

  private:
    bool fill(uint64_t offset) {
        const size_t want = size_t(std::min<uint64_t>(window_.size(), size_ - offset));
        size_t       got  = 0;
        while (got < want) {
            const ssize_t r = ::pread(fd_, window_.data() + got, want - got, off_t(offset + got));
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                return false; // I/O error, or the file shrank while we read it
            }
            got += size_t(r);
        }
        window_offset_ = offset;
        window_len_    = got;
        return want > 0;
    }

    int                  fd_;
    uint64_t             size_;
    std::vector<uint8_t> window_;
    uint64_t             window_offset_ = 0;
    size_t               window_len_    = 0;
};

// --- the parser -----------------------------------------------------------------------------------

struct parse_failure {
    std::string message;
};

uint64_t align_up(uint64_t v, uint64_t alignment) {
    const uint64_t rem = v % alignment;
    return rem == 0 ? v : v + (alignment - rem);
}

std::string printable_magic(const uint8_t *m) {
    std::string s;
    for (int i = 0; i < 4; ++i) {
        s += (m[i] >= 0x20 && m[i] < 0x7f) ? char(m[i]) : '?';
    }
    char hex[32];
    std::snprintf(hex, sizeof hex, " (%02x %02x %02x %02x)", m[0], m[1], m[2], m[3]);
    return "'" + s + "'" + hex;
}

std::string quote_name(std::string_view s) {
    gguf_value v{gguf_type::string, std::string(s)};
    return "'" + v.to_display(64) + "'";
}

// Smallest encoding of one array element of `type`: what `n` elements need at least.
uint64_t min_element_bytes(gguf_type type) {
    switch (type) {
    case gguf_type::uint8:
    case gguf_type::int8:
    case gguf_type::boolean:
        return 1;
    case gguf_type::uint16:
    case gguf_type::int16:
        return 2;
    case gguf_type::uint32:
    case gguf_type::int32:
    case gguf_type::float32:
        return 4;
    case gguf_type::uint64:
    case gguf_type::int64:
    case gguf_type::float64:
    case gguf_type::string: // the length prefix
        return 8;
    case gguf_type::array: // element type + length
        return 12;
    }
    return 1;
}

bool fixed_size(gguf_type type) {
    return type != gguf_type::string && type != gguf_type::array;
}

bool known_type(uint32_t id) {
    return id <= uint32_t(gguf_type::float64);
}

// --- tokenizer facts ------------------------------------------------------------------------------
// llama.cpp's vocabulary loader (src/llama-vocab.cpp) takes some damaged tokenizers without a
// word, and the damage then kills the process on a request instead of failing the load. The
// parser refuses those files; what it needs from the per-token arrays is gathered while they are
// read (a few bits per token), never by keeping the vocabulary.

constexpr std::string_view key_tokens     = "tokenizer.ggml.tokens";
constexpr std::string_view key_scores     = "tokenizer.ggml.scores";
constexpr std::string_view key_token_type = "tokenizer.ggml.token_type";
constexpr std::string_view key_merges     = "tokenizer.ggml.merges";
constexpr std::string_view key_model      = "tokenizer.ggml.model";

constexpr int32_t  token_type_byte = 6;          // LLAMA_TOKEN_TYPE_BYTE
constexpr uint64_t token_id_none   = 0xFFFFFFFF; // -1 as a u32: out of range, so llama.cpp ignores it

// '<0xHH>', two hex digits of either case: the spelling llama.cpp decodes a BYTE token's byte from.
bool spells_byte(std::string_view s) {
    return s.size() == 6 && s.starts_with("<0x") && s[5] == '>' && hex_value(s[3]) >= 0 && hex_value(s[4]) >= 0;
}

// The byte whose lookup in a SentencePiece vocabulary finds the token `s`, if any. llama.cpp
// looks byte b up as '<0xHH>' with upper-case digits, then as the one-byte text b; the latter
// never finds byte 0, which it passes as an empty C string.
std::optional<uint8_t> byte_found_by(std::string_view s) {
    if (s.size() == 1 && s[0] != '\0') {
        return uint8_t(s[0]);
    }
    const auto upper = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
    if (spells_byte(s) && upper(s[3]) && upper(s[4])) {
        return uint8_t(hex_value(s[3]) * 16 + hex_value(s[4]));
    }
    return std::nullopt;
}

class parser {
  public:
    parser(byte_source &src, std::string label) : src_(src), label_(std::move(label)), size_(src.size()) {}

    result<gguf_info> run() {
        try {
            parse();
            return std::move(info_);
        } catch (const parse_failure &f) {
            return error{error_kind::invalid_request, label_ + ": " + f.message, {}, "invalid_gguf"};
        } catch (const std::bad_alloc &) {
            return error{
                error_kind::internal, label_ + ": out of memory while reading the GGUF metadata", {}, "invalid_gguf"};
        }
    }

  private:
    [[noreturn]] void fail(std::string message) { throw parse_failure{std::move(message)}; }

    uint64_t remaining() const { return size_ - pos_; }

    void need(uint64_t n, const std::string &what) {
        if (n > remaining()) {
            fail("truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
                 " but the file has " + std::to_string(size_) + " bytes");
        }
    }

    void read_bytes(void *dst, size_t n, const std::string &what) {
        need(n, what);
        if (!src_.read_at(pos_, dst, n)) {
            fail("read error at offset " + std::to_string(pos_) + " (did the file change while it was read?)");
        }
        pos_ += n;
    }

    // Little-endian unsigned integer of N bytes.
    template <size_t N> uint64_t read_le(const std::string &what) {
        uint8_t b[N];
        read_bytes(b, N, what);
        uint64_t v = 0;
        for (size_t i = 0; i < N; ++i) {
            v |= uint64_t(b[i]) << (8 * i);
        }
        return v;
    }
    uint32_t read_u32(const std::string &what) { return uint32_t(read_le<4>(what)); }
    uint64_t read_u64(const std::string &what) { return read_le<8>(what); }

    void skip(uint64_t n, const std::string &what) {
        need(n, what);
        pos_ += n;
    }

    // The length prefix of a string of at most `max` bytes.
    uint64_t read_string_length(const std::string &what, uint64_t max) {
        const uint64_t len = read_u64("length of " + what);
        if (len > max) {
            fail(what + " is " + std::to_string(len) + " bytes long, more than the limit of " + std::to_string(max));
        }
        return len;
    }

    // A length-prefixed string of at most `max` bytes.
    std::string read_string(const std::string &what, uint64_t max) {
        const uint64_t len = read_string_length(what, max);
        need(len, what);
        std::string s(size_t(len), '\0');
        read_bytes(s.data(), size_t(len), what);
        return s;
    }

    void skip_string(const std::string &what, uint64_t max) { skip(read_string_length(what, max), what); }

    gguf_type read_type(const std::string &what) {
        const uint32_t id = read_u32(what);
        if (!known_type(id)) {
            fail(what + " is " + std::to_string(id) + ", not a GGUF value type (0 to 12)");
        }
        return gguf_type(id);
    }

    // Reads an array's element type and length and checks them against the bytes left.
    gguf_array read_array_header(const std::string &what) {
        gguf_array a;
        a.element_type = read_type("element type of " + what);
        a.length       = read_u64("length of " + what);
        if (a.length > gguf_limits::max_array_length) {
            fail(what + " has " + std::to_string(a.length) + " elements, more than the limit of " +
                 std::to_string(gguf_limits::max_array_length));
        }
        const uint64_t least = a.length * min_element_bytes(a.element_type); // ≤ 2^24 × 12: no overflow
        if (least > remaining()) {
            fail("truncated: " + what + " declares " + std::to_string(a.length) + " elements of type " +
                 std::string(gguf_type_name(a.element_type)) + ", which need at least " + std::to_string(least) +
                 " bytes at offset " + std::to_string(pos_) + " but the file has " + std::to_string(size_) + " bytes");
        }
        return a;
    }

    // Validates an array's elements without keeping them. Work is bounded by the file size:
    // every element consumes at least one byte.
    void skip_array_body(const gguf_array &a, const std::string &what, uint32_t depth) {
        if (fixed_size(a.element_type)) {
            skip(a.length * min_element_bytes(a.element_type), "elements of " + what);
            return;
        }
        if (a.element_type == gguf_type::string) {
            for (uint64_t i = 0; i < a.length; ++i) {
                skip_string("element " + std::to_string(i) + " of " + what, gguf_limits::max_string_bytes);
            }
            return;
        }
        if (depth + 1 >= gguf_limits::max_array_depth) {
            fail(what + " nests arrays deeper than the limit of " + std::to_string(gguf_limits::max_array_depth));
        }
        for (uint64_t i = 0; i < a.length; ++i) {
            const std::string inner = "element " + std::to_string(i) + " of " + what;
            skip_array_body(read_array_header(inner), inner, depth + 1);
        }
    }

    gguf_value read_value(gguf_type type, const std::string &what) {
        gguf_value v;
        v.type = type;
        switch (type) {
        case gguf_type::uint8:
            v.value = read_le<1>(what);
            break;
        case gguf_type::uint16:
            v.value = read_le<2>(what);
            break;
        case gguf_type::uint32:
            v.value = read_le<4>(what);
            break;
        case gguf_type::uint64:
            v.value = read_le<8>(what);
            break;
        case gguf_type::int8:
            v.value = int64_t(int8_t(uint8_t(read_le<1>(what))));
            break;
        case gguf_type::int16:
            v.value = int64_t(int16_t(uint16_t(read_le<2>(what))));
            break;
        case gguf_type::int32:
            v.value = int64_t(int32_t(uint32_t(read_le<4>(what))));
            break;
        case gguf_type::int64:
            v.value = int64_t(read_le<8>(what));
            break;
        case gguf_type::float32:
            v.value = double(std::bit_cast<float>(uint32_t(read_le<4>(what))));
            break;
        case gguf_type::float64:
            v.value = std::bit_cast<double>(read_le<8>(what));
            break;
        case gguf_type::boolean:
            v.value = read_le<1>(what) != 0;
            break;
        case gguf_type::string:
            v.value = read_string(what, gguf_limits::max_string_bytes);
            break;
        case gguf_type::array: {
            const gguf_array a = read_array_header(what);
            skip_array_body(a, what, 0);
            v.value = a;
            break;
        }
        }
        return v;
    }

    void read_metadata(uint64_t n_kv) {
        for (uint64_t i = 0; i < n_kv; ++i) {
            const std::string where = "metadata entry " + std::to_string(i);
            std::string       key   = read_string("key of " + where, gguf_limits::max_key_bytes);
            if (key.empty()) {
                fail("the key of " + where + " is empty");
            }
            if (info_.metadata.contains(key)) {
                fail("metadata key " + quote_name(key) + " appears twice");
            }
            const std::string what  = "metadata " + quote_name(key);
            const gguf_type   type  = read_type("type of " + what);
            gguf_value        value = read_metadata_value(key, type, what);
            info_.metadata.emplace(std::move(key), std::move(value));
        }
    }

    // A metadata value. The tokenizer's tokens and token types, when of the expected element
    // types, are scanned for the facts the tokenizer checks need.
    gguf_value read_metadata_value(std::string_view key, gguf_type type, const std::string &what) {
        if (type != gguf_type::array || (key != key_tokens && key != key_token_type)) {
            return read_value(type, what);
        }
        const gguf_array a = read_array_header(what);
        if (key == key_tokens && a.element_type == gguf_type::string) {
            scan_tokens(a, what);
        } else if (key == key_token_type && a.element_type == gguf_type::int32) {
            scan_token_types(a, what);
        } else {
            skip_array_body(a, what, 0); // check_tokenizer() names the wrong element type
        }
        return gguf_value{gguf_type::array, a};
    }

    // Every token's text is hashed (for the duplicate check); only strings of 1 or 6 bytes can
    // spell a byte.
    void scan_tokens(const gguf_array &a, const std::string &what) {
        tokens_.body    = pos_;
        tokens_.spelled = std::vector<bool>(size_t(a.length), false);
        tokens_.hashes.clear();
        tokens_.hashes.reserve(size_t(a.length));
        std::string text;
        for (uint64_t i = 0; i < a.length; ++i) {
            const std::string element = "element " + std::to_string(i) + " of " + what;
            const uint64_t    len     = read_string_length(element, gguf_limits::max_string_bytes);
            text.resize(size_t(len));
            read_bytes(text.data(), size_t(len), element);
            tokens_.hashes.emplace_back(text_hash(loaded_text(text, i)), uint32_t(i));
            if (len != 1 && len != 6) {
                continue;
            }
            tokens_.spelled[i] = spells_byte(text);
            if (const auto b = byte_found_by(text)) {
                tokens_.bytes_found.set(*b);
            }
        }
    }

    // The text llama.cpp's loader files token `index` under: an empty one is renamed.
    static std::string loaded_text(const std::string &text, uint64_t index) {
        return text.empty() ? "[EMPTY_" + std::to_string(index) + "]" : text;
    }

    static uint64_t text_hash(std::string_view s) {
        uint64_t h = 1469598103934665603ULL; // FNV-1a
        for (const unsigned char c : s) {
            h ^= c;
            h *= 1099511628211ULL;
        }
        return h;
    }

    // llama.cpp's loader maps each text to one id and asserts that no two tokens share one: a
    // vocabulary with a duplicate kills the process while loading. Equal hashes are confirmed by
    // reading both texts again.
    void check_duplicate_tokens() {
        auto &h = tokens_.hashes;
        std::sort(h.begin(), h.end());
        for (size_t k = 1; k < h.size(); ++k) {
            if (h[k].first != h[k - 1].first) {
                continue;
            }
            const uint64_t    a = std::min(h[k - 1].second, h[k].second), b = std::max(h[k - 1].second, h[k].second);
            const std::string ta = loaded_text(token_text(a), a), tb = loaded_text(token_text(b), b);
            if (ta == tb) {
                fail(std::string(key_tokens) + " has token " + std::to_string(a) + " and token " + std::to_string(b) +
                     " with the same text '" + utf8_sanitize(ta.substr(0, 64)) +
                     "': llama.cpp's vocabulary loader aborts on a duplicate token");
            }
        }
    }

    void scan_token_types(const gguf_array &a, const std::string &what) {
        const std::string elements = "elements of " + what;
        need(a.length * 4, elements);
        tokens_.typed_byte = std::vector<bool>(size_t(a.length), false);
        for (uint64_t i = 0; i < a.length; ++i) {
            tokens_.typed_byte[i] = int32_t(uint32_t(read_le<4>(elements))) == token_type_byte;
        }
    }

    void parse() {
        info_.file_size = size_;

        // Header: magic, version, n_tensors, n_kv.
        if (size_ < 4) {
            fail("not a GGUF file: it has " + std::to_string(size_) + " bytes, too few for the magic 'GGUF'");
        }
        uint8_t magic[4];
        read_bytes(magic, 4, "magic");
        if (std::memcmp(magic, "GGUF", 4) != 0) {
            fail("not a GGUF file: the magic is " + printable_magic(magic) + ", expected 'GGUF'");
        }
        const uint32_t version = read_u32("the header (version)");
        if (version != 0 && (version & 0xFFFFu) == 0) {
            fail("GGUF version " + std::to_string(version) +
                 " looks byte-swapped: big-endian GGUF files are not supported");
        }
        if (version == 1) {
            fail("GGUF version 1 is not supported (only versions 2 and 3); convert the model with a newer llama.cpp");
        }
        if (version != 2 && version != 3) {
            fail("GGUF version " + std::to_string(version) + " is not supported (only versions 2 and 3)");
        }
        info_.version = version;

        const uint64_t n_tensors = read_u64("the header (tensor count)");
        const uint64_t n_kv      = read_u64("the header (metadata count)");
        if (n_tensors > gguf_limits::max_tensors) {
            fail("the header declares " + std::to_string(n_tensors) + " tensors, more than the limit of " +
                 std::to_string(gguf_limits::max_tensors));
        }
        if (n_kv > gguf_limits::max_kv) {
            fail("the header declares " + std::to_string(n_kv) + " metadata entries, more than the limit of " +
                 std::to_string(gguf_limits::max_kv));
        }
        // Smallest metadata entry: key length + 1 key byte + type + 1 value byte.
        if (n_kv * 14 > remaining()) {
            fail("truncated: the header declares " + std::to_string(n_kv) + " metadata entries, which need at least " +
                 std::to_string(n_kv * 14) + " bytes at offset " + std::to_string(pos_) + " but the file has " +
                 std::to_string(size_) + " bytes");
        }

        read_metadata(n_kv);

        if (const gguf_value *a = info_.find("general.alignment")) {
            if (a->type != gguf_type::uint32) {
                fail("general.alignment has type " + std::string(gguf_type_name(a->type)) + ", expected u32");
            }
            const uint64_t v = *a->as_uint();
            if (v == 0 || (v & (v - 1)) != 0 || v > gguf_limits::max_alignment) {
                fail("general.alignment is " + std::to_string(v) + "; it must be a power of two from 1 to " +
                     std::to_string(gguf_limits::max_alignment));
            }
            info_.alignment = uint32_t(v);
        }

        // Tensor infos. Smallest: name length + n_dims + one dimension + type + offset.
        if (n_tensors * 32 > remaining()) {
            fail("truncated: the header declares " + std::to_string(n_tensors) +
                 " tensors, whose descriptions need at least " + std::to_string(n_tensors * 32) + " bytes at offset " +
                 std::to_string(pos_) + " but the file has " + std::to_string(size_) + " bytes");
        }
        info_.tensors.reserve(size_t(n_tensors));
        std::unordered_set<std::string> names;
        for (uint64_t i = 0; i < n_tensors; ++i) {
            read_tensor_info(i, names);
        }

        // Tensor data: in order, each at an aligned offset, inside the file.
        info_.data_offset = align_up(pos_, info_.alignment);
        if (n_tensors > 0 && info_.data_offset > size_) {
            fail("truncated: the tensor data section starts at byte " + std::to_string(info_.data_offset) +
                 " but the file has " + std::to_string(size_) + " bytes");
        }
        uint64_t expected = 0;
        for (const gguf_tensor_info &t : info_.tensors) {
            const std::string name = "tensor " + quote_name(t.name);
            if (t.offset % info_.alignment != 0) {
                fail(name + " has data offset " + std::to_string(t.offset) + ", not a multiple of the alignment " +
                     std::to_string(info_.alignment));
            }
            if (t.offset != expected) {
                fail(name + " has data offset " + std::to_string(t.offset) + ", expected " + std::to_string(expected) +
                     " (tensor data must follow in order, each padded to the alignment " +
                     std::to_string(info_.alignment) + ")");
            }
            // t.offset == expected ≤ the sum of earlier sizes, each checked against the file size.
            const uint64_t start = info_.data_offset + t.offset;
            if (start > size_ || t.n_bytes > size_ - start) {
                const uint64_t end = t.n_bytes > UINT64_MAX - start ? UINT64_MAX : start + t.n_bytes;
                fail("truncated: " + name + " data ends at byte " + std::to_string(end) + " but the file has " +
                     std::to_string(size_) + " bytes");
            }
            expected = align_up(t.offset + t.n_bytes, info_.alignment);
            info_.tensor_bytes += t.n_bytes;
            info_.n_params += t.n_elements;
        }

        check_tokenizer();
        summarize();
    }

    void read_tensor_info(uint64_t i, std::unordered_set<std::string> &names) {
        gguf_tensor_info t;
        t.name                 = read_string("name of tensor " + std::to_string(i), gguf_limits::max_name_bytes);
        const std::string name = "tensor " + quote_name(t.name);
        if (!names.insert(t.name).second) {
            fail(name + " appears twice");
        }
        t.n_dims = read_u32("dimension count of " + name);
        if (t.n_dims == 0 || t.n_dims > gguf_limits::max_dims) {
            fail(name + " has " + std::to_string(t.n_dims) + " dimensions; it must have 1 to " +
                 std::to_string(gguf_limits::max_dims));
        }
        bool     zero     = false;
        uint64_t product  = 1;
        bool     overflow = false;
        for (uint32_t d = 0; d < t.n_dims; ++d) {
            t.dims[d] = read_u64("dimension " + std::to_string(d) + " of " + name);
            if (t.dims[d] > uint64_t(INT64_MAX)) {
                fail(name + " dimension " + std::to_string(d) + " is " + std::to_string(t.dims[d]) +
                     ", more than the limit of " + std::to_string(INT64_MAX));
            }
            zero     = zero || t.dims[d] == 0;
            overflow = overflow || __builtin_mul_overflow(product, t.dims[d], &product);
        }
        if (!zero && (overflow || product >= uint64_t(INT64_MAX))) {
            std::string shape;
            for (uint32_t d = 0; d < t.n_dims; ++d) {
                shape += (d ? ", " : "") + std::to_string(t.dims[d]);
            }
            fail(name + " has shape (" + shape + "), whose element count overflows 64 bits");
        }
        t.n_elements = zero ? 0 : product;

        t.type            = read_u32("type of " + name);
        const auto traits = ggml_type_traits_of(t.type);
        if (!traits) {
            fail(name + " has unknown ggml type id " + std::to_string(t.type));
        }
        if (t.dims[0] % traits->block_size != 0) {
            fail(name + " of type " + std::string(traits->name) + " has " + std::to_string(t.dims[0]) +
                 " elements per row, not a multiple of the block size " + std::to_string(traits->block_size));
        }
        if (__builtin_mul_overflow(t.n_elements / traits->block_size, uint64_t(traits->type_size), &t.n_bytes)) {
            fail(name + " is larger than 2^64 bytes");
        }
        t.offset = read_u64("data offset of " + name);
        info_.tensors.push_back(std::move(t));
    }

    // --- tokenizer checks (the keys may come in any order, so they run after the metadata) ---
    // What llama.cpp's vocabulary loader (pinned in scripts/deps.env) would take and then die of,
    // or refuse itself with a less clear message.

    void check_tokenizer() {
        const gguf_array *tokens = token_array(key_tokens, {gguf_type::string});
        const gguf_array *scores = token_array(key_scores, {gguf_type::float32, gguf_type::int32});
        const gguf_array *types  = token_array(key_token_type, {gguf_type::int32});
        token_array(key_merges, {gguf_type::string});
        if (!tokens) {
            return; // llama.cpp refuses a model without one, unless it has no vocabulary at all
        }
        for (const auto &[key, a] : {std::pair{key_scores, scores}, std::pair{key_token_type, types}}) {
            if (a && a->length != tokens->length) {
                fail(std::string(key) + " has " + std::to_string(a->length) + " elements but " +
                     std::string(key_tokens) + " has " + std::to_string(tokens->length) +
                     "; there must be one per token");
            }
        }
        check_special_token_ids(tokens->length);
        check_duplicate_tokens();
        const gguf_value *m     = info_.find(key_model);
        const std::string model = m && m->as_string() ? *m->as_string() : std::string();
        check_byte_tokens(model);
    }

    // The array at `key`, whose elements must be of one of `types`; nullptr when `key` is absent.
    const gguf_array *token_array(std::string_view key, std::initializer_list<gguf_type> types) {
        const gguf_value *v = info_.find(key);
        if (!v) {
            return nullptr;
        }
        const gguf_array *a = v->as_array();
        if (a && std::find(types.begin(), types.end(), a->element_type) != types.end()) {
            return a;
        }
        std::string expected;
        for (const gguf_type t : types) {
            expected += (expected.empty() ? "" : " or ") + std::string(gguf_type_name(t));
        }
        const std::string got = a ? "is an array of " + std::string(gguf_type_name(a->element_type))
                                  : "has type " + std::string(gguf_type_name(v->type));
        fail(std::string(key) + " " + got + ", expected an array of " + expected);
    }

    // llama.cpp reads each special token id as a u32 (another type fails the load) and ignores
    // one out of range with a warning; a damaged id is refused here, -1 (as a u32) means none.
    void check_special_token_ids(uint64_t n_tokens) {
        for (const auto &[key, v] : info_.metadata) {
            if (!key.starts_with("tokenizer.ggml.") || !key.ends_with("_token_id")) {
                continue;
            }
            if (v.type != gguf_type::uint32) {
                fail(key + " has type " + std::string(gguf_type_name(v.type)) + ", expected u32");
            }
            const uint64_t id = *v.as_uint();
            if (id >= n_tokens && id != token_id_none) {
                fail(key + " is " + std::to_string(id) + ", not a token id: the vocabulary has " +
                     std::to_string(n_tokens) + " tokens (" + std::to_string(token_id_none) + " means none)");
            }
        }
    }

    void check_byte_tokens(const std::string &model) {
        // A BYTE token's byte is decoded from its spelling; in a WordPiece vocabulary llama.cpp
        // aborts instead (token_to_byte, while it loads). Both vectors are filled only when both
        // arrays have the right element types, and then they have the same length.
        if (tokens_.typed_byte.size() == tokens_.spelled.size()) {
            for (size_t i = 0; i < tokens_.typed_byte.size(); ++i) {
                if (!tokens_.typed_byte[i]) {
                    continue;
                }
                if (model == "bert") {
                    fail(std::string(key_token_type) + " element " + std::to_string(i) + " is BYTE (" +
                         std::to_string(token_type_byte) +
                         "), which a 'bert' (WordPiece) vocabulary cannot have: llama.cpp aborts decoding it");
                }
                if (!tokens_.spelled[i]) {
                    fail(std::string(key_tokens) + " element " + std::to_string(i) + " " + quote_name(token_text(i)) +
                         " has token type BYTE (" + std::to_string(token_type_byte) +
                         ") but is not spelled <0xHH> with two hex digits");
                }
            }
        }
        // llama.cpp's SentencePiece tokenizer falls back to a token per byte for text that no
        // token covers, and throws std::out_of_range (byte_to_token, from inside a request's
        // tokenization) for a byte it finds no token for.
        if (model == "llama") {
            for (unsigned b = 0; b < 256; ++b) {
                if (!tokens_.bytes_found[b]) {
                    char hex[8];
                    std::snprintf(hex, sizeof hex, "0x%02X", b);
                    fail(std::string(key_tokens) + " has no token for byte " + hex + " (no '<" + hex +
                         ">' and no one-byte token): llama.cpp's SentencePiece tokenizer (" + std::string(key_model) +
                         " 'llama') aborts on text that falls back to that byte");
                }
            }
        }
    }

    // The text of token `index`, read again (the scan kept only bits).
    std::string token_text(uint64_t index) {
        const uint64_t saved = pos_;
        pos_                 = tokens_.body;
        for (uint64_t i = 0; i < index; ++i) {
            skip_string("token " + std::to_string(i), gguf_limits::max_string_bytes);
        }
        std::string s = read_string("token " + std::to_string(index), gguf_limits::max_string_bytes);
        pos_          = saved;
        return s;
    }

    std::optional<uint64_t> uint_key(const std::string &key) const {
        const gguf_value *v = info_.find(key);
        return v ? v->as_uint() : std::nullopt;
    }

    void summarize() {
        if (const gguf_value *v = info_.find("general.architecture"); v && v->as_string()) {
            info_.architecture = *v->as_string();
        }
        if (const gguf_value *v = info_.find("general.name"); v && v->as_string()) {
            info_.name = *v->as_string();
        }
        if (!info_.architecture.empty()) {
            const std::string &a   = info_.architecture;
            info_.context_length   = uint_key(a + ".context_length");
            info_.embedding_length = uint_key(a + ".embedding_length");
            info_.block_count      = uint_key(a + ".block_count");
            info_.head_count       = uint_key(a + ".attention.head_count");
            info_.head_count_kv    = uint_key(a + ".attention.head_count_kv");
        }
        if (const gguf_value *v = info_.find("tokenizer.ggml.tokens"); v && v->as_array()) {
            info_.vocab_size = v->as_array()->length;
        }
        if (const gguf_value *v = info_.find("tokenizer.chat_template"); v && v->as_string()) {
            info_.has_chat_template = !v->as_string()->empty();
        }
        if (auto ft = uint_key("general.file_type")) {
            info_.quantization = std::string(llama_file_type_name(*ft));
        }
        if (info_.quantization.empty()) {
            // The type holding most elements among matrices (vectors stay F32 in quantized models).
            std::map<uint32_t, uint64_t> by_type;
            for (const auto &t : info_.tensors) {
                if (t.n_dims >= 2) {
                    by_type[t.type] += t.n_elements;
                }
            }
            if (by_type.empty()) {
                for (const auto &t : info_.tensors) {
                    by_type[t.type] += t.n_elements;
                }
            }
            const auto best = std::max_element(by_type.begin(), by_type.end(),
                                               [](const auto &a, const auto &b) { return a.second < b.second; });
            if (best != by_type.end()) {
                info_.quantization = std::string(ggml_type_traits_of(best->first)->name);
            }
        }
    }

    // What the tokenizer checks need from the per-token arrays.
    struct token_facts {
        uint64_t                                   body = 0;    // offset of the first element of tokenizer.ggml.tokens
        std::vector<bool>                          spelled;     // token i is spelled '<0xHH>'
        std::vector<bool>                          typed_byte;  // token i has token type BYTE
        std::bitset<256>                           bytes_found; // llama.cpp's byte lookup finds a token for byte b
        std::vector<std::pair<uint64_t, uint32_t>> hashes;      // (hash of the loaded text, token id)
    };

    byte_source &src_;
    std::string  label_;
    uint64_t     size_;
    uint64_t     pos_ = 0;
    gguf_info    info_;
    token_facts  tokens_;
};

std::string errno_text(int e) {
    return std::strerror(e);
}

} // namespace

std::string_view gguf_type_name(gguf_type type) {
    switch (type) {
    case gguf_type::uint8:
        return "u8";
    case gguf_type::int8:
        return "i8";
    case gguf_type::uint16:
        return "u16";
    case gguf_type::int16:
        return "i16";
    case gguf_type::uint32:
        return "u32";
    case gguf_type::int32:
        return "i32";
    case gguf_type::float32:
        return "f32";
    case gguf_type::boolean:
        return "bool";
    case gguf_type::string:
        return "string";
    case gguf_type::array:
        return "array";
    case gguf_type::uint64:
        return "u64";
    case gguf_type::int64:
        return "i64";
    case gguf_type::float64:
        return "f64";
    }
    return "unknown";
}

std::optional<uint64_t> gguf_value::as_uint() const {
    if (const auto *u = std::get_if<uint64_t>(&value)) {
        return *u;
    }
    if (const auto *i = std::get_if<int64_t>(&value); i && *i >= 0) {
        return uint64_t(*i);
    }
    return std::nullopt;
}

const std::string *gguf_value::as_string() const {
    return std::get_if<std::string>(&value);
}

const gguf_array *gguf_value::as_array() const {
    return std::get_if<gguf_array>(&value);
}

std::string gguf_value::to_display(size_t max_chars) const {
    if (const auto *u = std::get_if<uint64_t>(&value)) {
        return std::to_string(*u);
    }
    if (const auto *i = std::get_if<int64_t>(&value)) {
        return std::to_string(*i);
    }
    if (const auto *d = std::get_if<double>(&value)) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.7g", *d);
        return buf;
    }
    if (const auto *b = std::get_if<bool>(&value)) {
        return *b ? "true" : "false";
    }
    if (const auto *a = std::get_if<gguf_array>(&value)) {
        return "[" + std::string(gguf_type_name(a->element_type)) + " × " + std::to_string(a->length) + "]";
    }
    // A string: valid UTF-8 with control characters (C0, DEL, C1) escaped, so metadata cannot
    // drive the terminal it is printed on.
    const std::string &raw  = std::get<std::string>(value);
    const std::string  text = utf8_sanitize(raw);
    std::string        out;
    size_t             shown = 0;
    size_t             i     = 0;
    for (; i < text.size() && shown < max_chars; ++shown) {
        const auto c = uint8_t(text[i]);
        char       esc[8];
        if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c < 0x20 || c == 0x7f) {
            std::snprintf(esc, sizeof esc, "\\x%02x", c);
            out += esc;
        } else if (c == 0xC2 && i + 1 < text.size() && uint8_t(text[i + 1]) < 0xA0) {
            std::snprintf(esc, sizeof esc, "\\u%04x", uint8_t(text[i + 1]));
            out += esc;
            ++i;
        } else {
            size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; // valid after sanitize
            len        = std::min(len, text.size() - i);
            out.append(text, i, len);
            i += len;
            continue;
        }
        ++i;
    }
    if (i < text.size()) {
        out += "… (" + std::to_string(raw.size()) + " bytes)";
    }
    return out;
}

const gguf_value *gguf_info::find(std::string_view key) const {
    const auto it = metadata.find(key);
    return it == metadata.end() ? nullptr : &it->second;
}

result<gguf_info> read_gguf_buffer(std::span<const uint8_t> bytes, std::string_view label) {
    memory_source src(bytes);
    return parser(src, std::string(label)).run();
}

result<gguf_info> read_gguf_file(const std::filesystem::path &path, std::string_view label) {
    const std::string name = label.empty() ? path.string() : std::string(label);
    const int         fd   = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int e = errno;
        return error{e == ENOENT ? error_kind::not_found : error_kind::invalid_request,
                     name + ": cannot open: " + errno_text(e),
                     {},
                     "file_unreadable"};
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int e = errno;
        ::close(fd);
        return error{error_kind::internal, name + ": cannot stat: " + errno_text(e), {}, "file_unreadable"};
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        return error{error_kind::invalid_request, name + ": not a regular file", {}, "file_unreadable"};
    }
    file_source src(fd, uint64_t(st.st_size)); // owns fd from here
    return parser(src, name).run();
}

std::optional<ggml_type_traits> ggml_type_traits_of(uint32_t id) {
    for (const type_row &r : type_rows) {
        if (r.id == id) {
            return ggml_type_traits{r.name, r.block_size, r.type_size};
        }
    }
    return std::nullopt;
}

std::string_view llama_file_type_name(uint64_t file_type) {
    for (const file_type_row &r : file_type_rows) {
        if (r.id == file_type) {
            return r.name;
        }
    }
    return {};
}

std::string format_param_count(uint64_t n) {
    static constexpr const char *units[] = {"K", "M", "B", "T"};
    if (n < 1000) {
        return std::to_string(n);
    }
    double v = double(n);
    size_t u = 0;
    v /= 1000.0;
    while (u + 1 < std::size(units) && v >= 999.5) {
        v /= 1000.0;
        ++u;
    }
    char buf[32];
    if (v < 9.95) {
        std::snprintf(buf, sizeof buf, "%.1f%s", v, units[u]);
    } else {
        std::snprintf(buf, sizeof buf, "%.0f%s", v, units[u]);
    }
    return buf;
}

} // namespace inferbox
