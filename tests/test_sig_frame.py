"""SIG framing: byte-exact with scionproto/scion's gateway encoder, reassembly that survives loss."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.scion.sig_frame import (
    HEADER_LEN,
    NO_PACKET_START,
    FrameDecoder,
    FrameDrop,
    FrameEncoder,
    FrameHeader,
    encode_batch,
)

DATA = Path(__file__).parent / "data"
# Known answers from scionproto/scion gateway/dataplane/encoder_test.go @ ce575dc806e9 (tests/data/README.md).
VECTORS = json.loads((DATA / "sig-frames.json").read_text())["cases"]


def ipv4(total_len: int, fill: int = 0) -> bytes:
    assert total_len >= 20
    return bytes([0x45, 0]) + struct.pack("!H", total_len) + bytes([fill & 0xFF]) * (total_len - 4)


def ipv6(payload_len: int, fill: int = 0) -> bytes:
    return bytes([0x60, 0, 0, 0]) + struct.pack("!H", payload_len) + bytes([fill & 0xFF]) * (34 + payload_len)


def frame(session: int, stream: int, seq: int, index: int, body: bytes) -> bytes:
    return FrameHeader(0, session, index, stream, seq).pack() + body


# --- known answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_encoder_matches_reference_frames(case: dict) -> None:
    packets = [bytes.fromhex(p) for p in case["packets_in"]]
    frames = encode_batch(case["session_id"], case["stream_id"], case["mtu"], packets)
    assert [f.hex() for f in frames] == case["frames_out"]


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_decoder_reassembles_reference_frames(case: dict) -> None:
    dec = FrameDecoder()
    out = dec.feed_many(bytes.fromhex(f) for f in case["frames_out"])
    assert out == [bytes.fromhex(p) for p in case["packets_in"]]
    assert not dec.drops
    assert dec.pending() == 0


def test_decoder_follows_reference_worker_scenarios() -> None:
    """The frame sequence of scionproto/scion gateway/dataplane/worker_test.go (TestParsing) @ ce575dc806e9,
    fed in the same order, yields the same packets: gaps and a bad IP version discard only the packet
    concerned, the next frame's index resynchronises, and an idle stream accepts a lower sequence."""
    v4hdr = lambda n: bytes([0x40, 0, 0, n]) + bytes(16)  # noqa: E731
    v6hdr = bytes([0x60, 0, 0, 0, 0, 3]) + bytes(34)
    hdr = lambda seq, index=0: bytes([0, 1, index >> 8, index & 0xFF, 0, 0, 0, 1]) + seq.to_bytes(8, "big")  # noqa: E731
    dec = FrameDecoder()
    feed = dec.feed
    assert feed(hdr(1) + v4hdr(23) + bytes([101, 102, 103])) == [v4hdr(23) + bytes([101, 102, 103])]
    assert feed(hdr(2) + v6hdr + bytes([101, 102, 103])) == [v6hdr + bytes([101, 102, 103])]
    two = feed(hdr(3) + v4hdr(23) + bytes([101, 102, 103]) + v4hdr(23) + bytes([201, 202, 203]))
    assert two == [v4hdr(23) + bytes([101, 102, 103]), v4hdr(23) + bytes([201, 202, 203])]
    # one packet split over two frames
    assert feed(hdr(4) + v4hdr(28) + bytes(range(51, 57))) == []
    assert feed(hdr(5, 0xFFFF) + bytes([57, 58])) == [v4hdr(28) + bytes(range(51, 59))]
    # a packet starting at a non-zero position
    assert feed(hdr(6) + v4hdr(28) + bytes(range(51, 57))) == []
    assert feed(hdr(7, 2) + bytes([57, 58]) + v4hdr(23) + bytes([61, 62, 63])) == [
        v4hdr(28) + bytes(range(51, 59)),
        v4hdr(23) + bytes([61, 62, 63]),
    ]
    # a hole in the sequence between whole packets loses nothing
    assert feed(hdr(8) + v4hdr(23) + bytes([101, 102, 103])) == [v4hdr(23) + bytes([101, 102, 103])]
    assert feed(hdr(10) + v4hdr(23) + bytes([201, 202, 203])) == [v4hdr(23) + bytes([201, 202, 203])]
    # the frame with a packet's tail is lost: the half packet is discarded, the next start is found
    assert feed(hdr(11) + v4hdr(28) + bytes(range(51, 57))) == []
    assert feed(hdr(13, 8) + bytes(range(70, 78)) + v4hdr(23) + bytes([201, 202, 203])) == [
        v4hdr(23) + bytes([201, 202, 203])
    ]
    assert dec.drops[FrameDrop.LOST_FRAGMENT] == 1
    # an invalid IP version ends the frame; the next frame catches up at its index
    bad = bytes([0x50]) + bytes(range(1, 21))
    assert feed(hdr(14) + v4hdr(23) + bytes([81, 82, 83]) + bad) == [v4hdr(23) + bytes([81, 82, 83])]
    assert feed(hdr(15, 8) + bytes(range(21, 29)) + v4hdr(23) + bytes([91, 92, 93])) == [
        v4hdr(23) + bytes([91, 92, 93])
    ]
    assert dec.drops[FrameDrop.BAD_IP_VERSION] == 1
    # one packet over three frames, on an idle stream whose sequence number went back to 4
    assert feed(hdr(4) + v4hdr(30) + bytes(range(51, 57))) == []
    assert feed(hdr(5, 0xFFFF) + bytes([57, 58])) == []
    assert feed(hdr(6, 0xFFFF) + bytes([59, 60])) == [v4hdr(30) + bytes(range(51, 61))]
    assert dec.pending() == 0


