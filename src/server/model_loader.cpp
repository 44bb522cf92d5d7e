#include "server/model_loader.h"

#include "common/mapped_pages.h"
#include "engine/embedder.h"
#include "engine/engine.h"
#include "engine/llama_decoder.h"
#include "model/model.h"
#include "store/gguf.h"
#include "store/hardware.h"
#include "store/profiles.h"

#include <spdlog/spdlog.h>

#include <chrono>

namespace inferbox {

namespace {

// The weights ggml's CPU backend repacked were read from the mapped file once, into a copy of
// their own; their file pages would stay resident in this process for as long as the model is
// loaded (the whole Q4_K share of a Q4_K_M model). Hand them back (common/mapped_pages.h). Only
// for a model wholly on the CPU, mapped and not locked (a locked page cannot be advised away).
void release_repacked_pages(const std::string &path, const gguf_info &g, const model_options &mo) {
    if (!mo.use_mmap || mo.use_mlock || mo.n_gpu_layers > 0) {
        return;
    }
    const cpu_isa           isa = detect_isa();
    std::vector<file_range> ranges;
    for (const auto &t : g.tensors) {
        if (cpu_repacks_tensor(t, isa)) {
            ranges.push_back({g.data_offset + t.offset, t.n_bytes});
        }
    }
    if (ranges.empty()) {
        return;
    }
    const released_pages r = release_mapped_file_pages(path, ranges);
    if (r.error != 0) {
        spdlog::warn("could not hand back the mapped pages of the repacked weights of {} (errno {}): they stay "
                     "resident",
                     path, r.error);
    }
    if (r.bytes > 0) {
        spdlog::info("handed back {:.1f} MiB of {}'s mapped pages: weights the CPU backend repacked into its own copy",
                     static_cast<double>(r.bytes) / (1 << 20), path);
    }
}

} // namespace

result<std::shared_ptr<served_model>> load_hosted_model(const hosted_plan &p, const std::string &draft_path,
                                                        bool with_rpc) {
    auto failed = [&p, &draft_path](const error &e) {
        return error{error_kind::unavailable,
                     "the model '" + p.id + "' could not be loaded: " + without_paths(e.message, {p.path, draft_path}),
                     "model", "model_load_failed"};
    };
    const auto started_at = std::chrono::steady_clock::now();
    // Checked again: the file may have changed since start-up, and llama.cpp's loader aborts
    // on some malformed files.
    const auto checked = read_gguf_file(p.path, p.path);
    if (!checked) {
        return failed(checked.err());
    }
    auto m = model::load(p.mo);
    if (!m) {
        return failed(m.err());
    }
    release_repacked_pages(p.path, *checked, p.mo);
    engine_config ecfg = p.ecfg;
    if (!draft_path.empty()) {
        const auto draft_checked = read_gguf_file(draft_path, draft_path);
        if (!draft_checked) {
            return failed(draft_checked.err());
        }
        model_options dmo;
        dmo.path = draft_path;
        // A small draft goes where the model goes, but never over the network: its steps
        // are many and tiny, so a round trip each would cost more than the draft saves.
        dmo.n_gpu_layers = p.mo.n_gpu_layers > 0 && !with_rpc ? 100000 : 0;
        dmo.use_mmap     = p.mo.use_mmap;
        auto draft       = model::load(dmo);
        if (!draft) {
            return failed(draft.err());
        }
        release_repacked_pages(draft_path, *draft_checked, dmo);
        ecfg.draft_model = *draft;
    }
    auto e = start_engine(*m, ecfg);
    if (!e) {
        return failed(e.err());
    }
    auto sm       = std::make_shared<served_model>();
    sm->eng       = std::shared_ptr<engine>(std::move(*e));
    const auto &c = sm->eng->config();
    // The embedder shares the weights, not the context: see engine/embedder.h.
    embedder_config embed = p.embed;
    embed.n_threads       = c.n_threads;
    auto started          = embedder::start(*m, embed);
    if (!started) {
        sm->eng->stop();
        return failed(started.err());
    }
    sm->emb = std::shared_ptr<embedder>(std::move(*started));
    spdlog::info("model '{}' ({}) ready in {:.1f} s: {} slots × {} tokens, {} threads, {} tokens per step, queue "
                 "{}, chat template: {}",
                 p.id, (*m)->description(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at).count(), c.parallel,
                 c.n_ctx_slot, c.n_threads, c.step_tokens, c.max_queue, (*m)->has_chat_template() ? "yes" : "no");
    return sm;
}

std::shared_ptr<served_models> make_model_host(const std::shared_ptr<std::vector<hosted_plan>> &plans,
                                               const host_options &opts, const std::string &draft_path, bool with_rpc) {
    std::vector<hosted_model_spec> specs;
    for (const auto &p : *plans) {
        specs.push_back({p.id, p.memory_bytes});
    }
    auto load = [plans, draft_path, with_rpc](size_t i) {
        return load_hosted_model((*plans)[i], i == 0 ? draft_path : std::string(), with_rpc);
    };
    auto host = std::make_shared<served_models>(specs, opts, std::move(load));
    for (size_t i = 1; i < plans->size(); ++i) {
        const hosted_plan &p = (*plans)[i];
        if (p.refused) {
            spdlog::warn("model '{}' cannot be served: {}", p.id, p.refused->message);
            host->mark_failed(
                i, error{error_kind::unavailable,
                         "the model '" + p.id + "' cannot be served: " + without_paths(p.refused->message, {p.path}),
                         "model", "model_load_failed"});
        }
    }
    return host;
}

} // namespace inferbox
