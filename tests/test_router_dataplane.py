"""The router's batch dataplane, sans-IO: three routers (111 -> 110 -> 112) passing batches by hand.

Packets are minted with the path-minting module (MACs under each AS's key, as beaconing gives them),
sent by a host of 111 into its router's internal socket, and handed from router to router by the test.
"""

from __future__ import annotations

import ipaddress
import random
import secrets
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance._fast import codec, udpio
from scion_appliance.router import reasons
from scion_appliance.router.dataplane import (
    Datagram,
    Dataplane,
    Impairment,
    Out,
    SlotSend,
    TokenBucket,
    delivery_port,
)
from scion_appliance.router.topology import ENDHOST_PORT, BorderRouter, Interface, Topology
from scion_appliance.scion import scmp
from scion_appliance.scion.addr import IA
from scion_appliance.scion.l4 import UdpDatagram
from scion_appliance.scion.mint import BeaconHop, SegmentSpec, mint_scion_path
from scion_appliance.scion.packet import ScionPacket, parse
from scion_appliance.scion.path import HOP_LEN, INFO_LEN, META_LEN, ScionPath

IA110, IA111, IA112 = (IA.parse(f"1-ff00:0:{n}") for n in (110, 111, 112))
HOST111 = ("127.0.1.2", 40000)
R110, R111, R112 = "127.0.2.1", "127.0.1.1", "127.0.3.1"
KEYS = {ia: secrets.token_bytes(16) for ia in (IA110, IA111, IA112)}


def _topo(ia: IA, ip: str, ifs: list[tuple[int, str, int, IA, str]], core: bool) -> Topology:
    interfaces = {
        ifid: Interface(ifid, (ip, 50000 + ifid), (rip, 50000 + rif), nia, link_to, 1472, rif)
        for ifid, rip, rif, nia, link_to in ifs
    }
    br = BorderRouter("br", (ip, 30042), interfaces)
    return Topology(ia, core, 1472, (1, 65535), {"br": br})


def routers(**kw: object) -> tuple[Dataplane, Dataplane, Dataplane]:
    t110 = _topo(IA110, R110, [(1, R111, 41, IA111, "child"), (2, R112, 42, IA112, "child")], True)
    t111 = _topo(IA111, R111, [(41, R110, 1, IA110, "parent")], False)
    t112 = _topo(IA112, R112, [(42, R110, 2, IA110, "parent")], False)
    return tuple(  # type: ignore[return-value]
        Dataplane(t, t.router(), KEYS[t.ia], rng=random.Random(7), **kw)  # type: ignore[arg-type]
        for t in (t110, t111, t112)
    )


def path_111_to_112(ts: int | None = None) -> ScionPath:
    """Up 111 -> 110 (against construction), down 110 -> 112 (in construction)."""
    ts = int(time.time()) if ts is None else ts
    up = SegmentSpec((BeaconHop(0, 1, KEYS[IA110]), BeaconHop(41, 0, KEYS[IA111])), ts, 0x1234, False)
    down = SegmentSpec((BeaconHop(0, 2, KEYS[IA110]), BeaconHop(42, 0, KEYS[IA112])), ts, 0x4321, True)
    return mint_scion_path([up, down])


def path_111_to_110(ts: int | None = None) -> ScionPath:
    ts = int(time.time()) if ts is None else ts
    up = SegmentSpec((BeaconHop(0, 1, KEYS[IA110]), BeaconHop(41, 0, KEYS[IA111])), ts, 0x0BAD, False)
    return mint_scion_path([up])


def udp_packet(
    path: ScionPath, dst_ia: IA = IA112, dst_host: str = "127.0.3.2", payload: bytes = b"hi"
) -> bytes:
    pkt = ScionPacket(
        dst_ia=dst_ia,
        src_ia=IA111,
        dst_host=ipaddress.ip_address(dst_host),
        src_host=ipaddress.ip_address(HOST111[0]),
        l4=UdpDatagram(HOST111[1], 7000, 0, payload),
        path=path,
    )
    return pkt.with_checksum().serialize()


def inject(dp: Dataplane, link: int, packets: list[bytes], src: tuple[str, int] = HOST111) -> list[Out]:
    b = dp.rx(link)
    for k, p in enumerate(packets):
        b.buf[k * b.stride : k * b.stride + len(p)] = p
        b.lens[k] = len(p)
        udpio.addr_set(b.addrs, k, src[0], src[1])
    return dp.process(link, len(packets), time.time())


