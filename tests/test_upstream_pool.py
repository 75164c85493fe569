"""The upstream key pool (issue 16): several operator keys, chosen by prompt-prefix affinity.

- the choice: a conversation's turns share one member however its cache markers move; over many
  conversations the members' shares follow their weights; removing a member moves only the
  conversations it held (weighted rendezvous hashing);
- the config: ``[[upstream_keys]]`` with keys from the environment only;
- end to end against the simulated upstream (its request log shows the key each attempt used):
  a 429 on one member cools it alone, the request is retried on another member and no client
  sees an error; a 401 takes the member out and says so in the log (by name, never the key),
  the ledger (``ferrule stats --by upstream-key``) and the metrics;
- the replay of the tau-bench and SWE-agent corpus across 3 keys with a per-key prompt cache
  (benches/key_pool): affinity costs what one key costs (within 1 point), round-robin more.

The pool is Python whatever the kernel backend, so the servers run the python backend.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferrule import stats_cli
from ferrule.config import ConfigError, load
from ferrule.errors import ProxyError
from ferrule.resilience import Breaker, Resilience, RetryPolicy
from ferrule.upstream_pool import (
    Member,
    UpstreamPool,
    affinity_digest,
    parse_members,
    rendezvous_order,
)
from servers import MockUpstream, Proxy, start_proxy

MODEL = "claude-sonnet-4-6"
KEYS = {
    "FERRULE_TEST_POOL_KEY_A": "sk-ant-pool-a-00000000000000000000",
    "FERRULE_TEST_POOL_KEY_B": "sk-ant-pool-b-11111111111111111111",
    "FERRULE_TEST_POOL_KEY_C": "sk-ant-pool-c-22222222222222222222",
}
NAME_OF = {key: env[-1].lower() for env, key in KEYS.items()}  # key -> member name a, b, c
POOL_TOML = "".join(
    f'[[upstream_keys]]\nname = "{env[-1].lower()}"\nkey_env = "{env}"\n\n' for env in KEYS
)


def digest(i: int) -> bytes:
    return hashlib.blake2b(f"prefix-{i}".encode(), digest_size=16).digest()


def members(weights: dict[str, float]) -> list[Member]:
    return [Member(name, f"key-{name}", w) for name, w in weights.items()]


def conversation(
    turns: int, *, first: str = "Fix the failing test in parser.py", mark_system: bool = True
) -> dict[str, Any]:
    """An Anthropic request of an agent loop after ``turns`` tool turns, with markers where
    Ferrule's placement slides them (on the newest user turn)."""
    msgs: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": first}]}]
    for t in range(turns):
        msgs.append(
            {"role": "assistant", "content": [{"type": "tool_use", "id": f"t{t}", "name": "run",
                                               "input": {"cmd": f"step {t}"}}]}
        )  # fmt: skip
        msgs.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{t}",
                                          "content": f"output {t}"}]}
        )  # fmt: skip
    msgs[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    system: dict[str, Any] = {"type": "text", "text": "You are an agent."}
    if mark_system:
        system["cache_control"] = {"type": "ephemeral"}
    return {
        "model": MODEL,
        "max_tokens": 100,
        "system": [system],
        "tools": [{"name": "run", "input_schema": {"type": "object"}}],
        "messages": msgs,
    }  # fmt: skip


# -- the choice -----------------------------------------------------------------------------------


def test_a_conversation_keeps_its_member_while_its_markers_move() -> None:
    pool = members({"a": 1, "b": 1, "c": 1})
    chosen = set()
    for turns in range(0, 12):
        d = affinity_digest(conversation(turns, mark_system=False))
        assert d is not None
        chosen.add(rendezvous_order(d, pool)[0].name)
    assert len(chosen) == 1
    # another conversation (another first message) is another digest (its system prompt is too
    # short to be cached alone, so the conversation's opening is the cacheable prefix)
    c3 = conversation(3, mark_system=False)
    assert affinity_digest(c3) != affinity_digest(
        conversation(3, first="Other task", mark_system=False)
    )
    # ... and so is another model: the prompt cache is per model
    assert affinity_digest({**c3, "model": "claude-opus-4-6"}) != affinity_digest(c3)


def test_prefix_scope_keeps_an_agents_conversations_on_its_cached_system_prompt() -> None:
    short = conversation(2, mark_system=False)
    long_system = [{"type": "text", "text": "You are an agent. " * 400}]  # ~2,400 tokens
    one = {**conversation(2), "system": long_system}
    two = {**conversation(5, first="Another task entirely"), "system": long_system}
    # tools + system are cacheable alone: the first breakpoint is there, shared by both
    assert affinity_digest(one) == affinity_digest(two)
    # conversation scope: the first message always counts
    assert affinity_digest(one, scope="conversation") != affinity_digest(two, scope="conversation")
    # a short system prompt is not cached alone: the conversation's opening decides
    other = conversation(2, first="Another task entirely", mark_system=False)
    assert affinity_digest(short) != affinity_digest(other)
    # ... unless the client marked it (its own first breakpoint is on the system prompt)
    marked, marked_other = conversation(2), conversation(2, first="Another task entirely")
    assert affinity_digest(marked) == affinity_digest(marked_other)
    assert affinity_digest(marked, prompt_cache=False) is not None
    # Opus needs 4,096 tokens: the same system prompt is too short there
    opus_one, opus_two = ({**c, "model": "claude-opus-4-6"} for c in (one, two))
    unmarked = [{"type": "text", "text": "You are an agent. " * 400}]
    opus_one["system"] = opus_two["system"] = unmarked
    assert affinity_digest(opus_one) != affinity_digest(opus_two)


def test_no_cacheable_prefix_has_no_digest() -> None:
    plain = conversation(2)
    assert affinity_digest({"model": MODEL, "messages": []}) is None
    # prompt caching off: only the client's own markers make a prefix cacheable
    assert affinity_digest(plain, prompt_cache=False) is not None
    unmarked = json.loads(json.dumps(plain).replace(', "cache_control": {"type": "ephemeral"}', ""))
    assert "cache_control" not in json.dumps(unmarked)
    assert affinity_digest(unmarked, prompt_cache=False) is None
    assert affinity_digest(unmarked, prompt_cache=True) is not None


def test_shares_follow_the_weights() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    pool = members(weights)
    n = 20_000
    counts = Counter(rendezvous_order(digest(i), pool)[0].name for i in range(n))
    total = sum(weights.values())
    for name, w in weights.items():
        assert abs(counts[name] / n - w / total) < 0.015, (name, counts)
    # requests without a prefix (a random digest each) are spread by weight too
    up = UpstreamPool(pool)
    random_counts = Counter(up.order(None, MODEL)[0].name for _ in range(n))
    for name, w in weights.items():
        assert abs(random_counts[name] / n - w / total) < 0.03, (name, random_counts)


def test_removing_a_member_moves_only_its_conversations() -> None:
    full = members({"a": 1, "b": 1, "c": 2, "d": 1})
    without_c = [m for m in full if m.name != "c"]
    n = 10_000
    moved = 0
    for i in range(n):
        before = rendezvous_order(digest(i), full)[0].name
        after = rendezvous_order(digest(i), without_c)[0].name
        if before != "c":
            assert after == before  # nobody else's conversations move
        else:
            moved += 1
    assert abs(moved / n - 2 / 5) < 0.02  # and c held its share
    # adding a member back takes only what it wins: every moved prefix comes from elsewhere
    for i in range(2_000):
        old = rendezvous_order(digest(i), without_c)[0].name
        new = rendezvous_order(digest(i), full)[0].name
        assert new in (old, "c")


def test_models_restrict_members() -> None:
    pool = UpstreamPool([Member("opus-only", "k1", 1, ["claude-opus-*"]), Member("any", "k2", 1)])
    assert {m.name for m in pool.order(digest(1), MODEL)} == {"any"}
    assert {m.name for m in pool.order(digest(1), "claude-opus-4-6")} == {"opus-only", "any"}
    narrow = UpstreamPool([Member("opus-only", "k1", 1, ["claude-opus-*"])])
    with pytest.raises(ProxyError) as err:
        narrow.order(digest(1), MODEL)
    assert err.value.status == 400 and "claude-sonnet-4-6" in err.value.message


# -- the send loop with a fake upstream -----------------------------------------------------------


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


class FakeUpstream:
    """Answers by the key each request carries: ``plan[key]`` is a list of statuses (then 200)."""

    host = "fake"

    def __init__(self, plan: dict[str, list[int]]) -> None:
        self.plan = plan
        self.seen: list[str] = []

    async def send(
        self, path: str, body: bytes, headers: list[tuple[str, str]], timeout: float | None = None
    ) -> FakeResponse:
        key = dict(headers)["x-api-key"]
        self.seen.append(key)
        statuses = self.plan.get(key) or [200]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return FakeResponse(status, {"retry-after": "30"} if status == 429 else {})


class Tally:
    attempts = 0


def run_send(pool: UpstreamPool, up: FakeUpstream, d: bytes, policy: RetryPolicy) -> FakeResponse:
    res = Resilience(policy, in_flight=lambda: 1)
    order = pool.order(d, MODEL)

    def headers_for(m: Member) -> list[tuple[str, str]]:
        return [("x-api-key", m.key)]

    resp = asyncio.run(pool.send(res, up, "/v1/messages", b"{}", order, headers_for, Tally()))  # type: ignore[arg-type]
    assert isinstance(resp, FakeResponse)
    return resp


def test_breaker_is_per_member_and_counts_only_upstream_health() -> None:
    events: list[tuple[str, str]] = []
    pool = UpstreamPool(
        [Member(n, f"key-{n}", 1, (), Breaker(2, 60.0)) for n in "abc"],
        on_event=lambda name, event: events.append((name, event)),
    )
    d = digest(7)
    first = pool.order(d, MODEL)[0]
    policy = RetryPolicy(max_attempts=3, base=0.001, cap=0.002)
    # two 500s on the preferred member open its breaker; the third attempt goes elsewhere
    up = FakeUpstream({first.key: [500, 500, 500]})
    assert run_send(pool, up, d, policy).status_code == 200
    assert up.seen[:2] == [first.key, first.key] and up.seen[2] != first.key
    assert pool.states()[first.name] == "open"
    assert sum(s == "ok" for s in pool.states().values()) == 2
    # 429s never open a breaker: the member cools down alone
    second = pool.order(d, MODEL)[1]
    up = FakeUpstream({second.key: [429, 429, 429, 429]})
    assert run_send(pool, up, d, policy).status_code == 200
    assert second.breaker.failures == 0 and pool.states()[second.name] == "cooling"
    assert events == [(second.name, "rate_limited")]


def test_every_member_refused_is_a_clear_503() -> None:
    pool = UpstreamPool([Member(n, f"key-{n}", 1) for n in "ab"])
    up = FakeUpstream({"key-a": [401], "key-b": [403]})
    # the last refusal is passed back as it came (the caller renders it, keys redacted) ...
    resp = run_send(pool, up, digest(1), RetryPolicy(max_attempts=3))
    assert resp.status_code in (401, 403) and set(pool.states().values()) == {"removed"}
    # ... and from then on the pool answers at once, without asking the upstream
    with pytest.raises(ProxyError) as err:
        run_send(pool, up, digest(2), RetryPolicy(max_attempts=3))
    assert err.value.status == 503 and err.value.code == "upstream_keys_refused"
    assert len(up.seen) == 2


# -- the config -------------------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ferrule.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_config_reads_keys_from_the_environment_only(tmp_path: Path) -> None:
    toml = (
        POOL_TOML.replace('key_env = "FERRULE_TEST_POOL_KEY_B"', 'key_env = "FERRULE_TEST_POOL_KEY_B"\nweight = 3')
        + ""
    )  # fmt: skip
    cfg = load(env=KEYS, config_path=write_config(tmp_path, toml))
    assert [(m["name"], m["weight"]) for m in cfg.upstream_keys] == [
        ("a", 1.0),
        ("b", 3.0),
        ("c", 1.0),
    ]
    assert cfg.upstream_keys[1]["key"] == KEYS["FERRULE_TEST_POOL_KEY_B"]
    # the pool is the operator's keys: operator mode and the Host checks apply
    assert cfg.upstream_api_key == KEYS["FERRULE_TEST_POOL_KEY_A"]
    assert "sk-ant" not in repr(cfg)
    # under [ferrule] too
    nested = "[ferrule]\nport = 9000\n\n" + POOL_TOML
    assert len(load(env=KEYS, config_path=write_config(tmp_path, nested)).upstream_keys) == 3


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('[[upstream_keys]]\nname = "a"\nkey = "sk-ant-x"\n', KEYS, "never written in the config"),
        ('[[upstream_keys]]\nname = "a"\nkey_env = "NOPE_NOT_SET"\n', KEYS, "NOPE_NOT_SET is not set"),
        ('[[upstream_keys]]\nname = "a b"\nkey_env = "X"\n', KEYS, "name must be"),
        ('[[upstream_keys]]\nname = "a"\nkey_env = "FERRULE_TEST_POOL_KEY_A"\nweight = 0\n', KEYS, "weight must be above 0"),
        ('[[upstream_keys]]\nname = "a"\nkey_env = "FERRULE_TEST_POOL_KEY_A"\nmodels = "x"\n', KEYS, "models must be a list"),
        ('[[upstream_keys]]\nname = "a"\nkey_env = "FERRULE_TEST_POOL_KEY_A"\ncolour = 1\n', KEYS, "unknown field 'colour'"),
        (POOL_TOML + '[[upstream_keys]]\nname = "a"\nkey_env = "FERRULE_TEST_POOL_KEY_A"\n', KEYS, "used twice"),
        (POOL_TOML, {**KEYS, "FERRULE_UPSTREAM_API_KEY": "sk-ant-solo-000000000000"}, "both set"),
        ('upstream_affinity = "session"\n' + POOL_TOML, KEYS, "upstream_affinity must be prefix or conversation"),
        (POOL_TOML, {**KEYS, "FERRULE_TEST_POOL_KEY_C": KEYS["FERRULE_TEST_POOL_KEY_A"]}, "hold the same key"),
    ],
)  # fmt: skip
def test_config_errors(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(env=env, config_path=write_config(tmp_path, toml))
    assert message in str(err.value)
    assert "sk-ant" not in str(err.value)


def test_parse_members_defaults() -> None:
    got = parse_members([{"name": "x", "key_env": "X"}], "f.toml")
    assert got == [{"name": "x", "key_env": "X", "weight": 1.0, "models": []}]


# -- end to end -------------------------------------------------------------------------------------

QUICK = {
    **KEYS,
    "FERRULE_RETRY_BASE": "0.01",
    "FERRULE_RETRY_CAP": "0.05",
    "FERRULE_RESPONSE_CACHE": "off",
    "FERRULE_ACCESS_LOG": "off",
}


@pytest.fixture
def pool_proxy(mock: MockUpstream, tmp_path: Path) -> Iterator[tuple[Proxy, Path]]:
    """A proxy holding the 3-member pool (operator mode: clients send no key)."""
    config = write_config(tmp_path, POOL_TOML)
    data = tmp_path / "data"
    env = {**QUICK, "FERRULE_DATA_DIR": str(data)}
    log = str(tmp_path / "ferrule.log")
    with start_proxy("python", mock.url, log, "--config", config, env=env) as proxy:
        yield proxy, data


def ask(proxy: Proxy, conv: int, turn: int = 0) -> httpx.Response:
    """A chat request of conversation ``conv`` (its first message names it)."""
    msgs: list[dict[str, Any]] = [{"role": "user", "content": f"conversation {conv}: go"}]
    for t in range(turn):
        msgs += [{"role": "assistant", "content": f"step {t}"}, {"role": "user", "content": "more"}]
    body = {"model": MODEL, "max_tokens": 20, "messages": msgs}
    return httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=30)


