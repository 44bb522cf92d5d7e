#include "store/imatrix.h"

#include "common/quoted.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>

namespace inferbox {

namespace {

error invalid(std::string message) {
    return error{error_kind::invalid_request, std::move(message), {}, "invalid_imatrix"};
}

float f32_at(const uint8_t *p) {
    float f = 0;
    std::memcpy(&f, p, sizeof f);
    return f;
}

// --- legacy ---------------------------------------------------------------------------------

class cursor {
  public:
    cursor(std::span<const uint8_t> b, std::string_view label) : b_(b), label_(label) {}
    uint64_t remaining() const { return b_.size() - pos_; }
    bool     at_end() const { return pos_ == b_.size(); }

    result<int32_t> i32(const std::string &what) {
        if (remaining() < 4) {
            return invalid(std::string(label_) + ": truncated: " + what + " needs 4 bytes but " +
                           std::to_string(remaining()) + " remain");
        }
        int32_t v = 0;
        std::memcpy(&v, b_.data() + pos_, 4);
        pos_ += 4;
        return v;
    }
    // `n` bytes, checked to remain.
    result<std::span<const uint8_t>> bytes(uint64_t n, const std::string &what) {
        if (n > remaining()) {
            return invalid(std::string(label_) + ": truncated: " + what + " needs " + std::to_string(n) +
                           " bytes but " + std::to_string(remaining()) + " remain");
        }
        auto s = b_.subspan(pos_, n);
        pos_ += n;
        return s;
    }

