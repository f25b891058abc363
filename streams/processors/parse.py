"""Log records -> ``EventBatch``: one vectorised JSON parse per batch, source kinds only.

Records are the canonical JSON the daemon writes (ingest and processors), so a batch is
parsed in one call of Arrow's JSON reader with a fixed schema of the columns processors
use (other fields are skipped unparsed).  A batch Arrow cannot read (a damaged record,
which the projector dead-letters) is parsed again record by record, skipping the bad
ones: the result is the same either way, so the parse never depends on batch boundaries.

Fields outside that schema that a processor asks for (``columns``, e.g. ``inputs``, a
free-form mapping Arrow cannot type) are read by decoding just the records that hold them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from adaptd.streams.log.base import Record
from adaptd.streams.processors.base import PARSE_CODE, SOURCE_KINDS, Cat, EventBatch

_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("ts", pa.timestamp("us", tz="UTC")),
    ("kind", pa.string()),
    ("tenant", pa.string()),
    ("program", pa.string()),
    ("module", pa.string()),
    ("route", pa.string()),
    ("model", pa.string()),
    ("status", pa.string()),
    ("error_type", pa.string()),
    ("duration_ms", pa.float64()),
    ("tokens_in", pa.float64()),
    ("tokens_out", pa.float64()),
    ("cost_usd", pa.float64()),
    ("cache_hit", pa.bool_()),
    ("execution_id", pa.string()),
    ("score", pa.float64()),
    ("probability", pa.float64()),
])
_PARSE = pj.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore")


@dataclass(slots=True)
class Parsed:
    """A parsed batch of records."""

    batch: EventBatch
    #: Records that are not readable: not a JSON object, or a source kind without a valid
    #: id / ts (the projector dead-letters them too).
    unreadable: int = 0


def parse_records(records: Sequence[Record], kinds: frozenset[str] = frozenset(SOURCE_KINDS),
                  columns: frozenset[str] = frozenset()) -> Parsed:
    """The events of ``kinds`` among ``records``, in log order, as one ``EventBatch``.

    ``columns``: top-level fields to carry in ``EventBatch.extra`` (decoded JSON values,
    None where absent); none by default, which costs nothing.

    Records of other kinds (derived events, dead letters) are skipped without counting.
    ``EventBatch.wm`` is left empty (the runtime sets it).  An empty ``records`` gives an
    empty batch.  Never raises on bad record content.
    """
    if not records:
        return Parsed(EventBatch.from_events([], columns=columns))
    wanted = sorted(k for k in kinds if k in PARSE_CODE)
    blob = b"\n".join(r.value for r in records)
    try:
        table = pj.read_json(io.BytesIO(blob), parse_options=_PARSE,
                             read_options=pj.ReadOptions(use_threads=False, block_size=len(blob) + 1))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _parse_slowly(records, wanted, columns)
    if table.num_rows != len(records):  # a record held a raw newline: not ours, go slowly
        return _parse_slowly(records, wanted, columns)
    keep = pc.fill_null(pc.is_in(table["kind"], value_set=pa.array(wanted, pa.string())), False)
    valid = pc.and_(pc.is_valid(table["id"]), pc.is_valid(table["ts"]))
    bad = int(pc.sum(pc.and_not(keep, valid)).as_py() or 0)
    rows = np.flatnonzero(pc.and_(keep, valid).to_numpy(zero_copy_only=False))
    table = table.take(pa.array(rows, pa.int64()))
    offsets = np.fromiter((records[i].offset for i in rows.tolist()), np.int64, len(rows))
    stamps = np.fromiter((records[i].timestamp_ms for i in rows.tolist()), np.int64, len(rows))
    batch = _from_table(table, offsets, stamps)
    if columns:
        batch.extra = _extra([records[i].value for i in rows.tolist()], columns)
    return Parsed(batch, bad)


def raw_events(records: Sequence[Record], kinds: frozenset[str]) -> list[tuple[int, dict[str, Any]]]:
    """``(offset, event dict)`` of the records of ``kinds`` (derived kinds such as
    ``signal`` and ``adaptation``, which are few), in log order.

    Only records whose text names one of the kinds are decoded; unreadable ones are
    skipped. Empty when ``kinds`` or ``records`` is empty.
    """
    if not kinds:
        return []
    needles = [b'"kind":"' + k.encode() + b'"' for k in sorted(kinds)]
    out: list[tuple[int, dict[str, Any]]] = []
    for record in records:
        value = record.value
        if not any(n in value for n in needles):
            continue
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("kind") in kinds:
            out.append((record.offset, event))
    return out


def _extra(values: list[bytes], columns: frozenset[str]) -> dict[str, list]:
    """Each of ``columns`` from each record (None where absent), decoding only records
    whose text names one of them (a record without the name cannot hold the field)."""
    names = sorted(columns)
    out: dict[str, list] = {name: [None] * len(values) for name in names}
    needles = [f'"{name}"'.encode() for name in names]
    for i, value in enumerate(values):
        for needle in needles:  # a plain loop: any(<generator>) costs more than the test
            if needle in value:
                break
        else:
            continue
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:  # Arrow read it, so this is not expected; skip
            continue
        for name in names:
            out[name][i] = event.get(name)
    return out


def _from_table(table: pa.Table, offsets: np.ndarray, append_ms: np.ndarray) -> EventBatch:
    def cat(name: str) -> Cat:
        encoded = pc.dictionary_encode(table[name].combine_chunks())
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        return Cat(codes, encoded.dictionary.to_pylist())

    def floats(name: str) -> np.ndarray:
        return pc.fill_null(table[name], float("nan")).to_numpy().astype(np.float64, copy=False)

    kinds = cat("kind")
    kind_codes = np.array([PARSE_CODE[k] for k in kinds.values] or [0], np.int8)[kinds.codes]
    tenant = cat("tenant")
    if (tenant.codes < 0).any():  # absent tenant: the model's default
        tenant = Cat.from_list([tenant.get(i) or "default" for i in range(len(tenant.codes))])
    cache = pc.fill_null(pc.cast(table["cache_hit"], pa.int8()), -1).to_numpy().astype(np.int8, copy=False)
    return EventBatch(
        kind=kind_codes,
        id=table["id"].to_pylist(),
        ts=pc.cast(table["ts"], pa.int64()).to_numpy(),
        tenant=tenant,
        program=cat("program"), module=cat("module"), route=cat("route"), model=cat("model"),
        error_type=cat("error_type"),
        status_error=pc.fill_null(pc.equal(table["status"], "error"), False).to_numpy(zero_copy_only=False),
        duration_ms=floats("duration_ms"), tokens_in=floats("tokens_in"), tokens_out=floats("tokens_out"),
        cost_usd=floats("cost_usd"), score=floats("score"), probability=floats("probability"),
        cache_hit=cache,
        execution_id=table["execution_id"].to_pylist(),
        offset=offsets,
        append_ms=append_ms,
    )


def _parse_slowly(records: Sequence[Record], wanted: list[str], columns: frozenset[str] = frozenset()) -> Parsed:
    events, offsets, stamps, bad = [], [], [], 0
    kinds = set(wanted)
    for record in records:
        try:
            event = orjson.loads(record.value)
        except orjson.JSONDecodeError:  # not JSON at all (the projector dead-letters it)
            bad += 1
            continue
        if not isinstance(event, dict):
            bad += 1
            continue
        if event.get("kind") not in kinds:
            continue
        try:
            one = EventBatch.from_events([event], codes=PARSE_CODE)  # validates id / ts / numbers
        except (KeyError, ValueError, TypeError):
            bad += 1
            continue
        if len(one):
            events.append(event)
            offsets.append(record.offset)
            stamps.append(record.timestamp_ms)
    return Parsed(EventBatch.from_events(events, offsets, stamps, columns, PARSE_CODE), bad)
