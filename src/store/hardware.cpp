#include "store/hardware.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <system_error>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace inferbox {

namespace {

namespace fs = std::filesystem;

// /proc and /sys files are small; anything bigger than this is not what we expect and is cut.
constexpr size_t max_file_bytes = 1u << 20;
// cgroup paths are walked up at most this many levels.
constexpr int max_cgroup_depth = 64;
// cgroup v1 writes "no limit" as a huge page-aligned number (9223372036854771712).
constexpr uint64_t cgroup_unlimited_threshold = uint64_t(1) << 60;
// A CPU index or count beyond this is garbage.
constexpr uint32_t max_cpus = 1u << 16;

// The file's contents (at most max_file_bytes), or nullopt when it cannot be read.
std::optional<std::string> read_text(const fs::path &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::nullopt;
    }
    std::string out;
    char        buf[4096];
    while (out.size() < max_file_bytes) {
        in.read(buf, sizeof buf);
        const std::streamsize n = in.gcount();
        if (n <= 0) {
            break;
        }
        out.append(buf, size_t(n));
    }
    if (in.bad()) {
        return std::nullopt;
    }
    if (out.size() > max_file_bytes) {
        out.resize(max_file_bytes);
    }
    return out;
}

std::string_view trim(std::string_view s) {
    const auto is_space = [](char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
    };
    while (!s.empty() && is_space(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_space(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

// A whole string as an unsigned decimal; nullopt on anything else (sign, spaces inside, overflow).
std::optional<uint64_t> parse_u64(std::string_view s) {
    s = trim(s);
    if (s.empty()) {
        return std::nullopt;
    }
    uint64_t v     = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr != s.data() + s.size()) {
        return std::nullopt;
    }
    return v;
}

std::optional<int64_t> parse_i64(std::string_view s) {
    s = trim(s);
    if (s.empty()) {
        return std::nullopt;
    }
    int64_t v      = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr != s.data() + s.size()) {
        return std::nullopt;
    }
    return v;
}

std::optional<uint64_t> read_u64(const fs::path &path) {
    auto text = read_text(path);
    return text ? parse_u64(*text) : std::nullopt;
}

// Calls f(line) for every line of `text`.
template <typename F> void for_each_line(std::string_view text, F &&f) {
    while (!text.empty()) {
        const size_t     nl   = text.find('\n');
        std::string_view line = text.substr(0, nl);
        f(line);
        if (nl == std::string_view::npos) {
            break;
        }
        text.remove_prefix(nl + 1);
    }
}

// "Key:   value" → (trimmed key, trimmed value); nullopt without a ':'.
std::optional<std::pair<std::string_view, std::string_view>> split_key_value(std::string_view line) {
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
        return std::nullopt;
    }
    return std::pair{trim(line.substr(0, colon)), trim(line.substr(colon + 1))};
}

std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
    if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) {
        return std::nullopt;
    }
    return a * b;
}

// --- memory ------------------------------------------------------------------------------------

// A /proc/meminfo value ("24684084 kB") in bytes.
std::optional<uint64_t> parse_meminfo_value(std::string_view v) {
    uint64_t unit = 1;
    if (v.size() >= 2 && v.substr(v.size() - 2) == "kB") {
        unit = 1024;
        v.remove_suffix(2);
    }
    auto n = parse_u64(v);
    return n ? checked_mul(*n, unit) : std::nullopt;
}

// One controller's entry of /proc/self/cgroup.
struct cgroup_entry {
    std::string controllers; // "" for the v2 unified hierarchy, "memory", "cpu,cpuacct", ...
    std::string path;        // "/", "/docker/abc"
};

std::vector<cgroup_entry> read_proc_cgroup(const fs::path &root) {
    std::vector<cgroup_entry> out;
    auto                      text = read_text(root / "proc/self/cgroup");
    if (!text) {
        return out;
    }
    for_each_line(*text, [&](std::string_view line) {
        const size_t c1 = line.find(':');
        if (c1 == std::string_view::npos) {
            return;
        }
        const size_t c2 = line.find(':', c1 + 1);
        if (c2 == std::string_view::npos) {
            return;
        }
        out.push_back({std::string(line.substr(c1 + 1, c2 - c1 - 1)), std::string(trim(line.substr(c2 + 1)))});
    });
    return out;
}

