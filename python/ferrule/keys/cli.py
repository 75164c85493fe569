"""``ferrule keys``: create, list, show, update, revoke and rotate virtual keys in the data
folder's key store. ``create`` and ``rotate`` print the key once; nothing else ever shows it."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import sys
from typing import Any

import orjson

from .model import BUDGET_PERIODS
from .ops import announce, create_key, open_key_store, parse_duration, parse_models, rotate_key
from .store import DEFAULT_GRACE, KeyInfo, KeyProblem, KeyStore

__all__ = ["add_arguments", "run"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="Ferrule's data folder (FERRULE_DATA_DIR)")
    p.add_argument("--config", help="TOML config file, for its data folder (FERRULE_CONFIG)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _limits(p: argparse.ArgumentParser, *, update: bool) -> None:
    clear = " ('none' clears it)" if update else ""
    p.add_argument("--budget", metavar="USD", help=f"spending cap in dollars{clear}")
    p.add_argument(
        "--budget-period",
        choices=BUDGET_PERIODS,
        help="when the budget starts over (default total: never)",
    )
    p.add_argument("--rpm", metavar="N", help=f"requests per minute{clear}")
    p.add_argument("--tpm", metavar="N", help=f"tokens per minute, input + output{clear}")
    p.add_argument("--max-parallel", metavar="N", help=f"requests at once{clear}")
    p.add_argument(
        "--models",
        metavar="GLOB[,GLOB...]",
        help=f"models the key may use, fnmatch globs like 'claude-haiku-*'{clear}; default any",
    )
    p.add_argument(
        "--expires",
        metavar="DURATION",
        help=f"the key stops working after this long (90m, 12h, 30d, 2w){clear}",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_command", required=True)
    c = sub.add_parser("create", help="create a key and print it (once)")
    c.add_argument("--name", required=True, help="the key's name (ledger, stats, metrics)")
    _limits(c, update=False)
    _common(c)
    c = sub.add_parser("list", help="every key: name, status, limits (never the key)")
    _common(c)
    c = sub.add_parser("show", help="one key's record")
    c.add_argument("name")
    _common(c)
    c = sub.add_parser("update", help="change a key's limits")
    c.add_argument("name")
    _limits(c, update=True)
    _common(c)
    c = sub.add_parser("revoke", help="stop a key at once (every worker within 1 s)")
    c.add_argument("name")
    _common(c)
    c = sub.add_parser("rotate", help="a new key for NAME; the old one works for --grace more")
    c.add_argument("name")
    c.add_argument(
        "--grace", default="24h", help="how long the old key keeps working (default 24h; 0: none)"
    )
    _common(c)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load
    from ..ledger import resolve_data_dir

    try:
        data_dir = resolve_data_dir(args.data_dir, args.config)
        redis_url, database_url = _shared_urls(args.config, load)
    except (ConfigError, ValueError) as exc:
        print(f"ferrule keys: {exc}", file=sys.stderr)
        return 2
    try:
        store = open_key_store(data_dir, database_url)
    except (sqlite3.Error, OSError, KeyProblem) as exc:
        where = "the database (FERRULE_DATABASE_URL)" if database_url else data_dir
        print(f"ferrule keys: cannot open the key store in {where}: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(args, store, redis_url)
    except KeyProblem as exc:
        print(f"ferrule keys: {exc}", file=sys.stderr)
        return 1 if exc.status in (404, 409) else 2
    except sqlite3.Error as exc:
        print(f"ferrule keys: the key store failed: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _shared_urls(config: str | None, load: Any) -> tuple[str, str]:
    """``(redis_url, database_url)`` as ``ferrule serve`` would see them: the keys live in the
    server's store (PostgreSQL when the database URL is set)."""
    if config or os.environ.get("FERRULE_CONFIG"):
        cfg = load(config_path=config)
        return str(cfg.redis_url), str(cfg.database_url)
    env = os.environ
    return env.get("FERRULE_REDIS_URL", ""), env.get("FERRULE_DATABASE_URL", "")


