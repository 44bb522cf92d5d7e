#pragma once
// Goodput under latency targets (DistServe, Sarathi-Serve): which requests of a benchmark run met
// a time-to-first-token target and an inter-token-latency target, and how many requests a second
// met both. Pure arithmetic over each request's measurements, no I/O; bench.cpp feeds it, and the
// unit tests check it without a server.
//
// Definitions (docs/benchmarks.md uses them):
//   - a request meets the TTFT target when it succeeded and its first content came at most
//     ttft_ms after it was due (its Poisson arrival; in a closed loop, when it was sent);
//   - it meets the ITL target when it succeeded and the p99 of its own gaps between content
//     chunks is at most itl_ms (a request with fewer than two chunks has no gap and meets it);
//   - a missing target (0) is met by every request that succeeded; a failed request meets none;
//   - shares are over all requests of the run, failed ones included;
//   - achieved rate = requests answered (ok or failed) / the run's duration, and goodput =
//     requests meeting both / duration, i.e. achieved rate × share meeting both.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace inferbox {

struct slo_targets {
    double ttft_ms = 0; // 0 = no target
    double itl_ms  = 0; // the p99 of each request's own inter-token gaps; 0 = no target
};

// Percentile p (0..100) of ascending values, by linear interpolation between the closest ranks
// (numpy's default, as vLLM reports); 0 for no values.
inline double percentile_of_sorted(std::span<const double> sorted, double p) {
    if (sorted.empty()) {
        return 0.0;
    }
    const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(sorted.size() - 1);
    const auto   lo   = static_cast<size_t>(std::floor(rank));
    const size_t hi   = std::min(lo + 1, sorted.size() - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

inline double percentile(std::vector<double> values, double p) {
    std::sort(values.begin(), values.end());
    return percentile_of_sorted(values, p);
}

// What the targets need of one request.
struct request_outcome {
    bool                ok      = false;
    double              ttft_ms = 0; // from when it was due to its first content
    std::vector<double> gaps_ms;     // between successive content chunks
};

struct slo_verdict {
    bool   ttft       = false;
    bool   itl        = false;
    double itl_p99_ms = 0; // of the request's own gaps (0 with none)
};

inline slo_verdict judge(const request_outcome &r, const slo_targets &t) {
    slo_verdict v;
    v.itl_p99_ms = percentile(r.gaps_ms, 99);
    if (!r.ok) {
        return v;
    }
    v.ttft = t.ttft_ms <= 0 || r.ttft_ms <= t.ttft_ms;
    v.itl  = t.itl_ms <= 0 || v.itl_p99_ms <= t.itl_ms;
    return v;
}

struct slo_report {
    int32_t requests      = 0;
    int32_t met_ttft      = 0;
    int32_t met_itl       = 0;
    int32_t met_both      = 0;
    double  share_ttft    = 0; // of all requests, in [0, 1]
    double  share_itl     = 0;
    double  share_both    = 0;
    double  offered_rate  = 0; // requests/s asked for (0 = closed loop)
    double  achieved_rate = 0; // requests answered / duration
    double  goodput       = 0; // requests meeting both / duration
};

// The run's attainment; `duration_s` <= 0 gives rates of 0.
inline slo_report attainment(std::span<const request_outcome> runs, const slo_targets &t, double duration_s,
                             double offered_rate) {
    slo_report rep;
    rep.offered_rate = offered_rate;
    rep.requests     = static_cast<int32_t>(runs.size());
    for (const request_outcome &r : runs) {
        const slo_verdict v = judge(r, t);
        rep.met_ttft += v.ttft ? 1 : 0;
        rep.met_itl += v.itl ? 1 : 0;
        rep.met_both += v.ttft && v.itl ? 1 : 0;
    }
    if (rep.requests > 0) {
        const auto n   = static_cast<double>(rep.requests);
        rep.share_ttft = static_cast<double>(rep.met_ttft) / n;
        rep.share_itl  = static_cast<double>(rep.met_itl) / n;
        rep.share_both = static_cast<double>(rep.met_both) / n;
    }
    if (duration_s > 0) {
        rep.achieved_rate = static_cast<double>(rep.requests) / duration_s;
        rep.goodput       = static_cast<double>(rep.met_both) / duration_s;
    }
    return rep;
}

// One run of a rate sweep.
struct rate_point {
    double rate       = 0; // offered, requests/s
    double share_both = 0;
};

// The highest offered rate at which at least `target` of the requests met both targets, with every
// lower rate of the sweep meeting it too (a lucky run above a miss does not count: attainment
// falls with load, and a sweep of a few requests a rate is noisy). nullopt when the lowest rate
// already misses, or for no points.
inline std::optional<double> highest_rate_meeting(std::vector<rate_point> points, double target) {
    std::sort(points.begin(), points.end(), [](const rate_point &a, const rate_point &b) { return a.rate < b.rate; });
    std::optional<double> best;
    for (const rate_point &p : points) {
        // A share computed as k / n compares with the target with a little slack for rounding
        // (9 of 10 is 0.9 exactly as a decimal, not always as k / n in binary).
        if (p.share_both + 1e-9 < target) {
            break;
        }
        best = p.rate;
    }
    return best;
}

} // namespace inferbox
