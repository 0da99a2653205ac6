"""The drivers' one reconnect back-off rule (drivers/backoff.py)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryod.drivers.backoff import Backoff, BackoffPolicy

POLICY = BackoffPolicy(first_s=0.05, max_s=2.0)


def test_ceiling_doubles_from_first_and_stops_at_max() -> None:
    ceilings = [POLICY.ceiling_s(n) for n in range(1, 9)]
    assert ceilings == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert POLICY.ceiling_s(0) == 0.0
    assert POLICY.ceiling_s(10_000) == 2.0  # no overflow however long the outage


def test_jitter_spans_half_to_the_whole_ceiling() -> None:
    assert POLICY.delay_s(3, 0.0) == pytest.approx(0.1)
    assert POLICY.delay_s(3, 0.5) == pytest.approx(0.15)
    assert POLICY.delay_s(3, 1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="outside"):
        POLICY.delay_s(3, 1.5)


@given(failures=st.integers(1, 200), draw=st.floats(0.0, 1.0))
def test_every_delay_is_within_half_to_max(failures: int, draw: float) -> None:
    delay = POLICY.delay_s(failures, draw)
    ceiling = POLICY.ceiling_s(failures)
    assert ceiling / 2 <= delay <= ceiling <= POLICY.max_s


@pytest.mark.parametrize(
    ("first_s", "max_s"),
    [(0.0, 1.0), (-1.0, 1.0), (float("nan"), 1.0), (1.0, 0.5), (0.1, float("inf"))],
)
def test_bad_policies_are_refused(first_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match=r"first_s|max_s"):
        BackoffPolicy(first_s=first_s, max_s=max_s)


def test_counter_grows_per_failure_and_resets_on_success() -> None:
    b = Backoff(policy=POLICY, rng=random.Random(1))
    delays = [b.failed() for _ in range(8)]
    assert b.failures == 8
    for n, d in enumerate(delays, start=1):
        assert POLICY.ceiling_s(n) / 2 <= d <= POLICY.ceiling_s(n)
    assert delays[-1] > delays[0]
    b.succeeded()
    assert b.failures == 0
    assert b.failed() <= POLICY.first_s


def test_same_seed_same_waits_different_seeds_spread() -> None:
    """The draw is injected: a seed fixes the waits; two links do not wait in step."""

    def waits(seed: int) -> list[float]:
        b = Backoff(policy=POLICY, rng=random.Random(seed))
        return [b.failed() for _ in range(6)]

    assert waits(3) == waits(3)
    assert waits(3) != waits(4)
