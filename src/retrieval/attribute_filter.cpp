#include "retrieval/attribute_filter.h"

#include <algorithm>
#include <array>
#include <utility>

namespace inferbox::retrieval {

namespace {

constexpr std::array<std::pair<filter_op, const char *>, 10> op_names = {{{filter_op::eq, "eq"},
                                                                          {filter_op::ne, "ne"},
                                                                          {filter_op::gt, "gt"},
                                                                          {filter_op::gte, "gte"},
                                                                          {filter_op::lt, "lt"},
                                                                          {filter_op::lte, "lte"},
                                                                          {filter_op::in, "in"},
                                                                          {filter_op::nin, "nin"},
                                                                          {filter_op::all_of, "and"},
                                                                          {filter_op::any_of, "or"}}};

// -1, 0, 1 for a < b, a == b, a > b; `comparable` false across types and for booleans' order.
int compare(const attribute_value &a, const attribute_value &b, bool &comparable) {
    comparable = a.index() == b.index();
    if (!comparable) {
        return 0;
    }
    if (const auto *s = std::get_if<std::string>(&a)) {
        const int c = s->compare(std::get<std::string>(b));
        return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    if (const auto *d = std::get_if<double>(&a)) {
        const double e = std::get<double>(b);
        return *d < e ? -1 : (*d > e ? 1 : 0);
    }
    return std::get<bool>(a) == std::get<bool>(b) ? 0 : 1;
}

bool equal(const attribute_value &a, const attribute_value &b) {
    bool comparable = false;
    return compare(a, b, comparable) == 0 && comparable;
}

} // namespace

const char *filter_op_name(filter_op op) {
    for (const auto &[o, name] : op_names) {
        if (o == op) {
            return name;
        }
    }
    return "eq";
}

bool filter_op_from_name(const std::string &name, filter_op &op) {
    for (const auto &[o, n] : op_names) {
        if (name == n) {
            op = o;
            return true;
        }
    }
    return false;
}

bool matches(const attribute_filter &f, const std::string &file_id, const attribute_map &attributes) {
    switch (f.op) {
    case filter_op::all_of:
        return std::all_of(f.children.begin(), f.children.end(),
                           [&](const attribute_filter &c) { return matches(c, file_id, attributes); });
    case filter_op::any_of:
        return std::any_of(f.children.begin(), f.children.end(),
                           [&](const attribute_filter &c) { return matches(c, file_id, attributes); });
    default:
        break;
    }
    const attribute_value *have = nullptr;
    attribute_value        id_value;
    if (auto it = attributes.find(f.key); it != attributes.end()) {
        have = &it->second;
    } else if (f.key == "file_id") {
        id_value = file_id;
        have     = &id_value;
    }
    const bool in_list = have != nullptr && std::any_of(f.values.begin(), f.values.end(),
                                                        [&](const attribute_value &v) { return equal(*have, v); });
    if (f.op == filter_op::in || f.op == filter_op::eq) {
        return in_list;
    }
    if (f.op == filter_op::nin || f.op == filter_op::ne) {
        return !in_list;
    }
    if (have == nullptr || f.values.empty()) {
        return false;
    }
    bool      comparable = false;
    const int c          = compare(*have, f.values.front(), comparable);
    if (!comparable || std::holds_alternative<bool>(*have)) {
        return false;
    }
    switch (f.op) {
    case filter_op::gt:
        return c > 0;
    case filter_op::gte:
        return c >= 0;
    case filter_op::lt:
        return c < 0;
    case filter_op::lte:
        return c <= 0;
    default:
        return false;
    }
}

} // namespace inferbox::retrieval
