"""What the request stages use, in one small record: ``Services``.

``ferrule.app`` builds one per worker and hands it to the routes, the pipeline and ``Exchange``;
they never see the ``App`` (which keeps the lifecycle, the HTTP dispatch and the admin and UI
routes). The lifespan opens the stores and the upstream client later and sets them here, on this
record, so that every stage sees them.

This module imports none of ``ferrule.app``, ``ferrule.routes``, ``ferrule.exchange`` or
``ferrule.pipeline``: they import it, never the other way round."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .upstream import UpstreamClient
from .upstream_native import open_upstream

if TYPE_CHECKING:
    from .cache import ResponseStore
    from .config import Config
    from .largebody import LargeBodies
    from .ledger import Recorder
    from .metrics import Metrics
    from .quota import Quota
    from .resilience import Resilience
    from .seal import Sealer
    from .stored_responses import ResponseState
    from .thinking import ThinkingMemory
    from .ui.live import Live

__all__ = ["Services"]


@dataclass(slots=True, eq=False)
class Services:
    """One worker's services (eq=False: compared by identity, as the one record it is)."""

    cfg: Config
    resilience: Resilience  # retries, budget, breakers (and the upstream key pool, once made)
    metrics: Metrics
    quota: Quota  # virtual keys' limits and budgets (ferrule.quota)
    live: Live  # the dashboard's live feed (ferrule.ui.live)
    large_bodies: LargeBodies  # the worker's budget for large request bodies
    recorder: Recorder  # ledger rows; replaced by the lifespan once the writer runs
    # Set by the lifespan (None until then, or when a store could not be opened):
    store: ResponseStore | None = None  # the response cache
    thinking: ThinkingMemory | None = None  # tool turns' thinking blocks (ferrule.thinking)
    responses: ResponseState | None = None  # stored Responses (previous_response_id)
    sealer: Sealer | None = None  # seals what the stores keep at rest (ferrule.seal)
    _upstream: UpstreamClient | None = field(default=None, init=False, repr=False)

    @property
    def upstream(self) -> UpstreamClient:
        """The upstream client: the lifespan's, or (servers without lifespan support) one made
        on first use."""
        up = self._upstream
        if up is None:
            up = self._upstream = open_upstream(self.cfg)
        return up

    @upstream.setter
    def upstream(self, value: UpstreamClient) -> None:
        self._upstream = value

    def opened_upstream(self) -> UpstreamClient | None:
        """The upstream client if one was made (to close it), without making one."""
        return self._upstream
