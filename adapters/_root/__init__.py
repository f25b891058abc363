"""adaptd: event-sourced telemetry and adaptation for DSPy and other LLM programs.

``import adaptd`` is the client SDK (``adaptd.adapters``), loaded on first use of a name
so that ``import adaptd.daemon`` or ``import adaptd.streams`` never pulls it in::

    import adaptd

    adaptd.configure(url="http://127.0.0.1:7710")   # or $ADAPTD_URL / $ADAPTD_TOKEN
    adaptd.emit("execution", program="qa", duration_ms=12.5)

    @adaptd.observe(program="qa")
    def answer(question: str) -> str: ...

    dspy.configure(callbacks=[adaptd.AdaptdCallback(program="qa")])

Importing this package loads none of DuckDB, FastAPI, uvicorn, NumPy, SciPy,
scikit-learn or Textual; those belong to the daemon (``pip install 'adaptd[daemon]'``)
and the dashboard (``adaptd[tui]``).

The folders of the repository map into this namespace (see ``pyproject.toml``):
``adapters/`` is ``adaptd.adapters``, ``daemon/`` is ``adaptd.daemon``, ``streams/`` is
``adaptd.streams`` and ``tui/`` is ``adaptd.tui``; this file lives in ``adapters/_root``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptd.adapters import (
        DEFAULT_URL,
        AdaptdCallback,
        AdaptdSpanProcessor,
        AdaptiveLM,
        AdaptiveModule,
        Client,
        Exporter,
        ExportResult,
        HttpExporter,
        InMemoryExporter,
        Observation,
        RoutingTable,
        configure,
        current_observation,
        default_spill_dir,
        emit,
        execution_id_of,
        features,
        feedback,
        flush,
        get_client,
        observe,
        session,
        shutdown,
        stats,
    )

#: The SDK's public names, served from ``adaptd.adapters`` on first access.
__all__ = [
    "DEFAULT_URL",
    "AdaptdCallback",
    "AdaptdSpanProcessor",
    "AdaptiveLM",
    "AdaptiveModule",
    "Client",
    "ExportResult",
    "Exporter",
    "HttpExporter",
    "InMemoryExporter",
    "Observation",
    "RoutingTable",
    "configure",
    "current_observation",
    "default_spill_dir",
    "emit",
    "execution_id_of",
    "features",
    "feedback",
    "flush",
    "get_client",
    "observe",
    "session",
    "shutdown",
    "stats",
]
_SDK = frozenset(__all__)


def __getattr__(name: str) -> Any:
    """Resolve ``__version__`` or an SDK name from ``adaptd.adapters``; any other name is an
    AttributeError."""
    if name == "__version__":  # importlib.metadata costs ~45 ms: only when asked
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("adaptd")
        except PackageNotFoundError:  # a source tree that was never installed
            value = "0.0.0+src"
        globals()[name] = value
        return value
    if name not in _SDK:
        raise AttributeError(f"module 'adaptd' has no attribute {name!r}")
    import adaptd.adapters as sdk

    value = getattr(sdk, name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SDK | {"__version__"})
