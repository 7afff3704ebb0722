"""SCION/UDP packets for a fixed (source, destination, path): a header template, patched per payload.

Rules kept here:
- The header is serialized once through the object API (so it is byte-exact by construction); each
  packet then only patches PayloadLen, the UDP length and the UDP checksum.
- The checksum is computed over the SCION pseudo-header by the C codec; a builder never emits a packet
  without a valid checksum.
"""

from __future__ import annotations

from scion_appliance._fast import codec
from scion_appliance.scion.addr import IA, HostAddr
from scion_appliance.scion.l4 import UdpDatagram
from scion_appliance.scion.packet import ScionPacket
from scion_appliance.scion.path import EmptyPath, Path

MAX_UDP_PAYLOAD = 0xFFFF - 8


class UdpPacketBuilder:
    def __init__(
        self,
        src_ia: IA,
        src_host: HostAddr,
        src_port: int,
        dst_ia: IA,
        dst_host: HostAddr,
        dst_port: int,
        path: Path | None = None,
        traffic_class: int = 0,
        flow_id: int = 1,
    ) -> None:
        self.path = path or EmptyPath()
        head = ScionPacket(
            dst_ia=dst_ia,
            src_ia=src_ia,
            dst_host=dst_host,
            src_host=src_host,
            l4=UdpDatagram(src_port, dst_port, 0, b""),
            path=self.path,
            traffic_class=traffic_class,
            flow_id=flow_id,
        ).serialize()
        self._hdr_len = len(head) - 8
        self._template = bytearray(head)

    @property
    def header_len(self) -> int:
        """Bytes before the UDP payload (SCION header + UDP header)."""
        return self._hdr_len + 8

    def build(self, payload: bytes | bytearray | memoryview) -> bytes:
        n = len(payload)
        if n > MAX_UDP_PAYLOAD:
            raise ValueError(f"UDP payload of {n} bytes exceeds {MAX_UDP_PAYLOAD}")
        pkt = bytearray(self._template)
        pkt += payload
        h = self._hdr_len
        pkt[6:8] = (n + 8).to_bytes(2, "big")
        pkt[h + 4 : h + 6] = (n + 8).to_bytes(2, "big")
        pkt[h + 6 : h + 8] = codec.l4_checksum(pkt, True).to_bytes(2, "big")
        return bytes(pkt)
