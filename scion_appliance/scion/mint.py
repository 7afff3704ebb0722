"""Minting standard SCION paths with valid hop-field MACs, as beaconing and path combination do.

Rules kept here:
- A segment is given as its beacon: AS entries in construction order (from the originating
  AS), each with its interfaces, expiry and hop-field key, plus the beacon's timestamp and SegID
  seed.  MACs chain the way scionproto's beacon extender computes them
  (control/beaconing/extender.go): beta_0 = seed, MAC_i = CMAC_Ki(beta_i, ts, exp, in, eg),
  beta_{i+1} = beta_i xor MAC_i[:2]; a peer entry of AS i is MACed with beta_{i+1}.
- The path holds the segments in travel order: a segment used in construction direction keeps
  its entries' order and carries SegID beta_start (beta_start+1 when it starts with a peer entry);
  one used against construction direction is reversed and carries beta_{n-1}, the value the
  routers chain back hop by hop.
- ``reverse_path`` is scionproto's ``Raw.Reverse``: segments and hops reversed, ConsDir flipped,
  CurrINF/CurrHF mirrored, SegIDs untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scion_appliance._fast.hopmac import HopFieldKey
from scion_appliance.scion.path import PATH_SCION, HopField, InfoField, PathMeta, ScionPath

MAX_SEGMENT_HOPS = 63  # SegLen is 6 bits
MAX_HOPS = 64  # scionproto scion.MaxHops
DEFAULT_EXP_TIME = 63  # about 6 hours, scionproto's default hop-field lifetime


class MintError(ValueError):
    """The segments cannot form a valid SCION path."""


@dataclass(frozen=True, repr=False)
class BeaconHop:
    """One AS entry of a beacon: its interfaces in construction direction and hop-field key.

    ``peer_ingress`` is this AS's peering interface, used when a peering path crosses here."""

    ingress: int
    egress: int
    key: bytes
    exp_time: int = DEFAULT_EXP_TIME
    peer_ingress: int = 0

    def __repr__(self) -> str:  # keep keys out of logs
        return (
            f"BeaconHop(ingress={self.ingress}, egress={self.egress}, exp_time={self.exp_time}, "
            f"peer_ingress={self.peer_ingress})"
        )


@dataclass(frozen=True)
class SegmentSpec:
    """A beacon and how the path uses it.

    ``hops``: every AS entry from the originator, construction order.  ``start``: the first
    entry the path uses (a shortcut or peering path cuts the segment there; the entries before
    it still count for the SegID chain).  ``peer``: the path crosses a peering link at entry
    ``start``, whose peer hop field is used."""

    hops: tuple[BeaconHop, ...]
    timestamp: int
    seg_id: int
    cons_dir: bool
    peer: bool = False
    start: int = 0


def _check_segment(s: SegmentSpec, index: int) -> None:
    where = f"segment {index}"
    if not 0 <= s.seg_id <= 0xFFFF:
        raise MintError(f"{where}: SegID seed {s.seg_id} out of range 0..65535")
    if not 0 <= s.timestamp <= 0xFFFFFFFF:
        raise MintError(f"{where}: timestamp {s.timestamp} does not fit 32 bits")
    if not 0 <= s.start < len(s.hops):
        raise MintError(f"{where}: start {s.start} outside its {len(s.hops)} entries")
    used = len(s.hops) - s.start
    if used > MAX_SEGMENT_HOPS:
        raise MintError(f"{where}: {used} hop fields, at most {MAX_SEGMENT_HOPS} fit a segment")
    if used == 1 and not s.peer:
        raise MintError(f"{where}: a segment of one hop field is only valid on a peering path")
    for i, h in enumerate(s.hops):
        if len(h.key) != 16:
            raise MintError(f"{where}, entry {i}: hop-field key must be 16 bytes")
        if not (0 <= h.ingress <= 0xFFFF and 0 <= h.egress <= 0xFFFF and 0 <= h.peer_ingress <= 0xFFFF):
            raise MintError(f"{where}, entry {i}: interface id out of range 0..65535")
        if not 0 <= h.exp_time <= 0xFF:
            raise MintError(f"{where}, entry {i}: exp_time {h.exp_time} out of range 0..255")
    if s.peer and s.hops[s.start].peer_ingress == 0:
        raise MintError(f"{where}: peering at entry {s.start}, which has no peer_ingress")


