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

The host's thread only takes clocks, makes an id and enqueues references: each call is
one object (``_Call``, ``_LMCall``) that is queued as it is (``Client.emit_record``) and
builds its own event on the SDK's worker thread: features, module paths, signatures,
usage and prices (``adaptd.adapters.dspy_describe``), and the JSON. When the program makes
more calls per second than ``text_sketches_per_s``, only a sample of them get text
sketches, and their executions carry the rate (``attrs.text_sketch_rate``). A failure
inside the callback is counted in ``errors`` and never reaches the program.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import orjson
import uuid_utils
from dspy.primitives.prediction import Prediction
from dspy.utils.callback import BaseCallback
from dspy.utils.callback_context import ACTIVE_CALL_ID

import adaptd.adapters as _sdk
from adaptd.adapters import dspy_describe as describe
from adaptd.adapters import dspy_dispatch
from adaptd.adapters.client import Client
from adaptd.adapters.encode import iso_ts
from adaptd.adapters.route_context import current_root_execution, current_route

#: Longest ``error_message`` recorded.
MAX_ERROR_MESSAGE = 2000
#: Attribute set on a module's output ``Prediction``: the execution that produced it.
EXECUTION_ID_ATTR = "_adaptd_execution_id"
#: Program calls per second sketched in full by default (``text_sketches_per_s``). Drift
#: detection needs ~2,000 per 5-minute window; real LM programs rarely make more.
DEFAULT_TEXT_SKETCHES_PER_S = 100.0

