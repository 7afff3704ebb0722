"""Anti-replay window cost per packet: scion_appliance._fast.replay against the raw-C limit.

The window first commits a history (a run of counters with gaps, as after reordering and loss); the
measured batch then mixes counters ahead of the top, reordered ones inside the window, repeats and
counters too old for it. Measured in one run:
- C limit: replay_check in a plain C loop over the batch (csrc/bench_limits.c, same csrc/replay.h);
- check_batch / commit_batch: one Python call per batch, timed per call;
- check / commit: one Python call per packet (what a per-packet Python loop would cost).
Figures are medians of --runs runs; the ratio is throughput relative to the C limit. Goal: a replay check
under 10 ns per packet in the batch form.

    .venv/bin/python bench/bench_replay.py [--runs 5] [--ms 15] [--batch 256] [--windows 1024,8192]
"""

from __future__ import annotations

import argparse
import array
import ctypes
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import climit
from interleaved import measure

from scion_appliance._fast.replay import ReplayWindow

TOP = 10_000_000


def workload(window: int, n: int, seed: int = 6479) -> tuple[list[int], list[int]]:
    """(history to commit first, batch of counters to check)."""
    rng = random.Random(seed)
    history = [c for c in range(TOP - 2 * window, TOP + 1) if rng.random() < 0.9]
    batch = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            batch.append(TOP + 1 + rng.randrange(64))  # ahead of the top (the common case in order)
        elif r < 0.9:
            batch.append(TOP - rng.randrange(window))  # reordered inside the window (some seen)
        elif r < 0.97:
            batch.append(rng.choice(history[-64:]))  # a repeat of a recent packet
        else:
            batch.append(TOP - window - 1 - rng.randrange(10 * window))  # too old
    return history, batch


def bench(lib: Any, window: int, n: int) -> dict[str, Callable[[int], int]]:
    history, batch = workload(window, n)
    hist = array.array("Q", history)
    counters = array.array("Q", batch)
    clock = time.perf_counter_ns

    w = ReplayWindow(window)
    for c in history:
        w.commit(c)
    expect = sum(w.check(c) for c in batch)
    accepted = ctypes.c_size_t()
    hp = climit.address(memoryview(hist).cast("B"))
    cp = climit.address(memoryview(counters).cast("B"))

    def limit(reps: int) -> int:
        ns = int(lib.limit_replay_check(window, cp, n, reps, hp, len(hist), ctypes.byref(accepted)))
        assert accepted.value == expect, (accepted.value, expect)
        return ns

    status, zero = bytearray(n), bytes(n)

    def check_batch(reps: int) -> int:
        total = 0
        for _ in range(reps):
            status[:] = zero
            t0 = clock()
            alive = w.check_batch(counters, status)
            total += clock() - t0
        assert alive == expect
        return total

    def check_each(reps: int) -> int:
        check = w.check
        t0 = clock()
        for _ in range(reps):
            for c in batch:
                check(c)
        return clock() - t0

    fresh = ReplayWindow(window)

    def reset() -> None:
        fresh.reset()
        fresh.commit_batch(hist, bytearray(len(hist)))

    def commit_batch(reps: int) -> int:
        total = 0
        for _ in range(reps):
            reset()
            status[:] = zero
            t0 = clock()
            fresh.commit_batch(counters, status)
            total += clock() - t0
        return total

    def commit_each(reps: int) -> int:
        total = 0
        for _ in range(reps):
            reset()
            commit = fresh.commit
            t0 = clock()
            for c in batch:
                commit(c)
            total += clock() - t0
        return total

    return {
        "C limit (replay_check)": limit,
        "check_batch": check_batch,
        "commit_batch": commit_batch,
        "check, per packet": check_each,
        "commit, per packet": commit_each,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ms", type=float, default=15.0, help="target length of one run")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--windows", default="1024,8192")
    args = ap.parse_args()
    lib = climit.load()
    print(f"anti-replay window, batch of {args.batch} mixed counters; medians of {args.runs} runs")
    print(f"{'window':>6}  {'implementation':24} {'ns/pkt':>8} {'Mpkt/s':>8} {'vs C':>7}")
    worst = 0.0
    for window in (int(x) for x in args.windows.split(",")):
        for name, (ns, ratio) in measure(
            bench(lib, window, args.batch), args.batch, args.runs, args.ms, probe=8
        ).items():
            if name == "check_batch":
                worst = max(worst, ns)
            print(f"{window:6}  {name:24} {ns:8.2f} {1e3 / ns:8.1f} {ratio:7.1%}")
    print(f"check_batch: {worst:.2f} ns/packet at worst (goal < 10 ns)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
