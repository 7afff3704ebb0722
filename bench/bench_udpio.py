"""Batched UDP I/O on loopback: udpio (recvmmsg/sendmmsg from Cython) beside a plain Python
socket.sendto/recvfrom_into loop and beside the limit, a plain C sendmmsg/recvmmsg loop compiled and
run in this same process.

Workload per round: send a batch of 64 datagrams from one 127.0.0.1 socket to another, then receive
them (with source addresses). Send and receive are timed separately; on loopback the send side carries
the kernel's delivery work too. Medians of RUNS short runs; ns/packet, packets/s and the ratio to C.

    .venv/bin/python bench/bench_udpio.py [--runs 5] [--rounds 400]
"""

from __future__ import annotations

import argparse
import ctypes
import socket
import statistics
import subprocess
import tempfile
import time
from array import array
from collections.abc import Callable
from pathlib import Path

from scion_appliance._fast import udpio

BATCH = 64
STRIDE = 2048

RAW_C = r"""
#define _GNU_SOURCE
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static double now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec;
}

/* rounds x (sendmmsg batch to dst, recvmmsg the batch back with source names); returns 0 or -1. */
int raw_loop(int tx, int rx, const struct sockaddr_in *dst, unsigned char *buf, unsigned stride,
             unsigned batch, unsigned size, unsigned rounds, double *send_ns, double *recv_ns) {
    struct mmsghdr m[256]; struct iovec iov[256]; struct sockaddr_in names[256];
    double ts = 0, tr = 0;
    if (batch > 256) return -1;
    for (unsigned r = 0; r < rounds; r++) {
        double t0 = now_ns();
        for (unsigned i = 0; i < batch; i++) {
            iov[i].iov_base = buf + (size_t)i * stride; iov[i].iov_len = size;
            memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
            m[i].msg_hdr.msg_iov = &iov[i]; m[i].msg_hdr.msg_iovlen = 1;
            m[i].msg_hdr.msg_name = (void *)dst; m[i].msg_hdr.msg_namelen = sizeof *dst;
        }
        unsigned sent = 0;
        while (sent < batch) {
            int k = sendmmsg(tx, m + sent, batch - sent, 0);
            if (k < 0) return -1;
            sent += k;
        }
        double t1 = now_ns();
        unsigned got = 0;
        for (unsigned spins = 0; got < batch && spins < 1000000; spins++) {
            unsigned want = batch - got;
            for (unsigned i = 0; i < want; i++) {
                iov[i].iov_base = buf + (size_t)i * stride; iov[i].iov_len = stride;
                memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
                m[i].msg_hdr.msg_iov = &iov[i]; m[i].msg_hdr.msg_iovlen = 1;
                m[i].msg_hdr.msg_name = &names[i]; m[i].msg_hdr.msg_namelen = sizeof names[i];
            }
            int k = recvmmsg(rx, m, want, MSG_DONTWAIT | MSG_TRUNC, NULL);
            if (k > 0) got += k;
        }
        if (got < batch) return -1;
        tr += now_ns() - t1;
        ts += t1 - t0;
    }
    *send_ns = ts; *recv_ns = tr;
    return 0;
}
"""


