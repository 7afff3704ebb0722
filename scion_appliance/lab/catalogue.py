"""The lab's path catalogue: every valid up/core/down combination between two ASes, minted with MACs.

Rules kept here:
- Segments are what beaconing would give: a down/up beacon starts at a core AS and follows parent->child
  links down to the leaf; a core beacon starts at one core AS and follows core links to another (at most
  ``MAX_CORE_ASES`` ASes, no AS twice). Each beacon gets one random SegID seed and the catalogue's
  timestamp, so every path using the same beacon carries the same hop fields, as in SCION.
- A path combines, in travel order, an up segment (against construction direction), a core segment
  (against construction: it was beaconed from the destination's core) and a down segment (in
  construction direction); core ASes at either end need no up or down segment. A combination that
  crosses an AS twice is not a path. Shortcuts and peering paths are not generated.
- Paths are sorted shortest first (AS-level links crossed), then by their interfaces, and carry
  scionproto's fingerprint (``paths.source.fingerprint``) as ``id``.
- Sans-IO: keys, time and randomness come in; the catalogue document comes out.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scion_appliance.lab.topologies import LabTopology
from scion_appliance.paths.source import PathInterface, fingerprint
from scion_appliance.scion.mint import DEFAULT_EXP_TIME, BeaconHop, SegmentSpec, mint_scion_path

MAX_CORE_ASES = 4
MAX_PATHS = 64  # per (source, destination): plenty for failover, bounded for the lab's tests


@dataclass(frozen=True)
class Beacon:
    """AS entries in construction order with (ingress, egress) interface ids; ``links`` between them."""

    ases: tuple[str, ...]
    hops: tuple[tuple[int, int], ...]
    links: tuple[str, ...]


def _neighbours(topo: LabTopology, ia: str, kind: str) -> list[tuple[str, int, int, str]]:
    """(neighbour, my ifid, its ifid, link name) for links of ``kind`` as seen from ``ia``:
    "parent" (neighbour is my parent), "core"."""
    out = []
    for link in topo.links.values():
        if kind == "parent" and link.kind == "PARENT" and link.a == ia:
            out.append((link.b, link.a_if, link.b_if, link.name))
        elif kind == "core" and link.kind == "CORE" and ia in (link.a, link.b):
            other, mine, theirs = (
                (link.b, link.a_if, link.b_if) if link.a == ia else (link.a, link.b_if, link.a_if)
            )
            out.append((other, mine, theirs, link.name))
    return sorted(out)


def down_beacons(topo: LabTopology, leaf: str) -> list[Beacon]:
    """Beacons from a core AS down to ``leaf`` (usable as its up or down segments)."""
    found: list[Beacon] = []

    def climb(chain: list[tuple[str, int, int]], links: list[str]) -> None:
        # chain: (ia, ingress, egress) from the leaf upwards; the top entry's ingress is still open
        top = chain[-1][0]
        if topo.ases[top].core:
            rev = list(reversed(chain))
            hops = [(0 if k == 0 else ing, eg) for k, (_, ing, eg) in enumerate(rev)]
            found.append(Beacon(tuple(ia for ia, _, _ in rev), tuple(hops), tuple(reversed(links))))
            return
        seen = {ia for ia, _, _ in chain}
        for parent, mine, theirs, name in _neighbours(topo, top, "parent"):
            if parent in seen:
                continue
            ia, _, eg = chain[-1]
            climb([*chain[:-1], (ia, mine, eg), (parent, 0, theirs)], [*links, name])

    if not topo.ases[leaf].core:
        climb([(leaf, 0, 0)], [])
    return found


def core_beacons(topo: LabTopology, origin: str, end: str) -> list[Beacon]:
    """Core beacons originated at ``origin`` that reach ``end`` over core links."""
    found: list[Beacon] = []

    def walk(chain: list[tuple[str, int, int]], links: list[str]) -> None:
        here = chain[-1][0]
        if here == end and len(chain) > 1:
            found.append(Beacon(tuple(c[0] for c in chain), tuple((c[1], c[2]) for c in chain), tuple(links)))
            return
        if len(chain) >= MAX_CORE_ASES:
            return
        seen = {c[0] for c in chain}
        for other, mine, theirs, name in _neighbours(topo, here, "core"):
            if other in seen:
                continue
            ia, ing, _ = chain[-1]
            walk([*chain[:-1], (ia, ing, mine), (other, theirs, 0)], [*links, name])

    walk([(origin, 0, 0)], [])
    return found


@dataclass(frozen=True)
class _Use:
    beacon: Beacon
    cons_dir: bool

    def travel(self) -> list[tuple[str, int, int]]:
        """(ia, ingress, egress) in travel order."""
        entries = [(ia, ing, eg) for ia, (ing, eg) in zip(self.beacon.ases, self.beacon.hops, strict=True)]
        if self.cons_dir:
            return entries
        return [(ia, eg, ing) for ia, ing, eg in reversed(entries)]

    def links(self) -> list[str]:
        return list(self.beacon.links) if self.cons_dir else list(reversed(self.beacon.links))


def combinations(topo: LabTopology, src: str, dst: str) -> list[list[_Use]]:
    """Every loop-free up/core/down combination from ``src`` to ``dst``."""
    if src == dst:
        return []
    ups: list[tuple[str, _Use | None]] = (
        [(src, None)]
        if topo.ases[src].core
        else [(b.ases[0], _Use(b, False)) for b in down_beacons(topo, src)]
    )
    downs: list[tuple[str, _Use | None]] = (
        [(dst, None)]
        if topo.ases[dst].core
        else [(b.ases[0], _Use(b, True)) for b in down_beacons(topo, dst)]
    )
    result: list[list[_Use]] = []
    for c1, up in ups:
        for c2, down in downs:
            cores: list[_Use | None] = (
                [None] if c1 == c2 else [_Use(b, False) for b in core_beacons(topo, c2, c1)]
            )
            for core in cores:
                uses = [u for u in (up, core, down) if u is not None]
                if uses and _loop_free(uses):
                    result.append(uses)
    return result


def _ases(uses: list[_Use]) -> list[str]:
    seq: list[str] = []
    for u in uses:
        for ia, _, _ in u.travel():
            if not seq or seq[-1] != ia:
                seq.append(ia)
    return seq


def _loop_free(uses: list[_Use]) -> bool:
    seq = _ases(uses)
    return len(seq) == len(set(seq))


def interfaces(uses: list[_Use]) -> list[PathInterface]:
    """The (ISD-AS, interface) pairs a path crosses, two per inter-AS link, in travel order."""
    hops: list[tuple[str, int, int]] = []
    for u in uses:
        for ia, ing, eg in u.travel():
            if hops and hops[-1][0] == ia:  # segment change inside this AS
                hops[-1] = (ia, hops[-1][1], eg)
            else:
                hops.append((ia, ing, eg))
    out: list[PathInterface] = []
    for k, (ia, ing, eg) in enumerate(hops):
        if k > 0:
            out.append(PathInterface(ia, ing))
        if k < len(hops) - 1:
            out.append(PathInterface(ia, eg))
    return out


def build(
    topo: LabTopology,
    hop_keys: Mapping[str, bytes],
    next_hops: Mapping[str, tuple[str, int]],
    *,
    now: int,
    rng: random.Random | None = None,
    pairs: list[tuple[str, str]] | None = None,
    exp_time: int = DEFAULT_EXP_TIME,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{src: {dst: [path entry, ...]}}`` for ``pairs`` (default: every ordered pair of leaves).

    A path entry is ``{"id", "hop_count", "interfaces": [[ia, ifid], ...], "raw": hex (CurrINF=CurrHF=0),
    "next_hop": [host, port], "mtu", "links": [link names in travel order]}``."""
    rng = rng or random.Random()
    seeds: dict[Beacon, int] = {}
    if pairs is None:
        pairs = [(s, d) for s in topo.leaves for d in topo.leaves if s != d]
    catalogue: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for src, dst in pairs:
        entries = []
        for uses in combinations(topo, src, dst):
            specs = []
            for u in uses:
                seed = seeds.setdefault(u.beacon, rng.randrange(1 << 16))
                hops = tuple(
                    BeaconHop(ing, eg, hop_keys[ia], exp_time)
                    for ia, (ing, eg) in zip(u.beacon.ases, u.beacon.hops, strict=True)
                )
                specs.append(SegmentSpec(hops, now, seed, u.cons_dir))
            raw = mint_scion_path(specs).to_bytes()
            intfs = interfaces(uses)
            links = [name for u in uses for name in u.links()]
            ases = _ases(uses)
            mtu = min([topo.ases[ia].mtu for ia in ases] + [topo.links[n].mtu for n in links])
            entries.append(
                {
                    "id": fingerprint(intfs),
                    "hop_count": len(links),
                    "interfaces": [[i.ia, i.ifid] for i in intfs],
                    "raw": raw.hex(),
                    "next_hop": list(next_hops[src]),
                    "mtu": mtu,
                    "links": links,
                }
            )
        entries.sort(key=lambda e: (e["hop_count"], e["interfaces"]))
        catalogue.setdefault(src, {})[dst] = entries[:MAX_PATHS]
    return catalogue
