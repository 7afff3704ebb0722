"""The receive worker thread (``_fast.rxworker``, csrc/rx_worker.c): sealed SCION datagrams sent over
127.0.0.1 to its socket come out on the "TUN" byte-exact (a datagram socketpair stands in for a TUN fd
without a virtio-net header; a real TUN in a network namespace when root), replays and spoofed sources are
dropped and counted, everything else is handed up for the Python path, acks fall due at AckResponder's
rate, disarm-then-close never crashes under load, stop() joins promptly, a full handoff ring is counted."""

from __future__ import annotations

import array
import errno
import ipaddress
import os
import random
import select
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance import netns, tun
from scion_appliance._fast import aead, codec, pipeline, rxworker, udpio
from scion_appliance._fast.replay import ReplayWindow
from scion_appliance.gateway import Gateway
from scion_appliance.gateway.ip_tunnel import IpTunnel
from scion_appliance.gateway.service import MSG_DATAGRAM
from scion_appliance.gateway.traffic_policy import TrafficPolicy
from scion_appliance.paths.acks import ACK_INTERVAL
from scion_appliance.scion.addr import IA
from scion_appliance.scion.builder import UdpPacketBuilder
from scion_appliance.scion.path import EmptyPath
from scion_appliance.scion.sig_frame import FrameEncoder
from scion_appliance.tunnel import messages
from tests.test_ip_tunnel import IA_A, IA_B, NET_A, NET_B, _gateways
from tests.test_pipeline import ipv4, ipv6

RECEIVER = 0x01020304
PEER_NET = "192.0.2.0/24"
PEER_NET6 = "2001:db8:a::/64"
DATA = int(messages.MessageType.DATA)


@dataclass
class Rig:
    sock: socket.socket        # the worker's underlay socket
    sender: socket.socket      # the peer's
    tun_in: socket.socket      # the worker writes here ("TUN")
    tun_out: socket.socket     # the test reads the written packets here
    worker: rxworker.RxWorker
    builder: UdpPacketBuilder
    secret: bytes
    key: aead.AeadKey
    window: ReplayWindow
    deframer: pipeline.Deframer
    encoder: FrameEncoder
    sender_key: aead.AeadKey

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def seal(self, frames: list[bytes], *, receiver: int = RECEIVER, key: aead.AeadKey | None = None,
             msg_type: int = DATA) -> list[bytes]:
        k = key or self.sender_key
        return [self.builder.build(k.seal(receiver, f, msg_type=msg_type)) for f in frames]

    def send(self, datagrams: list[bytes]) -> None:
        for d in datagrams:
            self.sender.sendto(d, ("127.0.0.1", self.port))

    def packets(self, want: int, timeout: float = 2.0) -> list[bytes]:
        """Packets written to the "TUN", until ``want`` came or ``timeout`` passed without one."""
        out: list[bytes] = []
        while len(out) < want and select.select([self.tun_out], [], [], timeout)[0]:
            out.append(self.tun_out.recv(65536))
        return out

    def handoff(self, want: int, timeout: float = 2.0) -> list[tuple]:
        out: list[tuple] = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            select.select([self.worker.wake_fd], [], [], 0.05)
            out.extend(self.worker.take_handoff())
        return out


def _rig(*, arm: bool = True, table: pipeline.PrefixTable | None = None, ack_interval: float = ACK_INTERVAL) -> Rig:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    tun_in, tun_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun_in.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    tun_out.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    table = table or pipeline.PrefixTable([(0, PEER_NET), (0, PEER_NET6)])
    port = sock.getsockname()[1]
    worker = rxworker.RxWorker(sock.fileno(), False, tun_in.fileno(), False, 64, port, table, 64, 2048,
                               ack_interval)
    builder = UdpPacketBuilder(IA.parse("1-ff00:0:111"), ipaddress.IPv4Address("127.0.0.1"),
                               sender.getsockname()[1], IA.parse("1-ff00:0:110"),
                               ipaddress.IPv4Address("127.0.0.1"), port, EmptyPath())
    secret = os.urandom(32)
    rig = Rig(sock, sender, tun_in, tun_out, worker, builder, secret, aead.AeadKey(secret), ReplayWindow(8192),
              pipeline.Deframer(64, 2048), FrameEncoder(0, 0x12345, 1472), aead.AeadKey(secret))
    if arm:
        worker.arm(RECEIVER, rig.key, rig.window, rig.deframer, 0)
    worker.start()
    return rig


