"""The worker-side half of the DSPy callback: everything that may take time.

``adaptd.adapters.dspy_callback`` runs on the host program's thread and only records
references, clocks and ids. The functions here run later on the SDK's worker thread
(through ``adaptd.adapters.encode.DEFER``): features of inputs and outputs, module paths,
signatures, and cost from LiteLLM's price map when the provider gave none.

Text sketches (``hv``) are most of that work. ``TextSketchSampler`` bounds them when the
program makes more calls per second than drift detection needs: whole call trees are
then sketched at a rate of ``1 / 2**level``, and their events say so
(``attrs.text_sketch_rate``).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import weakref
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from adaptd.streams.features import features, sketch

#: Raw-content hook: ``redact(field_name, value) -> value`` (return a placeholder to hide).
Redactor = Callable[[str, Any], Any]

#: Longest module path or signature string recorded.
MAX_NAME = 200

# LiteLLM must never fetch its price map from the network on our behalf.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


#: Features of recently described values, by identity. A module's output strings travel
#: up the call tree unchanged (a Predict's answer is its ChainOfThought's and its
#: program's), so each is described once rather than once per level. Worker thread only.
_recent: dict[int, tuple[Any, dict[str, Any]]] = {}
_RECENT_MAX = 512


def _features_once(value: Any) -> dict[str, Any]:
    hit = _recent.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    out = features(value)
    if isinstance(value, (str, bytes)):  # immutable: safe to reuse while the object lives
        if len(_recent) >= _RECENT_MAX:
            _recent.clear()
        _recent[id(value)] = (value, out)
    return out


_JSON_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

#: Serialized features of recent strings, by identity, with and without the text sketch
#: (``feature_fragments``). Worker thread only. Entries hold a string and bytes, neither
#: tracked by the garbage collector, so a full cache costs no collection time.
_recent_json: tuple[dict[int, tuple[Any, orjson.Fragment]], dict[int, tuple[Any, orjson.Fragment]]] = ({}, {})


#: Entries of each cache above. A string is carried by events that follow each other
#: (a module's inputs are its submodule's), so a short memory finds it; a long one would
#: only cost its upkeep.
_RECENT_JSON_MAX = 64


def _str_features_json(value: str, text_sketch: bool) -> orjson.Fragment:
    cache = _recent_json[text_sketch]
    hit = cache.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    if text_sketch:
        data = orjson.dumps(features(value))
    else:  # ``features(value)`` without its "hv", as orjson writes it (same keys, order)
        digest = sketch(value.encode("utf-8", "surrogatepass"))
        data = ('{"type":"str","len":%d,"sketch":"%s"}' % (len(value), digest)).encode()
    frag = orjson.Fragment(data)
    if len(cache) >= _RECENT_JSON_MAX:
        cache.clear()
    cache[id(value)] = (value, frag)
    return frag


def feature_fragments(values: Mapping[str, Any] | None, text_sketch: bool = True) -> dict[str, Any]:
    """``describe_values(values, False, None)`` with each value's features pre-serialized.

    Per name, an ``orjson.Fragment`` of its features' JSON (what ``orjson.dumps`` of
    ``features(value)`` gives), which ``orjson.dumps`` copies into an event as it is: a
    string's features are built and serialized once however many events carry it (a
    Predict's answer is also its ChainOfThought's). ``text_sketch=False`` leaves strings'
    ``hv`` out (sampled out). Empty or None ``values`` give ``{}``; never raises for a
    value whose features cannot be serialized (it gets ``{"type": ...}``).
    """
    if not values:
        return {}
    out: dict[str, Any] = {}
    for name, value in values.items():
        if type(value) is str:
            out[str(name)] = _str_features_json(value, text_sketch)
            continue
        feats = _features_once(value)
        if not text_sketch and "hv" in feats:  # a str subclass
            feats = {k: v for k, v in feats.items() if k != "hv"}
        try:
            out[str(name)] = orjson.Fragment(orjson.dumps(feats, default=str, option=_JSON_OPTS))
        except (TypeError, orjson.JSONEncodeError):
            out[str(name)] = {"type": feats.get("type")}
    return out


#: Deepest sampling level: at most 1 call tree in 1,024 sketched.
MAX_SKETCH_LEVEL = 10


class TextSketchSampler:
    """Which call trees get text sketches, at a bounded number per second.

    Text sketches are most of the worker's cost per event. Drift detection needs a few
    thousand per window of minutes (its own processor thins executions beyond
    ``sample_target``), so a program making more calls per second than ``per_second``
    needs only a sample of them sketched. The level of each event-time second follows
    the number of call trees started in the second before: ``level`` is the smallest
    ``k`` with ``count / 2**k <= per_second`` (0 after an idle second), and a tree is
    sketched when the low ``level`` bits of ``crc32(its id)`` are zero, the same rule
    the drift processor thins by, so the executions it observes keep their sketches.
    Deterministic given the calls' ids and start times. Worker thread only.
    """

    __slots__ = ("per_second", "_second", "_count", "_level")

    def __init__(self, per_second: float | None) -> None:
        """Args:
        per_second: Call trees per second sketched in full; None or <= 0: always all.
        """
        self.per_second = per_second if per_second and per_second > 0 else None
        self._second = -2
        self._count = 0
        self._level = 0

    def level(self, start_ns: int) -> int:
        """Count a call tree started at ``start_ns`` (epoch nanoseconds); its level.

        Trees are expected roughly in start order; one from an earlier second than the
        latest seen gets the current level.
        """
        if self.per_second is None:
            return 0
        second = start_ns // 1_000_000_000
        if second > self._second:
            before = self._count if second == self._second + 1 else 0
            over = before / self.per_second
            self._level = min(MAX_SKETCH_LEVEL, math.ceil(math.log2(over))) if over > 1 else 0
            self._second, self._count = second, 0
        self._count += 1
        return self._level


def sketched(tree_id: str, level: int) -> bool:
    """Whether the call tree ``tree_id`` is in the ``1 / 2**level`` sample (``TextSketchSampler``)."""
    return level <= 0 or not zlib.crc32(tree_id.encode()) & ((1 << level) - 1)


def describe_values(values: Mapping[str, Any] | None, capture_content: bool, redact: Redactor | None) -> dict[str, Any]:
    """Per named value: its features, or (``capture_content``) the value itself.

    Raw values pass through ``redact(name, value)`` when a hook is given; a hook that
    raises hides the value (``"[redaction failed]"``) rather than leak it. Empty or None
    ``values`` give ``{}``.
    """
    if not values:
        return {}
    if not capture_content:
        return {str(name): _features_once(value) for name, value in values.items()}
    if redact is None:
        return {str(name): value for name, value in values.items()}
    out: dict[str, Any] = {}
    for name, value in values.items():
        try:
            out[str(name)] = redact(str(name), value)
        except Exception:
            out[str(name)] = "[redaction failed]"
    return out


def call_arguments(inputs: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A module call's named arguments from DSPy's ``getcallargs`` mapping.

    ``Module.__call__(*args, **kwargs)`` arrives as ``{"args": (...), "kwargs": {...}}``:
    the keyword arguments are the inputs (positional ones are named ``args[i]``).
    Other callables' mappings are returned as they are.
    """
    if not inputs or set(inputs) - {"args", "kwargs"}:
        return inputs
    named = dict(inputs.get("kwargs") or {})
    for i, value in enumerate(inputs.get("args") or ()):
        named[f"args[{i}]"] = value
    return named


