"""Features of values: what the SDK records about inputs and outputs by default.

A feature dict describes a value without containing it: its type, its size and a short
*sketch* (an unkeyed 64-bit BLAKE2b fingerprint) that tells equal values apart, so the
daemon can count distinct inputs, spot repeated ones and watch size drift. A sketch is a
fingerprint, not anonymisation: a value from a small domain (a yes/no answer, a number)
can be guessed by hashing candidates. Raw content is opt-in (``capture_content=True``).

Strings also get a *text sketch* (``hv``): a fixed-size signed feature-hashing vector of
their word tokens, the same idea as scikit-learn's ``HashingVectorizer`` but with
CRC32 and a small dimension so it is cheap to send. Texts on the same topics get close
vectors, which is what input drift detection compares; the words cannot be read back.

``features_many`` and ``text_sketches`` do the same for a list of values at once (the
daemon's OTLP ingest featurizes every text of a request in one call): equal results, the
tokens of all texts counted in one numpy pass instead of one Python step per token.

These are pure functions: same value, same features, in every process.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import string
import zlib
from collections.abc import Mapping
from typing import Any, cast

import orjson

#: Keys of a mapping listed in its features (names, truncated), so the list stays small.
MAX_KEYS = 16
MAX_KEY_LEN = 64
#: Containers larger than this get no sketch: serializing them would cost the caller's
#: thread milliseconds on every observed call.
MAX_SKETCH_ITEMS = 10_000

#: Dimension of the text sketch (a power of two: the bucket is the hash's low bits).
TEXT_SKETCH_DIM = 32
#: Texts longer than this are sketched on their first this-many characters only.
MAX_TEXT_SKETCH_CHARS = 20_000
#: Whitespace and ASCII punctuation separate tokens (``str.translate`` + ``split``: both
#: in C, twice as fast as a regex ``findall``).
_SEPARATORS = str.maketrans(dict.fromkeys(string.punctuation, " "))
#: The same for ASCII text as one ``bytes.translate`` table, lower-casing too: A-Z to
#: a-z, punctuation to a space, and \x1c-\x1f (whitespace to ``str.split`` but not to
#: ``bytes.split``) to a space.  Splits exactly as ``lower().translate(_SEPARATORS).split()``
#: for ASCII text, twice as fast; the tokens are bytes whose CRC32 is the same.
_ASCII_TABLE = bytes(
    32 if chr(b) in string.punctuation or 0x1C <= b <= 0x1F else b + 32 if 65 <= b <= 90 else b
    for b in range(256)
)
#: Token (str, or bytes for ASCII text) -> signed bucket code, per dimension; cleared
#: when it reaches the bound.
_token_codes: dict[int, dict[str | bytes, int]] = {}
_MAX_TOKEN_CODES = 100_000
#: Below this many texts ``text_sketches`` counts in Python: numpy's fixed cost is larger.
_MIN_VECTOR_BATCH = 8

_JSON_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def sketch(data: bytes) -> str:
    """The 16-hex-digit BLAKE2b-64 fingerprint of ``data``."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def text_sketch(text: str, dim: int = TEXT_SKETCH_DIM) -> list[int]:
    """The signed hashed bag-of-words of ``text``, L2-normalised and scaled to int8.

    Tokens are the lower-cased runs of two or more characters between whitespace and
    ASCII punctuation. Each adds +1 or -1 (the sign is a hash bit, so collisions cancel
    out on average rather than pile up) to bucket ``crc32(token) % dim``.

    Args:
        text: Any string; only its first ``MAX_TEXT_SKETCH_CHARS`` characters are read.
        dim: Number of buckets, a power of two.

    Returns:
        ``dim`` integers in [-127, 127] whose vector has norm ~127; all zeros when
        ``text`` has no token (empty, punctuation only).
    """
    vec = [0] * dim
    for code in _codes(text, dim):
        if code > 0:
            vec[code - 1] += 1
        elif code < 0:
            vec[-code - 1] -= 1
    norm = math.hypot(*vec)
    if not norm:
        return vec
    scale = 127 / norm
    return [round(v * scale) if v else 0 for v in vec]


