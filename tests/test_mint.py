"""Path minting and reversal: the reference trace's path re-minted from its hops, keys and seeds;
minted paths (plain, shortcut, peering) walked through the router there and back."""

from __future__ import annotations

import pytest

from scion_appliance.router import InvalidHopMac
from scion_appliance.scion.mint import BeaconHop, MintError, SegmentSpec, mint_path, reverse_path
from scion_appliance.scion.path import ScionPath
from tests.router_trace import (
    KEYS,
    PACKETS,
    TRACE,
    TRACE_NOW,
    meta,
    path_bytes,
    path_offset,
    scion_packet,
    walk,
)

# trace.json path_construction: the ASes owning the hop fields of packet 0, in path order, and
# the per-segment SegID seeds.
PATH_ORDER = ["1-ff00:0:" + n for n in "321145567"]
SEEDS = [0x9D53, 0x6991, 0x4073]
TS = 0x61B399D8


def trace_segments() -> list[SegmentSpec]:
    sp = ScionPath.from_bytes(path_bytes(PACKETS[0]))
    segs, k = [], 0
    for si, info in enumerate(sp.info_fields):
        n = sp.meta.seg_len[si]
        hops = [
            BeaconHop(h.cons_ingress, h.cons_egress, KEYS[PATH_ORDER[k + j]], h.exp_time)
            for j, h in enumerate(sp.hop_fields[k : k + n])
        ]
        k += n
        if not info.cons_dir:
            hops.reverse()  # beacons list entries in construction order
        segs.append(SegmentSpec(tuple(hops), info.timestamp, SEEDS[si], info.cons_dir))
    return segs


def test_path_construction_note_is_what_we_read() -> None:
    assert "9d53, 6991, 4073" in TRACE["path_construction"]


def test_minting_the_trace_path_gives_packet_0() -> None:
    # Known answer: packet 0 of the scionproto capture (MACs and SegIDs made by its beaconing).
    assert mint_path(trace_segments()) == path_bytes(PACKETS[0])


def test_minted_seed_shows_up_where_the_routers_chain_back_to_it() -> None:
    # Against construction direction the routers chain the SegID back to the seed: after the up
    # segment (packet 4, in ff00:0:1) the first info field holds 9d53.
    po = path_offset(PACKETS[4])
    assert PACKETS[4][po + 6 : po + 8] == bytes.fromhex("9d53")


def test_minted_trace_path_walks_to_the_end() -> None:
    keys = [KEYS[a] for a in PATH_ORDER]
    pkt = scion_packet(mint_path(trace_segments()))
    states = walk(pkt, keys, TRACE_NOW)
    assert [path_bytes(s) for s in states] == [path_bytes(p) for p in PACKETS[1:]]


def _keys(n: int, base: int) -> list[bytes]:
    return [bytes([base + i] * 16) for i in range(n)]


def test_reply_on_the_reversed_path() -> None:
    # At the destination, the reversed path (scionproto Reverse) carries the reply back.
    keys = [KEYS[a] for a in PATH_ORDER]
    end = walk(scion_packet(mint_path(trace_segments())), keys, TRACE_NOW)[-1]
    po = path_offset(end)
    back = end[:po] + reverse_path(path_bytes(end)) + end[end[5] * 4 :]
    assert meta(back)[:2] == (0, 0)
    states = walk(back, keys[::-1], TRACE_NOW)
    assert meta(states[-1])[1] == 8


