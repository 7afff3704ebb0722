"""The batch face of the codec (``scion_appliance._fast.codec``) and its agreement with the object API.

Known answers: scionproto's golden packets (tests/data/scionproto-golden) and the router-trace capture
(tests/data/router-trace, captured from a real scionproto topology).
"""

from __future__ import annotations

import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scion_appliance._fast import codec
from scion_appliance.pcap import read_udp_frames
from scion_appliance.scion import errors, packet
from scion_appliance.scion.errors import ScionParseError
from tests.strategies import packets

DATA = Path(__file__).parent / "data"
GOLDEN = sorted((DATA / "scionproto-golden").glob("*.bin"))
STRIDE = 2048


def batch(pkts: list[bytes]) -> tuple[bytearray, array.array]:
    buf = bytearray(STRIDE * len(pkts))
    for i, p in enumerate(pkts):
        buf[i * STRIDE : i * STRIDE + len(p)] = p
    return buf, array.array("I", [len(p) for p in pkts])


def test_reason_table_matches_the_python_mirror() -> None:
    assert codec.REASONS == errors.REASONS


def test_record_layout_is_fixed() -> None:
    assert codec.RECORD_SIZE == 80


def test_batch_parses_every_golden_packet_with_the_same_record_as_one_by_one() -> None:
    pkts = [p.read_bytes() for p in GOLDEN]
    buf, lengths = batch(pkts)
    recs = codec.ScionRecords(len(pkts))
    assert recs.parse_batch(buf, STRIDE, lengths, len(pkts)) == len(pkts)
    for i, p in enumerate(pkts):
        assert recs.get(i) == codec.parse_record(p)
        assert recs.status(i) == 0


def test_batch_records_hold_offsets_and_addresses() -> None:
    raw = (DATA / "scionproto-golden" / "scion-udp.bin").read_bytes()
    buf, lengths = batch([raw])
    recs = codec.ScionRecords(4)
    recs.parse_batch(buf, STRIDE, lengths, 1)
    r = recs.get(0)
    assert (r["dst_ia"], r["src_ia"]) == (0x0001FF0000000111, 0x0002FF0000000222)
    assert (r["path_off"], r["path_len"], r["hdr_len"]) == (48, 68, 116)
    assert (r["num_inf"], r["num_hops"], r["seg_len"]) == (2, 4, (2, 2, 0))
    assert (r["l4_proto"], r["l4_off"], r["l4_len"], r["src_port"], r["dst_port"]) == (
        17,
        116,
        1032,
        1280,
        80,
    )


def test_a_bad_packet_fails_alone_in_its_batch() -> None:
    good = (DATA / "scionproto-golden" / "scion-udp.bin").read_bytes()
    pkts = [good, good[:50], good, b"", b"\x10" + good[1:]]
    buf, lengths = batch(pkts)
    recs = codec.ScionRecords(8)
    assert recs.parse_batch(buf, STRIDE, lengths, len(pkts)) == 2
    names = [codec.REASONS[s] for s in recs.statuses()]
    assert names == ["ok", "truncated_header", "ok", "truncated_common_header", "bad_version"]


def test_lengths_beyond_the_stride_are_clamped_not_overread() -> None:
    good = (DATA / "scionproto-golden" / "scion-bfd.bin").read_bytes()
    buf = bytearray(64 * 2)
    buf[: len(good)] = good
    recs = codec.ScionRecords(2)
    # Slot 0 claims 5000 bytes: the parser must see at most the 64-byte slot.
    recs.parse_batch(buf, 64, array.array("I", [5000, 0]), 2)
    assert codec.REASONS[recs.status(0)] == "trailing_bytes"


def test_batch_arguments_are_checked() -> None:
    recs = codec.ScionRecords(2)
    with pytest.raises(ValueError):
        recs.parse_batch(bytearray(100), 64, array.array("I", [1, 1, 1]), 3)
    with pytest.raises(ValueError):
        recs.parse_batch(bytearray(100), 64, array.array("I", [1, 1]), 2)
    with pytest.raises(IndexError):
        recs.get(5)


def test_every_router_trace_packet_decodes() -> None:
    frames = list(read_udp_frames((DATA / "router-trace" / "reference_pkts.pcap").read_bytes()))
    assert len(frames) == 13
    for f in frames:
        assert f.payload is not None
        pkt = packet.parse(f.payload)
        assert pkt.serialize() == f.payload
        assert str(pkt.src_ia) == "1-ff00:0:3"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_every_truncation_of_every_golden_packet_is_a_documented_error(path: Path) -> None:
    raw = path.read_bytes()
    for n in range(len(raw)):
        with pytest.raises(ScionParseError) as e:
            packet.parse(raw[:n])
        assert e.value.reason in errors.REASONS[1:]
        assert 0 <= e.value.offset <= len(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(packets)
def test_random_valid_packets_round_trip(pkt: packet.ScionPacket) -> None:
    raw = pkt.serialize()
    parsed = packet.parse(raw)
    assert parsed.serialize() == raw
    assert (parsed.dst_ia, parsed.src_ia, parsed.dst_host, parsed.src_host) == (
        pkt.dst_ia,
        pkt.src_ia,
        pkt.dst_host,
        pkt.src_host,
    )
    assert parsed.path == pkt.path
    assert parsed.l4 == pkt.l4
    assert (parsed.traffic_class, parsed.flow_id) == (pkt.traffic_class, pkt.flow_id)
    if pkt.l4_proto in (17, 202):
        assert packet.checksum_valid(pkt.with_checksum().serialize()) is True


@settings(max_examples=300)
@given(st.sampled_from(GOLDEN), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6))
def test_random_corruption_is_either_valid_or_a_documented_error(
    path: Path, edits: list[tuple[int, int]]
) -> None:
    raw = bytearray(path.read_bytes())
    for pos, val in edits:
        raw[pos % len(raw)] = val
    rec = codec.parse_record(bytes(raw))
    try:
        pkt = packet.parse(bytes(raw))
    except ScionParseError as e:
        assert rec["status"] != 0 and e.reason == rec["reason"]
    else:
        assert rec["status"] == 0
        # What parses must serialize to a packet that parses to the same values.
        assert packet.parse(pkt.serialize()) == pkt
