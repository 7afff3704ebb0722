"""SCION path values: layouts and reversal (scionproto's Decoded.Reverse semantics)."""

from __future__ import annotations

from hypothesis import given

from scion_appliance.scion.path import HopField, InfoField, PathMeta, ScionPath
from tests.strategies import scion_paths


def test_meta_layout() -> None:
    # CurrINF 1, CurrHF 5, SegLen 3,3,3: bits 2 | 6 | 6 reserved | 6 | 6 | 6
    m = PathMeta(1, 5, (3, 3, 3))
    assert m.to_bytes() == bytes.fromhex("450030c3")
    assert PathMeta.from_bytes(m.to_bytes()) == m


def test_flags_layout() -> None:
    assert InfoField(True, True, 0x1234, 7).to_bytes() == bytes.fromhex("0300123400000007")
    hop = HopField(True, False, 63, 1, 2, bytes(6))
    assert hop.to_bytes()[:2] == b"\x02\x3f"
    assert HopField(False, True, 0, 0, 0, bytes(6)).to_bytes()[0] == 0x01


def test_reverse_of_golden_path() -> None:
    from pathlib import Path

    from scion_appliance.scion import packet

    raw = (Path(__file__).parent / "data" / "scionproto-golden" / "scion-udp.bin").read_bytes()
    path = packet.parse(raw).path
    assert isinstance(path, ScionPath)
    rev = path.reverse()
    assert rev.meta == PathMeta(1, 3, (2, 2, 0))
    assert [i.cons_dir for i in rev.info_fields] == [False, True]
    assert [i.seg_id for i in rev.info_fields] == [0x222, 0x111]
    assert rev.hop_fields == tuple(reversed(path.hop_fields))


@given(scion_paths())
def test_reverse_twice_is_identity_and_bytes_round_trip(path: ScionPath) -> None:
    assert path.reverse().reverse() == path
    assert ScionPath.from_bytes(path.to_bytes()) == path
    assert path.segment_of_hop(path.meta.curr_hf) == path.meta.curr_inf


def test_from_bytes_refuses_a_length_that_does_not_match_the_meta() -> None:
    import pytest

    from scion_appliance.scion.errors import BadPath

    raw = PathMeta(0, 0, (2, 0, 0)).to_bytes() + InfoField(True, False, 1, 2).to_bytes() + bytes(24)
    assert ScionPath.from_bytes(raw).meta.num_hops == 2
    for bad in (raw[:3], raw[:-1], raw + b"\x00" * 4):
        with pytest.raises(BadPath):
            ScionPath.from_bytes(bad)
