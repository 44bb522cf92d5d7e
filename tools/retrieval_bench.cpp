// The retrieval benchmark (docs/benchmarks.md, "Retrieval"; docs/retrieval.md explains the
// choice it informed): on synthetic clustered vectors with a fixed seed, the approximate
// nearest-neighbour libraries Debian packages — hnswlib (through inferbox's own wrapper) and,
// when libfaiss-dev was found at configure time, FAISS (IndexHNSWFlat and IndexIVFFlat) — each
// reporting build time, recall@k against exact search and single-threaded query latency (p50,
// p99); then the ingest rate of the whole retrieval library (chunks/s into the graph, SQLite and
// FTS5, embeddings given) and its keyword and hybrid search latency.
//
//   retrieval-bench [--n 100000] [--dim 384] [--queries 1000] [--m 16] [--ef-construction 100]
//                   [--ef-search 16,32,64,128] [--ingest-chunks 20000] [--no-faiss] ...
//
// Everything runs on one thread (FAISS's OpenMP included), so figures compare per core.

#include "retrieval/document_index.h"
#include "retrieval/hnsw_index.h"

#include <CLI/CLI.hpp>

#ifdef INFERBOX_HAVE_FAISS
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <omp.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using namespace inferbox::retrieval;
using clock_type = std::chrono::steady_clock;