#: orjson options for raw content (``capture_content``: any keys, numpy values); events
#: of features only have string keys, and orjson is ~30% faster without the options.
_CONTENT_JSON_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
#: Bound of the per-module cache of paths and signatures (a program has a handful).
_MAX_STATIC = 4096

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
    """A module, tool, evaluate or compile call: recorded on the host thread while it runs,
    then queued as it is and turned into its ``execution`` event on the worker
    (``to_json``, an ``adaptd.adapters.encode.Record``).

    One object per call holds everything the event needs, so a queued event keeps few
    objects alive (the garbage collector's cost grows with them). The host thread writes
    the fields up to its ``emit_record``; the worker owns ``lm``, ``sid`` and ``level``.
    """

    __slots__ = ("cb", "id", "sid", "parent", "root", "program", "kind", "instance", "inputs", "t0", "start_ns",
                 "ms", "outputs", "exception", "module", "module_type", "extra", "session", "token",
                 "adapter", "format_ms", "parse_ms", "lm", "level", "sketch", "named")  # fmt: skip

    def __init__(self, cb: AdaptdCallback, kind: str, instance: Any, inputs: Any, parent: Any, program: str) -> None:
        self.cb = cb
        self.id = uuid_utils.uuid7()
        self.sid: str | None = None
        self.kind = kind
        self.instance = instance
        self.inputs = inputs
        self.named = False  # inputs already named (the host unwrapped them)
        self.parent: _Call | None = parent
        # The outermost call, None for itself (not ``self``: a reference cycle would keep
        # every root call alive until the garbage collector finds it).
        self.root: _Call | None = (parent.root or parent) if parent is not None else None
        self.program = program
        self.ms = 0.0
        self.outputs: Any = None
        self.exception: BaseException | None = None
        self.module: str | None = None
        self.module_type: str | None = None
        self.extra: dict[str, Any] | None = None
        self.session: str | None = None
        self.token: Any = None
        self.adapter: str | None = None
        self.format_ms: float | None = None
        self.parse_ms: float | None = None
        self.lm: list[tuple[Any, ...]] | None = None
        self.level: int | None = None
        self.sketch = True
        self.start_ns = time.time_ns()
        self.t0 = time.perf_counter_ns()

    def to_json(self, source: str) -> bytes:
        """The ``execution`` event (worker thread). A describing step that fails (a user
        object's method, say) leaves its fields out and is named in
        ``attrs.adaptd_defer_error``; the event is still sent."""
        fields, attrs = self._common()
        try:
            self._describe(fields, attrs)
        except Exception as exc:
            attrs["adaptd_defer_error"] = type(exc).__name__
        fields["kind"] = "execution"
        fields["source"] = source
        if self.cb.capture_content:
            return orjson.dumps(fields, default=str, option=_CONTENT_JSON_OPTS)
        return orjson.dumps(fields, default=str)

    def _common(self) -> tuple[dict[str, Any], dict[str, Any]]:
        parent, exception = self.parent, self.exception
        attrs: dict[str, Any] = {"session_id": self.session}
        if self.adapter is not None:
            attrs["adapter"] = self.adapter
            if self.format_ms is not None:
                attrs["adapter_format_ms"] = self.format_ms
            if self.parse_ms is not None:
                attrs["adapter_parse_ms"] = self.parse_ms
        if self.extra:
            attrs.update(self.extra)
        fields: dict[str, Any] = {
            "id": _sid(self), "ts": iso_ts(self.start_ns), "program": self.program,
            "status": "ok" if exception is None else "error", "duration_ms": self.ms,
            "parent_id": _sid(parent) if parent is not None else None, "root_id": _sid(self.root or self), "attrs": attrs,
        }  # fmt: skip
        cb = self.cb
        if cb.program_version is not None:
            fields["program_version"] = cb.program_version
        if cb.route is not None:
            fields["route"] = cb.route
        if exception is not None:
            fields["error_type"] = type(exception).__name__
            fields["error_message"] = str(exception)[:MAX_ERROR_MESSAGE]
        lm = self.lm
        if lm:
            fields["model"] = str(lm[-1][0])
            tokens_in = tokens_out = 0
            for c in lm:
                tokens_in += c[1] or 0
                tokens_out += c[2] or 0
            fields["tokens_in"] = tokens_in
            fields["tokens_out"] = tokens_out
            cost = describe.sum_costs(lm)
            if cost is not None:
                fields["cost_usd"] = cost
        return fields, attrs

    def _describe(self, fields: dict[str, Any], attrs: dict[str, Any]) -> None:
        cb, instance = self.cb, self.instance
        if self.module is None:  # a module: its path in the program, class and signature
            module, module_type, signature = cb._static_of(_outermost(self).instance, instance)
            fields["module"] = module
            fields["module_type"] = module_type
            if signature:
                attrs["signature"] = signature
        else:
            fields["module"] = self.module
            fields["module_type"] = self.module_type
        inputs = self.inputs if self.named else describe.call_arguments(self.inputs)
        outputs = self.outputs
        if inputs is None and outputs is None:
            return
        if cb.capture_content:
            outputs = describe.prediction_fields(outputs)
            if inputs:
                fields["inputs"] = describe.describe_values(inputs, True, cb.redact)
            if outputs:
                fields["outputs"] = describe.describe_values(outputs, True, cb.redact)
            return
        tree = _outermost(self)
        level = tree.level
        if level is None:  # the first of the tree's events to be described decides for all
            level = tree.level = cb._sampler.level(tree.start_ns)
            tree.sketch = describe.sketched(_sid(tree), level)
        text_sketch = tree.sketch
        if level:
            attrs["text_sketch_rate"] = 1.0 / (1 << level)
        if inputs:
            fields["inputs"] = describe.feature_fragments(inputs, text_sketch)
        if outputs is not None:
            described = cb._outputs_of(outputs, text_sketch)
            if described:
                fields["outputs"] = described


