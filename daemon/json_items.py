"""Splitting a JSON array body into its items' bytes, when it does not parse as a whole.

orjson refuses a whole body for one bad item (a ``NaN``, a lone surrogate, nesting past
its limit), which would cost the valid events beside it.  ``split_array`` finds where
each top-level item of the array starts and ends without decoding any of them, so each
one can be parsed (and refused) alone.  It only tracks strings and brackets, in C-speed
regular-expression steps, so it costs little even on a body of many megabytes.
"""

from __future__ import annotations

import re

#: The bytes that matter to the structure: a string's opening quote, brackets, commas.
_TOKEN = re.compile(rb'["\[\]{},]')
#: The rest of a string after its opening quote, through the closing quote.
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.S)


class NotAnArray(ValueError):
    """The body is not one well-bracketed JSON array: its items cannot be told apart."""


def split_array(body: bytes) -> list[bytes]:
    """The top-level items of the JSON array ``body``, as stripped byte slices in order.

    The items themselves are not checked: ``[1, NaN, {"a": "\\ud800"}]`` gives three
    slices, and an empty slot (``[1,,2]`` or a trailing comma) gives an empty slice,
    which the caller refuses like any other bad item.  ``[]`` gives an empty list.

    Raises:
        NotAnArray: the body does not start with ``[``, a string or a bracket is not
            closed, brackets do not balance, or anything but whitespace follows the
            array's closing bracket.
    """
    start = len(body) - len(body.lstrip())
    if body[start:start + 1] != b"[":
        raise NotAnArray("the body is not a JSON array")
    items: list[bytes] = []
    depth = 0  # brackets open inside the current item
    item_start = pos = start + 1
    while True:
        m = _TOKEN.search(body, pos)
        if m is None:
            raise NotAnArray("the array is not closed (missing ']')")
        c = m.group()
        if c == b'"':
            rest = _STRING_REST.match(body, m.end())
            if rest is None:
                raise NotAnArray(f"a string opened at byte {m.start()} is not closed")
            pos = rest.end()
            continue
        pos = m.end()
        if c in (b"[", b"{"):
            depth += 1
        elif c in (b"]", b"}"):
            if depth == 0:
                if c == b"}":
                    raise NotAnArray(f"unbalanced '}}' at byte {m.start()}")
                last = body[item_start:m.start()].strip()
                if last or items:  # "[]" has no items; "[1,]" has an empty last one
                    items.append(last)
                if body[pos:].strip():
                    raise NotAnArray(f"unexpected data after the array's end at byte {pos}")
                return items
            depth -= 1
        elif depth == 0:  # a comma between items
            items.append(body[item_start:m.start()].strip())
            item_start = pos
