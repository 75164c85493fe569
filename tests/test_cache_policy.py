"""Response-cache policy (ferrule.cache.policy), keys (ferrule.cache.keys) and tenant ids."""

from __future__ import annotations

from typing import Any

import pytest

from ferrule.cache.keys import cache_key, normalize_betas
from ferrule.cache.policy import Decision, decide, is_deterministic
from ferrule.tenant import tenant_id
from ferrule.translate.request import to_anthropic

H = list[tuple[bytes, bytes]]

DET: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 100,
    "temperature": 0,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
}
SAMPLED = {k: v for k, v in DET.items() if k != "temperature"}
THINKING = {**SAMPLED, "thinking": {"type": "enabled", "budget_tokens": 1024}}


# (headers, body, default_on_deterministic) -> (read, store); every rule of the docstring.
CASES: list[tuple[str, H, dict[str, Any], bool, tuple[bool, bool]]] = [
    ("deterministic by default", [], DET, True, (True, True)),
    ("default off", [], DET, False, (False, False)),
    ("no temperature is not deterministic", [], SAMPLED, True, (False, False)),
    ("temperature 0.7", [], {**DET, "temperature": 0.7}, True, (False, False)),
    ("temperature 0.0", [], {**DET, "temperature": 0.0}, True, (True, True)),
    ("temperature False is not 0", [], {**DET, "temperature": False}, True, (False, False)),
    ("on forces", [(b"x-ferrule-cache", b"on")], SAMPLED, True, (True, True)),
    ("on forces when default off", [(b"x-ferrule-cache", b"ON")], SAMPLED, False, (True, True)),
    ("off bypasses", [(b"x-ferrule-cache", b"off")], DET, True, (False, False)),
    ("no-store", [(b"cache-control", b"no-store")], DET, True, (False, False)),
    ("no-store beats on", [(b"x-ferrule-cache", b"on"), (b"cache-control", b"no-store")], DET,
     True, (False, False)),
    ("no-cache refreshes", [(b"cache-control", b"no-cache")], DET, True, (False, True)),
    ("no-cache among others", [(b"cache-control", b"max-age=0, No-Cache")], DET, True,
     (False, True)),
    ("no-cache twice-listed header", [(b"cache-control", b"max-age=0"),
                                      (b"cache-control", b"no-cache")], DET, True, (False, True)),
    ("no-cache on an ineligible request", [(b"cache-control", b"no-cache")], SAMPLED, True,
     (False, False)),
    ("no-cache with on", [(b"x-ferrule-cache", b"on"), (b"cache-control", b"no-cache")], SAMPLED,
     True, (False, True)),
    ("thinking is never cached by default", [], THINKING, True, (False, False)),
    ("thinking with temperature 0 is still not", [], {**THINKING, "temperature": 0}, True,
     (False, False)),
    ("thinking on opt-in", [(b"x-ferrule-cache", b"on")], THINKING, True, (True, True)),
    ("thinking disabled is no thinking", [], {**DET, "thinking": {"type": "disabled"}}, True,
     (True, True)),
    ("unknown value ignored", [(b"x-ferrule-cache", b"maybe")], DET, True, (True, True)),
    ("last value wins", [(b"x-ferrule-cache", b"on"), (b"x-ferrule-cache", b"off")], DET, True,
     (False, False)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "body", "default_on", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(
    headers: H, body: dict[str, Any], default_on: bool, expected: tuple[bool, bool]
) -> None:
    d = decide(headers, body, default_on_deterministic=default_on)
    assert (d.read, d.store) == expected
    assert d.reason
    assert d.upstream_x_cache == ("MISS" if any(expected) else "BYPASS")


def test_unknown_value_is_named_in_the_reason() -> None:
    assert "maybe" in decide([(b"x-ferrule-cache", b"maybe")], DET).reason


def test_decision_x_cache() -> None:
    assert Decision(True, True, "").upstream_x_cache == "MISS"
    assert Decision(False, True, "").upstream_x_cache == "MISS"
    assert Decision(False, False, "").upstream_x_cache == "BYPASS"


def test_deterministic_through_the_translator() -> None:
    def translated(**extra: Any) -> dict[str, Any]:
        body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
        return to_anthropic({**body, **extra}, aliases={}, version="2023-06-01").body

    assert is_deterministic(translated(temperature=0))
    assert not is_deterministic(translated())
    assert not is_deterministic(translated(temperature=0, reasoning_effort="low"))
    # 2026-10-21 drops temperature altogether: such requests are never deterministic.
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
    new = to_anthropic({**body, "temperature": 0}, aliases={}, version="2026-10-21").body
    assert not is_deterministic(new)


# -- tenants and keys ---------------------------------------------------------------------------


def key(**over: Any) -> str:
    args: dict[str, Any] = {
        "tenant": tenant_id("sk-ant-one"),
        "route": "openai",
        "body": DET,
        "anthropic_version": "2023-06-01",
        "betas": None,
    }
    args.update(over)
    return cache_key(**args)


def test_tenant_id_is_short_stable_and_hides_the_key() -> None:
    t = tenant_id("sk-ant-secret-123")
    assert t == tenant_id("sk-ant-secret-123")
    assert len(t) == 16 and int(t, 16) >= 0
    assert "secret" not in t
    assert t != tenant_id("sk-ant-secret-124")


def test_tenant_isolation_same_body_two_keys() -> None:
    a = key(tenant=tenant_id("sk-ant-one"))
    b = key(tenant=tenant_id("sk-ant-two"))
    assert a != b


def test_key_is_stable_and_ignores_key_order_and_stream() -> None:
    reordered = dict(reversed(list(DET.items())))
    assert key() == key(body=reordered)
    assert key() == key(body={**DET, "stream": True})
    assert key() == key(body={**DET, "stream": False})
    assert len(key()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"route": "anthropic"},
        {"anthropic_version": "2026-10-21"},
        {"betas": "prompt-caching-2024-07-31"},
        {"body": {**DET, "model": "claude-opus-4-6"}},
        {"body": {**DET, "temperature": 0.5}},
        {"body": {**DET, "top_p": 0.9}},
        {"body": {**DET, "max_tokens": 101}},
        {"body": {**DET, "stop_sequences": ["x"]}},
        {"body": {**DET, "system": [{"type": "text", "text": "s"}]}},
        {"body": {**DET, "tools": [{"name": "t", "input_schema": {"type": "object"}}]}},
        {"body": {**DET, "tool_choice": {"type": "any"}}},
        {"body": {**DET, "metadata": {"user_id": "u"}}},
        {"body": {**DET, "messages": [{"role": "user", "content": "hello"}]}},
    ],
)
def test_everything_that_can_change_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    assert key(**change) != key()


def test_betas_are_a_set() -> None:
    assert normalize_betas(" b, a ,b,, ") == ["a", "b"]
    assert key(betas="a,b") == key(betas="b, a")
    assert key(betas="") == key(betas=None)