# --- encoder rules ------------------------------------------------------------------------------------


def test_encoder_refuses_malformed_packets_and_counts_them() -> None:
    enc = FrameEncoder(1, 2, 1500)
    good = ipv4(30)
    bad_len = bytearray(ipv4(30))
    bad_len[3] = 31
    frames = enc.encode([b"", bytes([0x50]) + bytes(30), ipv4(30)[:19], bytes(bad_len), good, ipv6(0)[:39]])
    assert FrameDecoder().feed_many(frames) == [good]
    assert enc.drops == {
        FrameDrop.EMPTY_PACKET: 1,
        FrameDrop.BAD_IP_VERSION: 1,
        FrameDrop.TRUNCATED_IP_HEADER: 2,
        FrameDrop.PACKET_LENGTH_MISMATCH: 1,
    }


def test_encoder_keeps_sequence_numbers_across_batches_and_flushes_each_batch() -> None:
    enc = FrameEncoder(3, 0xABCDE, 100)
    f1 = enc.encode([ipv4(60)])
    f2 = enc.encode([ipv4(150, 1), ipv4(20, 2)])
    f3 = enc.encode([])
    assert f3 == []
    headers = [FrameHeader.unpack(f) for f in f1 + f2]
    assert [h.seq for h in headers] == list(range(len(headers)))
    assert {(h.version, h.session_id, h.stream_id) for h in headers} == {(0, 3, 0xABCDE)}
    assert all(len(f) <= 100 for f in f1 + f2)
    assert len(f1) == 1  # the batch's last frame goes out without waiting for more packets
    assert enc.seq == len(headers)


def test_encoder_starts_no_packet_without_room_for_an_ipv6_header() -> None:
    # 16 + 44 = 60 bytes used of 99: 39 left < 40, so the next packet opens a new frame.
    frames = encode_batch(0, 0, 99, [ipv4(44), ipv4(20, 1)])
    assert [len(f) for f in frames] == [60, 36]
    assert FrameHeader.unpack(frames[1]).index == 0
    # with 40 left it is packed into the same frame and may be split
    frames = encode_batch(0, 0, 100, [ipv4(44), ipv4(50, 1)])
    assert [len(f) for f in frames] == [100, 26]
    assert [FrameHeader.unpack(f).index for f in frames] == [0, NO_PACKET_START]


def test_encoder_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="frame size"):
        FrameEncoder(0, 0, 55)
    with pytest.raises(ValueError, match="stream id"):
        FrameEncoder(0, 1 << 20, 1500)
    with pytest.raises(ValueError, match="session id"):
        FrameEncoder(256, 0, 1500)


def test_sequence_number_wraps() -> None:
    enc = FrameEncoder(0, 7, 60, first_seq=(1 << 64) - 1)
    pkt = ipv4(100, 9)
    frames = enc.encode([pkt])
    assert [FrameHeader.unpack(f).seq for f in frames] == [(1 << 64) - 1, 0, 1]
    assert FrameDecoder().feed_many(frames) == [pkt]


# --- reassembly under loss and reordering ---------------------------------------------------------------

packet_st = st.one_of(
    st.integers(20, 1600).map(lambda n: ("4", n)),
    st.integers(0, 1600).map(lambda n: ("6", n)),
)


def build(specs: list[tuple[str, int]]) -> list[bytes]:
    return [ipv4(n, i) if v == "4" else ipv6(n, i) for i, (v, n) in enumerate(specs)]


def layout(frames: list[bytes]) -> list[tuple[int, int]]:
    """Byte range of the packet stream each frame carries (the stream is the packets back to back)."""
    spans, pos = [], 0
    for f in frames:
        spans.append((pos, pos + len(f) - HEADER_LEN))
        pos += len(f) - HEADER_LEN
    return spans


