"""Price LLM spans that arrive over OTLP with a model and token counts but no cost.

The prices are LiteLLM's local price map (``model_prices_and_context_window_backup.json``,
shipped inside the ``litellm`` package): read as a file, never fetched, and without
importing LiteLLM (its import costs seconds of CPU the ingest path cannot spare).  The
file of the installed LiteLLM is the only source (not a live ``litellm.model_cost``, which
may have been fetched or changed at run time), so one install prices a span one way.

A priced call is marked as the DSPy callback marks it: ``attrs["cost_source"] =
"litellm_price_map"`` (an estimate from list prices, not the provider's bill).

What is priced: input and output tokens at the model's per-token rates, with LiteLLM's
``*_above_<N>k_tokens`` long-context rates when the prompt passes the threshold.  What is
left unpriced (None: unknown, never zero): models not in the map, models billed otherwise
(per second, per character, per image), and models whose price depends on more than the
token counts (``tiered_pricing`` tables, off-peak hours).  Cached prompt tokens are not
known from the span, so they are priced as ordinary input (an upper bound).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson

logger = logging.getLogger("adaptd.otlp")

#: The mark of an estimated cost (the same as ``adapters/dspy_callback``'s).
COST_SOURCE = "litellm_price_map"

_MAP_FILE = "model_prices_and_context_window_backup.json"
#: Providers whose long-context rate applies from the threshold itself (LiteLLM's rule).
_INCLUSIVE_PROVIDERS = frozenset({"xai"})
#: A price-map entry with any of these is priced by more than its token counts.
_NOT_BY_TOKENS = ("tiered_pricing", "off_peak_pricing")


class Rates(NamedTuple):
    """Per-token USD rates of one model: flat, and ``(threshold, input, output)`` tiers
    sorted by threshold."""

    input: float
    output: float
    tiers: tuple[tuple[float, float, float], ...]
    inclusive: bool


def _rate(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value >= 0 else None


def _threshold(key: str) -> float | None:
    """``input_cost_per_token_above_200k_tokens`` -> 200000.0 (None: not a threshold key)."""
    text = key.rsplit("_above_", 1)[1].removesuffix("_tokens")
    try:
        return float(text.removesuffix("k")) * (1000 if text.endswith("k") else 1)
    except ValueError:
        return None


def rates_of(entry: Mapping[str, Any]) -> Rates | None:
    """The token rates of a price-map entry; None when it is not priced by tokens alone."""
    if any(k in entry for k in _NOT_BY_TOKENS):
        return None
    flat_in, flat_out = _rate(entry.get("input_cost_per_token")), _rate(entry.get("output_cost_per_token"))
    if flat_in is None or flat_out is None:
        return None
    tiers = []
    for key in entry:
        if not (key.startswith("input_cost_per_token_above_") and key.endswith("_tokens")):
            continue
        at = _threshold(key)
        tier_in = _rate(entry[key])
        if at is None or tier_in is None:
            continue
        tier_out = _rate(entry.get("output_cost_per_token" + key.removeprefix("input_cost_per_token")))
        tiers.append((at, tier_in, flat_out if tier_out is None else tier_out))
    provider = entry.get("litellm_provider")
    return Rates(flat_in, flat_out, tuple(sorted(tiers)), provider in _INCLUSIVE_PROVIDERS)


def price(rates: Rates, tokens_in: int, tokens_out: int) -> float:
    """USD for one call: every token at the rate of the highest tier the prompt reaches."""
    rate_in, rate_out = rates.input, rates.output
    for at, tier_in, tier_out in rates.tiers:
        if tokens_in > at or (rates.inclusive and tokens_in == at):
            rate_in, rate_out = tier_in, tier_out
    return tokens_in * rate_in + tokens_out * rate_out


def candidates(model: str, provider: str | None) -> list[str]:
    """Price-map keys to try for a span's model, most specific first: ``provider/model``
    (a provider's own price, e.g. ``azure/...``), as given, then without a ``provider/``
    prefix."""
    names = [f"{provider}/{model}"] if provider and not model.startswith(provider + "/") else []
    names.append(model)
    if "/" in model:
        names.append(model.split("/", 1)[1])
    return names


def lookup(model: str, provider: str | None, price_map: Mapping[str, Any]) -> Rates | None:
    """The rates of the first candidate name the map has; None when it has none, or when
    that entry is not priced by tokens (``snowflake/jamba-1.5-mini`` is listed without a
    price: the ``jamba-1.5-mini`` of another provider is not its price)."""
    for name in candidates(model, provider):
        entry = price_map.get(name)
        if isinstance(entry, Mapping):
            return rates_of(entry)
    return None


def estimate_cost(model: str | None, tokens_in: int | None, tokens_out: int | None, *,
                  provider: str | None = None, price_map: Mapping[str, Any] | None = None) -> float | None:
    """The list-price cost in USD of one LLM call, or None when it cannot be priced
    (no model, a token count missing or negative, the model not priced by tokens).

    ``price_map``: LiteLLM-format entries by model name (default: the installed LiteLLM's
    bundled map, see ``bundled_rates``).
    """
    if not model or tokens_in is None or tokens_out is None or tokens_in < 0 or tokens_out < 0:
        return None
    if price_map is None:
        rates = _cached_rates(model, provider)
    else:
        rates = lookup(model, provider, price_map)
    return None if rates is None else price(rates, tokens_in, tokens_out)


def price_missing_cost(execution: dict[str, Any], lm_call: dict[str, Any]) -> bool:
    """Give an OTLP LLM span's events a cost when the span had none, in place.

    ``lm_call``'s ``model``, ``provider``, ``tokens_in`` and ``tokens_out`` are priced; on
    success both events get ``cost_usd`` and ``attrs["cost_source"] = "litellm_price_map"``
    (an existing ``attrs`` dict is updated in place, one more key beyond the span mapper's
    attribute caps, like its ``otel.dropped_attributes`` marker).
    Events that already have a cost, or that cannot be priced, are left as they are.
    Returns True when a cost was set.
    """
    if lm_call.get("cost_usd") is not None:
        return False
    cost = estimate_cost(lm_call.get("model"), lm_call.get("tokens_in"), lm_call.get("tokens_out"),
                         provider=lm_call.get("provider"))
    if cost is None:
        return False
    for event in (lm_call, execution):
        event["cost_usd"] = cost
        attrs = event.get("attrs")
        if isinstance(attrs, dict):  # in place: the span mapper is still filling this dict
            attrs["cost_source"] = COST_SOURCE
        else:
            event["attrs"] = {"cost_source": COST_SOURCE}
    return True


# ---------------------------------------------------------------------------- the map (I/O)


def bundled_map_path() -> Path | None:
    """Where the installed ``litellm`` keeps its price map (found without importing it);
    None when LiteLLM is not installed or the file is missing."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / _MAP_FILE
        if path.is_file():
            return path
    return None


def _read_bundled_map() -> Mapping[str, Any]:
    path = bundled_map_path()
    if path is None:
        logger.warning("LiteLLM's price map is not installed: OTLP LLM spans without a cost stay unpriced")
        return {}
    try:
        loaded = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        logger.warning("cannot read LiteLLM's price map %s (%s): OTLP LLM spans without a cost stay unpriced",
                       path, exc)
        return {}
    return loaded if isinstance(loaded, dict) else {}


@functools.cache
def bundled_rates() -> Mapping[str, Rates | None]:
    """Every model of the installed LiteLLM's price map -> its token rates (None: listed,
    not priced by tokens).  Read once; the raw map (15 MB of objects) is not kept."""
    return {name: rates_of(entry) if isinstance(entry, Mapping) else None
            for name, entry in _read_bundled_map().items()}


@functools.lru_cache(maxsize=4096)
def _cached_rates(model: str, provider: str | None) -> Rates | None:
    # The hot path: one span after another of the same few models.
    table = bundled_rates()
    for name in candidates(model, provider):
        if name in table:
            return table[name]
    return None
