"""The record channel's decisions: what to send next, and what counts as delivered.
Pure: no I/O, no asyncio, time passed in (``now_s``, monotonic seconds).

- **Delivered** means the broker acknowledged it (PUBACK). ``delivered`` is the
  highest seq such that every entry up to it was acknowledged; only that is
  persisted, so after a restart or reconnect everything after it is sent again
  (the collector de-duplicates on (node, seq)).
- **Order**: live entries are handed to the broker in chain order; at most
  ``window`` wait for their acknowledgement at once.
- **Bounded rate**: a token bucket (``rate_per_s``, ``burst``) bounds how fast a
  backlog drains, so a room back from a day offline does not take the CPU from
  its poll loop. A message carrying a sample batch costs a token; one carrying
  no batch (a row, an event, a non-procedure batch's entry) costs
  ``LIGHT_COST`` of one (``refund``): the bound is on the expensive ones.
- **Resend** (``cryoctl record resend --from A --to B``): operator ranges are
  sent before live entries, at the same rate; they do not move ``delivered``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = [
    "LIGHT_COST",
    "ChannelState",
    "Limits",
    "Plan",
    "ResendQueued",
    "ResendRefused",
    "acked",
    "disconnected",
    "new_head",
    "plan",
    "refund",
    "resend",
    "withdrawn",
]


#: what a message carrying no sample batch costs, in tokens (a batch costs 1)
LIGHT_COST = 0.1


@dataclass(frozen=True, slots=True)
class Limits:
    rate_per_s: float
    burst: int
    window: int

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1 or self.window < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and window >= 1")


@dataclass(frozen=True, slots=True)
class ChannelState:
    delivered: int  # every entry up to here acknowledged by the broker
    head: int  # the newest seq of the chain, as far as known
    sent: int  # the newest live seq handed to the broker on this connection
    tokens: float
    tokens_at_s: float
    acked: frozenset[int] = frozenset()  # live seqs acknowledged beyond ``delivered``
    inflight: frozenset[tuple[int, bool]] = frozenset()  # (seq, is_resend) not yet acked
    resend: tuple[tuple[int, int], ...] = ()  # operator ranges still to send, in order

    @classmethod
    def start(cls, delivered: int, head: int, *, now_s: float, limits: Limits) -> ChannelState:
        return cls(
            delivered=delivered,
            head=head,
            sent=delivered,
            tokens=float(limits.burst),
            tokens_at_s=now_s,
        )

    @property
    def backlog(self) -> int:
        """Live entries not yet acknowledged."""
        return max(0, self.head - self.delivered)

    @property
    def resend_pending(self) -> int:
        return sum(last - first + 1 for first, last in self.resend)


@dataclass(frozen=True, slots=True)
class Plan:
    """Send ``seqs`` now (``resend`` flags each), then ask again; or, with no seqs,
    ask again after ``wait_s`` (None: when something happens: an ack, a new head)."""

    seqs: tuple[int, ...] = ()
    resend: tuple[bool, ...] = ()
    wait_s: float | None = None


def _refill(state: ChannelState, limits: Limits, now_s: float) -> ChannelState:
    elapsed = max(0.0, now_s - state.tokens_at_s)
    tokens = min(float(limits.burst), state.tokens + elapsed * limits.rate_per_s)
    return replace(state, tokens=tokens, tokens_at_s=now_s)


def plan(state: ChannelState, limits: Limits, now_s: float) -> tuple[ChannelState, Plan]:
    """The next seqs to hand to the broker, within the window and the rate."""
    state = _refill(state, limits, now_s)
    seqs: list[int] = []
    flags: list[bool] = []
    resend_q = list(state.resend)
    sent = state.sent
    tokens = state.tokens
    room = limits.window - len(state.inflight)
    while room > 0 and tokens >= 1.0:
        if resend_q:
            first, last = resend_q[0]
            seqs.append(first)
            flags.append(True)
            if first >= last:
                resend_q.pop(0)
            else:
                resend_q[0] = (first + 1, last)
        elif sent < state.head:
            sent += 1
            seqs.append(sent)
            flags.append(False)
        else:
            break
        tokens -= 1.0
        room -= 1
    wait_s: float | None = None
    if not seqs and (resend_q or sent < state.head) and len(state.inflight) < limits.window:
        wait_s = (1.0 - tokens) / limits.rate_per_s  # out of tokens: when the next one comes
    new = replace(
        state,
        sent=sent,
        tokens=tokens,
        resend=tuple(resend_q),
        inflight=state.inflight | frozenset(zip(seqs, flags, strict=True)),
    )
    return new, Plan(tuple(seqs), tuple(flags), wait_s)


def acked(state: ChannelState, seq: int, *, is_resend: bool) -> ChannelState:
    """The broker acknowledged ``seq``: ``delivered`` moves over every contiguous ack."""
    inflight = state.inflight - {(seq, is_resend)}
    if is_resend:
        return replace(state, inflight=inflight)
    done = set(state.acked)
    done.add(seq)
    delivered = state.delivered
    while delivered + 1 in done:
        delivered += 1
        done.discard(delivered)
    return replace(
        state,
        inflight=inflight,
        delivered=delivered,
        acked=frozenset(s for s in done if s > delivered),
    )


def disconnected(state: ChannelState) -> ChannelState:
    """The connection dropped: what was not acknowledged goes again, in order."""
    pending_resend = sorted(s for s, r in state.inflight if r)
    ranges = tuple((s, s) for s in pending_resend) + state.resend
    return replace(
        state, sent=state.delivered, acked=frozenset(), inflight=frozenset(), resend=ranges
    )


def withdrawn(state: ChannelState, items: Sequence[tuple[int, bool]]) -> ChannelState:
    """Planned ``(seq, is_resend)`` that were not handed over after all (one could
    not be sent): live ones go again from the first of them; resends are dropped."""
    live = [s for s, r in items if not r]
    return replace(
        state,
        sent=min(live) - 1 if live else state.sent,
        inflight=state.inflight - frozenset(items),
    )


def refund(state: ChannelState, limits: Limits, light: int) -> ChannelState:
    """``light`` of the planned messages turned out to carry no sample batch: each
    gives back all but ``LIGHT_COST`` of its token (never above the burst)."""
    tokens = min(float(limits.burst), state.tokens + light * (1.0 - LIGHT_COST))
    return replace(state, tokens=tokens)


def new_head(state: ChannelState, head: int) -> ChannelState:
    return state if head <= state.head else replace(state, head=head)


@dataclass(frozen=True, slots=True)
class ResendRefused:
    reason: str


@dataclass(frozen=True, slots=True)
class ResendQueued:
    first: int
    last: int


def resend(
    state: ChannelState, first: int, last: int | None
) -> tuple[ChannelState, ResendQueued | ResendRefused]:
    """Queue the operator's range ``first..last`` (``last`` None: up to the head)."""
    if first < 1:
        return state, ResendRefused("--from is 1 or more")
    if last is not None and last < first:
        return state, ResendRefused(f"--to {last} is before --from {first}")
    if first > state.head:
        return state, ResendRefused(f"the chain ends at entry {state.head}")
    end = state.head if last is None else last
    end = min(end, state.head)
    return replace(state, resend=(*state.resend, (first, end))), ResendQueued(first, end)