def packet_spans(packets: list[bytes]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for p in packets:
        spans.append((pos, pos + len(p)))
        pos += len(p)
    return spans


batch_plan = st.lists(st.integers(1, 6), min_size=1, max_size=6)


def encode_in_batches(packets: list[bytes], frame_size: int, sizes: list[int]) -> list[bytes]:
    enc = FrameEncoder(1, 5, frame_size)
    frames: list[bytes] = []
    i = 0
    for size in sizes:
        frames += enc.encode(packets[i : i + size])
        i += size
    frames += enc.encode(packets[i:])
    return frames


@settings(max_examples=150, deadline=None)
@given(st.lists(packet_st, min_size=1, max_size=25), st.integers(56, 1500), batch_plan)
def test_round_trip_restores_every_packet(specs: list, frame_size: int, sizes: list[int]) -> None:
    packets = build(specs)
    frames = encode_in_batches(packets, frame_size, sizes)
    assert all(len(f) <= frame_size for f in frames)
    dec = FrameDecoder()
    assert dec.feed_many(frames) == packets
    assert not dec.drops
    assert dec.pending() == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(packet_st, min_size=1, max_size=25), st.integers(56, 1500), st.data())
def test_lost_frame_drops_only_the_packets_it_touches(
    specs: list, frame_size: int, data: st.DataObject
) -> None:
    packets = build(specs)
    frames = FrameEncoder(1, 5, frame_size).encode(packets)
    lost = data.draw(st.sets(st.integers(0, len(frames) - 1), max_size=3))
    fspans = layout(frames)
    expected = [
        p
        for p, (a, b) in zip(packets, packet_spans(packets), strict=True)
        if not any(a < fspans[k][1] and fspans[k][0] < b for k in lost)
    ]
    dec = FrameDecoder()
    out = dec.feed_many(f for k, f in enumerate(frames) if k not in lost)
    assert out == expected
    assert set(dec.drops) <= {FrameDrop.LOST_FRAGMENT}
    # a lost packet whose bytes partly arrived is either counted or still waiting for its continuation
    partly_arrived = any(
        any(a < fb and fa < b for k, (fa, fb) in enumerate(fspans) if k not in lost)
        for p, (a, b) in zip(packets, packet_spans(packets), strict=True)
        if p not in expected
    )
    if partly_arrived:
        assert dec.drops[FrameDrop.LOST_FRAGMENT] + dec.pending() >= 1


@settings(max_examples=150, deadline=None)
@given(st.lists(packet_st, min_size=2, max_size=25), st.integers(56, 600), st.data())
def test_swapped_frames_lose_only_packets_crossing_the_late_frame(
    specs: list, frame_size: int, data: st.DataObject
) -> None:
    packets = build(specs)
    frames = FrameEncoder(1, 5, frame_size).encode(packets)
    if len(frames) < 2:
        return
    k = data.draw(st.integers(0, len(frames) - 2))
    order = list(range(len(frames)))
    order[k], order[k + 1] = order[k + 1], order[k]  # frame k arrives after frame k+1
    a_k, b_k = layout(frames)[k]
    survivors = [
        p
        for p, (a, b) in zip(packets, packet_spans(packets), strict=True)
        if not (a < b_k and a_k < b) or (a_k <= a and b <= b_k)  # untouched by frame k, or inside it
    ]
    dec = FrameDecoder()
    out = dec.feed_many(frames[i] for i in order)
    assert sorted(out) == sorted(survivors)
    # after the disturbance the stream is in step again: everything that follows arrives
    tail = FrameEncoder(1, 5, frame_size, first_seq=len(frames)).encode(packets)
    assert dec.feed_many(tail) == packets


def test_streams_and_sessions_reassemble_independently() -> None:
    a = [ipv4(300, 1), ipv4(200, 2)]
    b = [ipv6(500, 3)]
    c = [ipv4(250, 4)]
    fa = FrameEncoder(1, 10, 120).encode(a)
    fb = FrameEncoder(1, 11, 120).encode(b)
    fc = FrameEncoder(2, 10, 120).encode(c)
    interleaved = [
        f for i in range(max(map(len, (fa, fb, fc)))) for fs in (fa, fb, fc) if i < len(fs) for f in [fs[i]]
    ]
    assert len(interleaved) == len(fa) + len(fb) + len(fc) > 3
    out = FrameDecoder().feed_many(interleaved)
    assert sorted(out) == sorted(a + b + c)


