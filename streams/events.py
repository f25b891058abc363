"""The event contract: one pydantic v2 discriminated union on ``kind``.

Every event carries the envelope ``id`` (client-made UUIDv7, the idempotency key),
``ts`` (event time, UTC), ``v`` (schema version), ``tenant`` (set by the daemon from the
credential, never trusted from the payload), ``source`` and ``attrs``.  Fields a sender
adds that this version does not know are moved into ``attrs`` rather than dropped, so a
newer client never loses data on an older daemon.

Schema changes are additive only: new optional fields with defaults, new kinds.  A log
written by an older version therefore always validates against a newer one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal, NotRequired, Required, Union, get_args

import uuid_utils
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

SCHEMA_VERSION = 1

#: Limits on a single field, enforced at validation (the daemon answers 422 past them).
MAX_NAME_LEN = 256
MAX_TEXT_LEN = 16_384

Name = Annotated[str, Field(max_length=MAX_NAME_LEN)]
Text = Annotated[str, Field(max_length=MAX_TEXT_LEN)]


def new_id() -> uuid.UUID:
    """Return a fresh UUIDv7 (time-ordered), the id every client should give an event."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def derived_id(namespace: uuid.UUID, *parts: object) -> uuid.UUID:
    """Return the deterministic UUIDv5 of ``parts`` for a derived event.

    The same inputs always give the same id, which is what makes replay reproduce
    derived events exactly.
    """
    return uuid.uuid5(namespace, "\x1f".join(str(p) for p in parts))


def utcnow() -> dt.datetime:
    """Wall-clock now in UTC (only for edges: the SDK and the daemon, never processors)."""
    return dt.datetime.now(dt.UTC)


class EventBase(BaseModel):
    """The envelope every event kind shares."""

    # Validation stays in pydantic-core (no Python validators): it is the ingest hot path.
    # Unknown fields are folded into attrs by fold_unknown() before validation.
    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    #: Event time. A naive timestamp is taken as UTC.
    ts: dt.datetime
    v: int = SCHEMA_VERSION
    tenant: Name = "default"
    source: Name = ""
    attrs: dict[str, Any] = Field(default_factory=dict)


Status = Literal["ok", "error"]


class Execution(EventBase):
    """One run of a program or of a module inside it (a node of the execution tree)."""

    kind: Literal["execution"] = "execution"
    program: Name
    module: Name | None = None
    module_type: Name | None = None
    program_version: Name | None = None
    route: Name | None = None
    model: Name | None = None
    status: Status = "ok"
    error_type: Name | None = None
    error_message: Text | None = None
    duration_ms: float | None = Field(default=None, ge=0)
    parent_id: uuid.UUID | None = None
    root_id: uuid.UUID | None = None
    trace_id: Name | None = None
    span_id: Name | None = None
    tokens_in: int | None = Field(default=None, ge=0)
    tokens_out: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None


class LMCall(EventBase):
    """One call to a language model, child of the execution that made it."""

    kind: Literal["lm_call"] = "lm_call"
    execution_id: uuid.UUID | None = None
    program: Name | None = None
    route: Name | None = None
    model: Name
    provider: Name | None = None
    status: Status = "ok"
    error_type: Name | None = None
    duration_ms: float | None = Field(default=None, ge=0)
    tokens_in: int | None = Field(default=None, ge=0)
    tokens_out: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)
    cache_hit: bool | None = None


class Feedback(EventBase):
    """A quality judgement (metric score, label, comment) on an execution."""

    kind: Literal["feedback"] = "feedback"
    execution_id: uuid.UUID
    program: Name | None = None
    metric: Name | None = None
    score: float | None = None
    label: Name | None = None
    comment: Text | None = None


class RouteDecision(EventBase):
    """A client-side routing choice, with the policy version and the choice's probability."""

    kind: Literal["route_decision"] = "route_decision"
    program: Name
    route: Name
    policy_version: int = Field(ge=0)
    probability: float = Field(ge=0, le=1)
    context: Name | None = None
    execution_id: uuid.UUID | None = None
    reason: Name | None = None


class Signal(EventBase):
    """An anomaly, drift or breaker signal raised by a processor."""

    kind: Literal["signal"] = "signal"
    signal_type: Literal["anomaly", "drift", "breaker"]
    state: Literal["open", "update", "resolved"] = "open"
    program: Name | None = None
    module: Name | None = None
    route: Name | None = None
    model: Name | None = None
    metric: Name | None = None
    score: float | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    incident_id: uuid.UUID | None = None
    explanation: dict[str, Any] = Field(default_factory=dict)


class Adaptation(EventBase):
    """A change the adaptation loop made (routing table version, breaker, canary...)."""

    kind: Literal["adaptation"] = "adaptation"
    action: Name
    program: Name | None = None
    route: Name | None = None
    version: int | None = None
    reason: Text | None = None
    caused_by: list[uuid.UUID] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class OptimizerRun(EventBase):
    """Progress or result of a DSPy optimizer job."""

    kind: Literal["optimizer_run"] = "optimizer_run"
    job_id: Name
    program: Name
    optimizer: Name
    status: Literal["queued", "running", "succeeded", "failed", "interrupted", "budget_exhausted"]
    program_version: Name | None = None
    score_before: float | None = None
    score_after: float | None = None
    cost_usd: float | None = Field(default=None, ge=0)
    lm_calls: int | None = Field(default=None, ge=0)
    details: dict[str, Any] = Field(default_factory=dict)


