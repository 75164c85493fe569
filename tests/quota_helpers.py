"""What the quota tests share: an ``AdmitRequest`` with nothing limited unless asked."""

from __future__ import annotations

from typing import Any

from ferrule.quota import AdmitRequest


def admit_request(key: str, **kw: Any) -> AdmitRequest:
    base: dict[str, Any] = {
        "key": key,
        "rpm": None,
        "tpm": None,
        "tokens": 0,
        "max_parallel": None,
        "budget_nano": None,
        "reserve_nano": 0,
        "period": "",
        "period_end": None,
        "lease_id": None,
        "lease_ttl_s": 600.0,
    }
    base.update(kw)
    return AdmitRequest(**base)
