"""A pool of upstream (Anthropic) keys, chosen per request by prompt-prefix affinity.

Anthropic's prompt cache belongs to an organisation: a prefix written with key A is not read
with key B. A gateway that rotates keys round-robin therefore re-writes every cached prefix at
1.25x the input price where it could have read it at 0.1x. This pool keeps requests that share a
cacheable prefix on the same key, and spreads the rest by weight:

- the *affinity digest* of a request covers its cacheable prefix, ``cache_control`` markers
  excluded (Ferrule slides them from turn to turn). With ``upstream_affinity = "prefix"`` (the
  default) that is the bytes up to the first breakpoint: model, tools and system prompt when
  they are cacheable on their own (so every conversation of an agent reads one cache entry on
  one member), else those and the first message (what every turn of a conversation starts
  with). ``"conversation"`` always adds the first message: conversations spread over the
  members by weight, each member writing a shared system prompt once per cache TTL;
- the member is chosen by weighted rendezvous hashing (highest random weight, score
  ``-weight / ln(u)`` with ``u`` a hash of digest and member name in (0, 1)): the probability
  of a member is its share of the weights, and adding or removing a member moves only the
  conversations it gains or held;
- a request with no cacheable prefix (no messages, or prompt caching off and no
  ``cache_control`` of the client's) gets a random digest: spread by weight.

Health, per member and per worker process (each Granian worker protects itself):

- a 429 cools that member down alone for its ``retry-after``; its traffic goes to the next
  member of each request's rendezvous order (the same one every time, so a conversation's cache
  keeps hitting there), and the request that got the 429 is retried at once on that member,
  within the retry policy of ``ferrule.resilience`` (attempts, budget), before any byte reached
  the client;
- a 401 or 403 takes the member out until Ferrule restarts (a key changes only with its
  environment, so a restart is needed anyway); it is logged by name, never the key, and counted
  in ``ferrule_upstream_key_events_total{event="auth_failed"}``;
- each member has its own circuit breaker, which counts only upstream-health failures (5xx,
  connection failures, timeouts), as the single breaker does without a pool.

Configuration: ``[[upstream_keys]]`` tables in the TOML file (docs/upstream-pool.md); the keys
themselves come from environment variables, never from the file.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Final

import orjson

from .breakpoints import min_cacheable_tokens
from .errors import ProxyError
from .largebody import prepare
from .resilience import Breaker, Resilience, Tally, Target
from .routes.common import upstream_headers
from .upstream import UpstreamClient, UpstreamResponse

if TYPE_CHECKING:
    from .ledger import RequestRecord
    from .routes.common import RequestContext
    from .services import Services

__all__ = [
    "STATES",
    "Member",
    "UpstreamPool",
    "affinity_digest",
    "of",
    "parse_members",
    "rendezvous_order",
    "resolve_keys",
    "send",
]

log = logging.getLogger("ferrule.upstream_pool")

STATES: Final = ("ok", "cooling", "open", "removed")
MAX_MEMBERS: Final = 64
# A 429 without a retry-after (Anthropic always sends one) cools its member this long.
DEFAULT_COOL_S: Final = 1.0
MAX_COOL_S: Final = 3600.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_FIELDS: Final = frozenset(("name", "key_env", "weight", "models"))


# -- configuration ------------------------------------------------------------------------------


def parse_members(value: Any, source: str) -> list[dict[str, Any]]:
    """``[[upstream_keys]]`` from a TOML file, checked: a list of
    ``{"name", "key_env", "weight", "models"}``. Raises ``ConfigError`` naming the problem."""
    from .config import ConfigError

    where = f"{source}: upstream_keys"
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty array of tables ([[upstream_keys]])")
    if len(value) > MAX_MEMBERS:
        raise ConfigError(f"{where}: at most {MAX_MEMBERS} members")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, item in enumerate(value):
        at = f"{where}[{n}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at} must be a table with name and key_env")
        if "key" in item or "api_key" in item:
            raise ConfigError(
                f"{at}: keys are never written in the config file; name the environment "
                "variable that holds it with key_env"
            )
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise ConfigError(f"{at}: unknown field {unknown[0]!r} (known: {', '.join(_FIELDS)})")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"{at}: name must be 1-64 letters, digits, '.', '_' or '-', not {name!r}"
            )
        if name in seen:
            raise ConfigError(f"{at}: the name {name!r} is used twice")
        seen.add(name)
        env = item.get("key_env")
        if not isinstance(env, str) or not _ENV_NAME.match(env):
            raise ConfigError(f"{at} ({name}): key_env must name an environment variable")
        weight = item.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ConfigError(f"{at} ({name}): weight must be a number, not {weight!r}")
        if not 0 < weight <= 1_000_000 or not math.isfinite(weight):
            raise ConfigError(f"{at} ({name}): weight must be above 0 (and at most 1,000,000)")
        models = item.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise ConfigError(f"{at} ({name}): models must be a list of model globs")
        out.append({"name": name, "key_env": env, "weight": float(weight), "models": models})
    return out


def resolve_keys(values: dict[str, Any], env: Mapping[str, str]) -> None:
    """Read each member's key from its environment variable (in ``load``, with the environment
    the config is resolved from). The pool holds the operator's keys: the first member's key
    stands for "Ferrule holds a key" (operator mode, the Host checks), so a separate
    ``upstream_api_key`` is refused rather than silently ignored."""
    from .config import ConfigError

    members = values.get("upstream_keys")
    if not members:
        return
    if values.get("upstream_api_key"):
        raise ConfigError(
            "upstream_api_key (FERRULE_UPSTREAM_API_KEY) and [[upstream_keys]] are both set: "
            "with a pool, put that key in it as a member"
        )
    owner: dict[str, str] = {}
    resolved = []
    for m in members:
        key = env.get(m["key_env"], "").strip()
        if not key:
            raise ConfigError(
                f"upstream_keys: member {m['name']!r}: the environment variable {m['key_env']} "
                "is not set"
            )
        if key in owner:
            raise ConfigError(
                f"upstream_keys: members {owner[key]!r} and {m['name']!r} hold the same key"
            )
        owner[key] = m["name"]
        resolved.append({**m, "key": key})
    values["upstream_keys"] = resolved
    values["upstream_api_key"] = resolved[0]["key"]


# -- choice -------------------------------------------------------------------------------------


class Member:
    """One pool member's key and health (in this worker)."""

    __slots__ = ("breaker", "cool_until", "key", "models", "name", "removed", "weight")

    def __init__(
        self,
        name: str,
        key: str,
        weight: float = 1.0,
        models: Sequence[str] = (),
        breaker: Breaker | None = None,
    ) -> None:
        self.name = name
        self.key = key
        self.weight = float(weight)
        self.models = tuple(models)
        self.breaker = breaker or Breaker(5, 5.0)
        self.cool_until = 0.0
        self.removed = False

    def __repr__(self) -> str:  # never the key
        return f"Member({self.name!r}, weight={self.weight:g})"

    def serves(self, model: str) -> bool:
        return not self.models or any(fnmatchcase(model, glob) for glob in self.models)

    def cooling(self, now: float) -> float:
        """Seconds of cool-down left (0: none)."""
        return max(0.0, self.cool_until - now)

    def breaker_open(self, now: float) -> bool:
        """The breaker would turn a request away now (it is open, or its trial is out)."""
        b = self.breaker
        return b.failures >= b.threshold and (now < b.open_until or b.trial)

    def state(self, now: float) -> str:
        if self.removed:
            return "removed"
        if self.breaker_open(now):
            return "open"
        if self.cooling(now) > 0:
            return "cooling"
        return "ok"


