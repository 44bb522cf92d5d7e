#include "cli/output.h"

#include "store/gguf.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>

namespace inferbox {

int cli_fail(const char *command, const std::string &message) {
    std::string line = message;
    std::replace(line.begin(), line.end(), '\n', ' ');
    std::fprintf(stderr, "inferbox %s: %s\n", command, line.c_str());
    return 1;
}

void print_json(const nlohmann::json &j) {
    const std::string text = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("%s\n", text.c_str());
}

void print_table(const std::vector<std::vector<std::string>> &table) {
    std::vector<size_t> widths(table.empty() ? 0 : table[0].size(), 0);
    for (const auto &cells : table) {
        for (size_t i = 0; i < cells.size() && i < widths.size(); ++i) {
            widths[i] = std::max(widths[i], cells[i].size());
        }
    }
    for (const auto &cells : table) {
        std::string line;
        for (size_t i = 0; i < cells.size(); ++i) {
            line += cells[i];
            if (i + 1 < cells.size() && i < widths.size()) {
                line += std::string(widths[i] - cells[i].size() + 2, ' ');
            }
        }
        std::printf("%s\n", line.c_str());
    }
}

std::string display_text(const std::string &s, size_t max_chars) {
    return gguf_value{gguf_type::string, s}.to_display(max_chars);
}

} // namespace inferbox
