"""The rate limiter's buckets: limits hold, and idle clients do not accumulate."""

from __future__ import annotations

from serving.security import TokenBuckets


def test_a_bucket_limits_then_refills() -> None:
    now = [0.0]
    buckets = TokenBuckets(3, clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == 20.0  # 3 a minute: the next token in 20 s
    now[0] = 20.0
    assert buckets.take("k") == 0.0


def test_idle_buckets_are_forgotten_and_active_ones_kept() -> None:
    now = [0.0]
    buckets = TokenBuckets(60, clock=lambda: now[0])
    for client in range(1000):
        buckets.take(f"ip:{client}")
    for _ in range(60):
        buckets.take("ip:busy")
    assert len(buckets) == 1001
    now[0] = 0.5
    assert buckets.take("ip:busy") > 0  # used up its minute
    now[0] = 59.0
    assert buckets.take("ip:busy") == 0.0  # refilled: one a second
    now[0] = 61.0
    buckets.take("ip:new")
    assert len(buckets) == 2  # the 1,000 idle clients are gone; ip:busy (active at 59 s) and ip:new stay
