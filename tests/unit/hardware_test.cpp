// Hardware detection: every file-based reader pointed at a fake /proc and /sys tree in a temporary
// folder (meminfo, cpuinfo, topology, caches, cgroup v1 and v2 limits, garbage), and a sanity check
// of the real machine.

#include "store/hardware.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

using namespace inferbox;

namespace {

namespace fs = std::filesystem;

constexpr uint64_t kib = 1024;
constexpr uint64_t mib = kib * 1024;
constexpr uint64_t gib = mib * 1024;

// A temporary folder standing for "/"; removed with everything under it.
class fake_root {
  public:
    fake_root() {
        std::string tmpl = (fs::temp_directory_path() / "inferbox-hw-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = tmpl;
    }
    ~fake_root() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    fake_root(const fake_root &)            = delete;
    fake_root &operator=(const fake_root &) = delete;

    const fs::path &path() const { return path_; }

    void write(const std::string &rel, const std::string &text) const {
        const fs::path p = path_ / rel;
        fs::create_directories(p.parent_path());
        std::ofstream(p, std::ios::binary) << text;
    }

    // cpuN/topology with the given package and core ids.
    void cpu(int n, int package, int core) const {
        const std::string dir = "sys/devices/system/cpu/cpu" + std::to_string(n) + "/topology/";
        write(dir + "physical_package_id", std::to_string(package) + "\n");
        write(dir + "core_id", std::to_string(core) + "\n");
    }

    void cache(int index, int level, const std::string &type, const std::string &size) const {
        const std::string dir = "sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
        write(dir + "level", std::to_string(level) + "\n");
        write(dir + "type", type + "\n");
        write(dir + "size", size + "\n");
    }

  private:
    fs::path path_;
};

const char *meminfo_16g = "MemTotal:       16777216 kB\n"
                          "MemFree:         1048576 kB\n"
                          "MemAvailable:    8388608 kB\n"
                          "Buffers:          123456 kB\n";

} // namespace

TEST(hardware, parse_cpu_list) {
    EXPECT_EQ(parse_cpu_list("0-3,8,10-11\n"), (std::vector<uint32_t>{0, 1, 2, 3, 8, 10, 11}));
    EXPECT_EQ(parse_cpu_list("5"), (std::vector<uint32_t>{5}));
    EXPECT_EQ(parse_cpu_list("3,1,1-2"), (std::vector<uint32_t>{1, 2, 3})); // sorted, no duplicates
    EXPECT_EQ(parse_cpu_list(""), (std::vector<uint32_t>{}));
    EXPECT_FALSE(parse_cpu_list("0-"));
    EXPECT_FALSE(parse_cpu_list("5-2"));
    EXPECT_FALSE(parse_cpu_list("a,b"));
    EXPECT_FALSE(parse_cpu_list("0,,1"));
    EXPECT_FALSE(parse_cpu_list("-1"));
    EXPECT_FALSE(parse_cpu_list("0-4294967295")); // beyond any real machine
    EXPECT_FALSE(parse_cpu_list("0-99999999999999999999999"));
    EXPECT_FALSE(parse_cpu_list("0-9", 4)); // more entries than allowed
}

TEST(hardware, parse_cache_size) {
    EXPECT_EQ(parse_cache_size("32K\n"), 32 * kib);
    EXPECT_EQ(parse_cache_size("1024K"), 1024 * kib);
    EXPECT_EQ(parse_cache_size("32M"), 32 * mib);
    EXPECT_EQ(parse_cache_size("1G"), gib);
    EXPECT_EQ(parse_cache_size("512"), 512u);
    EXPECT_FALSE(parse_cache_size(""));
    EXPECT_FALSE(parse_cache_size("K"));
    EXPECT_FALSE(parse_cache_size("12Q"));
    EXPECT_FALSE(parse_cache_size("-4K"));
    EXPECT_FALSE(parse_cache_size("99999999999999999999K"));
    EXPECT_FALSE(parse_cache_size("18014398509481984G")); // overflows when scaled
}

TEST(hardware, meminfo_without_cgroup) {
    fake_root r;
    r.write("proc/meminfo", meminfo_16g);
    hardware_info hw;
    read_memory(r.path(), hw);
    EXPECT_EQ(hw.ram_total, 16 * gib);
    EXPECT_EQ(hw.ram_available, 8 * gib);
    EXPECT_FALSE(hw.cgroup_mem_limit);
    EXPECT_EQ(hw.ram_total_effective, 16 * gib);
    EXPECT_EQ(hw.ram_available_effective, 8 * gib);
}

TEST(hardware, cgroup_v2_memory_and_cpu) {
    fake_root r;
    r.write("proc/meminfo", meminfo_16g);
    r.write("proc/self/cgroup", "0::/docker/abc\n");
    r.write("sys/fs/cgroup/docker/abc/memory.max", "4294967296\n");
    r.write("sys/fs/cgroup/docker/abc/memory.current", "1073741824\n");
    r.write("sys/fs/cgroup/docker/abc/memory.stat", "anon 500000000\nfile 300000000\ninactive_file 268435456\n");
    r.write("sys/fs/cgroup/docker/abc/cpu.max", "150000 100000\n");
    r.write("sys/fs/cgroup/docker/memory.max", "max\n");
    r.write("sys/fs/cgroup/docker/cpu.max", "max 100000\n");
    hardware_info hw;
    read_memory(r.path(), hw);
    EXPECT_EQ(hw.cgroup_mem_limit, 4 * gib);
    EXPECT_EQ(hw.cgroup_mem_usage, 1 * gib - 256 * mib); // inactive file cache is reclaimable
    EXPECT_EQ(hw.ram_total_effective, 4 * gib);
    EXPECT_EQ(hw.ram_available_effective, 4 * gib - (1 * gib - 256 * mib));

    r.write("sys/devices/system/cpu/online", "0-7\n");
    read_cpus(r.path(), hw);
    ASSERT_TRUE(hw.cgroup_cpu_quota);
    EXPECT_DOUBLE_EQ(*hw.cgroup_cpu_quota, 1.5);
    EXPECT_EQ(hw.n_logical_cpus, 8u);
    EXPECT_EQ(hw.n_threads_effective, 1u); // floor(1.5)
    EXPECT_EQ(hw.n_cores_effective, 1u);
}

TEST(hardware, cgroup_v2_parent_limit_is_tighter) {
    fake_root r;
    r.write("proc/meminfo", meminfo_16g);
    r.write("proc/self/cgroup", "0::/a/b\n");
    r.write("sys/fs/cgroup/a/b/memory.max", "max\n");
    r.write("sys/fs/cgroup/a/memory.max", "2147483648\n");
    r.write("sys/fs/cgroup/a/memory.current", "536870912\n");
    r.write("sys/fs/cgroup/a/b/cpu.max", "400000 100000\n");
    r.write("sys/fs/cgroup/a/cpu.max", "200000 100000\n");
    hardware_info hw;
    read_memory(r.path(), hw);
    read_cpus(r.path(), hw);
    EXPECT_EQ(hw.cgroup_mem_limit, 2 * gib);
    EXPECT_EQ(hw.ram_available_effective, 2 * gib - 512 * mib);
    ASSERT_TRUE(hw.cgroup_cpu_quota);
    EXPECT_DOUBLE_EQ(*hw.cgroup_cpu_quota, 2.0);
}

TEST(hardware, cgroup_v2_limit_above_host_ram) {
    fake_root r;
    r.write("proc/meminfo", meminfo_16g);
    r.write("proc/self/cgroup", "0::/\n");
    r.write("sys/fs/cgroup/memory.max", "68719476736\n"); // 64 GiB limit on a 16 GiB host
    hardware_info hw;
    read_memory(r.path(), hw);
    EXPECT_EQ(hw.cgroup_mem_limit, 64 * gib);
    EXPECT_EQ(hw.ram_total_effective, 16 * gib);
    EXPECT_EQ(hw.ram_available_effective, 8 * gib);
}

TEST(hardware, cgroup_v1_memory_and_cpu) {
    fake_root r;
    r.write("proc/meminfo", meminfo_16g);
    r.write("proc/self/cgroup", "9:name=systemd:/\n4:memory:/process_api/x\n2:cpu,cpuacct:/job\n0::/\n");
    r.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"); // v1 "unlimited"
    r.write("sys/fs/cgroup/memory/process_api/memory.limit_in_bytes", "9223372036854771712\n");
    r.write("sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes", "3221225472\n");
    r.write("sys/fs/cgroup/memory/process_api/x/memory.usage_in_bytes", "1073741824\n");
    r.write("sys/fs/cgroup/memory/process_api/x/memory.stat", "cache 5\ntotal_inactive_file 536870912\n");
    r.write("sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us", "300000\n");
    r.write("sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us", "100000\n");
    r.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    r.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    hardware_info hw;
    read_memory(r.path(), hw);
    read_cpus(r.path(), hw);
    EXPECT_EQ(hw.cgroup_mem_limit, 3 * gib);
    EXPECT_EQ(hw.cgroup_mem_usage, 512 * mib);
    EXPECT_EQ(hw.ram_total_effective, 3 * gib);
    EXPECT_EQ(hw.ram_available_effective, 3 * gib - 512 * mib);
    ASSERT_TRUE(hw.cgroup_cpu_quota);
    EXPECT_DOUBLE_EQ(*hw.cgroup_cpu_quota, 3.0);
}

TEST(hardware, cgroup_v1_unlimited_is_no_limit) {
    fake_root r;
    r.write("proc/meminfo", meminfo_16g);
    r.write("proc/self/cgroup", "4:memory:/\n1:cpu:/\n");
    r.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    r.write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
    r.write("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
    hardware_info hw;
    read_memory(r.path(), hw);
    read_cpus(r.path(), hw);
    EXPECT_FALSE(hw.cgroup_mem_limit);
    EXPECT_FALSE(hw.cgroup_cpu_quota);
    EXPECT_EQ(hw.ram_total_effective, 16 * gib);
}

TEST(hardware, topology_with_smt_and_affinity) {
    fake_root r;
    r.write("sys/devices/system/cpu/online", "0-7\n");
    for (int cpu = 0; cpu < 8; ++cpu) {
        r.cpu(cpu, 0, cpu % 4); // 4 cores, 2 threads each: cpu n and n+4 are siblings
    }
    r.write("proc/self/status", "Name:\tinferbox\nCpus_allowed:\t33\nCpus_allowed_list:\t0-1,4-5\n");
    hardware_info hw;
    read_cpus(r.path(), hw);
    EXPECT_EQ(hw.n_logical_cpus, 8u);
    EXPECT_EQ(hw.n_physical_cores, 4u);
    EXPECT_EQ(hw.n_cpus_allowed, 4u);
    EXPECT_EQ(hw.n_threads_effective, 4u);
    EXPECT_EQ(hw.n_cores_effective, 2u); // cpus 0,1,4,5 are cores 0 and 1
}

TEST(hardware, two_packages) {
    fake_root r;
    r.write("sys/devices/system/cpu/online", "0-3\n");
    r.cpu(0, 0, 0);
    r.cpu(1, 0, 1);
    r.cpu(2, 1, 0); // same core id on another package is another core
    r.cpu(3, 1, 1);
    hardware_info hw;
    read_cpus(r.path(), hw);
    EXPECT_EQ(hw.n_physical_cores, 4u);
    EXPECT_EQ(hw.n_cores_effective, 4u);
}

TEST(hardware, cpuinfo_fallback_for_cores_and_model) {
    fake_root   r;
    std::string cpuinfo;
    for (int cpu = 0; cpu < 4; ++cpu) {
        cpuinfo += "processor\t: " + std::to_string(cpu) + "\nvendor_id\t: GenuineIntel\n" +
                   "model name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz\nphysical id\t: 0\ncore id\t\t: " +
                   std::to_string(cpu / 2) + "\nflags\t\t: fpu avx avx2\n\n";
    }
    r.write("proc/cpuinfo", cpuinfo);
    hardware_info hw;
    read_cpus(r.path(), hw);
    EXPECT_EQ(hw.cpu_model, "Intel(R) Xeon(R) Test CPU @ 2.00GHz");
    EXPECT_EQ(hw.n_logical_cpus, 4u);   // counted from "processor" lines
    EXPECT_EQ(hw.n_physical_cores, 2u); // (physical id, core id) pairs
    EXPECT_EQ(hw.n_cores_effective, 2u);
    EXPECT_EQ(hw.n_threads_effective, 4u);
}

TEST(hardware, arm_cpuinfo_without_core_ids) {
    fake_root r;
    r.write("proc/cpuinfo", "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n"
                            "processor\t: 1\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n");
    hardware_info hw;
    read_cpus(r.path(), hw);
    EXPECT_EQ(hw.cpu_model, "implementer 0x41 part 0xd0c");
    EXPECT_EQ(hw.n_logical_cpus, 2u);
    EXPECT_EQ(hw.n_physical_cores, 2u); // no topology anywhere: the logical count
}

TEST(hardware, caches) {
    fake_root r;
    r.cache(0, 1, "Data", "48K");
    r.cache(1, 1, "Instruction", "32K");
    r.cache(2, 2, "Unified", "2048K");
    r.cache(3, 3, "Unified", "32768K");
    hardware_info hw;
    read_cpus(r.path(), hw);
    EXPECT_EQ(hw.l1d_bytes, 48 * kib);
    EXPECT_EQ(hw.l2_bytes, 2 * mib);
    EXPECT_EQ(hw.l3_bytes, 32 * mib);
}

TEST(hardware, memlock_limit) {
    fake_root r;
    r.write("proc/self/limits", "Limit                     Soft Limit           Hard Limit           Units     \n"
                                "Max locked memory         8388608              8388608              bytes     \n");
    hardware_info hw;
    read_memory(r.path(), hw);
    EXPECT_EQ(hw.memlock_limit, 8 * mib);
    r.write("proc/self/limits", "Max locked memory         unlimited            unlimited            bytes\n");
    hardware_info hw2;
    read_memory(r.path(), hw2);
    EXPECT_EQ(hw2.memlock_limit, UINT64_MAX);
}

TEST(hardware, empty_root_leaves_everything_unknown) {
    fake_root           r;
    const hardware_info hw = detect_hardware(r.path() / "does-not-exist");
    EXPECT_FALSE(hw.ram_total);
    EXPECT_FALSE(hw.ram_available);
    EXPECT_FALSE(hw.n_logical_cpus);
    EXPECT_FALSE(hw.n_physical_cores);
    EXPECT_FALSE(hw.cgroup_mem_limit);
    EXPECT_FALSE(hw.cgroup_cpu_quota);
    EXPECT_FALSE(hw.l1d_bytes);
    EXPECT_EQ(hw.ram_total_effective, 0u);
    EXPECT_EQ(hw.ram_available_effective, 0u);
    EXPECT_EQ(hw.n_cores_effective, 1u);
    EXPECT_EQ(hw.n_threads_effective, 1u);
    EXPECT_TRUE(hw.gpus.empty());
}

TEST(hardware, garbage_files_leave_fields_unknown) {
    fake_root r;
    r.write("proc/meminfo", "MemTotal: lots kB\nMemAvailable: 99999999999999999999999 kB\n:::\n\x01\x02\xff\n"
                            "MemFree 12 kB\nMemTotal:\n");
    r.write("proc/self/cgroup", "garbage\n0::/../../etc\n4:memory:relative/path\n::\n");
    r.write("sys/fs/cgroup/memory.max", "-1\n");
    r.write("sys/fs/cgroup/cpu.max", "lots\n");
    r.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "twelve\n");
    r.write("sys/devices/system/cpu/online", "0-\n");
    r.write("sys/devices/system/cpu/cpu0/topology/core_id", "x\n");
    r.write("sys/devices/system/cpu/cpu0/topology/physical_package_id", "\n");
    r.write("proc/self/status", "Cpus_allowed_list:\t7-3\n");
    static const char cpuinfo[] = "processor: x\ncore id: \nmodel name\n\0\0\0";
    r.write("proc/cpuinfo", std::string(cpuinfo, sizeof cpuinfo - 1));
    r.write("proc/self/limits", "Max locked memory         lots lots bytes\n");
    r.cache(0, 1, "Data", "huge");
    r.write("sys/devices/system/cpu/cpu0/cache/index1/level", "banana\n");
    const hardware_info hw = detect_hardware(r.path());
    EXPECT_FALSE(hw.ram_total);
    EXPECT_FALSE(hw.ram_available);
    EXPECT_FALSE(hw.cgroup_mem_limit);
    EXPECT_FALSE(hw.cgroup_cpu_quota);
    EXPECT_FALSE(hw.n_cpus_allowed);
    EXPECT_FALSE(hw.l1d_bytes);
    EXPECT_FALSE(hw.memlock_limit);
    EXPECT_GE(hw.n_cores_effective, 1u);
    EXPECT_GE(hw.n_threads_effective, hw.n_cores_effective);
}

TEST(hardware, cgroup_path_cannot_escape_the_cgroup_mount) {
    fake_root r;
    r.write("proc/meminfo", meminfo_16g);
    r.write("proc/self/cgroup", "0::/../outside\n");
    r.write("sys/fs/outside/memory.max", "1048576\n"); // would be read if ".." were followed
    hardware_info hw;
    read_memory(r.path(), hw);
    EXPECT_FALSE(hw.cgroup_mem_limit);
}

TEST(hardware, huge_files_are_cut_not_loaded) {
    fake_root r;
    r.write("proc/meminfo", std::string(3u << 20, 'x') + "\nMemTotal: 1 kB\n");
    hardware_info hw;
    read_memory(r.path(), hw); // the 3 MiB line is cut at 1 MiB: MemTotal is never reached
    EXPECT_FALSE(hw.ram_total);
}

TEST(hardware, format_memory_size) {
    EXPECT_EQ(format_memory_size(12), "12 B");
    EXPECT_EQ(format_memory_size(40 * kib), "40 KiB");
    EXPECT_EQ(format_memory_size(1536 * mib), "1.5 GiB");
    EXPECT_EQ(format_memory_size(UINT64_MAX), "16 EiB");
}

TEST(hardware, real_machine_is_sane) {
    const hardware_info hw = detect_hardware();
    EXPECT_FALSE(hw.arch.empty());
    EXPECT_GE(hw.n_cores_effective, 1u);
    EXPECT_GE(hw.n_threads_effective, hw.n_cores_effective);
#ifdef __linux__
    ASSERT_TRUE(hw.n_logical_cpus);
    EXPECT_GE(*hw.n_logical_cpus, 1u);
    ASSERT_TRUE(hw.n_physical_cores);
    EXPECT_LE(*hw.n_physical_cores, *hw.n_logical_cpus);
    ASSERT_TRUE(hw.ram_total);
    EXPECT_GT(*hw.ram_total, 0u);
    EXPECT_GT(hw.ram_available_effective, 0u);
    EXPECT_LE(hw.ram_available_effective, hw.ram_total_effective);
#endif
#if defined(__x86_64__)
    // Implications that hold on every real CPU.
    if (hw.isa.avx2) {
        EXPECT_TRUE(hw.isa.avx);
    }
    if (hw.isa.avx512bw || hw.isa.avx512vl) {
        EXPECT_TRUE(hw.isa.avx512f);
    }
#elif defined(__aarch64__)
    EXPECT_TRUE(hw.isa.neon);
#endif
}

TEST(hardware, isa_feature_names) {
    cpu_isa isa;
    EXPECT_TRUE(isa_feature_names(isa).empty());
    isa.avx2        = true;
    isa.avx512_vnni = true;
    isa.amx_int8    = true;
    EXPECT_EQ(isa_feature_names(isa), (std::vector<std::string_view>{"avx2", "avx512_vnni", "amx_int8"}));
}
