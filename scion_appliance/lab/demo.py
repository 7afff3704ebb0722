"""The lab demo (the README's main job): two gateways across the default lab, a cut, a failover.

Rules kept here:
- Everything is real: the lab's routers forward and verify every hop, the gateways handshake, seal and
  probe; the outage is measured as the gap in received sequence numbers.
- With root, the traffic is IP: two hosts in their own network namespaces behind TUN devices, a UDP
  flow from one to the other through both gateways. Without root it says so in one line and runs the
  same scenario through the gateways' datagram API.
- Progress is printed as it happens; the lab and the namespaces are always removed at the end.
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from scion_appliance import netns, tun
from scion_appliance.gateway import Gateway
from scion_appliance.gateway.ip_tunnel import IpTunnel
from scion_appliance.gateway.traffic_policy import TrafficPolicy
from scion_appliance.lab.failover import gateway_pair
from scion_appliance.lab.lab import Lab
from scion_appliance.paths.quality import QualityConfig
from scion_appliance.paths.selection import SelectionPolicy

SEND_INTERVAL = 0.005
NET_A, HOST_A = "192.0.2.0/24", "192.0.2.1"  # TEST-NET-1 behind gateway A
NET_B, HOST_B = "198.51.100.0/24", "198.51.100.1"  # TEST-NET-2 behind gateway B
FLOW_PORT = 40000
TUN_MTU = 1300


@dataclass
class Transport:
    """How the demo's numbered datagrams travel: ``send(seq)`` and ``receive() -> seq``."""

    kind: str
    send: Callable[[int], Awaitable[None]]
    receive: Callable[[], Awaitable[int]]


def ip_mode_unavailable() -> str | None:
    """Why IP mode (TUN devices in network namespaces) cannot run here, or None."""
    return tun.unavailable_reason() or netns.unavailable_reason()


@asynccontextmanager
async def datagram_transport(a: Gateway, b: Gateway, b_ia: str) -> AsyncIterator[Transport]:
    async def send(seq: int) -> None:
        await a.send(b_ia, b"%d" % seq)

    async def receive() -> int:
        return int((await b.receive())[1])

    yield Transport("datagram API", send, receive)


@asynccontextmanager
async def ip_transport(
    a: Gateway, b: Gateway, a_ia: str, b_ia: str, nursery: trio.Nursery
) -> AsyncIterator[Transport]:
    """Two host namespaces behind TUN devices; a UDP socket in each host."""
    with (
        netns.scratch("sa-demo-a") as ns_a,
        netns.scratch("sa-demo-b") as ns_b,
        tun.TunDevice.open("sig0", netns=ns_a, mtu=TUN_MTU, addresses=[f"{HOST_A}/24"], routes=[NET_B]) as ta,
        tun.TunDevice.open("sig0", netns=ns_b, mtu=TUN_MTU, addresses=[f"{HOST_B}/24"], routes=[NET_A]) as tb,
    ):
        await nursery.start(IpTunnel(a, ta, TrafficPolicy({b_ia: [NET_B]})).run)
        await nursery.start(IpTunnel(b, tb, TrafficPolicy({a_ia: [NET_A]})).run)
        with netns.entered(ns_a):
            tx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with netns.entered(ns_b):
            rx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with tx, rx:
            await tx.bind((HOST_A, 0))
            await rx.bind((HOST_B, FLOW_PORT))

            async def send(seq: int) -> None:
                await tx.sendto(b"%d" % seq, (HOST_B, FLOW_PORT))

            async def receive() -> int:
                return int((await rx.recv(2048)).decode())

            yield Transport(
                f"IP: UDP from {HOST_A} (netns {ns_a}) to {HOST_B} (netns {ns_b}) over TUN", send, receive
            )


