"""Features of values: what the SDK records about inputs and outputs by default.

A feature dict describes a value without containing it: its type, its size and a short
*sketch* (an unkeyed 64-bit BLAKE2b fingerprint) that tells equal values apart, so the
daemon can count distinct inputs, spot repeated ones and watch size drift. A sketch is a
fingerprint, not anonymisation: a value from a small domain (a yes/no answer, a number)
can be guessed by hashing candidates. Raw content is opt-in (``capture_content=True``).

These are pure functions: same value, same features, in every process.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from typing import Any

import orjson

#: Keys of a mapping listed in its features (names, truncated), so the list stays small.
MAX_KEYS = 16
MAX_KEY_LEN = 64
#: Containers larger than this get no sketch: serializing them would cost the caller's
#: thread milliseconds on every observed call.
MAX_SKETCH_ITEMS = 10_000

_JSON_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def sketch(data: bytes) -> str:
    """The 16-hex-digit BLAKE2b-64 fingerprint of ``data``."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _type_name(value: object) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _opaque(obj: object) -> str:
    # Never repr(): an object's repr often embeds its memory address, which would make
    # sketches differ between runs for equal values.
    return _type_name(obj)


def _as_mapping(value: object) -> Mapping[str, Any] | None:
    """The field mapping of a record-like object (DSPy Example/Prediction, pydantic)."""
    for method in ("toDict", "model_dump"):
        fn = getattr(value, method, None)
        if callable(fn):
            try:
                out = fn()
            except Exception:  # a user object's method: anything may happen
                return None
            return out if isinstance(out, Mapping) else None
    return None


def features(value: Any) -> dict[str, Any]:
    """Describe ``value`` by type, size and sketch, never by content.

    Args:
        value: Anything. ``str``/``bytes`` give ``len`` (characters / bytes); sequences,
            sets and mappings give ``len``; mappings and record-like objects (with
            ``toDict()`` or ``model_dump()``) also list up to 16 key names. ``None`` and
            booleans are described by type only.

    Returns:
        ``{"type": ..., "len": ..., "sketch": ..., "keys": [...]}`` with only the keys
        that apply; e.g. ``features("hi") == {"type": "str", "len": 2, "sketch": "..."}``.
        An object that cannot be serialized, or a container of more than
        ``MAX_SKETCH_ITEMS`` items, gets no sketch. Never raises.
    """
    try:
        return _features(value)
    except Exception:  # features must never break the observed program
        return {"type": _type_name(value)}


def _features(value: Any) -> dict[str, Any]:
    if value is None or isinstance(value, bool):
        return {"type": _type_name(value)}
    if isinstance(value, str):
        return {"type": "str", "len": len(value), "sketch": sketch(value.encode("utf-8", "surrogatepass"))}
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return {"type": _type_name(value), "len": len(data), "sketch": sketch(data)}
    out: dict[str, Any] = {"type": _type_name(value)}
    mapping = value if isinstance(value, Mapping) else None
    if mapping is None and not isinstance(value, (int, float, list, tuple, set, frozenset)):
        mapping = _as_mapping(value)
    if mapping is not None:
        out["len"] = len(mapping)
        out["keys"] = [str(k)[:MAX_KEY_LEN] for k in itertools.islice(mapping, MAX_KEYS)]
        value = mapping
    elif hasattr(value, "__len__"):
        out["len"] = len(value)
    if out.get("len", 0) > MAX_SKETCH_ITEMS:
        return out
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)  # a set's iteration order differs between runs
    try:
        out["sketch"] = sketch(orjson.dumps(value, default=_opaque, option=_JSON_OPTS))
    except (TypeError, orjson.JSONEncodeError):
        pass
    return out


def describe_args(names: tuple[str, ...], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Map a call's arguments to parameter names (positional then keyword).

    Args:
        names: The function's positional parameter names, in order.
        args: Positional arguments; extras beyond ``names`` are named ``"*args[i]"``.
        kwargs: Keyword arguments, added as they are.

    Returns:
        ``{name: value}``; empty when there are no arguments.
    """
    out = dict(zip(names, args))
    for i in range(len(names), len(args)):
        out[f"*args[{i - len(names)}]"] = args[i]
    out.update(kwargs)
    return out