  private:
    std::span<const uint8_t> b_;
    std::string_view         label_;
    uint64_t                 pos_ = 0;
};

// A length field: non-negative and at most `limit`.
result<uint64_t> length(cursor &c, const std::string &what, uint64_t limit, std::string_view label) {
    auto v = c.i32(what);
    if (!v) {
        return v.err();
    }
    if (*v < 0 || uint64_t(*v) > limit) {
        return invalid(std::string(label) + ": " + what + " is " + std::to_string(*v) + " (must be 0 to " +
                       std::to_string(limit) + ")");
    }
    return uint64_t(*v);
}

result<imatrix> parse_legacy(std::span<const uint8_t> bytes, std::string_view label) {
    cursor  c(bytes, label);
    imatrix m;
    m.format   = "legacy";
    auto count = length(c, "the entry count", imatrix_limits::max_entries, label);
    if (!count) {
        return count.err();
    }
    if (*count == 0) {
        return invalid(std::string(label) + ": no entries (an importance matrix names at least one tensor)");
    }
    for (uint64_t i = 0; i < *count; ++i) {
        const std::string entry = "entry " + std::to_string(i + 1);
        auto              n     = length(c, entry + ": the name length", imatrix_limits::max_name_bytes, label);
        if (!n) {
            return n.err();
        }
        auto name_bytes = c.bytes(*n, entry + ": the name");
        if (!name_bytes) {
            return name_bytes.err();
        }
        std::string name(name_bytes->begin(), name_bytes->end());
        if (name.empty() || name.find('\0') != std::string::npos) {
            return invalid(std::string(label) + ": " + entry + ": the name " + quoted_for_message(name) +
                           " is empty or holds a NUL byte");
        }
        auto ncall = c.i32(entry + ": the call count");
        if (!ncall) {
            return ncall.err();
        }
        // A value count above what remains fails below; this bound keeps the byte count in range.
        auto nval =
            length(c, entry + " (" + quoted_for_message(name) + "): the value count", uint64_t{INT32_MAX}, label);
        if (!nval) {
            return nval.err();
        }
        if (*nval == 0) {
            return invalid(std::string(label) + ": " + entry + " (" + quoted_for_message(name) + ") has no values");
        }
        auto data =
            c.bytes(*nval * 4, entry + " (" + quoted_for_message(name) + "): " + std::to_string(*nval) + " values");
        if (!data) {
            return data.err();
        }
        if (m.entries.count(name) != 0) {
            return invalid(std::string(label) + ": " + entry + ": " + quoted_for_message(name) + " appears twice");
        }
        std::vector<float> values(*nval);
        for (uint64_t k = 0; k < *nval; ++k) {
            const float v = f32_at(data->data() + k * 4);
            if (!std::isfinite(v) || v < 0) {
                return invalid(std::string(label) + ": " + entry + " (" + quoted_for_message(name) + "): value " +
                               std::to_string(k) + " is not a finite number ≥ 0");
            }
            values[k] = *ncall > 0 ? v / float(*ncall) : v;
        }
        m.entries.emplace(std::move(name), std::move(values));
    }
    // The optional trailer: the chunk count, then the dataset's name.
    if (!c.at_end()) {
        auto chunks = c.i32("the chunk count");
        if (!chunks) {
            return chunks.err();
        }
        m.chunk_count = *chunks > 0 ? uint64_t(*chunks) : 0;
        if (!c.at_end()) {
            auto n = length(c, "the dataset name length", imatrix_limits::max_dataset_bytes, label);
            if (!n) {
                return n.err();
            }
            auto name = c.bytes(*n, "the dataset name");
            if (!name) {
                return name.err();
            }
            if (*n > 0) {
                m.datasets.emplace_back(name->begin(), name->end());
            }
        }
        if (!c.at_end()) {
            return invalid(std::string(label) + ": " + std::to_string(c.remaining()) +
                           " unexpected bytes after the dataset name");
        }
    }
    return m;
}

// --- GGUF -----------------------------------------------------------------------------------

result<imatrix> parse_gguf(std::span<const uint8_t> bytes, std::string_view label) {
    auto g = read_gguf_buffer(bytes, label);
    if (!g) {
        return g.err();
    }
    imatrix m;
    m.format = "gguf";
    if (const gguf_value *v = g->find("imatrix.chunk_count"); v != nullptr && v->as_uint()) {
        m.chunk_count = *v->as_uint();
    }
    // read_gguf_buffer keeps only an array's shape: the dataset names are read from the bytes
    // nowhere else, so they are not reported for this format.

    struct pair {
        const gguf_tensor_info *sums   = nullptr;
        const gguf_tensor_info *counts = nullptr;
    };
    std::map<std::string, pair> by_name;
    for (const gguf_tensor_info &t : g->tensors) {
        const bool        is_sums = t.name.ends_with(".in_sum2");
        const bool        is_cnt  = t.name.ends_with(".counts");
        const std::string base    = t.name.substr(0, t.name.size() - (is_sums ? 8 : is_cnt ? 7 : 0));
        if ((!is_sums && !is_cnt) || base.empty()) {
            continue; // not part of the importance matrix
        }
        if (t.type != 0) {
            return invalid(std::string(label) + ": tensor " + quoted_for_message(t.name) + " is " +
                           std::string(ggml_type_traits_of(t.type)->name) + ", not F32");
        }
        (is_sums ? by_name[base].sums : by_name[base].counts) = &t;
    }
    if (by_name.empty()) {
        return invalid(std::string(label) +
                       ": no '<name>.in_sum2' and '<name>.counts' tensors: not an importance matrix");
    }
    if (by_name.size() > imatrix_limits::max_entries) {
        return invalid(std::string(label) + ": " + std::to_string(by_name.size()) + " entries (the limit is " +
                       std::to_string(imatrix_limits::max_entries) + ")");
    }
    for (const auto &[name, p] : by_name) {
        if (p.sums == nullptr || p.counts == nullptr) {
            return invalid(std::string(label) + ": " + quoted_for_message(name) + " has " +
                           (p.sums == nullptr ? "counts but no in_sum2" : "in_sum2 but no counts"));
        }
        const uint64_t nval = p.sums->n_elements;
        const uint64_t ncnt = p.counts->n_elements;
        if (nval == 0 || ncnt == 0 || nval % ncnt != 0) {
            return invalid(std::string(label) + ": " + quoted_for_message(name) + ": " + std::to_string(nval) +
                           " sums do not divide into " + std::to_string(ncnt) + " experts");
        }
        // read_gguf_buffer checked both tensors' data to lie inside the bytes.
        const uint8_t     *sums   = bytes.data() + g->data_offset + p.sums->offset;
        const uint8_t     *counts = bytes.data() + g->data_offset + p.counts->offset;
        const uint64_t     per    = nval / ncnt;
        std::vector<float> values(nval);
        for (uint64_t e = 0; e < ncnt; ++e) {
            const float count = f32_at(counts + e * 4);
            if (!std::isfinite(count) || count < 0) {
                return invalid(std::string(label) + ": " + quoted_for_message(name) + ": count " + std::to_string(e) +
                               " is not a finite number ≥ 0");
            }
            const double whole = std::round(double(count));
            for (uint64_t k = 0; k < per; ++k) {
                const float v = f32_at(sums + (e * per + k) * 4);
                if (!std::isfinite(v) || v < 0) {
                    return invalid(std::string(label) + ": " + quoted_for_message(name) + ": value " +
                                   std::to_string(e * per + k) + " is not a finite number ≥ 0");
                }
                // Counts are token counts: whole numbers (as llama.cpp rounds them), so a quotient is
                // never larger than its finite sum.
                values[e * per + k] = whole >= 1 ? static_cast<float>(double(v) / whole) : 1.0F;
            }
        }
        m.entries.emplace(name, std::move(values));
    }
    return m;
}

} // namespace

result<imatrix> parse_imatrix(std::span<const uint8_t> bytes, std::string_view label) {
    if (bytes.size() > imatrix_limits::max_file_bytes) {
        return invalid(std::string(label) + ": " + std::to_string(bytes.size()) + " bytes (the limit is " +
                       std::to_string(imatrix_limits::max_file_bytes) + ")");
    }
    if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0) {
        return parse_gguf(bytes, label);
    }
    return parse_legacy(bytes, label);
}

