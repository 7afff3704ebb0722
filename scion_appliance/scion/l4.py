"""Upper layers carried in SCION that are not SCMP: UDP, and raw payloads (BFD, TCP, unknown)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

PROTO_TCP = 6
PROTO_UDP = 17
PROTO_BFD = 203
PROTO_NAMES = {6: "TCP", 17: "UDP", 200: "HBH", 201: "E2E", 202: "SCMP", 203: "BFD"}

_UDP = struct.Struct(">HHHH")


@dataclass(frozen=True)
class UdpDatagram:
    src_port: int
    dst_port: int
    checksum: int
    payload: bytes
    proto: int = PROTO_UDP

    @classmethod
    def from_bytes(cls, raw: bytes) -> UdpDatagram:
        src, dst, _length, csum = _UDP.unpack_from(raw)
        return cls(src, dst, csum, bytes(raw[8:]))

    def to_bytes(self) -> bytes:
        return _UDP.pack(self.src_port, self.dst_port, 8 + len(self.payload), self.checksum) + self.payload

    def with_checksum(self, checksum: int) -> UdpDatagram:
        return UdpDatagram(self.src_port, self.dst_port, checksum, self.payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "proto": "UDP",
            "src_port": self.src_port,
            "dst_port": self.dst_port,
            "length": 8 + len(self.payload),
            "checksum": self.checksum,
            "payload_len": len(self.payload),
        }


@dataclass(frozen=True)
class RawPayload:
    """An upper layer kept as bytes: BFD (the router's business, not the codec's), TCP, unknown."""

    proto: int
    data: bytes

    def to_bytes(self) -> bytes:
        return self.data

    def to_json(self) -> dict[str, Any]:
        return {
            "proto": PROTO_NAMES.get(self.proto, str(self.proto)),
            "length": len(self.data),
            "data": self.data.hex(),
        }