// Whether a v1 controller list ("cpu,cpuacct") names `name`.
bool has_controller(std::string_view list, std::string_view name) {
    while (true) {
        const size_t comma = list.find(',');
        if (list.substr(0, comma) == name) {
            return true;
        }
        if (comma == std::string_view::npos) {
            return false;
        }
        list.remove_prefix(comma + 1);
    }
}

// The folders from `base`/`cgroup_path` up to `base` itself, deepest first. A path that is not
// absolute or has a ".." or "." part is garbage: only `base` is returned.
std::vector<fs::path> cgroup_dirs(const fs::path &base, std::string_view cgroup_path) {
    std::vector<std::string_view> parts;
    bool                          ok   = !cgroup_path.empty() && cgroup_path.front() == '/';
    std::string_view              rest = cgroup_path;
    while (ok && !rest.empty()) {
        const size_t     slash = rest.find('/');
        std::string_view part  = rest.substr(0, slash);
        rest                   = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
        if (part.empty()) {
            continue;
        }
        if (part == "." || part == ".." || int(parts.size()) >= max_cgroup_depth) {
            ok = false;
            break;
        }
        parts.push_back(part);
    }
    if (!ok) {
        parts.clear();
    }
    std::vector<fs::path> dirs;
    for (size_t n = parts.size() + 1; n-- > 0;) {
        fs::path p = base;
        for (size_t i = 0; i < n; ++i) {
            p /= std::string(parts[i]);
        }
        dirs.push_back(std::move(p));
    }
    return dirs;
}

// The value of `key` in a "key value" file such as memory.stat.
std::optional<uint64_t> stat_value(const fs::path &file, std::string_view key) {
    auto text = read_text(file);
    if (!text) {
        return std::nullopt;
    }
    std::optional<uint64_t> found;
    for_each_line(*text, [&](std::string_view line) {
        const size_t sp = line.find(' ');
        if (!found && sp != std::string_view::npos && line.substr(0, sp) == key) {
            found = parse_u64(line.substr(sp + 1));
        }
    });
    return found;
}

// The tightest memory limit along a cgroup path and what is left under it.
struct cgroup_memory {
    std::optional<uint64_t> limit;
    std::optional<uint64_t> usage;    // of the cgroup whose limit is the tightest
    std::optional<uint64_t> headroom; // smallest (limit - usage) along the path
};

void consider_limit(cgroup_memory &m, uint64_t limit, std::optional<uint64_t> usage) {
    if (limit >= cgroup_unlimited_threshold) {
        return;
    }
    if (!m.limit || limit < *m.limit) {
        m.limit = limit;
        m.usage = usage;
    }
    const uint64_t room = usage ? (*usage < limit ? limit - *usage : 0) : limit;
    if (!m.headroom || room < *m.headroom) {
        m.headroom = room;
    }
}

// Usage minus the inactive file cache (what the kernel reclaims before it OOM-kills), as
// `docker stats` computes it.
std::optional<uint64_t> working_set(std::optional<uint64_t> usage, std::optional<uint64_t> inactive_file) {
    if (!usage) {
        return std::nullopt;
    }
    const uint64_t inactive = inactive_file.value_or(0);
    return inactive < *usage ? *usage - inactive : 0;
}

cgroup_memory read_cgroup_memory(const fs::path &root, const std::vector<cgroup_entry> &entries) {
    cgroup_memory m;
    std::string   v2_path = "/", v1_path = "/";
    for (const auto &e : entries) {
        if (e.controllers.empty()) {
            v2_path = e.path;
        } else if (has_controller(e.controllers, "memory")) {
            v1_path = e.path;
        }
    }
    // cgroup v2: memory.max ("max" or bytes), memory.current, memory.stat inactive_file.
    for (const fs::path &dir : cgroup_dirs(root / "sys/fs/cgroup", v2_path)) {
        auto text = read_text(dir / "memory.max");
        if (!text) {
            continue;
        }
        auto limit = parse_u64(*text);
        if (!limit) {
            continue; // "max" or garbage: no limit at this level
        }
        consider_limit(m, *limit,
                       working_set(read_u64(dir / "memory.current"), stat_value(dir / "memory.stat", "inactive_file")));
    }
    // cgroup v1: memory.limit_in_bytes, memory.usage_in_bytes, memory.stat total_inactive_file.
    for (const fs::path &dir : cgroup_dirs(root / "sys/fs/cgroup/memory", v1_path)) {
        auto limit = read_u64(dir / "memory.limit_in_bytes");
        if (!limit) {
            continue;
        }
        consider_limit(m, *limit,
                       working_set(read_u64(dir / "memory.usage_in_bytes"),
                                   stat_value(dir / "memory.stat", "total_inactive_file")));
    }
    return m;
}

