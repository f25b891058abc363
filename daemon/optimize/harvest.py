"""Training examples: harvested from production executions, or read from JSONL files.

An execution becomes an example when it is a program's root call, its raw inputs and
outputs were captured (``AdaptdCallback(capture_content=True)``) and the mean score of
its feedback is at least the threshold: its outputs are then a label worth copying.
Duplicates are dropped by *input sketch*: per input field the content hash (``sketch``
of ``adaptd.streams.features``, the same the SDK sends when content is not captured) of the
value with whitespace and case normalised; the newest execution of each input wins.

Example files hold one ``{"inputs": {...}, "outputs": {...}}`` object per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptd.streams.features import features

_FEATURE_KEYS = frozenset({"type", "len", "sketch", "hv", "keys"})


class ExampleFileError(ValueError):
    """An example file is missing or malformed; the message names the file and line."""


@dataclass
class Harvest:
    """Harvested examples (newest first) and what was left out."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    not_captured: int = 0


def _is_features(value: Any) -> bool:
    """True when ``value`` is the SDK's features of a value rather than the value."""
    return isinstance(value, Mapping) and "type" in value and "sketch" in value and set(value) <= _FEATURE_KEYS


def input_key(inputs: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The dedupe key of ``inputs``: per field, the sketch of the normalised value."""
    out = []
    for name in sorted(inputs):
        value = inputs[name]
        if isinstance(value, str):
            value = " ".join(value.lower().split())
        out.append((name, str(features(value).get("sketch"))))
    return tuple(out)


def harvest(rows: Iterable[Mapping[str, Any]]) -> Harvest:
    """Examples from execution rows (``id``, ``inputs``, ``outputs``, ``score``), newest first.

    Rows whose inputs or outputs are features (content not captured) or empty are
    skipped and counted; duplicates by ``input_key`` keep the first (newest) row.
    No rows: an empty ``Harvest``.
    """
    out = Harvest()
    seen: set[tuple[tuple[str, str], ...]] = set()
    for row in rows:
        inputs, outputs = row.get("inputs"), row.get("outputs")
        if not isinstance(inputs, Mapping) or not isinstance(outputs, Mapping) or not inputs or not outputs \
                or any(_is_features(v) for v in (*inputs.values(), *outputs.values())):
            out.not_captured += 1
            continue
        key = input_key(inputs)
        if key in seen:
            out.duplicates += 1
            continue
        seen.add(key)
        out.examples.append({"inputs": dict(inputs), "outputs": dict(outputs),
                             "execution_id": str(row.get("id")), "score": row.get("score")})
    return out


def read_examples(path: Path | str) -> list[dict[str, Any]]:
    """The examples of a JSONL file (blank lines skipped).

    Raises:
        ExampleFileError: the file is missing, a line is not JSON, or lacks an
            ``inputs`` / ``outputs`` object.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ExampleFileError(f"cannot read example file {p}: {exc.strerror}") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExampleFileError(f"{p}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("inputs"), dict) \
                or not isinstance(item.get("outputs"), dict) or not item["inputs"]:
            raise ExampleFileError(f'{p}:{n}: each line must be {{"inputs": {{...}}, "outputs": {{...}}}}')
        out.append(item)
    return out


def write_examples(path: Path | str, examples: Sequence[Mapping[str, Any]]) -> int:
    """Write ``examples`` as JSONL (atomically: a temporary file renamed); returns the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w") as fh:
        for ex in examples:
            fh.write(json.dumps(ex, default=str) + "\n")
    tmp.replace(p)
    return len(examples)


def split(examples: Sequence[Mapping[str, Any]], dev_share: float) -> tuple[list, list]:
    """``(train, dev)``: a deterministic split by input sketch (the same example always
    lands on the same side, whatever the order); at least one example on each side when
    there are two or more."""
    def h(ex: Mapping[str, Any]) -> float:
        key = "|".join(s for _, s in input_key(ex["inputs"]))
        return int(key[:8] or "0", 16) / 16**8 if key else 0.0

    train = [e for e in examples if h(e) >= dev_share]
    dev = [e for e in examples if h(e) < dev_share]
    if len(examples) >= 2 and not dev:
        dev.append(train.pop())
    if len(examples) >= 2 and not train:
        train.append(dev.pop())
    return list(train), list(dev)
