"""The Vercel AI SDK (Node: ``ai`` + ``@ai-sdk/openai-compatible``), unchanged, through a real
``ferrule serve`` in front of the simulated upstream, on both backends.

The Node side is ``tests/node/clients.test.mjs`` (``node --test``), with its dependencies pinned in
``tests/node/package-lock.json``; ``npm ci`` installs them once when ``tests/node/node_modules`` is
missing. Skipped only when ``node`` or ``npm`` is not installed.
"""

from __future__ import annotations

import pytest

from node_runner import node_with_deps, run_node_tests
from servers import TEST_KEY, Proxy

TEST_FILE = "clients.test.mjs"


@pytest.fixture(scope="module")
def node_deps() -> str:
    return node_with_deps()


def test_vercel_ai_sdk(proxy: Proxy, node_deps: str) -> None:
    env = {"FERRULE_BASE_URL": proxy.v1, "FERRULE_API_KEY": TEST_KEY}
    assert run_node_tests(node_deps, TEST_FILE, env) >= 7