def load_raw_c(tmp: Path) -> Callable[..., int]:
    src, lib = tmp / "raw.c", tmp / "raw.so"
    src.write_text(RAW_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    fn = ctypes.CDLL(str(lib)).raw_loop
    fn.restype = ctypes.c_int
    return fn


def sockets() -> tuple[socket.socket, socket.socket]:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    tx.bind(("127.0.0.1", 0))
    rx.bind(("127.0.0.1", 0))
    tx.setblocking(False)
    rx.setblocking(False)
    return tx, rx


def run_python(tx: socket.socket, rx: socket.socket, size: int, rounds: int) -> tuple[float, float]:
    buf = bytearray(BATCH * STRIDE)
    view = memoryview(buf)
    out = [view[i * STRIDE : i * STRIDE + size] for i in range(BATCH)]
    slots = [view[i * STRIDE : (i + 1) * STRIDE] for i in range(BATCH)]
    dst = rx.getsockname()
    ts = tr = 0
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for p in out:
            tx.sendto(p, dst)
        t1 = time.perf_counter_ns()
        got = 0
        for _spin in range(1_000_000):
            try:
                rx.recvfrom_into(slots[got])
            except BlockingIOError:
                continue
            got += 1
            if got == BATCH:
                break
        tr += time.perf_counter_ns() - t1
        ts += t1 - t0
    return ts, tr


def run_udpio(tx: socket.socket, rx: socket.socket, size: int, rounds: int) -> tuple[float, float]:
    out, inb = bytearray(BATCH * STRIDE), bytearray(BATCH * STRIDE)
    lengths, rlengths = array("I", [size]) * BATCH, array("I", [0]) * BATCH
    addrs = udpio.new_addrs(BATCH)
    dst = udpio.addr_pack(*rx.getsockname())
    txfd, rxfd = tx.fileno(), rx.fileno()
    ts = tr = 0
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        sent = 0
        while sent < BATCH:
            sent += udpio.send_batch(txfd, out, STRIDE, lengths, None, dst, BATCH - sent, sent)
        t1 = time.perf_counter_ns()
        got = 0
        for _spin in range(1_000_000):
            got += udpio.recv_batch(rxfd, inb, STRIDE, rlengths, addrs, BATCH - got)
            if got == BATCH:
                break
        tr += time.perf_counter_ns() - t1
        ts += t1 - t0
    return ts, tr


def run_c(raw: Callable[..., int], tx: socket.socket, rx: socket.socket, size: int,
          rounds: int) -> tuple[float, float]:
    class SockaddrIn(ctypes.Structure):
        _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ubyte * 2),
                    ("addr", ctypes.c_ubyte * 4), ("zero", ctypes.c_ubyte * 8)]

    host, port = rx.getsockname()
    sa = SockaddrIn(socket.AF_INET, (ctypes.c_ubyte * 2)(*port.to_bytes(2, "big")),
                    (ctypes.c_ubyte * 4)(*socket.inet_aton(host)))
    buf = (ctypes.c_ubyte * (BATCH * STRIDE))()
    s_ns, r_ns = ctypes.c_double(), ctypes.c_double()
    rc = raw(tx.fileno(), rx.fileno(), ctypes.byref(sa), buf, STRIDE, BATCH, size, rounds,
             ctypes.byref(s_ns), ctypes.byref(r_ns))
    if rc != 0:
        raise RuntimeError("raw C loop failed")
    return s_ns.value, r_ns.value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=300, help="batches of 64 per run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = load_raw_c(Path(tmp))
        tx, rx = sockets()
        impls: dict[str, Callable[[int], tuple[float, float]]] = {
            "C sendmmsg/recvmmsg": lambda size: run_c(raw, tx, rx, size, args.rounds),
            "udpio (this module)": lambda size: run_udpio(tx, rx, size, args.rounds),
            "Python sendto/recvfrom": lambda size: run_python(tx, rx, size, args.rounds),
        }
        packets = BATCH * args.rounds
        print(f"loopback 127.0.0.1, batch {BATCH}, {packets} packets per run, median of {args.runs} runs")
        print(f"{'size':>5}  {'implementation':<24}{'send ns/pkt':>12}{'recv ns/pkt':>12}"
              f"{'total pkt/s':>13}{'vs C':>7}")
        for size in (64, 1400):
            base = None
            for name, fn in impls.items():
                fn(size)  # warm-up
                runs = [fn(size) for _ in range(args.runs)]
                s = statistics.median(r[0] for r in runs) / packets
                r = statistics.median(r[1] for r in runs) / packets
                total = s + r
                base = base or total
                print(f"{size:>5}  {name:<24}{s:>12.0f}{r:>12.0f}{1e9 / total:>13,.0f}{total / base:>6.2f}x")
        tx.close()
        rx.close()


if __name__ == "__main__":
    main()
