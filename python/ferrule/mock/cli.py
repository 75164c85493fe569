"""``ferrule mock-upstream`` (and ``python -m ferrule.mock``): serve the simulated upstream.

The main CLI adds these options to its sub-command with :func:`add_arguments` and calls :func:`run`.
Options reach Granian's worker processes as ``FERRULE_MOCK_*`` environment variables (see
options.py); an option given on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .options import MockOptions

__all__ = ["DEFAULT_PORT", "add_arguments", "main", "run"]

DEFAULT_PORT = 8767
_TARGET = "ferrule.mock.app:factory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The mock-upstream options, for a parser or sub-parser."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--answer-words",
        type=int,
        default=None,
        metavar="N",
        help="words in the default answer (default: 40; [mock:words=N] overrides it per request)",
    )
    parser.add_argument(
        "--token-delay-ms",
        type=float,
        default=None,
        metavar="MS",
        help="pause before each streamed delta (default: 0; [mock:delay=MS] overrides it)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="accept only this API key (default: any non-empty key)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Granian worker processes (default: 1; the /_mock/ state is per process, keep 1 for tests)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; returns the exit status."""
    from granian import Granian
    from granian.constants import Interfaces

    given = {
        "answer_words": args.answer_words,
        "token_delay_ms": args.token_delay_ms,
        "api_key": args.api_key,
    }
    options = dataclasses.replace(
        MockOptions.from_env(), **{k: v for k, v in given.items() if v is not None}
    )
    # Granian imports the factory afresh in every worker: hand the options over by environment.
    os.environ.update(options.to_env())
    print(
        f"ferrule mock-upstream: simulated Anthropic Messages API on http://{args.host}:{args.port} "
        f"(answer_words={options.answer_words}, token_delay_ms={options.token_delay_ms:g}, "
        f"workers={args.workers})",
        file=sys.stderr,
        flush=True,
    )
    Granian(
        _TARGET,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        factory=True,
        # A [mock:hang] stream may be open for a minute; do not let it hold up a shutdown.
        workers_kill_timeout=3,
    ).serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ferrule.mock", description="Serve Ferrule's simulated Anthropic upstream."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
