"""Faster DSPy callback dispatch: the same handlers, inputs and ids, at a fraction of the cost.

With any callback configured, every instrumented DSPy call (module, LM, adapter format and
parse, tool...) goes through ``dspy.utils.callback.with_callbacks``, which on a 2-core
machine spends about 280 µs per ``ChainOfThought`` call (two modules, an LM call, a format
and a parse) before any callback does anything. Three things cost most:

- it picks the callback method to run (``on_module_start``, ``on_lm_end``...) through a
  chain of ``isinstance`` checks, one against ``dspy.CodeInterpreter``, a
  runtime-checkable ``Protocol``, whose negative check walks the class's attributes
  (about 25 µs on Python 3.11), at the start and at the end of every call;
- it names the call's arguments with ``inspect.getcallargs``, which recomputes the
  function's signature every time (about 10 µs);
- it draws each call id from ``uuid.uuid4()``, a ``getrandom`` system call that also
  releases the GIL, so a busy thread (the SDK's own worker, say) takes it for a while.

``install()`` replaces the three, in that module only:

- the handler choice, cached per (phase, instance class, method,
  ``supports_decision_requests``); the handler chosen is DSPy's own. The one assumption:
  instances of one class are all, or all not, structural ``CodeInterpreter``s (the
  Protocol is about methods, which come from the class);
- ``getcallargs`` with each function's argspec computed once (and again if its
  defaults change): the same mapping in the same order, and the same ``TypeError`` for
  a bad call, because a call that does not bind falls back to ``inspect.getcallargs``;
- call ids from ``uuid_utils.uuid4()`` (random UUIDs, same 32-hex-digit form, no system
  call).

Together they bring DSPy's share to about 40 µs per ``ChainOfThought`` call
(``bench/dspy_overhead.py``, configuration ``noop_fast``).

``AdaptdCallback`` installs it unless ``fast_dispatch=False``; ``uninstall()`` restores
DSPy's own. If DSPy's internals change, ``install()`` does nothing.
"""

from __future__ import annotations

import inspect
import logging
import threading
import types
import uuid
from collections.abc import Callable
from typing import Any

import uuid_utils

log = logging.getLogger("adaptd.sdk")

#: Bound of each cache (distinct call sites or functions; a program has a handful).
MAX_ENTRIES = 10_000

_lock = threading.Lock()
_originals: dict[str, Any] = {}


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


class _Spec:
    """What ``getcallargs`` needs of a function, computed once."""

    __slots__ = ("args", "varargs", "varkw", "defaults", "kwonly", "kwdefaults", "possible", "required",
                 "defaults_ref", "kwdefaults_ref")  # fmt: skip

    def __init__(self, func: Any) -> None:
        args, varargs, varkw, defaults, kwonly, kwdefaults, _ = inspect.getfullargspec(func)
        self.args, self.varargs, self.varkw = tuple(args), varargs, varkw
        self.defaults = tuple(defaults or ())
        self.kwonly, self.kwdefaults = tuple(kwonly), dict(kwdefaults or {})
        self.possible = frozenset(args) | frozenset(kwonly)
        self.required = self.args[: len(self.args) - len(self.defaults)]
        self.defaults_ref = getattr(func, "__defaults__", None)
        self.kwdefaults_ref = getattr(func, "__kwdefaults__", None)


_specs: dict[Any, _Spec] = {}


def _bind(spec: _Spec, positional: tuple[Any, ...], named: dict[str, Any]) -> dict[str, Any] | None:
    """``inspect.getcallargs``'s mapping for a call that binds, in its key order; None
    for a call that does not (the caller then lets ``inspect`` raise its error)."""
    args = spec.args
    num_pos, num_args = len(positional), len(args)
    if num_pos > num_args and not spec.varargs:
        return None
    arg2value = dict(zip(args, positional))
    if spec.varargs:
        arg2value[spec.varargs] = tuple(positional[num_args:])
    extra: dict[str, Any] | None = None
    if spec.varkw:
        extra = arg2value[spec.varkw] = {}
    possible = spec.possible
    for kw, value in named.items():
        if kw not in possible:
            if extra is None:
                return None
            extra[kw] = value
        elif kw in arg2value:
            return None
        else:
            arg2value[kw] = value
    if num_pos < num_args:
        for arg in spec.required:
            if arg not in arg2value:
                return None
        first_default = num_args - len(spec.defaults)
        for i, value in enumerate(spec.defaults):
            arg = args[first_default + i]
            if arg not in arg2value:
                arg2value[arg] = value
    for kwarg in spec.kwonly:
        if kwarg not in arg2value:
            if kwarg not in spec.kwdefaults:
                return None
            arg2value[kwarg] = spec.kwdefaults[kwarg]
    return arg2value


def getcallargs(func: Any, /, *positional: Any, **named: Any) -> dict[str, Any]:
    """``inspect.getcallargs`` with the function's argspec cached: same result, same errors."""
    spec = _specs.get(func)
    if spec is None or spec.defaults_ref is not getattr(func, "__defaults__", None) \
            or spec.kwdefaults_ref is not getattr(func, "__kwdefaults__", None):  # fmt: skip
        if not isinstance(func, types.FunctionType) or len(_specs) >= MAX_ENTRIES:
            return inspect.getcallargs(func, *positional, **named)
        spec = _specs[func] = _Spec(func)
    bound = _bind(spec, positional, named)
    if bound is None:  # it does not bind: raise exactly what inspect raises
        return inspect.getcallargs(func, *positional, **named)
    return bound


class _Inspect(types.ModuleType):
    """``inspect`` as DSPy's callback module sees it, but for ``getcallargs``."""

    getcallargs = staticmethod(getcallargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)


class _Uuid(types.ModuleType):
    """``uuid`` as DSPy's callback module sees it, but for a syscall-free ``uuid4``."""

    uuid4 = staticmethod(uuid_utils.uuid4)

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


def install() -> bool:
    """Put the faster dispatch in place (idempotent, thread-safe).

    Returns:
        True when it is in place; False when this DSPy has no such internals (nothing
        is changed then).
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
        if not callable(start) or not callable(end) or getattr(callback_module, "inspect", None) is not inspect \
                or getattr(callback_module, "uuid", None) is not uuid:  # fmt: skip
            log.info("adaptd: this DSPy version's callback dispatch is not the one adaptd knows; left as is")
            return False
        _originals.update(start=start, end=end, inspect=inspect, uuid=uuid)
        callback_module._get_on_start_handler = _cached(start, "start")
        callback_module._get_on_end_handler = _cached(end, "end")
        callback_module.inspect = _Inspect("inspect")
        callback_module.uuid = _Uuid("uuid")
        return True


def uninstall() -> None:
    """Put DSPy's own dispatch back (no-op when not installed)."""
    import dspy.utils.callback as callback_module

    with _lock:
        if not _originals:
            return
        callback_module._get_on_start_handler = _originals.pop("start")
        callback_module._get_on_end_handler = _originals.pop("end")
        callback_module.inspect = _originals.pop("inspect")
        callback_module.uuid = _originals.pop("uuid")


def installed() -> bool:
    """Whether the faster dispatch is in place."""
    return bool(_originals)