def _close(r: Rig) -> None:
    r.worker.stop()
    for s in (r.sock, r.sender, r.tun_in, r.tun_out):
        s.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = _rig()
    try:
        yield r
    finally:
        _close(r)


def test_sealed_datagrams_come_out_on_the_tun_byte_exact(rig: Rig) -> None:
    packets = [ipv4(60 + 17 * i, fill=i) for i in range(50)] + [ipv4(1400, fill=7), ipv6(1000), ipv6(0)]
    packets += [ipv4(1400, fill=i) for i in range(20)]  # these span frames: reassembled across datagrams
    rig.send(rig.seal(rig.encoder.encode(packets)))
    assert rig.packets(len(packets)) == packets
    c = rig.worker.counters()
    lane = c["lanes"][RECEIVER]
    assert lane["written"] == len(packets)
    assert lane["rx_packets"] == lane["data"] > 0
    assert lane["frames_fast"] == lane["data"]
    assert lane["last_rx"] is not None and abs(lane["last_rx"] - time.monotonic()) < 5
    assert c["worker"]["handoff_full"] == 0
    # The first data message of the route is acked at once: one ack record, nothing else handed up.
    ups = rig.worker.take_handoff()
    assert [u[0] for u in ups] == [rxworker.ACK]


def test_replays_are_dropped_and_counted(rig: Rig) -> None:
    frames = [rig.encoder.encode([ipv4(100, fill=i)])[0] for i in range(10)]
    sealed = rig.seal(frames)
    rig.send(sealed)
    assert len(rig.packets(10)) == 10
    rig.send(sealed)  # the same datagrams again
    deadline = time.monotonic() + 2
    replayed = 0
    while time.monotonic() < deadline and replayed < len(sealed):
        replayed += rig.worker.counters()["lanes"][RECEIVER].get("drop_replayed", 0)
        time.sleep(0.01)
    assert replayed == len(sealed)
    assert rig.packets(1, timeout=0.2) == []


def test_a_python_side_open_shares_the_window_under_the_lock(rig: Rig) -> None:
    """A message opened in Python (under the worker's lock) is a replay for the thread, and the other way
    round."""
    frames = [rig.encoder.encode([ipv4(100, fill=i)])[0] for i in range(4)]
    envelopes = [rig.sender_key.seal(RECEIVER, f) for f in frames]
    with rig.worker.locked():
        _, plain = rig.key.open(envelopes[0], receiver=RECEIVER, window=rig.window)
    assert plain == frames[0]
    rig.send([rig.builder.build(e) for e in envelopes])  # the first again, then three new ones
    assert len(rig.packets(3)) == 3
    time.sleep(0.05)
    assert rig.worker.counters()["lanes"][RECEIVER]["drop_replayed"] == 1
    with rig.worker.locked(), pytest.raises(aead.EnvelopeError) as e:
        rig.key.open(envelopes[1], receiver=RECEIVER, window=rig.window)
    assert e.value.reason == aead.DROP_REPLAYED


def test_spoofed_sources_are_dropped(rig: Rig) -> None:
    good = [ipv4(80, fill=1), ipv6(40)]
    bad = [ipv4(80, src="203.0.113.9"), ipv6(40, src="2001:db8:ffff::1")]
    rig.send(rig.seal(rig.encoder.encode([good[0], bad[0], good[1], bad[1]])))
    assert rig.packets(4, timeout=0.5) == good
    assert rig.worker.counters()["lanes"][RECEIVER]["spoofed"] == 2


