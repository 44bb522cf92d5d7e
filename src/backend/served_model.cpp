#include "backend/served_model.h"

namespace inferbox {

bool served_model::idle() const {
    const auto s = eng->stats();
    return s.n_running == 0 && s.n_waiting == 0 && (!emb || emb->idle());
}

bool served_model::healthy() const {
    return eng->healthy();
}

void served_model::stop() {
    eng->stop();
    if (emb) {
        emb->stop();
    }
}

} // namespace inferbox
