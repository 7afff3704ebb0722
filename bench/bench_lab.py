"""Lab forwarding: packets/s through one real router process, beside a raw UDP forwarder.

Workload: one core AS (1-ff00:0:110) with two child interfaces, its router started as the lab starts it
(``scion-appliance router`` in its own process). A sender thread blasts valid SCION/UDP packets (path
111 -> 110 -> 112, 64-byte payload, MACs minted under each AS's key, as they arrive from 111) into the
router's interface 1 with sendmmsg; the bench counts what comes out of interface 2 during a fixed window.
In the same run, the same sender and receiver measure a raw forwarder process: recvmmsg/sendmmsg in
batches of 64 with no SCION processing (the underlay's own limit from Python over the same I/O module).
Prints medians of several runs, packets/s, ns/packet and the router's share of the raw limit.

    .venv/bin/python bench/bench_lab.py [--runs 5] [--window 1.0]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scion_appliance._fast import udpio  # noqa: E402
from scion_appliance.router import process_hop  # noqa: E402
from scion_appliance.router import topology as topo_json  # noqa: E402
from scion_appliance.router.topology import BorderRouter, Interface, Topology  # noqa: E402
from scion_appliance.scion.addr import IA  # noqa: E402
from scion_appliance.scion.keys import load_master_keys, write_master_key  # noqa: E402
from scion_appliance.scion.l4 import UdpDatagram  # noqa: E402
from scion_appliance.scion.mint import BeaconHop, SegmentSpec, mint_scion_path  # noqa: E402
from scion_appliance.scion.packet import ScionPacket  # noqa: E402

NET = "127.213.0"
ROUTER = f"{NET}.1"
IN_FROM = (f"{NET}.11", 50041)  # the 111 side of interface 1
OUT_TO = (f"{NET}.12", 50042)  # the 112 side of interface 2
RAW_IN = (f"{NET}.1", 51000)
BATCH = 64
STRIDE = 2048

FORWARDER = """
import socket, sys
from scion_appliance._fast import udpio
from array import array
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(({host!r}, {port}))
dest = udpio.addr_pack({dhost!r}, {dport})
buf = bytearray(64 * 2048); lens = array('I', bytes(256)); fd = s.fileno()
print("ready", flush=True)
import select
p = select.poll(); p.register(fd, select.POLLIN)
while True:
    p.poll()
    while (n := udpio.recv_batch(fd, buf, 2048, lens)):
        udpio.send_batch(fd, buf, 2048, lens, None, dest, n)
"""


def make_packet(keys: dict[str, bytes]) -> bytes:
    ts = int(time.time())
    up = SegmentSpec((BeaconHop(0, 1, keys["110"]), BeaconHop(41, 0, keys["111"])), ts, 0x1111, False)
    down = SegmentSpec((BeaconHop(0, 2, keys["110"]), BeaconHop(42, 0, keys["112"])), ts, 0x2222, True)
    pkt = ScionPacket(
        dst_ia=IA.parse("1-ff00:0:112"),
        src_ia=IA.parse("1-ff00:0:111"),
        dst_host=ipaddress.ip_address("10.0.0.2"),
        src_host=ipaddress.ip_address("10.0.0.1"),
        l4=UdpDatagram(30000, 30001, 0, bytes(64)),
        path=mint_scion_path([up, down]),
    ).with_checksum()
    # the packet as 111's router sends it: its egress step applied
    return process_hop(pkt.serialize(), keys["111"], ingress=False)


def start_router(d: Path) -> tuple[subprocess.Popen[bytes], dict[str, bytes]]:
    keys_dir = d / "keys"
    keys_dir.mkdir()
    write_master_key(keys_dir / "master0.key")
    interfaces = {
        1: Interface(1, (ROUTER, 50001), IN_FROM, IA.parse("1-ff00:0:111"), "child", 1472, 41),
        2: Interface(2, (ROUTER, 50002), OUT_TO, IA.parse("1-ff00:0:112"), "child", 1472, 42),
    }
    topo = Topology(
        IA.parse("1-ff00:0:110"),
        True,
        1472,
        (1, 65535),
        {"br": BorderRouter("br", (ROUTER, 30042), interfaces)},
    )
    (d / "topology.json").write_text(json.dumps(topo_json.to_json(topo)))
    ready = d / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scion_appliance", "router", "--topology", str(d / "topology.json"),
         "--keys", str(keys_dir), "--ready-file", str(ready), "--log-level", "warning"],
        cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("router did not start")
        time.sleep(0.02)
    keys = {"110": load_master_keys(keys_dir).hop_key, "111": os.urandom(16), "112": os.urandom(16)}
    return proc, keys


def start_forwarder() -> subprocess.Popen[bytes]:
    code = FORWARDER.format(host=RAW_IN[0], port=RAW_IN[1], dhost=OUT_TO[0], dport=OUT_TO[1])
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def measure(packet: bytes, target: tuple[str, int], window: float) -> float:
    """Packets/s arriving at OUT_TO while a sender thread blasts ``packet`` at ``target``."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind((IN_FROM[0], 0))
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(OUT_TO)
    buf = bytearray(BATCH * STRIDE)
    for i in range(BATCH):
        buf[i * STRIDE : i * STRIDE + len(packet)] = packet
    lens = array("I", [len(packet)] * BATCH)
    dest = udpio.addr_pack(*target)
    stop = threading.Event()

    def blast() -> None:
        fd = tx.fileno()
        while not stop.is_set():
            try:
                if udpio.send_batch(fd, buf, STRIDE, lens, None, dest, BATCH) == 0:
                    time.sleep(0)
            except OSError:
                time.sleep(0.0001)

    rbuf = bytearray(BATCH * STRIDE)
    rlens = array("I", bytes(4 * BATCH))
    rx.settimeout(0.2)
    t = threading.Thread(target=blast, daemon=True)
    t.start()
    count = 0
    try:
        fd = rx.fileno()
        warm = time.monotonic() + 0.2
        while time.monotonic() < warm:  # reach steady state first
            udpio.recv_batch(fd, rbuf, STRIDE, rlens)
        t0 = time.monotonic()
        end = t0 + window
        while (now := time.monotonic()) < end:
            n = udpio.recv_batch(fd, rbuf, STRIDE, rlens)
            if n:
                count += n
            else:
                time.sleep(0)
        elapsed = now - t0
    finally:
        stop.set()
        t.join()
        tx.close()
        rx.close()
    return count / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--window", type=float, default=1.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        router, keys = start_router(Path(tmp))
        forwarder = start_forwarder()
        try:
            packet = make_packet(keys)
            routed, raw = [], []
            for _ in range(args.runs):
                routed.append(measure(packet, (ROUTER, 50001), args.window))
                raw.append(measure(packet, RAW_IN, args.window))
        finally:
            for p in (router, forwarder):
                p.terminate()
                p.wait(5)
    r, w = statistics.median(routed), statistics.median(raw)
    print(
        f"packet: {len(packet)} bytes SCION/UDP, 3 hop fields; runs: {args.runs} x {args.window:.1f} s (medians)"
    )
    print(f"{'':30} {'packets/s':>12} {'ns/packet':>10}")
    print(f"{'router (one process)':30} {r:12,.0f} {1e9 / r:10.0f}")
    print(f"{'raw UDP forwarder (limit)':30} {w:12,.0f} {1e9 / w:10.0f}")
    print(f"router / raw forwarder: {r / w:.2f}")
    print(f"all runs: router {[round(x) for x in routed]}, raw {[round(x) for x in raw]}")


if __name__ == "__main__":
    main()
