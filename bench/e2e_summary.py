"""The summary of bench/bench_e2e.sh: medians over its runs, and the ratios scion / wireguard-go.

Input: one results file per run, lines ``SYSTEM TEST TAG Gbit/s packets/s loss% cpuA% cpuB%`` (TAG is
``-`` for TCP, ``lossfree`` for the loss-free UDP rate, ``unpaced``/``offered=...`` for search steps).
Ratios are taken within each run (both tunnels measured minutes apart on the same machine), and their
median is printed with the range over the runs.

    .venv/bin/python bench/e2e_summary.py /tmp/out/results-*.txt
"""

from __future__ import annotations

import statistics
import sys

Figures = dict[tuple[str, str], list[float]]  # (system, test) -> Gbit/s, pps, loss, cpuA, cpuB


def load(path: str) -> Figures:
    out: Figures = {}
    with open(path) as lines:
        for line in lines:
            f = line.split()
            wanted = f[2:3] in (["-"], ["lossfree"]) or (f[:1] == ["veth"] and f[2:3] == ["unpaced"])
            if len(f) >= 8 and wanted:
                out[(f[0], f[1])] = [float(x) for x in f[3:8]]
    return out


def cpu_us_per_packet(fig: list[float]) -> float | None:
    """CPU time of both tunnel processes per delivered packet, in microseconds."""
    pps = fig[1]
    return (fig[3] + fig[4]) / 100 / pps * 1e6 if pps > 0 else None


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main(paths: list[str]) -> int:
    runs = [load(p) for p in paths]
    runs = [r for r in runs if r]
    if not runs:
        print("no results to summarise", file=sys.stderr)
        return 1
    print(f"== medians of {len(runs)} run(s): Gbit/s, packets/s, loss %, CPU % of one core (A, B), "
          "CPU us/packet (A+B) ==")
    keys = sorted({k for r in runs for k in r}, key=lambda k: (["scion", "wg", "veth"].index(k[0]), k[1]))
    for key in keys:
        figs = [r[key] for r in runs if key in r]
        med = [median([f[i] for f in figs]) for i in range(5)]
        us = [u for u in (cpu_us_per_packet(f) for f in figs) if u is not None]
        per = f"{median(us):6.1f}" if us and key[0] != "veth" else "     -"
        print(f"{key[0]:6} {key[1]:8} {med[0]:8.3f} {med[1]:10.0f} {med[2]:6.2f} {med[3]:6.1f} {med[4]:6.1f} {per}")
    print("== ratios scion / wireguard-go (median of per-run ratios, range) ==")
    for test, idx, what in (("tcp", 0, "TCP Gbit/s"), ("udp1392", 1, "UDP 1392 B loss-free packets/s"),
                            ("udp64", 1, "UDP 64 B loss-free packets/s")):
        ratios = [r[("scion", test)][idx] / r[("wg", test)][idx] for r in runs
                  if ("scion", test) in r and ("wg", test) in r and r[("wg", test)][idx] > 0]
        if ratios:
            print(f"{what:32} {median(ratios):5.2f}x  ({min(ratios):.2f} to {max(ratios):.2f}, {len(ratios)} runs)")
        else:
            print(f"{what:32}   n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
