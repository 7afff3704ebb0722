"""Hypothesis strategies for valid SCION packets, shared by the codec's property tests."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from scion_appliance.scion.addr import IA, SVC, HostAddr
from scion_appliance.scion.extensions import PROTO_E2E, PROTO_HBH, ExtensionHeader, Option
from scion_appliance.scion.l4 import RawPayload, UdpDatagram
from scion_appliance.scion.packet import ScionPacket
from scion_appliance.scion.path import EmptyPath, HopField, InfoField, OneHopPath, Path, ScionPath
from scion_appliance.scion.scmp import (
    DestinationUnreachable,
    Echo,
    ExternalInterfaceDown,
    InternalConnectivityDown,
    PacketTooBig,
    ParameterProblem,
    ScmpMessage,
    Traceroute,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)

ias = st.builds(IA, st.integers(0, 0xFFFF), st.integers(0, (1 << 48) - 1))
hosts: st.SearchStrategy[HostAddr] = st.one_of(
    st.builds(ipaddress.IPv4Address, u32),
    st.builds(ipaddress.IPv6Address, st.integers(0, (1 << 128) - 1)),
    st.builds(SVC, u16),
)
infos = st.builds(InfoField, st.booleans(), st.booleans(), u16, u32)
hops = st.builds(HopField, st.booleans(), st.booleans(), u8, u16, u16, st.binary(min_size=6, max_size=6))


@st.composite
def scion_paths(draw: st.DrawFn) -> ScionPath:
    n_seg = draw(st.integers(1, 3))
    segs = [(draw(infos), draw(st.lists(hops, min_size=1, max_size=8))) for _ in range(n_seg)]
    n_hops = sum(len(h) for _, h in segs)
    curr_hf = draw(st.integers(0, n_hops - 1))
    # CurrINF is the segment that holds CurrHF, as on a real path in flight.
    end, curr_inf = 0, 0
    for i, (_, h) in enumerate(segs):
        end += len(h)
        if curr_hf < end:
            curr_inf = i
            break
    return ScionPath.build(segs, curr_inf, curr_hf)


paths: st.SearchStrategy[Path] = st.one_of(
    st.just(EmptyPath()), scion_paths(), st.builds(OneHopPath, infos, hops, hops)
)

options = st.one_of(
    st.just(Option(0)),
    st.builds(Option, st.just(1), st.binary(max_size=6)),
    st.builds(Option, st.integers(2, 255), st.binary(max_size=20)),
)
quotes = st.binary(max_size=64)
scmps: st.SearchStrategy[ScmpMessage] = st.one_of(
    st.builds(DestinationUnreachable.new, u8, quotes),
    st.builds(PacketTooBig.new, u16, quotes),
    st.builds(ParameterProblem.new, u8, u16, quotes),
    st.builds(ExternalInterfaceDown.new, ias, u64, quotes),
    st.builds(InternalConnectivityDown.new, ias, u64, u64, quotes),
    st.builds(Echo.new, u16, u16, st.binary(max_size=64), reply=st.booleans()),
    st.builds(Traceroute.new, u16, u16, ias, u64, reply=st.booleans()),
)
l4s = st.one_of(
    st.builds(UdpDatagram, u16, u16, u16, st.binary(max_size=200)),
    scmps,
    st.builds(RawPayload, st.sampled_from([6, 203, 250]), st.binary(max_size=64)),
)

packets = st.builds(
    ScionPacket,
    dst_ia=ias,
    src_ia=ias,
    dst_host=hosts,
    src_host=hosts,
    l4=l4s,
    path=paths,
    traffic_class=u8,
    flow_id=st.integers(0, 0xFFFFF),
    hbh=st.none() | st.builds(ExtensionHeader, st.just(PROTO_HBH), st.lists(options, max_size=4).map(tuple)),
    e2e=st.none() | st.builds(ExtensionHeader, st.just(PROTO_E2E), st.lists(options, max_size=4).map(tuple)),
)
