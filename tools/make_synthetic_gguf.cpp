// make-synthetic-gguf: writes a random-weight llama-architecture GGUF of a realistic shape, for
// throughput benchmarks that need a model bigger than the tiny test models. The text it generates
// is meaningless; the bytes moved per token and the FLOPs per token are those of a real model of
// that shape (except the vocabulary, which is borrowed from a reference GGUF, see --help).
//
// Memory: tensor data is generated and written in fixed-size chunks, so the F16 file is never held
// in RAM; quantization (llama_model_quantize) then streams tensor by tensor.

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

namespace inferbox {
namespace {

struct synth_options {
    std::string out;
    std::string vocab_from;
    int32_t     layers   = 24;
    int32_t     embd     = 896;
    int32_t     heads    = 14;
    int32_t     kv_heads = 2;
    int32_t     ffn      = 4864;
    int32_t     ctx      = 4096;
    uint32_t    seed     = 1;
    std::string type     = "q4_k_m";
    int32_t     threads  = 0; // quantization threads, 0 = all cores
    float       stddev   = 0.02f;
    bool        verify   = false;
    // 0: the tokenizer's own size. Larger: the vocabulary is padded to it with unused tokens
    // (as real models pad theirs), so the embedding and output matrices have a real model's size.
    int64_t vocab_size = 0;
    // No output.weight: the logits come from token_embd (tied embeddings, as in Qwen2.5-0.5B).
    bool tie_embeddings = false;
};

// Owns a FILE*; closes it on every path.
struct file_handle {
    FILE *f = nullptr;
    explicit file_handle(FILE *file) : f(file) {}
    file_handle(const file_handle &)            = delete;
    file_handle &operator=(const file_handle &) = delete;
    ~file_handle() {
        if (f) {
            std::fclose(f);
        }
    }
};

// xoshiro256** seeded through splitmix64: fixed output on every platform, unlike <random>'s
// distributions, so the same seed gives the same file everywhere.
class rng {
  public:
    explicit rng(uint64_t seed) {
        for (uint64_t &s : s_) {
            seed += 0x9e3779b97f4a7c15ull;
            uint64_t z = seed;
            z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z          = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            s          = z ^ (z >> 31);
        }
    }
    uint64_t next() {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t      = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }
    // Uniform in (0, 1].
    double uniform() { return double((next() >> 11) + 1) * 0x1.0p-53; }
    // Two standard normal values (Box-Muller).
    void normal2(float &a, float &b) {
        const double r  = std::sqrt(-2.0 * std::log(uniform()));
        const double th = 6.283185307179586 * uniform();
        a               = float(r * std::cos(th));
        b               = float(r * std::sin(th));
    }

