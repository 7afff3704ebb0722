"""Router path processing: the reference trace step by step, every drop reason, the interface
table, the batch form, and robustness against arbitrary bytes."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scion_appliance._fast import codec
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
from tests import strategies
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


def test_batch_slot_shorter_than_a_consistent_packet_is_truncated() -> None:
    # The lengths inside the packet agree with lens[i], but the slot holds only its header.
    r, pk = fanout_router()
    stride = pk[0][5] * 4 + 4
    _, a, n_ok, _ = run_batch(r, [pk[0], pk[0]], stride, 5)
    assert [reasons.name(x) for x in a["reason"]] == ["truncated", "truncated"] and n_ok == 0


def test_batch_argument_checks() -> None:
    r, _ = fanout_router()
    a = _batch_arrays(2)
    lens = memoryview(bytearray(8)).cast("I")
    with pytest.raises(ValueError):
        r.batch(bytearray(100), lens, 2, 256, 5, TRACE_NOW, **a)
    assert r.batch(bytearray(0), lens, 0, 256, 5, TRACE_NOW, **a) == (0, 0)
    buf = bytearray(2 * 256)
    with pytest.raises(ValueError, match="egress: items must be 'H'"):
        r.batch(buf, lens, 2, 256, 5, TRACE_NOW, **{**a, "egress": memoryview(bytearray(8)).cast("I")})
    with pytest.raises(ValueError, match="lens: items must be 'I'"):
        r.batch(buf, memoryview(bytearray(8)).cast("H"), 2, 256, 5, TRACE_NOW, **a)
    with pytest.raises(ValueError, match="buf: "):
        r.batch(bytes(buf), lens, 2, 256, 5, TRACE_NOW, **a)  # read-only
    with pytest.raises(ValueError, match="group_off holds 2 entries, 3 needed"):
        r.batch(buf, lens, 2, 256, 5, TRACE_NOW, **{**a, "group_off": memoryview(bytearray(8)).cast("I")})
    with pytest.raises(TypeError):
        r.batch(buf, [0, 0], 2, 256, 5, TRACE_NOW, **a)  # not a buffer
    assert r.batch(buf, memoryview(bytes(8)).cast("I"), 2, 256, 5, TRACE_NOW, **a) == (0, 0)  # read-only lens


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


# ---- the batch fast path against the reference step ----------------------------------------
# rs_batch decides common packets on a fast path that may only accept what the reference
# (stage1/stage2, which rs_step runs) accepts, writing the same bytes; anything else goes to the
# reference.  These compare the two on valid packets of every shape under random router
# configurations, and on packets mutated where the MAC does not cover them.

DELIVERED: list[int] = []  # parse status of every delivered packet whose record was compared
KF = bytes(range(100, 116))  # one key for every hop of the minted paths: any router verifies them
IA_SRC, IA_DST = ia("1-ff00:0:110"), ia("2-ff00:0:220")
NOWS = [TRACE_NOW, 0x61B399D8 + 10 * EXP_UNIT, 0x61B399D8 + 64 * EXP_UNIT + 1, 0x61B399D8 + 300 * EXP_UNIT]


def _hops(pairs: list[tuple[int, int]], peer_at: int = -1) -> tuple[BeaconHop, ...]:
    # Expiry times differ hop by hop so that the sampled `now`s expire some and not others.
    return tuple(
        BeaconHop(i, e, KF, exp_time=(0, 9, 63, 255)[k % 4], peer_ingress=4 if k == peer_at else 0)
        for k, (i, e) in enumerate(pairs)
    )


def _walk(pkt: bytes, limit: int) -> list[bytes]:
    """Every state of `pkt` along its path (egress, ingress, egress, ...) until a drop."""
    states, cur, ingress = [pkt], pkt, False
    for _ in range(limit):
        try:
            cur = process_hop(cur, KF, ingress=ingress, now=0x61B399D8)
        except RouterDropError:
            break
        states.append(cur)
        ingress = not ingress
    return states


def _cons_segment(pairs: list[tuple[int, int]], seed: int, at: int = 0) -> tuple[Any, list[Any]]:
    """A segment in construction direction minted hop by hop, without the minting rules (so
    singleton segments can be made): its info field carries the SegID as it is at hop `at`."""
    from scion_appliance._fast.hopmac import HopFieldKey
    from scion_appliance.scion.path import HopField, InfoField

    ts, beta, hops, seg_id = 0x61B399D8, seed, [], seed
    for k, (i, e) in enumerate(pairs):
        exp = (0, 9, 63, 255)[k % 4]
        mac = HopFieldKey(KF).hop_mac(beta, ts, exp, i, e)
        hops.append(HopField(False, False, exp, i, e, mac))
        seg_id = beta if k == at else seg_id
        beta ^= int.from_bytes(mac[:2], "big")
    return InfoField(True, False, seg_id, ts), hops


def _raw_path(segments: list[tuple[Any, list[Any]]], curr_inf: int, curr_hf: int) -> bytes:
    from scion_appliance.scion.path import ScionPath

    return ScionPath.build(segments, curr_inf=curr_inf, curr_hf=curr_hf).to_bytes()


def _fast_path_corpus() -> list[tuple[bytes, bytes]]:
    ts = 0x61B399D8
    up = SegmentSpec(_hops([(0, 1), (2, 3), (4, 1)]), ts, 0x1111, False)
    core = SegmentSpec(_hops([(0, 3), (2, 1)]), ts + 6, 0x2222, False)
    core_cons = SegmentSpec(_hops([(0, 3), (2, 1)]), ts + 6, 0x2323, True)
    down = SegmentSpec(_hops([(0, 2), (1, 3), (4, 0)]), ts, 0x3333, True)
    open_end = SegmentSpec(_hops([(0, 2), (1, 3), (4, 1)]), ts, 0x3434, True)  # last hop has an egress
    shapes = [
        [down],
        [up],
        [open_end],
        [up, down],
        [core_cons, down],
        [up, core, down],
        [SegmentSpec(_hops([(0, 1), (2, 3), (1, 2)], peer_at=1), ts, 0x4444, False, peer=True, start=1),
         SegmentSpec(_hops([(0, 2), (3, 1), (1, 0)], peer_at=1), ts, 0x5555, True, peer=True, start=1)],
    ]  # fmt: skip
    out = [(p, KEYS[TRACE["steps"][i][1]]) for i, p in enumerate(PACKETS[:12])]
    paths = [mint_path(segs) for segs in shapes]
    # Singleton segments (valid only on peering paths): refused, with good MACs.
    paths.append(_raw_path([_cons_segment([(0, 1), (2, 3)], 1), _cons_segment([(4, 1)], 2)], 0, 0))
    paths.append(
        _raw_path([_cons_segment([(0, 1), (2, 3)], 1), _cons_segment([(4, 1), (2, 3)], 2),
                   _cons_segment([(4, 0)], 3)], 0, 0)
    )  # fmt: skip
    # 79 hops, the walk starting at hop 60 of the third segment: CurrHF reaches 63, where the
    # reference writes it back in 6 bits (with CurrINF 2, so a missing mask would show).
    long_segs = [
        _cons_segment([(1, 2)] * 22, 5),
        _cons_segment([(1, 2)] * 22, 6),
        _cons_segment([(1, 2)] * 34 + [(1, 0)], 7, at=16),
    ]
    paths.append(_raw_path(long_segs, 2, 60))
    for path in paths:
        pkt = scion_packet(path, dst_ia=IA_DST, src_ia=IA_SRC)
        out += [(s, KF) for s in _walk(pkt, 16)]
    return out


FAST_CORPUS = _fast_path_corpus()


def _unmaced_offsets(pkt: bytes) -> list[int]:
    """Header bytes outside every MAC input: common and address header, meta header, info-field
    flags and reserved byte, hop-field router-alert flags."""
    po = path_offset(pkt)
    offs = list(range(28)) + list(range(po, po + 4))
    if len(pkt) >= po + 4:
        _, _, segs = meta(pkt)
        n_inf = sum(1 for s in segs if s)
        offs += [po + 4 + 8 * k + d for k in range(n_inf) for d in (0, 1)]
        offs += [po + 4 + 8 * n_inf + 12 * k for k in range(sum(segs))]
    return [o for o in offs if o < len(pkt)]


def _batch_vs_steps(r: rs.RouterStep, pkts: list[bytes], ingress: int, now: int) -> list[int]:
    stride = 1100
    n = len(pkts)
    buf = bytearray(n * stride)
    lens = memoryview(bytearray(4 * n)).cast("I")
    for i, p in enumerate(pkts):
        buf[i * stride : i * stride + len(p)] = p
        lens[i] = len(p)
    a = _batch_arrays(n)
    recs = codec.ScionRecords(n)
    n_ok, groups = r.batch(buf, lens, n, stride, ingress, now, **a, recs=recs)
    codes = []
    for i, p in enumerate(pkts):
        single = bytearray(p)
        code, action, egress, pointer, _ = r.step(single, ingress=ingress, now=now)
        got = (a["reason"][i], a["action"][i], a["egress"][i], a["pointer"][i])
        assert got == (code, action, egress, pointer), (
            f"packet {i}: batch {got}, step {code, action, egress, pointer}"
        )
        assert buf[i * stride : i * stride + len(p)] == single, f"packet {i}: bytes differ from the step's"
        if code == rs.OK and action == rs.ACT_DELIVER:
            # Known answer: the independent parser (csrc/scion_parse.c) on the bytes as delivered.
            assert recs.get(i) == codec.parse_record(bytes(single)), f"packet {i}: record differs"
            DELIVERED.append(recs.get(i)["status"])
        codes.append(code)
    ok = [i for i in range(n) if codes[i] == rs.OK]
    assert n_ok == len(ok)
    keys = sorted({a["action"][i] << 16 | a["egress"][i] for i in ok})
    assert [a["group_key"][g] for g in range(groups)] == keys
    for g, key in enumerate(keys):
        members = list(a["order"][a["group_off"][g] : a["group_off"][g + 1]])
        assert members == [i for i in ok if a["action"][i] << 16 | a["egress"][i] == key]
    return codes


def test_batch_fast_path_corpus_is_forwarded_like_single_steps() -> None:
    # Every corpus state under a router that takes it (the step kind the walk gave it): the
    # batch accepts what the step accepts, with the same bytes; the corpus is mostly accepted,
    # so the fast path's acceptances, not only its refusals, are what is compared.
    accepted = 0
    for mode in (rs.MODE_INGRESS_ONLY, rs.MODE_EGRESS_ALL):
        for key in {k for _, k in FAST_CORPUS}:
            pkts = [p for p, k in FAST_CORPUS if k == key]
            r = rs.RouterStep(key, mode=mode)
            codes = _batch_vs_steps(r, pkts, 0, 0x61B399D8)
            accepted += codes.count(rs.OK)
    assert accepted >= len(FAST_CORPUS) * 2 // 3


def test_batch_fast_path_corpus_in_table_mode() -> None:
    # Table mode over link-type assignments of interfaces 1..4 (all owned; 4 a sibling's in
    # half of them): plain hops and segment changes forwarded, handed to siblings, refused.
    seen: set[tuple[int, int]] = set()
    by_key: dict[bytes, list[bytes]] = {}
    for p, k in FAST_CORPUS:
        by_key.setdefault(k, []).append(p)
    for n, lts in enumerate(itertools.product((rs.LINK_CORE, rs.LINK_CHILD, rs.LINK_PARENT), repeat=3)):
        for key, pkts in by_key.items():
            r = rs.RouterStep(key, mode=rs.MODE_TABLE)
            for ifid, lt in enumerate((*lts, rs.LINK_CHILD), start=1):
                r.set_interface(ifid, lt, owned=ifid != 4 or n % 2 == 0)
            for ingress in range(5):
                codes = _batch_vs_steps(r, pkts, ingress, 0x61B399D8)
                for p, c in zip(pkts, codes, strict=True):
                    if c == rs.OK:
                        _, action, _, _, flags = r.step(bytearray(p), ingress=ingress, now=0x61B399D8)
                        seen.add((action, flags & rs.F_XOVER))
    # (action, flags) pairs: forwarded plain, forwarded after a segment change, to a sibling.
    assert {(rs.ACT_FORWARD, 0), (rs.ACT_FORWARD, rs.F_XOVER), (rs.ACT_SIBLING, 0)} <= seen


def _variants(pkt: bytes) -> list[bytes]:
    """Single edits of `pkt` where the checks look: every header byte (flips of low and high
    bits), the meta header, the info fields, the hop fields around CurrHF (MAC, alert flags,
    interfaces, expiry), and the path cut short by HdrLen (down to less than the address
    header) with the lengths kept consistent."""
    po = path_offset(pkt)
    _, hf, segs = meta(pkt)
    n_inf, n_hops = sum(1 for x in segs if x), sum(segs)
    hops_at = po + 4 + 8 * n_inf
    edits = [(o, x) for o in range(po + 4) for x in (0x01, 0x02, 0x40, 0x80)]
    edits += [(po + 4 + 8 * k + d, x) for k in range(n_inf) for d in range(8) for x in (0x01, 0x02, 0x80)]
    near = range(max(0, hf - 1), min(n_hops, hf + 3))
    edits += [(hops_at + 12 * k + d, x) for k in near for d in range(12) for x in (0x01, 0x02)]
    out = []
    for o, x in edits:
        v = bytearray(pkt)
        v[o] ^= x
        out.append(bytes(v))
    for k in (1, 2, 3, pkt[5] - 8):
        v = bytearray(pkt)
        v[5] -= k
        v[6:8] = (int.from_bytes(v[6:8], "big") + 4 * k).to_bytes(2, "big")
        out.append(bytes(v))
    return out


def _configs() -> list[tuple[int, int, int, int, tuple[tuple[int, bool, bool], ...]]]:
    """(mode, ingress, local ISD-AS, now, table of interfaces 1..4 as (link type, owned, up))."""
    c, p, k, e = rs.LINK_CORE, rs.LINK_PARENT, rs.LINK_CHILD, rs.LINK_PEER
    tables = [
        ((c, True, True), (c, True, True), (c, True, True), (c, False, True)),
        ((p, True, True), (k, True, True), (c, True, True), (e, True, True)),
        ((k, True, True), (p, True, True), (k, True, False), (c, False, True)),
        ((c, True, True), (k, False, False), (p, True, True), (k, True, True)),
    ]
    trace_ias = {int.from_bytes(q[o : o + 8], "big") for q in PACKETS for o in (12, 20)}
    locals_ = [0, IA_SRC, IA_DST, ia("1-ff00:0:999"), *sorted(trace_ias)]
    shapes: list[tuple[int, int, tuple[tuple[int, bool, bool], ...]]] = [
        (rs.MODE_INGRESS_ONLY, 0, ()),
        (rs.MODE_INGRESS_ONLY, 2, ()),
        (rs.MODE_EGRESS_ALL, 0, ()),
    ]
    shapes += [(rs.MODE_TABLE, ing, t) for t in tables for ing in (0, 1, 2, 3, 4)]
    return [(m, ing, loc, now, t) for m, ing, t in shapes for loc in locals_ for now in NOWS]


def test_batch_matches_steps_on_systematic_variants() -> None:
    # Originals under every configuration; each single-edit variant under one of them.
    configs = _configs()
    work: dict[tuple[int, bytes], list[bytes]] = {}
    for s_i, (pkt, key) in enumerate(FAST_CORPUS):
        for c_i in range(len(configs)):
            work.setdefault((c_i, key), []).append(pkt)
        for v_i, v in enumerate(_variants(pkt)):
            # Right after its original: whatever the batch remembers of the original's headers
            # must not carry over to the variant.
            work.setdefault(((s_i * 7 + v_i) % len(configs), key), []).extend((pkt, v))
    codes: set[int] = set()
    for (c_i, key), pkts in work.items():
        mode, ingress, local, now, table = configs[c_i]
        r = rs.RouterStep(key, mode=mode, local_ia=local)
        for ifid, (lt, owned, up) in enumerate(table, start=1):
            r.set_interface(ifid, lt, owned=owned, up=up)
        codes.update(_batch_vs_steps(r, pkts, ingress, now))
    # The comparison met every outcome the fast path has to get exactly right or refuse.
    assert set(range(rs.N_REASONS)) - codes <= {reasons.NO_INGRESS_IF}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255), st.booleans()), max_size=2),
        ),
        min_size=1,
        max_size=24,
    ),
    mode=st.sampled_from([rs.MODE_TABLE, rs.MODE_TABLE, rs.MODE_INGRESS_ONLY, rs.MODE_EGRESS_ALL]),
    ia_pick=st.integers(0, 3),
    links=st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.booleans()), min_size=4, max_size=4),
    ingress=st.integers(0, 4),
    now=st.sampled_from(NOWS),
)
def test_batch_agrees_with_single_steps_under_any_configuration(
    picks: list[tuple[int, list[tuple[int, int, bool]]]],
    mode: int,
    ia_pick: int,
    links: list[tuple[int, bool, bool]],
    ingress: int,
    now: int,
) -> None:
    pkts = []
    for pick, edits in picks:
        pkt = bytearray(FAST_CORPUS[pick % len(FAST_CORPUS)][0])
        for where, x, anywhere in edits:
            offs = range(len(pkt)) if anywhere else _unmaced_offsets(bytes(pkt))
            pkt[offs[where % len(offs)]] ^= x
        pkts.append(bytes(pkt))
    key = FAST_CORPUS[picks[0][0] % len(FAST_CORPUS)][1]
    first = pkts[0]
    local = [0, int.from_bytes(first[12:20], "big"), int.from_bytes(first[20:28], "big"), ia("1-ff00:0:999")]
    r = rs.RouterStep(key, mode=mode, local_ia=local[ia_pick])
    if mode == rs.MODE_TABLE:
        for ifid, (lt, owned, up) in enumerate(links, start=1):
            if lt:
                r.set_interface(ifid, lt, owned=owned, up=up)
    _batch_vs_steps(r, pkts, ingress, now)


# ---- the parse record of delivered packets ---------------------------------------------------
# With ``recs``, the batch writes the parse record of each packet it delivers, for a receiver in
# the same process (the gateway) that then skips its own parse.  Known answer: codec.parse_record,
# the independent parser (csrc/scion_parse.c), on the bytes as the step leaves them.


def _with_udp(pkt: bytes, data: bytes, *, sport: int = 40000, dport: int = 30041) -> bytes:
    """`pkt` with its payload replaced by a UDP datagram (outside every MAC: the step's verdict
    on the packet stays the same)."""
    hdr = pkt[5] * 4
    l4 = struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data
    return pkt[:6] + struct.pack(">H", len(l4)) + pkt[8:hdr] + l4


def test_batch_records_of_delivered_packets_equal_the_parsers() -> None:
    # Every corpus state carrying UDP, in ingress-only mode (the last hop delivers) and in table
    # mode with the destination AS local: each delivered packet's record is the parser's.
    del DELIVERED[:]
    keys = {k for _, k in FAST_CORPUS}
    for key in keys:
        pkts = [_with_udp(p, bytes(range(i % 50))) for i, (p, k) in enumerate(FAST_CORPUS) if k == key]
        _batch_vs_steps(rs.RouterStep(key, mode=rs.MODE_INGRESS_ONLY), pkts, 0, 0x61B399D8)
        for local in {int.from_bytes(p[12:20], "big") for p in pkts}:
            r = rs.RouterStep(key, mode=rs.MODE_TABLE, local_ia=local)
            for ifid in range(1, 5):
                r.set_interface(ifid, rs.LINK_CHILD if ifid % 2 else rs.LINK_PARENT, owned=True)
            for ingress in range(5):
                _batch_vs_steps(r, pkts, ingress, 0x61B399D8)
    # Delivered in numbers, all valid UDP: the records the step builds itself, not the parser's.
    assert len(DELIVERED) >= 20 and set(DELIVERED) == {0}


def test_batch_record_of_a_delivered_onehop_packet() -> None:
    from scion_appliance._fast.hopmac import HopFieldKey

    ka, kb = bytes(range(16)), bytes(range(16, 32))
    ts, seg = 0x61B399D8, 0x1234
    mac1 = HopFieldKey(ka).hop_mac(seg, ts, 63, 0, 41)
    path = bytes([1, 0]) + struct.pack(">HI", seg, ts) + bytes([0, 63, 0, 0, 0, 41]) + mac1 + bytes(12)
    out = process_hop(
        _with_udp(scion_packet(path, path_type=2), b"one hop"), ka, ingress=False, now=TRACE_NOW
    )
    r = rs.RouterStep(kb, mode=rs.MODE_TABLE)
    r.set_interface(7, rs.LINK_CHILD, owned=True)
    del DELIVERED[:]
    assert _batch_vs_steps(r, [out, out[:-1] + b"\x00"], 7, TRACE_NOW) == [rs.OK, rs.OK]
    assert DELIVERED == [0, 0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pkt=strategies.packets,
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3),
    cut=st.integers(0, 10**6) | st.none(),
)
def test_delivered_record_equals_the_parsers_on_any_packet(
    pkt: Any, edits: list[tuple[int, int]], cut: int | None
) -> None:
    # The record function alone, on valid packets of every kind (paths, hosts, extensions, UDP,
    # SCMP, raw upper layers) and on edited or cut ones: whatever the bytes, the parser's record.
    raw = bytearray(pkt.serialize())
    for where, x in edits:
        raw[where % len(raw)] ^= x
    if cut is not None:
        raw = raw[: cut % (len(raw) + 1)]
    recs = codec.ScionRecords(1)
    rs.deliver_record(bytes(raw), recs)
    assert recs.get(0) == codec.parse_record(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=120))
def test_delivered_record_equals_the_parsers_on_any_bytes(data: bytes) -> None:
    recs = codec.ScionRecords(1)
    rs.deliver_record(data, recs)
    assert recs.get(0) == codec.parse_record(data)


def test_take_slots_copies_packets_lengths_addresses_and_records() -> None:
    from scion_appliance._fast import udpio

    pkts = [_with_udp(p, bytes([i]) * (10 + i)) for i, p in enumerate(PACKETS[:4])]
    n, stride = len(pkts), 512
    buf, lens, addrs, recs = (
        bytearray(n * stride),
        memoryview(bytearray(4 * n)).cast("I"),
        udpio.new_addrs(n),
        codec.ScionRecords(n),
    )
    for i, p in enumerate(pkts):
        buf[i * stride : i * stride + len(p)] = p
        lens[i] = len(p)
        udpio.addr_set(addrs, i, "127.0.0.1", 1000 + i)
        rs.deliver_record(p, recs, i)
    slots = memoryview(bytearray(4 * 2)).cast("I")
    slots[0], slots[1] = 3, 1
    dst = bytearray(4 * 1024)
    dlens, daddrs, drecs = memoryview(bytearray(16)).cast("I"), udpio.new_addrs(4), codec.ScionRecords(4)
    assert rs.take_slots(buf, stride, lens, addrs, recs, slots, 2, dst, 1024, dlens, daddrs, drecs) == 2
    assert drecs.count == 2
    for k, i in enumerate((3, 1)):
        assert dst[k * 1024 : k * 1024 + dlens[k]] == pkts[i]
        assert udpio.addr_get(daddrs, k) == ("127.0.0.1", 1000 + i)
        assert drecs.get(k) == codec.parse_record(pkts[i]) and drecs.get(k)["status"] == 0
    slots[0] = 9
    with pytest.raises(ValueError, match="outside"):
        rs.take_slots(buf, stride, lens, addrs, recs, slots, 2, dst, 1024, dlens, daddrs, drecs)
    # A packet longer than the receiving slot is left out (the caller counts it), the others
    # move up in order.
    slots[0] = 0
    small = len(pkts[0])  # slot 0 fits exactly, slot 1 (one byte longer) does not
    assert rs.take_slots(buf, stride, lens, addrs, recs, slots, 2, dst, small, dlens, daddrs, drecs) == 1
    assert dst[: dlens[0]] == pkts[0] and drecs.count == 1