class _LMCall:
    """An LM call: recorded on the host thread, turned into its ``lm_call`` event on the
    worker (``to_json``), which also adds its usage to every enclosing execution."""

    __slots__ = ("cb", "id", "parent", "program", "instance", "t0", "start_ns", "ms", "mark", "entry", "route",
                 "exception", "session")  # fmt: skip

    def __init__(self, cb: AdaptdCallback, instance: Any, parent: _Call | None, program: str) -> None:
        self.cb = cb
        self.id = uuid_utils.uuid7()
        self.instance = instance
        self.parent = parent
        self.program = program
        self.ms = 0.0
        self.mark: Any = None
        self.entry: Any = None
        self.route: str | None = None
        self.exception: BaseException | None = None
        self.session: str | None = None
        self.start_ns = time.time_ns()
        self.t0 = time.perf_counter_ns()

    def to_json(self, source: str) -> bytes:
        """The ``lm_call`` event (worker thread): provider, tokens, cost, response model."""
        lm, exception = self.instance, self.exception
        entry = self.entry if isinstance(self.entry, Mapping) else None
        tokens_in, tokens_out, cost, cache_hit = describe.usage_of(entry)
        model = (entry or {}).get("model") or getattr(lm, "model", None) or type(lm).__name__
        usage = (model, tokens_in, tokens_out, cost, cache_hit)
        ancestor = self.parent
        while ancestor is not None:  # each enclosing execution carries its LM totals
            if ancestor.lm is None:
                ancestor.lm = [usage]
            else:
                ancestor.lm.append(usage)
            ancestor = ancestor.parent
        parent = self.parent
        attrs: dict[str, Any] = {"session_id": self.session}
        fields: dict[str, Any] = {
            "id": str(self.id), "ts": iso_ts(self.start_ns), "program": self.program, "model": str(model),
            "status": "ok" if exception is None else "error", "duration_ms": self.ms,
            "execution_id": _sid(parent) if parent is not None else None,
            "tokens_in": tokens_in, "tokens_out": tokens_out, "cache_hit": cache_hit, "attrs": attrs,
        }  # fmt: skip
        if exception is not None:
            fields["error_type"] = type(exception).__name__
        route = self.route or self.cb.route
        if route is not None:
            fields["route"] = route
        provider = describe.provider_of(model)
        if provider:
            fields["provider"] = provider
        if cache_hit:
            fields["cost_usd"] = 0.0
            if cost is not None:
                attrs["cached_cost_usd"] = float(cost)
        else:
            computed = describe.call_cost(model, tokens_in, tokens_out, cost)
            if computed is not None:
                fields["cost_usd"] = computed
                attrs["cost_source"] = "provider" if cost is not None else "litellm_price_map"
        if entry:
            response_model = entry.get("response_model")
            if response_model:
                attrs["response_model"] = str(response_model)
        fields["kind"] = "lm_call"
        fields["source"] = source
        return orjson.dumps(fields, default=str)


def _sid(call: _Call) -> str:
    """``str(call.id)``, computed once (worker thread, or the host for a root module)."""
    sid = call.sid
    if sid is None:
        sid = call.sid = str(call.id)
    return sid


