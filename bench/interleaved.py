"""Interleaved timing of implementations of one job, for the benches that compare against a raw-C limit.

Every implementation is a function ``fn(reps) -> elapsed ns`` doing ``reps`` rounds of ``n`` packets.
Each gets a warm-up and a repetition count sized to about ``ms`` per run; the runs are interleaved (one of
each per round) and each ratio is taken within a round, so load from other processes on a shared machine
hits both sides of a ratio alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable


def measure(
    impls: dict[str, Callable[[int], int]], n: int, runs: int, ms: float, *, probe: int = 4
) -> dict[str, tuple[float, float]]:
    """Median ns/packet and median throughput ratio to the first entry (the C limit), per implementation."""
    reps: dict[str, int] = {}
    for name, fn in impls.items():
        fn(2)
        per_rep = max(fn(probe), 1) / probe
        reps[name] = max(1, int(ms * 1e6 / per_rep))
    per_run: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(runs):
        for name, fn in impls.items():
            per_run[name].append(fn(reps[name]) / (reps[name] * n))
    limit = per_run[next(iter(impls))]
    return {
        name: (statistics.median(v), statistics.median(c / x for c, x in zip(limit, v, strict=True)))
        for name, v in per_run.items()
    }
