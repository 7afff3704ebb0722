"""Handshake cost: how many initiations per second one core can answer, and the DoS checks' cost.

Measured in one run, median of --runs runs each:
- limit: the X25519 work a responder cannot avoid (1 ephemeral key generation + 4 DH: es, ss, ee, se),
  libsodium called through PyNaCl's C bindings with nothing else around it;
- respond: Handshaker.handle_initiation (parse, mac1, Noise IKpsk2 read + write, replay mark, response);
- initiate / finish: Handshaker.create_initiation and handle_response on the initiator;
- mac1 check and cookie reply: what an appliance under load spends per initiation instead of DH.

    .venv/bin/python bench/bench_handshake.py [--runs 5] [--n 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nacl import bindings

from scion_appliance.tunnel import keys
from scion_appliance.tunnel.handshake import Accepted, Handshaker, MemoryTimestampStore, PeerConfig

A, B = keys.generate_private_key(), keys.generate_private_key()
A_PUB, B_PUB = keys.public_key(A), keys.public_key(B)
PSK = bytes(range(32))


def timed(fn: Callable[[int], None], n: int) -> float:
    t0 = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    n = args.n

    def limit(k: int) -> None:
        priv, pub = bytes(range(32)), B_PUB
        for _ in range(k):
            bindings.crypto_scalarmult_base(priv)
            for _ in range(4):
                bindings.crypto_scalarmult(priv, pub)

    def prepare() -> tuple[Handshaker, Handshaker, list[bytes]]:
        a = Handshaker(A, [PeerConfig(B_PUB, PSK)], MemoryTimestampStore())
        b = Handshaker(B, [PeerConfig(A_PUB, PSK)], MemoryTimestampStore())
        return a, b, [a.create_initiation(B_PUB, now=0, wall_time=1.7e9 + i) for i in range(n)]

    def initiate(k: int) -> None:
        a = Handshaker(A, [PeerConfig(B_PUB, PSK)], MemoryTimestampStore())
        for i in range(k):
            a.create_initiation(B_PUB, now=0, wall_time=1.7e9 + i)

    def respond(k: int) -> None:
        _, b, msgs = state
        for i in range(k):
            b.handle_initiation(msgs[i], source=b"s", now=i * 0.05)

    def finish(k: int) -> None:
        for i in range(k):
            a, reply = pairs[i]
            a.handle_response(reply, source=b"s", now=0)

    def mac1(k: int) -> None:
        _, b, msgs = state
        for i in range(k):
            b.cookie_checker.check_mac1(msgs[i])

    def cookie_reply(k: int) -> None:
        _, b, msgs = state
        for i in range(k):
            b.cookie_checker.create_reply(msgs[i], 1, b"source", 0.0)

    results: dict[str, list[float]] = {}
    for _ in range(args.runs):
        state = prepare()
        pairs = []
        for _ in range(n):
            a = Handshaker(A, [PeerConfig(B_PUB, PSK)], MemoryTimestampStore())
            b = Handshaker(B, [PeerConfig(A_PUB, PSK)], MemoryTimestampStore())
            r = b.handle_initiation(a.create_initiation(B_PUB, now=0, wall_time=1.7e9), source=b"s", now=0)
            assert isinstance(r, Accepted) and r.reply is not None
            pairs.append((a, r.reply))
        for name, fn in [
            ("limit (1 keygen + 4 DH)", limit),
            ("respond", respond),
            ("initiate", initiate),
            ("finish", finish),
            ("mac1 check", mac1),
            ("cookie reply", cookie_reply),
        ]:
            results.setdefault(name, []).append(timed(fn, n))
    base = statistics.median(results["limit (1 keygen + 4 DH)"])
    print(
        f"{'operation':<26}{'ns/op':>12}{'ops/s':>12}{'vs limit':>10}   (median of {args.runs} runs, n={n})"
    )
    for name, values in results.items():
        ns = statistics.median(values)
        print(f"{name:<26}{ns:>12.0f}{1e9 / ns:>12.0f}{base / ns:>10.2f}")


if __name__ == "__main__":
    main()