def _outermost(call: _Call) -> _Call:
    """The outermost module call above ``call`` (below any evaluate / compile call)."""
    top = call
    node = call.parent
    while node is not None and node.kind == "module":
        top = node
        node = node.parent
    return top


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
        text_sketches_per_s: float | None = DEFAULT_TEXT_SKETCHES_PER_S,
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
            text_sketches_per_s: Program calls per second whose texts get a text sketch
                (``hv``); beyond it a deterministic ``1 / 2**k`` sample of them does,
                and their executions carry ``attrs.text_sketch_rate``
                (``adaptd.adapters.dspy_describe.TextSketchSampler``). None: every call.
        """
        self.program = program
        self.client = client
        self.program_version = program_version
        self.route = route
        self.session_id = session_id or str(uuid_utils.uuid7())
        self.capture_content = capture_content
        self.redact = redact
        self._calls: dict[str, Any] = {}  # call id -> _Call, _LMCall or an adapter's (parent, instance, t0)
        # Worker thread only: the text sketch sampler and caches of what events share.
        self._sampler = describe.TextSketchSampler(text_sketches_per_s)
        self._static: dict[int, tuple[Any, Any, Any, tuple[str, str, str | None]]] = {}
        self._last_outputs: tuple[Any, bool, dict[str, Any]] | None = None
        if fast_dispatch:
            dspy_dispatch.install()
        #: Callback failures swallowed so far (each logged once by the client).
        self.errors = 0

    # -- worker thread: what events share ------------------------------------------------

    def _static_of(self, root: Any, instance: Any) -> tuple[str, str, str | None]:
        """``(module path, class name, signature)`` of a module, computed once per
        (instance, outermost module, signature) (optimizers assign predictors new
        signatures); worker thread only."""
        signature = getattr(instance, "signature", None)
        hit = self._static.get(id(instance))
        if hit is not None and hit[0] is instance and hit[1] is root and hit[2] is signature:
            return hit[3]
        static = (describe.module_path(root, instance), type(instance).__name__, describe.signature_of(instance))
        if len(self._static) >= _MAX_STATIC:
            self._static.clear()
        self._static[id(instance)] = (instance, root, signature, static)
        return static

    def _outputs_of(self, outputs: Any, text_sketch: bool) -> dict[str, Any]:
        """The described fields of a module's output. A Predict's Prediction is also
        returned by the modules around it: described once for the run of events that
        carry it (a one-entry cache; worker thread only)."""
        last = self._last_outputs
        if last is not None and last[0] is outputs and last[1] is text_sketch:
            return last[2]
        if type(outputs) is Prediction and all(type(v) is str for v in outputs._store.values()):
            values: Any = outputs._store  # what toDict() gives for strings, without the copy
        else:
            values = describe.prediction_fields(outputs)
        described = describe.feature_fragments(values, text_sketch)
        self._last_outputs = (outputs, text_sketch, described)
        return described

    # -- bookkeeping (host thread: clocks, ids and references only) ----------------------

    def _active(self) -> _Call | None:
        """The innermost call in progress that makes an execution (DSPy's ``ACTIVE_CALL_ID``,
        through any adapter or LM call in between)."""
        node = self._calls.get(ACTIVE_CALL_ID.get())  # type: ignore[arg-type]
        while node is not None and type(node) is not _Call:
            node = node[0] if type(node) is tuple else node.parent
        return node

    def _begin(self, call_id: str, kind: str, instance: Any, inputs: Any, program: str | None = None) -> _Call | None:
        try:
            parent = self._active()
            if program is None:
                if parent is not None and parent.kind in _PROGRAM_SCOPES:
                    program = parent.program
                else:
                    program = self.program or type(instance).__name__
            call = self._calls[call_id] = _Call(self, kind, instance, inputs, parent, program)
            return call
        except Exception:
            self.errors += 1
            return None

    def _end(self, call_id: str, outputs: Any, exception: BaseException | None) -> _Call | None:
        """The call ``call_id`` with its duration, outputs, exception and session set."""
        call = self._calls.pop(call_id, None)
        if type(call) is not _Call:
            return None
        call.ms = (time.perf_counter_ns() - call.t0) / 1e6
        call.outputs = outputs
        call.exception = exception
        call.session = _session.get() or self.session_id
        return call

    def _send(self, call: _Call | _LMCall) -> None:
        (self.client or _sdk.get_client()).emit_record(call)

    # -- modules and tools -------------------------------------------------------------

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        call = self._begin(call_id, "module", instance, inputs)
        if call is None:
            return
        try:
            # ``Module.__call__(**kwargs)`` arrives as {"args": (), "kwargs": {...}}: keep only
            # the keyword arguments, a dict the garbage collector does not track while it
            # holds strings (one tracked object fewer alive until the worker describes it).
            if type(inputs) is dict and len(inputs) == 2:
                kwargs = inputs.get("kwargs")
                if type(kwargs) is dict and inputs.get("args") == ():
                    call.inputs = kwargs
                    call.named = True
            if call.parent is None:  # routed calls inside name this execution
                call.sid = sid = str(call.id)
                call.token = current_root_execution.set(sid)
        except Exception:
            self.errors += 1

    def on_module_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            call = self._end(call_id, outputs, exception)
            if call is None:
                return
            token = call.token
            if token is not None:
                call.token = None
                try:
                    current_root_execution.reset(token)
                except ValueError:  # ended in another context than it started: let it lapse
                    pass
            if outputs is not None and exception is None:
                try:  # the outermost module ends last, so its id is the one that stays
                    if type(outputs) is Prediction:  # its __setattr__ does this, slowly
                        object.__setattr__(outputs, EXECUTION_ID_ATTR, call.id)
                    else:
                        setattr(outputs, EXECUTION_ID_ATTR, call.id)
                except Exception:
                    pass
            self._send(call)
        except Exception:
            self.errors += 1

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._begin(call_id, "tool", instance, inputs)

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            call = self._end(call_id, outputs, exception)
            if call is not None:
                call.module = str(getattr(call.instance, "name", None) or type(call.instance).__name__)
                call.module_type = "tool"
                self._send(call)
        except Exception:
            self.errors += 1

    # -- adapters: folded into the module that formats / parses -----------------------

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._adapter_start(call_id, instance)

    def on_adapter_format_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._adapter_end(call_id, True)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._adapter_start(call_id, instance)

    def on_adapter_parse_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._adapter_end(call_id, False)

    def _adapter_start(self, call_id: str, instance: Any) -> None:
        try:
            self._calls[call_id] = (self._active(), instance, time.perf_counter_ns())
        except Exception:
            self.errors += 1

    def _adapter_end(self, call_id: str, formatting: bool) -> None:
        try:
            entry = self._calls.pop(call_id, None)
            if type(entry) is not tuple:
                return
            parent, instance, t0 = entry
            if parent is None:
                return
            ms = (time.perf_counter_ns() - t0) / 1e6
            parent.adapter = type(instance).__name__
            if formatting:
                parent.format_ms = (parent.format_ms or 0.0) + ms
            else:
                parent.parse_ms = (parent.parse_ms or 0.0) + ms
        except Exception:
            self.errors += 1

    # -- LM calls ------------------------------------------------------------------------

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        try:
            parent = self._active()
            program = parent.program if parent is not None else (self.program or type(instance).__name__)
            call = _LMCall(self, instance, parent, program)
            call.route = current_route.get()  # set by AdaptiveLM around each routed attempt
            history = getattr(instance, "history", None)
            if history:
                call.mark = history[-1]
            self._calls[call_id] = call
        except Exception:
            self.errors += 1

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            call = self._calls.pop(call_id, None)
            if type(call) is not _LMCall:
                return
            call.ms = (time.perf_counter_ns() - call.t0) / 1e6
            if exception is None:  # the entry the LM added (usage, cost) is read on the worker
                history = getattr(call.instance, "history", None)
                if history:
                    last = history[-1]
                    if last is not call.mark:
                        call.entry = last
            else:
                call.exception = exception
            call.mark = None
            call.session = _session.get() or self.session_id
            self._send(call)
        except Exception:
            self.errors += 1

    # -- evaluate and compile ------------------------------------------------------------

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        target = inputs.get("program") if isinstance(inputs, dict) else None
        self._begin(call_id, "evaluate", instance, None,
                    program=self.program or (type(target).__name__ if target is not None else "Evaluate"))

    def on_evaluate_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            call = self._end(call_id, None, exception)
            if call is None:
                return
            metric = getattr(call.instance, "metric", None)
            metric_name = getattr(metric, "__name__", None) or type(metric).__name__
            score = getattr(outputs, "score", None)
            call.module, call.module_type = "Evaluate", "evaluate"
            call.extra = {"metric": metric_name, "score": score if isinstance(score, (int, float)) else None}
            self._send(call)
            client = self.client or _sdk.get_client()
            for _example, prediction, value in getattr(outputs, "results", None) or ():
                eid = getattr(prediction, EXECUTION_ID_ATTR, None)
                number, comment = describe.score_of(value)
                if eid is None or number is None:
                    continue
                client.emit_built("feedback", {
                    "execution_id": eid, "program": call.program, "metric": metric_name, "score": number,
                    "comment": comment, "attrs": {"evaluate_id": call.id, "session_id": call.session},
                })  # fmt: skip
        except Exception:
            self.errors += 1

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        student = inputs.get("student") if isinstance(inputs, dict) else None
        self._begin(call_id, "compile", instance, None,
                    program=self.program or (type(student).__name__ if student is not None else "compile"))

    def on_compile_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        try:
            call = self._end(call_id, None, exception)
            if call is not None:
                call.module, call.module_type = type(call.instance).__name__, "compile"
                self._send(call)
        except Exception:
            self.errors += 1