result<imatrix> read_imatrix_file(const std::filesystem::path &path) {
    const std::string label = path.string();
    std::error_code   ec;
    const auto        size = std::filesystem::file_size(path, ec);
    if (ec) {
        return error{std::filesystem::exists(path) ? error_kind::internal : error_kind::not_found,
                     label + ": cannot read the importance matrix: " + ec.message(),
                     {},
                     {}};
    }
    if (size > imatrix_limits::max_file_bytes) {
        return invalid(label + ": " + std::to_string(size) + " bytes (the limit is " +
                       std::to_string(imatrix_limits::max_file_bytes) + ")");
    }
    std::ifstream        in(path, std::ios::binary);
    std::vector<uint8_t> bytes(size);
    if (!in || !in.read(reinterpret_cast<char *>(bytes.data()), std::streamsize(size))) {
        return error{
            error_kind::internal, label + ": cannot read the importance matrix: " + std::strerror(errno), {}, {}};
    }
    return parse_imatrix(bytes, label);
}

std::optional<error> check_imatrix_fits(const imatrix &m, const gguf_info &model, std::string_view label) {
    size_t matched = 0;
    for (const gguf_tensor_info &t : model.tensors) {
        const auto it = m.entries.find(t.name);
        if (it == m.entries.end() || t.n_dims < 2) {
            continue;
        }
        ++matched;
        const uint64_t want = t.dims[0] * t.dims[2];
        if (it->second.size() != want && t.name != "token_embd.weight") {
            return invalid(std::string(label) + ": " + quoted_for_message(t.name) + " has " +
                           std::to_string(it->second.size()) + " values but the model's tensor needs " +
                           std::to_string(want) + " (row length × experts): computed for another model?");
        }
    }
    if (matched == 0) {
        return invalid(std::string(label) + ": none of its " + std::to_string(m.entries.size()) +
                       " entries names a matrix of the model: computed for another model?");
    }
    return std::nullopt;
}

} // namespace inferbox
