"""TUN -> wire: the TX worker thread (``_fast.txworker``, no Python per batch) beside the same C steps
driven from a Python loop once per batch (what the in-loop batch path does, without trio), beside the
raw-C limit of the sealing alone (csrc/bench_limits.c, same libsodium).

Set-up (needs root): a TUN device in a scratch network namespace; a generator process in that namespace
sends 1392-byte IP packets (UDP) at full speed with sendmmsg towards the remote prefix routed into the
TUN; the consumer reads the TUN, frames, seals, stamps and sends SCION/UDP datagrams to a sink socket on
127.0.0.1 that nobody reads (the kernel drops there, after the send). Per run: packets taken from the
TUN per second, and the consumer's CPU time per packet (the worker thread's own CPU time from /proc).
Medians of RUNS short runs.

    .venv/bin/python bench/bench_txworker.py [--runs 5] [--seconds 1.0] [--size 1392] [--offload]
"""

from __future__ import annotations

import argparse
import ipaddress
import multiprocessing
import os
import select
import socket
import statistics
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import climit

from scion_appliance import netns, tun
from scion_appliance._fast import aead, pipeline, udpio
from scion_appliance._fast.txworker import TxWorker
from scion_appliance.scion.addr import IA
from scion_appliance.scion.builder import UdpPacketBuilder

HOST, REMOTE_NET, REMOTE_HOST = "192.0.2.1", "198.51.100.0/24", "198.51.100.7"
BATCH, STRIDE, FRAME = 64, 2048, 1472
TICK = os.sysconf("SC_CLK_TCK")


def generate(ns: str, size: int, stop_at: float) -> None:
    """Child process: sendmmsg batches of ``size``-byte IP packets into the TUN until ``stop_at``."""
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    payload = size - 28
    buf = bytearray(STRIDE * BATCH)
    lengths = array("I", [payload] * BATCH)
    dest = udpio.addr_pack(REMOTE_HOST, 9000)
    while time.monotonic() < stop_at:
        try:
            if udpio.send_batch(s.fileno(), buf, STRIDE, lengths, None, dest, BATCH) == 0:
                select.select([], [s], [], 0.001)
        except OSError:
            time.sleep(0.0005)  # the TUN queue overflowed (ENOBUFS): the consumer is the bottleneck


def thread_cpu(tid: int) -> float:
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run_thread(dev: tun.TunDevice, sock: socket.socket, tmpl: bytes, dest: bytes, seconds: float,
               ns: str, size: int) -> tuple[float, float]:
    w = TxWorker(dev.fileno(), dev.vnet_hdr, sock.fileno(), pipeline.PrefixTable([(0, REMOTE_NET)]), BATCH, STRIDE, FRAME)
    w.arm(0, aead.AeadKey(os.urandom(32)), 1, 0, 1, 0, tmpl, dest, 1)
    before = set(os.listdir("/proc/self/task"))
    w.start()
    tid = int((set(os.listdir("/proc/self/task")) - before).pop())
    gen = multiprocessing.Process(target=generate, args=(ns, size, time.monotonic() + seconds + 0.3))
    gen.start()
    time.sleep(0.2)  # warm up
    p0, c0, t0 = w.counters()["tun_packets_read"], thread_cpu(tid), time.monotonic()
    time.sleep(seconds)
    p1, c1, t1 = w.counters()["tun_packets_read"], thread_cpu(tid), time.monotonic()
    gen.join()
    w.stop()
    w.disarm(0)
    n = p1 - p0
    return n / (t1 - t0), (c1 - c0) / max(n, 1) * 1e9


