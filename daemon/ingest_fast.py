"""The ingest fast path: a whole batch validated in one pydantic-core call, straight into
the dicts the log stores (pure, no I/O).

The full path (``ingest._validate_full``) checks each item in Python (nesting depth,
derived kinds, reserved sources, unknown fields to fold into ``attrs``), validates, then
merges the kind's defaults into every event before it is serialized.  Here:

- ``fast_validator`` validates the batch in one call; fields come out in the order of
  the stored record (the kind's defaults first, in the order of ``DEFAULTS[kind]``, then
  the other fields in model order) with the defaults filled in, so ``orjson.dumps(event)``
  gives the very bytes of ``orjson.dumps({**DEFAULTS[kind], **event})`` on the full
  path's output.  Only the kinds a client may send are choices; ``tenant`` accepts
  anything (the caller overwrites it with the credential's tenant);
- ``fast_refusals`` then finds, in one comprehension, the items the validator let
  through that the full path must see: unknown fields, a reserved source.

Nesting depth is left to the caller, which bounds it for free from the serialized record
(a record with at most ``max_depth`` brackets cannot nest deeper) and walks the item only
past that bound.

The promise is one-sided: every item accepted here, the full path accepts too and turns
into an equal dict (tests compare the records on a mixed corpus).  An item refused here
is not necessarily invalid: it goes through the full path, which names its reason or
accepts it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic_core import SchemaValidator
from pydantic_core import core_schema as cs

from adaptd.streams.events import DEFAULTS, KNOWN_FIELDS, wire_list_adapter


def _choices() -> dict[str, Any]:
    """The wire schema's typed dict per kind (empty when its shape is not the expected one)."""
    base = wire_list_adapter.core_schema
    if base.get("type") != "list" or base["items_schema"].get("type") != "tagged-union":
        return {}
    return base["items_schema"]["choices"]


@functools.lru_cache(maxsize=4)
def fast_validator(excluded_kinds: frozenset[str]) -> SchemaValidator | None:
    """The fast validator of a list of events, the kinds in ``excluded_kinds`` refused;
    None when the event schema does not have the expected shape (full path only).

    Its output, per item: a dict with the fields in stored order and the defaults filled
    in; ``tenant`` is whatever the payload said ("" when absent), to be overwritten.
    Unknown fields are dropped: ``fast_refusals`` sends those items to the full path.
    """
    choices: dict[str, cs.CoreSchema] = {}
    for kind, typed in _choices().items():
        if kind in excluded_kinds:
            continue
        defaults = DEFAULTS[kind]
        fields = typed["fields"]
        ordered: dict[str, cs.TypedDictField] = {}
        for name in [*defaults, *(n for n in fields if n not in defaults)]:
            field = fields[name]
            schema = cs.any_schema() if name == "tenant" else field["schema"]
            required = field["required"]
            if name in defaults and name != "kind":  # kind stays required: it is the discriminator
                schema = _with_default(schema, "" if name == "tenant" else defaults[name])
                required = False
            ordered[name] = cs.typed_dict_field(schema, required=required)
        # "ignore" is cheaper than "forbid"; fast_refusals finds the unknown fields
        choices[kind] = cs.typed_dict_schema(ordered, extra_behavior="ignore", total=False)
    if not choices:
        return None
    return SchemaValidator(cs.list_schema(cs.tagged_union_schema(choices, discriminator="kind")))


def _with_default(schema: cs.CoreSchema, value: Any) -> cs.CoreSchema:
    """``schema`` defaulting to ``value``; a fresh empty container per event comes from
    its type, which costs far less than the deep copy pydantic-core makes of a mutable
    default (~1.5 us an event for an empty ``attrs``)."""
    if isinstance(value, (dict, list)):
        factory = type(value) if not value else functools.partial(copy.deepcopy, value)
        return cs.with_default_schema(schema, default_factory=factory)
    return cs.with_default_schema(schema, default=value)


def fast_refusals(items: list[dict[str, Any]], events: list[dict[str, Any]], *, reserved_prefix: str) -> list[int]:
    """The indexes of the ``events`` (``fast_validator``'s output for ``items``) that must
    go through the full path: the item has a field its kind does not know (to be folded
    into ``attrs``), or its ``source`` starts with ``reserved_prefix``.  Empty when all
    are fine, the common case.  (Nesting depth is the caller's to check.)
    """
    known = KNOWN_FIELDS
    return [i for i, (item, event) in enumerate(zip(items, events, strict=True))
            if not known[event["kind"]].issuperset(item) or event["source"].startswith(reserved_prefix)]
