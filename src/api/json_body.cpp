#include "api/json_body.h"

#include <unordered_set>
#include <utility>

namespace inferbox {

using json = nlohmann::json;

namespace {

// Builds the document from nlohmann's SAX events. Each container is created in its parent's slot
// before its members arrive, so the open containers are a stack of pointers into the document:
// an array only grows at its back while its last element is the open one, and a std::map node never
// moves, so none of those pointers is invalidated while it is on the stack. Every event is O(1)
// or O(log n) (one map insertion).
class dom_builder : public nlohmann::json_sax<json> {
  public:
    dom_builder(json &root, int32_t max_depth, key_order *order) : root_(root), max_depth_(max_depth), order_(order) {}

    bool null() override { return put(json(nullptr)); }
    bool boolean(bool v) override { return put(json(v)); }
    bool number_integer(number_integer_t v) override { return put(json(v)); }
    bool number_unsigned(number_unsigned_t v) override { return put(json(v)); }
    bool number_float(number_float_t v, const string_t & /*text*/) override { return put(json(v)); }
    bool string(string_t &v) override { return put(json(std::move(v))); }
    bool binary(binary_t &v) override { return put(json::binary(std::move(v))); }

    bool start_object(std::size_t /*elements*/) override { return open(json::object()); }
    bool start_array(std::size_t /*elements*/) override { return open(json::array()); }
    bool end_object() override { return close(); }
    bool end_array() override { return close(); }

    bool key(string_t &k) override {
        auto &members = stack_.back()->get_ref<json::object_t &>();
        auto  it      = members.try_emplace(std::move(k)).first;
        slot_         = &it->second;
        if (order_ != nullptr) {
            (*order_)[&members].push_back(&it->first);
        }
        return true;
    }

    bool parse_error(std::size_t /*position*/, const std::string & /*last_token*/,
                     const nlohmann::detail::exception &ex) override {
        error_ = ex.what();
        return false;
    }

    bool               too_deep() const { return too_deep_; }
    const std::string &error() const { return error_; }

  private:
    // Where the next value goes: the root, the back of the open array, or the slot of the key just
    // read in the open object. Returns the value's place in the document.
    json *place(json &&v) {
        if (stack_.empty()) {
            root_ = std::move(v);
            return &root_;
        }
        json &parent = *stack_.back();
        if (parent.is_array()) {
            auto &items = parent.get_ref<json::array_t &>();
            items.push_back(std::move(v));
            return &items.back();
        }
        *slot_ = std::move(v);
        return slot_;
    }
    bool put(json &&v) {
        place(std::move(v));
        return true;
    }
    bool open(json &&container) {
        if (stack_.size() > static_cast<size_t>(max_depth_)) {
            too_deep_ = true;
            return false;
        }
        stack_.push_back(place(std::move(container)));
        return true;
    }
    bool close() {
        stack_.pop_back();
        return true;
    }

    json               &root_;
    int32_t             max_depth_;
    key_order          *order_;
    std::vector<json *> stack_;
    json               *slot_     = nullptr;
    bool                too_deep_ = false;
    std::string         error_;
};

void dump_to(const json &v, const key_order *order, std::string &out) {
    if (v.is_array()) {
        out += '[';
        bool first = true;
        for (const auto &item : v) {
            if (!first) {
                out += ',';
            }
            first = false;
            dump_to(item, order, out);
        }
        out += ']';
        return;
    }
    if (!v.is_object()) {
        out += v.dump(-1, ' ', false, json::error_handler_t::replace);
        return;
    }
    const auto                             &members = v.get_ref<const json::object_t &>();
    const std::vector<const std::string *> *keys    = nullptr;
    if (order != nullptr) {
        if (auto it = order->find(&members); it != order->end() && it->second.size() >= members.size()) {
            keys = &it->second;
        }
    }
    bool first  = true;
    auto member = [&](const std::string &k, const json &value) {
        if (!first) {
            out += ',';
        }
        first = false;
        out += json(k).dump(-1, ' ', false, json::error_handler_t::replace);
        out += ':';
        dump_to(value, order, out);
    };
    out += '{';
    if (keys == nullptr) {
        for (const auto &[k, value] : members) {
            member(k, value);
        }
    } else {
        // A key given twice is written once, where it first appeared.
        std::unordered_set<const std::string *> written;
        for (const std::string *k : *keys) {
            if (keys->size() == members.size() || written.insert(k).second) {
                member(*k, members.at(*k));
            }
        }
    }
    out += '}';
}

} // namespace

result<json> parse_json_body(const std::string &body, int32_t max_depth, key_order *order) {
    if (body.empty()) {
        return error::invalid("the request body is empty; expected a JSON object", "", "invalid_json");
    }
    // JSON never holds a raw NUL (strings escape it as \u0000); a body with one is refused whole.
    if (const auto nul = body.find('\0'); nul != std::string::npos) {
        return error::invalid("the request body has a NUL byte at offset " + std::to_string(nul) +
                                  ", which JSON does not allow",
                              "", "invalid_json");
    }
    json        doc;
    key_order   local;
    dom_builder builder(doc, max_depth, order != nullptr ? &local : nullptr);
    const bool  ok = json::sax_parse(body, &builder, json::input_format_t::json, /*strict=*/true);
    if (builder.too_deep()) {
        return error::invalid("the request body nests deeper than " + std::to_string(max_depth) + " levels", "",
                              "invalid_json");
    }
    if (!ok) {
        // Not only parse errors: a number beyond double's range (1e400) is out_of_range.
        const auto &detail = builder.error();
        return error::invalid("the request body is not valid JSON" + (detail.empty() ? "" : ": " + detail), "",
                              "invalid_json");
    }
    if (!doc.is_object()) {
        return error::invalid(std::string("the request body must be a JSON object, got ") + doc.type_name(), "",
                              "invalid_json");
    }
    if (order != nullptr) {
        *order = std::move(local);
    }
    return doc; // moved (C++20 implicit move), not copied: the key order points into it
}

std::string dump_in_order(const json &v, const key_order *order) {
    std::string out;
    dump_to(v, order, out);
    return out;
}

} // namespace inferbox