  private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t        s_[4] = {};
};

// Copies every tokenizer.* key (vocab, scores, types, special ids, chat template...) from src.
// With `pad_to` above the tokenizer's size, the per-token arrays (tokens, scores, token types) are
// extended to `pad_to` entries: tokens "<|synthetic_unused_N|>" of type UNUSED with the lowest
// score, which no text tokenizes to. Returns the vocab size, or -1 (with a message) when src has
// no tokenizer or is larger than `pad_to`.
int64_t copy_tokenizer(gguf_context *dst, const gguf_context *src, int64_t pad_to, std::string &err) {
    const int64_t tokens = gguf_find_key(src, "tokenizer.ggml.tokens");
    if (tokens < 0 || gguf_get_kv_type(src, tokens) != GGUF_TYPE_ARRAY ||
        gguf_get_arr_type(src, tokens) != GGUF_TYPE_STRING || gguf_get_arr_n(src, tokens) == 0) {
        err = "has no tokenizer.ggml.tokens string array";
        return -1;
    }
    const auto n_src = int64_t(gguf_get_arr_n(src, tokens));
    if (pad_to > 0 && pad_to < n_src) {
        err = "has " + std::to_string(n_src) + " tokens, more than --vocab-size " + std::to_string(pad_to) +
              " (the vocabulary can be padded, not cut)";
        return -1;
    }
    const int64_t n_out = std::max(n_src, pad_to);
    for (int64_t i = 0; i < gguf_get_n_kv(src); ++i) {
        const char *key = gguf_get_key(src, i);
        if (std::strncmp(key, "tokenizer.", 10) != 0) {
            continue;
        }
        switch (gguf_get_kv_type(src, i)) {
        case GGUF_TYPE_UINT8:
            gguf_set_val_u8(dst, key, gguf_get_val_u8(src, i));
            break;
        case GGUF_TYPE_INT8:
            gguf_set_val_i8(dst, key, gguf_get_val_i8(src, i));
            break;
        case GGUF_TYPE_UINT16:
            gguf_set_val_u16(dst, key, gguf_get_val_u16(src, i));
            break;
        case GGUF_TYPE_INT16:
            gguf_set_val_i16(dst, key, gguf_get_val_i16(src, i));
            break;
        case GGUF_TYPE_UINT32:
            gguf_set_val_u32(dst, key, gguf_get_val_u32(src, i));
            break;
        case GGUF_TYPE_INT32:
            gguf_set_val_i32(dst, key, gguf_get_val_i32(src, i));
            break;
        case GGUF_TYPE_FLOAT32:
            gguf_set_val_f32(dst, key, gguf_get_val_f32(src, i));
            break;
        case GGUF_TYPE_UINT64:
            gguf_set_val_u64(dst, key, gguf_get_val_u64(src, i));
            break;
        case GGUF_TYPE_INT64:
            gguf_set_val_i64(dst, key, gguf_get_val_i64(src, i));
            break;
        case GGUF_TYPE_FLOAT64:
            gguf_set_val_f64(dst, key, gguf_get_val_f64(src, i));
            break;
        case GGUF_TYPE_BOOL:
            gguf_set_val_bool(dst, key, gguf_get_val_bool(src, i));
            break;
        case GGUF_TYPE_STRING:
            gguf_set_val_str(dst, key, gguf_get_val_str(src, i));
            break;
        case GGUF_TYPE_ARRAY: {
            const size_t n = gguf_get_arr_n(src, i);
            const auto   t = gguf_get_arr_type(src, i);
            // The per-token arrays are padded; others (BPE merges...) are copied as they are.
            const std::string_view k(key);
            const bool pad = n_out > n_src && (k == "tokenizer.ggml.tokens" || k == "tokenizer.ggml.scores" ||
                                               k == "tokenizer.ggml.token_type");
            if (pad && int64_t(n) != n_src) {
                err = std::string(key) + " has " + std::to_string(n) + " entries for " + std::to_string(n_src) +
                      " tokens";
                return -1;
            }
            if (t == GGUF_TYPE_STRING) {
                std::vector<std::string>  extra;
                std::vector<const char *> strs(n);
                for (size_t j = 0; j < n; ++j) {
                    strs[j] = gguf_get_arr_str(src, i, j);
                }
                if (pad) {
                    extra.reserve(size_t(n_out - n_src));
                    for (int64_t j = n_src; j < n_out; ++j) {
                        extra.push_back("<|synthetic_unused_" + std::to_string(j - n_src) + "|>");
                    }
                    for (const auto &e : extra) {
                        strs.push_back(e.c_str());
                    }
                }
                gguf_set_arr_str(dst, key, strs.data(), strs.size());
            } else if (pad && t == GGUF_TYPE_FLOAT32) { // scores
                const auto        *v = static_cast<const float *>(gguf_get_arr_data(src, i));
                std::vector<float> out(v, v + n);
                const float        low = out.empty() ? 0.0f : *std::min_element(out.begin(), out.end());
                out.resize(size_t(n_out), low - 1.0f);
                gguf_set_arr_data(dst, key, t, out.data(), out.size());
            } else if (pad && t == GGUF_TYPE_INT32) { // token types
                const auto          *v = static_cast<const int32_t *>(gguf_get_arr_data(src, i));
                std::vector<int32_t> out(v, v + n);
                out.resize(size_t(n_out), LLAMA_TOKEN_TYPE_UNUSED);
                gguf_set_arr_data(dst, key, t, out.data(), out.size());
            } else if (pad) {
                err = std::string("cannot pad ") + key + ", a per-token array of an unexpected type";
                return -1;
            } else if (t == GGUF_TYPE_ARRAY) {
                err = std::string("nested array in ") + key + " is not supported";
                return -1;
            } else {
                gguf_set_arr_data(dst, key, t, gguf_get_arr_data(src, i), n);
            }
            break;
        }
        default:
            err = std::string("unknown value type of ") + key;
            return -1;
        }
    }
    return n_out;
}

std::string validate(const synth_options &o) {
    auto in = [](const char *name, int64_t v, int64_t lo, int64_t hi) -> std::string {
        return v < lo || v > hi ? std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                      "], got " + std::to_string(v)
                                : std::string();
    };
    for (const std::string &e :
         {in("--layers", o.layers, 1, 512), in("--embd", o.embd, 32, 65536), in("--heads", o.heads, 1, 1024),
          in("--kv-heads", o.kv_heads, 1, 1024), in("--ffn", o.ffn, 32, 262144), in("--ctx", o.ctx, 16, 1 << 24)}) {
        if (!e.empty()) {
            return e;
        }
    }
    if (o.embd % o.heads != 0) {
        return "--embd must be a multiple of --heads";
    }
    if ((o.embd / o.heads) % 2 != 0) {
        return "the head size (--embd / --heads) must be even for RoPE";
    }
    if (o.heads % o.kv_heads != 0) {
        return "--heads must be a multiple of --kv-heads";
    }
    // F16 rows are any length; the quantized types (and their fallbacks) work on blocks of 32.
    if (o.type == "q4_k_m" && (o.embd % 32 != 0 || o.ffn % 32 != 0)) {
        return "for q4_k_m, --embd and --ffn must be multiples of 32";
    }
    if (!(o.stddev > 0.0f && o.stddev < 1.0f)) {
        return "--stddev must be in (0, 1)";
    }
    if (o.vocab_size < 0 || o.vocab_size > (1 << 22)) {
        return "--vocab-size must be in [0, " + std::to_string(1 << 22) + "], got " + std::to_string(o.vocab_size);
    }
    return {};
}

// Appends the data of one tensor, generated `chunk` values at a time so memory stays bounded.
// Norm vectors (F32) are 1; everything else is N(0, stddev) in F16.
// `zero_rows` (may be empty): rows (ne1 indices) written as zeros after their values are drawn, so
// the other rows are the same as without it.
bool write_tensor_data(FILE *f, const ggml_tensor *t, rng &r, float stddev, const std::vector<bool> &zero_rows) {
    constexpr int64_t        chunk = 1 << 20;
    const int64_t            n     = ggml_nelements(t);
    std::vector<float>       vals(size_t(std::min(n, chunk)));
    std::vector<ggml_fp16_t> halves(t->type == GGML_TYPE_F16 ? vals.size() : 0);
    for (int64_t done = 0; done < n; done += chunk) {
        const int64_t m = std::min(chunk, n - done);
        if (t->type == GGML_TYPE_F32) {
            std::fill(vals.begin(), vals.begin() + m, 1.0f);
            if (std::fwrite(vals.data(), sizeof(float), size_t(m), f) != size_t(m)) {
                return false;
            }
            continue;
        }
        for (int64_t i = 0; i < m; i += 2) {
            float a, b;
            r.normal2(a, b);
            vals[size_t(i)] = a * stddev;
            if (i + 1 < m) {
                vals[size_t(i + 1)] = b * stddev;
            }
        }
        for (int64_t i = 0; i < m && !zero_rows.empty(); ++i) {
            const int64_t row = (done + i) / t->ne[0];
            if (size_t(row) < zero_rows.size() && zero_rows[size_t(row)]) {
                vals[size_t(i)] = 0.0f;
            }
        }
        ggml_fp32_to_fp16_row(vals.data(), halves.data(), m);
        if (std::fwrite(halves.data(), sizeof(ggml_fp16_t), size_t(m), f) != size_t(m)) {
            return false;
        }
    }
    return true;
}

// Tokens that are not text (byte fallback, control, unknown, the padding) get all-zero rows in the
// matrix the logits come from (output.weight, or token_embd when tied): their logit is exactly 0
// while the text tokens' logits are spread around 0, so greedy decoding (every benchmark) never
// picks one among hundreds of text tokens. A random model would otherwise emit byte tokens about
// half the time, whose incomplete UTF-8 servers hold back: stream chunks would then span several
// tokens and no longer time one token each. Empty when the vocabulary has no token types.
std::vector<bool> non_text_tokens(const gguf_context *g, int64_t n_vocab) {
    std::vector<bool> non_text;
    if (const int64_t k = gguf_find_key(g, "tokenizer.ggml.token_type");
        k >= 0 && gguf_get_kv_type(g, k) == GGUF_TYPE_ARRAY && gguf_get_arr_type(g, k) == GGUF_TYPE_INT32 &&
        int64_t(gguf_get_arr_n(g, k)) == n_vocab) {
        const auto *types = static_cast<const int32_t *>(gguf_get_arr_data(g, k));
        non_text.resize(size_t(n_vocab));
        for (int64_t t = 0; t < n_vocab; ++t) {
            non_text[size_t(t)] = types[t] != LLAMA_TOKEN_TYPE_NORMAL;
        }
    }
    return non_text;
}

// The llama architecture's metadata for a model of these options.
void set_llama_metadata(gguf_context *g, const synth_options &o, int64_t n_vocab) {
    const int32_t     head_dim = o.embd / o.heads;
    const std::string name     = "inferbox synthetic llama " + std::to_string(o.layers) + "x" + std::to_string(o.embd);
    gguf_set_val_str(g, "general.architecture", "llama");
    gguf_set_val_str(g, "general.name", name.c_str());
    gguf_set_val_u32(g, "general.file_type", LLAMA_FTYPE_MOSTLY_F16);
    gguf_set_val_u32(g, "llama.vocab_size", uint32_t(n_vocab));
    gguf_set_val_u32(g, "llama.context_length", uint32_t(o.ctx));
    gguf_set_val_u32(g, "llama.embedding_length", uint32_t(o.embd));
    gguf_set_val_u32(g, "llama.feed_forward_length", uint32_t(o.ffn));
    gguf_set_val_u32(g, "llama.block_count", uint32_t(o.layers));
    gguf_set_val_u32(g, "llama.attention.head_count", uint32_t(o.heads));
    gguf_set_val_u32(g, "llama.attention.head_count_kv", uint32_t(o.kv_heads));
    gguf_set_val_u32(g, "llama.rope.dimension_count", uint32_t(head_dim));
    gguf_set_val_f32(g, "llama.rope.freq_base", 10000.0f);
    gguf_set_val_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
}

// The tensor descriptors (no data), in file order. Shapes are ggml order {ne0 = input features,
// ne1 = output features}, as llama.cpp's llama loader (src/models/llama.cpp) creates them.
std::vector<ggml_tensor *> describe_tensors(ggml_context *ctx, gguf_context *g, const synth_options &o,
                                            int64_t n_vocab) {
    const int32_t              head_dim = o.embd / o.heads;
    const int64_t              n_q      = int64_t(head_dim) * o.heads;
    const int64_t              n_kv     = int64_t(head_dim) * o.kv_heads;
    std::vector<ggml_tensor *> tensors;
    auto                       add = [&](const std::string &tname, ggml_type type, int64_t ne0, int64_t ne1) {
        ggml_tensor *t = ne1 == 1 ? ggml_new_tensor_1d(ctx, type, ne0) : ggml_new_tensor_2d(ctx, type, ne0, ne1);
        ggml_set_name(t, tname.c_str());
        gguf_add_tensor(g, t);
        tensors.push_back(t);
    };
    add("token_embd.weight", GGML_TYPE_F16, o.embd, n_vocab);
    add("output_norm.weight", GGML_TYPE_F32, o.embd, 1);
    if (!o.tie_embeddings) { // else llama.cpp computes the logits with token_embd
        add("output.weight", GGML_TYPE_F16, o.embd, n_vocab);
    }
    for (int32_t l = 0; l < o.layers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        add(p + "attn_norm.weight", GGML_TYPE_F32, o.embd, 1);
        add(p + "attn_q.weight", GGML_TYPE_F16, o.embd, n_q);
        add(p + "attn_k.weight", GGML_TYPE_F16, o.embd, n_kv);
        add(p + "attn_v.weight", GGML_TYPE_F16, o.embd, n_kv);
        add(p + "attn_output.weight", GGML_TYPE_F16, n_q, o.embd);
        add(p + "ffn_norm.weight", GGML_TYPE_F32, o.embd, 1);
        add(p + "ffn_gate.weight", GGML_TYPE_F16, o.embd, o.ffn);
        add(p + "ffn_up.weight", GGML_TYPE_F16, o.embd, o.ffn);
        add(p + "ffn_down.weight", GGML_TYPE_F16, o.ffn, o.embd);
    }
    return tensors;
}

// Writes each tensor's generated data at the offset the header promised, padded to the alignment;
// `non_text` zeroes those rows of the matrix the logits come from. Empty on success, else why.
std::string write_tensors(std::FILE *f, const gguf_context *g, const std::vector<ggml_tensor *> &tensors,
                          const synth_options &o, const std::vector<bool> &non_text, const std::string &path) {
    const std::vector<bool> none;
    const char             *logits_from = o.tie_embeddings ? "token_embd.weight" : "output.weight";
    const size_t            alignment   = gguf_get_alignment(g);
    const size_t            data_offset = gguf_get_meta_size(g); // header + KV + tensor infos, padded
    const std::vector<char> zeros(alignment, 0);
    const bool              progress = isatty(fileno(stderr)) != 0; // no carriage returns in logs
    for (size_t i = 0; i < tensors.size(); ++i) {
        const ggml_tensor *t = tensors[i];
        // The header promised this offset; a mismatch would make a file llama.cpp rejects.
        const long pos = std::ftell(f);
        if (pos < 0 || size_t(pos) != data_offset + gguf_get_tensor_offset(g, int64_t(i))) {
            return std::string("internal error: ") + t->name + " is not at its declared offset";
        }
        rng r(uint64_t(o.seed) * 0x100000001b3ull + i);
        if (!write_tensor_data(f, t, r, o.stddev, std::strcmp(t->name, logits_from) == 0 ? non_text : none)) {
            return "writing " + path + " failed: " + std::strerror(errno);
        }
        const size_t nb  = ggml_nbytes(t);
        const size_t pad = GGML_PAD(nb, alignment) - nb;
        if (pad > 0 && std::fwrite(zeros.data(), 1, pad, f) != pad) {
            return "writing " + path + " failed: " + std::strerror(errno);
        }
        if (progress) {
            std::fprintf(stderr, "\rwrote %zu/%zu tensors", i + 1, tensors.size());
        }
    }
    std::fprintf(stderr, "%swrote %zu tensors to %s\n", progress ? "\r" : "", tensors.size(), path.c_str());
    return {};
}

// Writes the F16 GGUF to `path`. Returns an empty string on success, else the reason.
std::string write_f16(const synth_options &o, const gguf_context *vocab, const std::string &path) {
    std::string   err;
    gguf_context *g = gguf_init_empty();
    struct gguf_deleter {
        gguf_context *g;
        ~gguf_deleter() { gguf_free(g); }
    } g_guard{g};

    const int64_t n_vocab = copy_tokenizer(g, vocab, o.vocab_size, err);
    if (n_vocab < 0) {
        return o.vocab_from + " " + err;
    }
    const std::vector<bool> non_text = non_text_tokens(g, n_vocab);
    set_llama_metadata(g, o, n_vocab);

    // Tensor descriptors only (no_alloc): the data is generated while writing.
    const size_t     n_tensors = 3 + size_t(o.layers) * 9;
    ggml_init_params ip{ggml_tensor_overhead() * (n_tensors + 1), nullptr, /*no_alloc=*/true};
    ggml_context    *ctx = ggml_init(ip);
    if (!ctx) {
        return "ggml_init failed";
    }
    struct ggml_deleter {
        ggml_context *c;
        ~ggml_deleter() { ggml_free(c); }
    } ctx_guard{ctx};
    const auto tensors = describe_tensors(ctx, g, o, n_vocab);

    file_handle fh(std::fopen(path.c_str(), "wb"));
    if (!fh.f) {
        return "cannot create " + path + ": " + std::strerror(errno);
    }
    if (!gguf_write_to_file_ptr(g, fh.f, /*only_meta=*/true)) {
        return "writing the GGUF header to " + path + " failed";
    }
    if (auto failed = write_tensors(fh.f, g, tensors, o, non_text, path); !failed.empty()) {
        return failed;
    }
    if (std::fflush(fh.f) != 0) {
        return "writing " + path + " failed: " + std::strerror(errno);
    }
    return {};
}

// Loads the model, tokenizes a sentence and decodes it: proof that llama.cpp accepts the file.
int verify(const std::string &path) {
    llama_model_params mp    = llama_model_default_params();
    llama_model       *model = llama_model_load_from_file(path.c_str(), mp);
    if (!model) {
        std::fprintf(stderr, "verify: llama.cpp could not load %s\n", path.c_str());
        return 1;
    }
    const llama_vocab       *vocab = llama_model_get_vocab(model);
    const char              *text  = "Once upon a time there was a little girl named Lily";
    std::vector<llama_token> toks(256);
    const int32_t        n  = llama_tokenize(vocab, text, int32_t(std::strlen(text)), toks.data(), int32_t(toks.size()),
                                             /*add_special=*/true, /*parse_special=*/false);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx                = 256;
    cp.n_batch              = 256;
    cp.n_threads            = 2;
    cp.n_threads_batch      = 2;
    llama_context *lctx     = n > 0 ? llama_init_from_model(model, cp) : nullptr;
    int            rc       = 1;
    if (lctx) {
        toks.resize(size_t(n));
        const int32_t dec = llama_decode(lctx, llama_batch_get_one(toks.data(), n));
        char          desc[128];
        llama_model_desc(model, desc, sizeof(desc));
        std::printf("verify: %s, %" PRIu64 " params, %" PRIu64
                    " bytes, vocab %d, prompt of %d tokens decoded (rc %d)\n",
                    desc, llama_model_n_params(model), llama_model_size(model), llama_vocab_n_tokens(vocab), n, dec);
        rc = dec == 0 ? 0 : 1;
        llama_free(lctx);
    } else {
        std::fprintf(stderr, "verify: tokenizing or creating a context failed\n");
    }
    llama_model_free(model);
    return rc;
}

// llama.cpp logs every tensor while loading and quantizing; keep warnings and errors only.
void quiet_log(ggml_log_level level, const char *text, void *) {
    static bool shown = false; // whether the message that text continues is shown
    if (level != GGML_LOG_LEVEL_CONT) {
        // Per-tensor k-quant fallbacks (rows not a multiple of 256) are expected and arrive as two
        // warnings per tensor; the quantizer's summary line still says how many there were.
        shown = (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) &&
                std::strstr(text, "not divisible by") == nullptr && std::strstr(text, "falling back to") == nullptr;
    }
    if (shown) {
        std::fputs(text, stderr);
    }
}

int run(const synth_options &o) {
    if (std::string e = validate(o); !e.empty()) {
        std::fprintf(stderr, "make-synthetic-gguf: %s\n", e.c_str());
        return 2;
    }
    gguf_init_params vp{/*no_alloc=*/true, /*ctx=*/nullptr};
    gguf_context    *vocab = gguf_init_from_file(o.vocab_from.c_str(), vp);
    if (!vocab) {
        std::fprintf(stderr, "make-synthetic-gguf: cannot read %s as GGUF\n", o.vocab_from.c_str());
        return 1;
    }
    const bool        quantize = o.type == "q4_k_m";
    const std::string f16_path = quantize ? o.out + ".f16.tmp" : o.out;
    std::string       err      = write_f16(o, vocab, f16_path);
    gguf_free(vocab);
    if (!err.empty()) {
        std::fprintf(stderr, "make-synthetic-gguf: %s\n", err.c_str());
        std::remove(f16_path.c_str());
        return 1;
    }
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    int rc = 0;
    if (quantize) {
        llama_model_quantize_params qp = llama_model_quantize_default_params();
        qp.ftype                       = LLAMA_FTYPE_MOSTLY_Q4_K_M;
        qp.nthread                     = o.threads;
        const uint32_t q               = llama_model_quantize(f16_path.c_str(), o.out.c_str(), &qp);
        std::remove(f16_path.c_str());
        if (q != 0) {
            std::fprintf(stderr, "make-synthetic-gguf: quantizing to Q4_K_M failed\n");
            rc = 1;
        }
    }
    if (rc == 0) {
        std::printf("wrote %s\n", o.out.c_str());
        if (o.verify) {
            rc = verify(o.out);
        }
    }
    llama_backend_free();
    return rc;
}

} // namespace
} // namespace inferbox

