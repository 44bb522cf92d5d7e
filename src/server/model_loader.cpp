#include "server/model_loader.h"

#include "engine/embedder.h"
#include "engine/engine.h"
#include "engine/llama_decoder.h"
#include "model/model.h"
#include "store/gguf.h"

#include <spdlog/spdlog.h>

#include <chrono>

namespace inferbox {

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
    if (const auto checked = read_gguf_file(p.path, p.path); !checked) {
        return failed(checked.err());
    }
    auto m = model::load(p.mo);
    if (!m) {
        return failed(m.err());
    }
    engine_config ecfg = p.ecfg;
    if (!draft_path.empty()) {
        if (const auto draft_checked = read_gguf_file(draft_path, draft_path); !draft_checked) {
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
