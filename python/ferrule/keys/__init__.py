"""Virtual keys (issue 15): per-caller keys that the gateway checks, with the operator's key
going upstream. Only a key's SHA-256 digest is stored."""

from __future__ import annotations

from .model import BUDGET_PERIODS, VirtualKey

__all__ = ["BUDGET_PERIODS", "VirtualKey"]
