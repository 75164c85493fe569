"""The model table (ferrule/data/models.toml): it loads, it is complete, its names resolve, its
prices are what the ledger bills, and the simulated upstream enforces each model's rules exactly as
the table states (200 where the table says the API accepts, 400 where it says the API refuses).

The e2e part runs one simulated upstream for the module and posts to it directly (httpx, the
``2023-06-01`` version Ferrule sends), one request per model and setting.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

import ferrule
from ferrule import models, pricing
from ferrule.breakpoints import min_cacheable_tokens
from ferrule.ledger.record import RequestRecord
from ferrule.ledger.schema import COLUMNS
from ferrule.ledger.writer import row
from ferrule.mock import MockOptions, mock_upstream
from ferrule.models import EFFORT_LEVELS, ModelCaps, ModelTable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA = Path(ferrule.__file__).parent / "data" / "models.toml"
RAW: dict[str, Any] = tomllib.loads(DATA.read_text(encoding="utf-8"))
REQUIRED = {
    "id", "aliases", "display_name", "created", "status", "context_window", "max_output_tokens",
    "default_max_tokens", "cache_min_tokens", "prefill", "forced_tool_choice",
    "structured_outputs", "strict_tools", "sampling", "sampling_exclusive", "thinking",
    "thinking_default", "thinking_display", "enabled_deprecated", "between_tools_effort",
    "preserved_thinking", "effort", "effort_default", "price",
}  # fmt: skip
OPTIONAL = {"retires", "limited", "disabled_max_effort"}
BUCKETS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
MILLION = Decimal(1_000_000)
ALL = models.table().models
SERVED = [m for m in ALL if not m.retired]
HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
TOOL: dict[str, Any] = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


# -- the table ------------------------------------------------------------------------------------


def test_table_loads_and_every_model_has_every_field() -> None:
    assert RAW["checked"] == dt.date(2026, 12, 6)
    assert models.table().checked == RAW["checked"]
    assert len(ALL) == len(RAW["model"]) >= 18
    for entry in RAW["model"]:
        keys = set(entry)
        assert keys >= REQUIRED, (entry["id"], REQUIRED - keys)
        assert keys <= REQUIRED | OPTIONAL, (entry["id"], keys - REQUIRED - OPTIONAL)
        assert entry["price"], entry["id"]  # every model of the table is priced
        for price in entry["price"]:
            assert isinstance(price["since"], dt.date) and all(b in price for b in BUCKETS)
    for caps in ALL:
        assert caps.default_max_tokens <= caps.max_output_tokens
        assert caps.effort == tuple(e for e in EFFORT_LEVELS if e in caps.effort)
        assert (caps.effort_default is None) == (not caps.effort)
        assert caps.thinking.types, caps.id


def test_current_lineup_is_listed() -> None:
    ids = {m.id for m in ALL}
    assert {
        "claude-opus-4-7", "claude-opus-4-8", "claude-opus-5", "claude-opus-5-5",
        "claude-sonnet-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5",
        "claude-fable-5-1", "claude-fable-5-2", "claude-opus-4-6", "claude-sonnet-4-6",
        "claude-opus-4-5-20251101", "claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929",
    } <= ids  # fmt: skip
    # GET /v1/models: every model that is not retired, newest first
    listed = [mid for mid, _, _ in models.KNOWN_MODELS]
    assert listed == [m.id for m in SERVED] and "claude-sonnet-4-5-20250929" not in listed
    created = [c for _, _, c in models.KNOWN_MODELS]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),  # undated alias
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5-20251001"),
        ("claude-haiku-4-5-latest", "claude-haiku-4-5-20251001"),
        ("claude-opus-4-5", "claude-opus-4-5-20251101"),
        ("claude-sonnet-4-6-20260301", "claude-sonnet-4-6"),  # a dated snapshot id
        ("Claude-Opus-4-7", "claude-opus-4-7"),
        ("claude-opus-5-5", "claude-opus-5-5"),  # not claude-opus-5
        ("claude-fable-5-2-20261109", "claude-fable-5-2"),
        ("claude-opus-5-7", None),  # a future model is unknown, never its neighbour
        ("claude-sonnet-5-5-extra", None),
        ("gpt-4o", None),
    ],
)
def test_names_resolve(name: str, expected: str | None) -> None:
    caps = models.capabilities(name)
    assert (caps.id if caps else None) == expected


def test_default_max_tokens_and_cache_minimum_come_from_the_table() -> None:
    assert models.default_max_tokens("claude-opus-5-5") == 16_384
    assert models.default_max_tokens("claude-haiku-4-5") == 16_384
    assert models.default_max_tokens("someone-elses-model") == models.FALLBACK_MAX_TOKENS
    for caps in ALL:
        assert min_cacheable_tokens(caps.id) == caps.cache_min_tokens
        for alias in caps.aliases:
            assert min_cacheable_tokens(alias) == caps.cache_min_tokens


def test_a_broken_table_is_refused_with_its_model_named() -> None:
    entry = next(e for e in RAW["model"] if e["id"] == "claude-opus-4-6")
    lines = [f"{k} = {_toml(v)}" for k, v in entry.items() if k not in ("price", "effort")]
    with pytest.raises(ValueError, match="model claude-opus-4-6 is invalid: 'effort'"):
        ModelTable.parse("[[model]]\n" + "\n".join(lines))
    bad = [
        line if not line.startswith("thinking =") else 'thinking = ["sometimes"]' for line in lines
    ]
    with pytest.raises(ValueError, match="unknown value"):
        ModelTable.parse("[[model]]\n" + "\n".join([*bad, f"effort = {_toml(entry['effort'])}"]))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, dt.date)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value) + '"'


# -- prices -------------------------------------------------------------------------------------


def _raw_price(caps: ModelCaps, when: dt.date) -> dict[str, Any]:
    entry = next(e for e in RAW["model"] if e["id"] == caps.id)
    in_force = [p for p in entry["price"] if p["since"] <= when] or entry["price"][:1]
    return max(in_force, key=lambda p: p["since"])


USAGE = {"input": 1_000, "cache_write_5m": 2_000, "cache_write_1h": 3_000, "cache_read": 40_000,
         "output": 5_000}  # fmt: skip


@pytest.mark.parametrize("caps", ALL, ids=[m.id for m in ALL])
def test_ledger_bills_each_model_at_the_table_price(caps: ModelCaps) -> None:
    when = dt.date(2026, 12, 6)
    ts = dt.datetime.combine(when, dt.time(12), dt.timezone.utc).timestamp()
    for name in caps.names:
        record = RequestRecord(
            request_id="req_x",
            route="/v1/chat/completions",
            model=name,
            ts=ts,
            **{f"{b}_tokens": n for b, n in USAGE.items()},
        )
        cost = row(record)[[c for c, _ in COLUMNS].index("cost_usd")]
        raw = _raw_price(caps, when)  # independent of ferrule.pricing: the file, read as TOML
        expected = sum(Decimal(repr(raw[b])) * USAGE[b] for b in BUCKETS) / MILLION
        assert cost == pytest.approx(float(expected), rel=1e-12, abs=1e-12), name
    price = caps.price(when)
    assert price is not None and price.model == caps.id


def test_dated_price_change_and_long_context_tier() -> None:
    # Sonnet 5.5 cache reads: $0.20 at release, $0.10 from 2026-10-07 (an added entry)
    reads = pricing.Usage(cache_read_tokens=1_000_000)
    before = pricing.cost("claude-sonnet-5-5", reads, when=dt.date(2026, 10, 6))
    after = pricing.cost("claude-sonnet-5-5", reads, when=dt.date(2026, 10, 7))
    assert before is not None and after is not None
    assert (before.total_usd, after.total_usd) == (0.2, 0.1)
    # Haiku 5.5: a prompt over 100,000 tokens bills every token at the higher rates
    at = pricing.Usage(input_tokens=60_000, cache_read_tokens=40_000, output_tokens=1_000)
    over = pricing.Usage(input_tokens=60_001, cache_read_tokens=40_000, output_tokens=1_000)
    low, high = pricing.cost("claude-haiku-5-5", at), pricing.cost("claude-haiku-5-5", over)
    assert low is not None and high is not None
    assert low.total_usd == pytest.approx((60_000 * 0.10 + 40_000 * 0.01 + 1_000 * 0.50) / 1e6)
    assert high.total_usd == pytest.approx((60_001 * 0.50 + 40_000 * 0.05 + 1_000 * 2.50) / 1e6)
    saved = pricing.savings("claude-haiku-5-5", over).caching_usd
    assert saved == pytest.approx(40_000 * (0.50 - 0.05) / 1e6)


def test_unknown_models_stay_unpriced() -> None:
    for name in ("claude-opus-5-7", "claude-3-5-haiku-20241022", "mystery"):
        assert pricing.price_for(name) is None
        record = RequestRecord(request_id="r", route="/v1/messages", model=name, input_tokens=10)
        assert row(record)[[c for c, _ in COLUMNS].index("cost_usd")] is None


# -- the simulated upstream enforces the table --------------------------------------------------


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with mock_upstream(MockOptions(answer_words=6)) as url:
        yield url


def post(base_url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(base_url + "/v1/messages", headers={**HEADERS, **headers}, json=body)


def ask(caps: ModelCaps, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "model": caps.id,
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


THINKING_CONFIGS: dict[str, dict[str, Any]] = {
    "adaptive": {"type": "adaptive"},
    "enabled": {"type": "enabled", "budget_tokens": 1024},
    "disabled": {"type": "disabled"},
    "between_tools": {"type": "between_tools"},
}


@pytest.mark.e2e
@pytest.mark.parametrize("caps", SERVED, ids=[m.id for m in SERVED])
def test_each_thinking_mode_is_accepted_exactly_where_the_table_says(
    base_url: str, caps: ModelCaps
) -> None:
    got = {}
    for kind, config in THINKING_CONFIGS.items():
        response = post(base_url, ask(caps, thinking=config))
        got[kind] = response.status_code
        if response.status_code == 400:
            message = response.json()["error"]["message"]
            assert f'"thinking.type.{kind}" is not supported for this model' in message
    assert got == {k: 200 if caps.thinking.accepts(k) else 400 for k in THINKING_CONFIGS}
    # no thinking field: the model's default, and an answer that thinks exactly when it is on
    plain = post(base_url, ask(caps))
    assert plain.status_code == 200
    kinds = [b["type"] for b in plain.json()["content"]]
    assert ("thinking" in kinds) == (caps.thinking.default == "adaptive")


@pytest.mark.e2e
@pytest.mark.parametrize("caps", SERVED, ids=[m.id for m in SERVED])
def test_each_effort_level_and_sampling_rule(base_url: str, caps: ModelCaps) -> None:
    for level in EFFORT_LEVELS:
        response = post(base_url, ask(caps, output_config={"effort": level}))
        assert response.status_code == (200 if level in caps.effort else 400), (
            level,
            response.text,
        )
    # temperature 1 is the default, accepted everywhere; 0.5 only where sampling is accepted
    assert post(base_url, ask(caps, temperature=1.0)).status_code == 200
    response = post(base_url, ask(caps, temperature=0.5))
    if "temperature" in caps.sampling.accepted:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "`temperature` is deprecated for this model."
    both = post(base_url, ask(caps, temperature=1.0, top_p=1.0)).status_code
    assert both == (400 if caps.sampling.exclusive else 200)
    # structured outputs and strict tools
    fmt = {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert post(base_url, ask(caps, output_config=fmt)).status_code == 200
    strict = post(base_url, ask(caps, tools=[{**TOOL, "strict": True}])).status_code
    assert strict == (200 if caps.strict_tools else 400)
    # forced tool choice (no thinking field: the model's default thinking)
    forced = post(base_url, ask(caps, tools=[TOOL], tool_choice={"type": "any"})).status_code
    assert forced == (200 if caps.forced_tool_choice else 400)


@pytest.mark.e2e
def test_disabled_thinking_effort_ceiling_and_between_tools(base_url: str) -> None:
    opus5 = models.capabilities("claude-opus-5")
    sonnet55 = models.capabilities("claude-sonnet-5-5")
    opus46 = models.capabilities("claude-opus-4-6")
    assert opus5 and sonnet55 and opus46
    off = {"type": "disabled"}
    assert post(base_url, ask(opus5, thinking=off, output_config={"effort": "high"})).is_success
    response = post(base_url, ask(opus5, thinking=off, output_config={"effort": "xhigh"}))
    assert response.status_code == 400
    assert "is not supported when thinking is disabled on this model" in response.text
    assert post(base_url, ask(opus46, thinking=off, output_config={"effort": "max"})).is_success
    between = {"type": "between_tools"}
    assert post(base_url, ask(sonnet55, thinking=between)).is_success
    assert (
        post(base_url, ask(sonnet55, thinking=between, output_config={"effort": "max"})).status_code
        == 400
    )
    # between_tools: no up-front thinking; the notes between tool calls come back as thinking
    first = post(base_url, ask(sonnet55, "[mock:tool]", thinking=between, tools=[TOOL])).json()
    assert [b["type"] for b in first["content"]] == ["tool_use"]
    use = first["content"][0]
    follow = ask(sonnet55, thinking=between, tools=[TOOL])
    follow["messages"] += [
        {"role": "assistant", "content": first["content"]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "ok"}],
        },
    ]
    second = post(base_url, follow)
    assert second.status_code == 200 and second.json()["content"][0]["type"] == "thinking"


def _loop(caps: ModelCaps, first: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The request that returns the tool result of ``first`` (an answer that called a tool)."""
    use = next(b for b in first["content"] if b["type"] == "tool_use")
    body = ask(caps, "what is the weather? [mock:tool]", tools=[TOOL], **extra)
    body["messages"] += [
        {"role": "assistant", "content": first["content"]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "sunny"}],
        },
    ]
    return body


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("model", "thinking"),
    [
        ("claude-sonnet-4-6", {"type": "enabled", "budget_tokens": 1024}),
        ("claude-opus-4-6", {"type": "adaptive"}),
        ("claude-opus-5", None),  # thinking on by default
        ("claude-opus-5-5", None),
    ],
)
def test_thinking_blocks_must_come_back_with_the_tool_results(
    base_url: str, model: str, thinking: dict[str, Any] | None
) -> None:
    caps = models.capabilities(model)
    assert caps is not None
    extra = {"thinking": thinking} if thinking else {}
    first = post(base_url, ask(caps, "what is the weather? [mock:tool]", tools=[TOOL], **extra))
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["content"][0]["type"] == "thinking"
    assert answer["content"][0]["signature"]
    # replayed as received: accepted, and the loop goes on
    assert post(base_url, _loop(caps, answer, **extra)).status_code == 200
    # the thinking block dropped (what an OpenAI client sends back): the API's 400
    stripped = {**answer, "content": [b for b in answer["content"] if b["type"] != "thinking"]}
    response = post(base_url, _loop(caps, stripped, **extra))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
        "`tool_use`. When `thinking` is enabled, a final `assistant` message must start with a "
        "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
        "recommend you include thinking blocks from previous turns. To avoid this requirement, "
        "disable `thinking`. Please consult our documentation at "
        "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    )
    # a forged or edited block: the signature does not check
    forged = [{**answer["content"][0], "signature": "c2lnbmF0dXJl"}, *answer["content"][1:]]
    response = post(base_url, _loop(caps, {**answer, "content": forged}, **extra))
    assert response.status_code == 400
    assert "Invalid `signature` in `thinking` block" in response.text
    edited = [{**answer["content"][0], "thinking": "I changed my mind."}, *answer["content"][1:]]
    assert post(base_url, _loop(caps, {**answer, "content": edited}, **extra)).status_code == 400
    # thinking off for the follow-up: no requirement
    if caps.thinking.accepts("disabled"):
        off = _loop(caps, stripped, thinking={"type": "disabled"})
        assert post(base_url, off).status_code == 200


