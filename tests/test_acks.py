"""Data acknowledgements (sans-IO): the ack layout, the receiver's rate limit and count, the sender's log."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scion_appliance.paths.acks import (
    ACK_INTERVAL,
    ACK_PLAINTEXT_LEN,
    AckError,
    AckResponder,
    SendLog,
    decode_ack,
    encode_ack,
)


def test_ack_layout_is_counter_then_count_little_endian() -> None:
    # The layout the module banner documents: u64 LE acked counter | u32 LE received count.
    assert encode_ack(0x0102030405060708, 0x0A0B0C0D) == bytes.fromhex("0807060504030201" + "0d0c0b0a")
    assert len(encode_ack(0, 0)) == ACK_PLAINTEXT_LEN
    assert encode_ack(5, 2**32 + 7) == encode_ack(5, 7)  # the count wraps


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
def test_ack_round_trip(counter: int, received: int) -> None:
    assert decode_ack(encode_ack(counter, received)) == (counter, received)


@pytest.mark.parametrize("n", [0, 11, 13, 64])
def test_ack_of_wrong_length_is_refused(n: int) -> None:
    with pytest.raises(AckError, match=f"{n} bytes"):
        decode_ack(bytes(n))


def test_responder_acks_the_first_message_then_once_per_interval() -> None:
    r = AckResponder(interval=0.01)
    got = [r.on_data("p", c, 1.0 + c * 0.002) for c in range(12)]  # one message every 2 ms
    acked = [decode_ack(a) for a in got if a is not None]
    # 0 ms, then the first message at least 10 ms after the previous ack: 10 ms, 20 ms.
    assert acked == [(0, 1), (5, 6), (10, 11)]
    assert [i for i, a in enumerate(got) if a is not None] == [0, 5, 10]


def test_responder_counts_each_arrival_path_apart() -> None:
    r = AckResponder(interval=ACK_INTERVAL)
    assert r.on_data("a", 1, 0.0) == encode_ack(1, 1)
    assert r.on_data("b", 2, 0.0) == encode_ack(2, 1)  # another path: its own count and its own clock
    assert r.on_data("a", 3, 0.001) is None
    assert r.on_data("a", 4, 0.02) == encode_ack(4, 3)


def test_responder_memory_is_bounded_and_a_forgotten_path_restarts() -> None:
    r = AckResponder(interval=0.01, max_paths=2)
    r.on_data("a", 1, 0.0)
    r.on_data("a", 2, 0.001)
    r.on_data("b", 3, 0.0)
    r.on_data("c", 4, 0.0)  # evicts "a", the least recently used
    assert r.on_data("a", 5, 1.0) == encode_ack(5, 1)


def test_send_log_maps_counters_to_paths_and_counts_per_path() -> None:
    log = SendLog(size=8)
    assert log.record(1, 0, "p", 0.5) == 1
    assert log.record(1, 1, "q", 0.6) == 1
    assert log.record(1, 2, "p", 0.7) == 2
    sent = log.lookup(1, 2)
    assert sent is not None and (sent.path_id, sent.seq, sent.at) == ("p", 2, 0.7)
    assert log.lookup(2, 2) is None  # another session's counter 2: not ours
    assert log.sent_on("p") == 2 and log.sent_on("x") == 0


def test_send_log_forgets_what_the_ring_overwrote() -> None:
    log = SendLog(size=4)
    for c in range(6):
        log.record(1, c, "p", float(c))
    assert log.lookup(1, 1) is None  # slot 1 now holds counter 5
    found = log.lookup(1, 5)
    assert found is not None and found.seq == 6
