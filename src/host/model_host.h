#pragma once
// Multi-model hosting: the models one server may serve, which of them are loaded, and the
// memory budget they share.
//
// Each configured model is an entry with an estimated resident size (its profile's weights +
// KV cache + compute buffers). An entry loads on its first request (the first entry also at
// start-up): a dedicated loader thread makes room by unloading the least recently used idle
// models, then runs the loader, then answers every request that waited for it. A request waits
// at most `load_wait`; a failed load fails that model's requests with the loader's error (for
// `retry_after`, then the next request tries again) and never touches the other models.
//
// "Idle" means no lease is out: a request holds a lease from routing until its job ends, so a
// model is never unloaded under a request. Instance must provide `bool idle() const` (nothing
// queued or running: a second guard), `bool healthy() const` and `void stop()`.
//
// The host knows nothing of HTTP, JSON or llama.cpp: unit tests drive it with fake instances.

#include "common/status.h"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace inferbox {

// A loaded model as the eviction policy sees it.
struct resident_model {
    size_t   index     = 0;
    uint64_t bytes     = 0;
    bool     busy      = false; // a lease is out, or the instance is not idle
    uint64_t last_used = 0;     // a logical clock: larger is more recent
};

// Which of `loaded` to unload, least recently used first, so that `need` more bytes fit in
// `budget` (0 = no budget). Empty when it already fits; nullopt when it cannot fit without
// unloading a busy model (the caller waits for one to go idle) — or at all.
std::optional<std::vector<size_t>> choose_evictions(std::vector<resident_model> loaded, uint64_t need, uint64_t budget);

// `pulling`: the model's file is being downloaded (start remote, move home); requests for it get
// the pull's status at once and never wait for it. pulled() makes it an unloaded entry.
enum class hosted_state { unloaded, loading, loaded, failed, pulling };
const char *hosted_state_name(hosted_state s);

struct hosted_model_spec {
    std::string id;
    uint64_t    memory_bytes = 0; // the estimate charged against the budget while loaded
};

struct host_options {
    uint64_t                  budget_bytes = 0; // 0: no budget
    std::chrono::milliseconds load_wait{std::chrono::minutes(2)};
    std::chrono::milliseconds retry_after{std::chrono::seconds(30)}; // a failed load is retried after this
};

// What /v1/models and /v1/metadata show of an entry.
struct hosted_model_view {
    std::string  id;
    hosted_state state        = hosted_state::unloaded;
    uint64_t     memory_bytes = 0;
    std::string  error; // the last load failure (failed), or what the pull is doing (pulling)
    int64_t      loads = 0, unloads = 0;
    uint64_t     pull_received = 0; // pulling: bytes on disk so far
    uint64_t     pull_total    = 0; // pulling: the file's size, when known (else 0)
};

