#include "engine/kernel_probe.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>

namespace inferbox {

namespace {

constexpr int64_t  row_length     = 4096;              // ne0 of the probe matrix: a typical hidden size
constexpr uint64_t target_bytes   = uint64_t(6) << 20; // the matrix's size: cache-resident on most CPUs
constexpr int64_t  row_multiple   = 16;                // every repack layout interleaves 4, 8 or 16 rows
constexpr int64_t  min_rows       = 64;
constexpr int64_t  distinct_rows  = 64; // quantized once, then repeated down the matrix
constexpr int      warmup_runs    = 3;
constexpr int      max_threads    = GGML_MAX_N_THREADS;
constexpr uint64_t random_seed    = 0x9e3779b97f4a7c15ULL; // any nonzero seed: the data only has to be fixed
constexpr size_t   graph_capacity = 8;
constexpr size_t   align_slack    = size_t(4) * GGML_MEM_ALIGN; // each tensor's data is aligned in its context
// The batched product is compute-bound, so its matrix need not stay cache-sized: a quarter of the
// rows keeps each run short (tens of milliseconds) while every thread still gets many rows.
constexpr int64_t batch_row_divisor = 4;
constexpr int     batch_warmup_runs = 1;

std::string lowercase(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); });
    return out;
}

// The types ggml_quantize_chunk can produce (it aborts on any other), less those that need an
// importance matrix, and only where the CPU backend has a dot product for them.
bool buildable(ggml_type type) {
    switch (type) {
    case GGML_TYPE_F32:
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
    case GGML_TYPE_Q1_0:
    case GGML_TYPE_Q2_0:
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1:
    case GGML_TYPE_Q5_0:
    case GGML_TYPE_Q5_1:
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_MXFP4:
    case GGML_TYPE_NVFP4:
    case GGML_TYPE_Q2_K:
    case GGML_TYPE_Q3_K:
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K:
    case GGML_TYPE_Q6_K:
    case GGML_TYPE_TQ1_0:
    case GGML_TYPE_TQ2_0:
    case GGML_TYPE_IQ2_XXS:
    case GGML_TYPE_IQ2_XS:
    case GGML_TYPE_IQ3_XXS:
    case GGML_TYPE_IQ3_S:
    case GGML_TYPE_IQ2_S:
    case GGML_TYPE_IQ1_S:
    case GGML_TYPE_IQ1_M:
    case GGML_TYPE_IQ4_NL:
    case GGML_TYPE_IQ4_XS:
        break;
    default:
        return false;
    }
    if (ggml_quantize_requires_imatrix(type)) {
        return false;
    }
    const int64_t block = ggml_blck_size(type);
    if (block <= 0 || row_length % block != 0) {
        return false;
    }
    const ggml_type_traits_cpu *cpu = ggml_get_type_traits_cpu(type);
    return cpu != nullptr && cpu->vec_dot != nullptr;
}

// The type ggml calls `name` (any case), if the probe can build a matrix of it.
std::optional<ggml_type> lookup_type(const std::string &name) {
    const std::string wanted = lowercase(name);
    for (int i = 0; i < GGML_TYPE_COUNT; ++i) {
        const auto  type = static_cast<ggml_type>(i);
        const char *n    = ggml_type_name(type);
        if (n != nullptr && lowercase(n) == wanted) {
            return buildable(type) ? std::optional<ggml_type>(type) : std::nullopt;
        }
    }
    return std::nullopt;
}

// About target_bytes of rows, a multiple of row_multiple and at least min_rows.
int64_t probe_rows(ggml_type type) {
    const auto row_bytes = static_cast<int64_t>(ggml_row_size(type, row_length));
    int64_t    rows      = static_cast<int64_t>(target_bytes) / std::max<int64_t>(row_bytes, 1);
    rows -= rows % row_multiple;
    return std::max(rows, min_rows);
}

// xorshift64: deterministic values in [-1, 1).
class pseudo_random {
  public:
    float next() {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 7;
        state_ ^= state_ << 17;
        return static_cast<float>(state_ >> 40) / static_cast<float>(uint64_t(1) << 23) - 1.0f;
    }

  private:
    uint64_t state_ = random_seed;
};

// The matrix in `type`, as its bytes in ggml's plain layout: distinct_rows rows quantized from
// pseudo-random data, repeated to `rows` rows (the kernels' speed does not depend on the values,
// and quantizing 6 MiB of some types would take longer than measuring them).
std::vector<uint8_t> quantized_matrix(ggml_type type, int64_t rows) {
    const int64_t      unique = std::min(distinct_rows, rows);
    std::vector<float> source(static_cast<size_t>(unique * row_length));
    pseudo_random      rng;
    for (float &v : source) {
        v = rng.next();
    }
    const size_t         row_bytes = ggml_row_size(type, row_length);
    std::vector<uint8_t> block(row_bytes * static_cast<size_t>(unique));
    ggml_quantize_chunk(type, source.data(), block.data(), 0, unique, row_length, nullptr);

    std::vector<uint8_t> matrix(row_bytes * static_cast<size_t>(rows));
    for (size_t at = 0; at < matrix.size(); at += block.size()) {
        std::memcpy(matrix.data() + at, block.data(), std::min(block.size(), matrix.size() - at));
    }
    return matrix;
}

