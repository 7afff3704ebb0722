"""IP over SCION end to end: two hosts in their own network namespaces, each behind a TUN device read by
a gateway (the gateways run here in the root namespace, their SCION underlay on 127.0.0.0/8 over a
direct path). Real UDP, TCP and ICMP traffic between the hosts must arrive intact and in order, and a
packet whose source address the sending remote does not own must not reach the LAN.

The unit tests at the end need no root: a SOCK_SEQPACKET socket pair stands in for the TUN device (one
datagram per read/write, as IFF_TUN|IFF_NO_PI) and a recording object for the gateway.

Host A: 192.0.2.1/24 and 2001:db8:a::1/64 on its TUN, remote prefixes 198.51.100.0/24, 2001:db8:b::/64.
Host B: 198.51.100.1/24 and 2001:db8:b::1/64, remote prefixes 192.0.2.0/24, 2001:db8:a::/64.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from scion_appliance import netns, tun
from scion_appliance.gateway import Gateway, PeerSpec
from scion_appliance.gateway.ip_tunnel import IpTunnel
from scion_appliance.gateway.service import MSG_DATAGRAM, GatewayError
from scion_appliance.gateway.traffic_policy import TrafficPolicy
from scion_appliance.paths.source import PathInfo, StaticPathSource
from scion_appliance.scion.addr import IA
from scion_appliance.scion.sig_frame import FrameDecoder, FrameEncoder
from scion_appliance.tunnel.keys import generate_private_key, public_key

pytestmark = pytest.mark.timeout(60)

IA_A, IA_B = IA.parse("1-ff00:0:110"), IA.parse("1-ff00:0:111")
HOST_A, HOST_B = "192.0.2.1", "198.51.100.1"
HOST_A6, HOST_B6 = "2001:db8:a::1", "2001:db8:b::1"
NET_A, NET_B = ["192.0.2.0/24", "2001:db8:a::/64"], ["198.51.100.0/24", "2001:db8:b::/64"]
TUN_MTU = 1400
# Datagram sizes: tiny, typical, the largest unfragmented (1400 - 28), and IP-fragmented ones.
UDP4_SIZES = [4, 100, 512, 1372, 1000, 3000, 60, 1200]


@dataclass
class Hosts:
    ns_a: str
    ns_b: str
    tun_a: tun.TunDevice
    tun_b: tun.TunDevice


@pytest.fixture(params=[False, True], ids=["plain", "offload"])
def hosts(requires_root_netns: None, request: pytest.FixtureRequest) -> Iterator[Hosts]:
    """Two host namespaces, each with a TUN device; ``offload``: virtio-net header devices (TSO/USO reads
    split, GRO-coalesced writes)."""
    why = tun.unavailable_reason()
    if why is not None:
        pytest.skip(f"tun: {why}")
    with (
        netns.scratch("sa-hosta") as a,
        netns.scratch("sa-hostb") as b,
        tun.TunDevice.open("sig0", netns=a, mtu=TUN_MTU, addresses=[f"{HOST_A}/24", f"{HOST_A6}/64"],
                           routes=NET_B, offload=request.param) as ta,
        tun.TunDevice.open("sig0", netns=b, mtu=TUN_MTU, addresses=[f"{HOST_B}/24", f"{HOST_B6}/64"],
                           routes=NET_A, offload=request.param) as tb,
    ):
        yield Hosts(a, b, ta, tb)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _gateways() -> tuple[Gateway, Gateway]:
    ka, kb = generate_private_key(), generate_private_key()
    ha, hb = ipaddress.IPv4Address("127.0.0.31"), ipaddress.IPv4Address("127.0.0.32")
    pa, pb = _free_port(str(ha)), _free_port(str(hb))
    # A direct path (empty SCION path, next hop = the peer's underlay address): no router in between.
    to_b = StaticPathSource({str(IA_B): [PathInfo("direct-b", 0, (), b"", (str(hb), pb))]})
    to_a = StaticPathSource({str(IA_A): [PathInfo("direct-a", 0, (), b"", (str(ha), pa))]})
    gw_a = Gateway(ia=IA_A, host=ha, port=pa, private_key=ka, path_source=to_b,
                   peers=[PeerSpec("b", IA_B, hb, pb, public_key(kb), hb)])
    gw_b = Gateway(ia=IA_B, host=hb, port=pb, private_key=kb, path_source=to_a,
                   peers=[PeerSpec("a", IA_A, ha, pa, public_key(ka), ha)])
    return gw_a, gw_b


def _socket_in(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    with netns.entered(ns):
        return socket.socket(family, kind, proto)


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# -- traffic (blocking; run in worker threads while the gateways run in trio) ----------------------------


def _udp_flow(h: Hosts, family: int, dst: str, count: int, sizes: list[int]) -> list[bytes]:
    """Sends ``count`` numbered datagrams A -> B; returns what B received, in arrival order."""
    rx = _socket_in(h.ns_b, family, socket.SOCK_DGRAM)
    tx = _socket_in(h.ns_a, family, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((dst, 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        port = rx.getsockname()[1]
        got: list[bytes] = []
        for seq in range(count):
            size = sizes[seq % len(sizes)]
            body = struct.pack("!I", seq) + os.urandom(size - 4)
            tx.sendto(body, (dst, port))
            if seq % 16 == 15:
                time.sleep(0.002)  # paced: the test is about integrity and order, not about overload
            while select.select([rx], [], [], 0)[0]:
                got.append(rx.recv(65536))
        deadline = time.monotonic() + 5
        while len(got) < count and time.monotonic() < deadline:
            if select.select([rx], [], [], 0.2)[0]:
                got.append(rx.recv(65536))
        return got


def _tcp_transfer(h: Hosts, data: bytes) -> tuple[bytes, bytes]:
    """Client in A sends ``data`` to a server in B, which answers with the SHA-256 of what it read and
    then sends ``data`` back reversed. Returns (digest the server saw, bytes the client got back)."""
    srv = _socket_in(h.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    cli = _socket_in(h.ns_a, socket.AF_INET, socket.SOCK_STREAM)
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(10)
                h_srv = hashlib.sha256()
                while chunk := conn.recv(65536):
                    h_srv.update(chunk)
                conn.sendall(h_srv.digest() + data[::-1])
        except BaseException as e:  # reported by the client side below
            failures.append(e)

    with srv, cli:
        srv.bind((HOST_B, 0))
        srv.listen(1)
        srv.settimeout(10)
        cli.settimeout(10)
        server = threading.Thread(target=serve, daemon=True)
        server.start()
        cli.connect((HOST_B, srv.getsockname()[1]))
        cli.sendall(data)
        cli.shutdown(socket.SHUT_WR)
        back = bytearray()
        while chunk := cli.recv(65536):
            back += chunk
        server.join(10)
        if failures:
            raise failures[0]
        return bytes(back[:32]), bytes(back[32:])


def _ping(h: Hosts, count: int) -> list[float]:
    """ICMP echo A -> B through a raw socket (no ping binary needed); returns the RTTs in seconds."""
    sock = _socket_in(h.ns_a, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    rtts = []
    with sock:
        ident = os.getpid() & 0xFFFF
        for seq in range(count):
            data = os.urandom(56)
            msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
            msg = msg[:2] + struct.pack("!H", _checksum(msg)) + msg[4:]
            t0 = time.monotonic()
            sock.sendto(msg, (HOST_B, 0))
            while time.monotonic() - t0 < 2:
                if not select.select([sock], [], [], 0.2)[0]:
                    continue
                pkt, (src, _) = sock.recvfrom(2048)
                icmp = pkt[(pkt[0] & 0xF) * 4 :]
                typ, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
                if typ == 0 and rid == ident and rseq == seq and src == HOST_B:
                    assert icmp[8:] == data and _checksum(icmp) == 0
                    rtts.append(time.monotonic() - t0)
                    break
    return rtts


def _spoof_from_b(h: Hosts, src: str) -> None:
    """Host B sends a UDP packet to A with a source address of its choosing (raw socket, IP_HDRINCL)."""
    sock = _socket_in(h.ns_b, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with sock:
        udp = struct.pack("!HHHH", 4000, 4001, 8 + 5, 0) + b"spoof"
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 7, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(HOST_A))
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        sock.sendto(ip + udp, (HOST_A, 0))


# -- the test -----------------------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize("threads", [True, False], ids=["threads", "in-loop"])
def test_udp_tcp_icmp_between_hosts_behind_two_gateways(hosts: Hosts, threads: bool) -> None:
    gw_a, gw_b = _gateways()
    tunnel_a = IpTunnel(gw_a, hosts.tun_a, TrafficPolicy({IA_B: NET_B}), threads=threads)
    tunnel_b = IpTunnel(gw_b, hosts.tun_b, TrafficPolicy({IA_A: NET_A}), threads=threads)
    results: dict[str, object] = {}

    async def scenario() -> None:
        async with gw_a, gw_b, trio.open_nursery() as nursery:
            await nursery.start(tunnel_a.run)
            await nursery.start(tunnel_b.run)
            # Bring the session up first so the traffic below measures the tunnel, not the handshake.
            with trio.fail_after(5):
                await gw_a.send(IA_B, b"hello", msg_type=MSG_DATAGRAM)
                assert await gw_b.receive() == (IA_A, b"hello")
            t0 = time.monotonic()
            results["udp4"] = await trio.to_thread.run_sync(
                _udp_flow, hosts, socket.AF_INET, HOST_B, 400, UDP4_SIZES
            )
            results["udp6"] = await trio.to_thread.run_sync(
                _udp_flow, hosts, socket.AF_INET6, HOST_B6, 100, [8, 1352, 200, 2500]
            )
            results["udp_s"] = time.monotonic() - t0
            results["after_udp"] = [tunnel_a.snapshot()["totals"], tunnel_b.snapshot()["totals"]]
            t0 = time.monotonic()
            payload = os.urandom(1 << 20)
            results["tcp_payload"] = payload
            results["tcp"] = await trio.to_thread.run_sync(_tcp_transfer, hosts, payload)
            results["tcp_s"] = time.monotonic() - t0
            results["ping"] = await trio.to_thread.run_sync(_ping, hosts, 3)
            gw_a.harvest_rx()  # a receive thread's counts reach the tunnel's counters when harvested
            before = tunnel_a.counters["tun_packets_written"]
            await trio.to_thread.run_sync(_spoof_from_b, hosts, "203.0.113.9")
            with trio.move_on_after(2):
                while tunnel_a.counters["drop_spoofed_source"] == 0:
                    await trio.sleep(0.01)
                    gw_a.harvest_rx()
            results["spoof_written"] = tunnel_a.counters["tun_packets_written"] - before
            nursery.cancel_scope.cancel()

    trio.run(scenario)

    print("SNAP", results.get("after_udp"), gw_a.counters, gw_b.counters)
    for name, count in (("udp4", 400), ("udp6", 100)):
        got = results[name]
        assert isinstance(got, list)
        seqs = [struct.unpack("!I", d[:4])[0] for d in got]
        if hosts.tun_b.vnet_hdr:
            # Known deviation, open: on an offload device a datagram that came in IP fragments is now and
            # then delivered after the datagram that followed it. Nothing may be lost, and only such
            # datagrams may move.
            sizes = UDP4_SIZES if name == "udp4" else [8, 1352, 200, 2500]
            assert sorted(seqs) == list(range(count)), f"{name}: lost: {seqs[:20]}..."
            moved = [s for i, s in enumerate(seqs) if s != i]
            assert all(sizes[s % len(sizes)] > TUN_MTU - 48 or sizes[(s - 1) % len(sizes)] > TUN_MTU - 48
                       for s in moved), f"{name}: reordered: {moved}"
        else:
            assert seqs == list(range(count)), f"{name}: lost or reordered: {seqs[:20]}..."
        if name == "udp4":
            assert [len(d) for d in got] == [UDP4_SIZES[i % len(UDP4_SIZES)] for i in seqs]

    payload = results["tcp_payload"]
    assert isinstance(payload, bytes)
    assert results["tcp"] == (hashlib.sha256(payload).digest(), payload[::-1])

    rtts = results["ping"]
    assert isinstance(rtts, list) and len(rtts) == 3

    # The spoofed packet went through B's gateway (its destination is A's) but never reached host A.
    assert tunnel_a.counters["drop_spoofed_source"] == 1
    assert results["spoof_written"] == 0

    # Paced UDP loses nothing anywhere: every drop so far is a multicast the kernel sent on its own.
    after_udp = results["after_udp"]
    assert isinstance(after_udp, list)
    assert after_udp[0]["frames_sent"] > 0 and after_udp[1]["tun_packets_written"] >= 500
    for snap in after_udp:
        assert not {k for k in snap if k.startswith("drop_")} - {"drop_multicast"}, snap
    # Under TCP's bursts the kernel may overflow an underlay socket's receive buffer (a frame lost
    # before the gateway sees it); TCP recovers, and the decoder counts the packet as a lost fragment.
    for t in (tunnel_a, tunnel_b):
        snap = t.snapshot()["totals"]
        assert snap["frames_sent"] > 0 and snap["tun_packets_written"] > 0
        allowed = {"drop_multicast", "drop_spoofed_source", "drop_frame_lost_fragment"}
        assert not {k for k in snap if k.startswith("drop_")} - allowed, repr(t.snapshot())
    for gw in (gw_a, gw_b):
        assert not [k for k in gw.counters if k.startswith("drop_")], dict(gw.counters)
    print(f"{tunnel_a.snapshot()}\n{tunnel_b.snapshot()}")
    print(f"udp {results['udp_s']:.2f} s, tcp 1 MiB both ways {results['tcp_s']:.2f} s, "
          f"ping {[round(r * 1000, 2) for r in rtts]} ms")


# -- without root: the tunnel's logic over a socket pair and a recording gateway -------------------------


def _ipv4_udp(src: str, dst: str, data: bytes) -> bytes:
    udp = struct.pack("!HHHH", 4000, 4001, 8 + len(data), 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:] + udp


class RecordingGateway:
    """Stands in for ``Gateway``: records what would be sealed and sent, or refuses like it does."""

    def __init__(self, refuse: str | None = None) -> None:
        self.ip_sink: Callable[[IA, bytes], None] | None = None
        self.sent: list[tuple[IA | str, bytes, int]] = []
        self.refuse = refuse

    async def send(self, dst_ia: IA | str, payload: bytes, *, msg_type: int = MSG_DATAGRAM) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        if self.refuse:
            raise GatewayError(self.refuse)
        self.sent.append((dst_ia, payload, msg_type))
        return {}


@pytest.fixture
def fake_tun() -> Iterator[tuple[tun.TunDevice, socket.socket]]:
    """(device, LAN side): what the LAN side sends the device reads, and the other way round."""
    dev_end, lan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dev_end.setblocking(False)
    lan.settimeout(2)
    dev = tun.TunDevice(dev_end.detach(), "fake0")
    with dev, lan:
        yield dev, lan


POLICY = TrafficPolicy({IA_B: NET_B, "2-ff00:0:210": ["203.0.113.0/24"]})


def test_outbound_classifies_frames_and_counts_drops(fake_tun: tuple[tun.TunDevice, socket.socket]) -> None:
    dev, lan = fake_tun
    gw = RecordingGateway()
    tunnel = IpTunnel(gw, dev, POLICY, stride=2048, frame_size=600)
    to_b = [_ipv4_udp(HOST_A, HOST_B, os.urandom(n)) for n in (10, 1000, 300)]  # 1000: split over frames
    to_c = [_ipv4_udp(HOST_A, "203.0.113.7", b"c")]
    rs = struct.pack("!IHBB16s16s", 6 << 28, 8, 58, 255, ipaddress.IPv6Address("fe80::1").packed,
                     ipaddress.IPv6Address("ff02::2").packed) + bytes([133, 0, 0, 0, 0, 0, 0, 0])
    nowhere = _ipv4_udp(HOST_A, "192.0.2.77", b"x")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(tunnel.run)
            assert gw.ip_sink == tunnel.deliver
            for pkt in [to_b[0], rs, to_c[0], to_b[1], nowhere, b"\x00garbage", to_b[2]]:
                lan.send(pkt)
            with trio.fail_after(2):
                while len(gw.sent) < 4:
                    await trio.sleep(0.005)
            nursery.cancel_scope.cancel()
        assert gw.ip_sink is None  # uninstalled when the tunnel stops

    trio.run(main)
    assert all(t == 4 for _, _, t in gw.sent)  # messages.MessageType.DATA: SIG frames for ip_sink
    frames_b = [f for ia, f, _ in gw.sent if ia == IA_B]
    frames_c = [f for ia, f, _ in gw.sent if ia == IA.parse("2-ff00:0:210")]
    assert all(len(f) <= 600 for f in frames_b) and len(frames_b) >= 3
    assert FrameDecoder().feed_many(frames_b) == to_b  # in order, intact, reassembled
    assert FrameDecoder().feed_many(frames_c) == to_c
    # The two remotes use different SIG session ids.
    assert frames_b[0][1] != frames_c[0][1]
    c = tunnel.counters
    assert (c["tun_packets_read"], c["packets_queued"]) == (7, 4)
    assert (c["drop_multicast"], c["drop_no_route"], c["drop_malformed"]) == (1, 1, 1)


def test_outbound_without_session_is_counted(fake_tun: tuple[tun.TunDevice, socket.socket]) -> None:
    dev, lan = fake_tun
    gw = RecordingGateway(refuse="no session with 1-ff00:0:111")
    tunnel = IpTunnel(gw, dev, POLICY, stride=2048)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(tunnel.run)
            lan.send(_ipv4_udp(HOST_A, HOST_B, b"1"))
            with trio.fail_after(2):
                while not tunnel.counters["drop_no_session"]:
                    await trio.sleep(0.005)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert tunnel.snapshot()["remotes"][str(IA_B)]["drop_no_session"] == 1
    assert "frames_sent" not in tunnel.counters


def test_outbound_queue_full_drops_instead_of_stalling(fake_tun: tuple[tun.TunDevice, socket.socket]) -> None:
    dev, lan = fake_tun
    tunnel = IpTunnel(RecordingGateway(), dev, POLICY, stride=2048, queue_batches=1)

    async def main() -> None:
        # Without the sender tasks running nothing drains the queue: the second batch must be dropped.
        for _ in range(2):
            lan.send(_ipv4_udp(HOST_A, HOST_B, b"q"))
            assert tunnel.read_once() == 1
        assert tunnel.read_once() == 0  # nothing waiting: returns at once, no blocking

    trio.run(main)
    assert tunnel.counters["packets_queued"] == 1 and tunnel.counters["drop_queue_full"] == 1


def test_inbound_deframes_checks_sources_and_writes(fake_tun: tuple[tun.TunDevice, socket.socket]) -> None:
    dev, lan = fake_tun
    tunnel = IpTunnel(RecordingGateway(), dev, POLICY, stride=2048)
    good = [_ipv4_udp(HOST_B, HOST_A, os.urandom(n)) for n in (50, 1300, 7)]
    spoofed = _ipv4_udp("203.0.113.5", HOST_A, b"from C's space, sent by B")
    enc = FrameEncoder(0, 99, 700)
    frames = enc.encode([good[0], spoofed, good[1], good[2]])
    assert len(frames) >= 3
    for f in frames:
        tunnel.deliver(IA_B, f)
    tunnel.deliver(IA.parse("1-ff00:0:999"), frames[0])  # a peer with no prefixes in the policy
    assert [lan.recv(4096) for _ in good] == good
    lan.settimeout(0.05)
    with pytest.raises(TimeoutError):
        lan.recv(4096)
    c = tunnel.counters
    assert (c["tun_packets_written"], c["drop_spoofed_source"], c["drop_unknown_remote"]) == (3, 1, 1)
    assert c["frames_received"] == len(frames)
    # A lost frame: the packet split over it is counted by the decoder, the rest still arrives.
    more = enc.encode([good[1], good[0]])  # good[0] starts in more[1] and ends in more[2]
    assert len(more) == 3
    for f in more[1:]:
        tunnel.deliver(IA_B, f)
    assert lan.recv(4096) == good[0]
    assert tunnel.snapshot()["totals"]["drop_frame_lost_fragment"] == 1
