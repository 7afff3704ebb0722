"""The traffic policy: which remote ISD-AS an IP packet goes to, and which sources a remote may use.

Each remote AS owns a set of IPv4/IPv6 prefixes (as the reference gateway's traffic policy maps remote
ISD-ASes to IP prefixes). A packet read from the TUN device is sent to the AS owning the longest prefix
that covers its destination; a packet coming back from a remote must carry a source address inside that
remote's prefixes.

Rules kept here:
- Prefixes of two different ASes never overlap: an overlap is refused when the policy is built, with an
  ``OperatorError`` naming both prefixes and both ASes. Overlaps inside one AS are allowed (redundant).
  With no overlap between ASes the longest match and "any match" name the same AS; the lookup is still
  longest-prefix so that a policy that is later allowed to nest keeps its meaning.
- Host bits set in a prefix (``10.1.2.3/16``) are refused rather than silently masked: the operator
  most likely meant something else.
- Lookups are sans-IO and total: any byte string is accepted, unreadable packets classify as
  ``PacketClass.MALFORMED``, never raise.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scion_appliance.errors import OperatorError
from scion_appliance.scion.addr import IA

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_BROADCAST = 0xFFFFFFFF


class PolicyError(OperatorError):
    """The traffic policy cannot be built: bad or overlapping prefixes. The message says which and where."""


class PacketClass(enum.StrEnum):
    """Why a packet read from the LAN has no remote AS (drop-counter reason and log word)."""

    MALFORMED = "malformed"  # neither IPv4 nor IPv6, or shorter than its fixed header
    MULTICAST = "multicast"  # multicast/broadcast destination (IPv6 router solicitations, mDNS, ...)
    NO_ROUTE = "no_route"  # unicast destination inside no remote prefix


@dataclass(frozen=True, slots=True)
class _Table:
    """Longest-prefix-match table of one IP version: per prefix length, network int -> AS."""

    bits: int
    by_len: dict[int, dict[int, IA]]
    lengths: tuple[int, ...]  # longest first

    def lookup(self, addr: int) -> IA | None:
        for plen in self.lengths:
            ia = self.by_len[plen].get(addr >> (self.bits - plen) if plen else 0)
            if ia is not None:
                return ia
        return None


def _table(bits: int, entries: list[tuple[IPNetwork, IA]]) -> _Table:
    by_len: dict[int, dict[int, IA]] = {}
    for net, ia in entries:
        plen = net.prefixlen
        by_len.setdefault(plen, {})[int(net.network_address) >> (bits - plen) if plen else 0] = ia
    return _Table(bits, by_len, tuple(sorted(by_len, reverse=True)))


def _as_ia(value: IA | str, where: str) -> IA:
    if isinstance(value, IA):
        return value
    try:
        return IA.parse(value)
    except ValueError as e:
        raise PolicyError(f"{where}: {e}; write the remote as ISD-AS like 1-ff00:0:110") from None


def _as_network(value: IPNetwork | str, where: str) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise PolicyError(
            f"{where}: {value!r} is not an IP prefix ({e}); write it like 10.2.0.0/16 or 2001:db8:2::/48 "
            "with the host bits zero"
        ) from None


class TrafficPolicy:
    """Remote ISD-AS -> IP prefixes, with longest-prefix match of destinations to remote ASes.

    ``TrafficPolicy({"1-ff00:0:111": ["198.51.100.0/24", "2001:db8:b::/48"]})``; ``source`` names where
    the policy came from in error messages (a config file, a command line option)."""

    def __init__(
        self,
        remotes: Mapping[Any, Iterable[IPNetwork | str]],  # keys: IA or "ISD-AS" text
        *,
        source: str = "traffic policy",
    ) -> None:
        self.source = source
        self._prefixes: dict[IA, tuple[IPNetwork, ...]] = {}
        owned: list[tuple[IPNetwork, IA]] = []
        for raw_ia, nets in remotes.items():
            ia = _as_ia(raw_ia, f"{source}: remote {raw_ia!r}")
            if ia in self._prefixes:
                raise PolicyError(f"{source}: remote {ia} is listed twice; merge its prefixes into one entry")
            mine: list[IPNetwork] = []
            for raw_net in nets:
                net = _as_network(raw_net, f"{source}: remote {ia}")
                for other, other_ia in owned:
                    if other_ia != ia and net.version == other.version and net.overlaps(other):
                        raise PolicyError(
                            f"{source}: prefix {net} of remote {ia} overlaps {other} of remote {other_ia}; "
                            "a destination must belong to exactly one remote AS: split or remove one of them"
                        )
                if net not in mine:
                    mine.append(net)
                    owned.append((net, ia))
            self._prefixes[ia] = tuple(mine)
        self._v4 = _table(32, [(n, ia) for n, ia in owned if n.version == 4])
        self._v6 = _table(128, [(n, ia) for n, ia in owned if n.version == 6])
        # Source checks: per remote, tables holding only that remote's prefixes.
        self._own = {
            ia: (
                _table(32, [(n, ia) for n in nets if n.version == 4]),
                _table(128, [(n, ia) for n in nets if n.version == 6]),
            )
            for ia, nets in self._prefixes.items()
        }

    @classmethod
    def from_peers(cls, peers: Iterable[Any], *, source: str = "traffic policy") -> TrafficPolicy:
        """From configured peers (anything with ``isd_as`` and ``remote_prefixes``, as ``config.Peer``)."""
        remotes: dict[IA | str, list[IPNetwork | str]] = {}
        for p in peers:
            remotes.setdefault(p.isd_as, []).extend(p.remote_prefixes)
        return cls(remotes, source=source)

    # -- queries --------------------------------------------------------------------------------------

    @property
    def remotes(self) -> tuple[IA, ...]:
        return tuple(self._prefixes)

    def prefixes(self, ia: IA | str) -> tuple[IPNetwork, ...]:
        return self._prefixes.get(_as_ia(ia, self.source), ())

    def lookup(self, address: IPAddress | str) -> IA | None:
        """The remote AS whose longest prefix covers ``address``, or None."""
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        table = self._v4 if addr.version == 4 else self._v6
        return table.lookup(int(addr))

    def classify(self, packet: bytes | bytearray | memoryview) -> IA | PacketClass:
        """The remote AS an IP packet goes to, or why it goes nowhere."""
        n = len(packet)
        if n < 1:
            return PacketClass.MALFORMED
        version = packet[0] >> 4
        if version == 4:
            if n < 20:
                return PacketClass.MALFORMED
            dst = int.from_bytes(packet[16:20], "big")
            if dst >> 28 == 0xE or dst == _V4_BROADCAST:
                return PacketClass.MULTICAST
            ia = self._v4.lookup(dst)
        elif version == 6:
            if n < 40:
                return PacketClass.MALFORMED
            if packet[24] == 0xFF:
                return PacketClass.MULTICAST
            ia = self._v6.lookup(int.from_bytes(packet[24:40], "big"))
        else:
            return PacketClass.MALFORMED
        return PacketClass.NO_ROUTE if ia is None else ia

    def source_allowed(self, ia: IA, packet: bytes | bytearray | memoryview) -> bool:
        """True if the IP packet's source address lies inside one of remote ``ia``'s prefixes."""
        tables = self._own.get(ia)
        if tables is None or len(packet) < 1:
            return False
        version = packet[0] >> 4
        if version == 4 and len(packet) >= 20:
            return tables[0].lookup(int.from_bytes(packet[12:16], "big")) is not None
        if version == 6 and len(packet) >= 40:
            return tables[1].lookup(int.from_bytes(packet[8:24], "big")) is not None
        return False

    def __repr__(self) -> str:
        body = ", ".join(f"{ia}: [{', '.join(map(str, nets))}]" for ia, nets in self._prefixes.items())
        return f"TrafficPolicy({{{body}}})"