std::optional<double> read_cgroup_cpu_quota(const fs::path &root, const std::vector<cgroup_entry> &entries) {
    std::string v2_path = "/", v1_path = "/", v1_dir = "cpu";
    for (const auto &e : entries) {
        if (e.controllers.empty()) {
            v2_path = e.path;
        } else if (has_controller(e.controllers, "cpu")) {
            v1_path = e.path;
            v1_dir  = e.controllers;
        }
    }
    std::optional<double> quota;
    const auto            consider = [&](double q) {
        if (q > 0 && std::isfinite(q) && (!quota || q < *quota)) {
            quota = q;
        }
    };
    // cgroup v2: cpu.max is "max 100000" or "QUOTA PERIOD" in microseconds.
    for (const fs::path &dir : cgroup_dirs(root / "sys/fs/cgroup", v2_path)) {
        auto text = read_text(dir / "cpu.max");
        if (!text) {
            continue;
        }
        std::string_view t  = trim(*text);
        const size_t     sp = t.find(' ');
        if (sp == std::string_view::npos) {
            continue;
        }
        auto q = parse_u64(t.substr(0, sp));
        auto p = parse_u64(t.substr(sp + 1));
        if (q && p && *p > 0) {
            consider(double(*q) / double(*p));
        }
    }
    // cgroup v1: cpu.cfs_quota_us (-1: none) / cpu.cfs_period_us. The controller folder is
    // "cpu,cpuacct" on most systems, with "cpu" as a link to it; try the list as written, then "cpu".
    // The controller string comes from a file: a '/' or ".." in it is garbage.
    if (v1_dir.find('/') != std::string::npos || v1_dir == "." || v1_dir == "..") {
        v1_dir = "cpu";
    }
    for (const std::string &name : {v1_dir, std::string("cpu")}) {
        bool found = false;
        for (const fs::path &dir : cgroup_dirs(root / "sys/fs/cgroup" / name, v1_path)) {
            auto q = read_text(dir / "cpu.cfs_quota_us");
            if (!q) {
                continue;
            }
            found         = true;
            auto quota_us = parse_i64(*q);
            auto period   = read_u64(dir / "cpu.cfs_period_us");
            if (quota_us && *quota_us > 0 && period && *period > 0) {
                consider(double(*quota_us) / double(*period));
            }
        }
        if (found) {
            break;
        }
    }
    return quota;
}

// --- CPUs --------------------------------------------------------------------------------------

// Per-processor blocks of /proc/cpuinfo: key → value of the first occurrence in each block.
struct cpuinfo_block {
    std::optional<int64_t> processor, physical_id, core_id;
};

struct cpuinfo_summary {
    std::vector<cpuinfo_block> blocks;
    std::string                model_name; // "model name" (x86), else "Hardware", else implementer/part
    uint32_t                   n_processor_lines = 0;
};

