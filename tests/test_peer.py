"""Per-peer key rotation, rekey triggers and timer glue between two in-memory appliances."""

from __future__ import annotations

import random

from scion_appliance.tunnel import keys
from scion_appliance.tunnel.handshake import Accepted, Handshaker, MemoryTimestampStore, PeerConfig
from scion_appliance.tunnel.peer import Peer, PeerOutput
from scion_appliance.tunnel.session import Session
from scion_appliance.tunnel.timers import MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME, REKEY_AFTER_TIME

A_PRIV, B_PRIV = keys.generate_private_key(), keys.generate_private_key()
A_PUB, B_PUB = keys.public_key(A_PRIV), keys.public_key(B_PRIV)
WALL0 = 1_700_000_000.0


class Side:
    def __init__(self, priv: bytes, peer_pub: bytes) -> None:
        self.hs = Handshaker(priv, [PeerConfig(peer_pub)], MemoryTimestampStore())
        self.peer = Peer(peer_pub, self.hs, rng=random.Random(7))


def _sides() -> tuple[Side, Side]:
    return Side(A_PRIV, B_PUB), Side(B_PRIV, A_PUB)


def _complete(init_side: Side, resp_side: Side, initiation: bytes, now: float) -> PeerOutput:
    """Deliver an initiation and its response; returns the initiator's output."""
    wall = WALL0 + now
    r = resp_side.hs.handle_initiation(initiation, source=b"x", now=now)
    assert isinstance(r, Accepted) and r.reply is not None
    resp_side.peer.established(r.result, now, wall)
    f = init_side.hs.handle_response(r.reply, source=b"y", now=now)
    assert isinstance(f, Accepted)
    return init_side.peer.established(f.result, now, wall)


def _handshake(init_side: Side, resp_side: Side, now: float) -> PeerOutput:
    msg = init_side.peer.initiate(now, WALL0 + now)
    assert msg is not None
    return _complete(init_side, resp_side, msg, now)


def _confirm(a: Side, b: Side, now: float) -> None:
    """a sends a keepalive on its current session; b receives it."""
    s = a.peer.sending_session(now)
    assert s is not None
    a.peer.sent(s, now, WALL0 + now, keepalive=True)
    rs = b.peer.session_for_index(s.remote_index)
    assert rs is not None
    b.peer.received(rs, now, WALL0 + now, keepalive=True)


def test_responder_waits_for_confirmation_before_sending() -> None:
    a, b = _sides()
    out = _handshake(a, b, 0.0)
    assert out.keepalive  # the initiator must confirm the session
    assert a.peer.sending_session(0.0) is a.peer.current is not None
    assert b.peer.current is None and b.peer.next is not None
    assert b.peer.sending_session(0.0) is None
    _confirm(a, b, 0.1)
    assert b.peer.current is not None and b.peer.next is None
    sa, sb = a.peer.current, b.peer.current
    assert sa.send_key == sb.receive_key and sa.remote_index == sb.local_index


def test_rotation_keeps_previous_and_frees_older_indexes() -> None:
    a, b = _sides()
    _handshake(a, b, 0.0)
    _confirm(a, b, 0.1)
    first_a = a.peer.current
    assert first_a is not None
    _handshake(a, b, 10.0)
    assert a.peer.previous is first_a and a.peer.current is not first_a
    assert a.peer.session_for_index(first_a.local_index) is first_a  # packets in flight still open
    _confirm(a, b, 10.1)
    _handshake(a, b, 20.0)
    _confirm(a, b, 20.1)
    # three handshakes: the first session is gone on both sides, its index freed
    assert a.peer.session_for_index(first_a.local_index) is None and first_a.expired
    assert a.hs.index_table.lookup(first_a.local_index) is None
    assert len(a.hs.index_table) == 2 and len(b.hs.index_table) == 2


def test_responder_drops_unconfirmed_next_on_a_newer_handshake() -> None:
    a, b = _sides()
    _handshake(a, b, 0.0)
    unconfirmed = b.peer.next
    assert unconfirmed is not None
    _handshake(a, b, 6.0)  # e.g. the confirmation was lost and A rekeyed
    assert b.peer.next is not unconfirmed and unconfirmed.expired
    assert b.hs.index_table.lookup(unconfirmed.local_index) is None