struct options {
    size_t              n = 100000, dim = 384, queries = 1000, k = 10, clusters = 100, intrinsic = 24;
    double              noise = 0.05;
    uint64_t            seed  = 42;
    size_t              m = 16, ef_construction = 100;
    std::vector<size_t> ef_search{16, 32, 64, 128};
    size_t              ivf_nlist = 256, ivf_train = 20000;
    std::vector<size_t> ivf_nprobe{8, 16, 32, 64};
    size_t              ingest_chunks = 20000, chunks_per_doc = 100;
    bool                no_faiss = false;
};

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// CPU time of the process or of the calling thread: on a shared machine the wall clock also counts
// the time other processes held the core, so builds are reported in both and latencies in both.
double cpu_seconds(clockid_t which) {
    timespec ts{};
    clock_gettime(which, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Synthetic embeddings with the shape of real ones: `clusters` topics, each a random centre plus a
// random `intrinsic`-dimensional subspace the points spread in, plus a little isotropic noise;
// every vector normalized. Real sentence embeddings have a low intrinsic dimension too; pure
// isotropic noise would make every method look worse than it is on text.
struct generator {
    size_t                          dim, intrinsic;
    double                          noise;
    std::mt19937_64                 rng;
    std::vector<std::vector<float>> centres, bases; // bases[c]: intrinsic × dim

    explicit generator(const options &o) : dim(o.dim), intrinsic(o.intrinsic), noise(o.noise), rng(o.seed) {
        std::normal_distribution<float> g(0, 1);
        for (size_t c = 0; c < o.clusters; ++c) {
            std::vector<float> centre(dim), basis(intrinsic * dim);
            for (auto &x : centre) {
                x = g(rng);
            }
            normalize(centre);
            for (auto &x : basis) {
                x = g(rng) / std::sqrt(static_cast<float>(dim));
            }
            centres.push_back(std::move(centre));
            bases.push_back(std::move(basis));
        }
    }
    std::vector<float> next() {
        std::normal_distribution<float>       g(0, 1);
        std::uniform_int_distribution<size_t> pick(0, centres.size() - 1);
        const size_t                          c = pick(rng);
        std::vector<float>                    v = centres[c];
        for (size_t j = 0; j < intrinsic; ++j) {
            const float z = g(rng) * 0.6F;
            for (size_t i = 0; i < dim; ++i) {
                v[i] += z * bases[c][j * dim + i];
            }
        }
        for (auto &x : v) {
            x += static_cast<float>(noise) * g(rng) / std::sqrt(static_cast<float>(dim));
        }
        normalize(v);
        return v;
    }
};

// Exact top-k by inner product for every query (blocks of base vectors stay in cache).
std::vector<std::vector<int64_t>> exact_top_k(const std::vector<float> &base, const std::vector<float> &queries,
                                              size_t dim, size_t k) {
    const size_t                                        n = base.size() / dim, nq = queries.size() / dim;
    std::vector<std::vector<std::pair<float, int64_t>>> best(nq);
    constexpr size_t                                    block = 256;
    for (size_t b0 = 0; b0 < n; b0 += block) {
        const size_t b1 = std::min(n, b0 + block);
        for (size_t q = 0; q < nq; ++q) {
            auto &heap = best[q];
            for (size_t i = b0; i < b1; ++i) {
                const float s = dot_product(&queries[q * dim], &base[i * dim], dim);
                if (heap.size() < k) {
                    heap.emplace_back(s, static_cast<int64_t>(i));
                    std::push_heap(heap.begin(), heap.end(), std::greater<>());
                } else if (s > heap.front().first) {
                    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
                    heap.back() = {s, static_cast<int64_t>(i)};
                    std::push_heap(heap.begin(), heap.end(), std::greater<>());
                }
            }
        }
    }
    std::vector<std::vector<int64_t>> out(nq);
    for (size_t q = 0; q < nq; ++q) {
        for (const auto &[s, id] : best[q]) {
            out[q].push_back(id);
        }
    }
    return out;
}

struct run_figures {
    double recall = 0, p50_ms = 0, p99_ms = 0, cpu_p50_ms = 0, cpu_p99_ms = 0;
};

struct build_figures {
    double wall_s = 0, cpu_s = 0;
};

// Runs `search` (query index → ids) over every query, timing each, and scores it against truth.
run_figures measure(size_t nq, size_t k, const std::vector<std::vector<int64_t>> &truth,
                    const std::function<std::vector<int64_t>(size_t)> &search) {
    std::vector<double> ms(nq), cpu_ms(nq);
    size_t              hits = 0;
    for (size_t q = 0; q < nq; ++q) {
        const auto   t0    = clock_type::now();
        const double c0    = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
        const auto   found = search(q);
        cpu_ms[q]          = (cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - c0) * 1000;
        ms[q]              = seconds_since(t0) * 1000;
        for (const int64_t id : found) {
            hits += static_cast<size_t>(std::count(truth[q].begin(), truth[q].end(), id));
        }
    }
    std::sort(ms.begin(), ms.end());
    std::sort(cpu_ms.begin(), cpu_ms.end());
    const size_t p99 = std::min(nq - 1, nq * 99 / 100);
    return run_figures{static_cast<double>(hits) / static_cast<double>(nq * k), ms[nq / 2], ms[p99], cpu_ms[nq / 2],
                       cpu_ms[p99]};
}

void print_row(const std::string &library, const std::string &params, const build_figures &b, const run_figures &f) {
    std::printf("| %s | %s | %.1f (%.1f) | %.4f | %.3f (%.3f) | %.3f (%.3f) |\n", library.c_str(), params.c_str(),
                b.cpu_s, b.wall_s, f.recall, f.cpu_p50_ms, f.p50_ms, f.cpu_p99_ms, f.p99_ms);
    std::fflush(stdout);
}

void bench_hnswlib(const options &o, const std::vector<float> &base, const std::vector<float> &queries,
                   const std::vector<std::vector<int64_t>> &truth) {
    auto index = hnsw_index::create(o.dim, hnsw_params{o.m, o.ef_construction, 64}, o.n);
    if (!index) {
        std::fprintf(stderr, "%s\n", index.err().message.c_str());
        return;
    }
    const auto   t0 = clock_type::now();
    const double c0 = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (size_t i = 0; i < o.n; ++i) {
        if (auto err = (*index)->add(i, &base[i * o.dim])) {
            std::fprintf(stderr, "%s\n", err->message.c_str());
            return;
        }
    }
    const build_figures build{seconds_since(t0), cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0};
    for (const size_t ef : o.ef_search) {
        (*index)->set_ef_search(ef);
        const auto f = measure(o.queries, o.k, truth, [&](size_t q) {
            std::vector<int64_t> ids;
            for (const auto &[label, sim] : (*index)->search(&queries[q * o.dim], o.k)) {
                ids.push_back(static_cast<int64_t>(label));
            }
            return ids;
        });
        print_row("hnswlib 0.6.2 HNSW",
                  "M=" + std::to_string(o.m) + " efC=" + std::to_string(o.ef_construction) +
                      " ef=" + std::to_string(ef),
                  build, f);
    }
}

#ifdef INFERBOX_HAVE_FAISS
std::vector<int64_t> faiss_search(const faiss::Index &index, const float *q, size_t k) {
    std::vector<float>               distances(k);
    std::vector<faiss::Index::idx_t> labels(k);
    index.search(1, q, static_cast<faiss::Index::idx_t>(k), distances.data(), labels.data());
    labels.erase(std::remove(labels.begin(), labels.end(), -1), labels.end());
    return {labels.begin(), labels.end()};
}

void bench_faiss(const options &o, const std::vector<float> &base, const std::vector<float> &queries,
                 const std::vector<std::vector<int64_t>> &truth) {
    omp_set_num_threads(1);
    const auto n = static_cast<faiss::Index::idx_t>(o.n);
    {
        faiss::IndexHNSWFlat index(static_cast<int>(o.dim), static_cast<int>(o.m), faiss::METRIC_INNER_PRODUCT);
        index.hnsw.efConstruction = static_cast<int>(o.ef_construction);
        const auto   t0           = clock_type::now();
        const double c0           = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
        index.add(n, base.data());
        const build_figures build{seconds_since(t0), cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0};
        for (const size_t ef : o.ef_search) {
            index.hnsw.efSearch = static_cast<int>(ef);
            const auto f =
                measure(o.queries, o.k, truth, [&](size_t q) { return faiss_search(index, &queries[q * o.dim], o.k); });
            print_row("FAISS 1.7.3 IndexHNSWFlat",
                      "M=" + std::to_string(o.m) + " efC=" + std::to_string(o.ef_construction) +
                          " ef=" + std::to_string(ef),
                      build, f);
        }
    }
    {
        faiss::IndexFlatIP  quantizer(static_cast<int>(o.dim));
        faiss::IndexIVFFlat index(&quantizer, o.dim, o.ivf_nlist, faiss::METRIC_INNER_PRODUCT);
        const auto          t0 = clock_type::now();
        const double        c0 = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
        index.train(static_cast<faiss::Index::idx_t>(std::min(o.ivf_train, o.n)), base.data());
        index.add(n, base.data());
        const build_figures build{seconds_since(t0), cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0};
        for (const size_t probe : o.ivf_nprobe) {
            index.nprobe = probe;
            const auto f =
                measure(o.queries, o.k, truth, [&](size_t q) { return faiss_search(index, &queries[q * o.dim], o.k); });
            print_row("FAISS 1.7.3 IndexIVFFlat",
                      "nlist=" + std::to_string(o.ivf_nlist) + " nprobe=" + std::to_string(probe), build, f);
        }
    }
}
#endif

// Words for synthetic chunk text: a Zipf-like draw from a made-up vocabulary, so BM25 has rare and
// common terms to weigh.
std::string synthetic_text(std::mt19937_64 &rng, size_t words) {
    static const char *syllables[] = {"ka", "lo", "mi", "ren", "tu", "sa", "vel", "or", "ni", "dra", "po", "shi"};
    std::uniform_real_distribution<double> u(0, 1);
    std::string                            out;
    for (size_t w = 0; w < words; ++w) {
        const auto rank = static_cast<size_t>(std::pow(5000.0, u(rng))); // 1..5000, skewed to the small
        size_t     r    = rank;
        do {
            out += syllables[r % 12];
            r /= 12;
        } while (r > 0);
        out += (w + 1) % 15 == 0 ? ". " : " ";
    }
    return out;
}

void bench_ingest(const options &o, generator &gen) {
    const auto folder = std::filesystem::temp_directory_path() / ("retrieval-bench-" + std::to_string(::getpid()));
    std::filesystem::remove_all(folder);
    index_options io;
    io.dimension = o.dim;
    io.hnsw      = hnsw_params{o.m, o.ef_construction, o.ef_search.size() > 2 ? o.ef_search[2] : 64};
    auto index   = document_index::open(folder, io);
    if (!index) {
        std::fprintf(stderr, "%s\n", index.err().message.c_str());
        return;
    }
    std::mt19937_64 rng(o.seed + 1);
    // Prepared before the clock starts: the benchmark times the library, not the generator.
    std::vector<std::vector<chunk_input>> docs;
    for (size_t done = 0; done < o.ingest_chunks; done += o.chunks_per_doc) {
        std::vector<chunk_input> chunks;
        for (size_t i = 0; i < o.chunks_per_doc && done + i < o.ingest_chunks; ++i) {
            chunks.push_back(chunk_input{synthetic_text(rng, 120), gen.next(), static_cast<int64_t>(i * 700)});
        }
        docs.push_back(std::move(chunks));
    }
    const auto   t0 = clock_type::now();
    const double c0 = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (size_t d = 0; d < docs.size(); ++d) {
        if (auto added =
                (*index)->add_document("file-" + std::to_string(d), "doc" + std::to_string(d) + ".txt", docs[d]);
            !added) {
            std::fprintf(stderr, "%s\n", added.err().message.c_str());
            return;
        }
    }
    const double add_s = seconds_since(t0), add_cpu = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
    if (auto err = (*index)->save()) {
        std::fprintf(stderr, "%s\n", err->message.c_str());
    }
    const double total_s = seconds_since(t0), total_cpu = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
    const auto   chunks = static_cast<double>(o.ingest_chunks);
    std::printf("\ningest: %zu chunks in %zu documents (120 words each, %zu-d vectors, M=%zu efC=%zu): "
                "%.0f chunks/s of CPU (%.0f/s wall); with the final save %.0f chunks/s of CPU (%.0f/s wall)\n",
                o.ingest_chunks, docs.size(), o.dim, o.m, o.ef_construction, chunks / add_cpu, chunks / add_s,
                chunks / total_cpu, chunks / total_s);

    std::vector<double> keyword_ms, hybrid_ms;
    for (size_t q = 0; q < 200; ++q) {
        const auto text = synthetic_text(rng, 6);
        const auto vec  = gen.next();
        auto       t1   = clock_type::now();
        (void)(*index)->keyword_search(text, o.k);
        keyword_ms.push_back(seconds_since(t1) * 1000);
        t1 = clock_type::now();
        (void)(*index)->hybrid_search(text, vec, hybrid_options{});
        hybrid_ms.push_back(seconds_since(t1) * 1000);
    }
    std::sort(keyword_ms.begin(), keyword_ms.end());
    std::sort(hybrid_ms.begin(), hybrid_ms.end());
    std::printf("search on it (200 queries of 6 words, top %zu): keyword p50 %.2f ms p99 %.2f ms; hybrid (50 "
                "candidates each, RRF) p50 %.2f ms p99 %.2f ms\n",
                o.k, keyword_ms[100], keyword_ms[197], hybrid_ms[100], hybrid_ms[197]);
    index->reset();
    std::filesystem::remove_all(folder);
}

} // namespace

namespace {

int run(int argc, char **argv) {
    options  o;
    CLI::App app{"inferbox retrieval benchmark: hnswlib vs FAISS, and the retrieval library's ingest rate"};
    app.add_option("--n", o.n, "base vectors");
    app.add_option("--dim", o.dim, "dimension");
    app.add_option("--queries", o.queries, "queries (not in the base set)");
    app.add_option("--k", o.k, "neighbours per query (recall@k)");
    app.add_option("--clusters", o.clusters, "topics in the synthetic data");
    app.add_option("--intrinsic", o.intrinsic, "dimensions each topic spreads in");
    app.add_option("--seed", o.seed, "random seed");
    app.add_option("--m", o.m, "HNSW links per node");
    app.add_option("--ef-construction", o.ef_construction, "HNSW construction candidate list");
    app.add_option("--ef-search", o.ef_search, "HNSW search candidate lists to try")->delimiter(',');
    app.add_option("--ivf-nlist", o.ivf_nlist, "FAISS IVF lists");
    app.add_option("--ivf-train", o.ivf_train, "FAISS IVF training vectors (the first ones)");
    app.add_option("--ivf-nprobe", o.ivf_nprobe, "FAISS IVF lists probed, to try")->delimiter(',');
    app.add_option("--ingest-chunks", o.ingest_chunks, "chunks for the ingest measurement (0: skip)");
    app.add_flag("--no-faiss", o.no_faiss, "skip FAISS");
    CLI11_PARSE(app, argc, argv);
    if (o.n < o.k || o.queries == 0 || o.dim == 0 || o.clusters == 0 || o.ef_search.empty()) {
        std::fprintf(stderr, "need n >= k, queries > 0, dim > 0, clusters > 0, at least one ef-search\n");
        return 2;
    }

    generator          gen(o);
    const auto         t0 = clock_type::now();
    std::vector<float> base, queries;
    base.reserve(o.n * o.dim);
    for (size_t i = 0; i < o.n; ++i) {
        const auto v = gen.next();
        base.insert(base.end(), v.begin(), v.end());
    }
    for (size_t i = 0; i < o.queries; ++i) {
        const auto v = gen.next();
        queries.insert(queries.end(), v.begin(), v.end());
    }
    const auto truth = exact_top_k(base, queries, o.dim, o.k);
    std::printf("data: %zu vectors + %zu queries, dimension %zu, %zu clusters (intrinsic dimension %zu), seed %llu; "
                "exact top-%zu in %.1f s (with generation); one thread\n\n",
                o.n, o.queries, o.dim, o.clusters, o.intrinsic, static_cast<unsigned long long>(o.seed), o.k,
                seconds_since(t0));
    std::printf("| library | parameters | build CPU s (wall) | recall@%zu | p50 CPU ms (wall) | p99 CPU ms (wall) "
                "|\n|---|---|---|---|---|---|\n",
                o.k);
    bench_hnswlib(o, base, queries, truth);
#ifdef INFERBOX_HAVE_FAISS
    if (!o.no_faiss) {
        bench_faiss(o, base, queries, truth);
    }
#else
    if (!o.no_faiss) {
        std::printf("(FAISS not built in: libfaiss-dev was not found at configure time)\n");
    }
#endif
    if (o.ingest_chunks > 0) {
        bench_ingest(o, gen);
    }
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception &e) { // memory for 100,000 vectors, a failed index
        std::fprintf(stderr, "retrieval-bench: %s\n", e.what());
        return 1;
    }
}