def _unit(digest: bytes, name: str) -> float:
    """A uniform number in (0, 1) from the digest and a member's name."""
    h = hashlib.blake2b(digest, digest_size=8, person=b"ferrule-pool")
    h.update(name.encode())
    return (int.from_bytes(h.digest(), "big") + 0.5) / 2.0**64


def rendezvous_order(digest: bytes, members: Iterable[Member]) -> list[Member]:
    """Members by weighted rendezvous score for ``digest``, best first. The first member of a
    random digest is member i with probability ``weight_i / sum(weights)``."""
    return sorted(members, key=lambda m: -m.weight / math.log(_unit(digest, m.name)), reverse=True)


def _unmarked(blocks: Any) -> Any:
    """A list of blocks without their ``cache_control`` (the only place the API reads one; a
    block is copied only when it has one, so this costs little on the request path)."""
    if not isinstance(blocks, list):
        return blocks
    return [
        {k: v for k, v in b.items() if k != "cache_control"}
        if isinstance(b, dict) and "cache_control" in b
        else b
        for b in blocks
    ]


def _unmarked_message(message: Any) -> Any:
    if isinstance(message, dict) and isinstance(message.get("content"), list):
        return {**message, "content": _unmarked(message["content"])}
    return message


def _marked(body: Mapping[str, Any]) -> bool:
    """Whether the client put a ``cache_control`` anywhere the API reads one."""
    if body.get("cache_control") is not None:
        return True
    parts: list[Any] = []
    for name in ("tools", "system"):
        value = body.get(name)
        if isinstance(value, list):
            parts.extend(value)
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts.extend(content)
    return any(isinstance(p, dict) and p.get("cache_control") is not None for p in parts)