def keys_seen(mock: MockUpstream) -> list[str]:
    return [NAME_OF[r["headers"]["x-api-key"]] for r in mock.requests()]


def metric(proxy: Proxy, name: str, labels: dict[str, str]) -> float:
    text = httpx.get(proxy.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def stats_by_key(data: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    parser = argparse.ArgumentParser()
    stats_cli.add_arguments(parser)
    capsys.readouterr()
    args = ["--by", "upstream-key", "--json", "--since", "1d", "--data-dir", str(data)]
    assert stats_cli.run(parser.parse_args(args)) == 0
    table = json.loads(capsys.readouterr().out)["by_upstream-key"]
    return {row["upstream-key"]: row["requests"] for row in table}


def test_a_429_moves_traffic_to_the_other_members_without_client_errors(
    pool_proxy: tuple[Proxy, Path], mock: MockUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy, data = pool_proxy
    # each conversation stays on one member, turn after turn
    for conv in range(12):
        for turn in range(3):
            assert ask(proxy, conv, turn).status_code == 200
    seen = keys_seen(mock)
    by_conv = [set(seen[i : i + 3]) for i in range(0, 36, 3)]
    assert all(len(s) == 1 for s in by_conv), by_conv
    assert len(set(seen)) > 1  # and conversations spread over the members
    home = seen[0]

    # conversation 0's member answers 429 (retry-after: 30): the request is retried at once
    # on another member, and the client never knows
    mock.reset()
    mock.script(["error=429 retry_after=30"])
    started = time.monotonic()
    r = ask(proxy, 0, 3)
    assert r.status_code == 200 and r.headers["x-ferrule-attempts"] == "2"
    assert time.monotonic() - started < 10  # not the 30 s the member was told to wait
    first, second = keys_seen(mock)
    assert first == home and second != home
    # from now on nobody sends to the cooling member; conversation 0 keeps its second choice
    mock.reset()
    results = [ask(proxy, conv, 4).status_code for conv in range(12)]
    results += [ask(proxy, 0, 5).status_code]
    assert results == [200] * 13
    seen = keys_seen(mock)
    assert home not in seen
    assert seen[0] == second and seen[-1] == second
    assert (
        metric(proxy, "ferrule_upstream_key_events_total", {"key": home, "event": "rate_limited"})
        == 1
    )
    assert metric(proxy, "ferrule_upstream_key_state", {"key": home, "state": "cooling"}) == 1
    assert metric(proxy, "ferrule_upstream_key_state", {"key": second, "state": "ok"}) == 1
    time.sleep(1.5)  # the ledger writer's batch, and the metrics snapshot
    requests = metric(proxy, "ferrule_upstream_key_requests_total", {"key": second})
    assert requests >= 2
    proxy_log = Path(proxy.log).read_text(encoding="utf-8")
    assert "sk-ant-pool" not in proxy_log
    counts = stats_by_key(data, capsys)
    assert sum(counts.values()) == 36 + 1 + 13 and set(counts) <= {"a", "b", "c"}


def test_a_401_takes_the_member_out_and_reports_it(
    pool_proxy: tuple[Proxy, Path], mock: MockUpstream
) -> None:
    proxy, _ = pool_proxy
    assert ask(proxy, 100).status_code == 200
    (home,) = keys_seen(mock)
    mock.reset()
    mock.script(["error=401"])
    r = ask(proxy, 100, 1)
    assert r.status_code == 200
    first, second = keys_seen(mock)
    assert first == home and second != home
    mock.reset()
    assert [ask(proxy, conv).status_code for conv in range(100, 115)] == [200] * 15
    assert home not in keys_seen(mock)
    assert (
        metric(proxy, "ferrule_upstream_key_events_total", {"key": home, "event": "auth_failed"})
        == 1
    )
    assert metric(proxy, "ferrule_upstream_key_state", {"key": home, "state": "removed"}) == 1
    text = Path(proxy.log).read_text(encoding="utf-8")
    assert f"upstream key '{home}' of the pool was refused by the upstream (HTTP 401)" in text
    assert "sk-ant-pool" not in text


def test_a_callers_own_key_bypasses_the_pool(
    pool_proxy: tuple[Proxy, Path], mock: MockUpstream
) -> None:
    proxy, _ = pool_proxy
    own = "sk-ant-caller-own-key-000000000000"
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(
        proxy.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {own}"}
    )
    assert r.status_code == 200
    assert [q["headers"]["x-api-key"] for q in mock.requests()] == [own]


# -- the corpus replay (benches/key_pool) ---------------------------------------------------------


def test_replay_affinity_costs_what_one_key_costs_and_round_robin_more() -> None:
    """tau-bench and SWE-agent sessions across 3 keys, one simulated prompt cache per key."""
    import sys

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benches.cache_sim.corpus import shared_corpus_dir
    from benches.key_pool.run import run

    if shared_corpus_dir() is None:
        pytest.skip("../shared/corpus is not here")
    results = run("shared", schedules=("sequential",))
    assert {r.corpus for r in results} == {"swe-agent", "tau-bench airline"}
    for r in results:
        assert r.requests > 200
        assert abs(r.gap_pp("affinity")) <= 1.0, r
        assert r.gap_pp("round-robin") > 5.0, r  # rotating keys re-writes the cached prefixes
        assert r.shares["round-robin"] > r.shares["affinity"]


def test_keys_mode_sends_through_the_pool(mock: MockUpstream, tmp_path: Path) -> None:
    """Keys mode (callers present virtual keys): the operator's keys are the pool's."""
    admin_key = "ferrule-admin-pool-test-000000"
    env = {
        **QUICK,
        "FERRULE_DATA_DIR": str(tmp_path / "data"),
        "FERRULE_AUTH": "keys",
        "FERRULE_ADMIN_KEY": admin_key,
    }
    config = write_config(tmp_path, POOL_TOML)
    log = str(tmp_path / "ferrule.log")
    with start_proxy("python", mock.url, log, "--config", config, env=env) as proxy:
        made = httpx.post(
            proxy.url + "/admin/keys",
            json={"name": "team-a"},
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        virtual = made.json()["key"]
        body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        for conv in range(9):
            body["messages"][0]["content"] = f"conversation {conv}"
            r = httpx.post(
                proxy.v1 + "/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {virtual}"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
    sent = {q["headers"]["x-api-key"] for q in mock.requests()}
    assert sent <= set(KEYS.values()) and len(sent) > 1