def run_loop(dev: tun.TunDevice, sock: socket.socket, tmpl: bytes, dest: bytes, seconds: float,
             ns: str, size: int) -> tuple[float, float]:
    tx = pipeline.TxBatch(BATCH, STRIDE, FRAME)
    table = pipeline.pipeline.PrefixTable([(0, REMOTE_NET)])
    header = pipeline.HeaderTemplate(tmpl)
    key = aead.AeadKey(os.urandom(32))
    poller = select.poll()
    poller.register(dev.fileno(), select.POLLIN)
    fd, sfd, seq = dev.fileno(), sock.fileno(), 0
    gen = multiprocessing.Process(target=generate, args=(ns, size, time.monotonic() + seconds + 0.3))
    gen.start()
    t_warm = time.monotonic() + 0.2
    n = 0
    c0 = t0 = 0.0
    while True:
        now = time.monotonic()
        if t0 == 0.0 and now >= t_warm:
            n, c0, t0 = 0, time.thread_time(), now
        if t0 and now - t0 >= seconds:
            break
        poller.poll(50)
        got = tx.read_tun(fd, dev.reader)
        if got <= 0:
            continue
        n += got
        tx.classify(table)
        k, _, seq = tx.frame(0, 0, 1, seq)
        if k:
            key.seal_batch(tx.out, tx.out_stride, tx.out_lens[:k], tx.out_status[:k], 1, off=pipeline.HEADROOM,
                           counters=tx.counters[:k], msg_type=4)
            live = tx.stamp(header)
            sent = 0
            while sent < live:
                got_sent = tx.send(sfd, dest, sent, True)
                if got_sent == 0:
                    break
                sent += got_sent
    c1, t1 = time.thread_time(), time.monotonic()
    gen.join()
    return n / (t1 - t0), (c1 - c0) / max(n, 1) * 1e9


def raw_seal_ns(size: int) -> float:
    lib = climit.load()
    n, reps, stride = 64, 200, 2048
    buf = bytearray(stride * n)
    key = bytearray(os.urandom(32))
    ns = lib.limit_seal(climit.address(key), climit.address(buf), stride, n, size + 16 - 32, reps)
    return float(ns) / (n * reps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=1392, help="IP packet size from the LAN (bytes)")
    ap.add_argument("--offload", action="store_true", help="virtio-net header TUN (GSO super-packets split)")
    args = ap.parse_args()
    why = netns.unavailable_reason() or tun.unavailable_reason()
    if why is not None:
        print(f"bench_txworker needs root, network namespaces and TUN: {why}")
        return 1
    multiprocessing.set_start_method("fork")
    results: dict[str, list[tuple[float, float]]] = {"thread": [], "loop": []}
    with (
        netns.scratch("sa-txb") as ns,
        tun.TunDevice.open("sig0", netns=ns, mtu=1400, addresses=[f"{HOST}/24"], routes=[REMOTE_NET],
                           offload=args.offload) as dev,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
    ):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sink.bind(("127.0.0.1", 0))
        tmpl = UdpPacketBuilder(IA.parse("1-ff00:0:110"), ipaddress.ip_address("127.0.0.1"), sock.getsockname()[1],
                                IA.parse("1-ff00:0:111"), ipaddress.ip_address("127.0.0.1"),
                                sink.getsockname()[1]).build(b"")
        dest = udpio.addr_pack("127.0.0.1", sink.getsockname()[1])
        for _ in range(args.runs):
            results["thread"].append(run_thread(dev, sock, tmpl, dest, args.seconds, ns, args.size))
            results["loop"].append(run_loop(dev, sock, tmpl, dest, args.seconds, ns, args.size))
    seal = raw_seal_ns(args.size)
    print(f"TUN -> wire, {args.size}-byte packets, batch {BATCH}, medians of {args.runs} runs of "
          f"{args.seconds:g} s{' (offload TUN)' if args.offload else ''}")
    print(f"{'consumer':<28}{'packets/s':>12}{'CPU ns/pkt':>12}{'x raw seal':>12}")
    for name, label in (("thread", "TX worker thread (C)"), ("loop", "Python loop per batch")):
        pps = statistics.median(r[0] for r in results[name])
        cpu = statistics.median(r[1] for r in results[name])
        print(f"{label:<28}{pps:>12,.0f}{cpu:>12,.0f}{cpu / seal:>12.2f}")
    print(f"{'raw C: seal only':<28}{1e9 / seal:>12,.0f}{seal:>12,.0f}{1.0:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
