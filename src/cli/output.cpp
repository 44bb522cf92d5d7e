#include "cli/output.h"

#include "store/gguf.h"
#include "store/hardware.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

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

std::string format_progress(const download_progress &p, bool bar) {
    const double fetched = double(p.received - std::min(p.received, p.resumed_from));
    const double rate    = p.seconds > 0 ? fetched / p.seconds : 0;
    std::string  line;
    if (p.total && *p.total > 0) {
        const double frac = std::min(1.0, double(p.received) / double(*p.total));
        char         pct[16];
        std::snprintf(pct, sizeof pct, "%3d%%", int(frac * 100));
        if (bar) {
            constexpr int width = 24;
            const int     done  = int(frac * width);
            line += std::string(pct) + " [" + std::string(size_t(done), '#') + std::string(size_t(width - done), ' ') +
                    "] " + format_memory_size(p.received) + " / " + format_memory_size(*p.total);
        } else {
            line += format_memory_size(p.received) + " of " + format_memory_size(*p.total) + " (" +
                    std::string(pct + (pct[0] == ' ' ? (pct[1] == ' ' ? 2 : 1) : 0)) + ")";
        }
        if (rate > 0 && p.received < *p.total) {
            const auto eta = static_cast<long long>(double(*p.total - p.received) / rate);
            char       buf[48];
            std::snprintf(buf, sizeof buf, "%s%lld:%02lld", bar ? "  ETA " : ", ETA ", eta / 60, eta % 60);
            line += buf;
        }
    } else {
        line += format_memory_size(p.received);
    }
    if (rate > 0) {
        line += (bar ? "  " : " at ") + format_memory_size(uint64_t(rate)) + "/s";
    }
    return line;
}

void report_pull_on_stderr(pull_options &opts, const std::string &label) {
    const bool tty = ::isatty(STDERR_FILENO) == 1;
    struct state {
        std::chrono::steady_clock::time_point last_line;
        bool                                  drawn = false;
    };
    auto st          = std::make_shared<state>();
    opts.on_progress = [tty, label, st](const download_progress &p) {
        const bool done = p.total && p.received >= *p.total;
        if (tty) {
            std::fprintf(stderr, "\r%s: %s\x1b[K", label.c_str(), format_progress(p, true).c_str());
            st->drawn = true;
            if (done) {
                std::fprintf(stderr, "\n");
                st->drawn = false;
            }
            std::fflush(stderr);
            return;
        }
        const auto now = std::chrono::steady_clock::now();
        if (done || now - st->last_line >= std::chrono::seconds(5)) {
            st->last_line = now;
            std::fprintf(stderr, "%s: %s%s\n", label.c_str(), done ? "downloaded " : "",
                         format_progress(p, false).c_str());
            std::fflush(stderr);
        }
    };
    opts.on_notice = [label, st](const std::string &msg) {
        if (st->drawn) {
            std::fprintf(stderr, "\n");
            st->drawn = false;
        }
        std::fprintf(stderr, "%s: %s\n", label.c_str(), msg.c_str());
        std::fflush(stderr);
    };
}

} // namespace inferbox
