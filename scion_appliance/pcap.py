"""Reading SCION packets out of classic pcap captures: Ethernet/IPv4/IPv6 + UDP, sans-IO.

Rules kept here:
- Classic pcap only (both byte orders, micro- and nanosecond stamps); pcapng is refused with a
  message saying how to convert it (``editcap -F pcap``).
- Link types: Ethernet (with 802.1Q tags), raw IP, Linux cooked (SLL). A frame that is not UDP over IP
  is reported as skipped with its reason, never silently dropped.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


class PcapError(ValueError):
    """The file is not a classic pcap capture, or it is cut short."""


@dataclass(frozen=True)
class UdpFrame:
    index: int
    timestamp: float
    src: tuple[str, int] | None
    dst: tuple[str, int] | None
    payload: bytes | None
    skipped: str | None = None  # why the frame carries no UDP payload


def _ip_udp(data: bytes) -> tuple[tuple[str, int], tuple[str, int], bytes] | str:
    if not data:
        return "empty IP packet"
    version = data[0] >> 4
    if version == 4:
        if len(data) < 20:
            return "truncated IPv4 header"
        ihl = (data[0] & 0xF) * 4
        total = struct.unpack_from(">H", data, 2)[0]
        if data[9] != 17:
            return f"IPv4 protocol {data[9]} is not UDP"
        if struct.unpack_from(">H", data, 6)[0] & 0x3FFF:
            return "IPv4 fragment (reassembly not supported)"
        src, dst = str(ipaddress.IPv4Address(data[12:16])), str(ipaddress.IPv4Address(data[16:20]))
        udp = data[ihl:total]
    elif version == 6:
        if len(data) < 40:
            return "truncated IPv6 header"
        nh, off = data[6], 40
        while nh in (0, 43, 60):  # hop-by-hop, routing, destination options
            if off + 2 > len(data):
                return "truncated IPv6 extension header"
            nh, off = data[off], off + (data[off + 1] + 1) * 8
        if nh != 17:
            return f"IPv6 next header {nh} is not UDP"
        src, dst = str(ipaddress.IPv6Address(data[8:24])), str(ipaddress.IPv6Address(data[24:40]))
        udp = data[off : 40 + struct.unpack_from(">H", data, 4)[0]]
    else:
        return f"IP version {version}"
    if len(udp) < 8:
        return "truncated UDP header"
    sport, dport, ulen = struct.unpack_from(">HHH", udp)
    if ulen < 8 or ulen > len(udp):
        return f"UDP length {ulen} does not fit the {len(udp)}-byte datagram"
    return (src, sport), (dst, dport), bytes(udp[8:ulen])


def _link_payload(linktype: int, frame: bytes) -> bytes | str:
    if linktype == LINKTYPE_RAW:
        return frame
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return "truncated Linux cooked header"
        etype, off = struct.unpack_from(">H", frame, 14)[0], 16
    elif linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return "truncated Ethernet header"
        etype, off = struct.unpack_from(">H", frame, 12)[0], 14
        while etype in (0x8100, 0x88A8) and off + 4 <= len(frame):
            etype, off = struct.unpack_from(">H", frame, off + 2)[0], off + 4
    else:
        return f"link type {linktype} is not supported (Ethernet, raw IP, Linux cooked)"
    if etype not in (0x0800, 0x86DD):
        return f"ethertype 0x{etype:04x} is not IP"
    return frame[off:]


def read_udp_frames(blob: bytes) -> Iterator[UdpFrame]:
    """Every frame of a classic pcap capture, with its UDP payload or the reason it has none."""
    if blob[:4] == b"\x0a\x0d\x0d\x0a":
        raise PcapError("this is a pcapng file; convert it with `editcap -F pcap IN OUT` (wireshark-common)")
    if len(blob) < 24 or blob[:4] not in _MAGICS:
        raise PcapError("not a pcap capture (bad magic number)")
    order, unit = _MAGICS[blob[:4]]
    linktype = struct.unpack_from(order + "I", blob, 20)[0] & 0x0FFFFFFF
    off, index = 24, 0
    rec = struct.Struct(order + "IIII")
    while off < len(blob):
        if off + 16 > len(blob):
            raise PcapError(f"capture cut short in the header of frame {index} at byte {off}")
        sec, frac, caplen, _ = rec.unpack_from(blob, off)
        off += 16
        if off + caplen > len(blob):
            raise PcapError(f"capture cut short in frame {index} at byte {off}")
        frame = blob[off : off + caplen]
        off += caplen
        ts = sec + frac * unit
        ip = _link_payload(linktype, frame)
        got = ip if isinstance(ip, str) else _ip_udp(ip)
        if isinstance(got, str):
            yield UdpFrame(index, ts, None, None, None, skipped=got)
        else:
            yield UdpFrame(index, ts, got[0], got[1], got[2])
        index += 1