struct context_deleter {
    void operator()(ggml_context *ctx) const { ggml_free(ctx); }
};
struct buffer_deleter {
    void operator()(ggml_backend_buffer *buf) const { ggml_backend_buffer_free(buf); }
};
struct threadpool_deleter {
    void operator()(ggml_threadpool *tp) const { ggml_threadpool_free(tp); }
};
using context_ptr    = std::unique_ptr<ggml_context, context_deleter>;
using buffer_ptr     = std::unique_ptr<ggml_backend_buffer, buffer_deleter>;
using threadpool_ptr = std::unique_ptr<ggml_threadpool, threadpool_deleter>;

// One y = W·x graph, x of `columns` columns. W lives in a backend buffer of the chosen type (its own metadata context);
// x, y and the graph live in a context that allocates their memory itself.
struct probe_graph {
    context_ptr  weight_ctx;
    context_ptr  compute_ctx;
    buffer_ptr   weight_buf;
    ggml_tensor *w     = nullptr;
    ggml_tensor *y     = nullptr;
    ggml_cgraph *graph = nullptr;
};

std::unique_ptr<probe_graph> build_graph(ggml_type type, int64_t rows, int64_t columns,
                                         ggml_backend_buffer_type_t buft) {
    auto g = std::make_unique<probe_graph>();

    ggml_init_params wp{};
    wp.mem_size   = ggml_tensor_overhead();
    wp.mem_buffer = nullptr;
    wp.no_alloc   = true;
    g->weight_ctx.reset(ggml_init(wp));
    if (!g->weight_ctx) {
        return nullptr;
    }
    g->w = ggml_new_tensor_2d(g->weight_ctx.get(), type, row_length, rows);
    ggml_set_name(g->w, "kernel_probe_weights");
    g->weight_buf.reset(ggml_backend_alloc_ctx_tensors_from_buft(g->weight_ctx.get(), buft));
    if (!g->weight_buf) {
        return nullptr;
    }

    ggml_init_params cp{};
    cp.mem_size = 3 * ggml_tensor_overhead() + ggml_graph_overhead_custom(graph_capacity, false) +
                  static_cast<size_t>((row_length + rows) * columns) * sizeof(float) + align_slack;
    cp.mem_buffer = nullptr;
    cp.no_alloc   = false;
    g->compute_ctx.reset(ggml_init(cp));
    if (!g->compute_ctx) {
        return nullptr;
    }
    ggml_tensor  *x = ggml_new_tensor_2d(g->compute_ctx.get(), GGML_TYPE_F32, row_length, columns);
    pseudo_random rng;
    auto         *xs = static_cast<float *>(x->data);
    for (int64_t i = 0; i < row_length * columns; ++i) {
        xs[i] = rng.next();
    }
    g->y     = ggml_mul_mat(g->compute_ctx.get(), g->w, x);
    g->graph = ggml_new_graph_custom(g->compute_ctx.get(), graph_capacity, false);
    ggml_build_forward_expand(g->graph, g->y);
    return g;
}

// The CPU backend's extra buffer types (repack, AMX, KleidiAI: whichever this ggml was built
// with), in the order llama.cpp tries them for weights.
std::vector<ggml_backend_buffer_type_t> extra_buffer_types(ggml_backend_dev_t dev) {
    std::vector<ggml_backend_buffer_type_t> out;
    ggml_backend_reg_t                      reg = ggml_backend_cpu_reg();
    if (reg == nullptr || dev == nullptr) {
        return out;
    }
    auto *get = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
    if (get == nullptr) {
        return out;
    }
    for (ggml_backend_buffer_type_t *b = get(dev); b != nullptr && *b != nullptr; ++b) {
        out.push_back(*b);
    }
    return out;
}

// The graph for `type` with W where llama.cpp would put it: the first extra buffer type whose
// kernel takes this product, else plain CPU memory. nullptr: the CPU cannot multiply this type.
std::unique_ptr<probe_graph> place_graph(ggml_type type, int64_t rows, int64_t columns) {
    ggml_backend_reg_t reg = ggml_backend_cpu_reg();
    ggml_backend_dev_t dev = reg != nullptr ? ggml_backend_reg_dev_get(reg, 0) : nullptr;
    if (dev == nullptr) {
        return nullptr;
    }
    for (ggml_backend_buffer_type_t buft : extra_buffer_types(dev)) {
        auto g = build_graph(type, rows, columns, buft);
        if (g && ggml_backend_dev_supports_op(dev, g->y)) {
            return g;
        }
    }
    auto g = build_graph(type, rows, columns, ggml_backend_cpu_buffer_type());
    if (g && ggml_backend_dev_supports_op(dev, g->y)) {
        return g;
    }
    return nullptr;
}

