"""Plain SIG mode (``gateway.plain_sig``): frames without the envelope, as the reference gateway sends them.

The wire format checked here is ``scion.sig_frame``'s, which its own tests hold against scionproto's
gateway encoder (tests/data/sig-frames.json); what this file checks is that plain mode puts exactly those
bytes, and nothing else, into the UDP payload of a SCION/UDP packet to port 30056.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

import pytest
import trio

from scion_appliance import config, tun
from scion_appliance.gateway import Gateway, GatewayError, PeerSpec
from scion_appliance.gateway.control_backend import GatewayControl
from scion_appliance.gateway.ip_tunnel import IpTunnel
from scion_appliance.gateway.traffic_policy import TrafficPolicy
from scion_appliance.paths.source import PathInfo, StaticPathSource
from scion_appliance.scion import packet as scion_packet
from scion_appliance.scion.addr import IA
from scion_appliance.scion.builder import UdpPacketBuilder
from scion_appliance.scion.l4 import UdpDatagram
from scion_appliance.scion.sig_frame import FrameDecoder, FrameEncoder
from scion_appliance.service import peer_specs
from scion_appliance.tunnel import messages
from scion_appliance.tunnel.keys import generate_private_key, public_key

pytestmark = pytest.mark.timeout(60)

SIG_PORT = 30056  # scionproto's gateway data port
IA_A, IA_B, IA_X = IA.parse("1-ff00:0:110"), IA.parse("1-ff00:0:111"), IA.parse("1-ff00:0:999")
# Own loopback addresses: port 30056 is bound per address, so these do not collide with anything.
HA, HB = ipaddress.IPv4Address("127.0.56.1"), ipaddress.IPv4Address("127.0.56.2")
NET_A, NET_B = ["192.0.2.0/24"], ["198.51.100.0/24"]
DATA = messages.MessageType.DATA


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _checksum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp(src: str, dst: str, data: bytes) -> bytes:
    udp = struct.pack("!HHHH", 4000, 4001, 8 + len(data), 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:] + udp


def gateway(ia: IA, host: ipaddress.IPv4Address, port: int, peers: list[PeerSpec],
            paths: dict[str, list[PathInfo]]) -> Gateway:
    return Gateway(ia=ia, host=host, port=port, private_key=generate_private_key(), peers=peers,
                   path_source=StaticPathSource(paths), probe_interval=0.05, sig_port=SIG_PORT)


def plain_peer(name: str, ia: IA, host: ipaddress.IPv4Address) -> PeerSpec:
    # A reference gateway has no static key: no handshake, no session.
    return PeerSpec(name, ia, host, SIG_PORT, None, host, plain=True)


@pytest.fixture
def fake_tuns() -> Iterator[list[tuple[tun.TunDevice, socket.socket]]]:
    """Two (device, LAN side) pairs over socket pairs, as tests/test_ip_tunnel.py's unit tests use."""
    out = []
    for name in ("fakea", "fakeb"):
        dev_end, lan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dev_end.setblocking(False)
        lan.setblocking(False)
        out.append((tun.TunDevice(dev_end.detach(), name), lan))
    yield out
    for dev, lan in out:
        dev.close()
        lan.close()


async def recv_lan(lan: socket.socket, timeout: float = 3.0) -> bytes:
    with trio.fail_after(timeout):
        await trio.lowlevel.wait_readable(lan)
        return lan.recv(65535)


# -- the wire ------------------------------------------------------------------------------------------


async def test_frames_on_the_wire_are_exactly_the_encoders_output() -> None:
    """A stand-in for the reference gateway listens on B:30056 and records what arrives."""
    main_a = free_port(str(HA))
    ref = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await ref.bind((str(HB), SIG_PORT))
    # Probes (SCMP echo) go to a port nobody answers: the path stays unmeasured but usable.
    path = PathInfo("direct", 0, (), b"", (str(HB), free_port(str(HB))))
    gw = gateway(IA_A, HA, main_a, [plain_peer("ref", IA_B, HB)], {str(IA_B): [path]})
    packets = [ipv4_udp("192.0.2.7", "198.51.100.9", os.urandom(n)) for n in (30, 1300, 900, 5)]
    frames = FrameEncoder(3, 0x12345, 700).encode(packets)
    assert len(frames) >= 3  # packets split across frames travel as is
    with ref:
        async with gw:
            assert gw.plain_sig is not None and gw.plain_sig.active
            for f in frames:
                out = await gw.send(IA_B, f, msg_type=DATA)
                assert out["path"] == "direct"
            got = []
            with trio.fail_after(3):
                for _ in frames:
                    data, src = await ref.recvfrom(65535)
                    got.append(data)
            assert src == (str(HA), SIG_PORT)
            # Datagrams and empty keepalives mean nothing to the reference gateway: refused, not sent.
            with pytest.raises(GatewayError, match="plain SIG peer"):
                await gw.send(IA_B, b"hello")
            with pytest.raises(GatewayError):
                await gw.send(IA_B, b"", msg_type=DATA)
            assert not gw.ensure_session(IA_B)  # no handshake with a plain peer, ever
            assert gw.counters["handshake_initiations_sent"] == 0
            assert gw.counters["plain_frames_sent"] == len(frames)
    decoder = FrameDecoder()
    delivered = []
    for raw, frame in zip(got, frames, strict=True):
        assert scion_packet.checksum_valid(raw) is True
        pkt = scion_packet.parse(raw)
        assert (pkt.src_ia, pkt.dst_ia, pkt.src_host, pkt.dst_host) == (IA_A, IA_B, HA, HB)
        assert isinstance(pkt.l4, UdpDatagram)
        assert (pkt.l4.src_port, pkt.l4.dst_port) == (SIG_PORT, SIG_PORT)
        assert pkt.l4.payload == frame  # no envelope: the SIG frame is the whole UDP payload
        delivered += decoder.feed(pkt.l4.payload)
    assert delivered == packets


