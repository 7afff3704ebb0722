"""SCION path types as values: Empty, the standard SCION path, OneHop, and raw others.

Rules kept here:
- Layouts follow the SCION data-plane specification byte for byte: PathMeta (4 B: CurrINF 2 bits,
  CurrHF 6, reserved 6, SegLen[3] 6 each), InfoField (8 B: flags with Peer 0x02 and ConsDir 0x01,
  reserved, SegID, Timestamp), HopField (12 B: flags with ingress router alert 0x02 and egress 0x01,
  ExpTime, ConsIngress, ConsEgress, 6-byte MAC).
- Parsing here trusts lengths already checked by the codec (``scion_appliance.scion.packet``); the
  classes still refuse impossible values when built by hand.
- ``ScionPath.reverse()`` follows scionproto's ``Decoded.Reverse``: segments and hops in reverse order,
  ConsDir flipped, CurrINF/CurrHF mirrored. SegIDs are left as they are: a router fixes them en route.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Any

from scion_appliance.scion.errors import BadPath

PATH_EMPTY = 0
PATH_SCION = 1
PATH_ONEHOP = 2
PATH_NAMES = {0: "Empty", 1: "SCION", 2: "OneHop", 3: "EPIC", 4: "COLIBRI"}

INFO_LEN = 8
HOP_LEN = 12
META_LEN = 4

_INFO = struct.Struct(">BxHI")
_HOP = struct.Struct(">BBHH6s")


@dataclass(frozen=True)
class InfoField:
    cons_dir: bool
    peer: bool
    seg_id: int
    timestamp: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> InfoField:
        flags, seg_id, ts = _INFO.unpack(raw)
        return cls(bool(flags & 0x01), bool(flags & 0x02), seg_id, ts)

    def to_bytes(self) -> bytes:
        return _INFO.pack(
            (0x02 if self.peer else 0) | (0x01 if self.cons_dir else 0), self.seg_id, self.timestamp
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cons_dir": self.cons_dir,
            "peer": self.peer,
            "seg_id": self.seg_id,
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True)
class HopField:
    ingress_router_alert: bool
    egress_router_alert: bool
    exp_time: int
    cons_ingress: int
    cons_egress: int
    mac: bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> HopField:
        flags, exp, ing, eg, mac = _HOP.unpack(raw)
        return cls(bool(flags & 0x02), bool(flags & 0x01), exp, ing, eg, mac)

    def to_bytes(self) -> bytes:
        flags = (0x02 if self.ingress_router_alert else 0) | (0x01 if self.egress_router_alert else 0)
        return _HOP.pack(flags, self.exp_time, self.cons_ingress, self.cons_egress, self.mac)

    def to_json(self) -> dict[str, Any]:
        return {
            "ingress_router_alert": self.ingress_router_alert,
            "egress_router_alert": self.egress_router_alert,
            "exp_time": self.exp_time,
            "cons_ingress": self.cons_ingress,
            "cons_egress": self.cons_egress,
            "mac": self.mac.hex(),
        }


@dataclass(frozen=True)
class PathMeta:
    curr_inf: int
    curr_hf: int
    seg_len: tuple[int, int, int]

    @classmethod
    def from_bytes(cls, raw: bytes) -> PathMeta:
        m = int.from_bytes(raw[:4], "big")
        return cls(m >> 30, (m >> 24) & 0x3F, ((m >> 12) & 0x3F, (m >> 6) & 0x3F, m & 0x3F))

    def to_bytes(self) -> bytes:
        s0, s1, s2 = self.seg_len
        m = (self.curr_inf << 30) | (self.curr_hf << 24) | (s0 << 12) | (s1 << 6) | s2
        return m.to_bytes(4, "big")

    @property
    def num_inf(self) -> int:
        return sum(1 for s in self.seg_len if s)

    @property
    def num_hops(self) -> int:
        return sum(self.seg_len)


@dataclass(frozen=True)
class EmptyPath:
    path_type: int = field(default=PATH_EMPTY, init=False)

    def to_bytes(self) -> bytes:
        return b""

    def to_json(self) -> dict[str, Any]:
        return {"type": "Empty"}


@dataclass(frozen=True)
class ScionPath:
    """The standard SCION path: up to three segments of hop fields."""

    meta: PathMeta
    info_fields: tuple[InfoField, ...]
    hop_fields: tuple[HopField, ...]
    path_type: int = field(default=PATH_SCION, init=False)

    def __post_init__(self) -> None:
        if len(self.info_fields) != self.meta.num_inf or len(self.hop_fields) != self.meta.num_hops:
            raise ValueError(
                f"path meta announces {self.meta.num_inf} info and {self.meta.num_hops} hop fields, "
                f"got {len(self.info_fields)} and {len(self.hop_fields)}"
            )

    @classmethod
    def from_bytes(cls, raw: bytes) -> ScionPath:
        """A path from its bytes; raises ``BadPath`` when the length does not match its meta header."""
        if len(raw) < META_LEN:
            raise BadPath("bad_path_length", len(raw), "shorter than the 4-byte path meta header")
        meta = PathMeta.from_bytes(raw)
        n_inf, n_hops = meta.num_inf, meta.num_hops
        want = META_LEN + n_inf * INFO_LEN + n_hops * HOP_LEN
        if len(raw) != want:
            raise BadPath("bad_path_length", len(raw), f"meta announces {want} bytes of path")
        infos = tuple(
            InfoField.from_bytes(raw[META_LEN + i * INFO_LEN : META_LEN + (i + 1) * INFO_LEN])
            for i in range(n_inf)
        )
        base = META_LEN + n_inf * INFO_LEN
        hops = tuple(
            HopField.from_bytes(raw[base + i * HOP_LEN : base + (i + 1) * HOP_LEN]) for i in range(n_hops)
        )
        return cls(meta, infos, hops)

    @classmethod
    def build(
        cls, segments: list[tuple[InfoField, list[HopField]]], curr_inf: int = 0, curr_hf: int = 0
    ) -> ScionPath:
        """A path from (info field, hop fields) segments in travel order."""
        if not 1 <= len(segments) <= 3:
            raise ValueError("a SCION path has one to three segments")
        lens = [len(h) for _, h in segments] + [0] * (3 - len(segments))
        meta = PathMeta(curr_inf, curr_hf, (lens[0], lens[1], lens[2]))
        return cls(meta, tuple(i for i, _ in segments), tuple(h for _, hs in segments for h in hs))

    def to_bytes(self) -> bytes:
        return (
            self.meta.to_bytes()
            + b"".join(i.to_bytes() for i in self.info_fields)
            + b"".join(h.to_bytes() for h in self.hop_fields)
        )

    def segment_of_hop(self, hop_index: int) -> int:
        """Index of the segment (info field) that hop ``hop_index`` belongs to."""
        end = 0
        for seg, n in enumerate(self.meta.seg_len):
            end += n
            if hop_index < end:
                return seg
        raise IndexError(hop_index)

    def reverse(self) -> ScionPath:
        n_inf, n_hops = self.meta.num_inf, self.meta.num_hops
        seg = list(self.meta.seg_len[:n_inf])[::-1] + [0] * (3 - n_inf)
        infos = tuple(replace(i, cons_dir=not i.cons_dir) for i in reversed(self.info_fields))
        meta = PathMeta(
            n_inf - self.meta.curr_inf - 1, n_hops - self.meta.curr_hf - 1, (seg[0], seg[1], seg[2])
        )
        return ScionPath(meta, infos, tuple(reversed(self.hop_fields)))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "SCION",
            "meta": {
                "curr_inf": self.meta.curr_inf,
                "curr_hf": self.meta.curr_hf,
                "seg_len": list(self.meta.seg_len),
            },
            "info_fields": [i.to_json() for i in self.info_fields],
            "hop_fields": [h.to_json() for h in self.hop_fields],
        }


@dataclass(frozen=True)
class OneHopPath:
    """The one-hop path used between neighbouring ASes (e.g. for beaconing)."""

    info: InfoField
    first_hop: HopField
    second_hop: HopField
    path_type: int = field(default=PATH_ONEHOP, init=False)

    @classmethod
    def from_bytes(cls, raw: bytes) -> OneHopPath:
        return cls(
            InfoField.from_bytes(raw[:INFO_LEN]),
            HopField.from_bytes(raw[INFO_LEN : INFO_LEN + HOP_LEN]),
            HopField.from_bytes(raw[INFO_LEN + HOP_LEN : INFO_LEN + 2 * HOP_LEN]),
        )

    def to_bytes(self) -> bytes:
        return self.info.to_bytes() + self.first_hop.to_bytes() + self.second_hop.to_bytes()

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "OneHop",
            "info_field": self.info.to_json(),
            "first_hop": self.first_hop.to_json(),
            "second_hop": self.second_hop.to_json(),
        }


@dataclass(frozen=True)
class RawPath:
    """A path of a type this appliance does not interpret (EPIC, COLIBRI, unknown): kept as bytes."""

    path_type: int
    raw: bytes

    def to_bytes(self) -> bytes:
        return self.raw

    def to_json(self) -> dict[str, Any]:
        return {"type": PATH_NAMES.get(self.path_type, f"unknown({self.path_type})"), "raw": self.raw.hex()}


Path = EmptyPath | ScionPath | OneHopPath | RawPath


def path_from_bytes(path_type: int, raw: bytes) -> Path:
    if path_type == PATH_EMPTY:
        return EmptyPath()
    if path_type == PATH_SCION:
        return ScionPath.from_bytes(raw)
    if path_type == PATH_ONEHOP:
        return OneHopPath.from_bytes(raw)
    return RawPath(path_type, raw)
