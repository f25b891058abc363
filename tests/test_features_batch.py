"""The batch text sketch and features equal the one-value functions, item for item.

``text_sketch`` also has an ASCII fast path (``bytes.translate``): it must split and hash
exactly like the reference definition below (lower-case, ASCII punctuation to spaces,
``str.split``, CRC32 of the UTF-8 token), which is what every stored sketch was made with.
"""

from __future__ import annotations

import math
import random
import string
import zlib

import pytest

from adaptd.streams import features as F
from adaptd.streams.features import (
    MAX_TEXT_SKETCH_CHARS,
    TEXT_SKETCH_DIM,
    features,
    features_many,
    text_sketch,
    text_sketches,
)

_PUNCT = str.maketrans(dict.fromkeys(string.punctuation, " "))


def reference_sketch(text: str, dim: int = TEXT_SKETCH_DIM) -> list[int]:
    """The text sketch as first defined (the spec the fast paths must equal)."""
    vec = [0] * dim
    for token in text[:MAX_TEXT_SKETCH_CHARS].lower().translate(_PUNCT).split():
        if len(token) < 2:
            continue
        h = zlib.crc32(token.encode("utf-8", "surrogatepass"))
        vec[h & (dim - 1)] += 1 if h & 0x80000000 else -1
    norm = math.hypot(*vec)
    if not norm:
        return vec
    return [round(v * 127 / norm) if v else 0 for v in vec]


def random_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    ascii_chars = string.printable + "\x00\x1c\x1d\x1e\x1f\x7f"
    unicode_chars = "éÀİßΣςﬁ\u00a0\u2003\u3000\u0085\U0001f600\ud800Ωω"
    words = ["capital", "France", "PARIS", "river", "a", "I", "x1", "don't", "e-mail", "[[ ## answer ## ]]"]
    texts = []
    for i in range(n):
        shape = i % 4
        if shape == 0:  # pure ASCII, any character (fast path)
            texts.append("".join(rng.choice(ascii_chars) for _ in range(rng.randrange(0, 120))))
        elif shape == 1:  # words: repeated tokens, mixed case
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randrange(0, 60))))
        elif shape == 2:  # non-ASCII somewhere (the str path)
            texts.append("".join(rng.choice(ascii_chars + unicode_chars) for _ in range(rng.randrange(1, 120))))
        else:  # JSON-ish content, as OpenInference sends
            texts.append('{"question": "%s", "n": %d}' % (" ".join(rng.choice(words) for _ in range(8)), i))
    return texts + ["", " ", "a", "ab", "AB ab", "!!!", "x" * (MAX_TEXT_SKETCH_CHARS + 50),
                    "word " * 5000, "é" * 10 + " ab"]


def test_every_ascii_character_separates_and_folds_like_the_str_path() -> None:
    for code in range(128):
        text = f"ab{chr(code)}cd EF{chr(code)}{chr(code)}gh"
        assert text_sketch(text) == reference_sketch(text), repr(chr(code))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_text_sketch_equals_its_reference_definition(seed: int) -> None:
    for text in random_texts(seed, 400):
        assert text_sketch(text) == reference_sketch(text), repr(text[:80])
        assert text_sketch(text, 64) == reference_sketch(text, 64), repr(text[:80])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 500])
def test_text_sketches_equal_text_sketch_item_for_item(n: int) -> None:
    texts = random_texts(n, n)[:n]
    assert text_sketches(texts) == [text_sketch(t) for t in texts]
    assert text_sketches(texts, 16) == [text_sketch(t, 16) for t in texts]


def test_text_sketches_survive_a_cleared_token_memo() -> None:
    texts = random_texts(9, 200)
    expected = [reference_sketch(t) for t in texts]
    F._token_codes.clear()
    assert text_sketches(texts) == expected
    assert text_sketches(texts) == expected  # now from the memo


def test_features_many_equals_features_item_for_item() -> None:
    class Text(str):
        pass

    values: list[object] = [*random_texts(4, 60), None, True, 3, 2.5, b"bytes", ["a", 1], {"k": "v"},
                            {1, 2}, Text("a str subclass"), "", "dup", "dup"]
    assert features_many(values) == [features(v) for v in values]
    assert features_many([]) == []


def test_features_many_never_raises() -> None:
    class Broken:
        def toDict(self) -> dict:
            raise RuntimeError("no")

    assert features_many([Broken(), "ok text"]) == [features(Broken()), features("ok text")]
