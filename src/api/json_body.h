#pragma once
// Request bodies: JSON bytes from the network into an nlohmann::json document, in time and memory
// linear in the body, with the nesting bounded and the order of every object's keys remembered.
//
// Why not json::parse with a callback: nlohmann's callback parser walks the parent object each
// time a child object ends (to drop discarded values), so an object of n object-valued members
// costs n^2 (60,000 schema properties: 10-15 s on one I/O thread). And nlohmann::json keeps keys
// sorted, while a JSON Schema's `properties` order is the order the model must generate in
// (reasoning before answer): the key order lets the schema be written back as the client sent it.

#include "common/status.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace inferbox {

// Per object of a parsed document (keyed by the address of its member map, which stays put while
// the document lives and is moved), its keys in the order they appeared; a key given twice appears
// twice (the document keeps the last value, as json::parse does).
using key_order = std::unordered_map<const nlohmann::json::object_t *, std::vector<const std::string *>>;

// Parses a request body: a JSON object nested at most max_depth levels. Errors are invalid_request
// ("invalid_json") naming what is wrong. When `order` is given, it receives the key order of every
// object in the returned document (valid for as long as that document is not modified).
result<nlohmann::json> parse_json_body(const std::string &body, int32_t max_depth, key_order *order = nullptr);

// json.dump() with the objects' keys in `order` where it knows the object (sorted otherwise).
// Invalid UTF-8 in strings is replaced, as everywhere a body is echoed.
std::string dump_in_order(const nlohmann::json &v, const key_order *order);

} // namespace inferbox
