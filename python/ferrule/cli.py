"""The ``ferrule`` command: serve, mock-upstream, demo, version."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (also FERRULE_CONFIG)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8766; FERRULE_PORT, TOKENPAK_PORT)")
    p.add_argument("--workers", type=int, help="Granian worker processes (default 1)")
    p.add_argument("--upstream-url", help="Anthropic base URL (FERRULE_UPSTREAM_URL)")
    p.add_argument("--anthropic-version", help="anthropic-version sent upstream")
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument(
        "--http",
        choices=["1", "2", "auto"],
        help="protocol: 1 = HTTP/1.1 only (default), 2 = HTTP/2 only, auto = both (FERRULE_HTTP)",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .serve import serve

    cli = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "upstream_url": args.upstream_url,
        "anthropic_version": args.anthropic_version,
        "log_level": args.log_level,
        "http": args.http,
    }
    try:
        return serve(cli, args.config)
    except ConfigError as exc:
        print(f"ferrule: invalid configuration: {exc}", file=sys.stderr)
        return 2


def _cmd_version(args: argparse.Namespace) -> int:
    from .backend import BackendError, load

    try:
        name, _ = load()
    except BackendError as exc:
        print(f"ferrule {__version__} (backend error: {exc})")
        return 1
    print(f"ferrule {__version__} (backend: {name}, python {sys.version.split()[0]})")
    return 0


def _cmd_mock(args: argparse.Namespace) -> int:
    from .mock.cli import run

    code: int = run(args)
    return code


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferrule",
        description="OpenAI-compatible, Rust-accelerated proxy in front of Anthropic's Messages API",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the proxy (Granian, ASGI)")
    _serve_args(p)
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("mock-upstream", help="run the simulated Anthropic API")
    from .mock.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_mock)
    p = sub.add_parser("demo", help="offline demo: simulated Anthropic + Ferrule + the openai SDK")
    p.add_argument(
        "--backend", choices=["auto", "rust", "python"], help="FERRULE_BACKEND for the demo"
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep the simulated upstream and Ferrule running after the tour (Ctrl-C stops them)",
    )
    p.set_defaults(func=_cmd_demo)
    from . import doctor, stats_cli
    from .keys import cli as keys_cli

    p = sub.add_parser("keys", help="virtual keys: create, list, show, update, revoke, rotate")
    keys_cli.add_arguments(p)
    p.set_defaults(func=keys_cli.run)
    p = sub.add_parser("stats", help="requests, tokens, cost and savings from the ledger")
    stats_cli.add_arguments(p)
    p.set_defaults(func=stats_cli.run)
    p = sub.add_parser("doctor", help="check config, port, data folder, ledger, Redis, upstream")
    doctor.add_arguments(p)
    p.set_defaults(func=doctor.run)
    p = sub.add_parser("version", help="print the version and the active backend")
    p.set_defaults(func=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # `ferrule` alone: what it can do, not a usage error
        return 0
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
