"""Batch SCION parse speed: the Cython/C batch parser beside a plain-Python ``struct`` parser.

Workload: a mix of scionproto's golden packets (tests/data/scionproto-golden) in 2048-byte slots,
at least 1M packets per measured run for the batch parser. Prints medians of several runs,
ns/packet, packets/s and the speed-up over the struct parser measured in the same run.

    .venv/bin/python bench/bench_codec.py [--runs 7] [--packets 1048576]
"""

from __future__ import annotations

import argparse
import array
import statistics
import struct
import time
from pathlib import Path

from scion_appliance._fast import codec

GOLDEN = sorted((Path(__file__).parent.parent / "tests" / "data" / "scionproto-golden").glob("*.bin"))
STRIDE = 2048
BATCH = 256

_COMMON = struct.Struct(">IBBHBBHQQ")


def struct_parse(pkt: bytes) -> tuple:
    """The same fields the batch record holds, in plain Python: the baseline."""
    w0, nh, hl, pl, pt, addr, _, dst_ia, src_ia = _COMMON.unpack_from(pkt)
    hdr = hl * 4
    if w0 >> 28 or hdr > len(pkt) or hdr + pl != len(pkt):
        return (1,)
    dl = 16 if addr >> 4 == 3 else 4
    sl = 16 if addr & 0xF == 3 else 4
    path_off = 28 + dl + sl
    curr_inf = curr_hf = 0
    segs: tuple[int, ...] = (0, 0, 0)
    if pt == 1:
        (meta,) = struct.unpack_from(">I", pkt, path_off)
        curr_inf, curr_hf = meta >> 30, (meta >> 24) & 0x3F
        segs = ((meta >> 12) & 0x3F, (meta >> 6) & 0x3F, meta & 0x3F)
    off = hdr
    while nh in (200, 201):
        nh, off = pkt[off], off + (pkt[off + 1] + 1) * 4
    ports = struct.unpack_from(">HH", pkt, off) if nh == 17 else (0, 0)
    return (0, w0 & 0xFFFFF, dst_ia, src_ia, path_off, curr_inf, curr_hf, segs, nh, off, ports)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--packets", type=int, default=1 << 20)
    args = ap.parse_args()

    pkts = [p.read_bytes() for p in GOLDEN]
    mix = [pkts[i % len(pkts)] for i in range(BATCH)]
    buf = bytearray(STRIDE * BATCH)
    for i, p in enumerate(mix):
        buf[i * STRIDE : i * STRIDE + len(p)] = p
    lengths = array.array("I", map(len, mix))
    recs = codec.ScionRecords(BATCH)
    assert recs.parse_batch(buf, STRIDE, lengths, BATCH) == BATCH
    rounds = max(1, args.packets // BATCH)

    batch_ns, struct_ns = [], []
    n_struct = 50_000
    for _ in range(args.runs):
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            recs.parse_batch(buf, STRIDE, lengths, BATCH)
        batch_ns.append((time.perf_counter_ns() - t0) / (rounds * BATCH))
        t0 = time.perf_counter_ns()
        for i in range(n_struct):
            struct_parse(mix[i % BATCH])
        struct_ns.append((time.perf_counter_ns() - t0) / n_struct)

    b, s = statistics.median(batch_ns), statistics.median(struct_ns)
    print(
        f"SCION batch parse, {rounds * BATCH} packets/run (golden mix, {len(pkts)} kinds), medians of {args.runs}"
    )
    print(f"{'parser':<28}{'ns/packet':>12}{'packets/s':>16}{'ratio':>10}")
    print(f"{'batch (Cython over C)':<28}{b:>12.1f}{1e9 / b:>16,.0f}{s / b:>9.1f}x")
    print(f"{'plain Python struct':<28}{s:>12.1f}{1e9 / s:>16,.0f}{1.0:>9.1f}x")
    print(
        f"goal: <= 100 ns/packet and >= 20x the struct parser: {'met' if b <= 100 and s / b >= 20 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
