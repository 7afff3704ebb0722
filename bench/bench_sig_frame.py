"""SIG framing cost per packet: scion_appliance.scion.sig_frame (pure Python) against a copy limit.

Workloads: batches of 64 IP packets of one size (small 80 B, mixed IMIX-like, full 1400 B) framed into
1400-byte frames, then deframed. Measured in one run:
- copy limit: ``b"".join`` of the same packets, one C memcpy pass over the bytes (any framer must at
  least copy them once; it stands in for the raw-C limit of framing);
- encode: ``FrameEncoder.encode(batch)``; decode: ``FrameDecoder.feed_many(frames)``.
Figures are medians of --runs runs; the ratio is throughput relative to the copy limit.

    .venv/bin/python bench/bench_sig_frame.py [--runs 5] [--ms 40] [--batch 64]
"""

from __future__ import annotations

import argparse
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scion_appliance.scion.sig_frame import FrameDecoder, FrameEncoder


def ipv4(total: int) -> bytes:
    return bytes([0x45, 0]) + struct.pack("!H", total) + bytes(total - 4)


def workload(kind: str, n: int) -> list[bytes]:
    rng = random.Random(3550)
    if kind == "small":
        return [ipv4(80) for _ in range(n)]
    if kind == "full":
        return [ipv4(1400) for _ in range(n)]
    return [ipv4(rng.choice((64, 64, 64, 64, 64, 64, 64, 576, 576, 1400))) for _ in range(n)]


def measure(fn: Callable[[], object], packets: int, ms: float) -> float:
    """ns per packet over as many calls as fit in ``ms``."""
    calls = 0
    start = time.perf_counter_ns()
    deadline = start + ms * 1e6
    while True:
        fn()
        calls += 1
        now = time.perf_counter_ns()
        if now >= deadline:
            return (now - start) / (calls * packets)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ms", type=float, default=40.0)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    print(f"SIG framing, batches of {args.batch}, frame size 1400, median of {args.runs} runs")
    print(f"{'workload':<8} {'what':<12} {'ns/packet':>10} {'packets/s':>12} {'vs copy limit':>14}")
    for kind in ("small", "mixed", "full"):
        batch = workload(kind, args.batch)
        enc = FrameEncoder(1, 1, 1400)
        frames = enc.encode(batch)
        dec = FrameDecoder()
        assert dec.feed_many(frames) == batch
        cases: dict[str, Callable[[], object]] = {
            "copy limit": lambda b=batch: b"".join(b),  # type: ignore[misc]
            "encode": lambda b=batch, e=enc: e.encode(b),  # type: ignore[misc]
            # the decoder sees a fresh, consecutive run of sequence numbers each call
            "decode": lambda f=frames: FrameDecoder().feed_many(f),  # type: ignore[misc]
        }
        results = {name: statistics.median(measure(fn, len(batch), args.ms) for _ in range(args.runs))
                   for name, fn in cases.items()}  # fmt: skip
        limit = results["copy limit"]
        for name, ns in results.items():
            print(f"{kind:<8} {name:<12} {ns:>10.1f} {1e9 / ns:>12,.0f} {limit / ns:>13.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