// The median seconds of one product of `columns` columns (nullopt: the CPU cannot run it), W
// holding `type`'s pseudo-random rows. Each run is timed on its own; the rate comes from the
// median run. A thread that loses its core for one scheduler tick stalls the others at the
// product's barrier, and a few such runs (tens of milliseconds against a tenth of one) would
// otherwise dominate a mean.
struct product_timing {
    double median_s     = 0; // one product
    size_t weight_bytes = 0; // W's size
    double window_s     = 0; // the timed window, all runs
};

std::optional<product_timing> time_product(ggml_type type, int64_t rows, int64_t columns, int warmups,
                                           ggml_threadpool *pool, int threads, std::chrono::milliseconds budget) {
    auto g = place_graph(type, rows, columns);
    if (!g) {
        return std::nullopt;
    }
    const size_t nbytes = ggml_nbytes(g->w);
    {
        const std::vector<uint8_t> data = quantized_matrix(type, rows);
        if (data.size() != nbytes) {
            return std::nullopt;
        }
        // Through the buffer's interface: a repack buffer rearranges the rows here.
        ggml_backend_tensor_set(g->w, data.data(), 0, nbytes);
    }

    ggml_cplan           plan = ggml_graph_plan(g->graph, threads, pool);
    std::vector<uint8_t> work(plan.work_size);
    plan.work_data = work.empty() ? nullptr : work.data();
    auto run       = [&] { return ggml_graph_compute(g->graph, &plan) == GGML_STATUS_SUCCESS; };

    for (int i = 0; i < warmups; ++i) {
        if (!run()) {
            return std::nullopt;
        }
    }
    using clock = std::chrono::steady_clock;
    std::vector<double> runs;
    const auto          start    = clock::now();
    const auto          deadline = start + budget;
    auto                now      = start;
    do {
        const auto before = now;
        if (!run()) {
            return std::nullopt;
        }
        now = clock::now();
        runs.push_back(std::chrono::duration<double>(now - before).count());
    } while (now < deadline);

    const auto middle = runs.begin() + static_cast<std::ptrdiff_t>(runs.size() / 2);
    std::nth_element(runs.begin(), middle, runs.end());
    const product_timing t{*middle, nbytes, std::chrono::duration<double>(now - start).count()};
    if (t.median_s <= 0 || t.window_s <= 0) {
        return std::nullopt;
    }
    return t;
}

std::optional<kernel_throughput> measure_one(ggml_type type, ggml_threadpool *pool, int threads,
                                             std::chrono::milliseconds budget) {
    const int64_t rows = probe_rows(type);
    const auto    vec  = time_product(type, rows, 1, warmup_runs, pool, threads, budget);
    if (!vec) {
        return std::nullopt;
    }
    kernel_throughput r;
    r.type         = lowercase(ggml_type_name(type));
    r.weight_bytes = vec->weight_bytes;
    r.seconds      = vec->window_s;
    r.bytes_per_s  = static_cast<double>(vec->weight_bytes) / vec->median_s;

    // The prompt's product: every column passes through every weight, so the rate counts W's
    // bytes once per column. A type the CPU multiplies one column at a time but not in batches
    // (none today) keeps 0.
    int64_t batch_rows = rows / batch_row_divisor;
    batch_rows         = std::max(batch_rows - batch_rows % row_multiple, min_rows);
    const auto batch = time_product(type, batch_rows, k_probe_batch_columns, batch_warmup_runs, pool, threads, budget);
    if (batch) {
        r.batch_bytes_per_s = static_cast<double>(batch->weight_bytes) * k_probe_batch_columns / batch->median_s;
        r.seconds += batch->window_s;
    }
    return r;
}

} // namespace

std::vector<kernel_throughput> measure_kernels(int threads, const std::vector<std::string> &types, int budget_ms) {
    std::vector<kernel_throughput> out;
    try {
        static const std::vector<std::string> defaults = {"f16", "bf16", "q8_0", "q6_k", "q5_k", "q4_k", "q4_0"};
        const std::vector<std::string>       &names    = types.empty() ? defaults : types;
        threads                                        = std::clamp(threads, 1, max_threads);
        const std::chrono::milliseconds budget(std::max(budget_ms, 1));

        ggml_cpu_init();
        ggml_threadpool_params params = ggml_threadpool_params_default(threads);
        threadpool_ptr         pool(ggml_threadpool_new(&params));
        if (!pool) {
            return out;
        }
        for (const std::string &name : names) {
            const std::optional<ggml_type> type = lookup_type(name);
            if (!type) {
                continue;
            }
            std::optional<kernel_throughput> r = measure_one(*type, pool.get(), threads, budget);
            if (r) {
                out.push_back(std::move(*r));
            }
        }
    } catch (...) { // out of memory: what was measured so far
    }
    return out;
}

} // namespace inferbox