def test_shortcut_and_peering_paths_walk_both_ways() -> None:
    ts = TS
    ka, kb, kc, kd, ke, kf = _keys(6, 0x10)
    # Up beacon from core A: A -> B -> C (C is the leaf); down beacon from core D: D -> E -> F.
    # B and E peer over B#7 <-> E#8.
    up = (BeaconHop(0, 1, ka), BeaconHop(2, 3, kb, peer_ingress=7), BeaconHop(4, 0, kc))
    down = (BeaconHop(0, 1, kd), BeaconHop(2, 3, ke, peer_ingress=8), BeaconHop(4, 0, kf))
    peering = [
        SegmentSpec(up, ts, 0x1111, False, peer=True, start=1),
        SegmentSpec(down, ts, 0x2222, True, peer=True, start=1),
    ]
    path = mint_path(peering)
    sp = ScionPath.from_bytes(path)
    assert sp.meta.seg_len == (2, 2, 0)
    assert (sp.hop_fields[1].cons_ingress, sp.hop_fields[2].cons_ingress) == (7, 8)
    hop_keys = [kc, kb, ke, kf]
    states = walk(scion_packet(path), hop_keys, TRACE_NOW)
    end = states[-1]
    back = end[: path_offset(end)] + reverse_path(path_bytes(end)) + end[end[5] * 4 :]
    walk(back, hop_keys[::-1], TRACE_NOW)
    # A shortcut: both segments cut below their core, joined at a common AS (B == E here).
    shortcut = [
        SegmentSpec(up, ts, 0x3333, False, start=1),
        SegmentSpec(
            (BeaconHop(0, 1, kd), BeaconHop(2, 5, kb), BeaconHop(4, 0, kf)), ts, 0x4444, True, start=1
        ),
    ]
    states = walk(scion_packet(mint_path(shortcut)), [kc, kb, kb, kf], TRACE_NOW)
    assert meta(states[-1])[1] == 3


def test_a_wrong_key_in_minting_is_caught_by_the_router() -> None:
    segs = trace_segments()
    bad = list(segs[0].hops)
    bad[0] = BeaconHop(bad[0].ingress, bad[0].egress, bytes(16), bad[0].exp_time)
    segs[0] = SegmentSpec(tuple(bad), segs[0].timestamp, segs[0].seg_id, segs[0].cons_dir)
    pkt = scion_packet(mint_path(segs))
    keys = [KEYS[a] for a in PATH_ORDER]
    with pytest.raises(InvalidHopMac):
        walk(pkt, keys, TRACE_NOW)


def test_reverse_semantics() -> None:
    raw = path_bytes(PACKETS[5])  # mid-way: CurrINF 1, CurrHF 4
    rev = ScionPath.from_bytes(reverse_path(raw))
    fwd = ScionPath.from_bytes(raw)
    assert (rev.meta.curr_inf, rev.meta.curr_hf) == (3 - 1 - 1, 9 - 4 - 1)
    assert rev.meta.seg_len == fwd.meta.seg_len[::-1]
    assert [i.cons_dir for i in rev.info_fields] == [not i.cons_dir for i in fwd.info_fields[::-1]]
    assert [i.seg_id for i in rev.info_fields] == [i.seg_id for i in fwd.info_fields[::-1]]
    assert rev.hop_fields == fwd.hop_fields[::-1]
    assert reverse_path(reverse_path(raw)) == raw


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00\x00\x00\x00", bytes.fromhex("00003000") + bytes(8), bytes.fromhex("00000041") + bytes(40)],
)
def test_reverse_refuses_bad_paths(raw: bytes) -> None:
    with pytest.raises(MintError):
        reverse_path(raw)


def test_mint_refuses_bad_segments() -> None:
    k = bytes(16)
    one = (BeaconHop(0, 1, k),)
    two = (BeaconHop(0, 1, k), BeaconHop(2, 0, k))
    with pytest.raises(MintError, match="one hop field"):
        mint_path([SegmentSpec(one, TS, 1, True)])
    with pytest.raises(MintError, match="one to three"):
        mint_path([SegmentSpec(two, TS, 1, True)] * 4)
    with pytest.raises(MintError, match="peer_ingress"):
        mint_path([SegmentSpec(two, TS, 1, False, peer=True), SegmentSpec(two, TS, 1, True, peer=True)])
    with pytest.raises(MintError, match="exactly two"):
        mint_path([SegmentSpec(two, TS, 1, True, peer=True)])
    with pytest.raises(MintError, match="16 bytes"):
        mint_path([SegmentSpec((BeaconHop(0, 1, b"x"), BeaconHop(2, 0, k)), TS, 1, True)])
    with pytest.raises(MintError, match="SegID"):
        mint_path([SegmentSpec(two, TS, 1 << 16, True)])
    assert repr(BeaconHop(0, 1, b"secret-key-16-by")).find("secret") < 0