def text_sketches(texts: list[str], dim: int = TEXT_SKETCH_DIM) -> list[list[int]]:
    """``[text_sketch(t, dim) for t in texts]``, equal item for item, counted for the whole
    batch at once (one numpy ``bincount`` and one scaling) instead of token by token.

    Equality holds because the same integer counts are made (the tokens and their codes
    are ``text_sketch``'s), each norm is the same ``math.hypot`` and ``numpy.rint`` rounds
    the same IEEE products half-to-even as ``round``.  Without numpy, or for a handful of
    texts, it is the plain loop.  An empty list gives an empty list.
    """
    if len(texts) < _MIN_VECTOR_BATCH:
        return [text_sketch(t, dim) for t in texts]
    try:
        import numpy as np  # the daemon has it; the SDK alone may not
    except ImportError:  # pragma: no cover - exercised only without numpy
        return [text_sketch(t, dim) for t in texts]
    flat: list[int] = []
    lengths: list[int] = []
    extend = flat.extend
    for text in texts:
        codes = _codes(text, dim)
        extend(codes)
        lengths.append(len(codes))
    width = 2 * dim + 1  # codes -dim..dim, 0 (one-character tokens) in the middle
    rows = np.repeat(np.arange(len(texts), dtype=np.int64) * width + dim, lengths)
    counts = np.bincount(rows + np.array(flat, dtype=np.int64), minlength=len(texts) * width)
    counts = counts.reshape(len(texts), width)
    # code c > 0 adds to bucket c - 1; code -c subtracts from bucket c - 1.
    vecs = counts[:, dim + 1:] - counts[:, dim - 1::-1]
    rows_py = vecs.tolist()
    scales = [127 / norm if (norm := math.hypot(*row)) else 0.0 for row in rows_py]
    scaled = np.rint(vecs * np.array(scales)[:, None]).astype(np.int64)
    return scaled.tolist()


def _codes(text: str, dim: int) -> list[int]:
    """The signed bucket codes of ``text``'s tokens, in order (0 for one-character tokens)."""
    text = text[:MAX_TEXT_SKETCH_CHARS]
    tokens: list[Any]
    if text.isascii():
        tokens = text.encode("ascii").translate(_ASCII_TABLE).split()
    else:
        tokens = text.lower().translate(_SEPARATORS).split()
    codes = _token_codes.get(dim)
    if codes is None:
        codes = _token_codes[dim] = {}
    # Words repeat across texts: each is hashed once, then looked up in C (map).
    out: list[int | None] = list(map(codes.get, tokens))
    if None in out:
        if len(codes) + len(tokens) > _MAX_TOKEN_CODES:
            codes.clear()
        for i, code in enumerate(out):
            if code is None:
                token = tokens[i]
                code = codes.get(token)
                if code is None:
                    code = codes[token] = _token_code(token, dim)
                out[i] = code
    return cast("list[int]", out)  # every None was replaced by its code above


def _token_code(token: str | bytes, dim: int) -> int:
    """``+(bucket + 1)`` or ``-(bucket + 1)`` for a token; 0 for one-character tokens."""
    if len(token) < 2:
        return 0
    data = token if isinstance(token, bytes) else token.encode("utf-8", "surrogatepass")
    h = zlib.crc32(data)
    return ((h & (dim - 1)) + 1) * (1 if h & 0x80000000 else -1)


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
        value: Anything. ``str``/``bytes`` give ``len`` (characters / bytes), and a
            ``str`` with words its text sketch ``hv`` (see ``text_sketch``); sequences,
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


def features_many(values: list[Any]) -> list[dict[str, Any]]:
    """``[features(v) for v in values]``, equal item for item, with the text sketches of
    the strings made in one batch (``text_sketches``).  Never raises; empty for empty.
    """
    out: list[dict[str, Any] | None] = []
    texts: list[str] = []
    where: list[int] = []
    blake = hashlib.blake2b
    for value in values:
        if type(value) is str:
            try:
                digest = blake(value.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
            except Exception:  # as in ``features``: never raise
                out.append({"type": "str"})
                continue
            out.append({"type": "str", "len": len(value), "sketch": digest})
            texts.append(value)
            where.append(len(out) - 1)
        else:
            out.append(features(value))
    if texts:
        sketches: list[list[int] | None]
        try:
            sketches = list(text_sketches(texts))
        except Exception:  # as in ``features``: never raise (a text's sketch alone fails)
            sketches = [None] * len(texts)
        for i, hv, text in zip(where, sketches, texts):
            if hv is None:
                out[i] = features(text)
            elif any(hv):
                out[i]["hv"] = hv  # type: ignore[index]
    return out  # type: ignore[return-value]


def _features(value: Any) -> dict[str, Any]:
    out: dict[str, Any]
    if value is None or isinstance(value, bool):
        return {"type": _type_name(value)}
    if isinstance(value, str):
        out = {"type": "str", "len": len(value), "sketch": sketch(value.encode("utf-8", "surrogatepass"))}
        hv = text_sketch(value)
        if any(hv):
            out["hv"] = hv
        return out
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return {"type": _type_name(value), "len": len(data), "sketch": sketch(data)}
    out = {"type": _type_name(value)}
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