def prediction_fields(outputs: Any) -> Mapping[str, Any] | None:
    """The fields of a module's output: a Prediction's ``toDict()``, a mapping, or
    ``{"return": outputs}`` for anything else; None when there is no output."""
    if outputs is None:
        return None
    to_dict = getattr(outputs, "toDict", None)
    if callable(to_dict):
        try:
            fields = to_dict()
        except Exception:
            return {"return": outputs}
        if isinstance(fields, Mapping):
            return fields
    if isinstance(outputs, Mapping):
        return outputs
    return {"return": outputs}


#: Per root module (weakly held): ``id(submodule) -> dotted attribute path``.
_paths: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()


def module_path(root: Any, instance: Any) -> str:
    """The dotted attribute path of ``instance`` inside ``root`` (``"generate.predict"``).

    The root itself, a module not reachable from it, or a root that cannot be walked
    give the class name.
    """
    name = type(instance).__name__
    if instance is root or root is None:
        return name
    try:
        paths = _paths.get(root)
        if paths is None or id(instance) not in paths:
            paths = {}
            for path, sub in root.named_sub_modules():
                paths.setdefault(id(sub), path.removeprefix("self."))
            _paths[root] = paths
        return paths.get(id(instance), name)[:MAX_NAME]
    except Exception:  # an unhashable or odd user module: the class name is still useful
        return name


#: Signature class (weakly held) -> its text. DSPy rebuilds the text on every read, and
#: a signature class does not change once made (``with_instructions`` and the like
#: return new classes).
_signature_texts: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()


