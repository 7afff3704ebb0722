"""Seal and open throughput of scion_appliance._fast.aead against the raw-C limit, PyNaCl and cryptography.

For each plaintext size and batch size it measures, in one run:
- C limit: a plain C loop over crypto_aead_chacha20poly1305_ietf_{en,de}crypt_detached (csrc/bench_limits.c),
  same key, AD length, stride and in-place layout, no envelope, status or length work;
- aead: AeadKey.seal_batch / open_batch (and open_batch with a replay window, the real receive path),
  one Python call per batch, timed per call;
- PyNaCl and cryptography's ChaCha20Poly1305, one Python call per packet (nonces and inputs prepared).
Each figure is the median of --runs runs; the ratio is throughput relative to the C limit.

    .venv/bin/python bench/bench_aead.py [--runs 5] [--ms 15] [--sizes 64,512,1400] [--batches 64,256]
"""

from __future__ import annotations

import argparse
import array
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import climit
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from interleaved import measure
from nacl import bindings

from scion_appliance._fast.aead import AeadKey
from scion_appliance._fast.replay import ReplayWindow

STRIDE = 2048
KEY = bytes(range(32))
RECEIVER = 0x01020304


def header(n: int) -> bytes:
    return b"\x04\x00\x00\x00" + RECEIVER.to_bytes(4, "little") + n.to_bytes(8, "little")


def bench_seal(lib: Any, size: int, n: int) -> dict[str, Callable[[int], int]]:
    buf = bytearray(n * STRIDE)
    addr = climit.address(buf)
    out: dict[str, Callable[[int], int]] = {}
    out["C limit"] = lambda reps: int(lib.limit_seal(KEY, addr, STRIDE, n, size, reps))

    key = AeadKey(KEY)
    plain = array.array("I", [size] * n)
    lengths, status = array.array("I", plain), bytearray(n)
    clock = time.perf_counter_ns

    def ours(reps: int) -> int:
        total = 0
        for _ in range(reps):
            lengths[:] = plain
            t0 = clock()
            key.seal_batch(buf, STRIDE, lengths, status, RECEIVER)
            total += clock() - t0
        assert not any(status) and lengths[0] == size + 32
        return total

    out["aead seal_batch"] = ours

    pts = [bytes(size) for _ in range(n)]
    nonces = [bytes(4) + i.to_bytes(8, "little") for i in range(n)]
    ads = [header(i) for i in range(n)]
    enc = bindings.crypto_aead_chacha20poly1305_ietf_encrypt

    def nacl(reps: int) -> int:
        t0 = clock()
        for _ in range(reps):
            for i in range(n):
                enc(pts[i], ads[i], nonces[i], KEY)
        return clock() - t0

    out["PyNaCl per packet"] = nacl
    c = ChaCha20Poly1305(KEY)

    def crypt(reps: int) -> int:
        t0 = clock()
        for _ in range(reps):
            for i in range(n):
                c.encrypt(nonces[i], pts[i], ads[i])
        return clock() - t0

    out["cryptography per packet"] = crypt
    return out


def bench_open(lib: Any, size: int, n: int) -> dict[str, Callable[[int], int]]:
    key = AeadKey(KEY)  # fresh: slot i carries counter i, as the C limit expects
    pristine = bytearray(n * STRIDE)
    sealed = array.array("I", [size] * n)
    status = bytearray(n)
    assert key.seal_batch(pristine, STRIDE, sealed, status, RECEIVER) == n
    buf = bytearray(pristine)
    out: dict[str, Callable[[int], int]] = {}
    addr, paddr = climit.address(buf), climit.address(pristine)

    def limit(reps: int) -> int:
        ns = lib.limit_open(KEY, addr, paddr, STRIDE, n, size, reps)
        assert ns, "the C limit failed to verify a packet"
        return int(ns)

    out["C limit"] = limit
    lengths, counters = array.array("I", sealed), array.array("Q", bytes(8 * n))
    zero = bytes(n)
    clock = time.perf_counter_ns
    window = ReplayWindow(8192)

    def ours(with_window: bool) -> Callable[[int], int]:
        def run(reps: int) -> int:
            total = 0
            for _ in range(reps):
                buf[:] = pristine
                lengths[:] = sealed
                status[:] = zero
                if with_window:
                    window.reset()
                    t0 = clock()
                    key.open_batch(buf, STRIDE, lengths, status, counters, window=window)
                else:
                    t0 = clock()
                    key.open_batch(buf, STRIDE, lengths, status, counters)
                total += clock() - t0
            assert not any(status) and lengths[0] == size, "a packet failed to open"
            return total

        return run

    out["aead open_batch"] = ours(False)
    out["aead open_batch+replay"] = ours(True)

    cts = [bytes(pristine[i * STRIDE + 16 : i * STRIDE + 32 + size]) for i in range(n)]
    nonces = [bytes(4) + i.to_bytes(8, "little") for i in range(n)]
    ads = [header(i) for i in range(n)]
    dec = bindings.crypto_aead_chacha20poly1305_ietf_decrypt

    def nacl(reps: int) -> int:
        t0 = clock()
        for _ in range(reps):
            for i in range(n):
                dec(cts[i], ads[i], nonces[i], KEY)
        return clock() - t0

    out["PyNaCl per packet"] = nacl
    c = ChaCha20Poly1305(KEY)

    def crypt(reps: int) -> int:
        t0 = clock()
        for _ in range(reps):
            for i in range(n):
                c.decrypt(nonces[i], cts[i], ads[i])
        return clock() - t0

    out["cryptography per packet"] = crypt
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ms", type=float, default=15.0, help="target length of one run")
    ap.add_argument("--sizes", default="64,512,1400")
    ap.add_argument("--batches", default="64,256")
    args = ap.parse_args()
    lib = climit.load()
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    print(f"ChaCha20-Poly1305 IETF, libsodium; stride {STRIDE}; medians of {args.runs} runs")
    print(
        f"{'op':5} {'bytes':>5} {'batch':>5}  {'implementation':24} {'ns/pkt':>8} {'Mpkt/s':>7} "
        f"{'Gbit/s':>7} {'vs C':>6}"
    )
    worst = 10.0
    for op, fn in (("seal", bench_seal), ("open", bench_open)):
        for size in sizes:
            for n in batches:
                res = measure(fn(lib, size, n), n, args.runs, args.ms)
                for name, (ns, ratio) in res.items():
                    if name.startswith("aead"):
                        worst = min(worst, ratio)
                    print(
                        f"{op:5} {size:5} {n:5}  {name:24} {ns:8.1f} {1e3 / ns:7.3f} "
                        f"{size * 8 / ns:7.2f} {ratio:6.1%}"
                    )
    print(f"lowest aead/C-limit throughput ratio: {worst:.1%} (goal >= 90%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