def sent(out: list[Out]) -> list[tuple[int, bytes, tuple[str, int]]]:
    """(link, bytes, destination) of every packet the router hands to its sockets, in order."""
    result = []
    for item in out:
        if isinstance(item, Datagram):
            result.append((item.link, item.data, item.dest))
            continue
        b = item.batch
        for j in range(item.start, item.start + item.count):
            i = item.order[j]
            data = bytes(b.buf[i * b.stride : i * b.stride + b.lens[i]])
            rec = 0 if len(item.dests) == udpio.ADDR_SIZE else i
            result.append((item.link, data, udpio.addr_get(item.dests, rec)))
    return result


def to_110(dp111: Dataplane, dp110: Dataplane, packet: bytes) -> list[tuple[int, bytes, tuple[str, int]]]:
    """The host sends ``packet`` via 111; returns what 110 sends for it."""
    [(link, data, dest)] = sent(inject(dp111, 0, [packet]))
    assert (link, dest) == (41, (R110, 50001))
    return sent(inject(dp110, 1, [data], src=(R111, 50041)))


def hop_offset(packet: bytes, hop: int) -> int:
    return 12 + 16 + 8 + META_LEN + INFO_LEN * 2 + HOP_LEN * hop  # IPv4 hosts, two info fields


def test_transit_and_local_delivery() -> None:
    dp110, dp111, dp112 = routers()
    pkt = udp_packet(path_111_to_112())
    [(link, data, dest)] = to_110(dp111, dp110, pkt)
    assert (link, dest) == (2, (R112, 50042))
    [(link, data, dest)] = sent(inject(dp112, 42, [data], src=(R110, 50002)))
    assert (link, dest) == (0, ("127.0.3.2", 7000))  # the UDP destination port, dispatcherless
    got = parse(data)
    assert got.l4 == parse(pkt).l4
    assert isinstance(got.path, ScionPath) and got.path.meta.curr_hf == 3
    assert dp110.counters["forwarded"] == 1 and dp112.counters["delivered"] == 1
    assert not any(k.startswith("drop.") for d in (dp110, dp111, dp112) for k in d.counters)


