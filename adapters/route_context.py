"""The route an ``AdaptiveLM`` is calling right now, for the telemetry of that call.

``RouteRunner`` sets it around each attempt; ``AdaptdCallback`` reads it when the route's
LM call starts, so the ``lm_call`` event names its route and the routing policy can
learn from it. A context variable, so threads and asyncio tasks each see their own.

``current_root_execution`` is the id of the outermost DSPy module call in progress (set
by ``AdaptdCallback``): ``route_decision`` events carry it, so feedback given on the
program's prediction joins the route that served it.
"""

from __future__ import annotations

from contextvars import ContextVar

#: The route name of the attempt in progress in this context, None outside one.
current_route: ContextVar[str | None] = ContextVar("adaptd_route", default=None)

#: The event id of the outermost module execution in progress in this context (set by
#: ``AdaptdCallback``), None outside one.
current_root_execution: ContextVar[str | None] = ContextVar("adaptd_root_execution", default=None)