cpuinfo_summary read_cpuinfo(const fs::path &root) {
    cpuinfo_summary s;
    auto            text = read_text(root / "proc/cpuinfo");
    if (!text) {
        return s;
    }
    std::string   hardware, implementer, part;
    cpuinfo_block cur;
    bool          in_block = false;
    const auto    flush    = [&] {
        if (in_block && s.blocks.size() < max_cpus) {
            s.blocks.push_back(cur);
        }
        cur      = {};
        in_block = false;
    };
    for_each_line(*text, [&](std::string_view line) {
        if (trim(line).empty()) {
            flush();
            return;
        }
        auto kv = split_key_value(line);
        if (!kv) {
            return;
        }
        const auto [k, v] = *kv;
        if (k == "processor") {
            if (in_block && cur.processor) {
                flush(); // a new block without a blank line between
            }
            in_block      = true;
            cur.processor = parse_i64(v);
            ++s.n_processor_lines;
        } else if (k == "physical id") {
            in_block        = true;
            cur.physical_id = parse_i64(v);
        } else if (k == "core id") {
            in_block    = true;
            cur.core_id = parse_i64(v);
        } else if (k == "model name" && s.model_name.empty()) {
            s.model_name = std::string(v.substr(0, 256));
        } else if (k == "Hardware" && hardware.empty()) {
            hardware = std::string(v.substr(0, 256));
        } else if (k == "CPU implementer" && implementer.empty()) {
            implementer = std::string(v.substr(0, 32));
        } else if (k == "CPU part" && part.empty()) {
            part = std::string(v.substr(0, 32));
        }
    });
    flush();
    if (s.model_name.empty()) {
        if (!hardware.empty()) {
            s.model_name = hardware;
        } else if (!implementer.empty() && !part.empty()) {
            s.model_name = "implementer " + implementer + " part " + part;
        }
    }
    return s;
}

// Distinct (package, core) pairs of `cpus` from sysfs topology; nullopt when any CPU's topology
// is missing or garbled (then the caller falls back to /proc/cpuinfo).
std::optional<std::set<std::pair<int64_t, int64_t>>> sysfs_cores(const fs::path              &root,
                                                                 const std::vector<uint32_t> &cpus) {
    std::set<std::pair<int64_t, int64_t>> cores;
    for (uint32_t cpu : cpus) {
        const fs::path dir  = root / "sys/devices/system/cpu" / ("cpu" + std::to_string(cpu)) / "topology";
        auto           pkg  = read_text(dir / "physical_package_id");
        auto           core = read_text(dir / "core_id");
        if (!pkg || !core) {
            return std::nullopt;
        }
        auto p = parse_i64(*pkg);
        auto c = parse_i64(*core);
        if (!p || !c) {
            return std::nullopt;
        }
        cores.emplace(*p, *c);
    }
    if (cores.empty()) {
        return std::nullopt;
    }
    return cores;
}

void read_caches(const fs::path &root, hardware_info &hw) {
    const fs::path base = root / "sys/devices/system/cpu/cpu0/cache";
    for (int i = 0; i < 32; ++i) {
        const fs::path dir       = base / ("index" + std::to_string(i));
        auto           level     = read_u64(dir / "level");
        auto           size_text = read_text(dir / "size");
        auto           type      = read_text(dir / "type");
        if (!level || !size_text) {
            continue;
        }
        auto size = parse_cache_size(*size_text);
        if (!size) {
            continue;
        }
        const std::string_view t = type ? trim(*type) : std::string_view{};
        if (t == "Instruction") {
            continue;
        }
        if (*level == 1) {
            hw.l1d_bytes = size;
        } else if (*level == 2) {
            hw.l2_bytes = size;
        } else if (*level == 3) {
            hw.l3_bytes = size;
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)
uint64_t read_xcr0() {
    uint32_t lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t(hi) << 32) | lo;
}

std::string cpuid_brand() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (static_cast<unsigned>(__get_cpuid_max(0x80000000u, nullptr)) < 0x80000004u) {
        return {};
    }
    std::array<char, 49> brand{};
    for (unsigned i = 0; i < 3; ++i) {
        __get_cpuid(0x80000002u + i, &a, &b, &c, &d);
        const unsigned regs[4] = {a, b, c, d};
        std::memcpy(brand.data() + size_t(i) * 16, regs, 16);
    }
    return std::string(trim(std::string_view(brand.data())));
}
#endif

} // namespace

std::vector<std::string_view> isa_feature_names(const cpu_isa &isa) {
    std::vector<std::string_view>           out;
    const std::pair<bool, std::string_view> all[] = {
        {isa.avx, "avx"},
        {isa.avx2, "avx2"},
        {isa.fma, "fma"},
        {isa.f16c, "f16c"},
        {isa.avx_vnni, "avx_vnni"},
        {isa.avx512f, "avx512f"},
        {isa.avx512bw, "avx512bw"},
        {isa.avx512vl, "avx512vl"},
        {isa.avx512_vnni, "avx512_vnni"},
        {isa.avx512_bf16, "avx512_bf16"},
        {isa.amx_tile, "amx_tile"},
        {isa.amx_int8, "amx_int8"},
        {isa.amx_bf16, "amx_bf16"},
        {isa.neon, "neon"},
        {isa.sve, "sve"},
        {isa.dotprod, "dotprod"},
    };
    for (const auto &[set, name] : all) {
        if (set) {
            out.push_back(name);
        }
    }
    return out;
}

