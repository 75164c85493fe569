"""A fault-injecting fake of Anthropic's Messages API for the reliability tests.

Import as ``faults`` (``tests/`` is on pytest's ``pythonpath``)::

    from faults import fault_upstream, ok, status, reset_after

    with fault_upstream() as fu:
        fu.push(status(529), ok(n=3))
        ...  # point the proxy's upstream at fu.url
        assert fu.attempts == 2

Run it as a process for multi-worker proxies: ``python -m tests.faults --port P`` (or
:func:`fault_upstream_process`), driven through ``/_faults/*`` by :class:`RemoteFaultUpstream`.
See ``server.py`` for the records and ``scenarios.py`` for every fault.
"""

from .remote import RemoteFaultUpstream, fault_upstream_process
from .scenarios import (
    Scenario,
    ScenarioLike,
    api_error,
    drip,
    echo,
    garbage,
    html_502,
    huge_event,
    infinite,
    ok,
    overloaded,
    ping_only,
    rate_limited,
    reset_after,
    reset_before_headers,
    scenario_from_json,
    sse_error,
    stall_after,
    stall_before_headers,
    status,
    to_scenario,
    truncated_eof,
    unknown_event,
)
from .server import ClientGone, Exchange, FaultUpstream, Record, Request, fault_upstream

__all__ = [
    "ClientGone",
    "Exchange",
    "FaultUpstream",
    "Record",
    "RemoteFaultUpstream",
    "Request",
    "Scenario",
    "ScenarioLike",
    "api_error",
    "drip",
    "echo",
    "fault_upstream",
    "fault_upstream_process",
    "garbage",
    "html_502",
    "huge_event",
    "infinite",
    "ok",
    "overloaded",
    "ping_only",
    "rate_limited",
    "reset_after",
    "reset_before_headers",
    "scenario_from_json",
    "sse_error",
    "stall_after",
    "stall_before_headers",
    "status",
    "to_scenario",
    "truncated_eof",
    "unknown_event",
]
