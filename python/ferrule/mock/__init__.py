"""A faithful local stand-in for Anthropic's Messages API, for tests, the demo and benchmarks.

- :func:`build_app` — the ASGI application (serve it with Granian's ASGI interface);
- :func:`mock_upstream` — a context manager running it as a real server, yielding the base URL;
- :class:`MockOptions` — its settings; ``ferrule mock-upstream`` / ``python -m ferrule.mock`` —
  the command line (cli.py).

Answers are scripted with ``[mock:…]`` directives in the last user message or through the
``/_mock/`` control endpoints; docs/mock-upstream.md lists them and the validation rules.
"""

from .app import build_app
from .options import MockOptions
from .server import mock_upstream

__all__ = ["MockOptions", "build_app", "mock_upstream"]
