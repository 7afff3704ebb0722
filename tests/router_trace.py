"""Test helpers for the router: the reference trace (classic pcap of Ethernet/IPv4/UDP), SCION
packets wrapped around a given path, and a walk of a packet along its whole path."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

from scion_appliance.router import process_hop

TRACE_DIR = Path(__file__).parent / "data" / "router-trace"
TRACE = json.loads((TRACE_DIR / "trace.json").read_text())
KEYS = {ia: base64.b64decode(k) for ia, k in TRACE["hop_field_keys"].items()}
# Inside every hop's validity: the trace's info-field timestamps are 0x61b399d8 / 0x61b399de (Dec 2021).
TRACE_NOW = 0x61B399DE + 100


def pcap_udp_payloads(path: Path) -> list[bytes]:
    """UDP payloads of a little-endian classic pcap of Ethernet/IPv4/UDP frames."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "expected a little-endian classic pcap"
    assert struct.unpack_from("<I", data, 20)[0] == 1, "expected LINKTYPE_ETHERNET"
    off, out = 24, []
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        assert frame[12:14] == b"\x08\x00", "expected IPv4"
        ip = frame[14:]
        ihl, total = (ip[0] & 0xF) * 4, struct.unpack_from(">H", ip, 2)[0]
        assert ip[9] == 17, "expected UDP"
        udp = ip[ihl:total]
        out.append(bytes(udp[8 : struct.unpack_from(">H", udp, 4)[0]]))
    return out


PACKETS = pcap_udp_payloads(TRACE_DIR / "reference_pkts.pcap")


def path_offset(pkt: bytes) -> int:
    return 12 + 16 + 4 * (((pkt[9] >> 4) & 3) + 1) + 4 * ((pkt[9] & 3) + 1)


def path_bytes(pkt: bytes) -> bytes:
    return pkt[path_offset(pkt) : pkt[5] * 4]


def meta(pkt: bytes) -> tuple[int, int, tuple[int, int, int]]:
    m = int.from_bytes(pkt[path_offset(pkt) : path_offset(pkt) + 4], "big")
    return m >> 30, (m >> 24) & 0x3F, ((m >> 12) & 0x3F, (m >> 6) & 0x3F, m & 0x3F)


def ia(text: str) -> int:
    """'1-ff00:0:110' -> ISD << 48 | AS."""
    isd, asn = text.split("-")
    parts = [int(p, 16) for p in asn.split(":")]
    return int(isd) << 48 | parts[0] << 32 | parts[1] << 16 | parts[2]


def scion_packet(
    path: bytes, *, path_type: int = 1, payload: bytes = b"payload!", dst_ia: int = 0, src_ia: int = 0
) -> bytes:
    """A SCION packet (IPv4 hosts 192.0.2.1 -> 192.0.2.2, next header UDP) around `path`."""
    hdr_len = 12 + 16 + 8 + len(path)
    assert hdr_len % 4 == 0
    cmn = (
        bytes([0, 0, 0, 1, 17, hdr_len // 4]) + struct.pack(">H", len(payload)) + bytes([path_type, 0, 0, 0])
    )
    addr = struct.pack(">QQ", dst_ia, src_ia) + bytes([192, 0, 2, 2, 192, 0, 2, 1])
    return cmn + addr + path + payload


def walk(pkt: bytes, hop_keys: list[bytes], now: int) -> list[bytes]:
    """The packet after every step from the source AS's egress to delivery; hop_keys[i] is the
    key of the AS that owns hop field i."""
    states = [process_hop(pkt, hop_keys[meta(pkt)[1]], ingress=False, now=now)]
    while True:
        cur = states[-1]
        _, hf, segs = meta(cur)
        states.append(process_hop(cur, hop_keys[hf], ingress=True, now=now))
        if hf == sum(segs) - 1:
            return states
        states.append(process_hop(states[-1], hop_keys[meta(states[-1])[1]], ingress=False, now=now))
