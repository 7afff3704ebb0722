"""Failover outage across the real lab: link cut and 100% loss on the active path, p50/p95/max.

Workload: the default lab (6 router processes on loopback), two gateways in its leaf ASes with the
datagram API, A sending a sequence-numbered datagram every 2 ms to B. Each trial breaks the middle
link of the active path during steady traffic (``lab.cut``, or ``lab.impair(loss=1.0)``), holds it
broken for 0.6 s, repairs it and lets things settle. The outage of a trial is the gap in received
sequence numbers, in the sender's time (``scion_appliance.lab.failover``). Runs the configuration's
default probe interval (100 ms) and a fast variant (20 ms); probes go to every one of the 28 paths.

Reference figures: the reference SCION IP gateway needs 1-2 s to fail over (its path monitoring);
BFD's fast profile (3 x 50 ms) detects a dead link in 150 ms. Goal: p95 <= 150 ms.

    .venv/bin/python bench/bench_failover.py [--trials 20] [--intervals 0.1,0.02]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scion_appliance.lab.failover import Trial, rig  # noqa: E402
from scion_appliance.lab.lab import Lab, running_lab  # noqa: E402

REFERENCES = [("reference SCION gateway", "1000-2000 ms"), ("BFD fast profile (3 x 50 ms)", "150 ms")]
GOAL_P95_MS = 150.0


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def measure(lab: Lab, probe_interval: float, trials: int) -> dict[str, list[Trial]]:
    out: dict[str, list[Trial]] = {"cut": [], "loss": []}
    async with rig(lab, probe_interval) as r:
        for kind in ("cut", "loss"):
            for _ in range(trials):
                out[kind].append(await r.trial(kind))
        reordered, on_down = r.flow.reordered(), r.flow.sent_on_down
    print(f"  (probe interval {probe_interval * 1000:.0f} ms: {reordered} reordered on one path, "
          f"{on_down} sent on a down path)")  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="trials of each kind per probe interval")
    ap.add_argument("--intervals", default="0.1,0.02", help="probe intervals in seconds, comma-separated")
    args = ap.parse_args()
    intervals = [float(x) for x in args.intervals.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp, running_lab(Path(tmp) / "lab") as lab:
        for interval in intervals:
            t = time.monotonic()
            result = trio.run(measure, lab, interval, args.trials)
            print(f"  ({2 * args.trials} trials in {time.monotonic() - t:.0f} s)")
            for kind, trials in result.items():
                ms = [t.outage_s * 1000 for t in trials]
                lost = [t.lost for t in trials]
                rows.append((interval, kind, len(ms), ms, statistics.median(lost), max(lost)))
    print()
    print(f"{'probe interval':>14}  {'break':<10} {'trials':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
          f"  {'lost p50/max':>12}  goal p95 <= {GOAL_P95_MS:.0f} ms")  # fmt: skip
    for interval, kind, n, ms, lost_med, lost_max in rows:
        p95 = percentile(ms, 95)
        verdict = "met" if p95 <= GOAL_P95_MS else "missed"
        name = "link cut" if kind == "cut" else "100% loss"
        print(f"{interval * 1000:>11.0f} ms  {name:<10} {n:>6} {percentile(ms, 50):>8.1f} {p95:>8.1f} "
              f"{max(ms):>8.1f}  {lost_med:>5.0f}/{lost_max:<6}  {verdict}")  # fmt: skip
    print()
    for name, figure in REFERENCES:
        print(f"  {name}: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