def _shared_head_marked(body: Mapping[str, Any]) -> bool:
    """The client marked a tool or system block: its first breakpoint is in the shared head."""
    for name in ("tools", "system"):
        value = body.get(name)
        if isinstance(value, list) and any(
            isinstance(b, dict) and b.get("cache_control") is not None for b in value
        ):
            return True
    return False


def affinity_digest(
    body: Mapping[str, Any], *, prompt_cache: bool = True, scope: str = "prefix"
) -> bytes | None:
    """The digest of the request's cacheable prefix, or None when it has none (no messages; or
    Ferrule places no breakpoints and the client marked none). ``cache_control`` is excluded.

    ``scope="prefix"``: the bytes up to the first breakpoint. When tools and system are long
    enough to be cached on their own (Ferrule's ``system`` breakpoint goes there) or the client
    marked one of them, that is model + tools + system, shared by every conversation of an
    agent: they all read one cache entry. Otherwise the first breakpoint is in the messages,
    and the first message is added (what every turn of the conversation starts with: later
    breakpoints slide, the conversation's opening does not).
    ``scope="conversation"``: model + tools + system + first message always: every turn of a
    conversation on one member, conversations spread by weight (each member then writes a
    shared system prompt once per cache TTL)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    if not prompt_cache and not _marked(body):
        return None
    # SHA-256: hardware-accelerated on current x86 and ARM, ~3x faster than BLAKE2 here
    h = hashlib.sha256(b"ferrule-affinity\x00")
    model = str(body.get("model"))
    h.update(model.encode())
    size = 0
    # (no key sorting: a client's requests keep their key order, and Ferrule's translation is
    # deterministic; sorting made the digest five times slower)
    for part in (body.get("tools"), body.get("system")):
        data = orjson.dumps(_unmarked(part))
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
        size += len(data)
    if scope == "prefix" and (
        # as ferrule.breakpoints estimates (generously): one token per 3 bytes
        (prompt_cache and (size + 2) // 3 >= min_cacheable_tokens(model))
        or _shared_head_marked(body)
    ):
        return h.digest()[:16]
    data = orjson.dumps(_unmarked_message(messages[0]))
    h.update(len(data).to_bytes(8, "big"))
    h.update(data)
    return h.digest()[:16]


# -- the pool -----------------------------------------------------------------------------------


Event = Callable[[str, str], None]


def _no_event(name: str, event: str) -> None:
    pass


class UpstreamPool:
    """The members of one worker, and the send loop that moves a request between them."""

    def __init__(self, members: Sequence[Member], on_event: Event = _no_event) -> None:
        if not members:
            raise ValueError("an upstream pool needs at least one member")
        self.members = list(members)
        self.on_event = on_event

    @classmethod
    def from_config(
        cls, specs: Sequence[Mapping[str, Any]], threshold: int, cooldown: float, on_event: Event
    ) -> UpstreamPool:
        members = [
            Member(
                s["name"],
                s["key"],
                s.get("weight", 1.0),
                s.get("models") or (),
                Breaker(threshold, cooldown),
            )
            for s in specs
        ]
        return cls(members, on_event)

    def states(self) -> dict[str, str]:
        """Each member's state now: ok, cooling, open (breaker) or removed (for the metrics)."""
        now = time.monotonic()
        return {m.name: m.state(now) for m in self.members}

    def order(self, digest: bytes | None, model: str) -> list[Member]:
        """The members that serve ``model``, in this request's order of preference."""
        eligible = [m for m in self.members if m.serves(model)]
        if not eligible:
            raise ProxyError(
                400,
                f"no upstream key of Ferrule's pool serves the model {model!r} "
                "(see models in [[upstream_keys]])",
                code="model_not_in_pool",
            )
        return rendezvous_order(digest if digest is not None else os.urandom(16), eligible)

    def _pick(self, order: Sequence[Member]) -> Member | None:
        now = time.monotonic()
        for m in order:
            if not m.removed and not m.breaker_open(now) and m.cooling(now) <= 0:
                return m
        return None

    def _unavailable(self, order: Sequence[Member], host: str) -> tuple[float, ProxyError]:
        """No member may be asked now: (seconds until one may, 0 if none will) and the error
        the client gets if it cannot wait."""
        now = time.monotonic()
        live = [m for m in order if not m.removed]
        if not live:
            return 0.0, ProxyError(
                503,
                f"every upstream key of Ferrule's pool that serves this model ({len(order)}) "
                "was refused by the upstream (401/403) and taken out; see Ferrule's log",
                code="upstream_keys_refused",
            )
        cooling = [m for m in live if not m.breaker_open(now)]
        if not cooling:  # every breaker is open: fail fast, as the single breaker does
            soonest = min(live, key=lambda m: m.breaker.open_until)
            try:
                soonest.breaker.check(host)
            except ProxyError as exc:
                return 0.0, exc
            soonest.breaker.abandon()  # (not reached: the breaker was open a moment ago)
        wait = min(m.cooling(now) for m in cooling) if cooling else 1.0
        retry = max(1, math.ceil(wait))
        return wait, ProxyError(
            429,
            f"every upstream key of Ferrule's pool is rate limited; the first is free again "
            f"in {retry} s",
            type="rate_limit_error",
            code="upstream_keys_rate_limited",
            headers=[(b"retry-after", str(retry).encode())],
        )

    async def send(
        self,
        res: Resilience,
        upstream: UpstreamClient,
        path: str,
        body: bytes,
        order: Sequence[Member],
        headers_for: Callable[[Member], list[tuple[str, str]]],
        tally: Tally,
    ) -> UpstreamResponse:
        """``Resilience.send_to`` over the pool: each attempt goes to the first usable member
        of ``order``. ``headers_for(member)`` is called before each attempt (the caller notes
        the member there). Raises ProxyError when no attempt gave a response to pass back."""
        return await res.send_to(
            upstream, path, body, _PoolTargets(self, order, headers_for), tally
        )

    def answered(self, member: Member, status: int, asked: float | None) -> bool:
        """Note a member's answer: a 429 cools it alone, a 401/403 takes it out. True when
        the member is out for now (the request may move to another)."""
        if status == 429:
            # This member's rate limit, not the request's: it waits alone.
            cool = asked if asked is not None and asked > 0 else DEFAULT_COOL_S
            member.cool_until = time.monotonic() + min(cool, MAX_COOL_S)
            self.on_event(member.name, "rate_limited")
            return True
        if status in (401, 403):
            member.removed = True
            self.on_event(member.name, "auth_failed")
            log.warning(
                "upstream key %r of the pool was refused by the upstream (HTTP %d): "
                "taken out of the pool until Ferrule restarts",
                member.name,
                status,
            )
            return True
        return False


