"""The dashboard at ``/ui`` (issue 17): static pages from this package, charts drawn on the
server as SVG, reads of the ledger, a live feed over server-sent events, all behind the admin
key's sign-in. See docs/ui.md."""

from __future__ import annotations

from .live import Live
from .server import handle

__all__ = ["Live", "handle"]
