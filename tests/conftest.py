"""Shared fixtures. Every kernel test runs on both backends: ``kernels`` is parametrized over the
native module and its pure-Python twins (ids ``rust`` / ``python``); the native run is skipped,
never failed, when the extension is not built. End-to-end fixtures live in ``tests/servers.py``.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from hypothesis import settings

from ferrule import _pure

# Property tests are deterministic unless asked otherwise: a fixed seed per test and no example
# database, so CI on a fresh clone runs exactly the examples a developer ran (a random find once
# failed CI by chance). `make fuzz-props` (HYPOTHESIS_PROFILE=fuzz) explores with random seeds,
# keeping what it finds in .hypothesis/ for the next run; a find becomes an @example. Loaded
# here, before any test module builds its @settings, which inherit from the profile.
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("fuzz", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

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
