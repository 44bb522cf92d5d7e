#include "store/roofline.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

namespace inferbox {

namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto &c : out) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return out;
}

// Sums a slice with four independent accumulators (so the adds never wait on each other and the
// loop stays bound by the loads). The result is kept so the compiler cannot drop the reads. This
// portable loop is the fallback; on x86 the widest loads the CPU has are used instead (below).
uint64_t sum_slice_scalar(const uint64_t *p, size_t n) {
    uint64_t a = 0;
    uint64_t b = 0;
    uint64_t c = 0;
    uint64_t d = 0;
    size_t   i = 0;
    for (; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    for (; i < n; ++i) {
        a += p[i];
    }
    return a ^ b ^ c ^ d;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// A core keeps only so many cache-line misses in flight, and one 8-byte load per instruction
// issues them too slowly to fill them: on a 2-core Xeon the scalar loop read 18-20 GB/s where
// 64-byte loads read 27-30 GB/s, and decode kernels (which load 32 or 64 bytes at a time) read
// more than the scalar figure allowed. The probe must measure what the memory gives, not what
// one loop shape asks of it, so it reads with the widest vectors the CPU has. The generic vector
// type (GCC/Clang extension) compiles to one full-width load per element under each target.
template <size_t Bytes> using u64_vec __attribute__((vector_size(Bytes))) = uint64_t;

template <size_t Bytes> __attribute__((always_inline)) inline uint64_t sum_slice_vec(const uint64_t *p, size_t n) {
    using vec                   = u64_vec<Bytes>;
    constexpr size_t per_vector = Bytes / sizeof(uint64_t);
    const size_t     vectors    = n / per_vector;
    vec              a{};
    vec              b{};
    vec              c{};
    vec              d{};
    size_t           i = 0;
    for (; i + 4 <= vectors; i += 4) {
        vec x;
        vec y;
        vec z;
        vec w;
        __builtin_memcpy(&x, p + (i * per_vector), Bytes);
        __builtin_memcpy(&y, p + ((i + 1) * per_vector), Bytes);
        __builtin_memcpy(&z, p + ((i + 2) * per_vector), Bytes);
        __builtin_memcpy(&w, p + ((i + 3) * per_vector), Bytes);
        a += x;
        b += y;
        c += z;
        d += w;
    }
    const vec s   = a ^ b ^ c ^ d;
    uint64_t  out = sum_slice_scalar(p + (i * per_vector), n - (i * per_vector));
    for (size_t k = 0; k < per_vector; ++k) {
        out ^= s[k];
    }
    return out;
}

__attribute__((target("avx512f"))) uint64_t sum_slice_avx512(const uint64_t *p, size_t n) {
    return sum_slice_vec<64>(p, n);
}
__attribute__((target("avx2"))) uint64_t sum_slice_avx2(const uint64_t *p, size_t n) {
    return sum_slice_vec<32>(p, n);
}
uint64_t sum_slice_sse2(const uint64_t *p, size_t n) {
    return sum_slice_vec<16>(p, n); // SSE2 is the x86-64 baseline
}
#endif

using slice_reader = uint64_t (*)(const uint64_t *, size_t);

slice_reader widest_reader() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        return sum_slice_avx512;
    }
    if (__builtin_cpu_supports("avx2")) {
        return sum_slice_avx2;
    }
    return sum_slice_sse2;
#else
    return sum_slice_scalar;
#endif
}

} // namespace

bandwidth_measurement measure_read_bandwidth(uint32_t threads, uint64_t buffer_bytes,
                                             std::chrono::milliseconds window) {
    threads                      = std::max<uint32_t>(1, std::min<uint32_t>(threads, 1024));
    buffer_bytes                 = std::max<uint64_t>(buffer_bytes, uint64_t{1} << 20);
    const size_t       words     = buffer_bytes / sizeof(uint64_t);
    const size_t       slice     = words / threads;
    const slice_reader sum_slice = widest_reader();
    // Not zeroed here: each thread writes its own slice first, so its pages are placed near it.
    auto buf = std::make_unique_for_overwrite<uint64_t[]>(words);

    std::atomic<bool>        stop{false};
    std::atomic<uint64_t>    passes{0};
    std::atomic<uint64_t>    sink{0};
    std::barrier             ready(static_cast<std::ptrdiff_t>(threads) + 1);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    uint32_t started = 0;
    for (uint32_t t = 0; t < threads; ++t) {
        try {
            pool.emplace_back([&, t] {
                uint64_t *p = buf.get() + t * slice;
                for (size_t i = 0; i < slice; ++i) {
                    p[i] = i * 0x9E3779B97F4A7C15ULL + t; // first touch by its reader
                }
                uint64_t acc = sum_slice(p, slice); // warm-up pass
                ready.arrive_and_wait();
                uint64_t mine = 0;
                while (!stop.load(std::memory_order_relaxed)) {
                    acc += sum_slice(p, slice);
                    ++mine;
                }
                passes.fetch_add(mine);
                sink.fetch_xor(acc);
            });
            ++started;
        } catch (const std::system_error &) {
            break; // no thread for this slice (a pids limit): the ones started finish, then it fails
        }
    }
    if (started < threads) {
        stop.store(true);
        for (uint32_t t = started; t < threads; ++t) {
            ready.arrive_and_drop(); // stand in for the threads that never started
        }
        ready.arrive_and_wait();
        for (auto &th : pool) {
            th.join();
        }
        return {0, started, 0, 0};
    }
    ready.arrive_and_wait();
    const auto start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(window);
    stop.store(true);
    for (auto &th : pool) {
        th.join();
    }
    // The last pass of each thread finished after the stop: the window ends when the last one does.
    const double          seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bandwidth_measurement out;
    out.threads      = threads;
    out.buffer_bytes = static_cast<uint64_t>(slice) * threads * sizeof(uint64_t);
    out.seconds      = seconds;
    out.bytes_per_s =
        seconds > 0 ? static_cast<double>(passes.load()) * static_cast<double>(slice) * sizeof(uint64_t) / seconds : 0;
    return out;
}

