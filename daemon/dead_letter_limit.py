"""How many dead letters a tenant may have written in full: a token bucket per tenant.

A hostile or broken client can send tens of thousands of invalid items a second (a 20 KB
body of ``[1,1,...]`` is 10,000 of them); each would otherwise cost a log record with a
payload excerpt.  Beyond the rate, an invalid item is still answered with its reason
(``rejected``) but only counted, not written.  One tenant's flood never uses another's
allowance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class DeadLetterLimiter:
    """Allows ``per_s`` dead letters per tenant per second, with bursts of ``per_s``.

    Args:
        per_s: dead letters written in full per tenant per second; 0 writes none (every
            invalid item is only counted).
        clock: monotonic seconds (injected in tests).
        max_tenants: buckets kept at most; past it the fullest ones (tenants idle long
            enough to have their whole allowance back) are forgotten, which changes
            nothing for them.

    Thread-safe: requests are prepared on a thread pool.
    """

    def __init__(self, per_s: float, *, clock: Callable[[], float] = time.monotonic, max_tenants: int = 10_000) -> None:
        self.per_s = max(0.0, float(per_s))
        self.clock = clock
        self.max_tenants = max(1, max_tenants)
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)
        self._lock = threading.Lock()
        #: dead letters not written (counted only), per tenant, since start
        self.suppressed: dict[str, int] = {}

    def take(self, tenant: str, wanted: int) -> int:
        """Take up to ``wanted`` dead letters for ``tenant`` now; return how many may be
        written in full (0..wanted).  The rest are recorded in ``suppressed``."""
        if wanted <= 0:
            return 0
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(tenant, (self.per_s, now))
            tokens = min(self.per_s, tokens + max(0.0, now - at) * self.per_s)
            granted = min(wanted, int(tokens))
            self._buckets[tenant] = (tokens - granted, now)
            if len(self._buckets) > self.max_tenants:
                self._forget(now)
            if granted < wanted:
                self.suppressed[tenant] = self.suppressed.get(tenant, 0) + wanted - granted
            return granted

    def _forget(self, now: float) -> None:
        """Drop the buckets that are full again (forgetting them loses nothing)."""
        full = [t for t, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.per_s >= self.per_s]
        for tenant in full or list(self._buckets)[: len(self._buckets) - self.max_tenants]:
            del self._buckets[tenant]