def test_handshakes_unknown_receivers_and_forgeries_go_up_or_are_counted(rig: Rig) -> None:
    initiation = rig.builder.build(bytes([messages.MessageType.INITIATION]) + bytes(147))
    other = rig.seal(rig.encoder.encode([ipv4(60)]), receiver=0x0BADBEEF)
    ack = rig.seal([b"x" * 12], msg_type=int(messages.MessageType.ACK))
    forged = bytearray(rig.seal(rig.encoder.encode([ipv4(60)]))[0])
    forged[-1] ^= 1
    garbage = b"\x00" * 30
    rig.send([initiation, *other, *ack, bytes(forged), garbage])
    ups = rig.handoff(3)
    assert [(u[0], u[6]) for u in ups] == [(rxworker.DATAGRAM, initiation), (rxworker.DATAGRAM, other[0]),
                                          (rxworker.DATAGRAM, ack[0])]
    host, port = udpio.addr_get(ups[0][5], 0)
    assert (host, port) == ("127.0.0.1", rig.sender.getsockname()[1])
    time.sleep(0.05)
    c = rig.worker.counters()
    assert c["lanes"][RECEIVER]["drop_forged"] == 1
    assert sum(v for k, v in c["worker"].items() if k.startswith("drop_")) == 1  # the garbage
    assert rig.packets(1, timeout=0.1) == []


def test_acks_fall_due_at_the_documented_rate() -> None:
    """AckResponder's rule: the first data message after a quiet interval at once, then at most one per
    interval per route; the received count runs over every data message of the route."""
    r = _rig(ack_interval=0.2)
    try:
        sent = 0
        first: list[bytes] = []
        for burst in range(3):
            frames = [r.encoder.encode([ipv4(100, fill=i)])[0] for i in range(5)]
            sealed = r.seal(frames)
            first = first or sealed
            r.send(sealed)
            sent += len(frames)
            assert len(r.packets(5)) == 5
            if burst == 0:
                time.sleep(0.3)  # quiet: the next burst is acked at once
        acks = [u for u in r.handoff(2, timeout=0.5) if u[0] == rxworker.ACK]
        # Burst 0 (acked at its first message), burst 1 after a quiet interval; burst 2 came within 0.2 s.
        assert [a[4] for a in acks] == [1, 6]
        assert [a[3] for a in acks] == [0, 5]  # the acked counters
        # The datagram comes along for the reply path, its payload zeroed.
        h = len(r.builder.build(b"")) + aead.HEADER_LEN  # SCION/UDP header and envelope header
        assert len(acks[0][6]) == len(first[0])
        assert acks[0][6][:h] == first[0][:h]
        assert acks[0][6][h:] == bytes(len(first[0]) - h)
        time.sleep(0.25)
        r.send(r.seal(r.encoder.encode([ipv4(100)])))
        assert len(r.packets(1)) == 1
        late = [u for u in r.handoff(1) if u[0] == rxworker.ACK]
        assert [a[4] for a in late] == [sent + 1]
    finally:
        _close(r)


def test_frames_the_c_deframer_leaves_go_up_until_python_releases_the_stream(rig: Rig) -> None:
    frames = rig.encoder.encode([ipv4(1400, fill=1), ipv4(100, fill=2)])
    assert len(frames) == 2  # the first packet continues in the second frame
    late = rig.encoder.encode([ipv4(100, fill=3)])
    rig.send(rig.seal([frames[1]]))  # a continuation without its start: the Python decoder decides
    ups = [u for u in rig.handoff(2) if u[0] == rxworker.FRAME]
    assert [u[6] for u in ups] == [frames[1]]
    first_no = ups[0][4]  # a FRAME record's "received" field numbers it
    rig.send(rig.seal(late))  # the stream is Python's until it says otherwise
    ups = [u for u in rig.handoff(1) if u[0] == rxworker.FRAME]
    assert [u[6] for u in ups] == late and ups[0][4] == first_no + 1
    # Released after the first frame only: refused, since a later frame went up and is not decoded yet
    # (C deframing now would let the next frames overtake it).
    rig.worker.stream_idle(0, first_no)
    still = rig.encoder.encode([ipv4(100, fill=5)])
    rig.send(rig.seal(still))
    ups = [u for u in rig.handoff(1) if u[0] == rxworker.FRAME]
    assert [u[6] for u in ups] == still
    rig.worker.stream_idle(0, ups[0][4])  # after the last one handed up: the thread deframes again
    again = rig.encoder.encode([ipv4(100, fill=4)])
    rig.send(rig.seal(again))
    assert rig.packets(1) == [ipv4(100, fill=4)]


