"""How long the master takes to answer, measured per batch (one read's requests), cheaply."""

from __future__ import annotations

import bisect

BATCH_BOUNDS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class BatchTimer:
    """The time each read's requests took to answer, in histogram buckets: a list increment per
    read (64 requests at a time under load), nothing per request."""

    __slots__ = ("count", "counts", "requests", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BATCH_BOUNDS) + 1)
        self.count = 0
        self.sum = 0.0
        self.requests = 0

    def observe(self, seconds: float, requests: int) -> None:
        self.counts[bisect.bisect_left(BATCH_BOUNDS, seconds)] += 1
        self.count += 1
        self.sum += seconds
        self.requests += requests