@pytest.mark.e2e
def test_preserved_thinking_binds_blocks_to_their_prefix(base_url: str) -> None:
    caps = models.capabilities("claude-opus-5-5")
    assert caps is not None and caps.thinking.preserved
    system = [{"type": "text", "text": "You are terse."}]
    first = post(
        base_url, ask(caps, "what is the weather? [mock:tool]", tools=[TOOL], system=system)
    )
    answer = first.json()
    same = _loop(caps, answer, system=system)
    assert post(base_url, same).status_code == 200
    # moving a cache breakpoint is not a change of content
    marked = _loop(caps, answer, system=[{**system[0], "cache_control": {"type": "ephemeral"}}])
    assert post(base_url, marked).status_code == 200
    # an edited system prompt is: the block is bound to a different conversation
    changed = _loop(caps, answer, system=[{"type": "text", "text": "You are verbose."}])
    response = post(base_url, changed)
    assert response.status_code == 400
    assert "The block is bound to a different conversation" in response.text
    # unless the caller asks the API to drop such blocks (beta)
    dropping = {
        **changed,
        "thinking": {
            "type": "adaptive",
            "block_binding": {"prefix_mismatch_behavior": "drop_block"},
        },
    }
    beta = {"anthropic-beta": "thinking-binding-controls-2026-08-01"}
    assert post(base_url, dropping, **beta).status_code == 200
    # a model without preserved thinking does not compare prefixes
    opus46 = models.capabilities("claude-opus-4-6")
    assert opus46 is not None and not opus46.thinking.preserved
    old = post(base_url, ask(opus46, "go [mock:tool]", tools=[TOOL], thinking={"type": "adaptive"}))
    moved = _loop(opus46, old.json(), system="changed", thinking={"type": "adaptive"})
    assert post(base_url, moved).status_code == 200


