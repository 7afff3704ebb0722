"""Where candidate paths come from: the ``PathInfo`` value and the ``PathSource`` interface.

Rules kept here:
- A path is an immutable value. Probing, quality and selection know it by ``id``, a fingerprint string
  that depends only on the interfaces it crosses (as scionproto's ``snet.Fingerprint``), so the same
  path fetched twice (new raw bytes, refreshed hop fields) keeps its identity and its statistics.
- A source is sans-IO and synchronous: ``paths(dst_ia)`` answers from what it already holds (the lab's
  catalogue, a cache the service refreshes from a SCION daemon). Fetching is the service's job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from scion_appliance.scion.addr import IA


class PathInterface(NamedTuple):
    """One interface a path crosses: the AS it belongs to and its interface id."""

    ia: str
    ifid: int


@dataclass(frozen=True, slots=True)
class PathInfo:
    """A candidate path to a remote AS.

    ``raw`` is the encoded SCION path (the header's path field), ``next_hop`` the underlay UDP address of
    the first border router, ``mtu`` the path MTU in bytes (0 when unknown).
    """

    id: str
    hop_count: int
    interfaces: tuple[PathInterface, ...] = ()
    raw: bytes = field(default=b"", repr=False)
    next_hop: tuple[str, int] = ("", 0)
    mtu: int = 0

    @property
    def ases(self) -> tuple[str, ...]:
        """The ASes the path crosses, in order, each once."""
        seen: list[str] = []
        for intf in self.interfaces:
            if not seen or seen[-1] != intf.ia:
                seen.append(intf.ia)
        return tuple(seen)

    @property
    def short_id(self) -> str:
        """The first 8 characters of the id: enough to tell paths apart in a status line."""
        return self.id[:8]

    def crosses(self, ases: Iterable[str]) -> bool:
        wanted = set(ases)
        return any(intf.ia in wanted for intf in self.interfaces)


def fingerprint(interfaces: Sequence[PathInterface]) -> str:
    """scionproto's path fingerprint: SHA-256 over each interface's ISD-AS and id (both u64 big-endian),
    as lowercase hex. An empty interface list (a path inside the local AS) has the empty fingerprint."""
    if not interfaces:
        return ""
    h = hashlib.sha256()
    for intf in interfaces:
        h.update(int(IA.parse(intf.ia)).to_bytes(8, "big"))
        h.update(intf.ifid.to_bytes(8, "big"))
    return h.hexdigest()


@runtime_checkable
class PathSource(Protocol):
    """Anything that can list the current candidate paths to a remote ISD-AS (text form)."""

    def paths(self, dst_ia: str) -> list[PathInfo]: ...


class StaticPathSource:
    """A fixed catalogue (the lab, tests); ``update`` replaces one destination's list."""

    def __init__(self, catalogue: Mapping[str, Sequence[PathInfo]] | None = None) -> None:
        self._paths: dict[str, list[PathInfo]] = {k: list(v) for k, v in (catalogue or {}).items()}

    def paths(self, dst_ia: str) -> list[PathInfo]:
        return list(self._paths.get(dst_ia, ()))

    def update(self, dst_ia: str, paths: Sequence[PathInfo]) -> None:
        self._paths[dst_ia] = list(paths)
