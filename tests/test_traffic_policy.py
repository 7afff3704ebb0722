"""Traffic policy: remote ISD-AS -> prefixes, longest-prefix match of packet destinations, overlap
refusal, source checks for packets coming back. Addresses are TEST-NET and documentation prefixes."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.errors import OperatorError
from scion_appliance.gateway.traffic_policy import PacketClass, PolicyError, TrafficPolicy
from scion_appliance.scion.addr import IA

A, B, C = IA.parse("1-ff00:0:110"), IA.parse("1-ff00:0:111"), IA.parse("2-ff00:0:210")


def _v4(src: str, dst: str) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20, 0, 0, 64, 17, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))


def _v6(src: str, dst: str) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, 0, 17, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)


@pytest.fixture
def policy() -> TrafficPolicy:
    return TrafficPolicy({
        "1-ff00:0:111": ["198.51.100.0/24", "2001:db8:b::/48"],
        C: [ipaddress.ip_network("203.0.113.0/25"), "203.0.113.128/26", "0.0.0.0/32"],
    })


def test_lookup_by_destination(policy: TrafficPolicy) -> None:
    assert policy.lookup("198.51.100.7") == B
    assert policy.lookup("198.51.101.7") is None
    assert policy.lookup("203.0.113.127") == C
    assert policy.lookup("203.0.113.130") == C
    assert policy.lookup("203.0.113.200") is None  # 203.0.113.192/26 is nobody's
    assert policy.lookup(ipaddress.IPv6Address("2001:db8:b:ffff::1")) == B
    assert policy.lookup("2001:db8:c::1") is None
    assert policy.remotes == (B, C)
    assert policy.prefixes("1-ff00:0:111") == (
        ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8:b::/48"))
    assert policy.prefixes(A) == ()


def test_classify_packets(policy: TrafficPolicy) -> None:
    assert policy.classify(_v4("192.0.2.1", "198.51.100.1")) == B
    assert policy.classify(_v6("2001:db8:a::1", "2001:db8:b::2")) == B
    assert policy.classify(_v4("192.0.2.1", "192.0.2.99")) is PacketClass.NO_ROUTE
    # What a Linux TUN device emits on its own once up: IPv6 router solicitations to ff02::2.
    assert policy.classify(_v6("fe80::1", "ff02::2")) is PacketClass.MULTICAST
    assert policy.classify(_v4("192.0.2.1", "224.0.0.251")) is PacketClass.MULTICAST
    assert policy.classify(_v4("192.0.2.1", "255.255.255.255")) is PacketClass.MULTICAST
    for bad in (b"", b"\x45" * 19, b"\x60" * 39, b"\x00" * 60, b"\xff" * 60):
        assert policy.classify(bad) is PacketClass.MALFORMED


def test_longest_prefix_wins_inside_one_remote() -> None:
    # Nested prefixes of one AS are allowed (redundant) and resolve to that AS.
    p = TrafficPolicy({B: ["10.0.0.0/8", "10.1.0.0/16", "10.1.0.0/16"]})
    assert p.lookup("10.1.2.3") == B
    assert p.lookup("10.200.0.1") == B
    assert p.prefixes(B) == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16"))


def test_default_route_prefix() -> None:
    p = TrafficPolicy({B: ["0.0.0.0/0"], C: ["::/0"]})
    assert p.lookup("8.8.8.8") == B
    assert p.lookup("2001:db8::1") == C


def test_overlap_between_ases_is_refused_naming_both() -> None:
    with pytest.raises(PolicyError) as e:
        TrafficPolicy({B: ["198.51.100.0/24"], C: ["198.51.100.128/25"]}, source="/etc/x.toml")
    msg = str(e.value)
    assert "/etc/x.toml" in msg and "198.51.100.128/25" in msg and "198.51.100.0/24" in msg
    assert str(B) in msg and str(C) in msg
    assert isinstance(e.value, OperatorError)
    # Different IP versions never overlap.
    TrafficPolicy({B: ["0.0.0.0/0"], C: ["::/0"]})


@pytest.mark.parametrize("bad", ["10.1.2.3/16", "not-a-prefix", "10.0.0.0/33", "2001:db8::1/48"])
def test_bad_prefix_is_an_operator_error(bad: str) -> None:
    with pytest.raises(PolicyError, match="not an IP prefix"):
        TrafficPolicy({B: [bad]})


def test_bad_ia_and_duplicate_remote() -> None:
    with pytest.raises(PolicyError, match="ISD-AS"):
        TrafficPolicy({"ff00:0:111": ["10.0.0.0/8"]})
    with pytest.raises(PolicyError, match="listed twice"):
        TrafficPolicy({B: ["10.0.0.0/8"], "1-ff00:0:111": ["11.0.0.0/8"]})


def test_source_check(policy: TrafficPolicy) -> None:
    assert policy.source_allowed(B, _v4("198.51.100.9", "192.0.2.1"))
    assert not policy.source_allowed(B, _v4("203.0.113.9", "192.0.2.1"))  # C's address, sent by B
    assert not policy.source_allowed(B, _v4("192.0.2.5", "192.0.2.1"))
    assert policy.source_allowed(B, _v6("2001:db8:b::9", "2001:db8:a::1"))
    assert not policy.source_allowed(B, _v6("2001:db8:c::9", "2001:db8:a::1"))
    assert not policy.source_allowed(A, _v4("198.51.100.9", "192.0.2.1"))  # A is no remote
    assert not policy.source_allowed(B, b"\x45" * 10)


def test_from_peers_merges_entries_of_one_as() -> None:
    class P:
        def __init__(self, ia: IA, nets: list[str]) -> None:
            self.isd_as, self.remote_prefixes = ia, [ipaddress.ip_network(n) for n in nets]

    p = TrafficPolicy.from_peers([P(B, ["10.0.0.0/8"]), P(C, ["11.0.0.0/8"]), P(B, ["12.0.0.0/8"])])
    assert p.lookup("12.1.1.1") == B and p.lookup("11.1.1.1") == C


_prefixes = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32), st.sampled_from([A, B, C])), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(_prefixes, st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20))
def test_lookup_matches_brute_force(entries: list[tuple[int, int, IA]], probes: list[int]) -> None:
    """Against a linear scan over ipaddress: the AS of the longest prefix containing the address.

    Prefixes that would overlap another AS's are left out (the policy refuses them, checked too)."""
    remotes: dict[IA, list[ipaddress.IPv4Network]] = {}
    kept: list[tuple[ipaddress.IPv4Network, IA]] = []
    for addr, plen, ia in entries:
        net = ipaddress.IPv4Network((addr, plen), strict=False)
        if any(o.overlaps(net) and oia != ia for o, oia in kept):
            with pytest.raises(PolicyError):
                TrafficPolicy({**remotes, ia: [*remotes.get(ia, []), net]} if ia in remotes
                              else {**remotes, ia: [net]})
            continue
        kept.append((net, ia))
        remotes.setdefault(ia, []).append(net)
    policy = TrafficPolicy(remotes)
    # Probe inside each kept prefix too, so matches are exercised, not only misses.
    addrs = [ipaddress.IPv4Address(a) for a in probes] + [n.network_address for n, _ in kept]
    for ip in addrs:
        covering = [(n.prefixlen, ia) for n, ia in kept if ip in n]
        want = max(covering, key=lambda c: c[0])[1] if covering else None
        assert policy.lookup(ip) == want
        assert policy.classify(_v4("192.0.2.1", str(ip))) == (
            PacketClass.MULTICAST if int(ip) >> 28 == 0xE or int(ip) == 2**32 - 1
            else want if want is not None else PacketClass.NO_ROUTE
        )
