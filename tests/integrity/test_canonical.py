"""cryod.canon/1 properties beyond the fixed vectors: the fast sample path gives the
checked path's bytes, every row round-trips through its own bytes, and what has no
canonical form is refused with the column named."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryod import integrity as I
from cryod.integrity.canonical import EncodingError, value_token
from cryod.integrity.samples import _row_v1_checked

reals = st.floats(allow_nan=False)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
sample = st.tuples(
    st.integers(1, 2**62),
    st.none() | st.integers(1, 10**6),
    texts,
    reals,
    reals,
    st.integers(0, 64),
    texts,
    st.none() | reals,
    texts,
)


@given(st.lists(sample, max_size=8))
def test_fast_sample_path_equals_the_checked_path(rows: list[tuple[object, ...]]) -> None:
    fast = I.encode_sample_batch_v1(rows)
    header = fast[: fast.index(b"][") + 1] if rows else fast[:-1]
    slow = header + b"".join(_row_v1_checked(r).encode() for r in rows) + b"]"
    assert fast == slow


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(
            st.tuples(st.just("int"), st.integers(-(2**63), 2**63 - 1)),
            st.tuples(st.just("real"), reals),
            st.tuples(st.just("text"), texts),
            st.tuples(st.just("bool"), st.booleans()),
            st.tuples(
                st.just("json"),
                st.recursive(
                    st.none() | st.booleans() | reals | texts,
                    lambda kids: (
                        st.lists(kids, max_size=3) | st.dictionaries(texts, kids, max_size=3)
                    ),
                    max_leaves=6,
                ),
            ),
        ),
        min_size=1,
    )
)
def test_rows_round_trip_through_their_own_bytes(cols: dict[str, tuple[str, object]]) -> None:
    key = [next(iter(cols))]
    data = I.encode_row("t", key, cols)
    back = I.decode_row(data)
    assert back.key == tuple(key)
    assert I.encode_row(back.table, back.key, back.columns) == data


def test_the_kind_decides_the_token_not_the_python_type() -> None:
    assert value_token("real", 5) == value_token("real", 5.0)
    assert value_token("bool", 1) == "T"
    assert value_token("bool", 0) == "F"
    assert value_token("json", {"n": 30}) == value_token("json", {"n": 30.0})
    t = dt.datetime(2026, 3, 1, 10, 15, 2, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert value_token("time", t) == "t2026-03-01T09:15:02.123456Z"


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("int", 1.0),
        ("int", True),
        ("real", math.nan),
        ("real", "1.5"),
        ("text", 3),
        ("time", "2026-03-01 09:15:02"),
        ("time", "2026-03-01T09:15:02Z"),
        ("bool", 2),
        ("json", {1: "x"}),
        ("text", "\ud800"),
    ],
)
def test_no_canonical_form_is_refused(kind: str, value: object) -> None:
    with pytest.raises(EncodingError):
        value_token(kind, value)


def test_the_column_that_cannot_be_encoded_is_named() -> None:
    with pytest.raises(EncodingError) as info:
        I.encode_row("cycles", ["id"], {"id": ("int", 1), "started_at": ("time", "2020-01-01")})
    assert info.value.column == "started_at"
    with pytest.raises(EncodingError) as info:
        I.encode_sample_batch_v1([(1, None, "c1", "late", 1.0, 0, "tip_c", 1.0, "valid")])
    assert info.value.column == "t_utc"


def test_malformed_bytes_are_refused_when_decoding() -> None:
    for bad in (b"i01;", b"s5:abc", b"fzz", b"[N", b"{s1:aNs1:aN}", b"NN", b"x"):
        with pytest.raises(EncodingError):
            I.decode(bad)