def signature_of(instance: Any) -> str | None:
    """``"question -> reasoning, answer"`` for a predictor, None for other modules."""
    sig = getattr(instance, "signature", None)
    if sig is None:
        return None
    try:
        return _signature_texts[sig]
    except (KeyError, TypeError):  # TypeError: not weakly referenceable
        pass
    text = getattr(sig, "signature", None)
    text = text[:MAX_NAME] if isinstance(text, str) else None
    try:
        _signature_texts[sig] = text
    except TypeError:
        pass
    return text


def provider_of(model: str | None) -> str | None:
    """The provider prefix of a LiteLLM model name (``"openai/gpt-4o-mini"`` -> ``openai``)."""
    if not model or "/" not in model:
        return None
    return model.split("/", 1)[0]


@functools.lru_cache(maxsize=4096)
def price(model: str, tokens_in: int, tokens_out: int) -> float | None:
    """Cost in USD of one call from LiteLLM's local price map.

    None for models not in the map, and when LiteLLM was never imported (an LM that does
    not go through LiteLLM has no price there).
    """
    litellm = sys.modules.get("litellm")
    if litellm is None:  # never import it here: seconds of GIL on the worker; LMs that
        return None      # are priced by LiteLLM have imported it already
    try:
        # Unknown models make LiteLLM print a provider list to stdout: ask the map first.
        if model not in litellm.model_cost and model.split("/", 1)[-1] not in litellm.model_cost:
            return None
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=tokens_in, completion_tokens=tokens_out
        )
        return float(prompt_cost) + float(completion_cost)
    except Exception:  # not in the price map, or LiteLLM missing: unknown, not zero
        return None


def call_cost(model: str | None, tokens_in: int | None, tokens_out: int | None, given: float | None) -> float | None:
    """The provider's cost when it gave one, else the price map's; None when unknown."""
    if given is not None:
        return float(given)
    if not model or tokens_in is None or tokens_out is None:
        return None
    return price(model, tokens_in, tokens_out)


def sum_costs(calls: list[tuple[Any, ...]]) -> float | None:
    """Total cost of ``(model, tokens_in, tokens_out, cost, cache_hit)`` LM calls.

    Cache hits cost nothing. None when no call has a known cost (unknown, not zero).
    """
    total, known = 0.0, False
    for model, tokens_in, tokens_out, cost, cache_hit in calls:
        if cache_hit:
            known = True
            continue
        c = call_cost(model, tokens_in, tokens_out, cost)
        if c is not None:
            total += c
            known = True
    return total if known else None


def usage_of(entry: Mapping[str, Any] | None) -> tuple[int | None, int | None, float | None, bool | None]:
    """``(tokens_in, tokens_out, provider_cost, cache_hit)`` of an LM history entry.

    Missing pieces are None; an entry without usage (e.g. DSPy's DummyLM reports zeros)
    gives what it has.
    """
    if not entry:
        return None, None, None, None
    usage = entry.get("usage") or {}
    tokens_in = usage.get("prompt_tokens", usage.get("input_tokens"))
    tokens_out = usage.get("completion_tokens", usage.get("output_tokens"))
    cache_hit = getattr(entry.get("response"), "cache_hit", None)
    return (
        int(tokens_in) if isinstance(tokens_in, (int, float)) else None,
        int(tokens_out) if isinstance(tokens_out, (int, float)) else None,
        entry.get("cost"),
        bool(cache_hit) if cache_hit is not None else None,
    )


def new_history_entry(history: list[Any] | None, mark: Any) -> Mapping[str, Any] | None:
    """The newest entry appended to ``history`` after ``mark`` (its last entry at start).

    History lists are capped (the oldest entry is popped as a new one arrives), so the
    scan looks for ``mark`` by identity from the end rather than trusting lengths. None
    when nothing was appended (history disabled, or the call failed before recording).
    """
    if not history:
        return None
    last = history[-1]
    if last is mark:
        return None
    return last if isinstance(last, Mapping) else None


def score_of(score: Any) -> tuple[float | None, str | None]:
    """A metric's result as ``(score, comment)``: numbers and bools directly, DSPy's
    ``Prediction(score=..., feedback=...)`` (GEPA-style metrics) through its fields."""
    if isinstance(score, bool):
        return float(score), None
    if isinstance(score, (int, float)):
        return float(score), None
    inner = getattr(score, "score", None)
    if isinstance(inner, (int, float)):
        feedback = getattr(score, "feedback", None)
        return float(inner), feedback if isinstance(feedback, str) else None
    return None, None
