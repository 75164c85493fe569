"""``python -m benches.key_pool``: the cost of spreading an agent fleet over several upstream keys.

Anthropic's prompt cache is per organisation: a prefix written with key A is not read with key B.
Every request of the tau-bench and SWE-agent corpora (``../shared/corpus/``, translated and
marked exactly as the proxy does: ``benches/cache_sim``) is replayed under the simulated cache of
``benches/cache_sim/sim.py`` (5-minute TTL, writes 1.25x, reads 0.1x, 20-block lookback), with
one cache per key, and three ways to pick the key:

- ``one key``: every request on the same key (the reference);
- ``affinity``: ``ferrule.upstream_pool`` as the proxy runs it by default
  (``upstream_affinity = "prefix"``: weighted rendezvous hashing of the digest of the prefix up
  to the first breakpoint, an agent's shared system prompt and tools when they are cacheable);
- ``conversation``: the same with ``upstream_affinity = "conversation"`` (the first message is
  always in the digest: conversations spread over the keys);
- ``round-robin``: request i on key i mod N, as gateways that rotate keys do.

Cost is the input cost as a share of the uncached cost (every input token at the base price).
Two schedules: ``sequential`` (sessions back to back, ``--gap`` seconds between requests, as
``benches/cache_sim`` runs them) and ``concurrent`` (``--concurrency`` sessions at a time, their
requests interleaved, the same gap between one session's requests): the second is a fleet.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ferrule.breakpoints import find_breakpoints, min_cacheable_tokens, place_breakpoints
from ferrule.errors import ProxyError
from ferrule.upstream_pool import Member, affinity_digest, rendezvous_order

from ..cache_sim.run import load, translate
from ..cache_sim.sim import PromptCache, Tally, prompt_of

__all__ = ["Result", "main", "replay"]

TARGET_PP = 1.0
STRATEGIES = ("one key", "affinity", "conversation", "round-robin")


@dataclass(frozen=True)
class Result:
    corpus: str
    schedule: str
    sessions: int
    requests: int
    shares: dict[str, float]  # strategy -> input cost / uncached input cost
    spread: dict[str, dict[str, int]]  # strategy -> requests per key

    def gap_pp(self, strategy: str) -> float:
        return (self.shares[strategy] - self.shares["one key"]) * 100


def _schedule(
    sizes: Sequence[int], kind: str, concurrency: int, gap: float
) -> Iterator[tuple[float, int, int]]:
    """(time, session, request) in replay order."""
    if kind == "sequential":
        now = 0.0
        for s, n in enumerate(sizes):
            for r in range(n):
                now += gap
                yield now, s, r
        return
    # ``concurrency`` lanes; a lane runs its sessions back to back, lanes start staggered
    events: list[tuple[float, int, int]] = []
    lane_clock = [gap * lane / concurrency for lane in range(concurrency)]
    for s, n in enumerate(sizes):
        lane = min(range(concurrency), key=lambda i: lane_clock[i])
        for r in range(n):
            lane_clock[lane] += gap
            events.append((lane_clock[lane], s, r))
    yield from sorted(events)


def replay(
    sessions: Sequence[Sequence[dict[str, Any]]],
    *,
    model: str = "claude-sonnet-4-6",
    keys: int = 3,
    schedule: str = "sequential",
    concurrency: int = 8,
    gap: float = 30.0,
    ttl: str = "5m",
    place: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[dict[str, Tally], dict[str, dict[str, int]]]:
    """Tallies by strategy, and each strategy's requests per key."""
    place = place or (lambda body: place_breakpoints(body, ttl=ttl))
    members = [Member(f"key-{i}", f"k{i}") for i in range(keys)]
    minimum = min_cacheable_tokens(model)
    caches = {name: [PromptCache(minimum) for _ in range(keys)] for name in STRATEGIES}
    tallies = {name: Tally() for name in STRATEGIES}
    spread = {name: {m.name: 0 for m in members} for name in STRATEGIES}
    bodies = [[{**b, "model": model} for b in s] for s in sessions]
    for n, (now, s, r) in enumerate(
        _schedule([len(b) for b in bodies], schedule, concurrency, gap)
    ):
        body = bodies[s][r]
        marked = place(body)
        p = prompt_of(marked)
        marks = [(b.position, b.ttl) for b in find_breakpoints(marked)]
        chosen = {"one key": 0, "round-robin": n % keys}
        for name, scope in (("affinity", "prefix"), ("conversation", "conversation")):
            digest = affinity_digest(marked, scope=scope)
            assert digest is not None
            chosen[name] = members.index(rendezvous_order(digest, members)[0])
        for name, key in chosen.items():
            spread[name][members[key].name] += 1
            caches[name][key].request(p, marks, now, tallies[name])
    return tallies, spread


def corpus_sessions(which: str = "shared") -> list[tuple[str, list[list[dict[str, Any]]]]]:
    out = []
    for name, conversations in load(which):
        sessions = []
        for conv in conversations:
            try:
                bodies = translate(conv)
            except ProxyError:
                continue
            if bodies:
                sessions.append(bodies)
        out.append((name, sessions))
    return out


def run(
    which: str = "shared",
    *,
    model: str = "claude-sonnet-4-6",
    keys: int = 3,
    schedules: Sequence[str] = ("sequential", "concurrent"),
    concurrency: int = 8,
    gap: float = 30.0,
) -> list[Result]:
    results = []
    for name, sessions in corpus_sessions(which):
        for schedule in schedules:
            tallies, spread = replay(
                sessions,
                model=model,
                keys=keys,
                schedule=schedule,
                concurrency=concurrency,
                gap=gap,
            )
            results.append(
                Result(
                    name,
                    schedule,
                    len(sessions),
                    tallies["one key"].requests,
                    {k: t.share for k, t in tallies.items()},
                    spread,
                )
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.key_pool", description=__doc__)
    parser.add_argument("--corpus", choices=("shared", "synthetic", "auto"), default="shared")
    parser.add_argument("--model", default="claude-sonnet-4-6")
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--gap", type=float, default=30.0, help="seconds between requests")
    parser.add_argument("--concurrency", type=int, default=8, help="sessions at a time")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run(
        args.corpus, model=args.model, keys=args.keys, concurrency=args.concurrency, gap=args.gap
    )
    print(
        f"| corpus | schedule | sessions | requests | one key | affinity ({args.keys} keys) | "
        f"round-robin ({args.keys} keys) | affinity - one key | round-robin - one key | "
        "affinity: requests per key | conversation affinity | conversation - one key | "
        "conversation: requests per key |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    ok = bool(results)
    for r in results:
        aff, rr = r.gap_pp("affinity"), r.gap_pp("round-robin")
        ok = ok and aff <= TARGET_PP and rr > aff
        spread = {k: " / ".join(f"{v:,}" for v in s.values()) for k, s in r.spread.items()}
        print(
            f"| {r.corpus} | {r.schedule} | {r.sessions} | {r.requests:,} | "
            f"{r.shares['one key']:.1%} | **{r.shares['affinity']:.1%}** | "
            f"{r.shares['round-robin']:.1%} | {aff:+.2f} pp | {rr:+.2f} pp | "
            f"{spread['affinity']} | {r.shares['conversation']:.1%} | "
            f"{r.gap_pp('conversation'):+.2f} pp | {spread['conversation']} |"
        )
    print()
    print(
        f"target: affinity within {TARGET_PP:g} point of one key, round-robin above it: "
        f"{'met' if ok else 'NOT met'} ({args.model}, {time.perf_counter() - started:.1f}s)"
    )
    return 0 if ok else 1