def mint_segment(s: SegmentSpec) -> tuple[InfoField, list[HopField]]:
    """The info field and the hop fields (in travel order) of one segment of a path."""
    _check_segment(s, 0)
    beta = s.seg_id
    betas: list[int] = []
    fields: list[HopField] = []
    for h in s.hops:
        betas.append(beta)
        mac = HopFieldKey(h.key).hop_mac(beta, s.timestamp, h.exp_time, h.ingress, h.egress)
        fields.append(HopField(False, False, h.exp_time, h.ingress, h.egress, mac))
        beta ^= int.from_bytes(mac[:2], "big")
    used = fields[s.start :]
    if s.peer:
        h = s.hops[s.start]
        peer_beta = betas[s.start] ^ int.from_bytes(fields[s.start].mac[:2], "big")
        mac = HopFieldKey(h.key).hop_mac(peer_beta, s.timestamp, h.exp_time, h.peer_ingress, h.egress)
        used[0] = HopField(False, False, h.exp_time, h.peer_ingress, h.egress, mac)
    if s.cons_dir:
        seg_id = betas[s.start] ^ (int.from_bytes(fields[s.start].mac[:2], "big") if s.peer else 0)
    else:
        seg_id = betas[-1]
        used.reverse()
    return InfoField(s.cons_dir, s.peer, seg_id, s.timestamp), used


def mint_scion_path(segments: Sequence[SegmentSpec]) -> ScionPath:
    """A fresh standard SCION path (CurrINF = CurrHF = 0) over one to three segments."""
    if not 1 <= len(segments) <= 3:
        raise MintError(f"a SCION path has one to three segments, got {len(segments)}")
    peers = [s.peer for s in segments]
    if any(peers) and (len(segments) != 2 or not all(peers)):
        raise MintError("a peering path has exactly two segments, both marked peer")
    for i, s in enumerate(segments):
        _check_segment(s, i)
    minted = [mint_segment(s) for s in segments]
    if sum(len(h) for _, h in minted) > MAX_HOPS:
        raise MintError(f"more than {MAX_HOPS} hop fields in one path")
    return ScionPath.build(minted)


def mint_path(segments: Sequence[SegmentSpec]) -> bytes:
    """The path bytes (PathType 1) of a freshly minted standard SCION path."""
    return mint_scion_path(segments).to_bytes()


def reverse_path(raw: bytes) -> bytes:
    """scionproto's ``Raw.Reverse`` on standard-path bytes (the bytes after the address header)."""
    if len(raw) < 4:
        raise MintError("path shorter than its 4-byte meta header")
    meta = PathMeta.from_bytes(raw)
    s0, s1, s2 = meta.seg_len
    if (s2 and not s1) or (s1 and not s0):
        raise MintError(f"segment lengths {meta.seg_len} leave a gap")
    if meta.num_inf == 0:
        raise MintError("empty path cannot be reversed")
    need = 4 + 8 * meta.num_inf + 12 * meta.num_hops
    if len(raw) < need:
        raise MintError(f"path of {len(raw)} bytes, its meta header announces {need}")
    if meta.curr_inf >= meta.num_inf or meta.curr_hf >= meta.num_hops:
        raise MintError(f"CurrINF {meta.curr_inf} / CurrHF {meta.curr_hf} outside the path")
    return ScionPath.from_bytes(raw[:need]).reverse().to_bytes()


__all__ = [
    "PATH_SCION",
    "BeaconHop",
    "MintError",
    "SegmentSpec",
    "mint_path",
    "mint_scion_path",
    "mint_segment",
    "reverse_path",
]
