"""The per-peer timer machine: WireGuard's constants and the behaviour of wireguard-go's timers.go."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.tunnel import timers as t
from scion_appliance.tunnel.timers import PeerTimers, TimerAction


class FixedRandom(random.Random):
    """uniform(a, b) always gives ``a + frac * (b - a)``."""

    def __init__(self, frac: float) -> None:
        super().__init__(0)
        self.frac = frac

    def uniform(self, a: float, b: float) -> float:
        return a + self.frac * (b - a)


def test_constants_are_wireguards() -> None:
    # WireGuard whitepaper section 6.1 / wireguard-go device/constants.go
    assert t.REKEY_AFTER_MESSAGES == 1 << 60
    assert t.REJECT_AFTER_MESSAGES == 0xFFFFFFFFFFFFFFFF - (1 << 13)
    assert (t.REKEY_AFTER_TIME, t.REJECT_AFTER_TIME, t.REKEY_ATTEMPT_TIME) == (120, 180, 90)
    assert (t.REKEY_TIMEOUT, t.KEEPALIVE_TIMEOUT, t.COOKIE_REFRESH_TIME) == (5, 10, 120)
    assert t.MAX_TIMER_HANDSHAKES == 18


def test_retransmit_with_jitter_then_give_up() -> None:
    pt = PeerTimers(rng=FixedRandom(0.5))
    pt.handshake_initiated(0.0)
    assert pt.next_deadline() == 5.0 + 1 / 6
    assert pt.tick(5.1) == []
    sends, now = 0, 0.0
    while True:
        deadline = pt.next_deadline()
        assert deadline is not None
        now = deadline
        actions = pt.tick(now)
        if TimerAction.GIVE_UP in actions:
            break
        assert actions == [TimerAction.RETRY_INITIATION]
        sends += 1
        pt.handshake_initiated(now)  # the service sent it
    assert sends == t.MAX_TIMER_HANDSHAKES
    assert 90.0 <= now <= 90.0 + 19 * t.REKEY_TIMEOUT_JITTER_MAX + 5.5
    # after giving up only the key-wipe timer is left
    assert pt.next_deadline() == now + 3 * t.REJECT_AFTER_TIME
    assert pt.tick(now + 540.0) == [TimerAction.EXPIRE_SESSIONS]
    assert pt.next_deadline() is None


def test_handshake_completed_stops_retries() -> None:
    pt = PeerTimers(rng=FixedRandom(0.0))
    pt.handshake_initiated(0.0)
    pt.handshake_completed(1.0)
    assert pt.tick(100.0) == []
    assert pt.handshake_attempts == 0


def test_keepalive_after_receiving_data_unless_we_sent() -> None:
    pt = PeerTimers(rng=FixedRandom(0.0))
    pt.data_received(0.0)
    assert pt.tick(9.99) == []
    assert pt.tick(10.0) == [TimerAction.SEND_KEEPALIVE]
    pt.data_received(20.0)
    pt.authenticated_packet_sent(21.0)  # our own data answered: no keepalive needed
    assert pt.tick(40.0) == []


def test_need_another_keepalive() -> None:
    pt = PeerTimers(rng=FixedRandom(0.0))
    pt.data_received(0.0)
    pt.data_received(5.0)  # timer already pending: remember to keep the link confirmed once more
    assert pt.tick(10.0) == [TimerAction.SEND_KEEPALIVE]
    assert pt.tick(20.0) == [TimerAction.SEND_KEEPALIVE]
    assert pt.tick(100.0) == []


def test_new_handshake_when_data_sent_and_nothing_back() -> None:
    pt = PeerTimers(rng=FixedRandom(1.0))
    pt.data_sent(0.0)
    pt.data_sent(3.0)  # does not push the deadline
    assert pt.next_deadline() == 15.0 + 1 / 3
    assert pt.tick(15.4) == [TimerAction.SEND_INITIATION]
    pt.data_sent(20.0)
    pt.authenticated_packet_received(21.0)
    assert pt.tick(50.0) == []


def test_session_derived_arms_key_wipe() -> None:
    pt = PeerTimers()
    pt.session_derived(0.0)
    assert pt.tick(539.0) == []
    assert pt.tick(540.0) == [TimerAction.EXPIRE_SESSIONS]


def test_persistent_keepalive() -> None:
    pt = PeerTimers(persistent_keepalive=25.0)
    pt.packet_traversal(0.0)
    assert pt.tick(25.0) == [TimerAction.SEND_KEEPALIVE]
    assert PeerTimers().next_deadline() is None


def test_stop_clears() -> None:
    pt = PeerTimers()
    pt.handshake_initiated(0.0)
    pt.data_received(0.0)
    pt.stop()
    assert pt.next_deadline() is None and pt.tick(1e9) == []


_EVENTS = ["data_sent", "data_received", "authenticated_packet_sent", "authenticated_packet_received"]
_EVENTS += ["handshake_initiated", "handshake_completed", "session_derived", "packet_traversal", "tick"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_EVENTS), st.floats(min_value=0, max_value=30)), max_size=60))
def test_random_event_sequences(events: list[tuple[str, float]]) -> None:
    pt = PeerTimers(rng=random.Random(1), persistent_keepalive=7.0)
    now = 0.0
    for name, dt in events:
        now += dt
        if name == "tick":
            pt.tick(now)
            nd = pt.next_deadline()
            assert nd is None or nd > now  # everything due has fired
        else:
            getattr(pt, name)(now)
        nd = pt.next_deadline()
        assert nd is None or nd <= now + 3 * t.REJECT_AFTER_TIME
        assert 0 <= pt.handshake_attempts <= t.MAX_TIMER_HANDSHAKES
