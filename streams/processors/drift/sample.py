"""Seeded samples of the drift detector: a 64-bit mixer and a deterministic reservoir.

No wall clock and no global random state: the same additions give the same sample in
every process, and the state is plain data (``state`` / ``load``).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from typing import Any

import numpy as np

_M64 = (1 << 64) - 1


def mix(x: int) -> int:
    """SplitMix64 finaliser: a well-mixed 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class Reservoir:
    """Uniform sample of at most ``cap`` rows of ``width`` values (Vitter's algorithm R).

    The replacement slot for the i-th row is ``mix(key + i)``: deterministic, and the
    state is just the data and the count.
    """

    __slots__ = ("cap", "width", "key", "seen", "data")

    def __init__(self, cap: int, width: int, key: int, typecode: str) -> None:
        self.cap, self.width, self.key, self.seen = cap, width, key, 0
        self.data = array(typecode)

    def add(self, row: Any) -> None:
        i, self.seen = self.seen, self.seen + 1
        if i < self.cap:
            if self.width == 1:
                self.data.append(row)
            else:
                self.data.extend(row)
            return
        j = mix(self.key + i) % (i + 1)
        if j < self.cap:
            if self.width == 1:
                self.data[j] = row
            else:
                self.data[j * self.width : (j + 1) * self.width] = row

    def values(self) -> np.ndarray:
        """The sample as a float64 copy: ``(n,)`` for width 1, else ``(n, width)``."""
        a = np.frombuffer(self.data, dtype=np.float64 if self.data.typecode == "d" else np.int8).astype(np.float64)
        return a.reshape(-1, self.width) if self.width > 1 else a

    def state(self) -> dict[str, Any]:
        return {"cap": self.cap, "width": self.width, "key": self.key, "seen": self.seen, "data": self.data.tolist()}

    @classmethod
    def load(cls, s: Mapping[str, Any], typecode: str) -> Reservoir:
        r = cls(s["cap"], s["width"], s["key"], typecode)
        r.seen = s["seen"]
        r.data.extend(s["data"])
        return r