async def _scenario(lab: Lab, say: Callable[[str], None], probe_interval: float, ip: bool) -> dict[str, Any]:
    a_ia, b_ia = lab.leaves[0], lab.leaves[1]
    a, b = gateway_pair(
        lab,
        probe_interval,
        QualityConfig(down_after_lost=2, probe_timeout_min=0.03),
        SelectionPolicy(min_dwell=1.0),
    )
    received: list[tuple[float, int]] = []
    async with trio.open_nursery() as nursery, a, b:
        transport_cm = ip_transport(a, b, a_ia, b_ia, nursery) if ip else datagram_transport(a, b, b_ia)
        async with transport_cm as transport:

            async def reader() -> None:
                while True:
                    seq = await transport.receive()
                    received.append((time.monotonic(), seq))

            nursery.start_soon(reader)
            say(f"gateways up: {a_ia} <-> {b_ia}; traffic: {transport.kind}")
            say(f"probing {len(lab.paths(a_ia, b_ia))} paths every {probe_interval * 1000:.0f} ms")
            # The session first, so the flow measures the tunnel, not the handshake.
            with trio.fail_after(10):
                await a.send(
                    b_ia, b""
                )  # an empty datagram is a keepalive: it brings the session up, delivers nothing
            await trio.sleep(1.0)
            shown = sorted(a.paths(b_ia), key=lambda p: (p["hops"], p["rtt_ms"] or 1e9))
            for p in shown[:4]:
                say(f"  path {p['id'][:8]} via {' > '.join(p['ases'])}: {p['state']}, rtt {p['rtt_ms']} ms")
            if len(shown) > 4:
                say(f"  ... and {len(shown) - 4} longer paths")
            seq = 0

            async def send_for(seconds: float) -> None:
                nonlocal seq
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    try:
                        await transport.send(seq)
                    except Exception as e:  # no path for a moment: keep the sequence running, count the gap
                        say(f"  send {seq} failed: {e}")
                    seq += 1
                    await trio.sleep(SEND_INTERVAL)

            def active() -> str:
                return a.selector.status(b_ia).active or ""

            await send_for(1.0)
            first = active()
            path = next(p for p in lab.paths(a_ia, b_ia) if p.id == first)
            links = lab.links_of(path)
            victim = links[len(links) // 2]
            say(f"steady traffic on path {first[:8]} ({a.reason(b_ia)}); cutting link {victim}")
            t_cut = time.monotonic()
            cut_seq = seq
            await trio.to_thread.run_sync(lab.cut, victim)
            await send_for(2.0)
            after = active()
            say(f"traffic now on path {after[:8]} ({a.reason(b_ia)})")
            await trio.to_thread.run_sync(lab.restore, victim)
            say(f"link {victim} restored")
            await send_for(1.0)
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()

    got = {s for _, s in received}
    lost_after_cut = [s for s in range(cut_seq, seq) if s not in got]
    arrivals = {s: t for t, s in received}
    first_after = min((s for s in got if lost_after_cut and s > lost_after_cut[0]), default=None)
    outage = arrivals[first_after] - t_cut if lost_after_cut and first_after is not None else 0.0
    return {
        "transport": transport.kind,
        "sent": seq,
        "received": len(got),
        "lost_during_failover": len(lost_after_cut),
        "outage_ms": round(outage * 1000, 1),
        "path_before": first,
        "path_after": after,
        "failovers": a.counters["failovers"],
        "cut_link": victim,
    }


def run_demo(
    directory: str | None = None,
    probe_interval: float = 0.02,
    say: Callable[[str], None] = print,
    ip: bool | None = None,
) -> dict[str, Any]:
    """Runs the scenario; ``ip`` None picks IP mode when the machine allows it (root, TUN, netns)."""
    why = ip_mode_unavailable()
    if ip is None:
        ip = why is None
    if not ip:
        say(f"IP mode needs TUN devices and network namespaces ({why or 'not asked for'}): "
            "running the same scenario through the gateways' datagram API")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="scion-lab-demo-") as tmp:
        lab = Lab.create("default", directory or tmp)
        say(f"starting the default lab in {lab.directory}: {len(lab.ases)} ASes, {len(lab.links)} links")
        lab.up()
        try:
            n = len(lab.paths(lab.leaves[0], lab.leaves[1]))
            say(f"routers up; {n} paths between {lab.leaves[0]} and {lab.leaves[1]}")
            summary = trio.run(_scenario, lab, say, probe_interval, ip)
        finally:
            lab.down()
            say("lab stopped")
    say(
        f"summary: {summary['received']}/{summary['sent']} datagrams delivered ({summary['transport']}); "
        f"failover {summary['path_before'][:8]} -> {summary['path_after'][:8]} after cutting "
        f"{summary['cut_link']}; outage {summary['outage_ms']} ms ({summary['lost_during_failover']} lost)"
    )
    return summary
