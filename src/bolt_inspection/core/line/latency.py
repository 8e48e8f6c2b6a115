"""Rolling latency statistics (mean, p50, p99) for /diagnostics and the line summary."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """Return the ``q``-th percentile (0..100) of ``values``, NaN when empty.

    numpy's 'higher' method: p99 of a small sample is an observed value, never an interpolation
    below the worst case. Plain Python, so the CLI does not import numpy for it.
    """
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return float('nan')
    rank = math.ceil(min(max(q, 0.0), 100.0) / 100.0 * (len(ordered) - 1) - 1e-9)
    return ordered[max(0, rank)]


class LatencyStats:
    """Keep the last ``window`` latencies (milliseconds) and summarise them.

    Args:
        window: How many recent samples the percentiles are computed over.
    """

    def __init__(self, window: int = 1000) -> None:
        self._samples: deque[float] = deque(maxlen=max(1, int(window)))
        self.count = 0

    def add(self, latency_ms: float) -> None:
        """Record one latency in milliseconds."""
        self._samples.append(float(latency_ms))
        self.count += 1

    @property
    def samples(self) -> list[float]:
        return list(self._samples)

    def mean(self) -> float:
        return sum(self._samples) / len(self._samples) if self._samples else float('nan')

    def p50(self) -> float:
        return percentile(self._samples, 50)

    def p99(self) -> float:
        return percentile(self._samples, 99)

    def max(self) -> float:
        return max(self._samples) if self._samples else float('nan')

    def summary(self) -> dict[str, float]:
        """Return ``{'count', 'mean_ms', 'p50_ms', 'p99_ms', 'max_ms'}``."""
        return {'count': self.count, 'mean_ms': self.mean(), 'p50_ms': self.p50(),
                'p99_ms': self.p99(), 'max_ms': self.max()}