def test_an_expired_lane_hands_its_datagrams_up() -> None:
    r = _rig(arm=False)
    try:
        r.worker.arm(RECEIVER, r.key, r.window, r.deframer, 0, expires_at=time.monotonic() - 1)
        sealed = r.seal(r.encoder.encode([ipv4(60)]))
        r.send(sealed)
        assert [u[6] for u in r.handoff(1)] == sealed
    finally:
        _close(r)


def test_disarm_then_close_under_load_never_crashes() -> None:
    r = _rig(arm=False)
    stop = threading.Event()
    frames = r.encoder.encode([ipv4(1000, fill=i) for i in range(64)])

    def blast() -> None:
        key = aead.AeadKey(r.secret)
        while not stop.is_set():
            for d in r.seal(frames, key=key):
                try:
                    r.sender.sendto(d, ("127.0.0.1", r.port))
                except OSError:
                    pass

    def drain() -> None:
        while not stop.is_set():
            if select.select([r.tun_out], [], [], 0.05)[0]:
                r.tun_out.recv(65536)

    threads = [threading.Thread(target=blast), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 1.5
        rounds = 0
        while time.monotonic() < deadline:
            key, window = aead.AeadKey(r.secret), ReplayWindow(8192)
            r.worker.arm(RECEIVER, key, window, r.deframer, 0)
            time.sleep(0.002)
            if rounds % 2:
                key.close()  # closed while armed: wiped only at the disarm
                assert key.closed
            got = r.worker.disarm(RECEIVER)
            assert got is not None
            key.close()
            del window
            r.worker.take_handoff()
            rounds += 1
        assert rounds > 50
        assert r.worker.running
    finally:
        stop.set()
        for t in threads:
            t.join()
        _close(r)


def test_stop_joins_promptly_and_is_idempotent(rig: Rig) -> None:
    t0 = time.monotonic()
    rig.worker.stop()
    assert time.monotonic() - t0 < 0.5
    assert not rig.worker.running
    rig.worker.stop()
    assert rig.worker.receivers() == []  # stop disarms
    with pytest.raises(RuntimeError):
        rig.worker.start()


def test_a_full_handoff_ring_is_counted() -> None:
    r = _rig(arm=False)
    try:
        n = rxworker.HANDOFF_SLOTS + 100
        datagram = r.seal(r.encoder.encode([ipv4(60)]))[0]
        for _ in range(n):
            r.sender.sendto(datagram, ("127.0.0.1", r.port))
        deadline = time.monotonic() + 3
        seen = {"datagrams": 0, "handoff_full": 0, "handed_up": 0}
        while time.monotonic() < deadline and seen["datagrams"] < n:
            w = r.worker.counters()["worker"]
            for k in seen:
                seen[k] += w[k]
            time.sleep(0.01)
        assert seen["datagrams"] == n
        assert seen["handed_up"] == rxworker.HANDOFF_SLOTS
        assert seen["handoff_full"] == n - rxworker.HANDOFF_SLOTS
        assert len(r.worker.take_handoff(limit=10_000)) == rxworker.HANDOFF_SLOTS
    finally:
        _close(r)


# -- the gateway with its receive thread (two gateways on loopback, fake TUN devices) ---------------------


def _fake_tun() -> tuple[tun.TunDevice, socket.socket]:
    """(device, LAN side): a SOCK_SEQPACKET pair moves one packet per read/write, as IFF_TUN|IFF_NO_PI."""
    dev_end, lan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dev_end.setblocking(False)
    lan.settimeout(2)
    return tun.TunDevice(dev_end.detach(), "fake0"), lan


def _lan_send(lan: socket.socket, packets: list[bytes]) -> None:
    for p in packets:
        lan.send(p)


def _lan_packets(lan: socket.socket, want: int) -> list[bytes]:
    out: list[bytes] = []
    try:
        while len(out) < want:
            out.append(lan.recv(65536))
    except TimeoutError:
        pass
    return out


@dataclass
class Tunnels:
    gw_a: Gateway
    gw_b: Gateway
    tunnel_a: IpTunnel
    tunnel_b: IpTunnel
    lan_a: socket.socket
    lan_b: socket.socket
    nursery: trio.Nursery


@asynccontextmanager
async def _tunnels_up(threads: bool = True) -> AsyncIterator[Tunnels]:
    """Gateways A and B (``_gateways``) with IP tunnels over fake TUN devices, running, and the session up:
    a first datagram A -> B went through (the handshake and it take the handed-up Python path)."""
    gw_a, gw_b = _gateways()
    dev_a, lan_a = _fake_tun()
    dev_b, lan_b = _fake_tun()
    try:
        tunnel_a = IpTunnel(gw_a, dev_a, TrafficPolicy({IA_B: NET_B}), stride=2048, threads=threads)
        tunnel_b = IpTunnel(gw_b, dev_b, TrafficPolicy({IA_A: NET_A}), stride=2048, threads=threads)
        async with gw_a, gw_b, trio.open_nursery() as nursery:
            await nursery.start(tunnel_a.run)
            await nursery.start(tunnel_b.run)
            with trio.fail_after(5):
                await gw_a.send(IA_B, b"hello", msg_type=MSG_DATAGRAM)
                assert await gw_b.receive() == (IA_A, b"hello")
            yield Tunnels(gw_a, gw_b, tunnel_a, tunnel_b, lan_a, lan_b, nursery)
            nursery.cancel_scope.cancel()
    finally:
        for s in (lan_a, lan_b, dev_a, dev_b):
            s.close()


@pytest.mark.parametrize("threads", [True, False])
async def test_gateways_carry_ip_through_the_receive_thread(threads: bool) -> None:
    """Handshake and first datagram through the handed-up Python path, then IP packets from LAN A come
    out at LAN B byte-exact through B's receive thread; acks flow back; counters reach the in-loop
    names; a rekey under load (the old lane disarmed, then its keys wiped) loses nothing that was sent
    after it. With threads off the same traffic takes the event loop's path."""
    first = [ipv4(60 + i, src="192.0.2.1", dst="198.51.100.1", fill=i) for i in range(40)]
    second = [ipv4(1300, src="192.0.2.1", dst="198.51.100.1", fill=i) for i in range(40)]
    async with _tunnels_up(threads) as t:
        gw_a, gw_b = t.gw_a, t.gw_b
        assert (gw_b._rx is not None) is threads
        await trio.to_thread.run_sync(_lan_send, t.lan_a, first)  # the event loop may be the reader
        assert await trio.to_thread.run_sync(_lan_packets, t.lan_b, len(first)) == first
        old = gw_b.session(IA_A)
        await trio.sleep(0.05)  # a second initiation within 20 ms of the first is refused (a flood)
        with trio.fail_after(5):
            gw_a.ensure_session(IA_B, rekey=True)
            while gw_b.session(IA_A) is old or gw_a.handshaking(IA_B):
                await trio.sleep(0.01)
        await trio.sleep(0.05)  # the new session confirmed on both sides
        await trio.to_thread.run_sync(_lan_send, t.lan_a, second)  # the event loop may be the reader
        assert await trio.to_thread.run_sync(_lan_packets, t.lan_b, len(second)) == second
        await trio.sleep(0.05)
        gw_b.harvest_rx()
        lanes = sorted(gw_b._rx.lanes) if gw_b._rx is not None else []
        current = gw_b.session(IA_A).local_index  # type: ignore[union-attr]
    key = str(IA_A)
    assert gw_b.transfer[key]["rx_packets"] >= len(first) + 2  # + the datagram and the confirmation
    assert gw_b.counters["frames_received"] >= 2
    assert time.monotonic() - gw_b.last_rx[key] < 10
    assert gw_b.counters["acks_sent"] >= 1 and gw_a.counters["acks_received"] >= 1
    assert t.tunnel_b.counters["tun_packets_written"] == len(first) + len(second)
    assert not {k for k in gw_b.counters if k.startswith("drop_")}, gw_b.counters
    if threads:
        assert current in lanes  # the confirmed new session is armed
        assert gw_b.counters["rx_worker_datagrams"] > 0


# -- a real TUN device in a network namespace ---------------------------------------------------------------


def _udp4(payload: bytes, src: str, dst: str, sport: int, dport: int, ident: int) -> bytes:
    """IPv4/UDP with a valid header checksum (UDP checksum 0: none, allowed over IPv4)."""
    total = 28 + len(payload)
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000, 64, 17, 0,
                                ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed))
    words = sum(struct.unpack("!10H", hdr))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    hdr[10:12] = struct.pack("!H", ~words & 0xFFFF)
    return bytes(hdr) + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


