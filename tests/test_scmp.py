"""SCMP message layouts. Known answers: the SCMP specification's formats, as serialized by an
independent C implementation's test table (error cases with type, code, zero checksum and body), and
scionproto's golden packets (tests/test_packet.py)."""

from __future__ import annotations

from scion_appliance.scion.addr import IA
from scion_appliance.scion.scmp import (
    PP_INVALID_HOP_FIELD_MAC,
    DestinationUnreachable,
    Echo,
    ExternalInterfaceDown,
    InternalConnectivityDown,
    PacketTooBig,
    ParameterProblem,
    Traceroute,
    is_error,
    scmp_from_bytes,
)

IA111 = IA.parse("1-ff00:0:111")


def test_error_layouts() -> None:
    assert DestinationUnreachable.new(4, b"\xaa\xbb\xcc").to_bytes() == bytes.fromhex(
        "0104000000000000aabbcc"
    )
    assert PacketTooBig.new(1400, b"").to_bytes() == bytes.fromhex("0200000000000578")
    assert ParameterProblem.new(PP_INVALID_HOP_FIELD_MAC, 258, b"").to_bytes() == bytes.fromhex(
        "0433000000000102"
    )
    assert ExternalInterfaceDown.new(IA111, 42, b"").to_bytes() == bytes.fromhex(
        "050000000001ff0000000111000000000000002a"
    )
    assert InternalConnectivityDown.new(IA111, 1, 2, b"").to_bytes() == bytes.fromhex(
        "060000000001ff000000011100000000000000010000000000000002"
    )


def test_informational_layouts_and_fields() -> None:
    echo = Echo.new(0x1234, 7, b"hi", reply=True)
    assert echo.to_bytes() == bytes.fromhex("8100000012340007") + b"hi"
    back = scmp_from_bytes(echo.to_bytes())
    assert isinstance(back, Echo) and (back.identifier, back.sequence, back.data) == (0x1234, 7, b"hi")
    tr = scmp_from_bytes(Traceroute.new(9, 3, IA111, 5).to_bytes())
    assert isinstance(tr, Traceroute)
    assert (tr.type, tr.identifier, tr.sequence, tr.ia, tr.interface) == (130, 9, 3, IA111, 5)
    assert not is_error(tr) and is_error(PacketTooBig.new(1280, b""))


def test_unknown_types_are_kept_raw() -> None:
    msg = scmp_from_bytes(bytes.fromhex("64000000") + b"private")
    assert (msg.type, msg.body) == (100, b"private")
    assert msg.name == "unknown(100)"