class _PoolTargets:
    """One request's view of the pool for ``Resilience.send_to``: its members in order."""

    __slots__ = ("_headers_for", "_order", "_pool")

    def __init__(
        self,
        pool: UpstreamPool,
        order: Sequence[Member],
        headers_for: Callable[[Member], list[tuple[str, str]]],
    ) -> None:
        self._pool = pool
        self._order = order
        self._headers_for = headers_for

    def next(self, host: str) -> tuple[Target | None, float, ProxyError]:
        member = self._pool._pick(self._order)
        if member is not None:
            return member, 0.0, _UNUSED
        wait, err = self._pool._unavailable(self._order, host)
        return None, wait, err

    def headers(self, target: Target) -> list[tuple[str, str]]:
        assert isinstance(target, Member)
        return self._headers_for(target)

    def answered(self, target: Target, status: int, asked: float | None) -> bool:
        assert isinstance(target, Member)
        # moved, and another member may take it now: retry there without waiting
        return self._pool.answered(target, status, asked) and (
            self._pool._pick(self._order) is not None
        )


_UNUSED = ProxyError(503, "unused")


def of(svc: Services) -> UpstreamPool | None:
    """This worker's pool, made on first use (None when no ``[[upstream_keys]]`` is set)."""
    res = svc.resilience
    if res.pool is None and svc.cfg.upstream_keys:
        pool = UpstreamPool.from_config(
            svc.cfg.upstream_keys,
            res.policy.breaker_threshold,
            res.policy.breaker_cooldown,
            svc.metrics.upstream_key_event,
        )
        svc.metrics.watch_upstream_keys(pool.states)
        res.pool = pool
    pool_: UpstreamPool | None = res.pool
    return pool_


async def send(
    svc: Services,
    pool: UpstreamPool,
    ctx: RequestContext,
    record: RequestRecord,
    body: Mapping[str, Any],
    path: str,
    payload: bytes,
    version: str,
) -> UpstreamResponse:
    """An operator-mode request through the pool: its members in the order of ``body``'s
    affinity digest; the member of each attempt goes into the request's key (so an error that
    quotes it is redacted) and its name into the ledger row."""
    digest = await prepare(
        ctx.large,
        affinity_digest,
        body,
        prompt_cache=svc.cfg.prompt_cache,
        scope=svc.cfg.upstream_affinity,
    )
    order = pool.order(digest, str(body.get("model", "")))

    def headers_for(member: Member) -> list[tuple[str, str]]:
        ctx.api_key = member.key
        record.upstream_key = member.name
        return upstream_headers(ctx.scope, member.key, version)

    return await pool.send(svc.resilience, svc.upstream, path, payload, order, headers_for, ctx)
