"""Faster DSPy callback dispatch: resolve each (instance class, method) to its handler once.

For every instrumented call DSPy picks the callback method to run (``on_module_start``,
``on_lm_end``...) through a chain of ``isinstance`` checks, one of them against
``dspy.CodeInterpreter``, a runtime-checkable ``Protocol``. On Python 3.11 a negative
Protocol check walks the class's attributes every time: about 25 µs, paid at the start and
at the end of every module and adapter call, for any callback at all. That is most of what
"adding a callback" costs a DSPy program.

``install()`` wraps DSPy's two resolver functions with a cache keyed by what the choice
depends on (phase, instance class, method, the ``supports_decision_requests`` flag), so
each distinct call site pays the checks once. The handler chosen is DSPy's own; only the
repetition is skipped. The one assumption: instances of one class are all, or all not,
structural ``CodeInterpreter``s (the Protocol is about methods, which come from the
class). ``AdaptdCallback`` installs it unless ``fast_dispatch=False``; ``uninstall()``
restores DSPy's functions. If DSPy's internals change, ``install()`` does nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("adaptd.sdk")

#: Bound of the cache (distinct call sites; a program has a handful).
MAX_ENTRIES = 10_000

_lock = threading.Lock()
_originals: dict[str, Callable[..., Any]] = {}


def _cached(original: Callable[..., Any], phase: str) -> Callable[..., Any]:
    cache: dict[tuple[Any, ...], str] = {}

    def resolve(callback: Any, instance: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
        key = (phase, type(instance), fn, getattr(instance, "supports_decision_requests", False) is True)
        name = cache.get(key)
        if name is not None:
            return getattr(callback, name)
        handler = original(callback, instance, fn)
        name = getattr(handler, "__name__", None)
        if name is not None and getattr(callback, name, None) == handler and len(cache) < MAX_ENTRIES:
            cache[key] = name
        return handler

    resolve.__wrapped__ = original  # type: ignore[attr-defined]
    return resolve


def install() -> bool:
    """Cache DSPy's handler resolution (idempotent, thread-safe).

    Returns:
        True when the cache is in place; False when this DSPy has no such resolvers
        (nothing is changed then).
    """
    try:
        import dspy.utils.callback as callback_module
    except ImportError:
        return False
    with _lock:
        if _originals:
            return True
        start = getattr(callback_module, "_get_on_start_handler", None)
        end = getattr(callback_module, "_get_on_end_handler", None)
        if not callable(start) or not callable(end):
            log.info("adaptd: this DSPy version has no callback resolvers to cache")
            return False
        _originals.update(start=start, end=end)
        callback_module._get_on_start_handler = _cached(start, "start")
        callback_module._get_on_end_handler = _cached(end, "end")
        return True


def uninstall() -> None:
    """Put DSPy's own resolvers back (no-op when not installed)."""
    import dspy.utils.callback as callback_module

    with _lock:
        if not _originals:
            return
        callback_module._get_on_start_handler = _originals.pop("start")
        callback_module._get_on_end_handler = _originals.pop("end")


def installed() -> bool:
    """Whether the cache is in place."""
    return bool(_originals)