machine_roofline keep_faster(const machine_roofline &earlier, const machine_roofline &fresh,
                             std::vector<std::string> *kept) {
    machine_roofline out = fresh;
    if (earlier.threads != fresh.threads) {
        return out; // another configuration: nothing to compare
    }
    if (earlier.read_bytes_per_s > out.read_bytes_per_s) {
        out.read_bytes_per_s = earlier.read_bytes_per_s;
        if (kept != nullptr) {
            kept->emplace_back("memory read");
        }
    }
    const auto keep = [kept](const std::map<std::string, double> &before, std::map<std::string, double> &now,
                             const char *what) {
        for (const auto &[type, rate] : before) {
            auto it = now.find(type);
            if (it != now.end() && rate > it->second) {
                it->second = rate;
                if (kept != nullptr) {
                    kept->push_back(what + type);
                }
            }
        }
    };
    keep(earlier.kernel_bytes_per_s, out.kernel_bytes_per_s, "kernel ");
    keep(earlier.batch_kernel_bytes_per_s, out.batch_kernel_bytes_per_s, "batched ");
    return out;
}

std::optional<decode_prediction> predict_decode(const gguf_info &model, const machine_roofline &m) {
    if (m.read_bytes_per_s <= 0) {
        return std::nullopt;
    }
    // With a separate output matrix the token-embedding table is only looked up (one row a token);
    // with tied embeddings it is also the output matrix, read whole.
    const bool                      has_output = std::any_of(model.tensors.begin(), model.tensors.end(),
                                                             [](const gguf_tensor_info &t) { return t.name == "output.weight"; });
    std::map<std::string, uint64_t> bytes_by_type;
    std::map<std::string, uint64_t> prompt_bytes_by_type; // what every prompt token passes through
    for (const auto &t : model.tensors) {
        if (t.name == "token_embd.weight" && has_output) {
            continue;
        }
        const auto        traits = ggml_type_traits_of(t.type);
        const std::string type   = traits ? lower(traits->name) : "type" + std::to_string(t.type);
        bytes_by_type[type] += t.n_bytes;
        if (t.name != "token_embd.weight" && t.name != "output.weight") {
            prompt_bytes_by_type[type] += t.n_bytes;
        }
    }
    decode_prediction p;
    double            t_roof             = 0;
    double            t_bw               = 0;
    double            t_kern             = 0;
    bool              all_measured       = true;
    uint64_t          kernel_bound_bytes = 0;
    for (const auto &[type, bytes] : bytes_by_type) {
        p.bytes_per_token += bytes;
        const double b = static_cast<double>(bytes);
        t_bw += b / m.read_bytes_per_s;
        const auto k = m.kernel_bytes_per_s.find(type);
        if (k == m.kernel_bytes_per_s.end() || k->second <= 0) {
            all_measured = false;
            p.unmeasured.push_back(type);
            t_roof += b / m.read_bytes_per_s;
            continue;
        }
        t_kern += b / k->second;
        t_roof += b / std::min(m.read_bytes_per_s, k->second);
        if (k->second < m.read_bytes_per_s) {
            kernel_bound_bytes += bytes;
        }
    }
    if (p.bytes_per_token == 0) {
        return std::nullopt;
    }
    p.tokens_per_s  = 1.0 / t_roof;
    p.bandwidth_tps = 1.0 / t_bw;
    p.kernel_tps    = all_measured && t_kern > 0 ? 1.0 / t_kern : 0;
    p.bound = kernel_bound_bytes == 0 ? "bandwidth" : kernel_bound_bytes == p.bytes_per_token ? "kernel" : "mixed";

    double t_prompt = 0;
    for (const auto &[type, bytes] : prompt_bytes_by_type) {
        const auto k = m.batch_kernel_bytes_per_s.find(type);
        if (k == m.batch_kernel_bytes_per_s.end() || k->second <= 0) {
            t_prompt = 0;
            break;
        }
        t_prompt += static_cast<double>(bytes) / k->second;
    }
    p.prefill_tps = t_prompt > 0 ? 1.0 / t_prompt : 0;
    return p;
}

} // namespace inferbox
