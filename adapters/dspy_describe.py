"""The worker-side half of the DSPy callback: everything that may take time.

``adaptd.adapters.dspy_callback`` runs on the host program's thread and only records
references, clocks and ids. The functions here run later on the SDK's worker thread
(through ``adaptd.adapters.encode.DEFER``): features of inputs and outputs, module paths,
signatures, and cost from LiteLLM's price map when the provider gave none.
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from adaptd.streams.features import features

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
