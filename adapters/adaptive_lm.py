"""Client-side adaptive routing: ``AdaptiveLM`` (a ``dspy.BaseLM``) and ``AdaptiveModule``
(a ``dspy.Module``) pick a route per call from the cached routing table, fail over, and
report every choice as a ``route_decision`` event. ``RouteRunner``
(``adaptd.adapters.route_runner``) is the engine both share.

Per call:

1. Choose a route by weighted sampling over the table's selectable routes (one
   ``random()`` and a bisect over precomputed cumulative weights), skipping routes whose
   local breaker refuses calls.
2. Call it: for ``AdaptiveLM`` the route LM's own ``__call__`` (DSPy callbacks, cache and
   history apply as for any LM, and ``lm_call`` telemetry names the route's real model);
   for ``AdaptiveModule`` the variant module.
3. On a retryable failure: record it on the route's breaker, sleep an exponential backoff
   with full jitter, and choose again among the weighted routes *not yet failed in this
   call* (never straight back to the route that just failed). When none is left, follow
   the table's fallback chains of the failed routes (then the ``"*"`` chain), then any
   remaining route as a last resort, within ``max_attempts``. When every attempt failed
   the last error is raised unchanged, so DSPy sees the provider's error type.
4. Emit one ``route_decision`` per attempt: program, route, model, policy version, the
   probability the choice had, reason ``weighted``/``retry``/``fallback``/``last_resort``,
   and (kept in ``attrs`` by the daemon) status ``ok``/``error``, attempt, error type.

The table is refreshed in the background from ``GET {url}/v1/routing/{program}``
(``TablePoller``); while the daemon is down the last table keeps serving.

Thread-safe: concurrent calls share the table (replaced atomically), the breakers
(locked) and the random generator (``random.Random`` is safe under the GIL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import dspy

from adaptd.adapters.route_breaker import BreakerBoard
from adaptd.adapters.route_runner import NoRouteError, RouteRunner, default_retryable
from adaptd.adapters.routing_table import RouteEntry, RoutingTable, TablePoller

try:  # DSPy 3.4 internals; without them routed calls only warn more
    from dspy.clients._deprecation import _adapter_call
    from dspy.clients._deprecation import adapter_message_call as _adapter_message_call
except ImportError:  # pragma: no cover - other DSPy versions
    _adapter_call = _adapter_message_call = None

__all__ = ["AdaptiveLM", "AdaptiveModule", "NoRouteError", "RouteRunner", "build_lm", "default_retryable"]

RouteSpec = Any  # a dspy.BaseLM, or a mapping of dspy.LM keyword arguments


def build_lm(spec: RouteSpec) -> dspy.BaseLM:
    """An LM from a route definition: a ``dspy.BaseLM`` as is, or ``dspy.LM(**spec)``.

    A mapping may hold ``model`` (required), ``api_base``, ``params`` (merged in as
    keyword arguments) and any ``dspy.LM`` argument. ``num_retries`` defaults to 0:
    failing over to another route beats retrying the same one.

    Raises:
        TypeError: Neither a BaseLM nor a mapping with a string ``model``.
    """
    if isinstance(spec, dspy.BaseLM):
        return spec
    if not isinstance(spec, Mapping) or not isinstance(spec.get("model"), str):
        raise TypeError(f"a route is a dspy.BaseLM or a mapping with a 'model' string, not {spec!r}")
    kwargs = {k: v for k, v in spec.items() if k != "params" and v is not None}
    kwargs.update(spec.get("params") or {})
    kwargs.setdefault("num_retries", 0)
    return dspy.LM(**kwargs)


def _lm_from_entry(entry: RouteEntry) -> dspy.BaseLM | None:
    if not entry.model:
        return None
    return build_lm({"model": entry.model, "api_base": entry.api_base, "params": dict(entry.params)})


class _RoutedMixin:
    """Read access to the engine for ``AdaptiveLM`` and ``AdaptiveModule``."""

    router: RouteRunner

    @property
    def program(self) -> str:
        return self.router.program

    @property
    def table(self) -> RoutingTable:
        """The routing table in use now."""
        return self.router.table

    @property
    def breakers(self) -> BreakerBoard:
        return self.router.breakers

    @property
    def stats(self) -> dict[str, int]:
        return self.router.stats

    @property
    def poller(self) -> TablePoller | None:
        return self.router.poller

    def set_table(self, table: RoutingTable | Mapping[str, Any], *, force: bool = False) -> bool:
        """See ``RouteRunner.set_table``."""
        return self.router.set_table(table, force=force)

    def choose(self) -> tuple[str, float, str]:
        """See ``RouteRunner.choose``."""
        return self.router.choose()

    def close(self) -> None:
        """Stop refreshing the table (routing goes on with the last one)."""
        self.router.close()


class AdaptiveLM(_RoutedMixin, dspy.BaseLM):
    """A DSPy LM that routes each call across several LMs by the daemon's routing table.

    ``dspy.configure(lm=AdaptiveLM("qa", {"fast": lm1, "good": {"model": "openai/gpt-4o"}}))``

    Routes are ``dspy.BaseLM``s or ``dspy.LM`` keyword arguments (``build_lm``); routes a
    later table adds are built from its ``model``/``api_base``/``params``. Every other
    keyword is a ``RouteRunner`` option (table, client, url, refresh, max_attempts,
    backoff, breaker, rng/sleep/clock injection).

    Raises:
        ValueError: No routes or a bad option or table. TypeError: A bad route definition.
    """

    def __init__(self, program: str, routes: Mapping[str, RouteSpec], **options: Any) -> None:
        super().__init__(model=f"adaptd/{program}", cache=False, num_retries=0)
        self.routes: dict[str, dspy.BaseLM] = {name: build_lm(spec) for name, spec in routes.items()}
        self.router = RouteRunner(program, self.routes, build=_lm_from_entry, **options)

    def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        """Route one LM call; returns the chosen route LM's result (see ``RouteRunner.run``).

        This LM's own ``kwargs`` (e.g. set by ``copy(temperature=...)``) apply to every
        route, under the call's keyword arguments.
        """
        kwargs = self._with_defaults(kwargs)

        def call(name: str) -> Any:
            lm = self.routes[name]
            n0 = len(lm.history)
            with self._as_adapter_call(lm, messages):
                out = lm(*_route_args(lm, prompt), messages=messages, **kwargs)
            self._mirror_history(lm, n0)
            return out

        return self.router.run(call)

    async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        """Async ``__call__``: the same routing, awaiting the route's ``acall``."""
        kwargs = self._with_defaults(kwargs)

        async def call(name: str) -> Any:
            lm = self.routes[name]
            n0 = len(lm.history)
            with self._as_adapter_call(lm, messages):
                out = await lm.acall(*_route_args(lm, prompt), messages=messages, **kwargs)
            self._mirror_history(lm, n0)
            return out

        return await self.router.arun(call)

    def _with_defaults(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        defaults = {k: v for k, v in self.kwargs.items() if v is not None}
        return {**defaults, **kwargs} if defaults else kwargs

    def _as_adapter_call(self, lm: Any, messages: Any) -> Any:
        """Pass a DSPy adapter's "this messages= call is mine" mark on to the route LM.

        DSPy 3.4 warns about ``messages=`` unless an adapter made the call; the adapter
        marked *this* LM, so without handing the mark on every routed call would warn.
        """
        if messages is None or _adapter_call is None:
            return nullcontext()
        origin = _adapter_call.get()
        if origin is not None and origin[0] is self and origin[1] is messages:
            return _adapter_message_call(lm, messages)
        return nullcontext()

    def _mirror_history(self, lm: Any, n0: int) -> None:
        # The route recorded the call; mirror its entry so inspect_history() works here too.
        history = lm.history
        if len(history) > n0 and not dspy.settings.disable_history:
            self.history.append(history[-1])
            if len(self.history) > max(dspy.settings.max_history_size, 1):
                del self.history[0]

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        """Not used: ``__call__``/``acall`` delegate to the routes' own calls."""
        raise NotImplementedError("AdaptiveLM routes whole calls; call it, do not forward()")

    def __deepcopy__(self, memo: dict[int, Any]) -> AdaptiveLM:
        # Shared runtime state, like a provider client (see RouteRunner.__deepcopy__).
        return self

    @property
    def supports_function_calling(self) -> bool:
        return all(getattr(lm, "supports_function_calling", False) for lm in self.routes.values())

    @property
    def supports_reasoning(self) -> bool:
        return all(getattr(lm, "supports_reasoning", False) for lm in self.routes.values())

    @property
    def supports_response_schema(self) -> bool:
        return all(getattr(lm, "supports_response_schema", False) for lm in self.routes.values())


class AdaptiveModule(_RoutedMixin, dspy.Module):
    """A DSPy module that routes each call across program variants (e.g. Predict vs
    ChainOfThought, or an optimized version) by the routing table, like ``AdaptiveLM``.

    ``AdaptiveModule("qa", {"predict": dspy.Predict(sig), "cot": dspy.ChainOfThought(sig)})``

    Variants are sub-modules (optimizers see their predictors); a deep copy copies the
    variants and shares the router. Routes a table names without a variant get weight 0.
    Keyword options are ``RouteRunner``'s.

    Raises:
        ValueError: No variants or a bad option or table. TypeError: A variant that is
            not a ``dspy.Module``.
    """

    def __init__(self, program: str, variants: Mapping[str, dspy.Module], **options: Any) -> None:
        super().__init__()
        for name, m in variants.items():
            if not isinstance(m, dspy.Module):
                raise TypeError(f"variant {name!r} is not a dspy.Module: {m!r}")
        self.variants: dict[str, dspy.Module] = dict(variants)
        self.router = RouteRunner(program, dict(self.variants), **options)

    def forward(self, **kwargs: Any) -> Any:
        """Run the chosen variant on ``kwargs``; fails over as ``RouteRunner.run``."""
        return self.router.run(lambda name: self.variants[name](**kwargs))

    async def aforward(self, **kwargs: Any) -> Any:
        """Async ``forward`` through the variants' ``acall``."""
        return await self.router.arun(lambda name: self.variants[name].acall(**kwargs))


def _route_args(lm: Any, prompt: Any) -> tuple[Any, ...]:
    """``prompt`` for the route: an lm15 ``Request`` is re-addressed to its model."""
    if prompt is None:
        return ()
    model = getattr(prompt, "model", None)
    # A dataclass instance (is_dataclass is also true of a dataclass class, which replace refuses).
    if model is not None and dataclasses.is_dataclass(prompt) and not isinstance(prompt, type) and model != lm.model:
        return (dataclasses.replace(prompt, model=lm.model),)
    return (prompt,)
