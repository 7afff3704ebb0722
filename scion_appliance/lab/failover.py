"""Failover trials on the lab: a steady flow between two gateways, a broken link, the measured outage.

Rules kept here:
- Everything is real: the lab's routers, the gateways' handshake, sealing, probing and acks. Only the
  measuring is ours: every datagram carries a sequence number; the sender notes when it sent each one
  and on which path, the receiver when each one arrived.
- The outage of a trial is the gap in received sequence numbers, in the sender's time: from the send
  of the last datagram delivered before the first loss to the send of the first one delivered after
  the last loss (so it includes one send interval). A trial with nothing lost has outage 0.
- Lab changes (cut, impair, restore) run in a worker thread: they are blocking control-socket calls,
  and the gateways must keep running meanwhile, as they would beside a real failure.
- Ordering: datagrams sent on one path must arrive in the order they were sent (``reordered`` counts
  the exceptions); across a failover, old-path stragglers may arrive after new-path datagrams.
Used by tests/test_failover.py and bench/bench_failover.py.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from scion_appliance.gateway import Gateway, GatewayError, PeerSpec
from scion_appliance.lab.lab import Lab
from scion_appliance.paths.quality import QualityConfig
from scion_appliance.paths.selection import SelectionPolicy
from scion_appliance.paths.source import PathInfo
from scion_appliance.scion.addr import IA
from scion_appliance.tunnel.keys import generate_private_key, public_key

GATEWAY_PORT = 30056


@dataclass
class Trial:
    kind: str  # "cut", "loss", "delay", ...
    link: str
    path_before: str
    path_after: str
    outage_s: float
    lost: int
    sent: int
    detected_s: float | None  # from the break to the first switch away from the broken path
    back_on_failed: int  # datagrams sent on the broken path after the first switch away (before repair)
    on_broken_link: int  # ... on any path crossing the broken link


@dataclass
class Flow:
    """What the sender sent and the receiver got, by sequence number."""

    sent_at: list[float] = field(default_factory=list)
    sent_path: list[str] = field(default_factory=list)
    arrived: dict[int, float] = field(default_factory=dict)
    arrival_order: list[int] = field(default_factory=list)
    send_errors: int = 0
    errors: list[str] = field(default_factory=list)  # the first few send errors, for the report
    sent_on_down: int = 0  # datagrams that went out on a path whose quality said DOWN at that moment

    def outage(self, first: int, last: int) -> tuple[float, int]:
        """(outage seconds, datagrams lost) among sequence numbers [first, last)."""
        lost = [s for s in range(first, last) if s not in self.arrived]
        if not lost:
            return 0.0, 0
        before = next((s for s in range(lost[0] - 1, -1, -1) if s in self.arrived), None)
        after = next((s for s in range(lost[-1] + 1, len(self.sent_at)) if s in self.arrived), None)
        start = self.sent_at[before] if before is not None else self.sent_at[lost[0]]
        end = self.sent_at[after] if after is not None else math.inf
        return end - start, len(lost)

    def reordered(self) -> int:
        """Datagrams that arrived after a later one sent on the same path."""
        newest: dict[str, int] = {}
        bad = 0
        for s in self.arrival_order:
            p = self.sent_path[s]
            if s < newest.get(p, -1):
                bad += 1
            else:
                newest[p] = s
        return bad


def gateway_pair(
    lab: Lab,
    probe_interval: float,
    quality: QualityConfig | None = None,
    policy: SelectionPolicy | None = None,
) -> tuple[Gateway, Gateway]:
    """Gateways in the lab's first two leaf ASes, each with the other as its peer."""
    a_ia, b_ia = lab.leaves[0], lab.leaves[1]
    ka, kb = generate_private_key(), generate_private_key()

    def make(me: str, peer: str, key: bytes, peer_key: bytes) -> Gateway:
        return Gateway(
            ia=IA.parse(me),
            host=ipaddress.ip_address(lab.host_address(me)),
            port=GATEWAY_PORT,
            private_key=key,
            peers=[
                PeerSpec(
                    peer,
                    IA.parse(peer),
                    ipaddress.ip_address(lab.host_address(peer)),
                    GATEWAY_PORT,
                    public_key(peer_key),
                    ipaddress.ip_address(lab.router_address(peer)[0]),
                )
            ],
            path_source=lab.path_source(me),
            probe_interval=probe_interval,
            quality=quality,
            policy=policy,
        )

    return make(a_ia, b_ia, ka, kb), make(b_ia, a_ia, kb, ka)


