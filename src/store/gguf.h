#pragma once
// GGUF pre-validation and metadata reading, without llama.cpp and without loading weights.
//
// The reader never trusts the file: every count is bounded (the limit is in the error), every
// count × size and offset + size is checked against the bytes that remain before anything is
// allocated, and tensor data is never read, only checked to lie inside the file. A file this
// reader accepts has the layout llama.cpp's own GGUF loader requires (same type sizes, tensor
// data in order and aligned); what it does not check is whether the architecture's tensors are
// all there, which only the loader knows.
//
// The tokenizer metadata is checked where llama.cpp would load damage and die of it later (or
// refuse it with a vaguer message): the element types of the per-token arrays (tokens: string,
// scores: f32 or i32, token_type: i32, merges: string) and one score and type per token; every
// tokenizer.ggml.*_token_id a u32 below the vocabulary size (0xFFFFFFFF: none); every BYTE token
// spelled <0xHH>, and none in a 'bert' vocabulary; and a SentencePiece ('llama') vocabulary with
// a token for each of the 256 bytes. Only a few bits per token are kept for this.
//
// Errors are `error_kind::invalid_request` with code "invalid_gguf" (a file that cannot be
// opened or read: `not_found` / `internal`), and their message starts with the label (the file
// name the user gave) and names the problem, e.g.
//   "model.gguf: truncated: tensor 'blk.0.attn_q.weight' data ends at byte 123456 but the file
//    has 100000 bytes".
//
// Thread safety: the functions are reentrant; a gguf_info is a plain value.

#include "common/status.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace inferbox {

// Bounds on what a GGUF may declare. Real models stay far below them (a 256K-token vocabulary,
// a few thousand tensors, chat templates of tens of KiB).
struct gguf_limits {
    static constexpr uint64_t max_kv           = 65536;     // key-value pairs
    static constexpr uint64_t max_tensors      = 1u << 20;  // tensor infos
    static constexpr uint64_t max_key_bytes    = 4096;      // one key
    static constexpr uint64_t max_string_bytes = 16u << 20; // one string value or array element
    static constexpr uint64_t max_array_length = 1u << 24;  // elements of one array
    static constexpr uint32_t max_array_depth  = 4;         // arrays of arrays of ...
    static constexpr uint64_t max_name_bytes   = 63;        // tensor name (ggml's GGML_MAX_NAME - 1)
    static constexpr uint32_t max_dims         = 4;         // ggml's GGML_MAX_DIMS
    static constexpr uint32_t max_alignment    = 1u << 20;  // general.alignment
};

inline constexpr uint32_t gguf_default_alignment = 32;

// GGUF value types, with the ids the file uses.
enum class gguf_type : uint32_t {
    uint8   = 0,
    int8    = 1,
    uint16  = 2,
    int16   = 3,
    uint32  = 4,
    int32   = 5,
    float32 = 6,
    boolean = 7,
    string  = 8,
    array   = 9,
    uint64  = 10,
    int64   = 11,
    float64 = 12,
};

// "u32", "string", ...; "unknown" for an id outside the enum.
std::string_view gguf_type_name(gguf_type type);

// An array is kept as a summary: the element type and the number of elements. Its contents are
// validated while reading but not stored (a vocabulary is hundreds of thousands of strings).
struct gguf_array {
    gguf_type element_type = gguf_type::uint8;
    uint64_t  length       = 0;
};

// One metadata value. Unsigned integers are stored as uint64_t, signed ones as int64_t, floats
// as double; `type` keeps the type the file declared.
struct gguf_value {
    gguf_type                                                              type = gguf_type::uint8;
    std::variant<uint64_t, int64_t, double, bool, std::string, gguf_array> value;

    // The value as an unsigned integer when it is an integer ≥ 0, else nullopt.
    std::optional<uint64_t> as_uint() const;
    // The value when it is a string, else nullptr.
    const std::string *as_string() const;
    // The value when it is an array, else nullptr.
    const gguf_array *as_array() const;
    // A one-line rendering for people: strings longer than max_chars are cut ("… (N bytes)"),
    // control characters are escaped, arrays read "[string × 512]".
    std::string to_display(size_t max_chars = 80) const;
};

struct gguf_tensor_info {
    std::string             name;
    uint32_t                n_dims     = 0;
    std::array<uint64_t, 4> dims       = {1, 1, 1, 1}; // ne[0..3]; unused dimensions are 1
    uint32_t                type       = 0;            // ggml type id
    uint64_t                offset     = 0;            // from the start of the data section
    uint64_t                n_elements = 0;
    uint64_t                n_bytes    = 0; // unpadded size of the data
};

struct gguf_info {
    uint64_t file_size   = 0;
    uint32_t version     = 0;
    uint32_t alignment   = gguf_default_alignment;
    uint64_t data_offset = 0; // absolute offset of the tensor data section

    std::map<std::string, gguf_value, std::less<>> metadata;
    std::vector<gguf_tensor_info>                  tensors;
    uint64_t                                       tensor_bytes = 0; // sum of the tensors' n_bytes

    // Derived summary. Missing (or not a non-negative integer) → nullopt / empty.
    std::string             architecture;              // general.architecture, as written (any string)
    std::string             name;                      // general.name
    uint64_t                n_params = 0;              // sum of the tensors' element counts
    std::string             quantization;              // from general.file_type, else the dominant tensor type
    std::optional<uint64_t> context_length;            // <arch>.context_length
    std::optional<uint64_t> embedding_length;          // <arch>.embedding_length
    std::optional<uint64_t> block_count;               // <arch>.block_count
    std::optional<uint64_t> head_count;                // <arch>.attention.head_count
    std::optional<uint64_t> head_count_kv;             // <arch>.attention.head_count_kv
    std::optional<uint64_t> vocab_size;                // length of tokenizer.ggml.tokens
    bool                    has_chat_template = false; // tokenizer.chat_template is a non-empty string

    // The value of `key`, or nullptr.
    const gguf_value *find(std::string_view key) const;
};

// Reads and validates the GGUF file at `path` (header, metadata and tensor infos; tensor data
// is only bounds-checked). Error messages start with `label`, or with the path when it is empty.
result<gguf_info> read_gguf_file(const std::filesystem::path &path, std::string_view label = {});

// The same over bytes in memory (the fuzz target and the unit tests use this). The bytes are
// the whole file.
result<gguf_info> read_gguf_buffer(std::span<const uint8_t> bytes, std::string_view label);

// ggml tensor types: block size (elements per block) and bytes per block.
struct ggml_type_traits {
    std::string_view name;           // upper case, e.g. "Q8_0"
    uint32_t         block_size = 0; // elements
    uint32_t         type_size  = 0; // bytes per block
};

// The traits of ggml type `id`, or nullopt for an unknown or removed id.
std::optional<ggml_type_traits> ggml_type_traits_of(uint32_t id);

// The name of a llama.cpp file type (general.file_type), e.g. 7 → "Q8_0"; empty when unknown.
std::string_view llama_file_type_name(uint64_t file_type);

// "292K", "6.7B", "1.1M", "512": a parameter count for tables.
std::string format_param_count(uint64_t n);

} // namespace inferbox
