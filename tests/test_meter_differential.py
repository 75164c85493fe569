"""An allowance's per-request kernel (``AllowanceMeter``) and the rate-limit headers
(``rate_headers``): the native twin must match ``ferrule._pure.meter`` exactly.

Hypothesis builds grants (each limit present or not, small enough to run out), the buckets'
state after the grant, and a sequence of requests admitted, taken, settled and viewed at random
clock readings, with the meter given back somewhere along the way; both meters get the same
calls, and every result and counter must be identical after each one. The headers are checked
on their own over resets from none to hours (both routes' formats) and clocks across centuries.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferrule import _pure
from ferrule._pure.meter import duration_text, rfc3339

EXAMPLES = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SMALL = st.integers(0, 50)
MAYBE = st.one_of(st.none(), SMALL)
RESET = st.one_of(
    st.floats(0, 2e6),  # under a second to two seconds
    st.floats(0, 5e9),  # up to ~83 minutes
    st.sampled_from([0.0, 999_000.0, 999_000.5, 1e6, 59_999_000.0, 60e6, 61_234_000.0]),
)
BUCKET = st.one_of(st.none(), st.tuples(st.integers(1, 10**9), st.integers(0, 10**6), RESET))
NOW = st.floats(1.7e9, 1.9e9)
STEP = st.one_of(
    st.tuples(st.just("admit"), SMALL, SMALL, st.floats(0, 2), NOW, st.booleans()),
    st.tuples(st.just("take"), SMALL, SMALL, st.floats(0, 2)),
    st.tuples(st.just("settle"), SMALL, SMALL, SMALL, SMALL),
    st.tuples(st.just("view"), NOW),
    st.tuples(st.just("give back")),
    st.tuples(st.just("exhaust")),
)
COUNTERS = (
    "requests", "tokens_in_flight", "tokens_used", "in_flight", "reserved_in_flight", "spent",
    "exhausted", "returned",
)  # fmt: skip


def _state(m: Any) -> tuple[Any, ...]:
    return (*(getattr(m, name) for name in COUNTERS), m.unused())


def _call(m: Any, step: tuple[Any, ...]) -> Any:
    kind, *args = step
    if kind == "give back":
        m.returned = True
        return None
    if kind == "exhaust":
        m.exhausted = True
        return None
    return getattr(m, kind)(*args)


@EXAMPLES
@given(
    grant=st.tuples(MAYBE, MAYBE, MAYBE, MAYBE),
    rpm=BUCKET,
    tpm=BUCKET,
    taken_s=NOW,
    until=st.floats(0, 2),
    steps=st.lists(STEP, max_size=40),
)
def test_the_meter_matches_its_twin(
    native: ModuleType,
    grant: tuple[int | None, ...],
    rpm: tuple[int, int, float] | None,
    tpm: tuple[int, int, float] | None,
    taken_s: float,
    until: float,
    steps: list[tuple[Any, ...]],
) -> None:
    twin = _pure.AllowanceMeter(*grant, rpm, tpm, taken_s, until)
    ours = native.AllowanceMeter(*grant, rpm, tpm, taken_s, until)
    assert _state(ours) == _state(twin)
    for step in steps:
        assert _call(ours, step) == _call(twin, step), step
        assert _state(ours) == _state(twin), step


@EXAMPLES
@given(
    anthropic=st.booleans(),
    rpm_limit=st.one_of(st.none(), st.integers(1, 2**62)),
    tpm_limit=st.one_of(st.none(), st.integers(1, 2**62)),
    now_s=st.one_of(NOW, st.floats(0, 4e9)),
    left=st.tuples(st.integers(-(2**40), 2**62), st.integers(-(2**40), 2**62)),
    resets=st.tuples(RESET, RESET),
)
@example(False, 1, 1, 1.8e9, (0, 0), (999_000.0, 999_000.0001))  # 999 ms and a hair: 1 s
@example(True, 1, None, 1_796_860_799.0, (0, 0), (1.0, 0.0))  # rounds up past midnight
def test_rate_headers_match_their_twin(
    native: ModuleType,
    anthropic: bool,
    rpm_limit: int | None,
    tpm_limit: int | None,
    now_s: float,
    left: tuple[int, int],
    resets: tuple[float, float],
) -> None:
    args = (anthropic, rpm_limit, tpm_limit, now_s, left[0], resets[0], left[1], resets[1])
    assert native.rate_headers(*args) == _pure.rate_headers(*args)


def test_the_formats() -> None:
    """What the headers say (the twin; the native one is held to it above)."""
    assert duration_text(12_000) == "12ms" and duration_text(6_500_000) == "6.5s"
    assert duration_text(60_000_000) == "1m0s" and duration_text(61_234_000) == "1m1.234s"
    assert rfc3339(1_796_860_799.5) == "2026-12-10T00:00:00Z"
    headers = dict(_pure.rate_headers(False, 600, None, 1.8e9, 5, 100_000.0, 0, 0.0))
    assert headers == {
        b"x-ratelimit-limit-requests": b"600",
        b"x-ratelimit-remaining-requests": b"5",
        b"x-ratelimit-reset-requests": b"100ms",
    }
    anthropic = dict(_pure.rate_headers(True, None, 9, 1.8e9, 0, 0.0, 3, 2.5e6))
    assert anthropic[b"anthropic-ratelimit-tokens-reset"] == rfc3339(1.8e9 + 2.5).encode()
    assert math.ceil(1.8e9 + 2.5) == 1_800_000_003  # the reset is rounded up to the second