namespace {

int cli_main(int argc, char **argv) {
    inferbox::synth_options o;
    CLI::App app{"Writes a random-weight llama-architecture GGUF of a realistic shape for throughput benchmarks.\n"
                 "The tokenizer (every tokenizer.* key) is copied from --vocab-from, so the model tokenizes text,\n"
                 "and the vocabulary size is that tokenizer's (512 tokens with stories260K.gguf) unless\n"
                 "--vocab-size pads it with unused tokens to a real model's size. The weights are N(0, stddev),\n"
                 "norms are 1: the text it generates is meaningless; rows of the logit matrix for non-text\n"
                 "tokens are zero, so greedy decoding emits only text tokens.\n"
                 "Default shape: 24 layers x 896, 14 heads, 2 KV heads, FFN 4864 (Qwen2.5-0.5B's body: ~359M\n"
                 "parameters with the 512-token vocab; --vocab-size 151936 --tie-embeddings gives its ~494M).\n"
                 "With q4_k_m, rows whose length is not a multiple\n"
                 "of 256 (the 896-wide ones) fall back to q5_0/q8_0 in llama.cpp's quantizer, as they do for\n"
                 "the real Qwen2.5-0.5B.",
                 "make-synthetic-gguf"};
    app.add_option("--out", o.out, "output GGUF path")->required();
    app.add_option("--vocab-from", o.vocab_from, "reference GGUF whose tokenizer is copied")->required();
    app.add_option("--layers", o.layers, "transformer blocks")->capture_default_str();
    app.add_option("--embd", o.embd, "hidden size")->capture_default_str();
    app.add_option("--heads", o.heads, "attention heads")->capture_default_str();
    app.add_option("--kv-heads", o.kv_heads, "KV heads (GQA)")->capture_default_str();
    app.add_option("--ffn", o.ffn, "feed-forward size")->capture_default_str();
    app.add_option("--ctx", o.ctx, "trained context length written to the metadata")->capture_default_str();
    app.add_option("--seed", o.seed, "weight generator seed (same seed, same file)")->capture_default_str();
    app.add_option("--type", o.type, "f16 | q4_k_m (q4_k_m writes F16 to OUT.f16.tmp, quantizes, deletes it)")
        ->capture_default_str()
        ->check(CLI::IsMember({"f16", "q4_k_m"}));
    app.add_option("--threads", o.threads, "quantization threads (0 = all cores)")->capture_default_str();
    app.add_option("--stddev", o.stddev, "standard deviation of the weights")->capture_default_str();
    app.add_option("--vocab-size", o.vocab_size, "pad the vocabulary to this many tokens (0: the tokenizer's own)")
        ->capture_default_str();
    app.add_flag("--tie-embeddings", o.tie_embeddings, "no output.weight: the logits use token_embd");
    app.add_flag("--verify", o.verify, "load the result with llama.cpp and decode a short prompt");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &e) {
        return app.exit(e);
    }
    return inferbox::run(o);
}

} // namespace

int main(int argc, char **argv) {
    try {
        return cli_main(argc, argv);
    } catch (const std::exception &e) { // allocation failures; nothing else throws
        std::fprintf(stderr, "make-synthetic-gguf: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "make-synthetic-gguf: unknown exception\n");
    }
    return 1;
}