@pytest.mark.netns
@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_a_real_tun_delivers_to_a_socket_in_its_namespace(requires_root_netns: None, offload: bool) -> None:
    """The thread writes to a TUN device (plain, or virtio-net header with coalesced UDP writes); a UDP
    socket behind it in the namespace receives every datagram byte-exact, in order."""
    why = tun.unavailable_reason()
    if why is not None:
        pytest.skip(f"tun: {why}")
    with (
        netns.scratch("sa-rxw") as ns,
        tun.TunDevice.open("sig0", netns=ns, mtu=1400, addresses=["198.51.100.1/24"], routes=[PEER_NET],
                           offload=offload) as dev,
    ):
        with netns.entered(ns):
            app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with app:
            app.bind(("198.51.100.1", 0))
            app.settimeout(2)
            dport = app.getsockname()[1]
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock, sender:
                port = sock.getsockname()[1]
                table = pipeline.PrefixTable([(0, PEER_NET)])
                worker = rxworker.RxWorker(sock.fileno(), False, dev.fileno(), dev.vnet_hdr, 8, port, table)
                secret = os.urandom(32)
                worker.arm(RECEIVER, aead.AeadKey(secret), ReplayWindow(8192), pipeline.Deframer(64, 2048), 0)
                worker.start()
                try:
                    payloads = [bytes([i]) * (1 + (i * 37) % 1300) for i in range(100)]
                    packets = [_udp4(p, "192.0.2.7", "198.51.100.1", 4000, dport, i) for i, p in enumerate(payloads)]
                    builder = UdpPacketBuilder(IA.parse("1-ff00:0:111"), ipaddress.IPv4Address("127.0.0.1"),
                                               30041, IA.parse("1-ff00:0:110"),
                                               ipaddress.IPv4Address("127.0.0.1"), port, EmptyPath())
                    key = aead.AeadKey(secret)
                    enc = FrameEncoder(0, 0x777, 1472)
                    for k in range(0, len(packets), 10):  # paced: ten packets per burst
                        for f in enc.encode(packets[k:k + 10]):
                            sender.sendto(builder.build(key.seal(RECEIVER, f)), ("127.0.0.1", port))
                        time.sleep(0.002)
                    got: list[bytes] = []
                    try:
                        while len(got) < len(payloads):
                            got.append(app.recv(65536))
                    except TimeoutError:
                        pass
                finally:
                    counts = worker.stop()
    assert got == payloads
    lane = counts["lanes"][RECEIVER]
    assert lane["written"] == len(packets) and lane["tun_failed"] == 0


