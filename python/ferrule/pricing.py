"""Prices, cost and savings, from the dated prices of the model table ``data/models.toml``.

All arithmetic is in ``Decimal`` (the table's prices are decimal fractions of a dollar, and
binary floats would make a cost of 0.3 USD/Mtok come out as 2.9999...e-7 per token); results are
handed out as ``float`` USD. A model without a price entry is *unpriced*: every dollar figure is
``None``, never 0, so a sum never pretends an unknown model was free.

Savings, each in tokens and dollars:

- prompt caching: tokens read from Anthropic's cache were billed at the read price instead of the
  input price. Cache writes cost *more* than input (1.25x / 2x); that premium is reported on its
  own (``cache_write_premium_usd``) so a caller can show the net figure.
- compression: tokens Ferrule removed before sending, priced as uncached input.
  NOTE: an upper bound when the removed tokens would later have been cache reads.
- response cache: a hit avoided the whole request, so its saving is what the replayed usage
  would have cost; the hit itself is billed $0 and counts no caching or compression saving.

A price may carry a long-context tier (Claude Haiku 5.5: prompts over 100,000 tokens): when the
request's prompt (uncached input + cache writes + cache reads) is above its threshold, the tier's
rates apply to every token of that request, output included, and so to its savings.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "Accounting",
    "Cost",
    "LongContextPrice",
    "Price",
    "PriceTable",
    "Savings",
    "Usage",
    "UsageLike",
    "account",
    "canonical_model",
    "cost",
    "default_table",
    "price_for",
    "savings",
]

# A trailing release date (-20251001) or -latest: Anthropic's dated ids and aliases of one model.
_SUFFIX = re.compile(r"-(?:\d{8}|latest)$")
_BUCKETS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
DATA_FILE = "data/models.toml"
"""The packaged model table, prices included (read with importlib.resources)."""


class UsageLike(Protocol):
    """Token counts, each input token in exactly one of the four input buckets."""

    @property
    def input_tokens(self) -> int: ...  # uncached input
    @property
    def cache_write_5m_tokens(self) -> int: ...
    @property
    def cache_write_1h_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def from_anthropic(cls, *parts: Mapping[str, Any] | None) -> Usage:
        """Usage from Anthropic ``usage`` objects. Several may be given (a stream's
        ``message_start`` usage, then its ``message_delta`` usage): a later non-null field wins.

        ``cache_creation_input_tokens`` is split by ``cache_creation`` (``ephemeral_5m_input_tokens``
        / ``ephemeral_1h_input_tokens``) when present; any remainder (or all of it, when the split
        is absent) counts as a 5-minute write, the default TTL."""
        merged: dict[str, Any] = {}
        for part in parts:
            if part:
                merged.update({k: v for k, v in part.items() if v is not None})
        created = _int(merged.get("cache_creation_input_tokens"))
        split = merged.get("cache_creation")
        w1h = _int(split.get("ephemeral_1h_input_tokens")) if isinstance(split, Mapping) else 0
        w5m = _int(split.get("ephemeral_5m_input_tokens")) if isinstance(split, Mapping) else 0
        w5m = max(w5m, created - w1h)
        return cls(
            input_tokens=_int(merged.get("input_tokens")),
            cache_write_5m_tokens=w5m,
            cache_write_1h_tokens=w1h,
            cache_read_tokens=_int(merged.get("cache_read_input_tokens")),
            output_tokens=_int(merged.get("output_tokens")),
        )


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


@dataclass(frozen=True, slots=True)
class LongContextPrice:
    """The rates of a request whose prompt is above ``above_input_tokens`` (USD per Mtok)."""

    above_input_tokens: int
    input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    output: Decimal


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for one model from one date on."""

    model: str
    since: dt.date
    input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    output: Decimal
    long_context: LongContextPrice | None = None
    # The rates of each tier as integers over one denominator (``_scaled``), for the ledger's
    # arithmetic: exact, and several times cheaper than Decimal's.
    _exact: tuple[_Scaled, _Scaled | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tier = self.long_context
        exact = (
            _scaled(
                self.input, self.cache_write_5m, self.cache_write_1h, self.cache_read, self.output
            ),
            None
            if tier is None
            else _scaled(
                tier.input, tier.cache_write_5m, tier.cache_write_1h, tier.cache_read, tier.output
            ),
        )
        object.__setattr__(self, "_exact", exact)

    def scaled_rates(self, usage: UsageLike) -> _Scaled:
        """``rates(usage)`` as (denominator, five numerators): rate = numerator / denominator
        USD per token, exactly."""
        low, high = self._exact
        if high is not None:
            tier = self.long_context
            assert tier is not None
            prompt = (
                usage.input_tokens
                + usage.cache_write_5m_tokens
                + usage.cache_write_1h_tokens
                + usage.cache_read_tokens
            )
            if prompt > tier.above_input_tokens:
                return high
        return low

    def rates(self, usage: UsageLike) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        """The five rates (input, 5m write, 1h write, read, output) that bill ``usage``."""
        tier = self.long_context
        prompt = (
            usage.input_tokens
            + usage.cache_write_5m_tokens
            + usage.cache_write_1h_tokens
            + usage.cache_read_tokens
        )
        if tier is not None and prompt > tier.above_input_tokens:
            return (
                tier.input,
                tier.cache_write_5m,
                tier.cache_write_1h,
                tier.cache_read,
                tier.output,
            )
        return (self.input, self.cache_write_5m, self.cache_write_1h, self.cache_read, self.output)


_Scaled = tuple[int, int, int, int, int, int]


def _scaled(*rates: Decimal) -> _Scaled:
    """USD-per-million-token ``rates`` as (denominator, numerators), each rate equal to
    numerator / denominator USD per token. A product of integers divided once by an integer is
    correctly rounded (as ``float(Decimal)`` is), so the figures equal Decimal's to the bit."""
    places = max(0, *(-int(r.as_tuple().exponent) for r in rates))
    return (10**places * 1_000_000, *(int(r.scaleb(places)) for r in rates))


@dataclass(frozen=True, slots=True)
class Cost:
    """What a request was billed, in USD."""

    input_usd: float
    cache_write_5m_usd: float
    cache_write_1h_usd: float
    cache_read_usd: float
    output_usd: float
    total_usd: float


@dataclass(frozen=True, slots=True)
class Savings:
    """Tokens and USD saved by source; USD is None for an unpriced model."""

    caching_tokens: int = 0
    caching_usd: float | None = None
    cache_write_premium_usd: float | None = None
    compression_tokens: int = 0
    compression_usd: float | None = None
    response_cache_tokens: int = 0
    response_cache_usd: float | None = None

    @property
    def total_usd(self) -> float | None:
        """Net saving: caching minus the write premium, plus compression and response cache."""
        if self.caching_usd is None:
            return None
        return (
            self.caching_usd
            - (self.cache_write_premium_usd or 0.0)
            + (self.compression_usd or 0.0)
            + (self.response_cache_usd or 0.0)
        )


@dataclass(frozen=True, slots=True)
class Accounting:
    """Cost and savings of one request. ``cost`` is None when the model is unpriced."""

    price: Price | None
    cost: Cost | None
    savings: Savings


class PriceTable:
    """Dated prices by model id; a model's aliases and dated ids find its entries too."""

    def __init__(
        self,
        prices: list[Price],
        checked: dt.date | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.checked = checked
        by_model: dict[str, list[Price]] = {}
        for p in prices:
            by_model.setdefault(p.model, []).append(p)
        self._by_model = {m: sorted(ps, key=lambda p: p.since) for m, ps in by_model.items()}
        self._since = {m: [p.since for p in ps] for m, ps in self._by_model.items()}
        self._aliases = {k.lower(): v for k, v in (aliases or {}).items()}
        # lookup's answers: asked for on every request (budget, settlement, ledger row) with a
        # few models and dates; bounded, as model ids come from clients
        self._memo: dict[tuple[str, dt.date | None], Price | None] = {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """The table in ``path``, or the one shipped in the package."""
        if path is None:
            text = resources.files("ferrule").joinpath(DATA_FILE).read_text("utf-8")
            where = f"ferrule/{DATA_FILE}"
        else:
            text = Path(path).read_text(encoding="utf-8")
            where = str(path)
        return cls.parse(text, where)

    @classmethod
    def parse(cls, text: str, where: str = "<prices>") -> PriceTable:
        """Prices from the model table (``[[model]]`` with ``[[model.price]]`` entries), or from
        a flat list of ``[[price]]`` entries that name their ``model``."""
        data = tomllib.loads(text)
        prices: list[Price] = []
        aliases: dict[str, str] = {}
        for i, entry in enumerate(data.get("price", [])):
            try:
                prices.append(_price(str(entry["model"]), entry))
            except (KeyError, TypeError) as exc:
                raise ValueError(f"{where}: price entry {i + 1} is invalid: {exc}") from None
        for model in data.get("model", []):
            model_id = str(model.get("id", ""))
            for j, entry in enumerate(model.get("price", [])):
                try:
                    prices.append(_price(model_id, entry))
                except (KeyError, TypeError) as exc:
                    raise ValueError(
                        f"{where}: {model_id or 'a model'}: price entry {j + 1} is invalid: {exc}"
                    ) from None
            for alias in model.get("aliases", []):
                aliases[str(alias)] = model_id
        checked = data.get("checked")
        return cls(prices, checked if isinstance(checked, dt.date) else None, aliases)

    @property
    def models(self) -> list[str]:
        return sorted(self._by_model)

    def _entries(self, model: str) -> list[Price] | None:
        name = model.strip().lower()
        for key in (name, canonical_model(name)):
            entries = self._by_model.get(self._aliases.get(key, key))
            if entries:
                return entries
        return None

    def lookup(self, model: str, when: dt.date | None = None) -> Price | None:
        """The price of ``model`` (an id, an alias, or either with a ``-YYYYMMDD`` / ``-latest``
        suffix) on ``when`` (today by default); None when the model has no entry."""
        key = (model, when)
        try:
            return self._memo[key]
        except KeyError:
            pass
        if len(self._memo) >= 4096:
            self._memo.clear()
        price = self._memo[key] = self._lookup(model, when)
        return price

    def _lookup(self, model: str, when: dt.date | None) -> Price | None:
        entries = self._entries(model)
        if not entries:
            return None
        if when is None:
            return entries[-1]
        i = bisect.bisect_right(self._since[entries[0].model], when)
        # NOTE: a date before the first entry gets the first entry: older prices are unknown,
        # and calling such a request unpriced would hide a real cost.
        return entries[max(i - 1, 0)]


def _decimal(entry: Mapping[str, Any], name: str) -> Decimal:
    v = entry[name]
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise TypeError(f"{name} must be a non-negative number")
    return Decimal(repr(v))  # repr: 0.3 -> "0.3", not 0.29999...


def _price(model: str, entry: Mapping[str, Any]) -> Price:
    since = entry["since"]
    if not isinstance(since, dt.date):
        raise TypeError("since must be a TOML date")
    if not model:
        raise TypeError("the model has no id")
    values = {name: _decimal(entry, name) for name in _BUCKETS}
    tier = entry.get("long_context")
    long_context = None
    if tier is not None:
        if not isinstance(tier, Mapping):
            raise TypeError("long_context must be a table")
        above = tier["above_input_tokens"]
        if isinstance(above, bool) or not isinstance(above, int) or above <= 0:
            raise TypeError("long_context.above_input_tokens must be a positive integer")
        long_context = LongContextPrice(above, *(_decimal(tier, name) for name in _BUCKETS))
    return Price(model=model, since=since, long_context=long_context, **values)


@lru_cache(maxsize=1024)
def canonical_model(model: str) -> str:
    """``claude-sonnet-4-6-20260101`` -> ``claude-sonnet-4-6``; other ids unchanged.

    Only a date or ``-latest`` suffix is removed, never a version: ``claude-opus-5-7`` (a model
    not in the table) must stay unpriced rather than be priced as ``claude-opus-5``."""
    return _SUFFIX.sub("", model.strip().lower())


_DEFAULT: PriceTable | None = None


def default_table() -> PriceTable:
    """The packaged table, read once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PriceTable.load()
    return _DEFAULT


def _date(when: dt.date | float | None) -> dt.date | None:
    if when is None or isinstance(when, dt.date):
        return when
    return _utc_day(int(when // 86400))


@lru_cache(maxsize=64)
def _utc_day(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=day)


_EPOCH = dt.date(1970, 1, 1)


def price_for(
    model: str, when: dt.date | float | None = None, table: PriceTable | None = None
) -> Price | None:
    """``when``: a date, a Unix time, or None for the newest price."""
    return (table or default_table()).lookup(model, _date(when))


def _cost(price: Price, usage: UsageLike) -> Cost:
    den, n_in, n_w5, n_w1, n_read, n_out = price.scaled_rates(usage)
    i = usage.input_tokens * n_in
    w5 = usage.cache_write_5m_tokens * n_w5
    w1 = usage.cache_write_1h_tokens * n_w1
    r = usage.cache_read_tokens * n_read
    o = usage.output_tokens * n_out
    return Cost(i / den, w5 / den, w1 / den, r / den, o / den, (i + w5 + w1 + r + o) / den)


def cost(
    model: str,
    usage: UsageLike,
    when: dt.date | float | None = None,
    table: PriceTable | None = None,
) -> Cost | None:
    """What ``usage`` costs on ``model``; None when the model is unpriced."""
    price = price_for(model, when, table)
    return None if price is None else _cost(price, usage)


def savings(
    model: str,
    usage: UsageLike,
    *,
    compression_removed_tokens: int = 0,
    response_cache_hit: bool = False,
    when: dt.date | float | None = None,
    table: PriceTable | None = None,
) -> Savings:
    return account(
        model,
        usage,
        compression_removed_tokens=compression_removed_tokens,
        response_cache_hit=response_cache_hit,
        when=when,
        table=table,
    ).savings


def account(
    model: str,
    usage: UsageLike,
    *,
    compression_removed_tokens: int = 0,
    response_cache_hit: bool = False,
    when: dt.date | float | None = None,
    table: PriceTable | None = None,
) -> Accounting:
    """Billed cost and savings of one request.

    For a response-cache hit, ``usage`` is the replayed response's usage: nothing was billed,
    and the saving is that usage's whole cost."""
    price = price_for(model, when, table)
    if response_cache_hit:
        avoided = _cost(price, usage) if price else None
        tokens = (
            usage.input_tokens
            + usage.cache_write_5m_tokens
            + usage.cache_write_1h_tokens
            + usage.cache_read_tokens
            + usage.output_tokens
        )
        zero = Cost(0.0, 0.0, 0.0, 0.0, 0.0, 0.0) if price else None
        return Accounting(
            price,
            zero,
            Savings(
                caching_usd=0.0 if price else None,
                cache_write_premium_usd=0.0 if price else None,
                compression_usd=0.0 if price else None,
                response_cache_tokens=tokens,
                response_cache_usd=avoided.total_usd if avoided else None,
            ),
        )
    removed = max(compression_removed_tokens, 0)
    if price is None:
        return Accounting(
            None,
            None,
            Savings(caching_tokens=usage.cache_read_tokens, compression_tokens=removed),
        )
    den, n_in, n_w5, n_w1, n_read, _ = price.scaled_rates(usage)
    premium = usage.cache_write_5m_tokens * (n_w5 - n_in) + usage.cache_write_1h_tokens * (
        n_w1 - n_in
    )
    return Accounting(
        price,
        _cost(price, usage),
        Savings(
            caching_tokens=usage.cache_read_tokens,
            caching_usd=usage.cache_read_tokens * (n_in - n_read) / den,
            cache_write_premium_usd=premium / den,
            compression_tokens=removed,
            compression_usd=removed * n_in / den,
            response_cache_usd=0.0,
        ),
    )
