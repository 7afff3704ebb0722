"""SCION's ``topology.json`` (one AS's border routers, interfaces and underlay links) as values.

Rules kept here:
- The format is scionproto's (private/topology/json/json.go): ``isd_as``, ``mtu``, ``dispatched_ports``,
  ``attributes`` (``core``; the deprecated ``authoritative``/``issuing``/``voting`` are ignored),
  ``border_routers: {name: {internal_addr, interfaces: {ifid: {underlay: {local, remote}, isd_as, link_to,
  mtu, remote_interface_id}}}}``. Other top-level keys (control_service, sigs, ...) are allowed and ignored.
- Link types are read case-insensitively (scionproto writes ``CORE``/``PARENT``/``CHILD``/``PEER``).
- Every error is an ``OperatorError`` naming the file, the key (as a JSON path) and the fix.
- ``to_json`` writes the same format back; ``load(to_json(t))`` gives ``t`` again.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scion_appliance.errors import OperatorError
from scion_appliance.scion.addr import IA, AddressError

LINK_TYPES = ("core", "parent", "child", "peer")
DEFAULT_MTU = 1472  # scionproto's default for an IPv4/UDP underlay on a 1500-byte link
ENDHOST_PORT = 30041  # scionproto topology.EndhostPort: where undispatched traffic goes
_DEPRECATED_ATTRS = ("authoritative", "issuing", "voting")

Address = tuple[str, int]


@dataclass(frozen=True)
class Interface:
    """One external interface of a border router: the underlay link to the neighbour AS."""

    ifid: int
    local: Address
    remote: Address
    neighbor_ia: IA
    link_to: str  # one of LINK_TYPES, lower case
    mtu: int
    remote_ifid: int = 0


@dataclass(frozen=True)
class BorderRouter:
    name: str
    internal_addr: Address
    interfaces: Mapping[int, Interface]


@dataclass(frozen=True)
class Topology:
    ia: IA
    core: bool
    mtu: int
    dispatched_ports: tuple[int, int]  # (0, 0): none, everything goes to ENDHOST_PORT
    border_routers: Mapping[str, BorderRouter]
    source: str = field(default="<memory>", compare=False)

    def router(self, name: str | None = None) -> BorderRouter:
        """The border router called ``name``; without a name, the only one the file describes."""
        if name is not None:
            try:
                return self.border_routers[name]
            except KeyError:
                known = ", ".join(sorted(self.border_routers)) or "none"
                raise OperatorError(
                    f"{self.source}: no border router named {name!r} under border_routers "
                    f"(the file has: {known}); pass one of those names"
                ) from None
        if len(self.border_routers) != 1:
            known = ", ".join(sorted(self.border_routers)) or "none"
            raise OperatorError(
                f"{self.source}: border_routers has {len(self.border_routers)} entries ({known}); "
                "name the one this process runs (--name)"
            )
        return next(iter(self.border_routers.values()))

    def owner_of(self, ifid: int) -> BorderRouter | None:
        """The border router that owns interface ``ifid``."""
        for br in self.border_routers.values():
            if ifid in br.interfaces:
                return br
        return None

    def dispatched(self, port: int) -> int:
        """The UDP port a packet for end-host ``port`` is delivered to (scionproto's rule)."""
        lo, hi = self.dispatched_ports
        return port if lo <= port <= hi and lo != 0 else ENDHOST_PORT


def format_addr(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addr(text: str) -> Address:
    """``"192.0.2.1:50000"`` or ``"[2001:db8::1]:50000"``; raises ``ValueError`` with the reason."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("IPv6 addresses are written [addr]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected host:port")
        if ":" in host:
            raise ValueError("write IPv6 addresses as [addr]:port")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not a numeric IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 0xFFFF:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    return str(ip), int(port_text)


def _port_range(text: str) -> tuple[int, int]:
    # private/topology/topology.go validatePortRange
    if text in ("", "-"):
        return 0, 0
    if text in ("all", "ALL"):
        return 1, 0xFFFF
    lo, sep, hi = text.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit():
        raise ValueError("expected FIRST-LAST (e.g. 31000-32767), 'all' or '-'")
    a, b = int(lo), int(hi)
    if not 1 <= a <= b <= 0xFFFF:
        raise ValueError(f"range {a}-{b} must satisfy 1 <= FIRST <= LAST <= 65535")
    return a, b


class _Reader:
    """Reads values out of the decoded JSON, turning every problem into one operator line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, what: str, fix: str) -> OperatorError:
        return OperatorError(f"{self.source}: {key}: {what}; {fix}")

    def obj(self, doc: Any, key: str) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise self.fail(
                key, f"expected a JSON object, found {type(doc).__name__}", "see scionproto's format"
            )
        return doc

    def get(self, doc: dict[str, Any], key: str, path: str, kind: type, *, default: Any = None) -> Any:
        full = f"{path}.{key}" if path else key
        if key not in doc:
            if default is not None:
                return default
            raise self.fail(full, "missing", f"add {key!r} (see scionproto's topology.json format)")
        value = doc[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise self.fail(full, f"expected {kind.__name__}, found {json.dumps(value)[:40]}", f"fix {key!r}")
        return value

    def addr(self, doc: dict[str, Any], key: str, path: str) -> Address:
        text = self.get(doc, key, path, str)
        try:
            return parse_addr(text)
        except ValueError as e:
            raise self.fail(f"{path}.{key}", f"{text!r}: {e}", "write it as IP:PORT") from None

    def ia(self, doc: dict[str, Any], key: str, path: str) -> IA:
        text = self.get(doc, key, path, str)
        try:
            return IA.parse(text)
        except AddressError as e:
            raise self.fail(f"{path}.{key}" if path else key, str(e), "write it like 1-ff00:0:110") from None


def parse(doc: Any, source: str = "<memory>") -> Topology:
    """A ``Topology`` from decoded ``topology.json`` content; ``source`` names the file in errors."""
    r = _Reader(source)
    top = r.obj(doc, "(top level)")
    ia = r.ia(top, "isd_as", "")
    if ia.isd == 0 or ia.asn == 0:
        raise r.fail("isd_as", f"{ia} is a wildcard", "give this AS's own ISD-AS")
    mtu = r.get(top, "mtu", "", int, default=DEFAULT_MTU)
    if not 1280 <= mtu <= 65535:
        raise r.fail("mtu", f"{mtu} is outside 1280..65535", "SCION needs at least 1280 bytes")
    try:
        ports = _port_range(r.get(top, "dispatched_ports", "", str, default="-"))
    except ValueError as e:
        raise r.fail("dispatched_ports", str(e), "fix the range") from None
    core = False
    for i, attr in enumerate(r.get(top, "attributes", "", list, default=[])):
        if attr == "core":
            core = True
        elif attr not in _DEPRECATED_ATTRS:
            raise r.fail(f"attributes[{i}]", f"unknown attribute {attr!r}", 'the only attribute is "core"')
    brs_doc = r.obj(r.get(top, "border_routers", "", dict, default={}), "border_routers")
    routers: dict[str, BorderRouter] = {}
    seen_if: dict[int, str] = {}
    for name, br_doc in brs_doc.items():
        path = f"border_routers.{name}"
        br_doc = r.obj(br_doc, path)
        internal = r.addr(br_doc, "internal_addr", path)
        ifs_doc = r.obj(r.get(br_doc, "interfaces", path, dict, default={}), f"{path}.interfaces")
        ifs: dict[int, Interface] = {}
        for key, if_doc in ifs_doc.items():
            ipath = f"{path}.interfaces.{key}"
            if not key.isdigit() or not 1 <= int(key) <= 0xFFFF:
                raise r.fail(ipath, f"interface id {key!r} is not a number from 1 to 65535", "renumber it")
            ifid = int(key)
            if ifid in seen_if:
                raise r.fail(ipath, f"interface {ifid} is also defined by {seen_if[ifid]}", "ids are per AS")
            seen_if[ifid] = name
            if_doc = r.obj(if_doc, ipath)
            under = r.obj(r.get(if_doc, "underlay", ipath, dict), f"{ipath}.underlay")
            local = r.addr(under, "local", f"{ipath}.underlay")
            remote = r.addr(under, "remote", f"{ipath}.underlay")
            link_to = r.get(if_doc, "link_to", ipath, str).lower()
            if link_to not in LINK_TYPES:
                raise r.fail(
                    f"{ipath}.link_to", f"unknown link type {link_to!r}", "use CORE, PARENT, CHILD or PEER"
                )
            if_mtu = r.get(if_doc, "mtu", ipath, int, default=mtu)
            if not 1280 <= if_mtu <= 65535:
                raise r.fail(f"{ipath}.mtu", f"{if_mtu} is outside 1280..65535", "fix the link MTU")
            remote_ifid = r.get(if_doc, "remote_interface_id", ipath, int, default=0)
            ifs[ifid] = Interface(
                ifid, local, remote, r.ia(if_doc, "isd_as", ipath), link_to, if_mtu, remote_ifid
            )
        routers[name] = BorderRouter(name, internal, dict(sorted(ifs.items())))
    return Topology(ia, core, mtu, ports, routers, source)


def load(path: str | os.PathLike[str]) -> Topology:
    """Reads and checks a ``topology.json`` file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise OperatorError(
            f"topology file {p} does not exist; pass the AS's topology.json (--topology)"
        ) from None
    except OSError as e:
        raise OperatorError(f"cannot read topology file {p}: {e.strerror}; check its permissions") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise OperatorError(
            f"{p}: line {e.lineno} column {e.colno}: not valid JSON ({e.msg}); fix the syntax"
        ) from None
    return parse(doc, str(p))


def to_json(topo: Topology) -> dict[str, Any]:
    """The ``topology.json`` document for ``topo``."""
    lo, hi = topo.dispatched_ports
    doc: dict[str, Any] = {
        "isd_as": str(topo.ia),
        "mtu": topo.mtu,
        "dispatched_ports": "-" if lo == 0 else ("all" if (lo, hi) == (1, 0xFFFF) else f"{lo}-{hi}"),
        "attributes": ["core"] if topo.core else [],
        "border_routers": {},
    }
    for name, br in topo.border_routers.items():
        ifs: dict[str, Any] = {}
        for ifid, intf in br.interfaces.items():
            entry: dict[str, Any] = {
                "underlay": {"local": format_addr(intf.local), "remote": format_addr(intf.remote)},
                "isd_as": str(intf.neighbor_ia),
                "link_to": intf.link_to.upper(),
                "mtu": intf.mtu,
            }
            if intf.remote_ifid:
                entry["remote_interface_id"] = intf.remote_ifid
            ifs[str(ifid)] = entry
        doc["border_routers"][name] = {"internal_addr": format_addr(br.internal_addr), "interfaces": ifs}
    return doc
