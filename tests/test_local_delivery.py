"""A border router and a gateway of one AS in one process: the router's deliveries to the gateway go
in process, parsed once (``service.connect_local_delivery``).

Three routers (111 -> 110 -> 112) run as ``RouterService``s on loopback with free ports; gateway A in
AS 111 sends to gateway B in AS 112, whose router hands B its packets without the internal socket.
B answers (handshake responses, acks) through its own socket to the router's internal address, which
only works if the sender B saw is that address, as recvmmsg would have shown it.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from typing import Any

import trio

from scion_appliance.gateway import Gateway, PeerSpec
from scion_appliance.paths.source import PathInfo, StaticPathSource
from scion_appliance.router.dataplane import Dataplane
from scion_appliance.router.service import RouterService
from scion_appliance.router.topology import BorderRouter, Interface, Topology
from scion_appliance.scion.addr import IA
from scion_appliance.scion.mint import BeaconHop, SegmentSpec, mint_scion_path
from scion_appliance.scion.path import ScionPath
from scion_appliance.service import connect_local_delivery
from scion_appliance.tunnel import messages
from scion_appliance.tunnel.keys import generate_private_key, public_key

IA110, IA111, IA112 = (IA.parse(f"1-ff00:0:{n}") for n in (110, 111, 112))
R110, R111, R112 = "127.0.2.1", "127.0.1.1", "127.0.3.1"
HA, HB = "127.0.1.2", "127.0.3.2"
KEYS = {ia: secrets.token_bytes(16) for ia in (IA110, IA111, IA112)}


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class QuietRouter(RouterService):
    async def _signals(self) -> None:  # the test's nursery stops it
        return None


def three_routers() -> dict[IA, Dataplane]:
    """111 and 112 are children of core 110 (interfaces 41 - 1 and 42 - 2); every port free."""
    ext = {(ip, ifid): (ip, free_port(ip)) for ip, ifid in ((R110, 1), (R110, 2), (R111, 41), (R112, 42))}
    links = {
        IA110: (R110, [(1, (R111, 41), IA111, "child"), (2, (R112, 42), IA112, "child")], True),
        IA111: (R111, [(41, (R110, 1), IA110, "parent")], False),
        IA112: (R112, [(42, (R110, 2), IA110, "parent")], False),
    }
    out = {}
    for ia, (ip, ifs, core) in links.items():
        interfaces = {
            ifid: Interface(ifid, ext[(ip, ifid)], ext[remote], nia, link_to, 1472, remote[1])
            for ifid, remote, nia, link_to in ifs
        }
        topo = Topology(
            ia, core, 1472, (1, 65535), {"br": BorderRouter("br", (ip, free_port(ip)), interfaces)}
        )
        out[ia] = Dataplane(topo, topo.router(), KEYS[ia])
    return out


def path(src: IA, ts: int) -> ScionPath:
    """Up from ``src`` to 110 (against construction direction), down to the other leaf."""
    hop = {IA111: (1, 41), IA112: (2, 42)}
    dst = IA112 if src == IA111 else IA111
    up = SegmentSpec(
        (BeaconHop(0, hop[src][0], KEYS[IA110]), BeaconHop(hop[src][1], 0, KEYS[src])), ts, 0x1234, False
    )
    down = SegmentSpec(
        (BeaconHop(0, hop[dst][0], KEYS[IA110]), BeaconHop(hop[dst][1], 0, KEYS[dst])), ts, 0x4321, True
    )
    return mint_scion_path([up, down])


async def test_gateway_gets_its_routers_deliveries_in_process() -> None:
    dps = three_routers()
    pa, pb = free_port(HA), free_port(HB)
    ka, kb = generate_private_key(), generate_private_key()
    now = int(time.time())

    def route(src: IA, dst: IA) -> dict[str, list[PathInfo]]:
        p = PathInfo("via-110", 3, (), path(src, now).to_bytes(), dps[src].router.internal_addr)
        return {str(dst): [p]}

    a = Gateway(
        ia=IA111, host=ipaddress.ip_address(HA), port=pa, private_key=ka,
        peers=[PeerSpec("b", IA112, ipaddress.ip_address(HB), pb, public_key(kb), ipaddress.ip_address(R112))],
        path_source=StaticPathSource(route(IA111, IA112)), probe_interval=0.05,
    )  # fmt: skip
    b = Gateway(
        ia=IA112, host=ipaddress.ip_address(HB), port=pb, private_key=kb,
        peers=[PeerSpec("a", IA111, ipaddress.ip_address(HA), pa, public_key(ka), ipaddress.ip_address(R111))],
        path_source=StaticPathSource(route(IA112, IA111)), probe_interval=0.05,
    )  # fmt: skip
    frames: list[tuple[IA, int]] = []

    def batch_sink(peer_ia: IA, buf: bytearray, stride: int, lengths: Any, rx: Any) -> None:
        frames.append((peer_ia, rx.n))

    b.ip_batch_sink = batch_sink
    assert connect_local_delivery(dps[IA112], b)
    assert not connect_local_delivery(dps[IA112], a)  # another AS's gateway: nothing to deliver to it
    routers = [QuietRouter(dp) for dp in dps.values()]
    # The routers stop before the gateways close: nothing is handed to a closed gateway.
    async with a, b, trio.open_nursery() as nursery:
        for r in routers:
            nursery.start_soon(r.serve)
        await trio.sleep(0.05)  # every socket bound
        sent = [f"datagram {i}".encode() for i in range(50)]
        for d in sent:
            await a.send(IA112, d)
        got = []
        with trio.fail_after(5):
            while len(got) < len(sent):
                got.append((await b.receive())[1])
        assert got == sent
        # The batch data path too (DATA envelopes, as the IP tunnel sends them).
        for i in range(20):
            await a.send(IA112, b"frame %d" % i, msg_type=messages.MessageType.DATA)
        with trio.fail_after(5):
            while b.counters["frames_received"] < 20:
                await trio.sleep(0.01)
        # And back: B's answers leave through its socket to the router's internal address.
        await b.send(IA111, b"reply")
        with trio.fail_after(2):
            assert await a.receive() == (IA112, b"reply")
        nursery.cancel_scope.cancel()
    c = dps[IA112].counters
    assert b.counters["handshakes_completed"] == 1 and b.counters["datagrams_received"] == 50
    assert frames and all(ia == IA111 for ia, _ in frames)
    # Everything 112 delivered went in process; its internal socket sent nothing.
    assert c["delivered_in_process"] == c["delivered"] >= 50 + 20 + 1
    assert c.get("tx.internal", 0) == 0
    assert not [k for k in b.counters if k.startswith("drop_")], b.counters


def test_receive_parsed_counts_what_does_not_fit_and_what_does_not_parse() -> None:
    # Handed-in slots are copied into the gateway's own layout (2048-byte slots): a longer packet is
    # dropped and counted, the rest handled as the socket path handles them, records as given.
    from scion_appliance._fast import codec, routerstep, udpio

    gw = Gateway(
        ia=IA112, host=ipaddress.ip_address(HB), port=free_port(HB), private_key=generate_private_key(),
        peers=[], path_source=StaticPathSource({}),
    )  # fmt: skip
    stride, n = 4096, 3
    buf, lens = bytearray(n * stride), memoryview(bytearray(4 * n)).cast("I")
    addrs, recs = udpio.new_addrs(n), codec.ScionRecords(n)
    for i, pkt in enumerate([b"\x00" * 7, bytes(3000), b"\x10" + bytes(40)]):
        buf[i * stride : i * stride + len(pkt)] = pkt
        lens[i] = len(pkt)
        routerstep.deliver_record(pkt, recs, i)
    slots = memoryview(bytearray(12)).cast("I")
    slots[0], slots[1], slots[2] = 2, 1, 0
    gw.receive_parsed(buf, stride, lens, addrs, recs, slots, time.monotonic())
    assert gw.counters == {"drop_oversize": 1, "drop_truncated_common_header": 1, "drop_bad_version": 1}
