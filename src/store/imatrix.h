#pragma once
// Importance matrices (`inferbox import --quantize TYPE --imatrix FILE`): the per-column weights
// llama.cpp's quantizer uses to spend its error where the activations are large. Two file
// formats, both written by llama.cpp's `llama-imatrix`:
//
//   GGUF (current): for each weight matrix NAME, an F32 tensor "NAME.in_sum2" (the summed squared
//     activations, n_per_row × n_experts) and an F32 tensor "NAME.counts" (tokens seen, one per
//     expert). The importance is in_sum2 / count per expert, the count rounded to a whole number
//     as llama.cpp does (1 where it rounds to 0). Optional
//     metadata: imatrix.datasets (strings), imatrix.chunk_count, imatrix.chunk_size.
//   legacy binary (.dat): i32 n_entries, then per entry i32 name length, the name, i32 ncall,
//     i32 n_values, f32 × n_values (the averaged values × ncall); then optionally i32 chunk count,
//     i32 dataset name length, the dataset name. The importance is value / ncall (as is when
//     ncall ≤ 0). Little-endian.
//
// The file is untrusted: every count and length is checked against its limit and against the
// bytes that remain before anything is allocated, and every value must be finite and ≥ 0. Errors
// are invalid_request, start with the label and say what is wrong, e.g.
//   "x.dat: entry 3: 4096 values need 16384 bytes but 100 remain".
//
// Thread safety: reentrant; an imatrix is a plain value.

#include "common/status.h"
#include "store/gguf.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

struct imatrix_limits {
    static constexpr uint64_t max_file_bytes    = uint64_t{4} << 30; // 4 GiB
    static constexpr uint64_t max_entries       = 1u << 20;
    static constexpr uint64_t max_name_bytes    = 1024;
    static constexpr uint64_t max_dataset_bytes = 1u << 20;
};

struct imatrix {
    std::string                               format;  // "gguf" or "legacy"
    std::map<std::string, std::vector<float>> entries; // tensor name → importance per column (× experts)
    std::vector<std::string>                  datasets;
    uint64_t                                  chunk_count = 0;
};

// Parses an importance matrix from the whole file's bytes (GGUF when they start with "GGUF",
// else the legacy format). An empty matrix (no entries) is an error.
result<imatrix> parse_imatrix(std::span<const uint8_t> bytes, std::string_view label);

// Reads and parses the file at `path` (at most imatrix_limits::max_file_bytes); errors name
// `path`.
result<imatrix> read_imatrix_file(const std::filesystem::path &path);

// Checks `m` against the model it will quantize: every entry named like one of the model's
// matrices has n_per_row × n_experts values (llama.cpp's quantizer would fail with a vaguer
// message; the token-embedding table is exempt, as there), and at least one entry matches a
// matrix (else the matrix was computed for another model). The message names the tensor.
std::optional<error> check_imatrix_fits(const imatrix &m, const gguf_info &model, std::string_view label);

} // namespace inferbox
