"""Rate limits written as "N/unit" (unit: s, m, h, d), parsed here and nowhere else, and a sliding-window limiter."""
import re
import threading
import time
from collections import deque

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
          "d": 86400, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")


def parse_rate(text):
    """'5/m' -> (5, 60.0); '100/10m' -> (100, 600.0). Raises ValueError naming what was expected."""
    match = _RATE.match(text or "")
    if match is None or match.group(3) not in _UNITS or int(match.group(1)) < 1:
        raise ValueError("a rate limit is written N/unit with unit s, m, h or d (for example 5/m); got %r" % text)
    return int(match.group(1)), float(int(match.group(2) or 1) * _UNITS[match.group(3)])


class RateLimiter:
    """At most ``count`` hits per ``window`` seconds for each key; remembers only recent hits."""

    def __init__(self, rate, clock=time.monotonic):
        self.rate = rate
        self.count, self.window = parse_rate(rate)
        self.clock = clock
        self.hits = {}
        self.lock = threading.Lock()
        self._sweeps = 0

    def hit(self, key):
        """Record a hit; returns 0 when allowed, else the seconds to wait before the next would be."""
        now = self.clock()
        with self.lock:
            recent = self.hits.setdefault(key, deque())
            while recent and recent[0] <= now - self.window:
                recent.popleft()
            if len(recent) >= self.count:
                return max(1, int(recent[0] + self.window - now + 0.999))
            recent.append(now)
            self._sweep(now)
            return 0

    def _sweep(self, now):
        self._sweeps += 1
        if self._sweeps % 1024:
            return
        for key in [k for k, hits in self.hits.items() if not hits or hits[-1] <= now - self.window]:
            del self.hits[key]
