"""Object API of the SCION codec against scionproto's golden packets.

Known answers: the field values listed for each file in ../shared/vectors/README.md (copied to
tests/data/README.md's sources), written by scionproto/scion's own slayers tests.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from scion_appliance.scion import packet
from scion_appliance.scion.addr import IA
from scion_appliance.scion.errors import ScionParseError, TruncatedPacket
from scion_appliance.scion.l4 import RawPayload, UdpDatagram
from scion_appliance.scion.path import EmptyPath, ScionPath
from scion_appliance.scion.scmp import DestinationUnreachable, ExternalInterfaceDown, InternalConnectivityDown

GOLDEN = Path(__file__).parent / "data" / "scionproto-golden"
PAYLOAD = bytes(i % 256 for i in range(1024))


def load(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.bin")))
def test_every_golden_packet_round_trips_byte_exact(name: str) -> None:
    raw = load(name)
    assert packet.parse(raw).serialize() == raw


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.bin")))
def test_common_fields_of_every_golden_packet(name: str) -> None:
    pkt = packet.parse(load(name))
    assert pkt.traffic_class == 0xB8
    assert pkt.flow_id == 0xDEAD


def test_empty_udp() -> None:
    raw = load("empty-udp.bin")
    assert len(raw) == 1080
    pkt = packet.parse(raw)
    assert isinstance(pkt.path, EmptyPath)
    assert pkt.src_ia == pkt.dst_ia == IA.parse("1-ff00:0:111")
    assert pkt.dst_host == ipaddress.ip_address("2001:db8::68")
    assert pkt.src_host == ipaddress.ip_address("10.0.0.100")
    assert isinstance(pkt.l4, UdpDatagram)
    assert (pkt.l4.src_port, pkt.l4.dst_port, pkt.l4.checksum) == (1280, 80, 0xB8E4)
    assert pkt.l4.payload == PAYLOAD
    assert packet.checksum_valid(raw) is True


def test_scion_udp() -> None:
    raw = load("scion-udp.bin")
    assert len(raw) == 1148
    assert raw[5] == 29  # HdrLen
    pkt = packet.parse(raw)
    assert isinstance(pkt.path, ScionPath)
    assert pkt.src_ia == IA.parse("2-ff00:0:222")
    assert pkt.dst_ia == IA.parse("1-ff00:0:111")
    assert all(h.mac == bytes.fromhex("010203040506") for h in pkt.path.hop_fields)
    assert isinstance(pkt.l4, UdpDatagram)
    assert (pkt.l4.src_port, pkt.l4.dst_port, pkt.l4.checksum) == (1280, 80, 0xB7D2)
    assert pkt.l4.payload == PAYLOAD
    assert packet.checksum_valid(raw) is True
    # Recomputing the checksum from the values gives the reference implementation's.
    assert pkt.with_checksum().serialize() == raw


def test_scion_udp_with_extensions() -> None:
    raw = load("scion-udp-extn.bin")
    assert len(raw) == 1208
    pkt = packet.parse(raw)
    assert pkt.hbh is not None and pkt.e2e is not None
    assert raw[pkt_hdr_len(raw) + 1] == 6  # hop-by-hop ExtLen
    assert len(pkt.hbh.body()) + 2 == (6 + 1) * 4
    assert len(pkt.e2e.body()) + 2 == (7 + 1) * 4
    assert int.from_bytes(raw[6:8], "big") == 1092  # PayloadLen
    assert isinstance(pkt.l4, UdpDatagram) and pkt.l4.payload == PAYLOAD
    assert packet.checksum_valid(raw) is True


def pkt_hdr_len(raw: bytes) -> int:
    return raw[5] * 4


def test_scmp_destination_unreachable() -> None:
    raw = load("scion-scmp-dest-unreachable.bin")
    assert len(raw) == 142
    pkt = packet.parse(raw)
    assert isinstance(pkt.l4, DestinationUnreachable)
    assert (pkt.l4.type, pkt.l4.code, pkt.l4.checksum) == (1, 6, 0)
    assert packet.checksum_valid(raw) is False  # written without checksums


def test_scmp_external_interface_down() -> None:
    raw = load("scion-scmp-ext-int-down.bin")
    assert len(raw) == 154
    msg = packet.parse(raw).l4
    assert isinstance(msg, ExternalInterfaceDown)
    assert (msg.type, msg.code) == (5, 0)
    assert msg.ia == IA.parse("1-ff00:0:111")
    assert msg.interface == 5


def test_scmp_internal_connectivity_down() -> None:
    raw = load("scion-scmp-int-conn-down.bin")
    assert len(raw) == 162
    msg = packet.parse(raw).l4
    assert isinstance(msg, InternalConnectivityDown)
    assert (msg.type, msg.code) == (6, 0)
    assert msg.ia == IA.parse("1-ff00:0:111")
    assert (msg.ingress, msg.egress) == (5, 15)


def test_bfd_is_kept_raw() -> None:
    raw = load("scion-bfd.bin")
    assert len(raw) == 60
    pkt = packet.parse(raw)
    assert raw[4] == 203
    assert isinstance(pkt.path, EmptyPath)
    assert pkt.dst_host == ipaddress.ip_address("127.0.0.9")
    assert pkt.src_host == ipaddress.ip_address("127.0.0.10")
    assert isinstance(pkt.l4, RawPayload) and pkt.l4.proto == 203
    assert packet.checksum_valid(raw) is None


def test_scmp_checksum_computed_over_pseudo_header_verifies() -> None:
    pkt = packet.parse(load("scion-scmp-ext-int-down.bin")).with_checksum()
    raw = pkt.serialize()
    assert packet.checksum_valid(raw) is True
    assert pkt.l4.checksum != 0


def test_flipping_any_payload_bit_breaks_the_udp_checksum() -> None:
    raw = bytearray(load("scion-udp.bin"))
    raw[-1] ^= 0x01
    assert packet.checksum_valid(bytes(raw)) is False


def test_errors_name_reason_and_offset() -> None:
    raw = load("scion-udp.bin")
    with pytest.raises(TruncatedPacket) as e:
        packet.parse(raw[:100])
    assert e.value.reason == "truncated_header"
    assert e.value.offset == 100
    assert "byte 100" in str(e.value)
    bad = bytearray(raw)
    bad[0] = 0x10  # version 1
    with pytest.raises(ScionParseError) as e2:
        packet.parse(bytes(bad))
    assert (e2.value.reason, e2.value.offset) == ("bad_version", 0)
