#pragma once
// One loaded model as the model host holds it: the engine that generates and the embedder that
// embeds (they share the weights). The API routes requests to it through a local_backend over
// its engine; serve's loader (server/model_loader.h) makes it from a model's plan.

#include "engine/embedder.h"
#include "engine/engine.h"
#include "host/model_host.h"

#include <memory>

namespace inferbox {

struct served_model {
    std::shared_ptr<engine>   eng;
    std::shared_ptr<embedder> emb; // null when the model has no embedder

    bool idle() const; // nothing queued or running in either
    bool healthy() const;
    void stop();
};

using served_models = model_host<served_model>;

} // namespace inferbox
