"""Router step benchmark: batch path processing ns/packet beside the raw C limit and Python CMAC.

Workloads (packets from tests/data/router-trace, hop keys from its trace.json):
- transit: ff00:0:2 owning both links, packet 1 in on interface 2 and out on 1 (one MAC).
- xover:   ff00:0:1 owning both links, packet 3 changes segment (two MACs).
- mixed:   ff00:0:2 as in transit, but the batch cycles through 20 minted paths (up segments of
  3 to 6 hops, down segments of 2 or 3) crossing it at different hops: consecutive packets
  never share a path meta header, so the step's per-batch decode memo does not help.
Measured in the same run, each the median of RUNS runs, the runs of all measures of a workload
interleaved (one run of each in turn) so that load from other processes falls on all alike:
- step (C loop): RouterStep.bench_batch: per round, restore the bytes the step rewrites (path meta
  header and info fields, 28 bytes per packet) then rs_batch over the batch.
- step (batch() from Python): one Python call per batch (64 and 256 packets), restore untimed.
- raw limit: per packet a header copy plus one AES block per MAC, plain C (routerstep._c_limit).
- cryptography CMAC per packet from Python (hop input built in Python, MAC compared).
"""

from __future__ import annotations

import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scion_appliance._fast import routerstep as rs  # noqa: E402
from scion_appliance._fast.hopmac import has_aesni  # noqa: E402
from scion_appliance.router import process_hop  # noqa: E402
from scion_appliance.scion.mint import BeaconHop, SegmentSpec, mint_path  # noqa: E402
from tests.router_trace import KEYS, PACKETS, TRACE_NOW, scion_packet  # noqa: E402

RUNS = 7
BATCH = 64
STRIDE = 256


def router(as_name: str, ingress_lt: int, egress_lt: int) -> rs.RouterStep:
    r = rs.RouterStep(KEYS[as_name])
    r.set_interface(2, ingress_lt, owned=True)
    r.set_interface(1, egress_lt, owned=True)
    return r


def make_batch(pkts: list[bytes], n: int = BATCH) -> tuple[bytearray, memoryview]:
    """n slots cycling through pkts."""
    buf = bytearray(n * STRIDE)
    lens = memoryview(bytearray(4 * n)).cast("I")
    for i in range(n):
        pkt = pkts[i % len(pkts)]
        buf[i * STRIDE : i * STRIDE + len(pkt)] = pkt
        lens[i] = len(pkt)
    return buf, lens


Sampler = Callable[[], float]  # one run: ns/packet


def bench_step_c(r: rs.RouterStep, pkts: list[bytes], rounds: int) -> Sampler:
    buf, lens = make_batch(pkts)
    pristine = bytes(buf)
    po = 12 + 16 + 4 * (((pkts[0][9] >> 4) & 3) + 1) + 4 * ((pkts[0][9] & 3) + 1)
    assert all(p[9] == pkts[0][9] for p in pkts)
    end = po + 4 + 8 * 3  # meta header + three info fields: all the step rewrites here
    return lambda: (
        r.bench_batch(buf, pristine, lens, BATCH, STRIDE, 2, TRACE_NOW, end, rounds, po) / (BATCH * rounds)
    )


def bench_step_py(r: rs.RouterStep, pkts: list[bytes], rounds: int, n: int = BATCH) -> Sampler:
    buf, lens = make_batch(pkts, n)
    pristine = bytes(buf)
    out = dict(
        reason=bytearray(n),
        action=bytearray(n),
        egress=memoryview(bytearray(2 * n)).cast("H"),
        pointer=memoryview(bytearray(2 * n)).cast("H"),
        order=memoryview(bytearray(4 * n)).cast("I"),
        group_off=memoryview(bytearray(4 * (n + 1))).cast("I"),
        group_key=memoryview(bytearray(4 * n)).cast("I"),
    )

    def run() -> float:
        total = 0
        for _ in range(rounds):
            buf[:] = pristine
            t0 = time.perf_counter_ns()
            n_ok, _ = r.batch(buf, lens, n, STRIDE, 2, TRACE_NOW, **out)
            total += time.perf_counter_ns() - t0
            assert n_ok == n
        return total / (n * rounds)

    return run


def bench_limit(key: bytes, pkts: list[bytes], blocks: int, rounds: int) -> Sampler:
    buf, lens = make_batch(pkts)
    hdr = max(p[5] for p in pkts) * 4
    return lambda: rs._c_limit(key, buf, lens, BATCH, STRIDE, hdr, blocks, rounds) / (BATCH * rounds)