def test_a_dead_socket_ends_the_thread_and_says_so() -> None:
    """The socket closed under the thread (never done on purpose): the thread ends with EBADF and wakes
    Python, which falls back to the event loop (``RxThread.service``)."""
    r = _rig()
    try:
        r.sock.close()
        assert select.select([r.worker.wake_fd], [], [], 2)[0]
        deadline = time.monotonic() + 2
        while r.worker.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not r.worker.running
        assert r.worker.failed_errno == errno.EBADF
    finally:
        _close(r)


async def test_receive_parsed_shares_the_window_with_the_thread() -> None:
    """A datagram of an armed session handed in already parsed (``Gateway.receive_parsed``, the embedded
    router's way) is opened in Python under the thread's lock and delivered; the same datagram then
    arriving on the socket is a replay for the thread."""
    packet = ipv4(120, src="192.0.2.1", dst="198.51.100.1", fill=5)
    async with _tunnels_up() as t:
        gw_a, gw_b = t.gw_a, t.gw_b
        assert gw_b._rx is not None and gw_b.session(IA_A).local_index in gw_b._rx.lanes  # type: ignore[union-attr]
        key = str(IA_B)
        tun_a = gw_a._tunnel_now(key)
        assert tun_a is not None
        frame = FrameEncoder(9, 0x4242, 1472).encode([packet])[0]
        envelope = tun_a.send.seal(tun_a.session.remote_index, frame, msg_type=DATA)
        datagram = gw_a._builder(key, gw_a._choose(key)).build(envelope)
        buf = bytearray(2048)
        buf[: len(datagram)] = datagram
        lengths = array.array("I", [len(datagram)])
        addrs = udpio.new_addrs(1)
        addrs[:] = udpio.addr_pack(str(gw_a.host), gw_a.port)
        recs = codec.ScionRecords(1)
        recs.parse_batch(buf, 2048, lengths, 1)
        gw_b.receive_parsed(buf, 2048, lengths, addrs, recs, range(1), time.monotonic())
        assert await trio.to_thread.run_sync(_lan_packets, t.lan_b, 1) == [packet]
        before = gw_b.counters["drop_replayed"]
        gw_a._sock.sendto(datagram, (str(gw_b.host), gw_b.port))  # type: ignore[union-attr]
        with trio.fail_after(2):
            while gw_b.counters["drop_replayed"] == before:
                await trio.sleep(0.01)
                gw_b.harvest_rx()
        assert gw_b.counters["drop_replayed"] - before == 1


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.one_of(st.integers(20, 1500).map(lambda n: ("4", n)),
                             st.integers(0, 1400).map(lambda n: ("6", n))), min_size=1, max_size=80),
    frame_size=st.sampled_from([100, 600, 1472]),
)
def test_any_packet_mix_comes_out_as_it_went_in(sizes: list[tuple[str, int]], frame_size: int) -> None:
    """Whatever the sizes (packets cut across frames and across receive batches), the TUN gets exactly the
    packets framed, in order, and nothing goes up to Python but the first ack."""
    packets = [ipv4(n, fill=i) if v == "4" else ipv6(n, fill=i) for i, (v, n) in enumerate(sizes)]
    r = _rig()
    try:
        r.encoder = FrameEncoder(0, 0x12345, frame_size)
        r.send(r.seal(r.encoder.encode(packets)))
        assert r.packets(len(packets)) == packets
        assert [u[0] for u in r.worker.take_handoff()] == [rxworker.ACK]
    finally:
        _close(r)