class Rig:
    """Two gateways and a steady flow from A to B; see ``rig``."""

    def __init__(self, lab: Lab, a: Gateway, b: Gateway, send_interval: float) -> None:
        self.lab, self.a, self.b = lab, a, b
        self.dst = lab.leaves[1]
        self.send_interval = send_interval
        self.flow = Flow()

    def path(self, path_id: str) -> PathInfo:
        return next(p for p in self.lab.paths(self.lab.leaves[0], self.dst) if p.id == path_id)

    def active(self) -> str | None:
        return self.a.selector.status(self.dst).active

    def switches(self) -> int:
        return self.a.selector.status(self.dst).switches

    async def _send(self) -> None:
        f = self.flow
        while True:
            seq = len(f.sent_at)
            try:
                info = await self.a.send(self.dst, b"%d" % seq)
                path = str(info["path"])
                # Nothing ran between the send's path choice and here (no await after it), so this is
                # the path's state when the datagram left.
                q = self.a.prober.quality.get(path)
                if q is not None and q.is_down:
                    f.sent_on_down += 1
            except GatewayError as e:
                f.send_errors += 1
                if len(f.errors) < 5:
                    f.errors.append(f"seq {seq}: {e}")
                path = ""
            f.sent_at.append(time.monotonic())
            f.sent_path.append(path)
            await trio.sleep(self.send_interval)

    async def _receive(self) -> None:
        f = self.flow
        while True:
            _, data = await self.b.receive()
            seq = int(data)
            if seq not in f.arrived:
                f.arrived[seq] = time.monotonic()
                f.arrival_order.append(seq)

    async def change(self, fn: str, *args: object, **kwargs: float) -> None:
        """A lab change (``cut``, ``restore``, ``impair``) without stopping the gateways."""
        await trio.to_thread.run_sync(lambda: getattr(self.lab, fn)(*args, **kwargs))

    async def wait_active(self, timeout: float) -> str:
        with trio.fail_after(timeout):
            while self.active() is None or not self.flow.arrived:
                await trio.sleep(0.02)
        return str(self.active())

    async def trial(self, kind: str, *, hold: float = 0.6, settle: float = 0.4) -> Trial:
        """Break the active path's middle link (``cut`` or 100% ``loss``) during steady traffic, wait
        ``hold`` seconds, repair it and let things settle; returns the measured outage."""
        before = await self.wait_active(5.0)
        links = self.lab.links_of(self.path(before))
        victim = links[len(links) // 2]
        first = len(self.flow.sent_at)
        t0 = time.monotonic()
        if kind == "cut":
            await self.change("cut", victim)
        elif kind == "loss":
            await self.change("impair", victim, loss=1.0)
        else:
            raise ValueError(f"unknown trial kind {kind!r}: cut or loss")
        detected = None
        deadline = t0 + hold
        while time.monotonic() < deadline:
            if detected is None and self.active() != before:
                detected = time.monotonic() - t0
            await trio.sleep(0.005)
        after = str(self.active())
        last = len(self.flow.sent_at)
        paths = self.flow.sent_path[first:last]
        moved = next((i for i, p in enumerate(paths) if p and p != before), len(paths))
        crossing = {
            p.id for p in self.lab.paths(self.lab.leaves[0], self.dst) if victim in self.lab.links_of(p)
        }
        back_on_failed = sum(1 for p in paths[moved:] if p == before)
        on_broken = sum(1 for p in paths[moved:] if p in crossing)
        if kind == "cut":
            await self.change("restore", victim)
        else:
            await self.change("impair", victim)
        await trio.sleep(settle)  # late arrivals of [first, last) land; the repaired link answers probes
        outage, lost = self.flow.outage(max(0, first - 20), last)
        return Trial(
            kind, victim, before, after, outage, lost, last - first, detected, back_on_failed, on_broken
        )


@asynccontextmanager
async def rig(
    lab: Lab,
    probe_interval: float = 0.1,
    *,
    send_interval: float = 0.002,
    quality: QualityConfig | None = None,
    policy: SelectionPolicy | None = None,
    warmup: float = 1.0,
) -> AsyncIterator[Rig]:
    """Gateways up, the flow running and every path probed for ``warmup`` seconds."""
    a, b = gateway_pair(lab, probe_interval, quality, policy)
    async with a, b, trio.open_nursery() as nursery:
        r = Rig(lab, a, b, send_interval)
        nursery.start_soon(r._receive)
        await trio.sleep(warmup)
        nursery.start_soon(r._send)
        await r.wait_active(5.0)
        try:
            yield r
        finally:
            nursery.cancel_scope.cancel()
