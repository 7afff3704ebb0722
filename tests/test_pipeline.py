"""The C data pipeline (``_fast.pipeline``) against the Python reference it replaces on the hot path:
SIG framing byte-exact with ``sig_frame.FrameEncoder`` (and scionproto's known answers in
tests/data/sig-frames.json), headers byte-exact with ``UdpPacketBuilder``, the whole outbound and inbound
batch (frame, seal, stamp, receive, open, deframe) round-tripping packets, and the slow-path marks."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance._fast import aead, codec, pipeline, udpio
from scion_appliance.scion.addr import IA
from scion_appliance.scion.builder import UdpPacketBuilder
from scion_appliance.scion.path import EmptyPath
from scion_appliance.scion.sig_frame import FrameDecoder, FrameEncoder

DATA = Path(__file__).parent / "data"
VECTORS = json.loads((DATA / "sig-frames.json").read_text())["cases"]
ANY = pipeline.PrefixTable([(0, "0.0.0.0/0"), (0, "::/0")])


def ipv4(total_len: int, src: str = "192.0.2.1", dst: str = "198.51.100.1", fill: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total_len, 0, 0, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return hdr + bytes([fill & 0xFF]) * (total_len - 20)


def ipv6(payload_len: int, src: str = "2001:db8:a::1", dst: str = "2001:db8:b::1", fill: int = 0) -> bytes:
    hdr = struct.pack("!IHBB16s16s", 0x60000000, payload_len, 17, 64,
                      ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)
    return hdr + bytes([fill & 0xFF]) * payload_len


def c_frames(packets: list[bytes], session: int, stream: int, frame_size: int, seq: int = 0,
             table: pipeline.PrefixTable = ANY) -> tuple[list[bytes], int]:
    tx = pipeline.TxBatch(batch=max(1, len(packets)), frame_size=frame_size)
    tx.load(packets)
    tx.classify(table)
    k, _, seq = tx.frame(0, session, stream, seq)
    return [tx.frame_bytes(i) for i in range(k)], seq


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_c_framing_matches_reference_frames(case: dict) -> None:
    """Known answers: scionproto/scion gateway/dataplane/encoder_test.go (tests/data/README.md)."""
    packets = [bytes.fromhex(p) for p in case["packets_in"]]
    frames, _ = c_frames(packets, case["session_id"], case["stream_id"], case["mtu"])
    assert [f.hex() for f in frames] == case["frames_out"]


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.one_of(st.integers(20, 1500).map(lambda n: ("4", n)),
                             st.integers(0, 1400).map(lambda n: ("6", n))), min_size=1, max_size=64),
    frame_size=st.sampled_from([56, 57, 100, 600, 1472, 1500]),
    first_seq=st.integers(0, 2**64 - 1),
)
def test_c_framing_matches_python_encoder(sizes: list[tuple[str, int]], frame_size: int, first_seq: int) -> None:
    packets = [ipv4(n, fill=i) if v == "4" else ipv6(n, fill=i) for i, (v, n) in enumerate(sizes)]
    ref = FrameEncoder(7, 0xABCDE, frame_size, first_seq)
    want = ref.encode(packets)
    got, seq = c_frames(packets, 7, 0xABCDE, frame_size, first_seq)
    assert got == want
    assert seq == ref.seq


def test_classify_marks_what_the_encoder_or_policy_refuses() -> None:
    table = pipeline.PrefixTable([(0, "198.51.100.0/24"), (1, "2001:db8:b::/64"), (2, "203.0.113.128/25")])
    bad_len = bytearray(ipv4(100))
    bad_len[3] = 99
    packets = [
        ipv4(100),                              # remote 0
        ipv6(10),                               # remote 1
        ipv4(60, dst="203.0.113.200"),          # remote 2
        ipv4(60, dst="203.0.113.1"),            # no route: outside the /25
        ipv4(60, dst="224.0.0.251"),            # multicast
        ipv4(60, dst="255.255.255.255"),        # broadcast
        ipv6(10, dst="ff02::1"),                # IPv6 multicast
        bytes(bad_len),                         # length field disagrees
        b"\x45" + bytes(10),                    # truncated
        b"\x10" + bytes(40),                    # not IP
    ]
    tx = pipeline.TxBatch(batch=16)
    tx.load(packets)
    assert tx.classify(table) == 3
    assert tx.remotes() == [0, 1, 2]
    assert [s[0] for s in tx.slow_packets()] == [3, 4, 5, 6, 7, 8, 9]
    assert tx.slow_packets()[0][2] == packets[3]


def _template(src_port: int = 30041, dst_port: int = 30042) -> UdpPacketBuilder:
    return UdpPacketBuilder(IA.parse("1-ff00:0:110"), ipaddress.IPv4Address("198.51.100.1"), src_port,
                            IA.parse("1-ff00:0:111"), ipaddress.IPv4Address("198.51.100.2"), dst_port,
                            EmptyPath())


def _sealed_batch(packets: list[bytes], key: aead.AeadKey, builder: UdpPacketBuilder) -> pipeline.TxBatch:
    tx = pipeline.TxBatch(batch=len(packets))
    tx.load(packets)
    tx.classify(ANY)
    k, _, _ = tx.frame(0, 1, 5, 0)
    key.seal_batch(tx.out, tx.out_stride, tx.out_lens[:k], tx.out_status[:k], 0x01020304,
                   off=pipeline.HEADROOM, counters=tx.counters[:k])
    tmpl = pipeline.HeaderTemplate(builder.build(b""))
    assert tx.stamp(tmpl) == k
    return tx


def test_stamp_writes_what_the_builder_builds() -> None:
    """Same key and counters through the Python single-packet path: identical datagrams."""
    packets = [ipv4(1400, fill=i) for i in range(5)] + [ipv6(30), ipv4(20)]
    builder = _template()
    secret = os.urandom(32)
    tx = _sealed_batch(packets, aead.AeadKey(secret), builder)
    ref_key = aead.AeadKey(secret)
    frames = FrameEncoder(1, 5, pipeline.TxBatch().frame_size).encode(packets)
    assert tx.live == len(frames)
    for i, f in enumerate(frames):
        want = builder.build(ref_key.seal(0x01020304, f))
        got = tx.datagram(i)
        assert got == want
        assert codec.l4_checksum(got) == 0


def test_outbound_and_inbound_round_trip_over_udp() -> None:
    """TUN slots -> frames -> seal -> stamp -> sendmmsg, then recvmmsg -> parse -> select -> open (with the
    replay window) -> deframe: the same packets come out; a second delivery of the batch is all replays."""
    packets = [ipv4(60 + 13 * i, fill=i) for i in range(40)] + [ipv4(1400, fill=9), ipv6(100)]
    secret = os.urandom(32)
    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx_sock, tx_sock:
        rx_sock.bind(("127.0.0.1", 0))
        rx_sock.setblocking(False)
        port = rx_sock.getsockname()[1]
        builder = _template(dst_port=port)
        tx = _sealed_batch(packets, aead.AeadKey(secret), builder)
        dest = udpio.addr_pack("127.0.0.1", port)
        for _ in range(2):
            assert tx.send(tx_sock.fileno(), dest) == tx.live
        stride, batch = 2048, 64
        buf = bytearray(stride * batch)
        lengths = memoryview(bytearray(4 * batch)).cast("I")
        addrs = udpio.new_addrs(batch)
        n = udpio.recv_batch(rx_sock.fileno(), buf, stride, lengths, addrs, batch)
        assert n == 2 * tx.live
        recs = codec.ScionRecords(batch)
        recs.parse_batch(buf, stride, lengths, n)
        rx = pipeline.RxBatch(batch, stride)
        assert rx.select(buf, stride, lengths, recs, n, port, aead.TYPE_DATA) == [0x01020304]
        assert rx.mark(0x01020304) == list(range(n))
        assert all(rx.same_route(buf, stride, recs, addrs, 0, i) for i in range(n))
        from scion_appliance._fast.replay import ReplayWindow
        window = ReplayWindow(8192)
        alive = aead.AeadKey(secret).open_batch(buf, stride, lengths, rx.status, rx.counters,
                                                offsets=rx.offsets, receiver=0x01020304, window=window)
        assert alive == tx.live
        assert [rx.status[i] for i in range(tx.live, n)] == [aead.DROP_REPLAYED] * tx.live
        table = pipeline.PrefixTable([(0, "192.0.2.0/24"), (0, "2001:db8:a::/64")])
        npk, spoofed, fast = rx.deframe(buf, stride, lengths, table, 0, pipeline.Deframer(batch, stride))
        assert (npk, spoofed, fast) == (len(packets), 0, tx.live)
        assert rx.packets() == packets
        assert rx.slow_frames() == []


def _frames_in_slots(frames: list[bytes], stride: int = 2048) -> tuple[bytearray, memoryview, pipeline.RxBatch]:
    """Opened frames as ``open_batch`` leaves them: plaintext at offset 16 + 16, status 0."""
    buf = bytearray(stride * max(1, len(frames)))
    lengths = memoryview(bytearray(4 * max(1, len(frames)))).cast("I")
    rx = pipeline.RxBatch(max(1, len(frames)), stride)
    rx.mark(0)  # n is 0: every status SLOW; then open the frames' slots by hand
    for i, f in enumerate(frames):
        buf[i * stride + 32: i * stride + 32 + len(f)] = f
        rx.offsets[i] = 16
        lengths[i] = len(f)
        rx.status[i] = 0
    rx.set_count(len(frames))
    return buf, lengths, rx


def test_deframe_reassembles_split_packets_and_drops_spoofed_sources() -> None:
    big = ipv4(1500, fill=1)  # does not fit one 1472-byte frame: split over two
    packets = [ipv4(100, fill=0), ipv4(100, src="203.0.113.9"), big, ipv4(80, fill=2)]
    frames = FrameEncoder(0, 1, 1472).encode(packets)
    assert len(frames) == 2
    buf, lengths, rx = _frames_in_slots(frames)
    npk, spoofed, fast = rx.deframe(buf, 2048, lengths, pipeline.PrefixTable([(0, "192.0.2.0/24")]), 0,
                                    pipeline.Deframer(2, 2048))
    assert (npk, spoofed, fast) == (3, 1, 2)
    assert rx.packets() == [packets[0], big, packets[3]]


def test_deframe_leaves_a_gap_and_everything_after_it_to_python() -> None:
    packets = [ipv4(1000, fill=i) for i in range(6)]
    frames = FrameEncoder(0, 1, 1472).encode(packets)
    del frames[2]  # lost: frame 3 continues a packet whose middle never came
    buf, lengths, rx = _frames_in_slots(frames)
    state = pipeline.Deframer(len(frames), 2048)
    npk, _, fast = rx.deframe(buf, 2048, lengths, ANY, 0, state)
    assert (npk, fast) == (2, 2) and rx.slow_frames() == list(range(2, len(frames)))
    assert rx.packets() == packets[:1] + packets[1:2]
    assert not state.pending  # the stream is the Python decoder's now


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(20, 1500), min_size=1, max_size=120),
    frame_size=st.sampled_from([56, 100, 600, 1472]),
    batch=st.integers(1, 16),
)
def test_deframe_in_batches_matches_the_python_decoder(sizes: list[int], frame_size: int, batch: int) -> None:
    packets = [ipv4(n, fill=i) for i, n in enumerate(sizes)]
    frames = FrameEncoder(3, 77, frame_size, 2**64 - 3).encode(packets)  # the sequence wraps
    state = pipeline.Deframer(batch, 2048)
    got: list[bytes] = []
    for k in range(0, len(frames), batch):
        buf, lengths, rx = _frames_in_slots(frames[k: k + batch])
        rx.deframe(buf, 2048, lengths, ANY, 0, state)
        assert rx.slow_frames() == []
        got += rx.packets()
    assert got == FrameDecoder().feed_many(frames) == packets


def test_tun_write_of_deframed_packets_through_a_packet_socket() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        packets = [ipv4(60, fill=i) for i in range(10)]
        buf, lengths, rx = _frames_in_slots(FrameEncoder(0, 1, 1472).encode(packets))
        table = pipeline.PrefixTable([(0, "192.0.2.0/24")])
        assert rx.deframe(buf, 2048, lengths, table, 0, pipeline.Deframer(1, 2048)) == (10, 0, 1)
        assert rx.write_tun(a.fileno()) == (10, 0, 0)
        assert [b.recv(2048) for _ in range(10)] == packets