async def test_a_receive_thread_that_cannot_start_leaves_the_event_loop_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of threads or descriptors when the tunnel starts: the gateway says so in the log, keeps reading
    the socket in the event loop, and IP still arrives; status shows the inbound direction there."""
    import scion_appliance.gateway.service as gateway_service

    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(gateway_service, "RxThread", no_thread)
    packets = [ipv4(100 + i, fill=i) for i in range(20)]
    async with _tunnels_up() as t:
        await trio.to_thread.run_sync(_lan_send, t.lan_a, packets)
        assert await trio.to_thread.run_sync(_lan_packets, t.lan_b, len(packets)) == packets
        assert t.tunnel_b.datapath() == {"outbound": "thread", "inbound": "event loop"}


def test_fuzzed_datagrams_never_crash_the_thread_and_every_one_is_read() -> None:
    """A bounded fuzz of the thread's way in (parse, select, open, deframe): random bytes and valid sealed
    data datagrams with flipped bytes or cut short. The thread keeps running, reads every datagram, and
    what reaches the TUN is only ever one of the packets that were sealed (a flip outside the envelope,
    in the SCION header, may still deliver; nothing else can)."""
    rng = random.Random(20261125)
    r = _rig()
    try:
        inner = [ipv4(rng.randrange(20, 1400), fill=i) for i in range(64)]
        sent = 0
        for _ in range(1500):
            if rng.random() < 0.3:
                d = rng.randbytes(rng.randrange(0, 1500))
            else:
                d = bytearray(r.seal(r.encoder.encode([rng.choice(inner)]))[0])
                if rng.random() < 0.3:
                    d = d[: rng.randrange(0, len(d))]
                else:
                    for _ in range(rng.randrange(1, 5)):
                        d[rng.randrange(len(d))] ^= rng.randrange(1, 256)
            r.send([bytes(d)])
            sent += 1
            if sent % 64 == 0:
                time.sleep(0.002)  # bounded pace: the socket buffer never overflows
        deadline = time.monotonic() + 5
        read = 0
        while read < sent and time.monotonic() < deadline:
            time.sleep(0.02)
            read += r.worker.counters()["worker"]["datagrams"]
        assert r.worker.running
        assert read == sent
        out = r.packets(sent, timeout=0.2)
        assert set(out) <= set(inner)
        r.worker.take_handoff()  # what went up is Python's to judge (tested above); the ring drains
    finally:
        _close(r)