def _run(args: argparse.Namespace, store: KeyStore, redis_url: str) -> int:
    cmd = args.keys_command
    if cmd == "create":
        kw = _limit_values(args, update=False)
        info, key = create_key(store, args.name, **kw)
        announce(redis_url)
        _print_key(args, info, key, "created")
    elif cmd == "list":
        infos = store.list_keys()
        if args.json:
            _out({"object": "list", "data": [i.as_json() for i in infos]})
        else:
            _table(infos)
    elif cmd == "show":
        found = store.get(args.name)
        if found is None:
            raise KeyProblem(f"no key named {args.name!r}", 404)
        _show(args, found)
    elif cmd == "update":
        changes = _limit_values(args, update=True)
        if not changes:
            raise KeyProblem("nothing to change: give at least one limit option")
        info = store.update(args.name, changes)
        announce(redis_url)
        _show(args, info)
    elif cmd == "revoke":
        info = store.revoke(args.name)
        announce(redis_url)
        _show(args, info)
    elif cmd == "rotate":
        grace = parse_duration(args.grace) if args.grace else DEFAULT_GRACE
        info, key = rotate_key(store, args.name, grace)
        announce(redis_url)
        _print_key(args, info, key, "rotated")
    return 0


def _limit_values(args: argparse.Namespace, *, update: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.budget is not None:
        out["budget_usd"] = _cleared(args.budget, update) or _dollars(args.budget)
    if args.budget_period is not None:
        out["budget_period"] = args.budget_period
    for field in ("rpm", "tpm", "max_parallel"):
        raw = getattr(args, field)
        if raw is not None:
            out[field] = _cleared(raw, update) or _whole(raw, "--" + field.replace("_", "-"))
    if args.models is not None:
        out["models"] = () if _is_none(args.models, update) else parse_models(args.models)
    if args.expires is not None:
        seconds = None if _is_none(args.expires, update) else parse_duration(args.expires)
        if update:
            out["expires_at"] = None if seconds is None else _now() + seconds
        else:
            out["expires_in"] = seconds
    for field in ("budget_usd", "rpm", "tpm", "max_parallel"):
        if out.get(field) is _NONE:
            out[field] = None
    return out


_NONE: Any = object()


def _is_none(raw: str, update: bool) -> bool:
    return update and raw.strip().lower() in ("none", "off", "never")


def _cleared(raw: str, update: bool) -> Any:
    return _NONE if _is_none(raw, update) else None


def _dollars(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise KeyProblem(f"--budget: {raw!r} is not a number of dollars") from None
    if not value >= 0 or value == float("inf"):
        raise KeyProblem("--budget must be 0 or more dollars")
    return value


def _whole(raw: str, flag: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise KeyProblem(f"{flag}: {raw!r} is not a whole number") from None
    if value < 1:
        raise KeyProblem(f"{flag} must be at least 1")
    return value


def _now() -> float:
    import time

    return time.time()


def _out(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _print_key(args: argparse.Namespace, info: KeyInfo, key: str, what: str) -> None:
    if args.json:
        _out({**info.as_json(), "key": key})
        return
    print(key)
    print(
        f"{what} key {info.key.name!r}: this is the only time the key is shown; keep it safe",
        file=sys.stderr,
    )
    if info.previous_valid_until is not None:
        print(f"the previous key works until {_when(info.previous_valid_until)}", file=sys.stderr)


def _show(args: argparse.Namespace, info: KeyInfo) -> None:
    if args.json:
        _out(info.as_json())
        return
    data = info.as_json()
    for name, value in data.items():
        if name.endswith("_at") or name.endswith("_until"):
            value = _when(value)
        elif name == "models":
            value = ",".join(value) or "any"
        elif value is None:
            value = "-"
        print(f"{name:>24}: {value}")


def _table(infos: list[KeyInfo]) -> None:
    if not infos:
        print("no keys yet: ferrule keys create --name NAME", file=sys.stderr)
        return
    rows = [("NAME", "STATUS", "DIGEST", "BUDGET", "RPM", "TPM", "PARALLEL", "MODELS", "EXPIRES")]
    for i in infos:
        k = i.key
        budget = f"${k.budget_usd:g}/{k.budget_period}" if k.budget_usd is not None else "-"
        rows.append(
            (
                k.name,
                i.status(),
                k.digest[:12],
                budget,
                str(k.rpm or "-"),
                str(k.tpm or "-"),
                str(k.max_parallel or "-"),
                ",".join(k.models) or "any",
                _when(k.expires_at),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
