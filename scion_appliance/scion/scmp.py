"""SCMP messages (SCION's ICMP) as values, and their bytes.

Rules kept here:
- Layouts follow the SCION specification: Type (1), Code (1), Checksum (2), then per type:
  destination unreachable (4 unused bytes), packet too big (reserved 2, MTU 2), parameter problem
  (reserved 2, pointer 2), external interface down (ISD-AS 8, interface 8), internal connectivity
  down (ISD-AS 8, ingress 8, egress 8), echo (identifier 2, sequence 2), traceroute (identifier 2,
  sequence 2, ISD-AS 8, interface 8); error messages quote as much of the offending packet as fits.
- Unknown types are kept raw. The checksum is the stored one; ``ScionPacket.with_checksum`` fills it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from scion_appliance.scion.addr import IA

PROTO_SCMP = 202

DEST_UNREACHABLE = 1
PACKET_TOO_BIG = 2
PARAMETER_PROBLEM = 4
EXTERNAL_INTERFACE_DOWN = 5
INTERNAL_CONNECTIVITY_DOWN = 6
ECHO_REQUEST = 128
ECHO_REPLY = 129
TRACEROUTE_REQUEST = 130
TRACEROUTE_REPLY = 131

TYPE_NAMES = {
    1: "destination_unreachable",
    2: "packet_too_big",
    4: "parameter_problem",
    5: "external_interface_down",
    6: "internal_connectivity_down",
    128: "echo_request",
    129: "echo_reply",
    130: "traceroute_request",
    131: "traceroute_reply",
}

# Parameter-problem codes (SCION SCMP specification; same numbers in scionproto's slayers).
PP_ERRONEOUS_HEADER_FIELD = 0
PP_UNKNOWN_NEXT_HDR = 1
PP_INVALID_COMMON_HEADER = 16
PP_UNKNOWN_SCION_VERSION = 17
PP_FLOW_ID_REQUIRED = 18
PP_INVALID_PACKET_SIZE = 19
PP_UNKNOWN_PATH_TYPE = 20
PP_UNKNOWN_ADDRESS_FORMAT = 21
PP_INVALID_ADDRESS_HEADER = 32
PP_INVALID_SOURCE_ADDRESS = 33
PP_INVALID_DESTINATION_ADDRESS = 34
PP_NON_LOCAL_DELIVERY = 35
PP_INVALID_PATH = 48
PP_UNKNOWN_HOP_INGRESS = 49
PP_UNKNOWN_HOP_EGRESS = 50
PP_INVALID_HOP_FIELD_MAC = 51
PP_PATH_EXPIRED = 52
PP_INVALID_SEGMENT_CHANGE = 53
PP_INVALID_EXTENSION_HEADER = 64
PP_UNKNOWN_HBH_OPTION = 65
PP_UNKNOWN_E2E_OPTION = 66

MAX_QUOTE = 1232  # an SCMP error stays within the minimum SCION MTU (1280) with its own headers

_HEAD = struct.Struct(">BBH")


@dataclass(frozen=True)
class ScmpMessage:
    type: int
    code: int
    checksum: int
    body: bytes

    TYPE: ClassVar[int] = -1

    @property
    def name(self) -> str:
        return TYPE_NAMES.get(self.type, f"unknown({self.type})")

    def to_bytes(self) -> bytes:
        return _HEAD.pack(self.type, self.code, self.checksum) + self.body

    def with_checksum(self, checksum: int) -> ScmpMessage:
        return type(self).from_bytes(_HEAD.pack(self.type, self.code, checksum) + self.body)

    def fields(self) -> dict[str, Any]:
        return {"body": self.body.hex()}

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "code": self.code,
            "checksum": self.checksum,
            **self.fields(),
        }

    @classmethod
    def from_bytes(cls, raw: bytes) -> ScmpMessage:
        t, code, csum = _HEAD.unpack_from(raw)
        return cls(t, code, csum, bytes(raw[4:]))

    @classmethod
    def make(cls, code: int, body: bytes) -> ScmpMessage:
        return cls(cls.TYPE, code, 0, body)


class DestinationUnreachable(ScmpMessage):
    TYPE = DEST_UNREACHABLE

    @property
    def quote(self) -> bytes:
        return self.body[4:]

    def fields(self) -> dict[str, Any]:
        return {"quote_len": len(self.quote)}

    @classmethod
    def new(cls, code: int, quote: bytes) -> ScmpMessage:
        return cls.make(code, bytes(4) + quote[:MAX_QUOTE])


class PacketTooBig(ScmpMessage):
    TYPE = PACKET_TOO_BIG

    @property
    def mtu(self) -> int:
        return int.from_bytes(self.body[2:4], "big")

    def fields(self) -> dict[str, Any]:
        return {"mtu": self.mtu, "quote_len": len(self.body) - 4}

    @classmethod
    def new(cls, mtu: int, quote: bytes) -> ScmpMessage:
        return cls.make(0, bytes(2) + mtu.to_bytes(2, "big") + quote[:MAX_QUOTE])


class ParameterProblem(ScmpMessage):
    TYPE = PARAMETER_PROBLEM

    @property
    def pointer(self) -> int:
        return int.from_bytes(self.body[2:4], "big")

    def fields(self) -> dict[str, Any]:
        return {"pointer": self.pointer, "quote_len": len(self.body) - 4}

    @classmethod
    def new(cls, code: int, pointer: int, quote: bytes) -> ScmpMessage:
        return cls.make(code, bytes(2) + pointer.to_bytes(2, "big") + quote[:MAX_QUOTE])


class ExternalInterfaceDown(ScmpMessage):
    TYPE = EXTERNAL_INTERFACE_DOWN

    @property
    def ia(self) -> IA:
        return IA.from_bytes(self.body[0:8])

    @property
    def interface(self) -> int:
        return int.from_bytes(self.body[8:16], "big")

    def fields(self) -> dict[str, Any]:
        return {"isd_as": str(self.ia), "interface": self.interface, "quote_len": len(self.body) - 16}

    @classmethod
    def new(cls, ia: IA, interface: int, quote: bytes) -> ScmpMessage:
        return cls.make(0, ia.to_bytes() + interface.to_bytes(8, "big") + quote[:MAX_QUOTE])


class InternalConnectivityDown(ScmpMessage):
    TYPE = INTERNAL_CONNECTIVITY_DOWN

    @property
    def ia(self) -> IA:
        return IA.from_bytes(self.body[0:8])

    @property
    def ingress(self) -> int:
        return int.from_bytes(self.body[8:16], "big")

    @property
    def egress(self) -> int:
        return int.from_bytes(self.body[16:24], "big")

    def fields(self) -> dict[str, Any]:
        return {
            "isd_as": str(self.ia),
            "ingress": self.ingress,
            "egress": self.egress,
            "quote_len": len(self.body) - 24,
        }

    @classmethod
    def new(cls, ia: IA, ingress: int, egress: int, quote: bytes) -> ScmpMessage:
        body = ia.to_bytes() + ingress.to_bytes(8, "big") + egress.to_bytes(8, "big") + quote[:MAX_QUOTE]
        return cls.make(0, body)


class _Informational(ScmpMessage):
    """Echo and traceroute both open with a 16-bit identifier and sequence number."""

    @property
    def identifier(self) -> int:
        return int.from_bytes(self.body[0:2], "big")

    @property
    def sequence(self) -> int:
        return int.from_bytes(self.body[2:4], "big")


class Echo(_Informational):
    TYPE = ECHO_REQUEST

    @property
    def data(self) -> bytes:
        return self.body[4:]

    def fields(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "sequence": self.sequence, "data_len": len(self.data)}

    @classmethod
    def new(cls, identifier: int, sequence: int, data: bytes = b"", *, reply: bool = False) -> ScmpMessage:
        t = ECHO_REPLY if reply else ECHO_REQUEST
        return cls(t, 0, 0, identifier.to_bytes(2, "big") + sequence.to_bytes(2, "big") + data)


class Traceroute(_Informational):
    TYPE = TRACEROUTE_REQUEST

    @property
    def ia(self) -> IA:
        return IA.from_bytes(self.body[4:12])

    @property
    def interface(self) -> int:
        return int.from_bytes(self.body[12:20], "big")

    def fields(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "sequence": self.sequence,
            "isd_as": str(self.ia),
            "interface": self.interface,
        }

    @classmethod
    def new(
        cls, identifier: int, sequence: int, ia: IA | None = None, interface: int = 0, *, reply: bool = False
    ) -> ScmpMessage:
        t = TRACEROUTE_REPLY if reply else TRACEROUTE_REQUEST
        ia_bytes = ia.to_bytes() if ia else bytes(8)
        body = (
            identifier.to_bytes(2, "big")
            + sequence.to_bytes(2, "big")
            + ia_bytes
            + interface.to_bytes(8, "big")
        )
        return cls(t, 0, 0, body)


_CLASSES: dict[int, type[ScmpMessage]] = {
    DEST_UNREACHABLE: DestinationUnreachable,
    PACKET_TOO_BIG: PacketTooBig,
    PARAMETER_PROBLEM: ParameterProblem,
    EXTERNAL_INTERFACE_DOWN: ExternalInterfaceDown,
    INTERNAL_CONNECTIVITY_DOWN: InternalConnectivityDown,
    ECHO_REQUEST: Echo,
    ECHO_REPLY: Echo,
    TRACEROUTE_REQUEST: Traceroute,
    TRACEROUTE_REPLY: Traceroute,
}


def scmp_from_bytes(raw: bytes) -> ScmpMessage:
    """An SCMP message whose fixed fields the codec has already bounds-checked."""
    return _CLASSES.get(raw[0], ScmpMessage).from_bytes(raw)


def is_error(msg: ScmpMessage) -> bool:
    """Error messages have types below 128; informational ones (echo, traceroute) 128 and up."""
    return msg.type < 128