def bench_cryptography(key: bytes, pkt: bytes, rounds: int) -> Sampler:
    po = 12 + 16 + 4 * (((pkt[9] >> 4) & 3) + 1) + 4 * ((pkt[9] & 3) + 1)
    meta = int.from_bytes(pkt[po : po + 4], "big")
    inf, hf = meta >> 30, (meta >> 24) & 0x3F
    segs = [(meta >> 12) & 0x3F, (meta >> 6) & 0x3F, meta & 0x3F]
    n_inf = sum(1 for s in segs if s)
    packets = [pkt] * BATCH

    def run() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            for p in packets:
                info = p[po + 4 + 8 * inf : po + 12 + 8 * inf]
                hop = p[po + 4 + 8 * n_inf + 12 * hf : po + 16 + 8 * n_inf + 12 * hf]
                seg = struct.unpack_from(">H", info, 2)[0] ^ struct.unpack_from(">H", hop, 6)[0]
                block = struct.pack(
                    ">HHIBBHHH",
                    0,
                    seg,
                    struct.unpack_from(">I", info, 4)[0],
                    0,
                    hop[1],
                    struct.unpack_from(">H", hop, 2)[0],
                    struct.unpack_from(">H", hop, 4)[0],
                    0,
                )
                c = CMAC(algorithms.AES(key))
                c.update(block)
                assert c.finalize()[:6] == hop[6:12]
        return (time.perf_counter_ns() - t0) / (BATCH * rounds)

    return run


def measure(r: rs.RouterStep, key: bytes, pkts: list[bytes], blocks: int) -> list[tuple[str, float, float]]:
    measures = [
        ("raw limit (hdr copy + AES/MAC)", bench_limit(key, pkts, blocks, 2000)),
        ("step, batch in C loop", bench_step_c(r, pkts, 2000)),
        ("step, batch() from Python (64)", bench_step_py(r, pkts, 300)),
        ("step, batch() from Python (256)", bench_step_py(r, pkts, 80, 256)),
    ]
    if len(pkts) == 1:
        measures.append(("cryptography CMAC per pkt (Py)", bench_cryptography(key, pkts[0], 20)))
    samples: list[list[float]] = [[] for _ in measures]
    for _ in range(RUNS):
        for (_, fn), got in zip(measures, samples, strict=True):
            got.append(fn())
    return [
        (name, statistics.median(got), min(got)) for (name, _), got in zip(measures, samples, strict=True)
    ]


def mixed_transit() -> list[bytes]:
    """Packets arriving at ff00:0:2 on its child link 2 and leaving on parent link 1, on 20
    different paths: up segments of 3 to 6 hops (this AS at each middle position), down
    segments of 2 or 3; every hop keyed with ff00:0:2's key, walked there by process_hop."""
    key, ts, out = KEYS["1-ff00:0:2"], 0x61B399D8, []
    for up_len in (3, 4, 5, 6):
        for down_len in (2, 3):
            # Construction order: core first; a middle AS has ingress 1 (parent), egress 2 (child).
            up = tuple(BeaconHop(0 if c == 0 else 1, 0 if c == up_len - 1 else 2, key) for c in range(up_len))
            down = tuple(
                BeaconHop(0 if c == 0 else 3, 0 if c == down_len - 1 else 4, key) for c in range(down_len)
            )
            path = mint_path(
                [SegmentSpec(up, ts, 0x1000 + up_len, False), SegmentSpec(down, ts, 0x2000, True)]
            )
            cur = process_hop(scion_packet(path), key, ingress=False, now=TRACE_NOW)  # leaves the leaf
            for _ in range(up_len - 2):  # each middle AS of the up segment: arrive, then leave
                out.append(cur)
                cur = process_hop(cur, key, ingress=True, now=TRACE_NOW, ingress_ifid=2)
                cur = process_hop(cur, key, ingress=False, now=TRACE_NOW)
    return out


def main() -> int:
    print(
        f"router step benchmark: batch {BATCH}, stride {STRIDE}, median of {RUNS} runs, AES-NI {has_aesni()}"
    )
    rows = []
    workloads = [
        ("transit (1 MAC)", "1-ff00:0:2", [PACKETS[1]], rs.LINK_CHILD, rs.LINK_PARENT, 1),
        ("xover (2 MACs)", "1-ff00:0:1", [PACKETS[3]], rs.LINK_CHILD, rs.LINK_CORE, 2),
        ("mixed (20 paths)", "1-ff00:0:2", mixed_transit(), rs.LINK_CHILD, rs.LINK_PARENT, 1),
    ]
    for label, as_name, pkts, ilt, elt, blocks in workloads:
        r = router(as_name, ilt, elt)
        for pkt in pkts:
            check = bytearray(pkt)
            assert r.step(check, ingress=2, now=TRACE_NOW)[:3] == (rs.OK, rs.ACT_FORWARD, 1), label
        rows.append((label, measure(r, KEYS[as_name], pkts, blocks)))
    print()
    print(f"{'workload':16} {'measure':32} {'median ns':>9} {'min ns':>7} {'Mpkt/s':>7} {'x limit':>7}")
    for label, measured in rows:
        limit = measured[0][1]
        for name, med, best in measured:
            print(f"{label:16} {name:32} {med:9.1f} {best:7.1f} {1e3 / med:7.2f} {med / limit:7.2f}")
    limit, step_c = rows[0][1][0][1], rows[0][1][1][1]
    goal = step_c <= 150 and step_c <= 3 * limit
    verdict = "met" if goal else "NOT met"
    print(f"\ngoal (transit batch step <= 150 ns/packet and within 3x of the raw limit): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
