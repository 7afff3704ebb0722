"""Router path processing: the reference trace step by step, every drop reason, the interface
table, the batch form, and robustness against arbitrary bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scion_appliance._fast import routerstep as rs
from scion_appliance.router import (
    ExpiredHop,
    IngressMismatch,
    InvalidHopMac,
    MalformedPath,
    MissingIngress,
    RouterAlert,
    RouterDropError,
    TruncatedPacket,
    UnknownEgress,
    UnsupportedPathType,
    process_hop,
    reasons,
)
from scion_appliance.scion.mint import BeaconHop, SegmentSpec, mint_path
from tests.router_trace import (
    KEYS,
    PACKETS,
    TRACE,
    TRACE_NOW,
    ia,
    meta,
    path_bytes,
    path_offset,
    scion_packet,
)

STEPS = list(enumerate(TRACE["steps"]))
EXP_UNIT = 86400 // 256  # pkg/slayers/path/hopfield.go expTimeUnit


def hop_off(pkt: bytes, hf: int) -> int:
    _, _, segs = meta(pkt)
    n_inf = sum(1 for s in segs if s)
    return path_offset(pkt) + 4 + 8 * n_inf + 12 * hf


def info_off(pkt: bytes, inf: int) -> int:
    return path_offset(pkt) + 4 + 8 * inf


def test_trace_has_one_more_packet_than_steps() -> None:
    assert len(PACKETS) == len(TRACE["steps"]) + 1 == 13


@pytest.mark.parametrize(("i", "step"), STEPS, ids=[f"{i}-{k}-{a}" for i, (k, a) in STEPS])
def test_trace_step(i: int, step: list[str]) -> None:
    # Known answer: packet i+1 of the scionproto capture is packet i after this step.
    kind, as_name = step
    out = process_hop(PACKETS[i], KEYS[as_name], ingress=kind == "ingress", now=TRACE_NOW)
    assert path_bytes(out) == path_bytes(PACKETS[i + 1])
    assert out == PACKETS[i + 1]  # nothing else in the packet is touched


@pytest.mark.parametrize(("i", "step"), STEPS, ids=[f"{i}-{k}-{a}" for i, (k, a) in STEPS])
def test_trace_step_fails_under_another_as_key(i: int, step: list[str]) -> None:
    other = next(k for name, k in KEYS.items() if name != step[1])
    with pytest.raises(InvalidHopMac):
        process_hop(PACKETS[i], other, ingress=step[0] == "ingress", now=TRACE_NOW)


def test_default_now_is_the_current_time() -> None:
    # The capture is from December 2021; its hop fields (6 h lifetime) are long expired.
    with pytest.raises(ExpiredHop) as e:
        process_hop(PACKETS[0], KEYS["1-ff00:0:3"], ingress=False)
    assert e.value.reason == "expired_hop"
    assert e.value.scmp == (reasons.SCMP_PARAMETER_PROBLEM, reasons.CODE_PATH_EXPIRED)
    assert e.value.pointer == hop_off(PACKETS[0], 0)


def test_expiry_boundary() -> None:
    ts = int.from_bytes(PACKETS[0][info_off(PACKETS[0], 0) + 4 :][:4], "big")
    expiry = ts + (63 + 1) * EXP_UNIT
    process_hop(PACKETS[0], KEYS["1-ff00:0:3"], ingress=False, now=expiry)  # "expiry before now" only
    with pytest.raises(ExpiredHop):
        process_hop(PACKETS[0], KEYS["1-ff00:0:3"], ingress=False, now=expiry + 0.5)


def test_bad_mac() -> None:
    pkt = bytearray(PACKETS[0])
    pkt[hop_off(pkt, 0) + 11] ^= 1
    with pytest.raises(InvalidHopMac) as e:
        process_hop(bytes(pkt), KEYS["1-ff00:0:3"], ingress=False, now=TRACE_NOW)
    assert e.value.reason == "bad_mac" and isinstance(e.value, RouterDropError)
    assert e.value.scmp == (4, 51)
    assert e.value.pointer == hop_off(pkt, 0)


def test_bad_mac_on_the_segment_after_a_crossover() -> None:
    # Packet 3 enters ff00:0:1 at the end of the up segment; the router checks the core hop too.
    pkt = bytearray(PACKETS[3])
    pkt[hop_off(pkt, 3) + 8] ^= 0x40
    with pytest.raises(InvalidHopMac) as e:
        process_hop(bytes(pkt), KEYS["1-ff00:0:1"], ingress=True, now=TRACE_NOW)
    assert e.value.pointer == hop_off(pkt, 3)


def test_wrong_ingress_interface() -> None:
    # Packet 1 enters ff00:0:2 against construction direction: it arrives on ConsEgress (2).
    assert (
        process_hop(PACKETS[1], KEYS["1-ff00:0:2"], ingress=True, ingress_ifid=2, now=TRACE_NOW) == PACKETS[2]
    )
    with pytest.raises(IngressMismatch) as e:
        process_hop(PACKETS[1], KEYS["1-ff00:0:2"], ingress=True, ingress_ifid=1, now=TRACE_NOW)
    assert e.value.reason == "ingress_mismatch"
    assert e.value.scmp == (4, reasons.CODE_UNKNOWN_HOP_FIELD_EGRESS)  # against cons dir
    # In construction direction (down segment, packet 9 into ff00:0:6) the code is "ingress".
    with pytest.raises(IngressMismatch) as e:
        process_hop(PACKETS[9], KEYS["1-ff00:0:6"], ingress=True, ingress_ifid=9, now=TRACE_NOW)
    assert e.value.scmp == (4, reasons.CODE_UNKNOWN_HOP_FIELD_INGRESS)


@pytest.mark.parametrize("cut", [0, 5, 11, 12, 40, 47, 48, 60, 100, 183])
def test_truncated_packet(cut: int) -> None:
    with pytest.raises((TruncatedPacket, MalformedPath)) as e:
        process_hop(PACKETS[0][:cut], KEYS["1-ff00:0:3"], ingress=False, now=TRACE_NOW)
    assert e.value.reason in {"truncated", "bad_packet_size"}


def test_path_cut_short_by_hdr_len() -> None:
    pkt = bytearray(PACKETS[0])
    pkt[5] -= 3  # HdrLen no longer covers the last hop field; PayloadLen fixed to match
    struct.pack_into(">H", pkt, 6, len(pkt) - pkt[5] * 4)
    with pytest.raises(MalformedPath) as e:
        process_hop(bytes(pkt), KEYS["1-ff00:0:3"], ingress=False, now=TRACE_NOW)
    assert e.value.reason == "malformed_path"


def test_hdr_len_shorter_than_address_header() -> None:
    pkt = bytearray(PACKETS[0])
    pkt[5] = 8
    with pytest.raises(TruncatedPacket) as e:
        process_hop(bytes(pkt), KEYS["1-ff00:0:3"], ingress=False, now=TRACE_NOW)
    assert e.value.reason == "bad_hdr_len"


def test_payload_len_mismatch() -> None:
    pkt = PACKETS[0] + b"x"
    with pytest.raises(TruncatedPacket) as e:
        process_hop(pkt, KEYS["1-ff00:0:3"], ingress=False, now=TRACE_NOW)
    assert e.value.reason == "bad_packet_size" and e.value.scmp == (4, 19) and e.value.pointer == 0


@pytest.mark.parametrize("ptype", [0, 3, 4, 255])
def test_unsupported_path_type(ptype: int) -> None:
    pkt = bytearray(PACKETS[0])
    pkt[8] = ptype
    with pytest.raises(UnsupportedPathType):
        process_hop(bytes(pkt), KEYS["1-ff00:0:3"], ingress=False, now=TRACE_NOW)


def _with_meta(pkt: bytes, curr_inf: int, curr_hf: int, segs: tuple[int, int, int]) -> bytes:
    b = bytearray(pkt)
    m = curr_inf << 30 | curr_hf << 24 | segs[0] << 12 | segs[1] << 6 | segs[2]
    b[path_offset(pkt) : path_offset(pkt) + 4] = m.to_bytes(4, "big")
    return bytes(b)


@pytest.mark.parametrize(
    ("inf", "hf", "segs", "reason"),
    [
        (0, 9, (3, 3, 3), "bad_curr_hf"),
        (0, 63, (3, 3, 3), "bad_curr_hf"),
        (3, 8, (3, 3, 3), "bad_curr_inf"),
        (1, 0, (3, 3, 3), "bad_curr_inf"),  # CurrINF not the segment of CurrHF
        (0, 0, (3, 0, 3), "malformed_path"),  # gap in the segment lengths
        (0, 0, (0, 0, 0), "malformed_path"),
        (0, 0, (1, 4, 4), "malformed_path"),  # singleton segment without peering
        (0, 0, (4, 4, 4), "malformed_path"),  # more hop fields than HdrLen holds
    ],
)
def test_bad_path_meta(inf: int, hf: int, segs: tuple[int, int, int], reason: str) -> None:
    with pytest.raises(MalformedPath) as e:
        process_hop(_with_meta(PACKETS[0], inf, hf, segs), KEYS["1-ff00:0:3"], ingress=False, now=TRACE_NOW)
    assert e.value.reason == reason and e.value.scmp is None  # the reference discards silently


def test_egress_on_the_last_hop_has_nowhere_to_go() -> None:
    with pytest.raises(UnknownEgress):
        process_hop(PACKETS[12], KEYS["1-ff00:0:7"], ingress=False, now=TRACE_NOW)


def test_ingress_router_alert_goes_to_slow_path_with_flag_cleared() -> None:
    pkt = bytearray(PACKETS[1])
    off = hop_off(pkt, 1)
    pkt[off] |= 0x01  # against cons dir, the ingress router's alert is the EgressRouterAlert bit
    with pytest.raises(RouterAlert) as e:
        process_hop(bytes(pkt), KEYS["1-ff00:0:2"], ingress=True, now=TRACE_NOW)
    assert e.value.reason == "router_alert_ingress"
    assert e.value.packet[off] == PACKETS[1][off]
    # The other bit belongs to the egress router: the ingress router forwards as usual.
    pkt[off] = PACKETS[1][off] | 0x02
    out = process_hop(bytes(pkt), KEYS["1-ff00:0:2"], ingress=True, now=TRACE_NOW)
    assert path_bytes(out)[:20] == path_bytes(PACKETS[2])[:20]


def test_egress_router_alert() -> None:
    pkt = bytearray(PACKETS[0])
    pkt[hop_off(pkt, 0)] |= 0x02  # against cons dir, egress alert is IngressRouterAlert
    with pytest.raises(RouterAlert) as e:
        process_hop(bytes(pkt), KEYS["1-ff00:0:3"], ingress=False, now=TRACE_NOW)
    assert e.value.reason == "router_alert_egress" and e.value.egress == 1
    assert e.value.packet == PACKETS[0]


def test_reason_tables_agree_with_c() -> None:
    assert len(reasons.NAMES) == rs.N_REASONS
    assert reasons.name(rs.OK) == "ok" and reasons.name(99) == "reason_99"


# ---- interface table: one router doing both halves, links, siblings, IA checks -------------


def as2_router(*, owned1: bool = True, up1: bool = True, lt2: int = rs.LINK_CHILD) -> rs.RouterStep:
    r = rs.RouterStep(KEYS["1-ff00:0:2"], local_ia=ia("1-ff00:0:2"))
    r.set_interface(1, rs.LINK_PARENT, owned=owned1, up=up1)
    r.set_interface(2, lt2, owned=True)
    return r


def test_one_router_does_both_halves_of_the_trace() -> None:
    # A router owning both of ff00:0:2's links: packet 1 in on interface 2, out on 1 = packet 3.
    buf = bytearray(PACKETS[1])
    code, action, egress, _, flags = as2_router().step(buf, ingress=2, now=TRACE_NOW)
    assert (code, action, egress) == (rs.OK, rs.ACT_FORWARD, 1)
    assert bytes(buf) == PACKETS[3]
    # ff00:0:1 with the segment change: child link 2 in, core link 1 out = packet 5.
    r = rs.RouterStep(KEYS["1-ff00:0:1"], local_ia=ia("1-ff00:0:1"))
    r.set_interface(2, rs.LINK_CHILD, owned=True)
    r.set_interface(1, rs.LINK_CORE, owned=True)
    buf = bytearray(PACKETS[3])
    code, action, egress, _, flags = r.step(buf, ingress=2, now=TRACE_NOW)
    assert (code, action, egress) == (rs.OK, rs.ACT_FORWARD, 1) and flags & rs.F_XOVER
    assert bytes(buf) == PACKETS[5]


def test_sibling_owned_egress_is_handed_on_internally() -> None:
    buf = bytearray(PACKETS[1])
    code, action, egress, _, _ = as2_router(owned1=False).step(buf, ingress=2, now=TRACE_NOW)
    assert (code, action, egress) == (rs.OK, rs.ACT_SIBLING, 1) and bytes(buf) == PACKETS[2]
    # ...and the sibling (owning 1, receiving from the internal side) finishes it: packet 3.
    sib = rs.RouterStep(KEYS["1-ff00:0:2"], local_ia=ia("1-ff00:0:2"))
    sib.set_interface(1, rs.LINK_PARENT, owned=True)
    sib.set_interface(2, rs.LINK_CHILD, owned=False)
    assert sib.step(buf, ingress=0, now=TRACE_NOW)[:3] == (rs.OK, rs.ACT_FORWARD, 1)
    assert bytes(buf) == PACKETS[3]


def test_link_down_and_unknown_egress_and_bad_link_pair() -> None:
    code, *_ = as2_router(up1=False).step(bytearray(PACKETS[1]), ingress=2, now=TRACE_NOW)
    assert reasons.name(code) == "egress_down" and reasons.scmp_for(code, cons_dir=False) == (5, 0)
    code, *_ = as2_router(owned1=False, up1=False).step(bytearray(PACKETS[1]), ingress=2, now=TRACE_NOW)
    assert reasons.name(code) == "sibling_down" and reasons.scmp_for(code, cons_dir=False) == (6, 0)
    r = as2_router()
    r.remove_interface(1)
    assert reasons.name(r.step(bytearray(PACKETS[1]), ingress=2, now=TRACE_NOW)[0]) == "unknown_egress"
    code, *_ = as2_router(lt2=rs.LINK_PEER).step(bytearray(PACKETS[1]), ingress=2, now=TRACE_NOW)
    assert reasons.name(code) == "invalid_link_pair"  # peer -> parent is no valid hop


def test_segment_change_rules() -> None:
    r = rs.RouterStep(KEYS["1-ff00:0:1"], local_ia=ia("1-ff00:0:1"))
    r.set_interface(2, rs.LINK_PARENT, owned=True)  # a segment change may not come from a parent
    r.set_interface(1, rs.LINK_CORE, owned=True)
    code, _, _, pointer, _ = r.step(bytearray(PACKETS[3]), ingress=2, now=TRACE_NOW)
    assert reasons.name(code) == "invalid_segment_change" and pointer == info_off(PACKETS[3], 1)


def test_isd_as_checks() -> None:
    # The capture's address header reads DstIA 0x0003ff0000000007 (3-ff00:0:7), SrcIA 1-ff00:0:3:
    # the checks use the packet's own bytes.
    dst = int.from_bytes(PACKETS[1][12:20], "big")
    src = int.from_bytes(PACKETS[1][20:28], "big")
    assert src == ia("1-ff00:0:3")
    r2 = rs.RouterStep(KEYS["1-ff00:0:2"], local_ia=src)  # pretend we are the source AS
    r2.set_interface(1, rs.LINK_PARENT, owned=True)
    r2.set_interface(2, rs.LINK_CHILD, owned=True)
    code, _, _, pointer, _ = r2.step(bytearray(PACKETS[1]), ingress=2, now=TRACE_NOW)
    assert reasons.name(code) == "invalid_src_ia" and pointer == 20
    r3 = rs.RouterStep(KEYS["1-ff00:0:2"], local_ia=dst)  # "we" are the destination, not at the end
    r3.set_interface(2, rs.LINK_CHILD, owned=True)
    code, _, _, pointer, _ = r3.step(bytearray(PACKETS[1]), ingress=2, now=TRACE_NOW)
    assert reasons.name(code) == "invalid_dst_ia" and pointer == 12
    # The destination AS delivers on its last hop...
    r7 = rs.RouterStep(KEYS["1-ff00:0:7"], local_ia=dst)
    r7.set_interface(1, rs.LINK_PARENT, owned=True)
    buf = bytearray(PACKETS[11])
    assert r7.step(buf, ingress=1, now=TRACE_NOW)[:2] == (rs.OK, rs.ACT_DELIVER)
    assert bytes(buf) == PACKETS[12]
    # ...and any other AS refuses a last hop that is not for it.
    r8 = rs.RouterStep(KEYS["1-ff00:0:7"], local_ia=ia("1-ff00:0:7"))
    r8.set_interface(1, rs.LINK_PARENT, owned=True)
    assert reasons.name(r8.step(bytearray(PACKETS[11]), ingress=1, now=TRACE_NOW)[0]) == "invalid_dst_ia"
    # A packet from the internal side must come from this AS on its first hop.
    r3b = rs.RouterStep(KEYS["1-ff00:0:3"], local_ia=ia("1-ff00:0:4"))
    r3b.set_interface(1, rs.LINK_PARENT, owned=True)
    assert reasons.name(r3b.step(bytearray(PACKETS[0]), ingress=0, now=TRACE_NOW)[0]) == "invalid_src_ia"
    r3c = rs.RouterStep(KEYS["1-ff00:0:3"], local_ia=src)
    r3c.set_interface(1, rs.LINK_PARENT, owned=True)
    buf = bytearray(PACKETS[0])
    assert r3c.step(buf, ingress=0, now=TRACE_NOW)[:3] == (rs.OK, rs.ACT_FORWARD, 1)
    assert bytes(buf) == PACKETS[1]


def test_table_api_checks() -> None:
    r = as2_router()
    assert r.interface(1) == rs.LINK_PARENT | rs.IF_OWNED
    r.set_up(1, False)
    assert r.interface(1) & rs.IF_DOWN
    with pytest.raises(ValueError):
        r.set_up(7, True)
    with pytest.raises(ValueError):
        r.set_interface(0, rs.LINK_CORE, owned=True)
    with pytest.raises(ValueError):
        rs.RouterStep(KEYS["1-ff00:0:2"], mode=rs.MODE_EGRESS_ALL).set_interface(1, rs.LINK_CORE, owned=True)


# ---- OneHop path ---------------------------------------------------------------------------


def test_onehop_path_out_and_in() -> None:
    from scion_appliance._fast.hopmac import HopFieldKey

    ka, kb = bytes(range(16)), bytes(range(16, 32))
    ts, seg = 0x61B399D8, 0x1234
    mac1 = HopFieldKey(ka).hop_mac(seg, ts, 63, 0, 41)
    path = (
        bytes([1, 0])
        + struct.pack(">HI", seg, ts)
        + bytes([0, 63])
        + struct.pack(">HH", 0, 41)
        + mac1
        + bytes(12)
    )
    pkt = scion_packet(path, path_type=2)
    out = process_hop(pkt, ka, ingress=False, now=TRACE_NOW)
    po = path_offset(pkt)
    new_seg = int.from_bytes(out[po + 2 : po + 4], "big")
    assert new_seg == seg ^ int.from_bytes(mac1[:2], "big")
    with pytest.raises(MissingIngress):
        process_hop(out, kb, ingress=True, now=TRACE_NOW)
    got = process_hop(out, kb, ingress=True, ingress_ifid=7, now=TRACE_NOW)
    hop2 = got[po + 20 : po + 32]
    assert hop2[:6] == bytes([0, 63, 0, 7, 0, 0])
    assert HopFieldKey(kb).verify(new_seg, ts, 63, 7, 0, hop2[6:])
    bad = bytearray(pkt)
    bad[po + 8 + 11] ^= 1
    with pytest.raises(InvalidHopMac):
        process_hop(bytes(bad), ka, ingress=False, now=TRACE_NOW)


# ---- batch ---------------------------------------------------------------------------------


def _batch_arrays(n: int) -> dict[str, memoryview]:
    return {
        "reason": memoryview(bytearray(n)),
        "action": memoryview(bytearray(n)),
        "egress": memoryview(bytearray(2 * n)).cast("H"),
        "pointer": memoryview(bytearray(2 * n)).cast("H"),
        "order": memoryview(bytearray(4 * n)).cast("I"),
        "group_off": memoryview(bytearray(4 * (n + 1))).cast("I"),
        "group_key": memoryview(bytearray(4 * n)).cast("I"),
    }


def run_batch(
    r: rs.RouterStep, pkts: list[bytes], stride: int, ingress: int
) -> tuple[bytearray, dict, int, int]:
    n = len(pkts)
    buf = bytearray(n * stride)
    lens = memoryview(bytearray(4 * n)).cast("I")
    for i, p in enumerate(pkts):
        buf[i * stride : i * stride + min(len(p), stride)] = p[:stride]
        lens[i] = len(p)
    a = _batch_arrays(n)
    n_ok, groups = r.batch(buf, lens, n, stride, ingress, TRACE_NOW, **a)
    return buf, a, n_ok, groups


def fanout_router() -> tuple[rs.RouterStep, list[bytes]]:
    """A core AS (key kc) with core links 1..4 receiving, in construction direction, minted
    two-AS paths that leave on each of its links: distinct egress groups in one batch."""
    kc, kn = bytes([7] * 16), bytes([9] * 16)
    r = rs.RouterStep(kc, mode=rs.MODE_TABLE)
    for i in range(1, 6):
        r.set_interface(i, rs.LINK_CORE, owned=i != 4)  # interface 4 belongs to a sibling
    pkts = {}
    for eg in range(1, 5):
        seg = SegmentSpec(
            (BeaconHop(0, 5, kn), BeaconHop(5, eg, kc), BeaconHop(eg, 0, kn)), 0x61B399D8, 0x4242, True
        )
        p = scion_packet(mint_path([seg]))
        pkts[eg] = process_hop(p, kn, ingress=False, now=TRACE_NOW)  # now at the core AS's hop
    return r, [pkts[1], pkts[2], pkts[3], pkts[4]]


def test_batch_groups_by_egress_and_matches_single_steps() -> None:
    r, by_egress = fanout_router()
    bad = bytearray(by_egress[0])
    bad[-9] ^= 0xFF  # payload byte: still OK
    badmac = bytearray(by_egress[1])
    badmac[hop_off(badmac, 1) + 6] ^= 1
    pkts = [
        by_egress[2],
        by_egress[0],
        b"\x00" * 7,
        by_egress[3],
        bytes(badmac),
        by_egress[0],
        by_egress[2],
        bytes(bad),
    ]
    buf, a, n_ok, groups = run_batch(r, pkts, 256, 5)
    names = [reasons.name(x) for x in a["reason"]]
    assert names == ["ok", "ok", "truncated", "ok", "bad_mac", "ok", "ok", "ok"]
    assert n_ok == 6 and groups == 3
    keys = [a["group_key"][g] for g in range(groups)]
    assert keys == [rs.ACT_FORWARD << 16 | 1, rs.ACT_FORWARD << 16 | 3, rs.ACT_SIBLING << 16 | 4]
    members = [list(a["order"][a["group_off"][g] : a["group_off"][g + 1]]) for g in range(groups)]
    assert members == [[1, 5, 7], [0, 6], [3]]  # stable within a group
    assert a["group_off"][groups] == n_ok
    for i, p in enumerate(pkts):  # the batch does exactly what single steps do
        single = bytearray(p)
        code, action, egress, pointer, _ = r.step(single, ingress=5, now=TRACE_NOW)
        assert (code, action, egress, pointer) == (
            a["reason"][i],
            a["action"][i],
            a["egress"][i],
            a["pointer"][i],
        )
        if len(p) <= 256:
            assert buf[i * 256 : i * 256 + len(p)] == single


def test_batch_length_beyond_stride_is_truncated_not_read() -> None:
    r, pk = fanout_router()
    _, a, n_ok, _ = run_batch(r, [pk[0], pk[0] + bytes(200)], 128, 5)
    assert [reasons.name(x) for x in a["reason"]] == ["ok", "truncated"] and n_ok == 1


def test_batch_argument_checks() -> None:
    r, _ = fanout_router()
    a = _batch_arrays(2)
    lens = memoryview(bytearray(8)).cast("I")
    with pytest.raises(ValueError):
        r.batch(bytearray(100), lens, 2, 256, 5, TRACE_NOW, **a)
    assert r.batch(bytearray(0), lens, 0, 256, 5, TRACE_NOW, **a) == (0, 0)


# ---- robustness ----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), ingress=st.booleans())
def test_random_bytes_never_crash(data: bytes, ingress: bool) -> None:
    try:
        out = process_hop(data, KEYS["1-ff00:0:2"], ingress=ingress, ingress_ifid=3, now=TRACE_NOW)
    except RouterDropError as e:
        assert e.reason in reasons.NAMES
    else:
        assert len(out) == len(data)


@settings(max_examples=400, deadline=None)
@given(
    idx=st.integers(0, 11),
    cut=st.integers(0, 184),
    flips=st.lists(st.tuples(st.integers(0, 183), st.integers(1, 255)), max_size=4),
)
def test_mutated_trace_packets_never_crash(idx: int, cut: int, flips: list[tuple[int, int]]) -> None:
    kind, as_name = TRACE["steps"][idx]
    pkt = bytearray(PACKETS[idx])
    for pos, x in flips:
        pkt[pos] ^= x
    try:
        out = process_hop(bytes(pkt[:cut]), KEYS[as_name], ingress=kind == "ingress", now=TRACE_NOW)
    except RouterDropError as e:
        assert e.reason in reasons.NAMES
    else:
        assert len(out) == cut


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=16))
def test_batch_of_garbage_never_crashes_and_agrees_with_step(pkts: list[bytes]) -> None:
    r = as2_router()
    _, a, n_ok, _ = run_batch(r, pkts, 160, 2)
    assert n_ok == sum(1 for x in a["reason"] if x == rs.OK)
    assert sorted(a["order"][:n_ok]) == [i for i in range(len(pkts)) if a["reason"][i] == rs.OK]
    for i, p in enumerate(pkts):
        if len(p) <= 160:
            assert a["reason"][i] == r.step(bytearray(p), ingress=2, now=TRACE_NOW)[0]