class PerfWindow(EventBase):
    """Performance of one key over one closed event-time window (derived: history processor).

    The key is ``(tenant, program, module, route, model)``; ``ts`` is ``window_end``.
    Counts cover the key's executions and LM calls; quality is the feedback joined to
    the key's executions, in the window of the feedback's own time.  ``sketch`` is the
    mergeable latency sketch (``alpha``, ``zero`` count, bucket ``index`` / ``count``;
    bucket ``i`` reads ``2 g^i / (g + 1)`` with ``g = (1 + alpha) / (1 - alpha)``).
    """

    kind: Literal["window"] = "window"
    program: Name | None = None
    module: Name | None = None
    route: Name | None = None
    model: Name | None = None
    window_size: Name
    window_start: dt.datetime
    window_end: dt.datetime
    count: int = Field(default=0, ge=0)
    lm_calls: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    errors_by_type: dict[str, int] = Field(default_factory=dict)
    error_rate: float | None = None
    latency_n: int = Field(default=0, ge=0)
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    tokens_in: int = Field(default=0, ge=0)
    tokens_out: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    cache_hits: int = Field(default=0, ge=0)
    cache_known: int = Field(default=0, ge=0)
    cache_hit_rate: float | None = None
    quality_n: int = Field(default=0, ge=0)
    quality_mean: float | None = None
    sketch: dict[str, Any] = Field(default_factory=dict)


#: Any event model (one per kind).
AnyEvent = Execution | LMCall | Feedback | RouteDecision | Signal | Adaptation | OptimizerRun | PerfWindow

EVENT_TYPES: tuple[type[EventBase], ...] = get_args(AnyEvent)

Event = Annotated[AnyEvent, Field(discriminator="kind")]

KINDS: dict[str, type[EventBase]] = {t.model_fields["kind"].default: t for t in EVENT_TYPES}

event_adapter: TypeAdapter[Any] = TypeAdapter(Event)
event_list_adapter: TypeAdapter[list[Any]] = TypeAdapter(list[Event])


def _wire_type(model: type[EventBase]) -> type:
    """A TypedDict with ``model``'s fields and constraints, absent optionals left absent.

    Validating into plain dicts skips building model objects and filling defaults, which
    halves the cost of the ingest hot path; the result is already canonical (UUID and
    datetime objects) and serializes straight to the log.
    """
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = Required[annotation] if info.is_required() or name == "kind" else NotRequired[annotation]
    return TypedDict(f"{model.__name__}Wire", fields, total=False)  # type: ignore[operator]


#: The union of every kind's wire TypedDict.  Built at import from the models, so it has
#: no static spelling: ``Any`` to type checkers.
_WIRE_EVENT: Any = Union[tuple(_wire_type(t) for t in EVENT_TYPES)]  # noqa: UP007

#: Validates a list of event dicts into canonical dicts (see ``_wire_type``).
wire_list_adapter: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(
    list[Annotated[_WIRE_EVENT, Field(discriminator="kind")]]
)

#: Per kind, the defaults that are not None, for filling in what a wire dict left out.
DEFAULTS: dict[str, dict[str, Any]] = {
    kind: {
        name: info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
        if not info.is_required() and info.get_default(call_default_factory=True) is not None
    }
    for kind, model in KINDS.items()
}


class DeadLetter(BaseModel):
    """An input the daemon could not accept, kept in the log with the reason.

    Dead letters are log records (not events of the union): they are projected into the
    ``dead_letters`` table, so a replay rebuilds them too.
    """

    kind: Literal["dead_letter"] = "dead_letter"
    id: uuid.UUID
    ts: dt.datetime
    tenant: str
    source: str = ""
    reason: str
    payload: str


#: The kind of the records the daemon's clock appends while live traffic is quiet (see
#: ``adaptd.streams.processors.ticker``): like dead letters they are log records, not
#: events of the union, so clients cannot send them; they have no table.
TICK_KIND = "tick"


ENVELOPE_FIELDS = frozenset(EventBase.model_fields)
KNOWN_FIELDS: dict[str, frozenset[str]] = {k: frozenset(t.model_fields) for k, t in KINDS.items()}


def fold_unknown(data: dict[str, Any]) -> dict[str, Any]:
    """Move the fields ``data``'s kind does not know into ``data["attrs"]``, in place.

    An unknown or missing kind leaves ``data`` as it is (validation reports it).  A key
    already in ``attrs`` is overwritten by the top-level field of the same name.

    Returns:
        ``data`` itself.
    """
    known = KNOWN_FIELDS.get(data.get("kind"))  # type: ignore[arg-type]
    # issuperset() allocates nothing: the common case (no unknown field) stays cheap.
    if known is None or known.issuperset(data):
        return data
    extra = data.keys() - known
    if extra:
        attrs = data.get("attrs")
        attrs = dict(attrs) if isinstance(attrs, dict) else {}
        for key in extra:
            attrs[key] = data.pop(key)
        data["attrs"] = attrs
    return data


def parse_event(data: dict[str, Any]) -> EventBase:
    """Validate one event given as a dict (unknown fields are kept in ``attrs``).

    Raises:
        pydantic.ValidationError: with every reason the event is invalid.
    """
    return event_adapter.validate_python(fold_unknown(dict(data)))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the event union, for emitters in other languages."""
    schema = event_adapter.json_schema()
    schema["title"] = f"adaptd event (schema version {SCHEMA_VERSION})"
    return schema
