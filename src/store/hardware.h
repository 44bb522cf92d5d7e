#pragma once
// Hardware detection for profiles: CPU model and ISA features, logical CPUs and physical cores,
// caches, RAM, and the container limits (cgroup memory limit and CPU quota) that make the
// effective machine smaller than the host.
//
// Every file-based reader takes `root`, the directory that stands for "/" ("/proc/meminfo" is
// read as root/"proc/meminfo"), so the unit tests point it at a fake /proc and /sys tree. Only
// the ISA features come from the CPU executing this code (cpuid on x86-64, getauxval on
// aarch64), never from files. Parsing is defensive: a missing, unreadable or garbled file leaves
// its field unknown (nullopt or empty); nothing here throws or aborts on file contents.
//
// GPUs: this layer does not link ggml, so `gpus` stays empty here. The serve/engine layer fills it
// from ggml's backend registry (ggml_backend_dev_count / ggml_backend_dev_get /
// ggml_backend_dev_memory for devices of type GPU) when a GPU backend is compiled in; the CPU-only
// build has none.
//
// Thread safety: the functions are reentrant; a hardware_info is a plain value.

#include "store/roofline.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

// ISA features that change which ggml kernels run. On x86-64 a feature counts only when the
// CPU has it and the OS saves the register state it needs (XCR0 via xgetbv), so AVX on a kernel
// without XSAVE support reads false.
struct cpu_isa {
    // x86-64
    bool avx         = false;
    bool avx2        = false;
    bool fma         = false;
    bool f16c        = false;
    bool avx_vnni    = false;
    bool avx512f     = false;
    bool avx512bw    = false;
    bool avx512vl    = false;
    bool avx512_vnni = false;
    bool avx512_bf16 = false;
    bool amx_tile    = false;
    bool amx_int8    = false;
    bool amx_bf16    = false;
    // aarch64
    bool neon    = false;
    bool sve     = false;
    bool dotprod = false;
};

// The names of the features that are set, in the struct's order, lower case as Linux's
// /proc/cpuinfo spells them ("avx2", "avx512_vnni", "amx_int8", "neon" ...).
std::vector<std::string_view> isa_feature_names(const cpu_isa &isa);

// A GPU as ggml's backend registry reports it (see the file comment: filled by the engine layer).
struct gpu_device {
    std::string name;    // device description, e.g. "NVIDIA GeForce RTX 4090"
    std::string backend; // ggml backend name, e.g. "CUDA", "Vulkan", "Metal"
    uint64_t    total_bytes = 0;
    uint64_t    free_bytes  = 0;
};

// A device on another machine that ggml's RPC backend reaches (serve --rpc): filled by serve
// from the workers it attached (engine/rpc.h), never by detect_hardware().
struct remote_device {
    std::string name;     // ggml's device name, "RPC0", ...
    std::string endpoint; // the worker, "host:port"
    uint64_t    total_bytes = 0;
    uint64_t    free_bytes  = 0;
};

struct hardware_info {
    std::string arch;      // the architecture this binary was built for: "x86_64", "aarch64", ...
    std::string cpu_model; // /proc/cpuinfo "model name" (x86) or "Hardware"/"CPU part"; empty: unknown
    cpu_isa     isa;

    // CPUs. Logical CPUs are the online ones; physical cores count distinct (package, core) pairs.
    std::optional<uint32_t> n_logical_cpus;
    std::optional<uint32_t> n_physical_cores;
    std::optional<uint32_t> n_cpus_allowed;   // this process's affinity mask (Cpus_allowed_list)
    std::optional<double>   cgroup_cpu_quota; // CPUs the cgroup may use (quota / period); nullopt: no quota
    // Physical cores this process can keep busy: the physical cores among the allowed CPUs (or the
    // physical core count when the topology is unknown), capped by floor(cgroup_cpu_quota), at
    // least 1. 1 when nothing is known.
    uint32_t n_cores_effective = 1;
    // Logical CPUs this process can keep busy: allowed CPUs capped by floor(quota), at least 1.
    uint32_t n_threads_effective = 1;

    // Caches of cpu0, in bytes.
    std::optional<uint64_t> l1d_bytes;
    std::optional<uint64_t> l2_bytes;
    std::optional<uint64_t> l3_bytes;

    // Memory, in bytes.
    std::optional<uint64_t> ram_total;        // MemTotal
    std::optional<uint64_t> ram_available;    // MemAvailable
    std::optional<uint64_t> cgroup_mem_limit; // smallest limit on this process's cgroup path; nullopt: none
    std::optional<uint64_t> cgroup_mem_usage; // that cgroup's usage minus its inactive file cache
    // RLIMIT_MEMLOCK's soft limit ("Max locked memory"): UINT64_MAX when unlimited, nullopt when
    // unknown. mlock of the weights only works when it covers them.
    std::optional<uint64_t> memlock_limit;
    // min(ram_total, cgroup limit); 0 when unknown.
    uint64_t ram_total_effective = 0;
    // min(ram_available, cgroup limit - cgroup usage); 0 when unknown.
    uint64_t ram_available_effective = 0;

    std::vector<gpu_device>    gpus;   // empty in this layer (see the file comment)
    std::vector<remote_device> remote; // RPC workers' devices; empty in this layer
    // The measured decode limits (`inferbox hardware --measure`, server/roofline_cache.h): filled
    // by the caller from the cache, never by detect_hardware(); nullopt when none is cached.
    // Profiles derive their default latency targets from it (store/latency_targets.h).
    std::optional<machine_roofline> roofline;
};

// Detects the hardware. File-based facts come from under `root` (default the real "/"); the ISA
// comes from the running CPU. Never fails: what cannot be read stays unknown.
hardware_info detect_hardware(const std::filesystem::path &root = "/");

// --- the readers detect_hardware() is made of (exposed for the unit tests) ------------------

// A CPU list as the kernel writes it ("0-3,8,10-11"). nullopt on anything malformed or on more
// than `max_cpus` entries.
std::optional<std::vector<uint32_t>> parse_cpu_list(std::string_view text, uint32_t max_cpus = 1u << 16);

// A cache size as sysfs writes it ("32K", "1024K", "32M", "512"). nullopt when malformed.
std::optional<uint64_t> parse_cache_size(std::string_view text);

// Fills the memory fields (meminfo, cgroup v2 and v1, limits) and the effective totals.
void read_memory(const std::filesystem::path &root, hardware_info &hw);

// Fills the CPU count, core, cache, quota and model fields and the effective counts.
void read_cpus(const std::filesystem::path &root, hardware_info &hw);

// The running CPU's ISA features.
cpu_isa detect_isa();

// "1.5 GiB", "512 MiB", "40 KiB", "12 B" (binary units, two significant digits below 10).
std::string format_memory_size(uint64_t n);

} // namespace inferbox
