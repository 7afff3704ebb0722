"""Data acknowledgements: the ack layout, the receiver's rate limit and count, the sender's log (sans-IO);
and end to end, a path that stops delivering data is left though its probes still answer."""

from __future__ import annotations

import time

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from scion_appliance._fast import codec
from scion_appliance.paths.acks import (
    ACK_INTERVAL,
    ACK_PLAINTEXT_LEN,
    AckError,
    AckResponder,
    SendLog,
    decode_ack,
    encode_ack,
)
from scion_appliance.paths.quality import PathState
from tests.test_gateway import IA1, Relay, relayed_pair


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



def test_send_log_ranges_give_each_counter_its_path_and_running_count() -> None:
    # A C batch is one range record; single records (keepalives, the Python path) interleave with it.
    log = SendLog(size=64)
    assert log.record_range(1, 10, 5, "p", 1.0) == 5  # counters 10..14 are the path's messages 1..5
    assert log.record(1, 15, "p", 1.1) == 6
    assert log.record_range(1, 16, 3, "q", 1.2) == 3
    assert log.record_range(1, 19, 2, "p", 1.3) == 8
    expect = {10: ("p", 1, 1.0), 14: ("p", 5, 1.0), 15: ("p", 6, 1.1), 16: ("q", 1, 1.2), 18: ("q", 3, 1.2),
              19: ("p", 7, 1.3), 20: ("p", 8, 1.3)}
    for counter, want in expect.items():
        sent = log.lookup(1, counter)
        assert sent is not None and (sent.path_id, sent.seq, sent.at) == want
    assert log.lookup(1, 21) is None and log.lookup(2, 12) is None and log.lookup(1, 9) is None
    assert log.sent_on("p") == 8 and log.sent_on("q") == 3
    assert log.record_range(1, 30, 0, "p", 2.0) == 8  # an empty range changes nothing


def test_send_log_takes_back_what_a_range_could_not_send() -> None:
    # The TX thread records a batch before sending it; what the socket then refused is taken back, so
    # the path's running count is what went out (the loss estimate compares it with the far end's).
    log = SendLog(size=64)
    log.record_range(1, 100, 10, "p", 1.0)
    log.record_range(1, 110, 4, "q", 1.0)
    log.retract_range(1, 107, 3, "p")
    assert log.sent_on("p") == 7 and log.sent_on("q") == 4
    sent = log.lookup(1, 106)
    assert sent is not None and sent.seq == 7
    assert log.lookup(1, 107) is None and log.lookup(1, 109) is None
    assert log.record_range(1, 114, 2, "p", 1.1) == 9  # the next batch on p goes on from 7
    found = log.lookup(1, 115)
    assert found is not None and found.seq == 9


def test_send_log_pulls_waiting_ranges_on_a_miss_and_forgets_old_ranges() -> None:
    log = SendLog(size=16)  # room for 2 ranges
    waiting = [(7, 100, 4, "p", 3.0)]

    def pull() -> None:
        while waiting:
            log.record_range(*waiting.pop())

    log.pull = pull
    sent = log.lookup(7, 102)  # not recorded yet: the lookup pulls it in
    assert sent is not None and (sent.path_id, sent.seq) == ("p", 3)
    log.record_range(7, 104, 4, "p", 3.1)
    log.record_range(7, 108, 4, "p", 3.2)
    assert log.lookup(7, 101) is None  # the oldest range fell out of the ring
    found = log.lookup(7, 111)
    assert found is not None and found.seq == 12

# --- end to end between two gateways on loopback -------------------------------------------------------


class DataEater(Relay):
    """A path between two gateways that passes SCMP (probes and their replies) and, once ``eat`` is
    set, drops every UDP datagram: only the data plane can tell that this path stopped delivering."""

    eat = False
    eaten = 0

    def drops(self, data: bytes) -> bool:
        if self.eat and codec.parse_record(data)["l4_proto"] == 17:
            self.eaten += 1
            return True
        return False


async def test_a_path_that_stops_delivering_data_is_left_though_its_probes_answer() -> None:
    a, b, relays = await relayed_pair(DataEater)
    async with trio.open_nursery() as n, a, b:
        for r in relays:
            n.start_soon(r.run)
        await trio.sleep(0.3)
        first = (await a.send(IA1, b"start"))["path"]
        for i in range(50):
            await a.send(IA1, b"%d" % i)
            await trio.sleep(0.002)
        assert b.counters["acks_sent"] >= 3 and a.counters["acks_received"] >= 3
        q = a.prober.quality[first]
        assert q.acks >= 3 and q.data_rtt(time.monotonic()) is not None
        relays[int(first[-1])].eat = True
        t0 = time.monotonic()
        moved = None
        while time.monotonic() - t0 < 1.0:
            info = await a.send(IA1, b"x")
            if info["path"] != first:
                moved = time.monotonic() - t0
                break
            await trio.sleep(0.002)
        assert moved is not None and moved < 0.5
        left = next(e for e in reversed(a.failover_log) if e["path"] != first)
        assert (
            left["failover"]
            and f"failover: path {first[:8]} suspect: data sent, nothing back" in left["reason"]
        )
        assert q.snapshot(time.monotonic()).state is not PathState.DOWN  # its probes still answer
        n.cancel_scope.cancel()
