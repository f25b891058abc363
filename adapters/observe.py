"""``observe``: one ``execution`` event per call of a function or per ``with`` block.

Nested observations form a tree through a context variable (``parent_id``, ``root_id``),
which follows threads' and asyncio tasks' contexts the way DSPy's ``ACTIVE_CALL_ID`` does.
By default inputs and outputs are recorded as features (type, size, sketch; see
``adaptd.adapters.features``), never as raw values; ``capture_content=True`` opts in to raw values.

Everything except the observed code itself is wrapped: a failure of the SDK is swallowed,
and an exception of the observed code is re-raised unchanged.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, Literal, TypeVar

import uuid_utils

import adaptd.adapters as _sdk  # the package (for get_client) is initialised by the time we call it
from adaptd.adapters.client import Client
from adaptd.adapters.dspy_describe import prediction_fields
from adaptd.adapters.features import describe_args, features

F = TypeVar("F", bound=Callable[..., Any])

#: Longest ``error_message`` recorded, well under the event schema's text limit.
MAX_ERROR_MESSAGE = 2000
#: Fields of the tree an ``Observation.set()`` cannot overwrite.
_TREE_FIELDS = frozenset({"id", "parent_id", "root_id"})

_current: ContextVar[Observation | None] = ContextVar("adaptd_observation", default=None)


def current_observation() -> Observation | None:
    """The innermost active observation in this context, or None outside any."""
    return _current.get()


class Observation:
    """One observed call in progress; what ``with observe(...) as obs`` gives you.

    Attributes:
        id: The execution event's id (use it as ``execution_id`` of feedback events).
        parent_id: The enclosing observation's id, None at the root.
        root_id: The root observation's id (its own id at the root).
        program: The program name the event will carry.
    """

    __slots__ = ("id", "parent_id", "root_id", "program", "fields", "capture_content",
                 "_owner", "_parent", "_start_ns", "_t0", "_token")  # fmt: skip

    def __init__(self, owner: Observer, program: str, parent: Observation | None) -> None:
        self.id = str(uuid_utils.uuid7())
        self.parent_id: str | None = parent.id if parent else None
        self.root_id: str = parent.root_id if parent else self.id
        self.program = program
        self.fields: dict[str, Any] = {}
        self.capture_content = owner.capture_content
        self._owner = owner
        self._parent = parent
        self._token: Token[Observation | None] | None = None
        self._start_ns = time.time_ns()
        self._t0 = time.perf_counter_ns()

    def set(self, **fields: Any) -> None:
        """Add or override fields of the event (``route``, ``model``, ``tokens_in``...).

        ``id``, ``parent_id`` and ``root_id`` are ignored: they hold the tree together.
        """
        for key, value in fields.items():
            if key not in _TREE_FIELDS:
                self.fields[key] = value

    def record_inputs(self, **values: Any) -> None:
        """Record named inputs: as features, or raw with ``capture_content=True``."""
        self.fields["inputs"] = {"args": self._describe(values)}

    def record_output(self, value: Any) -> None:
        """Record the output: as features, or raw with ``capture_content=True``.

        Named as the DSPy callback names a module's output, so drift sees the same
        fields whatever the entry point: a record (a DSPy ``Prediction``, a mapping) by its
        fields (``{"answer": ...}``), anything else as ``{"return": ...}``.
        """
        fields = prediction_fields(value)
        self.fields["outputs"] = self._describe(dict(fields) if fields is not None else {"return": value})

    def _describe(self, values: dict[str, Any]) -> dict[str, Any]:
        if self.capture_content:
            return dict(values)
        return {str(name): features(v) for name, v in values.items()}


class Observer:
    """Decorator and (async) context manager made by ``observe()``."""

    def __init__(
        self,
        program: str | None = None,
        module: str | None = None,
        route: str | None = None,
        *,
        capture_content: bool = False,
        client: Client | None = None,
        program_version: str | None = None,
        **fields: Any,
    ) -> None:
        self.program = program
        self.capture_content = capture_content
        self.client = client
        given = dict(fields, module=module, route=route, program_version=program_version)
        self.fields = {k: v for k, v in given.items() if v is not None}

    # -- start / finish (never raise) ----------------------------------------------------

    def _start(self, default_name: str | None) -> Observation | None:
        try:
            parent = _current.get()
            inherited = parent.program if parent else None
            program = self.program or inherited or default_name or "default"
            obs = Observation(self, program, parent)
            obs.fields.update(self.fields)
            if not self.program and parent and default_name and "module" not in obs.fields:
                obs.fields["module"] = default_name  # an inner function of the parent's program
            obs._token = _current.set(obs)
            return obs
        except Exception:
            return None

    def _finish(self, obs: Observation | None, exc: BaseException | None) -> None:
        if obs is None:
            return
        try:
            duration_ms = (time.perf_counter_ns() - obs._t0) / 1e6
            try:
                if obs._token is not None:
                    _current.reset(obs._token)
            except ValueError:  # exited in another context than entered: restore by hand
                _current.set(obs._parent)
            event: dict[str, Any] = {"program": obs.program, "ts": obs._start_ns, "status": "ok"}
            event.update(obs.fields)
            event["duration_ms"] = duration_ms
            if exc is not None:  # the exception wins over a status the block set
                event["status"] = "error"
                event["error_type"] = type(exc).__qualname__[:256]
                event["error_message"] = str(exc)[:MAX_ERROR_MESSAGE]
            event["id"], event["root_id"] = obs.id, obs.root_id
            if obs.parent_id is not None:
                event["parent_id"] = obs.parent_id
            (self.client or _sdk.get_client()).emit_dict("execution", event)
        except Exception:
            pass

    # -- decorator -----------------------------------------------------------------------

    def __call__(self, fn: F) -> F:
        """Wrap a sync or async function: one execution event per call.

        Generator functions are timed only until they return their generator.
        """
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
        if name:  # "outer.<locals>.inner" -> "inner"; "Class.method" stays
            name = name.rpartition("<locals>.")[2]
        try:
            params = inspect.signature(fn).parameters.values()
            positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            names = tuple(p.name for p in params if p.kind in positional)
        except (TypeError, ValueError):  # builtins without a signature
            names = ()

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Observation | None:
            obs = self._start(name)
            if obs is not None:
                try:
                    values = describe_args(names, args, kwargs)
                    if names and names[0] in ("self", "cls"):
                        values.pop(names[0], None)
                    obs.fields.setdefault("inputs", {"args": obs._describe(values)})
                except Exception:
                    pass
            return obs

        def done(obs: Observation | None, result: Any) -> None:
            if obs is not None and "outputs" not in obs.fields:
                obs.record_output(result)
            self._finish(obs, None)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                obs = start(args, kwargs)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    self._finish(obs, exc)
                    raise
                done(obs, result)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            obs = start(args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._finish(obs, exc)
                raise
            done(obs, result)
            return result

        return wrapper  # type: ignore[return-value]

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> Observation:
        obs = self._start(None)
        # When the SDK itself failed, hand out a detached observation so obs.set() works.
        return obs if obs is not None else Observation(self, self.program or "default", None)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        # The innermost observation of this context is the one this block entered: blocks
        # nest, so this is right even when one Observer is shared by threads or tasks.
        obs = _current.get()
        self._finish(obs if obs is not None and obs._owner is self else None, exc)
        return False  # never swallow the block's exception

    async def __aenter__(self) -> Observation:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)


def observe(
    program: str | Callable[..., Any] | None = None,
    module: str | None = None,
    route: str | None = None,
    *,
    capture_content: bool = False,
    client: Client | None = None,
    program_version: str | None = None,
    **fields: Any,
) -> Any:
    """Observe a function (decorator) or a block (``with`` / ``async with``).

    Each call or block emits one ``execution`` event when it ends, stamped with its start
    time: ``duration_ms``, ``status`` (``ok``/``error``), ``error_type`` and
    ``error_message`` on an exception (re-raised unchanged), ``parent_id``/``root_id``
    linking nested observations, and ``inputs``/``outputs`` of decorated functions as
    features (``{"args": {"question": {"type": "str", "len": 42, "sketch": "..."}}}``).

    Args:
        program: Program name. When omitted it is inherited from the enclosing
            observation (and the function's name becomes ``module``), else it is the
            function's qualified name. ``@observe`` without parentheses works too.
        module: Module name within the program.
        route: Route (model / strategy) that serves this call, if known up front.
        capture_content: Record raw inputs and outputs instead of features.
        client: Client to emit through; default ``adaptd.adapters.get_client()`` at emit time.
        program_version: Version of the program, if known.
        **fields: Any other field of the event (``model``, ``module_type``...).

    Returns:
        An ``Observer``: decorate with it, or enter it; or, for ``@observe`` without
        parentheses, the wrapped function.
    """
    if callable(program):
        return Observer()(program)
    return Observer(program, module, route, capture_content=capture_content, client=client,
                    program_version=program_version, **fields)  # fmt: skip