class SinkLog:
    """A local sink that keeps what each call handed over (copies: the batch is reused)."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[bytes, tuple[str, int], dict[str, object]]]] = []

    def __call__(
        self,
        buf: bytearray,
        stride: int,
        lens: memoryview,
        addrs: bytearray,
        recs: codec.ScionRecords,
        slots: memoryview,
    ) -> None:
        self.calls.append(
            [
                (bytes(buf[i * stride : i * stride + lens[i]]), udpio.addr_get(addrs, i), recs.get(i))
                for i in slots
            ]
        )


def test_local_sink_takes_its_deliveries_in_process_with_the_parse_records() -> None:
    dp110, dp111, dp112 = routers()
    to_b = [udp_packet(path_111_to_112(), payload=bytes([k]) * (5 + k)) for k in range(3)]
    other = udp_packet(path_111_to_112(), dst_host="127.0.3.3")
    pkts = [to_b[0], other, to_b[1], to_b[2]]
    at_112 = [
        d
        for _, d, _ in sent(
            inject(dp110, 1, [d for _, d, _ in sent(inject(dp111, 0, pkts))], src=(R111, 50041))
        )
    ]
    # What the socket path sends, from a router without the sink: the known answer for the bytes.
    ref = sent(inject(routers()[2], 42, at_112, src=(R110, 50002)))
    sink = SinkLog()
    dp112.add_local_sink("127.0.3.2", 7000, sink)
    out = sent(inject(dp112, 42, at_112, src=(R110, 50002)))
    assert out == [ref[1]] and ref[1][2] == ("127.0.3.3", 7000)  # the other host still by socket
    [call] = sink.calls  # one call for the batch
    assert [data for data, _, _ in call] == [ref[0][1], ref[2][1], ref[3][1]]
    for data, src, rec in call:
        assert src == (R112, 30042)  # what recvmmsg shows: the router's internal socket
        assert rec == codec.parse_record(data) and rec["status"] == 0 and rec["dst_port"] == 7000
    c = dp112.counters
    assert (c["delivered"], c["delivered_in_process"], c["tx.internal"]) == (4, 3, 1)
    dp112.remove_local_sink("127.0.3.2", 7000)
    assert sent(inject(dp112, 42, at_112[:1], src=(R110, 50002))) == ref[:1]  # back to the socket
    assert len(sink.calls) == 1


def echo_reply(path: ScionPath, dst_host: str, identifier: int) -> bytes:
    pkt = ScionPacket(
        dst_ia=IA112,
        src_ia=IA111,
        dst_host=ipaddress.ip_address(dst_host),
        src_host=ipaddress.ip_address(HOST111[0]),
        l4=scmp.Echo.new(identifier, 1, b"probe", reply=True),
        path=path,
    )
    return pkt.with_checksum().serialize()


@pytest.mark.parametrize("two_sinks", [False, True])
def test_local_sink_gets_every_kind_of_its_packets_in_arrival_order(two_sinks: bool) -> None:
    # Plain datagrams are picked out in C, the sink's other packets (an echo reply to the identifier
    # 7000) found by the per-packet rules; with two sinks the rules decide everything. Either way the
    # sink gets all of them, in arrival order, and the rest goes where it always went.
    p = path_111_to_112()
    pkts = [
        udp_packet(p, payload=b"a"),
        echo_reply(p, "127.0.3.2", 7000),
        udp_packet(p, dst_host="127.0.3.3"),
        udp_packet(p, payload=b"b"),
        echo_reply(p, "127.0.3.3", 7000),
        udp_packet(p, payload=b"c"),
    ]
    dp110, dp111, dp112 = routers()
    at_112 = [
        d
        for _, d, _ in sent(
            inject(dp110, 1, [d for _, d, _ in sent(inject(dp111, 0, pkts))], src=(R111, 50041))
        )
    ]
    ref = sent(inject(routers()[2], 42, at_112, src=(R110, 50002)))  # all by socket: the known answer
    sink, other = SinkLog(), SinkLog()
    dp112.add_local_sink("127.0.3.2", 7000, sink)
    if two_sinks:
        dp112.add_local_sink("127.0.3.4", 7000, other)
    out = sent(inject(dp112, 42, at_112, src=(R110, 50002)))
    assert out == [ref[2], ref[4]]
    [call] = sink.calls
    assert [data for data, _, _ in call] == [ref[k][1] for k in (0, 1, 3, 5)]
    assert [rec["l4_proto"] for _, _, rec in call] == [17, 202, 17, 17]
    assert all(rec == codec.parse_record(data) for data, _, rec in call)
    assert other.calls == []
    assert dp112.counters["delivered_in_process"] == 4 and dp112.counters["delivered"] == 6


_AT_112: list[bytes] = []


def _arrivals_at_112() -> list[bytes]:
    """Packets as they reach 112: datagrams to the sink (127.0.3.2:7000), to another port and host,
    an echo reply for the sink and one for another identifier."""
    if not _AT_112:
        dp110, dp111, _ = routers()
        p = path_111_to_112()
        pkts = [
            udp_packet(p, payload=b"x" * 30),
            udp_packet(p, dst_host="127.0.3.3"),
            echo_reply(p, "127.0.3.2", 7000),
            echo_reply(p, "127.0.3.2", 7001),
        ]
        _AT_112.extend(
            d
            for _, d, _ in sent(
                inject(dp110, 1, [d for _, d, _ in sent(inject(dp111, 0, pkts))], src=(R111, 50041))
            )
        )
    return _AT_112


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.lists(st.tuples(st.integers(0, 10**4), st.integers(1, 255)), max_size=2)
        ),
        min_size=1,
        max_size=24,
    )
)
def test_local_sink_gets_exactly_what_the_socket_would_have(
    picks: list[tuple[int, list[tuple[int, int]]]],
) -> None:
    # Known answer: the same batch through a router without the sink. Edits reach every byte (UDP
    # ports and lengths, addresses, the SCMP type and identifier, extension-free headers made odd),
    # so the C pick and the per-packet rules must agree on all of them.
    pkts = []
    for which, edits in picks:
        pkt = bytearray(_arrivals_at_112()[which])
        for where, x in edits:
            pkt[where % len(pkt)] ^= x
        pkts.append(bytes(pkt))
    ref = sent(inject(routers()[2], 42, pkts, src=(R110, 50002)))
    _, _, dp112 = routers()
    sink = SinkLog()
    dp112.add_local_sink("127.0.3.2", 7000, sink)
    out = sent(inject(dp112, 42, pkts, src=(R110, 50002)))
    to_sink = [(data, (R112, 30042)) for link, data, dest in ref if link == 0 and dest == ("127.0.3.2", 7000)]
    assert out == [r for r in ref if not (r[0] == 0 and r[2] == ("127.0.3.2", 7000))]
    got = [(data, src) for call in sink.calls for data, src, _ in call]
    assert got == to_sink
    assert all(rec == codec.parse_record(data) for call in sink.calls for data, _, rec in call)


def test_local_sink_only_for_addresses_the_router_delivers_to() -> None:
    _, _, dp112 = routers()
    with pytest.raises(ValueError, match="not an address this router delivers to"):
        dp112.add_local_sink(R112, 30042, SinkLog())  # the router itself answers there
    some = replace(dp112.topo, dispatched_ports=(31000, 32000))
    dp = Dataplane(some, some.router(), KEYS[IA112])
    assert dp.delivers_to("127.0.3.2", 31000) and not dp.delivers_to("127.0.3.2", 7000)
    with pytest.raises(ValueError):
        dp.add_local_sink("127.0.3.2", 7000, SinkLog())  # its packets go to 30041


def test_batch_of_many_goes_out_as_one_group() -> None:
    dp110, dp111, _ = routers()
    pkts = [udp_packet(path_111_to_112(), payload=bytes([k]) * 20) for k in range(40)]
    out = inject(dp111, 0, pkts)
    assert len(out) == 1 and isinstance(out[0], SlotSend) and out[0].count == 40
    forwarded = sent(out)
    out110 = inject(dp110, 1, [d for _, d, _ in forwarded], src=(R111, 50041))
    assert [(ln, dst) for ln, _, dst in sent(out110)] == [(2, (R112, 50042))] * 40
    assert [parse(d).l4.payload[0] for _, d, _ in sent(out110)] == list(range(40))  # type: ignore[union-attr]


def _only_error(items: list[tuple[int, bytes, tuple[str, int]]]) -> tuple[int, ScionPacket, tuple[str, int]]:
    [(link, data, dest)] = items
    return link, parse(data), dest


def test_bad_mac_dropped_counted_and_answered() -> None:
    dp110, dp111, _ = routers()
    path = path_111_to_112()
    hops = list(path.hop_fields)
    hops[1] = replace(hops[1], mac=bytes(6))  # 110's up hop field
    bad = udp_packet(replace(path, hop_fields=tuple(hops)))
    link, reply, dest = _only_error(to_110(dp111, dp110, bad))
    assert (link, dest) == (1, (R111, 50041))  # back out of the interface it came in on
    assert dp110.counters["drop.bad_mac"] == 1
    assert isinstance(reply.l4, scmp.ParameterProblem)
    assert reply.l4.code == scmp.PP_INVALID_HOP_FIELD_MAC
    assert reply.l4.pointer == hop_offset(bad, 1)
    assert (reply.src_ia, reply.dst_ia, str(reply.src_host), str(reply.dst_host)) == (
        IA110,
        IA111,
        R110,
        HOST111[0],
    )
    # The quote is the packet as the router saw it; the reply reaches the host through 111.
    [(link, data, dest)] = sent(inject(dp111, 41, [reply.serialize()], src=(R110, 50001)))
    assert (link, dest) == (0, HOST111)  # the quoted UDP source port
    assert parse(data).l4 == reply.l4


def test_expired_hop() -> None:
    _, dp111, _ = routers()
    old = int(time.time()) - 7 * 3600  # exp_time 63 is about 6 h
    pkt = udp_packet(path_111_to_112(ts=old))
    [(link, data, dest)] = sent(inject(dp111, 0, [pkt]))  # 111 checks its own hop first
    assert dp111.counters["drop.expired_hop"] == 1
    reply = parse(data)
    assert (link, dest) == (0, HOST111)
    assert isinstance(reply.l4, scmp.ParameterProblem) and reply.l4.code == scmp.PP_PATH_EXPIRED
    assert reply.l4.pointer == hop_offset(pkt, 0)


def test_wrong_ingress_interface() -> None:
    dp110, dp111, _ = routers()
    [(_, data, _)] = sent(inject(dp111, 0, [udp_packet(path_111_to_112())]))
    link, reply, dest = _only_error(sent(inject(dp110, 2, [data], src=(R112, 50042))))
    assert dp110.counters["drop.ingress_mismatch"] == 1
    assert (link, dest) == (2, (R112, 50042))
    assert isinstance(reply.l4, scmp.ParameterProblem)
    # against construction direction the arrival interface is the hop's ConsEgress (scionproto)
    assert reply.l4.code == scmp.PP_UNKNOWN_HOP_EGRESS
    assert reply.l4.pointer == hop_offset(data, 1)


def test_truncated_and_garbage_dropped_silently() -> None:
    dp110, dp111, _ = routers()
    good = udp_packet(path_111_to_112())
    [(_, data, _)] = sent(inject(dp111, 0, [good]))
    cut = data[: hop_offset(data, 2)]  # path ends inside the hop fields
    out = inject(dp110, 1, [cut, b"", b"\x00" * 11, data[:40]], src=(R111, 50041))
    assert out == []
    assert dp110.counters["drop.truncated"] == 4
    assert dp110.counters["rx"] == 4 and "forwarded" not in dp110.counters


def test_cut_link_answers_external_interface_down_and_drops_arrivals() -> None:
    dp110, dp111, _ = routers()
    dp110.set_link_up(2, False)
    link, reply, dest = _only_error(to_110(dp111, dp110, udp_packet(path_111_to_112())))
    assert (link, dest) == (1, (R111, 50041))
    assert isinstance(reply.l4, scmp.ExternalInterfaceDown)
    assert (reply.l4.ia, reply.l4.interface) == (IA110, 2)
    assert dp110.counters["drop.egress_down"] == 1
    assert inject(dp110, 2, [b"anything"], src=(R112, 50042)) == []
    assert dp110.counters["drop.link_down"] == 1
    dp110.set_link_up(2, True)
    [(link, _, _)] = to_110(dp111, dp110, udp_packet(path_111_to_112()))
    assert link == 2


def test_echo_to_router_answered_on_reversed_path() -> None:
    dp110, dp111, _ = routers()
    path = path_111_to_110()
    req = ScionPacket(
        dst_ia=IA110,
        src_ia=IA111,
        dst_host=ipaddress.ip_address(R110),
        src_host=ipaddress.ip_address(HOST111[0]),
        l4=scmp.Echo.new(40001, 9, b"ping"),
        path=path,
    ).with_checksum()
    link, reply, dest = _only_error(to_110(dp111, dp110, req.serialize()))
    assert (link, dest) == (1, (R111, 50041))
    assert isinstance(reply.l4, scmp.Echo) and reply.l4.type == scmp.ECHO_REPLY
    assert (reply.l4.identifier, reply.l4.sequence, reply.l4.data) == (40001, 9, b"ping")
    assert isinstance(reply.path, ScionPath)
    assert [(h.cons_ingress, h.cons_egress) for h in reply.path.hop_fields] == [(0, 1), (41, 0)]
    # 111 verifies the reply's hop field (SegID chained back correctly) and hands it to the host
    [(link, data, dest)] = sent(inject(dp111, 41, [reply.serialize()], src=(R110, 50001)))
    assert (link, dest) == (0, (HOST111[0], 40001))  # echo reply: the identifier is the port
    assert parse(data).l4 == reply.l4
    assert dp110.counters["scmp.echo_reply"] == 1


def test_scmp_errors_rate_limited_and_never_about_errors() -> None:
    dp110, dp111, _ = routers(scmp_error_rate=1.0, scmp_error_burst=3.0)
    path = path_111_to_112()
    hops = list(path.hop_fields)
    hops[1] = replace(hops[1], mac=bytes(6))
    bad_path = replace(path, hop_fields=tuple(hops))
    [(_, data, _)] = sent(inject(dp111, 0, [udp_packet(bad_path)]))
    out = sent(inject(dp110, 1, [data] * 10, src=(R111, 50041)))
    assert len(out) == 3
    assert dp110.counters["drop.bad_mac"] == 10 and dp110.counters["scmp.rate_limited"] == 7
    err = ScionPacket(
        dst_ia=IA112,
        src_ia=IA111,
        dst_host=ipaddress.ip_address("127.0.3.2"),
        src_host=ipaddress.ip_address(HOST111[0]),
        l4=scmp.ParameterProblem.new(0, 0, b"q"),
        path=bad_path,
    ).with_checksum()
    [(_, data, _)] = sent(inject(dp111, 0, [err.serialize()]))
    assert TokenBucket(1.0, 1.0).take(0.0)
    dp110._errors = TokenBucket(100.0, 100.0)
    assert sent(inject(dp110, 1, [data], src=(R111, 50041))) == []
    assert dp110.counters["scmp.not_about_errors"] == 1


def test_impairments() -> None:
    dp110, dp111, _ = routers()
    pkts = [udp_packet(path_111_to_112(), payload=bytes([k])) for k in range(50)]
    forwarded = [d for _, d, _ in sent(inject(dp111, 0, pkts))]

    dp110.set_impairment(2, Impairment(loss=1.0))
    assert sent(inject(dp110, 1, forwarded, src=(R111, 50041))) == []
    assert dp110.counters["impair.loss"] == 50

    dp110.set_impairment(2, Impairment(delay_ms=20.0))
    now = time.time()
    assert sent(inject(dp110, 1, forwarded[:5], src=(R111, 50041))) == []
    deadline = dp110.next_deadline()
    assert deadline is not None and now + 0.019 < deadline < time.time() + 0.021
    assert dp110.due(deadline - 0.005) == []
    later = sent(dp110.due(deadline + 0.001))
    assert [parse(d).l4.payload[0] for _, d, _ in later] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    assert {(ln, dst) for ln, _, dst in later} == {(2, (R112, 50042))}

    dp110.set_impairment(2, Impairment(reorder=0.5))
    out = sent(inject(dp110, 1, forwarded, src=(R111, 50041)))
    out += sent(dp110.due(time.time() + 1.0))
    order = [parse(d).l4.payload[0] for _, d, _ in out]  # type: ignore[union-attr]
    assert sorted(order) == list(range(50)) and order != list(range(50))

    dp110.set_impairment(2, Impairment())
    assert len(sent(inject(dp110, 1, forwarded, src=(R111, 50041)))) == 50


def test_loss_share_is_about_the_configured_one() -> None:
    dp110, dp111, _ = routers()
    pkts = [udp_packet(path_111_to_112())] * 64
    forwarded = [d for _, d, _ in sent(inject(dp111, 0, pkts))]
    dp110.set_impairment(2, Impairment(loss=0.25))
    passed = sum(len(sent(inject(dp110, 1, forwarded, src=(R111, 50041)))) for _ in range(40))
    share = 1 - passed / (64 * 40)
    assert 0.21 < share < 0.29, share


def test_impairment_values_checked() -> None:
    for bad in ({"loss": 1.5}, {"reorder": -0.1}, {"delay_ms": -1.0}):
        with pytest.raises(ValueError):
            Impairment(**bad)


def test_delivery_port_rules() -> None:
    from scion_appliance.router.topology import parse as parse_topo

    all_ports = parse_topo({"isd_as": "1-ff00:0:1", "dispatched_ports": "all"})
    some = parse_topo({"isd_as": "1-ff00:0:1", "dispatched_ports": "31000-32767"})

    def pkt(l4: object) -> bytes:
        return ScionPacket(
            dst_ia=IA112,
            src_ia=IA111,
            dst_host=ipaddress.ip_address("127.0.3.2"),
            src_host=ipaddress.ip_address(HOST111[0]),
            l4=l4,  # type: ignore[arg-type]
            path=path_111_to_112(),
        ).serialize()

    udp = pkt(UdpDatagram(1, 7000, 0, b"x"))
    assert delivery_port(udp, len(udp), all_ports) == 7000
    assert delivery_port(udp, len(udp), some) == ENDHOST_PORT
    rep = pkt(scmp.Echo.new(31555, 1, reply=True))
    assert delivery_port(rep, len(rep), some) == 31555
    req = pkt(scmp.Echo.new(31555, 1))
    assert delivery_port(req, len(req), all_ports) == ENDHOST_PORT
    err_udp = pkt(scmp.ParameterProblem.new(0, 0, udp))
    assert delivery_port(err_udp, len(err_udp), all_ports) == 1  # the quoted packet's source port
    err_echo = pkt(scmp.ExternalInterfaceDown.new(IA110, 2, req))
    assert delivery_port(err_echo, len(err_echo), all_ports) == 31555
    err_short = pkt(scmp.ParameterProblem.new(0, 0, udp[:30]))
    assert delivery_port(err_short, len(err_short), all_ports) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=64), st.sampled_from([0, 1, 2]))
def test_any_bytes_are_counted_never_crash(packets: list[bytes], link: int) -> None:
    dp110, _, _ = routers()
    inject(dp110, link, packets, src=(R111, 50041))
    c = dp110.counters
    assert c["rx"] == len(packets)
    fates = ("forwarded", "to_sibling", "delivered", "to_router")
    accounted = sum(v for k, v in c.items() if k.startswith(("drop.", "slow.")) or k in fates)
    assert accounted == len(packets), c


_VALID: list[bytes] = []


def _valid_at_110() -> bytes:
    if not _VALID:
        _, dp111, _ = routers()
        [(_, data, _)] = sent(inject(dp111, 0, [udp_packet(path_111_to_112())]))
        _VALID.append(data)
    return _VALID[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_packets_are_accounted_for(flips: list[tuple[int, int]]) -> None:
    pkt = bytearray(_valid_at_110())
    for pos, value in flips:
        pkt[pos % len(pkt)] = value
    dp110, _, _ = routers()
    out = sent(inject(dp110, 1, [bytes(pkt)], src=(R111, 50041)))
    c = dp110.counters
    # A packet handed to the slow path ends there (answered or dropped): the slow-path count is a stage,
    # and its final fate is what must be unique.
    fates = [k for k in c if k.startswith("drop.") or k in ("forwarded", "delivered", "to_router")]
    fates = fates or [k for k in c if k.startswith("slow.")]
    assert len(fates) == 1 and c[fates[0]] == 1, c
    if fates[0] == "forwarded":
        assert [(ln, dst) for ln, _, dst in out] == [(2, (R112, 50042))]
    drop = fates[0][5:]
    if fates[0].startswith("drop.") and drop in reasons.NAMES:
        code = reasons.NAMES.index(drop)
        if reasons.scmp_for(code, cons_dir=False) is None:
            assert out == []  # silent drops stay silent


def test_traceroute_router_alert_answered() -> None:
    dp110, dp111, _ = routers()
    path = path_111_to_112()
    hops = list(path.hop_fields)
    # 110's up hop field is used against construction direction: its ingress alert is the
    # EgressRouterAlert bit (scionproto ingressRouterAlertFlag)
    hops[1] = replace(hops[1], egress_router_alert=True)
    req = ScionPacket(
        dst_ia=IA112,
        src_ia=IA111,
        dst_host=ipaddress.ip_address("127.0.3.2"),
        src_host=ipaddress.ip_address(HOST111[0]),
        l4=scmp.Traceroute.new(40002, 5),
        path=replace(path, hop_fields=tuple(hops)),
    ).with_checksum()
    link, reply, dest = _only_error(to_110(dp111, dp110, req.serialize()))
    assert (link, dest) == (1, (R111, 50041))
    assert isinstance(reply.l4, scmp.Traceroute) and reply.l4.type == scmp.TRACEROUTE_REPLY
    assert (reply.l4.identifier, reply.l4.sequence, reply.l4.ia, reply.l4.interface) == (40002, 5, IA110, 1)
    assert dp110.counters["slow.router_alert_ingress"] == 1
    [(link, data, dest)] = sent(inject(dp111, 41, [reply.serialize()], src=(R110, 50001)))
    assert (link, dest) == (0, (HOST111[0], 40002))
    assert parse(data).l4 == reply.l4


def test_control_commands() -> None:
    from scion_appliance.router import control

    dp110, _, _ = routers()
    assert control.handle(dp110, {"cmd": "ping"}) == {"ok": True}
    assert control.handle(dp110, {"cmd": "link", "ifid": 2, "up": False}) == {"ok": True}
    assert dp110.links[2].up is False
    assert control.handle(dp110, {"cmd": "impair", "ifid": 1, "loss": 0.5, "delay_ms": 3}) == {"ok": True}
    status = control.handle(dp110, {"cmd": "status"})
    assert status["interfaces"]["1"]["impairment"]["loss"] == 0.5
    assert status["interfaces"]["2"]["up"] is False
    for bad in (
        {"cmd": "impair", "ifid": 1, "loss": 2},
        {"cmd": "link", "ifid": 9, "up": True},
        {"cmd": "link", "ifid": 1, "up": "no"},
        {"cmd": "fly"},
        ["cmd"],
    ):
        answer = control.handle(dp110, bad)
        assert answer["ok"] is False and answer["error"], bad
    assert dp110.links[1].impairment.loss == 0.5  # a refused command changes nothing
    assert "counters" in control.handle(dp110, {"cmd": "counters"})
