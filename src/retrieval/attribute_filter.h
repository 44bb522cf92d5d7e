#pragma once
// A vector store file's attributes (OpenAI's `attributes`: up to 16 keys, each a string of at most
// 512 bytes, a number or a boolean) and the filters a search applies to them (OpenAI's comparison
// filter {type: eq|ne|gt|gte|lt|lte|in|nin, key, value} and compound filter {type: and|or,
// filters}). The API layer reads both from JSON (api/vector_stores.h) and enforces the bounds
// below, naming the field; here they are plain values, and matches() evaluates a filter over one
// file's attributes. Pure and thread-safe.
//
// Semantics: eq compares type and value (a string never equals a number); ne is the negation of
// eq, nin of in, so a file without the key matches ne and nin and nothing else; gt/gte/lt/lte
// compare numbers with numbers and strings with strings (bytewise), and are false across types
// or when the key is missing. `file_id` is a pseudo-attribute holding the file's id, unless the
// file has an attribute of that name itself.

#include <cstddef>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace inferbox::retrieval {

using attribute_value = std::variant<std::string, double, bool>;
using attribute_map   = std::map<std::string, attribute_value>;

inline constexpr size_t max_attributes            = 16;  // keys of one file
inline constexpr size_t max_attribute_key_bytes   = 64;  // one key
inline constexpr size_t max_attribute_value_bytes = 512; // one string value
inline constexpr size_t max_filter_depth          = 8;   // nested levels, the outermost filter is 1
inline constexpr size_t max_filter_nodes          = 64;  // comparisons and compounds in one filter
inline constexpr size_t max_filter_list_values    = 64;  // values of one in / nin

enum class filter_op { eq, ne, gt, gte, lt, lte, in, nin, all_of, any_of }; // all_of: "and", any_of: "or"

struct attribute_filter {
    filter_op                     op = filter_op::eq;
    std::string                   key;      // comparisons only
    std::vector<attribute_value>  values;   // eq..lte: one; in, nin: 1..max_filter_list_values
    std::vector<attribute_filter> children; // all_of, any_of: at least one
};

// Whether the file (its id and attributes) passes `f`. Expects a filter within the bounds above.
bool matches(const attribute_filter &f, const std::string &file_id, const attribute_map &attributes);

// "eq", ..., "and", "or" (OpenAI's names), and back; false for an unknown name.
const char *filter_op_name(filter_op op);
bool        filter_op_from_name(const std::string &name, filter_op &op);

} // namespace inferbox::retrieval