@pytest.mark.e2e
def test_redacted_thinking_and_streamed_signatures_round_trip(base_url: str) -> None:
    caps = models.capabilities("claude-sonnet-4-6")
    assert caps is not None
    thinking = {"type": "enabled", "budget_tokens": 1024}
    text = "what is the weather? [mock:tool] [mock:redacted]"
    kw = ask(caps, text, tools=[TOOL], thinking=thinking)
    with (
        anthropic.Anthropic(base_url=base_url, api_key="test-key", max_retries=0) as client,
        client.messages.stream(**kw) as stream,
    ):
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "thinking_delta" in kinds and "signature_delta" in kinds
    blocks = [b.model_dump(exclude_none=True) for b in final.content]
    assert [b["type"] for b in blocks] == ["thinking", "redacted_thinking", "tool_use"]
    replay = _loop(caps, {"content": blocks}, thinking=thinking)
    assert post(base_url, replay).status_code == 200
    tampered = [blocks[0], {**blocks[1], "data": blocks[1]["data"][:-8] + "AAAAAAA="}, blocks[2]]
    response = post(base_url, _loop(caps, {"content": tampered}, thinking=thinking))
    assert (
        response.status_code == 400
        and "Invalid `data` in `redacted_thinking` block" in response.text
    )


@pytest.mark.e2e
def test_models_endpoint_reports_the_table(base_url: str) -> None:
    with anthropic.Anthropic(base_url=base_url, api_key="test-key", max_retries=0) as client:
        listed = {m.id: m for m in client.models.list(limit=100)}
        assert set(listed) == {m.id for m in ALL}
        for caps in ALL:
            info = listed[caps.id]
            assert info.max_tokens == caps.max_output_tokens
            assert info.max_input_tokens == caps.context_window
            assert info.capabilities is not None
            types = info.capabilities.thinking.types
            assert types.enabled.supported == caps.thinking.accepts("enabled")
            assert types.adaptive.supported == caps.thinking.accepts("adaptive")
            assert types.disabled.supported == caps.thinking.accepts("disabled")
            assert types.between_tools.supported == caps.thinking.accepts("between_tools")
            effort = info.capabilities.effort
            assert effort.supported == bool(caps.effort)
            assert effort.max.supported == ("max" in caps.effort)
        retired = listed["claude-sonnet-4-5-20250929"]
        assert retired.lifecycle == "retired"
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    response = post(base_url, body)
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
