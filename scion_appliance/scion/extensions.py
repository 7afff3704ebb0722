"""SCION hop-by-hop and end-to-end extension headers, with their TLV options.

Rules kept here:
- Header: NextHdr (1), ExtLen (1: length in 4-byte units minus one), options. Options are Pad1 (a
  single 0 byte), PadN (type 1) and any other type kept raw as (type, data), in their original order,
  so that a parsed header serializes back to the same bytes.
- A header built by hand whose options do not end on a 4-byte boundary is padded with Pad1/PadN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROTO_HBH = 200
PROTO_E2E = 201
OPT_PAD1 = 0
OPT_PADN = 1
OPTION_NAMES = {0: "Pad1", 1: "PadN", 2: "SPAO"}


@dataclass(frozen=True)
class Option:
    type: int
    data: bytes = b""

    def to_bytes(self) -> bytes:
        if self.type == OPT_PAD1:
            return b"\x00"
        return bytes((self.type, len(self.data))) + self.data

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "name": OPTION_NAMES.get(self.type, "unknown"), "data": self.data.hex()}


@dataclass(frozen=True)
class ExtensionHeader:
    """A hop-by-hop (``PROTO_HBH``) or end-to-end (``PROTO_E2E``) options header."""

    proto: int
    options: tuple[Option, ...]

    @classmethod
    def from_bytes(cls, proto: int, raw: bytes) -> ExtensionHeader:
        """Options of a header whose bounds the codec has already checked (``raw`` is the whole header)."""
        opts, o = [], 2
        while o < len(raw):
            if raw[o] == OPT_PAD1:
                opts.append(Option(OPT_PAD1))
                o += 1
                continue
            n = raw[o + 1]
            opts.append(Option(raw[o], bytes(raw[o + 2 : o + 2 + n])))
            o += 2 + n
        return cls(proto, tuple(opts))

    def body(self) -> bytes:
        body = b"".join(opt.to_bytes() for opt in self.options)
        short = (-(2 + len(body))) % 4
        if short == 1:
            body += b"\x00"
        elif short:
            body += Option(OPT_PADN, bytes(short - 2)).to_bytes()
        return body

    def to_bytes(self, next_hdr: int) -> bytes:
        body = self.body()
        return bytes((next_hdr, (2 + len(body)) // 4 - 1)) + body

    def to_json(self) -> dict[str, Any]:
        return {"options": [o.to_json() for o in self.options]}
