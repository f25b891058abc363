"""adaptd client SDK: batching event export and integrations (imports only streams.events).

Quick start::

    import adaptd.adapters as adapters

    adapters.configure()                      # $ADAPTD_URL / $ADAPTD_TOKEN, or defaults
    adapters.emit("execution", program="qa", duration_ms=12.5)

    @adapters.observe(program="qa")
    def answer(question: str) -> str: ...

    dspy.configure(callbacks=[adapters.AdaptdCallback(program="qa")])   # every DSPy call

    adapters.feedback(prediction, score=1.0)  # a DSPy Prediction or an execution id

The module-level functions use one process-wide default client, created on first use
from the environment when ``configure()`` was not called. The DSPy and OpenTelemetry
integrations are imported on first use, so the core SDK needs neither library.
"""

from __future__ import annotations

import threading
from typing import Any

from adaptd.adapters.client import DEFAULT_URL, Client
from adaptd.adapters.encode import NO_POSITIONAL
from adaptd.adapters.exporter import Exporter, ExportResult, HttpExporter, InMemoryExporter
from adaptd.adapters.features import features
from adaptd.adapters.observe import Observation, current_observation, observe
from adaptd.adapters.spill import default_spill_dir

__all__ = [
    "DEFAULT_URL",
    "Client",
    "ExportResult",
    "Exporter",
    "HttpExporter",
    "InMemoryExporter",
    "Observation",
    "configure",
    "current_observation",
    "default_spill_dir",
    "emit",
    "AdaptdCallback",
    "AdaptdSpanProcessor",
    "AdaptiveLM",
    "AdaptiveModule",
    "RoutingTable",
    "execution_id_of",
    "feedback",
    "features",
    "flush",
    "session",
    "get_client",
    "observe",
    "shutdown",
    "stats",
]

_default: Client | None = None
_default_lock = threading.Lock()

#: Integrations imported on first access (they need DSPy or OpenTelemetry).
_LAZY = {
    "AdaptdCallback": "adaptd.adapters.dspy_callback",
    "execution_id_of": "adaptd.adapters.dspy_callback",
    "session": "adaptd.adapters.dspy_callback",
    "AdaptdSpanProcessor": "adaptd.adapters.otel_bridge",
    "AdaptiveLM": "adaptd.adapters.adaptive_lm",
    "AdaptiveModule": "adaptd.adapters.adaptive_lm",
    "RoutingTable": "adaptd.adapters.routing_table",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'adapters' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def configure(url: str | None = None, token: str | None = None, **kwargs: Any) -> Client:
    """Replace the default client with a new one.

    The previous default, if any, is shut down (its queue drained, for at most one
    second) so nothing it held is lost silently.

    Args:
        url: Daemon base URL; default ``$ADAPTD_URL`` or ``http://127.0.0.1:7710``.
        token: Bearer token; default ``$ADAPTD_TOKEN``.
        **kwargs: Any other ``Client`` argument.

    Returns:
        The new default client.

    Raises:
        ValueError: An invalid argument (raised at configuration time, never later).
    """
    global _default
    client = Client(url, token, **kwargs)
    with _default_lock:
        old, _default = _default, client
    if old is not None:
        old.shutdown(timeout=1.0)
    return client


def get_client() -> Client:
    """The default client, created from the environment on first use."""
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                _default = Client()
            client = _default
    return client


def emit(
    kind: str,
    _positional: object = NO_POSITIONAL,
    /,
    program: Any = None,
    module: Any = None,
    route: Any = None,
    model: Any = None,
    status: Any = None,
    duration_ms: Any = None,
    tokens_in: Any = None,
    tokens_out: Any = None,
    cost_usd: Any = None,
    error_type: Any = None,
    parent_id: Any = None,
    root_id: Any = None,
    execution_id: Any = None,
    provider: Any = None,
    cache_hit: Any = None,
    **fields: Any,
) -> None:
    """``get_client().emit(kind, **fields)``: enqueue one event, never raise or block.

    Same signature as ``Client.emit`` (see there why it names fields); pass every field
    by keyword.
    """
    client = _default or get_client()
    if fields:
        client.emit(kind, _positional, program, module, route, model, status, duration_ms, tokens_in,
                    tokens_out, cost_usd, error_type, parent_id, root_id, execution_id, provider,
                    cache_hit, **fields)  # fmt: skip
    else:  # a plain positional call: no dict at all
        client.emit(kind, _positional, program, module, route, model, status, duration_ms, tokens_in,
                    tokens_out, cost_usd, error_type, parent_id, root_id, execution_id, provider,
                    cache_hit)  # fmt: skip


def feedback(
    execution: Any,
    score: float | None = None,
    label: str | None = None,
    comment: str | None = None,
    **fields: Any,
) -> None:
    """``get_client().feedback(...)``: record a score or label on an execution.

    See ``Client.feedback``.
    """
    (_default or get_client()).feedback(execution, score, label, comment, **fields)


def flush(timeout: float | None = 5.0) -> bool:
    """Flush the default client (see ``Client.flush``); True when nothing is pending."""
    client = _default
    return True if client is None else client.flush(timeout)


def shutdown(timeout: float | None = 5.0) -> bool:
    """Shut the default client down (see ``Client.shutdown``).

    Later module-level ``emit()`` calls are dropped and counted, until ``configure()``
    installs a new client.
    """
    client = _default
    return True if client is None else client.shutdown(timeout)


def stats() -> dict[str, int]:
    """The default client's counters (see ``Client.stats``); empty without a client."""
    client = _default
    return {} if client is None else client.stats()
