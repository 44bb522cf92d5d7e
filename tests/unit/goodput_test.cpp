// The arithmetic of `inferbox bench`'s latency targets (bench/slo.h): per-request verdicts,
// shares, goodput and the highest rate of a sweep meeting the attainment target. No server.
#include "bench/slo.h"

#include <gtest/gtest.h>

#include <vector>

using namespace inferbox;

namespace {

request_outcome ok_request(double ttft_ms, std::vector<double> gaps_ms) {
    request_outcome r;
    r.ok      = true;
    r.ttft_ms = ttft_ms;
    r.gaps_ms = std::move(gaps_ms);
    return r;
}

std::vector<double> even_gaps(int n, double ms) {
    return std::vector<double>(static_cast<size_t>(n), ms);
}

} // namespace

TEST(goodput, percentile_interpolates_between_closest_ranks) {
    EXPECT_DOUBLE_EQ(percentile({}, 99), 0.0);
    EXPECT_DOUBLE_EQ(percentile({7}, 99), 7.0);
    EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 50), 2.5);
    EXPECT_DOUBLE_EQ(percentile({1, 2, 3, 4, 5}, 0), 1.0);
    EXPECT_DOUBLE_EQ(percentile({1, 2, 3, 4, 5}, 100), 5.0);
    // 101 values 0..100: p99 is 99 exactly.
    std::vector<double> v;
    for (int i = 100; i >= 0; --i) {
        v.push_back(i);
    }
    EXPECT_DOUBLE_EQ(percentile(v, 99), 99.0);
}

TEST(goodput, one_long_stall_among_63_gaps_breaks_the_itl_target) {
    // 64 tokens: 63 gaps. p99 of 63 values sits 38 % of the way from the 62nd to the 63rd, so a
    // single 700 ms stall among 50 ms gaps gives a p99 of 50 + 0.38 * 650 = 297 ms.
    auto gaps           = even_gaps(63, 50);
    gaps[20]            = 700;
    const slo_verdict v = judge(ok_request(100, gaps), {2000, 150});
    EXPECT_NEAR(v.itl_p99_ms, 50 + 0.38 * 650, 1e-9);
    EXPECT_TRUE(v.ttft);
    EXPECT_FALSE(v.itl);
    // The same stall of 300 ms stays under 150 ms at p99: 50 + 0.38 * 250 = 145.
    gaps[20] = 300;
    EXPECT_TRUE(judge(ok_request(100, gaps), {2000, 150}).itl);
}

TEST(goodput, verdicts_at_the_bounds_missing_targets_and_failures) {
    const slo_targets t{2000, 150};
    EXPECT_TRUE(judge(ok_request(2000, even_gaps(10, 150)), t).ttft) << "a target is met at equality";
    EXPECT_TRUE(judge(ok_request(2000, even_gaps(10, 150)), t).itl);
    EXPECT_FALSE(judge(ok_request(2000.001, even_gaps(10, 150)), t).ttft);
    EXPECT_FALSE(judge(ok_request(10, even_gaps(10, 150.001)), t).itl);
    // One token: no gap, the ITL target holds.
    EXPECT_TRUE(judge(ok_request(10, {}), t).itl);
    // No targets: every successful request meets both.
    const slo_verdict none = judge(ok_request(1e6, even_gaps(3, 1e6)), {});
    EXPECT_TRUE(none.ttft && none.itl);
    // A failed request meets neither, whatever its numbers.
    request_outcome failed = ok_request(1, even_gaps(3, 1));
    failed.ok              = false;
    EXPECT_FALSE(judge(failed, t).ttft);
    EXPECT_FALSE(judge(failed, t).itl);
    EXPECT_FALSE(judge(failed, {}).ttft);
}

TEST(goodput, shares_are_over_all_requests_and_goodput_is_the_rate_meeting_both) {
    const slo_targets            t{1000, 100};
    std::vector<request_outcome> runs = {
        ok_request(500, even_gaps(5, 50)),  // both
        ok_request(500, even_gaps(5, 50)),  // both
        ok_request(1500, even_gaps(5, 50)), // ITL only
        ok_request(500, even_gaps(5, 200)), // TTFT only
        ok_request(1500, even_gaps(5, 200)) // neither
    };
    request_outcome failed;
    runs.push_back(failed); // neither, and still counted
    const slo_report r = attainment(runs, t, 12.0, 0.5);
    EXPECT_EQ(r.requests, 6);
    EXPECT_EQ(r.met_ttft, 3);
    EXPECT_EQ(r.met_itl, 3);
    EXPECT_EQ(r.met_both, 2);
    EXPECT_DOUBLE_EQ(r.share_ttft, 0.5);
    EXPECT_DOUBLE_EQ(r.share_itl, 0.5);
    EXPECT_DOUBLE_EQ(r.share_both, 2.0 / 6.0);
    EXPECT_DOUBLE_EQ(r.offered_rate, 0.5);
    EXPECT_DOUBLE_EQ(r.achieved_rate, 6.0 / 12.0);
    EXPECT_DOUBLE_EQ(r.goodput, 2.0 / 12.0);
    EXPECT_NEAR(r.goodput, r.achieved_rate * r.share_both, 1e-12);
}

TEST(goodput, empty_runs_and_zero_durations_give_zeros_not_nans) {
    const slo_report none = attainment({}, {1000, 100}, 10.0, 1.0);
    EXPECT_EQ(none.requests, 0);
    EXPECT_EQ(none.share_both, 0.0);
    EXPECT_EQ(none.goodput, 0.0);
    const std::vector<request_outcome> one = {ok_request(1, {})};
    const slo_report                   r   = attainment(one, {}, 0.0, 0.0);
    EXPECT_DOUBLE_EQ(r.share_both, 1.0);
    EXPECT_EQ(r.achieved_rate, 0.0);
    EXPECT_EQ(r.goodput, 0.0);
}

TEST(goodput, highest_rate_meeting_needs_every_lower_rate_to_meet_it_too) {
    // Given out of order; 9 of 10 is exactly the 90 % target.
    EXPECT_EQ(highest_rate_meeting({{0.3, 0.7}, {0.1, 1.0}, {0.2, 9.0 / 10.0}}, 0.9), 0.2);
    // A lucky run above a miss does not count.
    EXPECT_EQ(highest_rate_meeting({{0.1, 1.0}, {0.2, 0.8}, {0.3, 0.95}}, 0.9), 0.1);
    // Every rate meets it: the highest.
    EXPECT_EQ(highest_rate_meeting({{0.1, 1.0}, {0.2, 1.0}}, 0.9), 0.2);
    // The lowest misses: none, as for no points.
    EXPECT_EQ(highest_rate_meeting({{0.1, 0.85}, {0.2, 1.0}}, 0.9), std::nullopt);
    EXPECT_EQ(highest_rate_meeting({}, 0.9), std::nullopt);
    // Another attainment target.
    EXPECT_EQ(highest_rate_meeting({{0.1, 1.0}, {0.2, 0.8}, {0.3, 0.6}}, 0.75), 0.2);
}
