"""The record channel's pure core: order, window, rate, what counts as delivered, resend."""

from __future__ import annotations

import pytest

from cryod.daemon.record_channel import cursor as core

LIMITS = core.Limits(rate_per_s=10.0, burst=5, window=3)


def start(delivered: int = 0, head: int = 10, limits: core.Limits = LIMITS) -> core.ChannelState:
    return core.ChannelState.start(delivered, head, now_s=0.0, limits=limits)


def test_live_entries_go_in_chain_order_from_the_cursor_within_the_window() -> None:
    st, p = core.plan(start(delivered=4), LIMITS, 0.0)
    assert p.seqs == (5, 6, 7)  # window 3
    assert p.resend == (False, False, False)
    st2, p2 = core.plan(st, LIMITS, 0.0)
    assert p2.seqs == ()  # the window is full: wait for an ack
    assert p2.wait_s is None
    st3 = core.acked(st2, 5, is_resend=False)
    _, p3 = core.plan(st3, LIMITS, 0.0)
    assert p3.seqs == (8,)


def test_delivered_moves_only_over_contiguous_acknowledgements() -> None:
    st, _ = core.plan(start(), LIMITS, 0.0)  # 1, 2, 3 in flight
    st = core.acked(st, 2, is_resend=False)
    st = core.acked(st, 3, is_resend=False)
    assert st.delivered == 0  # 1 not acknowledged: nothing counts as delivered
    st = core.acked(st, 1, is_resend=False)
    assert st.delivered == 3
    assert st.acked == frozenset()
    assert st.inflight == frozenset()


def test_a_drop_sends_everything_unacknowledged_again_in_order() -> None:
    st, _ = core.plan(start(), LIMITS, 0.0)
    st = core.acked(st, 1, is_resend=False)
    st = core.acked(st, 3, is_resend=False)  # 2 lost with the connection
    st = core.disconnected(st)
    assert (st.delivered, st.sent, st.inflight) == (1, 1, frozenset())
    _, p = core.plan(st, LIMITS, 10.0)
    assert p.seqs == (2, 3, 4)


def test_the_rate_bounds_a_backlog_and_says_when_to_ask_again() -> None:
    limits = core.Limits(rate_per_s=10.0, burst=5, window=100)
    st = start(head=1000, limits=limits)
    st, p = core.plan(st, limits, 0.0)
    assert len(p.seqs) == 5  # the burst
    st, p = core.plan(st, limits, 0.0)
    assert p.seqs == ()
    assert p.wait_s == pytest.approx(0.1)
    sent = 5
    t = 0.0
    for _ in range(100):  # ten simulated seconds asked every 0.1 s
        t += 0.1
        st, p = core.plan(st, limits, t)
        sent += len(p.seqs)
    assert sent <= 5 + 10.0 * t + 1  # never more than burst + rate x time
    assert sent >= 10.0 * t - 1


def test_nothing_to_send_waits_for_news() -> None:
    st, p = core.plan(start(delivered=10, head=10), LIMITS, 0.0)
    assert p == core.Plan()
    st = core.new_head(st, 11)
    _, p = core.plan(st, LIMITS, 0.0)
    assert p.seqs == (11,)
    assert core.new_head(st, 3).head == 11  # an older head changes nothing


def test_resend_goes_first_and_does_not_move_the_cursor() -> None:
    st = start(delivered=10, head=12)
    st, r = core.resend(st, 2, 3)
    assert r == core.ResendQueued(2, 3)
    st, p = core.plan(st, LIMITS, 0.0)
    assert p.seqs == (2, 3, 11)
    assert p.resend == (True, True, False)
    st = core.acked(st, 2, is_resend=True)
    st = core.acked(st, 3, is_resend=True)
    assert st.delivered == 10
    st = core.acked(st, 11, is_resend=False)
    assert st.delivered == 11


def test_a_resend_lost_with_the_connection_is_sent_again() -> None:
    st, _ = core.resend(start(delivered=10, head=10), 4, 6)
    st, p = core.plan(st, LIMITS, 0.0)
    assert p.seqs == (4, 5, 6)
    st = core.acked(st, 4, is_resend=True)
    st = core.disconnected(st)
    _, p = core.plan(st, LIMITS, 10.0)
    assert p.seqs == (5, 6)
    assert p.resend == (True, True)


@pytest.mark.parametrize(
    ("first", "last", "reason"),
    [(0, 3, "--from is 1"), (5, 4, "before --from"), (11, None, "ends at entry 10")],
)
def test_a_resend_outside_the_chain_is_refused(first: int, last: int | None, reason: str) -> None:
    st = start(delivered=10, head=10)
    new, r = core.resend(st, first, last)
    assert isinstance(r, core.ResendRefused)
    assert reason in r.reason
    assert new == st


def test_a_resend_to_beyond_the_head_stops_at_the_head() -> None:
    _, r = core.resend(start(delivered=10, head=10), 8, 99)
    assert r == core.ResendQueued(8, 10)
    _, r = core.resend(start(delivered=10, head=10), 8, None)
    assert r == core.ResendQueued(8, 10)


def test_withdrawn_entries_go_again_from_the_first_live_one() -> None:
    st, _ = core.resend(start(delivered=0, head=10), 1, 1)
    st, p = core.plan(st, LIMITS, 0.0)
    assert p.seqs == (1, 1, 2)
    st = core.withdrawn(st, [(1, False), (2, False)])  # live 1 could not be sent
    assert st.sent == 0
    assert st.inflight == frozenset({(1, True)})


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        core.Limits(rate_per_s=0, burst=1, window=1)


def test_messages_without_a_sample_batch_give_back_most_of_their_token() -> None:
    limits = core.Limits(rate_per_s=10.0, burst=5, window=100)
    st, p = core.plan(start(head=1000, limits=limits), limits, 0.0)
    assert len(p.seqs) == 5
    st = core.refund(st, limits, light=5)  # all five were rows or events
    st, p = core.plan(st, limits, 0.0)
    assert len(p.seqs) == 4  # 5 x 0.9 tokens back
    st = core.refund(st, limits, light=1000)
    assert st.tokens == 5.0  # never above the burst
