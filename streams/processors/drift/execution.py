"""The flat drift features of an ``execution`` event (pure): what the detector compares.

Inputs and outputs arrive wrapped differently by each entry point (the DSPy callback,
``@adaptd.observe``, OTLP); ``named_fields`` unwraps them so the same call gives the same
feature names and values whatever sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adaptd.streams import features as _features

QUALITY = "quality"
_NUMERIC_FIELDS = ("duration_ms", "tokens_in", "tokens_out", "cost_usd")
_CATEGORICAL_FIELDS = ("route", "model", "status")

#: Per input / output field, the features ``execution_features`` keeps and the name each
#: gets: ``len`` (size: characters, items) and the text sketch as ``text`` (content), so a
#: finding says which of the two moved; ``type`` and ``keys`` describe the value's shape.
_FIELD_FEATURES = (("len", "len"), ("type", "type"), ("keys", "keys"), ("hv", "text"))
#: Keys of the OTLP mapping's ``inputs`` / ``outputs`` (``adaptd.streams.otel_map``).
_OTLP_KEYS = frozenset({"value", "fields", "content", "truncated"})


def _is_features(value: Any) -> bool:
    """True for a features dict (``adaptd.streams.features.features``): a ``type`` string."""
    return isinstance(value, Mapping) and isinstance(value.get("type"), str)


def named_fields(side: Any) -> Mapping[str, Any]:
    """The named fields of an execution's ``inputs`` or ``outputs``, whatever sent it.

    The entry points wrap them differently: the DSPy callback sends them flat
    (``{"question": features}``), ``@adaptd.observe`` under ``args``
    (``{"args": {"question": features}}``; a plain return value is ``{"return": ...}``, as
    the callback's), the OTLP mapping as ``{"value": features of the whole text}`` plus,
    for a JSON object of named values, ``"fields"`` (and ``"content"`` when captured).
    Values are features dicts, or raw values when content is captured.

    Returns:
        ``{field: features or raw value}``; empty for anything that is not a mapping.
    """
    if not isinstance(side, Mapping):
        return {}
    if len(side) == 1:
        inner = side.get("args")
        if isinstance(inner, Mapping) and not _is_features(inner):
            return inner
    if "value" in side and side.keys() <= _OTLP_KEYS and (side["value"] is None or _is_features(side["value"])):
        fields = side.get("fields")
        if isinstance(fields, Mapping) and not _is_features(fields):
            return fields
        return {"value": side["value"]}
    return side


def execution_features(event: Mapping[str, Any], quality: float | None = None) -> dict[str, Any]:
    """The flat feature dict of an ``execution`` event (a wire dict or ``model_dump()``).

    Keys: ``duration_ms``, ``tokens_in``, ``tokens_out``, ``cost_usd`` (numbers),
    ``route``, ``model``, ``status`` (categories), and per input field ``f`` (see
    ``named_fields``: the same names whatever the entry point) ``inputs.f.len`` (its
    length), ``inputs.f.text`` (the text sketch of its content), ``inputs.f.type`` and
    ``inputs.f.keys``; the same per output field as ``outputs.f.*``. Values sent as raw
    content (``capture_content``) are described with ``adaptd.streams.features.features``
    first. ``quality`` (a feedback score joined by the caller) is added when given.
    Missing fields are left out; never raises on odd inputs.
    """
    out: dict[str, Any] = {}
    for k in _NUMERIC_FIELDS + _CATEGORICAL_FIELDS:
        v = event.get(k)
        if v is not None:
            out[k] = v
    for side in ("inputs", "outputs"):
        for field, value in named_fields(event.get(side)).items():
            feats = value if _is_features(value) else _features.features(value)
            for sub, name in _FIELD_FEATURES:
                if feats.get(sub) is not None:
                    out[f"{side}.{field}.{name}"] = feats[sub]
    if quality is not None:
        out[QUALITY] = quality
    return out
