"""The worker's other threads yield to its event loop (Linux).

A worker is one event loop thread, which runs every request's Python, and helper threads:
Granian's tokio thread (sockets, HTTP parsing), the thread that hands Granian's requests to the
loop, the upstream engine's tokio thread, the ledger writer and the metrics writer. The loop
wakes Granian's thread on every response (``send``) and on every body read (``receive``),
while it holds the GIL. Under the default policy the woken thread preempts the loop at once: two
context switches per wake-up, and on a busy core the loop gives up its turn mid-request. With
``SCHED_BATCH`` a woken thread does not preempt (sched(7): "the scheduler will apply a small
scheduling penalty with respect to wakeup behavior"): it runs when the loop waits for I/O or at
the scheduler's tick, and then does the work of many wake-ups at once. It keeps its fair share
of the CPU (the nice value is unchanged) and needs no privilege.

Measured in ``benches/RESULTS.md`` (issue 12, session 11): -17% CPU per request, non-stream and
stream, at 32 clients on one core.

At one client nothing else is runnable, so the response would wait for the request's own
accounting before Granian writes it: ``hand_over`` gives the CPU away after a response's last
byte when the worker serves no other request.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["batch_helpers", "enable", "hand_over"]

log = logging.getLogger("ferrule.threads")

_enabled = [False]  # ``enable`` was called: this process is a worker of ``ferrule serve``
_batched: set[int] = set()  # native thread ids set to SCHED_BATCH by this process
_on = [False]  # some thread was set: ``hand_over`` yields


def enable() -> None:
    """Make ``batch_helpers`` act in this process. Called by ``app.create_app``, the factory
    Granian's workers run: an app embedded in another program (or a test) leaves that
    program's threads as they are."""
    _enabled[0] = True


def batch_helpers() -> int:
    """Set every thread of this process but the calling one (the event loop's) to
    ``SCHED_BATCH``; threads already set are skipped. The number set now; 0 where the platform
    has no such policy. Called on the first request (Granian starts its threads after the
    lifespan) and once the upstream engine has started its own; nothing unless ``enable``
    was called."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None or not _enabled[0]:
        return 0
    me = threading.get_native_id()
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return 0
    done = 0
    for tid in tids:
        if tid == me or tid in _batched:
            continue
        try:
            if os.sched_getscheduler(tid) != os.SCHED_OTHER:
                _batched.add(tid)  # someone chose a policy for it: leave it
                continue
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except OSError:  # the thread ended meanwhile, or a sandbox refuses
            continue
        _batched.add(tid)
        done += 1
    if done:
        _on[0] = True
        log.debug("%d helper threads set to SCHED_BATCH", done)
    return done


def hand_over(others_in_flight: bool) -> None:
    """After a response's last byte: when no other request is in flight, let the woken helper
    (Granian's thread, which writes the response) run now rather than after this request's
    accounting. Under load the helpers run anyway when the loop waits, many wake-ups at once."""
    if _on[0] and not others_in_flight:
        os.sched_yield()
