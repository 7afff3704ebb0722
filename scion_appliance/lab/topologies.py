"""Lab network descriptions: which ASes exist and how they are linked (the lab's input).

Rules kept here:
- The format follows scionproto's ``.topo`` files, in JSON: ``{"ASes": {IA: {"core": bool, "mtu": n}},
  "links": [{"a": "IA#IFID", "b": "IA#IFID", "linkAtoB": "CORE"|"CHILD"|"PEER", "mtu": n}]}``.
  ``linkAtoB: CHILD`` makes b a child of a. Interface ids are per AS and unique within it.
- Every link gets a stable name: the two ASes' short names (the last AS group, e.g. ``111``; the full
  ISD-AS if short names collide), child first for parent-child links, and a running number for
  parallel links: ``111-110#1``, ``111-110#2``, ``110-210#1``.
- ``DEFAULT`` is the lab's default network: two ISDs, each with two core ASes and one leaf, linked so
  that the leaves have at least three link-disjoint paths between them.
- Errors are ``OperatorError`` naming the file, the entry and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scion_appliance.errors import OperatorError
from scion_appliance.scion.addr import IA, AddressError

LINK_KINDS = ("CORE", "CHILD", "PEER")
DEFAULT_MTU = 1472

DEFAULT: dict[str, Any] = {
    "ASes": {
        "1-ff00:0:110": {"core": True},
        "1-ff00:0:120": {"core": True},
        "1-ff00:0:111": {},
        "2-ff00:0:210": {"core": True},
        "2-ff00:0:220": {"core": True},
        "2-ff00:0:211": {},
    },
    "links": [
        {"a": "1-ff00:0:110#1", "b": "1-ff00:0:111#41", "linkAtoB": "CHILD"},
        {"a": "1-ff00:0:110#2", "b": "1-ff00:0:111#42", "linkAtoB": "CHILD"},
        {"a": "1-ff00:0:120#1", "b": "1-ff00:0:111#43", "linkAtoB": "CHILD"},
        {"a": "2-ff00:0:210#1", "b": "2-ff00:0:211#41", "linkAtoB": "CHILD"},
        {"a": "2-ff00:0:220#1", "b": "2-ff00:0:211#42", "linkAtoB": "CHILD"},
        {"a": "2-ff00:0:220#2", "b": "2-ff00:0:211#43", "linkAtoB": "CHILD"},
        {"a": "1-ff00:0:110#10", "b": "2-ff00:0:210#10", "linkAtoB": "CORE"},
        {"a": "1-ff00:0:120#10", "b": "2-ff00:0:220#10", "linkAtoB": "CORE"},
        {"a": "1-ff00:0:110#11", "b": "2-ff00:0:220#11", "linkAtoB": "CORE"},
        {"a": "1-ff00:0:110#12", "b": "1-ff00:0:120#12", "linkAtoB": "CORE"},
        {"a": "2-ff00:0:210#12", "b": "2-ff00:0:220#12", "linkAtoB": "CORE"},
    ],
}

BUILTIN: dict[str, dict[str, Any]] = {"default": DEFAULT}


@dataclass(frozen=True)
class LabAS:
    ia: str
    core: bool
    mtu: int


@dataclass(frozen=True)
class LabLink:
    """A link between interface ``a_if`` of ``a`` and ``b_if`` of ``b``; ``kind`` is what b is to a:
    CORE (both core), PARENT (b is a's parent: a is the child, named first) or PEER."""

    name: str
    a: str
    a_if: int
    b: str
    b_if: int
    kind: str
    mtu: int

    def link_to(self, side: str) -> str:
        """topology.json ``link_to`` of the interface on ``side`` ("a" or "b"): what the other end is."""
        if self.kind == "PARENT":
            return "PARENT" if side == "a" else "CHILD"
        return self.kind

    def end(self, ia: str) -> int:
        """This link's interface id in AS ``ia``."""
        return self.a_if if ia == self.a else self.b_if


@dataclass(frozen=True)
class LabTopology:
    name: str
    ases: dict[str, LabAS]
    links: dict[str, LabLink]

    @property
    def leaves(self) -> list[str]:
        return [ia for ia, a in self.ases.items() if not a.core]

    @property
    def cores(self) -> list[str]:
        return [ia for ia, a in self.ases.items() if a.core]


def _short(ia: str) -> str:
    return ia.rsplit(":", 1)[-1] if ":" in ia else ia.split("-", 1)[-1]


def parse(doc: Any, name: str, source: str) -> LabTopology:
    def fail(where: str, what: str, fix: str) -> OperatorError:
        return OperatorError(f"{source}: {where}: {what}; {fix}")

    if not isinstance(doc, dict) or not isinstance(doc.get("ASes"), dict) or not doc["ASes"]:
        raise fail("ASes", "missing or empty", 'give {"ASes": {"1-ff00:0:110": {"core": true}, ...}}')
    ases: dict[str, LabAS] = {}
    for text, spec in doc["ASes"].items():
        try:
            ia = str(IA.parse(text))
        except AddressError as e:
            raise fail(f"ASes.{text}", str(e), "write ISD-AS like 1-ff00:0:110") from None
        if not isinstance(spec, dict):
            raise fail(f"ASes.{text}", "expected an object", 'write {"core": true} or {}')
        mtu = spec.get("mtu", DEFAULT_MTU)
        if not isinstance(mtu, int) or not 1280 <= mtu <= 9000:
            raise fail(f"ASes.{text}.mtu", f"{mtu!r} is not 1280..9000", "fix the MTU")
        ases[ia] = LabAS(ia, bool(spec.get("core", False)), mtu)
    if len(ases) > 254:
        raise fail("ASes", f"{len(ases)} ASes", "the lab addresses at most 254 ASes (127.N.n.1)")
    shorts = [_short(ia) for ia in ases]
    short = {ia: (_short(ia) if shorts.count(_short(ia)) == 1 else ia) for ia in ases}
    raw_links = doc.get("links", [])
    if not isinstance(raw_links, list):
        raise fail("links", "expected a list", 'write [{"a": "IA#IF", "b": "IA#IF", "linkAtoB": "CHILD"}]')
    used: set[tuple[str, int]] = set()
    links: dict[str, LabLink] = {}
    for k, entry in enumerate(raw_links):
        where = f"links[{k}]"
        if not isinstance(entry, dict):
            raise fail(where, "expected an object", "see the default topology for the form")
        ends: list[tuple[str, int]] = []
        for side in ("a", "b"):
            text = entry.get(side)
            ia_text, sep, if_text = text.rpartition("#") if isinstance(text, str) else ("", "", "")
            if not sep or not if_text.isdigit() or not 1 <= int(if_text) <= 0xFFFF:
                raise fail(f"{where}.{side}", f"{text!r} is not IA#IFID", "write it like 1-ff00:0:110#1")
            try:
                ia = str(IA.parse(ia_text))
            except AddressError as e:
                raise fail(f"{where}.{side}", str(e), "write it like 1-ff00:0:110#1") from None
            if ia not in ases:
                raise fail(f"{where}.{side}", f"AS {ia} is not listed under ASes", "add it there")
            end = (ia, int(if_text))
            if end in used:
                raise fail(f"{where}.{side}", f"interface {text} is used twice", "give each link its own id")
            used.add(end)
            ends.append(end)
        kind = str(entry.get("linkAtoB", "")).upper()
        if kind not in LINK_KINDS:
            raise fail(f"{where}.linkAtoB", f"{entry.get('linkAtoB')!r}", "use CORE, CHILD or PEER")
        (a, a_if), (b, b_if) = ends
        if a == b:
            raise fail(where, "links an AS to itself", "link two different ASes")
        if kind == "CORE" and not (ases[a].core and ases[b].core):
            raise fail(where, "CORE link between ASes that are not both core", 'mark them "core": true')
        mtu = entry.get("mtu", min(ases[a].mtu, ases[b].mtu))
        if not isinstance(mtu, int) or not 1280 <= mtu <= 9000:
            raise fail(f"{where}.mtu", f"{mtu!r} is not 1280..9000", "fix the MTU")
        if kind == "CHILD":  # named and stored child first: b is a's PARENT
            (a, a_if), (b, b_if), kind = (b, b_if), (a, a_if), "PARENT"
        base = f"{short[a]}-{short[b]}"
        number = 1 + sum(1 for n in links if n.rsplit("#", 1)[0] == base)
        name_ = f"{base}#{number}"
        links[name_] = LabLink(name_, a, a_if, b, b_if, kind, mtu)
    return LabTopology(name, ases, links)


def load(spec: str) -> LabTopology:
    """A built-in topology by name ("default") or a JSON file in the format above."""
    if spec in BUILTIN:
        return parse(BUILTIN[spec], spec, f"built-in topology {spec!r}")
    p = Path(spec)
    if not p.is_file():
        known = ", ".join(sorted(BUILTIN))
        raise OperatorError(f"topology {spec!r} is neither a built-in ({known}) nor a file; check --topology")
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise OperatorError(f"cannot read lab topology {p}: {e}; fix the file (JSON)") from None
    return parse(doc, p.stem, str(p))