def test_initiations_rate_limited_to_one_per_rekey_timeout() -> None:
    a, _ = _sides()
    assert a.peer.initiate(0.0, WALL0) is not None
    assert a.peer.initiate(4.9, WALL0 + 4.9) is None
    assert a.peer.initiate(5.0, WALL0 + 5) is not None


def test_retries_then_give_up_then_expire() -> None:
    a, _ = _sides()
    a.peer.initiate(0.0, WALL0)
    sent, now = 1, 0.0
    while True:
        deadline = a.peer.next_deadline()
        assert deadline is not None
        now = deadline
        out = a.peer.tick(now, WALL0 + now)
        if out.drop_queued:
            break
        assert out.initiation is not None
        sent += 1
    assert sent == 1 + MAX_TIMER_HANDSHAKES
    assert not a.hs.has_pending(B_PUB) and len(a.hs.index_table) == 0


def test_rekey_after_time_by_sending() -> None:
    a, b = _sides()
    _handshake(a, b, 0.0)
    s = a.peer.current
    assert s is not None
    assert a.peer.sent(s, REKEY_AFTER_TIME - 1, WALL0).initiation is None
    out = a.peer.sent(s, REKEY_AFTER_TIME, WALL0 + REKEY_AFTER_TIME)
    assert out.initiation is not None
    assert _complete(a, b, out.initiation, REKEY_AFTER_TIME).keepalive
    assert a.peer.current is not s and a.peer.previous is s


def test_last_minute_handshake_on_receive_once() -> None:
    a, b = _sides()
    _handshake(a, b, 0.0)
    s = a.peer.current
    assert s is not None
    assert a.peer.received(s, 164.0, WALL0 + 164, keepalive=False).initiation is None
    assert a.peer.received(s, 165.0, WALL0 + 165, keepalive=False).initiation is not None
    assert a.peer.received(s, 171.0, WALL0 + 171, keepalive=False).initiation is None  # once only


def test_session_unusable_after_reject_time() -> None:
    a, b = _sides()
    _handshake(a, b, 0.0)
    assert a.peer.sending_session(REJECT_AFTER_TIME - 0.01) is not None
    assert a.peer.sending_session(REJECT_AFTER_TIME) is None


def test_keepalive_when_data_received_and_nothing_sent() -> None:
    a, b = _sides()
    _handshake(a, b, 0.0)
    _confirm(a, b, 0.0)
    sb = b.peer.current
    assert isinstance(sb, Session)
    b.peer.received(sb, 1.0, WALL0 + 1, keepalive=False)
    assert b.peer.tick(10.9, WALL0 + 10.9) == PeerOutput()
    assert b.peer.tick(11.0, WALL0 + 11).keepalive


def test_new_handshake_when_sent_data_gets_no_answer() -> None:
    a, b = _sides()
    _handshake(a, b, 0.0)
    s = a.peer.current
    assert s is not None
    a.peer.sent(s, 1.0, WALL0 + 1)
    out = a.peer.tick(16.4, WALL0 + 16.4)  # 1 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter (<= 1/3 s)
    assert out.initiation is not None


def test_expire_after_three_reject_times() -> None:
    a, b = _sides()
    _handshake(a, b, 0.0)
    _confirm(a, b, 0.0)
    out = PeerOutput()
    now = 0.0
    while not out.expired:
        deadline = a.peer.next_deadline()
        assert deadline is not None and deadline <= 3 * REJECT_AFTER_TIME
        now = deadline
        out = a.peer.tick(now, WALL0 + now)
    assert now == 3 * REJECT_AFTER_TIME
    assert a.peer.sessions() == [] and len(a.hs.index_table) == 0


def test_stop() -> None:
    a, b = _sides()
    _handshake(a, b, 0.0)
    a.peer.stop()
    assert a.peer.sessions() == [] and a.peer.next_deadline() is None and len(a.hs.index_table) == 0