std::optional<std::vector<uint32_t>> parse_cpu_list(std::string_view text, uint32_t max_entries) {
    text = trim(text);
    std::vector<uint32_t> out;
    if (text.empty()) {
        return out; // an empty mask (an offline-only system): no CPUs
    }
    size_t start = 0;
    while (start <= text.size()) {
        const size_t     comma = text.find(',', start);
        std::string_view item =
            text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        const size_t            dash = item.find('-');
        std::optional<uint64_t> lo, hi;
        if (dash == std::string_view::npos) {
            lo = hi = parse_u64(item);
        } else {
            lo = parse_u64(item.substr(0, dash));
            hi = parse_u64(item.substr(dash + 1));
        }
        if (!lo || !hi || *lo > *hi || *hi >= max_cpus || *hi - *lo >= max_entries ||
            out.size() + (*hi - *lo + 1) > max_entries) {
            return std::nullopt;
        }
        for (uint64_t c = *lo; c <= *hi; ++c) {
            out.push_back(uint32_t(c));
        }
        if (comma == std::string_view::npos) {
            break;
        }
        start = comma + 1;
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

std::optional<uint64_t> parse_cache_size(std::string_view text) {
    text          = trim(text);
    uint64_t unit = 1;
    if (!text.empty()) {
        switch (text.back()) {
        case 'K':
            unit = uint64_t(1) << 10;
            break;
        case 'M':
            unit = uint64_t(1) << 20;
            break;
        case 'G':
            unit = uint64_t(1) << 30;
            break;
        default:
            break;
        }
        if (unit != 1) {
            text.remove_suffix(1);
        }
    }
    auto n = parse_u64(text);
    return n ? checked_mul(*n, unit) : std::nullopt;
}

void read_memory(const fs::path &root, hardware_info &hw) {
    if (auto text = read_text(root / "proc/meminfo")) {
        for_each_line(*text, [&](std::string_view line) {
            auto kv = split_key_value(line);
            if (!kv) {
                return;
            }
            if (kv->first == "MemTotal" && !hw.ram_total) {
                hw.ram_total = parse_meminfo_value(kv->second);
            } else if (kv->first == "MemAvailable" && !hw.ram_available) {
                hw.ram_available = parse_meminfo_value(kv->second);
            }
        });
    }
    // MemAvailable can exceed MemTotal only in a garbled file.
    if (hw.ram_total && hw.ram_available && *hw.ram_available > *hw.ram_total) {
        hw.ram_available = hw.ram_total;
    }

    const cgroup_memory cg = read_cgroup_memory(root, read_proc_cgroup(root));
    hw.cgroup_mem_limit    = cg.limit;
    hw.cgroup_mem_usage    = cg.usage;

    hw.ram_total_effective = hw.ram_total.value_or(0);
    if (cg.limit && (hw.ram_total_effective == 0 || *cg.limit < hw.ram_total_effective)) {
        hw.ram_total_effective = *cg.limit;
    }
    hw.ram_available_effective = hw.ram_available.value_or(0);
    if (cg.headroom && (hw.ram_available_effective == 0 || *cg.headroom < hw.ram_available_effective)) {
        hw.ram_available_effective = *cg.headroom;
    }
    if (hw.ram_total_effective != 0 && hw.ram_available_effective > hw.ram_total_effective) {
        hw.ram_available_effective = hw.ram_total_effective;
    }

    // "Max locked memory         8388608              8388608              bytes"
    if (auto text = read_text(root / "proc/self/limits")) {
        for_each_line(*text, [&](std::string_view line) {
            constexpr std::string_view key = "Max locked memory";
            if (line.substr(0, key.size()) != key) {
                return;
            }
            std::string_view rest = trim(line.substr(key.size()));
            const size_t     sp   = rest.find_first_of(" \t");
            std::string_view soft = rest.substr(0, sp);
            if (soft == "unlimited") {
                hw.memlock_limit = std::numeric_limits<uint64_t>::max();
            } else {
                hw.memlock_limit = parse_u64(soft);
            }
        });
    }
}

void read_cpus(const fs::path &root, hardware_info &hw) {
    const cpuinfo_summary info = read_cpuinfo(root);
    hw.cpu_model               = info.model_name;

    std::optional<std::vector<uint32_t>> online;
    if (auto text = read_text(root / "sys/devices/system/cpu/online")) {
        online = parse_cpu_list(*text);
        if (online && online->empty()) {
            online.reset();
        }
    }
    if (online) {
        hw.n_logical_cpus = uint32_t(online->size());
    } else if (info.n_processor_lines > 0) {
        hw.n_logical_cpus = info.n_processor_lines;
    }

    std::optional<std::vector<uint32_t>> allowed;
    if (auto text = read_text(root / "proc/self/status")) {
        for_each_line(*text, [&](std::string_view line) {
            auto kv = split_key_value(line);
            if (kv && kv->first == "Cpus_allowed_list" && !allowed) {
                allowed = parse_cpu_list(kv->second);
                if (allowed && allowed->empty()) {
                    allowed.reset();
                }
            }
        });
    }
    if (allowed) {
        if (online) {
            // Only online CPUs can run anything.
            std::vector<uint32_t> both;
            std::set_intersection(allowed->begin(), allowed->end(), online->begin(), online->end(),
                                  std::back_inserter(both));
            if (!both.empty()) {
                allowed = std::move(both);
            }
        }
        hw.n_cpus_allowed = uint32_t(allowed->size());
    }

    // Physical cores: sysfs topology of the online CPUs, else /proc/cpuinfo's (physical id,
    // core id), else the logical count.
    std::optional<uint32_t> cores_allowed;
    if (online) {
        if (auto cores = sysfs_cores(root, *online)) {
            hw.n_physical_cores = uint32_t(cores->size());
            if (allowed) {
                if (auto mine = sysfs_cores(root, *allowed)) {
                    cores_allowed = uint32_t(mine->size());
                }
            }
        }
    }
    if (!hw.n_physical_cores && !info.blocks.empty()) {
        std::set<std::pair<int64_t, int64_t>> cores, mine;
        bool                                  complete = true;
        for (const auto &b : info.blocks) {
            if (!b.core_id) {
                complete = false;
                break;
            }
            const std::pair<int64_t, int64_t> key{b.physical_id.value_or(0), *b.core_id};
            cores.insert(key);
            if (allowed && b.processor && *b.processor >= 0 &&
                std::binary_search(allowed->begin(), allowed->end(), uint32_t(*b.processor))) {
                mine.insert(key);
            }
        }
        if (complete && !cores.empty()) {
            hw.n_physical_cores = uint32_t(cores.size());
            if (allowed && !mine.empty()) {
                cores_allowed = uint32_t(mine.size());
            }
        }
    }
    if (!hw.n_physical_cores) {
        hw.n_physical_cores = hw.n_logical_cpus;
    }
    if (hw.n_physical_cores && hw.n_logical_cpus && *hw.n_physical_cores > *hw.n_logical_cpus) {
        hw.n_physical_cores = hw.n_logical_cpus; // garbled topology
    }

    hw.cgroup_cpu_quota = read_cgroup_cpu_quota(root, read_proc_cgroup(root));

    uint32_t threads = hw.n_cpus_allowed.value_or(hw.n_logical_cpus.value_or(1));
    uint32_t cores   = cores_allowed.value_or(hw.n_physical_cores.value_or(threads));
    if (allowed && !cores_allowed) {
        // The topology of the allowed CPUs is unknown: assume the host's SMT ratio.
        if (hw.n_physical_cores && hw.n_logical_cpus && *hw.n_logical_cpus > 0) {
            cores = uint32_t(std::max<uint64_t>(1, uint64_t(threads) * *hw.n_physical_cores / *hw.n_logical_cpus));
        } else {
            cores = threads;
        }
    }
    if (hw.cgroup_cpu_quota) {
        const double   q     = std::floor(*hw.cgroup_cpu_quota);
        const uint32_t limit = q >= double(max_cpus) ? max_cpus : uint32_t(std::max(1.0, q));
        threads              = std::min(threads, limit);
        cores                = std::min(cores, limit);
    }
    hw.n_threads_effective = std::max<uint32_t>(1, threads);
    hw.n_cores_effective   = std::clamp<uint32_t>(cores, 1, hw.n_threads_effective);

    read_caches(root, hw);
}

cpu_isa detect_isa() {
    cpu_isa isa;
#if defined(__x86_64__) || defined(__i386__)
    unsigned   a = 0, b = 0, c = 0, d = 0;
    const auto max_leaf = static_cast<unsigned>(__get_cpuid_max(0, nullptr));
    if (max_leaf < 1 || !__get_cpuid(1, &a, &b, &c, &d)) {
        return isa;
    }
    const bool     osxsave = (c & (1u << 27)) != 0;
    const uint64_t xcr0    = osxsave ? read_xcr0() : 0;
    const bool     ymm     = (xcr0 & 0x6) == 0x6;                   // SSE + AVX state
    const bool     zmm     = (xcr0 & 0xE6) == 0xE6;                 // + opmask, ZMM_Hi256, Hi16_ZMM
    const bool     amx     = (xcr0 & (3ull << 17)) == (3ull << 17); // XTILECFG + XTILEDATA
    isa.avx                = ymm && (c & (1u << 28)) != 0;
    isa.fma                = ymm && (c & (1u << 12)) != 0;
    isa.f16c               = ymm && (c & (1u << 29)) != 0;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        const unsigned max_sub = a;
        isa.avx2               = ymm && (b & (1u << 5)) != 0;
        isa.avx512f            = zmm && (b & (1u << 16)) != 0;
        isa.avx512bw           = zmm && (b & (1u << 30)) != 0;
        isa.avx512vl           = zmm && (b & (1u << 31)) != 0;
        isa.avx512_vnni        = zmm && (c & (1u << 11)) != 0;
        isa.amx_bf16           = amx && (d & (1u << 22)) != 0;
        isa.amx_tile           = amx && (d & (1u << 24)) != 0;
        isa.amx_int8           = amx && (d & (1u << 25)) != 0;
        if (max_sub >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            isa.avx_vnni    = ymm && (a & (1u << 4)) != 0;
            isa.avx512_bf16 = zmm && (a & (1u << 5)) != 0;
        }
    }
#elif defined(__aarch64__) && defined(__linux__)
    const unsigned long hwcap = getauxval(AT_HWCAP);
#ifdef HWCAP_ASIMD
    isa.neon                  = (hwcap & HWCAP_ASIMD) != 0;
#else
    isa.neon = true; // Advanced SIMD is mandatory on AArch64
#endif
#ifdef HWCAP_ASIMDDP
    isa.dotprod               = (hwcap & HWCAP_ASIMDDP) != 0;
#endif
#ifdef HWCAP_SVE
    isa.sve                   = (hwcap & HWCAP_SVE) != 0;
#endif
    (void)hwcap;
#elif defined(__aarch64__)
    isa.neon = true;
#endif
    return isa;
}

hardware_info detect_hardware(const fs::path &root) {
    hardware_info hw;
#if defined(__x86_64__)
    hw.arch = "x86_64";
#elif defined(__i386__)
    hw.arch = "x86";
#elif defined(__aarch64__)
    hw.arch  = "aarch64";
#elif defined(__arm__)
    hw.arch = "arm";
#elif defined(__riscv)
    hw.arch = "riscv64";
#elif defined(__powerpc64__)
    hw.arch = "ppc64";
#else
    hw.arch = "unknown";
#endif
    hw.isa = detect_isa();
    read_cpus(root, hw);
#if defined(__x86_64__) || defined(__i386__)
    if (hw.cpu_model.empty()) {
        hw.cpu_model = cpuid_brand();
    }
#endif
    read_memory(root, hw);
    return hw;
}

std::string format_memory_size(uint64_t n) {
    static constexpr const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double                       v       = double(n);
    size_t                       u       = 0;
    while (v >= 1024.0 && u + 1 < std::size(units)) {
        v /= 1024.0;
        ++u;
    }
    char buf[32];
    if (u == 0) {
        std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
    } else {
        std::snprintf(buf, sizeof buf, v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
    }
    return buf;
}

} // namespace inferbox