# -- end to end ------------------------------------------------------------------------------------------


async def test_two_plain_gateways_carry_ip_packets_both_ways(
    fake_tuns: list[tuple[tun.TunDevice, socket.socket]],
) -> None:
    (dev_a, lan_a), (dev_b, lan_b) = fake_tuns
    main_a, main_b = free_port(str(HA)), free_port(str(HB))
    # Probes go to the other gateway's sealed port, which answers echo requests: paths get measured.
    gw_a = gateway(IA_A, HA, main_a, [plain_peer("b", IA_B, HB)],
                   {str(IA_B): [PathInfo("direct", 0, (), b"", (str(HB), main_b))]})
    gw_b = gateway(IA_B, HB, main_b, [plain_peer("a", IA_A, HA)],
                   {str(IA_A): [PathInfo("direct", 0, (), b"", (str(HA), main_a))]})
    tunnel_a = IpTunnel(gw_a, dev_a, TrafficPolicy({IA_B: NET_B}), stride=2048)
    tunnel_b = IpTunnel(gw_b, dev_b, TrafficPolicy({IA_A: NET_A}), stride=2048)
    a_to_b = [ipv4_udp("192.0.2.10", "198.51.100.20", os.urandom(n)) for n in (40, 1350, 600, 1, 1000)]
    b_to_a = [ipv4_udp("198.51.100.20", "192.0.2.10", os.urandom(n)) for n in (700, 20)]
    async with gw_a, gw_b, trio.open_nursery() as nursery:
        await nursery.start(tunnel_a.run)
        await nursery.start(tunnel_b.run)
        for p in a_to_b:
            lan_a.send(p)
        assert [await recv_lan(lan_b) for _ in a_to_b] == a_to_b
        for p in b_to_a:
            lan_b.send(p)
        assert [await recv_lan(lan_a) for _ in b_to_a] == b_to_a
        # Probing runs for plain peers as for sealed ones.
        with trio.fail_after(3):
            while gw_a.prober.quality["direct"].rtt is None:
                await trio.sleep(0.02)
        doc = GatewayControl(gw_a, isd_as=str(IA_A), public_key=b"\0" * 32,
                             peers=config.parse(PLAIN_TOML).peers).status()
        nursery.cancel_scope.cancel()
    peer = doc["peers"][0]
    assert (peer["mode"], peer["state"], peer["session"]) == ("plain", "up", None)
    assert peer["transfer"]["tx_packets"] >= 1 and peer["transfer"]["rx_packets"] >= 1
    assert tunnel_b.counters["tun_packets_written"] == len(a_to_b)
    assert tunnel_a.counters["tun_packets_written"] == len(b_to_a)
    for gw in (gw_a, gw_b):
        assert gw.counters["handshakes_completed"] == 0
        assert not [k for k in gw.counters if k.startswith("drop_")], dict(gw.counters)


async def test_unknown_or_sealed_peer_on_the_sig_port_is_dropped_and_counted(
    fake_tuns: list[tuple[tun.TunDevice, socket.socket]],
) -> None:
    (dev, lan), _ = fake_tuns
    sealed = PeerSpec("sealed", IA_X, HB, free_port(str(HB)), public_key(generate_private_key()), HB)
    path = PathInfo("direct", 0, (), b"", (str(HB), free_port(str(HB))))
    gw = gateway(IA_A, HA, free_port(str(HA)), [plain_peer("b", IA_B, HB), sealed],
                 {str(IA_B): [path], str(IA_X): [path]})
    tunnel = IpTunnel(gw, dev, TrafficPolicy({IA_B: NET_B, IA_X: ["203.0.113.0/24"]}), stride=2048)
    good = ipv4_udp("198.51.100.20", "192.0.2.10", b"from the plain peer")
    frame_of = lambda p: FrameEncoder(0, 1, 1400).encode([p])[0]  # noqa: E731
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((str(HB), 0))

    def send_from(src_ia: IA, payload: bytes) -> None:
        sender.sendto(UdpPacketBuilder(src_ia, HB, SIG_PORT, IA_A, HA, SIG_PORT).build(payload),
                      (str(HA), SIG_PORT))

    with sender:
        async with gw, trio.open_nursery() as nursery:
            await nursery.start(tunnel.run)
            # From an ISD-AS that is no peer, and from a sealed peer: neither may use the plain port.
            send_from(IA.parse("2-ff00:0:222"), frame_of(good))
            send_from(IA_X, frame_of(ipv4_udp("203.0.113.5", "192.0.2.10", b"sealed peer, plain port")))
            # From the plain peer, but with a source outside its prefixes: the policy's source check.
            send_from(IA_B, frame_of(ipv4_udp("203.0.113.5", "192.0.2.10", b"spoofed")))
            send_from(IA_B, frame_of(good))
            assert await recv_lan(lan) == good
            nursery.cancel_scope.cancel()
    with pytest.raises(BlockingIOError):
        lan.recv(65535)  # nothing else reached the LAN
    assert gw.counters["drop_plain_unknown_peer"] == 2
    assert gw.counters["plain_frames_received"] == 2
    assert tunnel.counters["drop_spoofed_source"] == 1
    assert tunnel.counters["tun_packets_written"] == 1


