"""Fuzzing the batch parser: arbitrary and mutated bytes never crash it and always get a reason.

Bounded: a fixed number of hypothesis examples (raise SCION_FUZZ_EXAMPLES for a longer run). The same
bytes go through the batch parser and the object API, which must agree.
"""

from __future__ import annotations

import array
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scion_appliance._fast import codec
from scion_appliance.scion import packet
from scion_appliance.scion.errors import ScionParseError

EXAMPLES = int(os.environ.get("SCION_FUZZ_EXAMPLES", "1500"))
SEEDS = [p.read_bytes() for p in sorted((Path(__file__).parent / "data" / "scionproto-golden").glob("*.bin"))]
STRIDE = 1500


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A golden packet with a few bytes replaced, inserted or cut: reaches the deep parser states."""
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op, pos = draw(st.integers(0, 2)), draw(st.integers(0, len(raw)))
        if op == 0 and raw:
            raw[pos % len(raw)] = draw(st.integers(0, 255))
        elif op == 1:
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[pos : pos + draw(st.integers(1, 16))]
    return bytes(raw[:STRIDE])


inputs = st.one_of(st.binary(max_size=STRIDE), mutated())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(inputs, min_size=1, max_size=16))
def test_batch_parser_never_crashes_and_agrees_with_the_object_api(pkts: list[bytes]) -> None:
    buf = bytearray(STRIDE * len(pkts))
    for i, p in enumerate(pkts):
        buf[i * STRIDE : i * STRIDE + len(p)] = p
    recs = codec.ScionRecords(len(pkts))
    ok = recs.parse_batch(buf, STRIDE, array.array("I", map(len, pkts)), len(pkts))
    statuses = recs.statuses()
    assert ok == statuses.count(0)
    for p, status in zip(pkts, statuses, strict=True):
        assert 0 <= status < len(codec.REASONS)
        try:
            packet.parse(p)
        except ScionParseError as e:
            assert codec.REASONS[status] == e.reason
        else:
            assert status == 0
