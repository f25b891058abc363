"""``AdaptdCallback``: every DSPy module, LM, tool, evaluate and compile call as events.

Point a DSPy program at adaptd with one line::

    dspy.configure(callbacks=[adapters.AdaptdCallback(program="qa")])

What each call becomes:

- a module, a tool, an ``Evaluate`` or a ``compile`` call: one ``execution`` event, in the
  call tree DSPy keeps in ``ACTIVE_CALL_ID`` (``parent_id``, ``root_id``), with its
  program, module path, class, signature, latency, status, exception and the tokens and
  cost of every LM call beneath it;
- an LM call: one ``lm_call`` event (``execution_id`` = the module that made it) with
  provider, model, tokens, cost and cache hit, read from the history entry the LM added;
- an adapter's format / parse: folded into its module's ``attrs`` (``adapter``,
  ``adapter_format_ms``, ``adapter_parse_ms``) rather than two more events per predictor;
- an ``Evaluate`` result: one ``feedback`` event per scored example, on the execution
  that produced the prediction.

The host's thread only takes clocks, makes an id and enqueues references; features,
module paths, signatures and prices are computed on the SDK's worker thread
(``adaptd.adapters.dspy_describe``). A failure inside the callback is counted in ``errors`` and
never reaches the program.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import uuid_utils
from dspy.utils.callback import BaseCallback
from dspy.utils.callback_context import ACTIVE_CALL_ID

import adaptd.adapters as _sdk
from adaptd.adapters import dspy_describe as describe
from adaptd.adapters import dspy_dispatch
from adaptd.adapters.client import Client
from adaptd.adapters.encode import DEFER
from adaptd.adapters.route_context import current_root_execution, current_route

#: Longest ``error_message`` recorded.
MAX_ERROR_MESSAGE = 2000
#: Attribute set on a module's output ``Prediction``: the execution that produced it.
EXECUTION_ID_ATTR = "_adaptd_execution_id"

_session: ContextVar[str | None] = ContextVar("adaptd_session", default=None)


@contextlib.contextmanager
def session(session_id: str | None = None) -> Iterator[str]:
    """Group the executions in this block under one session id (a new UUIDv7 if None)."""
    sid = session_id or str(uuid_utils.uuid7())
    token = _session.set(sid)
    try:
        yield sid
    finally:
        _session.reset(token)


def execution_id_of(prediction: Any) -> str | None:
    """The execution id of the outermost module call that returned ``prediction``.

    None for objects the callback did not see (or that cannot carry the attribute).
    """
    eid = getattr(prediction, EXECUTION_ID_ATTR, None)
    return str(eid) if eid is not None else None


class _Call:
    """A call in progress (host thread only)."""

    __slots__ = ("id", "parent", "root", "program", "kind", "instance", "inputs", "t0", "start_ns",
                 "lm", "attrs", "mark", "route", "token")  # fmt: skip

    def __init__(self, kind: str, instance: Any, inputs: Any, parent: _Call | None, program: str) -> None:
        self.id = uuid_utils.uuid7()
        self.kind = kind
        self.instance = instance
        self.inputs = inputs
        self.parent = parent
        self.root: _Call = parent.root if parent is not None else self
        self.program = program
        self.lm: list[tuple[Any, ...]] | None = None
        self.attrs: dict[str, Any] | None = None
        self.mark: Any = None
        self.route: str | None = None
        self.token: Any = None
        self.start_ns = time.time_ns()
        self.t0 = time.perf_counter_ns()


#: Kinds whose children inherit their program; under an evaluate or compile call the
#: outermost module names its own program (what is evaluated or compiled).
_PROGRAM_SCOPES = frozenset({"module", "tool", "lm"})


class AdaptdCallback(BaseCallback):
    """A DSPy callback that sends the calls it sees to adaptd (see the module docstring)."""

    def __init__(
        self,
        program: str | None = None,
        *,
        client: Client | None = None,
        program_version: str | None = None,
        route: str | None = None,
        session_id: str | None = None,
        capture_content: bool = False,
        redact: describe.Redactor | None = None,
        fast_dispatch: bool = True,
    ) -> None:
        """Args:
            program: The program name; default: the class of the outermost module.
            client: Where to send events; default: the SDK's default client.
            program_version: Put on every execution (e.g. an optimized version's name).
            route: Put on every execution and LM call (``AdaptiveLM`` sets it per call).
            session_id: Groups executions (``attrs.session_id``); default: a new UUIDv7
                per callback; ``adaptd.adapters.session()`` overrides it for a block.
            capture_content: Send raw inputs and outputs instead of their features.
            redact: ``redact(field_name, value) -> value`` applied to raw content.
            fast_dispatch: Make DSPy's callback dispatch cheaper for every callback
                (``adaptd.adapters.dspy_dispatch``: the handler choice and each function's
                argspec computed once, call ids without a system call): it saves
                ~240 µs per ``ChainOfThought`` call here. False leaves DSPy untouched.
        """
        self.program = program
        self.client = client
        self.program_version = program_version
        self.route = route
        self.session_id = session_id or str(uuid_utils.uuid7())
        self.capture_content = capture_content
        self.redact = redact
        self._calls: dict[str, _Call] = {}
        if fast_dispatch:
            dspy_dispatch.install()
        #: Callback failures swallowed so far (each logged once by the client).
        self.errors = 0

    # -- bookkeeping -------------------------------------------------------------------

    def _begin(self, call_id: str, kind: str, instance: Any, inputs: Any, program: str | None = None) -> None:
        try:
            parent = self._calls.get(ACTIVE_CALL_ID.get())  # type: ignore[arg-type]
            if program is None:
                if parent is not None and (parent.kind in _PROGRAM_SCOPES or kind in ("lm", "adapter")):
                    program = parent.program
                else:
                    program = self.program or type(instance).__name__
            self._calls[call_id] = _Call(kind, instance, inputs, parent, program)
        except Exception:
            self.errors += 1

    def _end(self, call_id: str) -> tuple[_Call, float] | None:
        call = self._calls.pop(call_id, None)
        if call is None:
            return None
        return call, (time.perf_counter_ns() - call.t0) / 1e6

    def _send(self, kind: str, fields: dict[str, Any]) -> None:
        (self.client or _sdk.get_client()).emit_built(kind, fields)

    def _execution(self, call: _Call, ms: float, outputs: Any, exception: BaseException | None,
                   module: str | None, module_type: str | None, extra_attrs: dict[str, Any] | None = None) -> None:
        # The host only enqueues: the event is built by the completer on the worker.
        details = _ExecutionDetails(self, call, ms, outputs, exception, module, module_type, extra_attrs,
                                    _session.get() or self.session_id)  # fmt: skip
        (self.client or _sdk.get_client()).emit_built("execution", {DEFER: details})

    # -- modules and tools -------------------------------------------------------------

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._begin(call_id, "module", instance, inputs)
        try:
            call = self._calls.get(call_id)
            if call is not None and call.parent is None:  # routed calls inside name this execution
                call.token = current_root_execution.set(str(call.id))
        except Exception:
            self.errors += 1

    def on_module_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            ended = self._end(call_id)
            if ended is None:
                return
            call, ms = ended
            if call.token is not None:
                try:
                    current_root_execution.reset(call.token)
                except ValueError:  # ended in another context than it started: let it lapse
                    pass
            if outputs is not None and exception is None:
                try:  # the outermost module ends last, so its id is the one that stays
                    setattr(outputs, EXECUTION_ID_ATTR, call.id)
                except Exception:
                    pass
            self._execution(call, ms, outputs, exception, None, None)
        except Exception:
            self.errors += 1

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._begin(call_id, "tool", instance, inputs)

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            ended = self._end(call_id)
            if ended is not None:
                call, ms = ended
                name = getattr(call.instance, "name", None) or type(call.instance).__name__
                self._execution(call, ms, outputs, exception, str(name), "tool")
        except Exception:
            self.errors += 1

    # -- adapters: folded into the module that formats / parses -----------------------

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._begin(call_id, "adapter", instance, None)

    def on_adapter_format_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._adapter_end(call_id, "adapter_format_ms")

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._begin(call_id, "adapter", instance, None)

    def on_adapter_parse_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._adapter_end(call_id, "adapter_parse_ms")

    def _adapter_end(self, call_id: str, key: str) -> None:
        try:
            ended = self._end(call_id)
            if ended is None:
                return
            call, ms = ended
            parent = call.parent
            if parent is None:
                return
            attrs = parent.attrs
            if attrs is None:
                attrs = parent.attrs = {}
            attrs["adapter"] = type(call.instance).__name__
            attrs[key] = attrs.get(key, 0.0) + ms
        except Exception:
            self.errors += 1

    # -- LM calls ------------------------------------------------------------------------

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._begin(call_id, "lm", instance, None)
        try:
            call = self._calls.get(call_id)
            if call is None:
                return
            call.route = current_route.get()  # set by AdaptiveLM around each routed attempt
            history = getattr(instance, "history", None)
            if history:
                call.mark = history[-1]
        except Exception:
            self.errors += 1

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            ended = self._end(call_id)
            if ended is None:
                return
            call, ms = ended
            lm = call.instance
            entry = describe.new_history_entry(getattr(lm, "history", None), call.mark) if exception is None else None
            tokens_in, tokens_out, cost, cache_hit = describe.usage_of(entry)
            model = (entry or {}).get("model") or getattr(lm, "model", None) or type(lm).__name__
            usage = (model, tokens_in, tokens_out, cost, cache_hit)
            ancestor = call.parent
            while ancestor is not None:  # each enclosing execution carries its LM totals
                if ancestor.lm is None:
                    ancestor.lm = [usage]
                else:
                    ancestor.lm.append(usage)
                ancestor = ancestor.parent
            parent = call.parent
            fields: dict[str, Any] = {
                "id": call.id, "ts": call.start_ns, "program": call.program, "model": str(model),
                "status": "ok" if exception is None else "error", "duration_ms": ms,
                "execution_id": parent.id if parent is not None else None,
                "tokens_in": tokens_in, "tokens_out": tokens_out, "cache_hit": cache_hit,
                "attrs": {"session_id": _session.get() or self.session_id},
            }  # fmt: skip
            if exception is not None:
                fields["error_type"] = type(exception).__name__
            route = call.route or self.route
            if route is not None:
                fields["route"] = route
            fields[DEFER] = _LMDetails(usage, entry)
            self._send("lm_call", fields)
        except Exception:
            self.errors += 1

    # -- evaluate and compile ------------------------------------------------------------

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        target = inputs.get("program") if isinstance(inputs, dict) else None
        self._begin(call_id, "evaluate", instance, None,
                    program=self.program or (type(target).__name__ if target is not None else "Evaluate"))

    def on_evaluate_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            ended = self._end(call_id)
            if ended is None:
                return
            call, ms = ended
            metric = getattr(call.instance, "metric", None)
            metric_name = getattr(metric, "__name__", None) or type(metric).__name__
            score = getattr(outputs, "score", None)
            self._execution(call, ms, None, exception, "Evaluate", "evaluate",
                            {"metric": metric_name, "score": score if isinstance(score, (int, float)) else None})
            for _example, prediction, value in getattr(outputs, "results", None) or ():
                eid = getattr(prediction, EXECUTION_ID_ATTR, None)
                number, comment = describe.score_of(value)
                if eid is None or number is None:
                    continue
                self._send("feedback", {
                    "execution_id": eid, "program": call.program, "metric": metric_name, "score": number,
                    "comment": comment, "attrs": {"evaluate_id": call.id, "session_id": _session.get() or self.session_id},
                })  # fmt: skip
        except Exception:
            self.errors += 1

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        student = inputs.get("student") if isinstance(inputs, dict) else None
        self._begin(call_id, "compile", instance, None,
                    program=self.program or (type(student).__name__ if student is not None else "compile"))

    def on_compile_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            ended = self._end(call_id)
            if ended is not None:
                call, ms = ended
                self._execution(call, ms, None, exception, type(call.instance).__name__, "compile")
        except Exception:
            self.errors += 1


class _ExecutionDetails:
    """Builds an execution event on the worker thread (see ``adaptd.adapters.encode.DEFER``)."""

    __slots__ = ("cb", "call", "ms", "outputs", "exception", "module", "module_type", "extra", "session")

    def __init__(self, cb: AdaptdCallback, call: _Call, ms: float, outputs: Any, exception: BaseException | None,
                 module: str | None, module_type: str | None, extra: dict[str, Any] | None, session: str) -> None:
        self.cb, self.call, self.ms, self.outputs, self.exception = cb, call, ms, outputs, exception
        self.module, self.module_type, self.extra, self.session = module, module_type, extra, session

    def __call__(self, fields: dict[str, Any]) -> None:
        call, cb, exception = self.call, self.cb, self.exception
        parent = call.parent
        attrs: dict[str, Any] = {"session_id": self.session}
        if call.attrs:
            attrs.update(call.attrs)
        if self.extra:
            attrs.update(self.extra)
        fields.update(
            id=call.id, ts=call.start_ns, program=call.program, status="ok" if exception is None else "error",
            duration_ms=self.ms, parent_id=parent.id if parent is not None else None, root_id=call.root.id,
            attrs=attrs,
        )  # fmt: skip
        if self.module is None:  # a module: its path in the program, class and signature
            fields["module"] = describe.module_path(_outermost_module(call), call.instance)
            fields["module_type"] = type(call.instance).__name__
            signature = describe.signature_of(call.instance)
            if signature:
                attrs["signature"] = signature
        else:
            fields["module"] = self.module
            fields["module_type"] = self.module_type
        if cb.program_version is not None:
            fields["program_version"] = cb.program_version
        if cb.route is not None:
            fields["route"] = cb.route
        if exception is not None:
            fields["error_type"] = type(exception).__name__
            fields["error_message"] = str(exception)[:MAX_ERROR_MESSAGE]
        lm = call.lm
        if lm:
            fields["model"] = str(lm[-1][0])
            fields["tokens_in"] = sum(c[1] or 0 for c in lm)
            fields["tokens_out"] = sum(c[2] or 0 for c in lm)
            cost = describe.sum_costs(lm)
            if cost is not None:
                fields["cost_usd"] = cost
        inputs = describe.call_arguments(call.inputs)
        if inputs:
            fields["inputs"] = describe.describe_values(inputs, cb.capture_content, cb.redact)
        outputs = describe.prediction_fields(self.outputs)
        if outputs:
            fields["outputs"] = describe.describe_values(outputs, cb.capture_content, cb.redact)


def _outermost_module(call: _Call) -> Any:
    """The outermost module call above ``call`` (below any evaluate / compile call)."""
    top = call
    node = call.parent
    while node is not None and node.kind == "module":
        top = node
        node = node.parent
    return top.instance


class _LMDetails:
    """Completes an ``lm_call`` event on the worker thread: provider, cost, response model."""

    __slots__ = ("usage", "entry")

    def __init__(self, usage: tuple[Any, ...], entry: Any) -> None:
        self.usage, self.entry = usage, entry

    def __call__(self, fields: dict[str, Any]) -> None:
        model, tokens_in, tokens_out, cost, cache_hit = self.usage
        provider = describe.provider_of(model)
        if provider:
            fields["provider"] = provider
        if cache_hit:
            fields["cost_usd"] = 0.0
            if cost is not None:
                fields["attrs"]["cached_cost_usd"] = float(cost)
        else:
            computed = describe.call_cost(model, tokens_in, tokens_out, cost)
            if computed is not None:
                fields["cost_usd"] = computed
                fields["attrs"]["cost_source"] = "provider" if cost is not None else "litellm_price_map"
        entry = self.entry
        if entry:
            response_model = entry.get("response_model")
            if response_model:
                fields["attrs"]["response_model"] = str(response_model)