async def test_no_plain_peer_no_second_socket() -> None:
    port = free_port(str(HA))
    sealed = PeerSpec("s", IA_B, HB, port, public_key(generate_private_key()), HB)
    gw = gateway(IA_A, HA, port, [sealed], {str(IA_B): []})
    async with gw:
        assert gw.plain_sig is not None and not gw.plain_sig.active
        # A reload that adds a plain peer opens it.
        gw.set_peers([sealed, plain_peer("ref", IA_X, HB)])
        assert gw.plain_sig.active
    with pytest.raises(ValueError, match="sig_port"):
        Gateway(ia=IA_A, host=HA, port=port, private_key=generate_private_key(),
                peers=[plain_peer("ref", IA_B, HB)], path_source=StaticPathSource())


# -- config ------------------------------------------------------------------------------------------------

PLAIN_TOML = """
[identity]
private_key_file = "/etc/scion-appliance/private.key"
isd_as = "1-ff00:0:110"

[[peers]]
name = "ref"
isd_as = "1-ff00:0:111"
address = "127.0.56.2"
probe_address = "127.0.56.2"
plain = true

[[peers]]
name = "appliance"
isd_as = "1-ff00:0:112"
public_key = "4TGM1B3erwcXCs68DRQy5lfbjCrt/kJ7FVFKRlF6Iws="
address = "127.0.56.3"
probe_address = "127.0.56.3"
"""


def test_config_plain_key() -> None:
    cfg = config.parse(PLAIN_TOML, "t.toml")
    assert [p.plain for p in cfg.peers] == [True, False]  # default: sealed
    assert cfg.underlay.sig_port == SIG_PORT
    specs = peer_specs(cfg, None)
    # A plain peer's port defaults to the reference gateway's 30056, a sealed one's to our underlay port.
    assert [(s.plain, s.port) for s in specs] == [(True, SIG_PORT), (False, config.APPLIANCE_PORT)]
    assert "plain SIG 30056 for 1 peer(s)" in cfg.summary()


def test_config_plain_peer_needs_no_key_but_a_sealed_one_does() -> None:
    cfg = config.parse(PLAIN_TOML, "t.toml")
    assert cfg.peers[0].public_key is None and cfg.peers[1].public_key is not None
    assert peer_specs(cfg, None)[0].public_key is None
    sealed_without_key = PLAIN_TOML.replace('public_key = "4TGM1B3erwcXCs68DRQy5lfbjCrt/kJ7FVFKRlF6Iws="\n', "")
    with pytest.raises(config.ConfigError, match=r"peers\[1\]\.public_key.*required for a sealed peer") as e:
        config.parse(sealed_without_key, "t.toml")
    assert e.value.key == "peers[1].public_key"
    # Two plain peers without keys are not "the same key twice".
    two_plain = PLAIN_TOML.replace('public_key = "4TGM1B3erwcXCs68DRQy5lfbjCrt/kJ7FVFKRlF6Iws="\n',
                                   "plain = true\n")
    assert [p.public_key for p in config.parse(two_plain, "t.toml").peers] == [None, None]
    with pytest.raises(ValueError, match="sealed peer needs its static public key"):
        PeerSpec("s", IA.parse("1-ff00:0:111"), ipaddress.ip_address("127.0.0.1"), 1, None,
                 ipaddress.ip_address("127.0.0.1"))


def test_config_plain_needs_a_sig_port_and_a_boolean() -> None:
    with pytest.raises(config.ConfigError, match=r"underlay\.sig_port.*peers\[0\] \(ref\) is plain"):
        config.parse(PLAIN_TOML + "\n[underlay]\nsig_port = 0\n", "t.toml")
    with pytest.raises(config.ConfigError, match=r"underlay\.sig_port.*other than underlay\.port"):
        config.parse(PLAIN_TOML + "\n[underlay]\nsig_port = 30057\n", "t.toml")
    with pytest.raises(config.ConfigError, match=r"peers\[0\]\.plain: expected true or false"):
        config.parse(PLAIN_TOML.replace("plain = true", 'plain = "yes"'), "t.toml")