def test_restarted_peer_encoder_is_followed() -> None:
    dec = FrameDecoder(reorder_window=64)
    old = FrameEncoder(1, 5, 100, first_seq=1000).encode([ipv4(150, 1)])
    assert dec.feed(old[0]) == []  # packet started, waiting for seq 1001
    pkt = ipv4(150, 2)
    new = FrameEncoder(1, 5, 100).encode([pkt])  # the peer restarted at sequence 0
    assert dec.feed_many(new) == [pkt]
    assert dec.drops[FrameDrop.LOST_FRAGMENT] == 1


def test_too_many_streams_evicts_the_oldest_partial_packet() -> None:
    dec = FrameDecoder(max_streams=2)
    firsts = [FrameEncoder(1, s, 100).encode([ipv4(150, s)]) for s in range(3)]
    for frames in firsts:
        assert dec.feed(frames[0]) == []
    assert dec.drops[FrameDrop.STREAM_EVICTED] == 1
    assert dec.feed_many(firsts[2][1:]) == [ipv4(150, 2)]
    assert dec.feed_many(firsts[0][1:]) == []  # stream 0 was forgotten


# --- garbage -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", FrameDrop.FRAME_TOO_SHORT),
        (bytes(15), FrameDrop.FRAME_TOO_SHORT),
        (bytes([1]) + bytes(15) + ipv4(20), FrameDrop.BAD_VERSION),
        (frame(0, 0, 0, 20, ipv4(20)), FrameDrop.BAD_INDEX),
        (frame(0, 0, 0, 0, bytes([0x70]) + bytes(30)), FrameDrop.BAD_IP_VERSION),
        (frame(0, 0, 0, 0, bytes([0x45, 0, 0, 10]) + bytes(30)), FrameDrop.BAD_IP_LENGTH),
        (frame(0, 0, 0, 0, ipv6(10)[:30]), FrameDrop.TRUNCATED_IP_HEADER),
        (frame(0, 0, 0, NO_PACKET_START, bytes(30)), FrameDrop.LOST_FRAGMENT),
    ],
)
def test_bad_frames_are_dropped_with_their_reason(raw: bytes, reason: FrameDrop) -> None:
    dec = FrameDecoder()
    assert dec.feed(raw) == []
    assert dec.drops == {reason: 1}


def test_continuation_that_disagrees_with_the_packet_length_is_dropped() -> None:
    dec = FrameDecoder()
    assert dec.feed(frame(0, 0, 7, 0, ipv4(60)[:40])) == []
    follow = ipv4(20, 5)
    # 20 bytes are missing but the next packet is said to start after 10: framing error
    assert dec.feed(frame(0, 0, 8, 10, bytes(10) + follow)) == [follow]
    assert dec.drops == {FrameDrop.BAD_FRAGMENT: 1}
    # a frame without packet start that carries more than the missing bytes is inconsistent too
    assert dec.feed(frame(0, 0, 9, 0, ipv4(60)[:40])) == []
    assert dec.feed(frame(0, 0, 10, NO_PACKET_START, bytes(25))) == []
    assert dec.drops == {FrameDrop.BAD_FRAGMENT: 2}


def is_well_formed_ip(pkt: bytes) -> bool:
    if pkt[0] >> 4 == 4:
        return len(pkt) >= 20 and int.from_bytes(pkt[2:4], "big") == len(pkt)
    return pkt[0] >> 4 == 6 and len(pkt) >= 40 and 40 + int.from_bytes(pkt[4:6], "big") == len(pkt)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_random_bytes_never_crash_and_never_yield_malformed_packets(frames: list[bytes]) -> None:
    dec = FrameDecoder(max_streams=4)
    for f in frames:
        for pkt in dec.feed(f):
            assert is_well_formed_ip(pkt)
    assert dec.frames_in == len(frames)


@settings(max_examples=150, deadline=None)
@given(st.lists(packet_st, min_size=1, max_size=10), st.integers(56, 400), st.data())
def test_truncated_and_corrupted_frames_never_crash(
    specs: list, frame_size: int, data: st.DataObject
) -> None:
    packets = build(specs)
    frames = FrameEncoder(1, 5, frame_size).encode(packets)
    mangled = []
    for f in frames:
        action = data.draw(st.sampled_from(["keep", "truncate", "flip"]))
        if action == "truncate":
            f = f[: data.draw(st.integers(0, len(f)))]
        elif action == "flip":
            pos = data.draw(st.integers(0, len(f) - 1))
            f = f[:pos] + bytes([f[pos] ^ data.draw(st.integers(1, 255))]) + f[pos + 1 :]
        mangled.append(f)
    dec = FrameDecoder()
    out = dec.feed_many(mangled)
    assert all(is_well_formed_ip(p) for p in out)
    if all(m == f for m, f in zip(mangled, frames, strict=True)):
        assert out == packets
