"""Shared fixtures. Every kernel test runs on both backends: ``kernels`` is parametrized over the
native module and its pure-Python twins (ids ``rust`` / ``python``); the native run is skipped,
never failed, when the extension is not built. End-to-end fixtures live in ``tests/servers.py``.
"""

from __future__ import annotations

from types import ModuleType

import pytest

from ferrule import _pure

try:
    from ferrule import _native as _native_mod

    NATIVE: ModuleType | None = _native_mod
    NATIVE_MISSING = ""
except ImportError as exc:  # pragma: no cover - depends on the build
    NATIVE = None
    NATIVE_MISSING = f"native extension not built: {exc}"

BACKENDS = ["rust", "python"]


def kernel_module(name: str) -> ModuleType:
    """The module implementing backend ``name``; skips the test when it is not built."""
    if name == "python":
        return _pure
    if NATIVE is None:
        pytest.skip(NATIVE_MISSING)
    return NATIVE


@pytest.fixture(params=BACKENDS)
def kernels(request: pytest.FixtureRequest) -> ModuleType:
    """The kernel module of one backend; the test runs once per backend."""
    return kernel_module(request.param)


@pytest.fixture
def native() -> ModuleType:
    """The native module, for differential tests against ``ferrule._pure``."""
    return kernel_module("rust")


# -- real servers -------------------------------------------------------------------------------
# Imported here so every test module sees them; the helpers live in tests/servers.py.
from servers import MockUpstream, Proxy, mock, mock_server, proxy, start_proxy  # noqa: E402, F401