template <class Instance> class model_host {
  public:
    using loader_fn = std::function<result<std::shared_ptr<Instance>>(size_t index)>;

    // A request's hold on a loaded model; the model stays loaded while any lease lives.
    class lease {
      public:
        lease() = default;
        Instance                        *operator->() const { return instance_.get(); }
        const std::shared_ptr<Instance> &instance() const { return instance_; }
        // Keeps the model loaded as long as the returned handle lives (for jobs that outlive
        // the routing code).
        std::shared_ptr<void> hold() const { return hold_; }
        size_t                index() const { return index_; }

      private:
        friend class model_host;
        std::shared_ptr<Instance> instance_;
        std::shared_ptr<void>     hold_;
        size_t                    index_ = 0;
    };
    using done_fn = std::function<void(result<lease>)>;

    model_host(const std::vector<hosted_model_spec> &specs, host_options opts, loader_fn load)
        : opts_(opts), load_(std::move(load)), state_(std::make_shared<shared>()) {
        for (const auto &s : specs) {
            entry e;
            e.spec = s;
            state_->entries.push_back(std::move(e));
        }
        worker_ = std::thread([this] { run(); });
    }
    model_host(const model_host &)            = delete;
    model_host &operator=(const model_host &) = delete;
    ~model_host() { shutdown(); }

    size_t                size() const { return state_->entries.size(); }
    const std::string    &id(size_t index) const { return state_->entries[index].spec.id; }
    std::optional<size_t> find(const std::string &id) const {
        for (size_t i = 0; i < state_->entries.size(); ++i) {
            if (state_->entries[i].spec.id == id) {
                return i;
            }
        }
        return std::nullopt;
    }

    // Marks an entry failed before any load is tried (its file did not validate); requests for it
    // get `why` until a retry succeeds.
    void mark_failed(size_t index, const error &why) {
        std::lock_guard lock(state_->mu);
        auto           &e = state_->entries[index];
        e.state           = hosted_state::failed;
        e.failure         = why;
        e.failed_at       = std::chrono::steady_clock::now();
    }

    // Marks an entry as being pulled: requests for it get `status` (say what is happening and
    // when to retry) at once, until pulled() or mark_failed().
    void mark_pulling(size_t index, const error &status, uint64_t received = 0, uint64_t total = 0) {
        std::lock_guard lock(state_->mu);
        auto           &e = state_->entries[index];
        e.state           = hosted_state::pulling;
        e.failure         = status;
        e.pull_received   = received;
        e.pull_total      = total;
    }

    // The pull is done: the entry becomes an ordinary unloaded model charged `memory_bytes`
    // against the budget (its estimate is known only once the file is here).
    void pulled(size_t index, uint64_t memory_bytes) {
        std::lock_guard lock(state_->mu);
        auto           &e   = state_->entries[index];
        e.state             = hosted_state::unloaded;
        e.failure           = error{};
        e.spec.memory_bytes = memory_bytes;
        e.pull_received     = 0;
        e.pull_total        = 0;
    }

    // The answer now, when there is one without waiting: a lease on a loaded model, or its
    // recent load failure. nullopt: call acquire_async.
    std::optional<result<lease>> try_acquire(size_t index) {
        std::lock_guard lock(state_->mu);
        return immediate_locked(index);
    }

    // Loads the model if needed and calls `done` once: inline when the answer is known now,
    // otherwise on the loader thread (the caller hands it to its own executor). Waits at most
    // load_wait.
    void acquire_async(size_t index, done_fn done) {
        std::unique_lock lock(state_->mu);
        if (auto now = immediate_locked(index)) {
            lock.unlock();
            done(std::move(*now));
            return;
        }
        auto &e = state_->entries[index];
        e.state = hosted_state::loading;
        e.waiters.push_back({std::move(done), std::chrono::steady_clock::now() + opts_.load_wait});
        state_->cv.notify_all();
    }

    // Loads an entry without a request (start-up), and waits for the outcome.
    result<lease> acquire_blocking(size_t index) {
        struct box {
            std::mutex                   mu;
            std::condition_variable      cv;
            std::optional<result<lease>> r;
        };
        auto b = std::make_shared<box>();
        acquire_async(index, [b](result<lease> r) {
            std::lock_guard lock(b->mu);
            b->r.emplace(std::move(r));
            b->cv.notify_all();
        });
        std::unique_lock lock(b->mu);
        b->cv.wait(lock, [&] { return b->r.has_value(); });
        return std::move(*b->r);
    }

    std::vector<hosted_model_view> snapshot() const {
        std::lock_guard                lock(state_->mu);
        std::vector<hosted_model_view> out;
        for (const auto &e : state_->entries) {
            const bool said = e.state == hosted_state::failed || e.state == hosted_state::pulling;
            out.push_back({e.spec.id, e.state, e.spec.memory_bytes, said ? e.failure.message : std::string(), e.loads,
                           e.unloads, e.pull_received, e.pull_total});
        }
        return out;
    }

    // Entry `index`'s instance when loaded, else null; takes no lease and leaves the LRU order
    // alone (for listings).
    std::shared_ptr<Instance> peek(size_t index) const {
        std::lock_guard lock(state_->mu);
        return state_->entries[index].instance;
    }

    // The loaded instances (for health, draining and statistics).
    std::vector<std::shared_ptr<Instance>> loaded() const {
        std::lock_guard                        lock(state_->mu);
        std::vector<std::shared_ptr<Instance>> out;
        for (const auto &e : state_->entries) {
            if (e.instance) {
                out.push_back(e.instance);
            }
        }
        return out;
    }

    uint64_t resident_bytes() const {
        std::lock_guard lock(state_->mu);
        return resident_locked();
    }
    uint64_t budget_bytes() const { return opts_.budget_bytes; }

    // True while a load is waited for or running (a draining server waits for these too).
    bool loading() const {
        std::lock_guard lock(state_->mu);
        for (const auto &e : state_->entries) {
            if (e.state == hosted_state::loading) {
                return true;
            }
        }
        return false;
    }

    // Refuses new loads, answers the waiting requests with 503, stops every instance and joins
    // the loader. Idempotent.
    void shutdown() {
        std::vector<waiter> orphans;
        {
            std::lock_guard lock(state_->mu);
            if (stopping_ && !worker_.joinable()) {
                return;
            }
            stopping_ = true;
            for (auto &e : state_->entries) {
                for (auto &w : e.waiters) {
                    orphans.push_back(std::move(w));
                }
                e.waiters.clear();
            }
            state_->cv.notify_all();
        }
        for (auto &w : orphans) {
            w.done(error{error_kind::unavailable, "the server is shutting down", "", "not_ready"});
        }
        if (worker_.joinable()) {
            worker_.join();
        }
        std::vector<std::shared_ptr<Instance>> stopped;
        {
            std::lock_guard lock(state_->mu);
            for (auto &e : state_->entries) {
                if (e.instance) {
                    stopped.push_back(std::move(e.instance));
                    e.instance.reset();
                    e.state = hosted_state::unloaded;
                }
            }
        }
        for (auto &i : stopped) {
            i->stop();
        }
    }

  private:
    struct waiter {
        done_fn                               done;
        std::chrono::steady_clock::time_point deadline;
    };
    struct entry {
        hosted_model_spec                     spec;
        hosted_state                          state = hosted_state::unloaded;
        std::shared_ptr<Instance>             instance;
        int64_t                               leases    = 0;
        uint64_t                              last_used = 0;
        error                                 failure;
        std::chrono::steady_clock::time_point failed_at;
        std::vector<waiter>                   waiters;
        int64_t                               loads = 0, unloads = 0;
        uint64_t                              pull_received = 0, pull_total = 0;
    };
    // Outlives the host for as long as a lease does (a lease's release touches it).
    struct shared {
        std::mutex              mu;
        std::condition_variable cv;
        std::vector<entry>      entries;
        uint64_t                clock = 0;
    };

    // Under the lock: the answer that needs no load.
    std::optional<result<lease>> immediate_locked(size_t index) {
        auto &e = state_->entries[index];
        if (e.state == hosted_state::loaded) {
            return result<lease>(make_lease(index));
        }
        if (stopping_) {
            return result<lease>(error{error_kind::unavailable, "the server is shutting down", "", "not_ready"});
        }
        if (e.state == hosted_state::pulling) {
            return result<lease>(e.failure);
        }
        if (e.state == hosted_state::failed && std::chrono::steady_clock::now() - e.failed_at < opts_.retry_after) {
            return result<lease>(e.failure);
        }
        return std::nullopt;
    }

    // Under the lock.
    lease make_lease(size_t index) {
        auto &e     = state_->entries[index];
        e.last_used = ++state_->clock;
        ++e.leases;
        lease l;
        l.instance_                = e.instance;
        l.index_                   = index;
        std::weak_ptr<shared> weak = state_;
        l.hold_                    = std::shared_ptr<void>(nullptr, [weak, index](void *) {
            if (auto s = weak.lock()) {
                std::lock_guard lock(s->mu);
                --s->entries[index].leases;
                s->cv.notify_all(); // a load may be waiting for this model to go idle
            }
        });
        return l;
    }

    uint64_t resident_locked() const {
        uint64_t sum = 0;
        for (const auto &e : state_->entries) {
            if (e.instance) {
                sum += e.spec.memory_bytes;
            }
        }
        return sum;
    }

    // The loader thread: one load at a time, in the order requests asked.
    void run() {
        std::unique_lock lock(state_->mu);
        while (!stopping_) {
            expire_waiters(lock);
            std::optional<size_t> next;
            for (size_t i = 0; i < state_->entries.size(); ++i) {
                if (state_->entries[i].state == hosted_state::loading && !state_->entries[i].waiters.empty()) {
                    next = i;
                    break;
                }
            }
            if (!next) {
                state_->cv.wait_for(lock, std::chrono::milliseconds(200));
                continue;
            }
            auto &e = state_->entries[*next];
            // Make room: unload idle models, least recently used first; if the busy ones are in
            // the way, wait for a lease to end (or a waiter's deadline).
            std::vector<resident_model> resident;
            for (size_t i = 0; i < state_->entries.size(); ++i) {
                const auto &r = state_->entries[i];
                if (r.instance) {
                    resident.push_back({i, r.spec.memory_bytes, r.leases > 0 || !r.instance->idle(), r.last_used});
                }
            }
            if (opts_.budget_bytes > 0 && e.spec.memory_bytes > opts_.budget_bytes) {
                fail(lock, *next,
                     error{error_kind::unavailable,
                           "the model '" + e.spec.id + "' needs about " + std::to_string(e.spec.memory_bytes >> 20) +
                               " MiB, more than the whole memory budget of " +
                               std::to_string(opts_.budget_bytes >> 20) + " MiB (--memory-budget)",
                           "model", "model_too_large"});
                continue;
            }
            auto victims = choose_evictions(resident, e.spec.memory_bytes, opts_.budget_bytes);
            if (!victims) {
                state_->cv.wait_for(lock, std::chrono::milliseconds(50));
                continue;
            }
            std::vector<std::shared_ptr<Instance>> unloaded;
            for (size_t v : *victims) {
                auto &r = state_->entries[v];
                unloaded.push_back(std::move(r.instance));
                r.instance.reset();
                r.state = hosted_state::unloaded;
                ++r.unloads;
            }
            const size_t index = *next;
            lock.unlock();
            for (auto &u : unloaded) {
                u->stop(); // nothing runs on it: it had no lease and was idle
            }
            unloaded.clear(); // the memory goes back before the next model maps its weights
            auto loaded = load_(index);
            lock.lock();
            auto &le = state_->entries[index];
            if (!loaded) {
                fail(lock, index, loaded.err());
                continue;
            }
            le.instance = std::move(*loaded);
            le.state    = hosted_state::loaded;
            ++le.loads;
            if (stopping_) {
                break; // shutdown() stops it
            }
            std::vector<std::pair<waiter, lease>> ready;
            for (auto &w : le.waiters) {
                ready.emplace_back(std::move(w), make_lease(index));
            }
            le.waiters.clear();
            lock.unlock();
            for (auto &[w, l] : ready) {
                w.done(std::move(l));
            }
            ready.clear(); // releases leases that were not taken, under no lock
            lock.lock();
        }
    }

    // Under the lock; answers the entry's waiters with `why` (outside it).
    void fail(std::unique_lock<std::mutex> &lock, size_t index, error why) {
        auto &e     = state_->entries[index];
        e.state     = hosted_state::failed;
        e.failure   = why;
        e.failed_at = std::chrono::steady_clock::now();
        auto ws     = std::move(e.waiters);
        e.waiters.clear();
        lock.unlock();
        for (auto &w : ws) {
            w.done(why);
        }
        lock.lock();
    }

    // Under the lock: answers waiters whose deadline passed.
    void expire_waiters(std::unique_lock<std::mutex> &lock) {
        const auto                            now = std::chrono::steady_clock::now();
        std::vector<std::pair<waiter, error>> late;
        for (auto &e : state_->entries) {
            auto it = e.waiters.begin();
            while (it != e.waiters.end()) {
                if (it->deadline <= now) {
                    late.emplace_back(std::move(*it),
                                      error{error_kind::unavailable,
                                            "the model '" + e.spec.id + "' did not load within " +
                                                std::to_string(opts_.load_wait.count() / 1000) +
                                                " s (--model-load-timeout); other models may be busy holding the "
                                                "memory budget; retry shortly",
                                            "", "model_loading"});
                    it = e.waiters.erase(it);
                } else {
                    ++it;
                }
            }
            if (e.state == hosted_state::loading && e.waiters.empty()) {
                e.state = e.instance ? hosted_state::loaded : hosted_state::unloaded;
            }
        }
        if (late.empty()) {
            return;
        }
        lock.unlock();
        for (auto &[w, why] : late) {
            w.done(why);
        }
        lock.lock();
    }

    host_options            opts_;
    loader_fn               load_;
    std::shared_ptr<shared> state_;
    bool                    stopping_ = false; // under state_->mu
    std::thread             worker_;
};

} // namespace inferbox
