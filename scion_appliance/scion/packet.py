"""A whole SCION packet as a value: parse it, build it, serialize it, check its upper-layer checksum.

Rules kept here:
- Validity is decided once, by the C parser (``scion_appliance._fast.codec``): this module turns its
  offsets into values, and its reason codes into ``ScionParseError`` subclasses naming the offset.
- ``serialize`` writes HdrLen, PayloadLen, NextHdr chains, address types and the UDP length from the
  values; the checksum field is written as stored, so a parsed packet serializes to identical bytes.
  ``with_checksum()`` returns the packet with the upper-layer checksum computed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Any

from scion_appliance._fast import codec
from scion_appliance.scion.addr import IA, HostAddr, host_from_bytes, host_to_bytes
from scion_appliance.scion.errors import error_for
from scion_appliance.scion.extensions import PROTO_E2E, PROTO_HBH, ExtensionHeader
from scion_appliance.scion.l4 import PROTO_UDP, RawPayload, UdpDatagram
from scion_appliance.scion.path import PATH_NAMES, EmptyPath, Path, path_from_bytes
from scion_appliance.scion.scmp import PROTO_SCMP, ScmpMessage, scmp_from_bytes

L4 = UdpDatagram | ScmpMessage | RawPayload

_COMMON = struct.Struct(">IBBHBBH")


@dataclass(frozen=True)
class ScionPacket:
    dst_ia: IA
    src_ia: IA
    dst_host: HostAddr
    src_host: HostAddr
    l4: L4
    path: Path = field(default_factory=EmptyPath)
    traffic_class: int = 0
    flow_id: int = 1
    hbh: ExtensionHeader | None = None
    e2e: ExtensionHeader | None = None

    @property
    def l4_proto(self) -> int:
        return PROTO_SCMP if isinstance(self.l4, ScmpMessage) else self.l4.proto

    def serialize(self) -> bytes:
        dst_type, dst_raw = host_to_bytes(self.dst_host)
        src_type, src_raw = host_to_bytes(self.src_host)
        path_raw = self.path.to_bytes()
        if len(path_raw) % 4:
            raise ValueError("path length must be a multiple of 4 bytes")
        hdr_len = 12 + 16 + len(dst_raw) + len(src_raw) + len(path_raw)
        if hdr_len > 255 * 4:
            raise ValueError(f"header of {hdr_len} bytes exceeds the 1020-byte maximum")
        chain = [e for e in (self.hbh, self.e2e) if e is not None]
        protos = [e.proto for e in chain] + [self.l4_proto]
        ext_raw = b"".join(e.to_bytes(protos[i + 1]) for i, e in enumerate(chain))
        payload = ext_raw + self.l4.to_bytes()
        if len(payload) > 0xFFFF:
            raise ValueError(f"payload of {len(payload)} bytes exceeds 65535")
        first = (self.traffic_class << 20) | (self.flow_id & 0xFFFFF)
        common = _COMMON.pack(
            first, protos[0], hdr_len // 4, len(payload), self.path.path_type, (dst_type << 4) | src_type, 0
        )
        return (
            common + self.dst_ia.to_bytes() + self.src_ia.to_bytes() + dst_raw + src_raw + path_raw + payload
        )

    def with_checksum(self) -> ScionPacket:
        """The packet with its UDP or SCMP checksum computed over the SCION pseudo-header."""
        if not isinstance(self.l4, UdpDatagram | ScmpMessage):
            return self
        csum = codec.l4_checksum(self.serialize(), True)
        return replace(self, l4=self.l4.with_checksum(csum))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 0,
            "traffic_class": self.traffic_class,
            "flow_id": self.flow_id,
            "path_type": PATH_NAMES.get(self.path.path_type, str(self.path.path_type)),
            "dst_isd_as": str(self.dst_ia),
            "src_isd_as": str(self.src_ia),
            "dst_host": str(self.dst_host),
            "src_host": str(self.src_host),
            "path": self.path.to_json(),
            "hop_by_hop": self.hbh.to_json() if self.hbh else None,
            "end_to_end": self.e2e.to_json() if self.e2e else None,
            "l4": self.l4.to_json(),
        }


def parse(raw: bytes | bytearray | memoryview) -> ScionPacket:
    """Parses one SCION packet; raises a ``ScionParseError`` subclass when it is not valid."""
    data = bytes(raw)
    return from_record(data, record(data))


def record(data: bytes) -> dict[str, Any]:
    """The C parser's record of a valid packet; raises ``ScionParseError`` otherwise."""
    rec = codec.parse_record(data)
    if rec["status"]:
        raise error_for(rec["reason"], rec["err_offset"])
    return rec


def from_record(data: bytes, rec: dict[str, Any]) -> ScionPacket:
    def host(prefix: str) -> HostAddr:
        off, n = rec[f"{prefix}_host_off"], rec[f"{prefix}_host_len"]
        return host_from_bytes(rec[f"{prefix}_addr_type"], data[off : off + n])

    path = path_from_bytes(rec["path_type"], data[rec["path_off"] : rec["path_off"] + rec["path_len"]])
    hbh = e2e = None
    if rec["hbh_len"]:
        hbh = ExtensionHeader.from_bytes(PROTO_HBH, data[rec["hbh_off"] : rec["hbh_off"] + rec["hbh_len"]])
    if rec["e2e_len"]:
        e2e = ExtensionHeader.from_bytes(PROTO_E2E, data[rec["e2e_off"] : rec["e2e_off"] + rec["e2e_len"]])
    l4_raw = data[rec["l4_off"] : rec["l4_off"] + rec["l4_len"]]
    proto = rec["l4_proto"]
    l4: L4
    if proto == PROTO_UDP:
        l4 = UdpDatagram.from_bytes(l4_raw)
    elif proto == PROTO_SCMP:
        l4 = scmp_from_bytes(l4_raw)
    else:
        l4 = RawPayload(proto, l4_raw)
    return ScionPacket(
        dst_ia=IA.from_int(rec["dst_ia"]),
        src_ia=IA.from_int(rec["src_ia"]),
        dst_host=host("dst"),
        src_host=host("src"),
        l4=l4,
        path=path,
        traffic_class=rec["traffic_class"],
        flow_id=rec["flow_id"],
        hbh=hbh,
        e2e=e2e,
    )


def checksum_valid(data: bytes) -> bool | None:
    """True/False for UDP and SCMP packets whose checksum is right/wrong; None when there is none."""
    rec = record(data)
    if rec["l4_proto"] not in (PROTO_UDP, PROTO_SCMP):
        return None
    return codec.l4_checksum(data, False) == 0
