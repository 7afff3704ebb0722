"""Session lifetime rules (WireGuard's keypair rules: whitepaper section 6.2)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.tunnel.session import Session
from scion_appliance.tunnel.timers import (
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
)


def _session(initiator: bool = True, created: float = 100.0) -> Session:
    return Session(b"p" * 32, 1, 2, b"s" * 32, b"r" * 32, created=created, initiator=initiator)


def test_counters_are_handed_out_once() -> None:
    s = _session()
    assert s.reserve(3, 100.0) == range(0, 3)
    assert s.reserve(0, 100.0) == range(3, 3)
    assert s.reserve(64, 100.0) == range(3, 67)
    assert s.send_counter == 67


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1000), max_size=50))
def test_reserved_ranges_never_overlap(sizes: list[int]) -> None:
    s = _session()
    seen: set[int] = set()
    for n in sizes:
        r = s.reserve(n, 101.0)
        assert len(r) == n
        assert seen.isdisjoint(r)
        seen.update(r)
    assert seen == set(range(sum(sizes)))


def test_counter_limit() -> None:
    s = _session()
    s.send_counter = REJECT_AFTER_MESSAGES - 2
    assert s.reserve(5, 100.0) == range(REJECT_AFTER_MESSAGES - 2, REJECT_AFTER_MESSAGES)
    assert not s.can_send(100.0)
    assert s.reserve(1, 100.0) == range(0)
    assert s.can_receive(100.0, REJECT_AFTER_MESSAGES - 1)
    assert not s.can_receive(100.0, REJECT_AFTER_MESSAGES)


def test_reject_after_time() -> None:
    s = _session(created=100.0)
    assert s.can_send(100.0 + REJECT_AFTER_TIME - 0.001)
    assert not s.can_send(100.0 + REJECT_AFTER_TIME)
    assert s.reserve(1, 100.0 + REJECT_AFTER_TIME) == range(0)
    assert not s.can_receive(100.0 + REJECT_AFTER_TIME)


def test_rekey_after_time_only_for_the_initiator() -> None:
    assert not _session(True).needs_rekey(100.0 + REKEY_AFTER_TIME - 0.001)
    assert _session(True).needs_rekey(100.0 + REKEY_AFTER_TIME)
    assert not _session(False).needs_rekey(100.0 + REKEY_AFTER_TIME + 50)
    assert _session(True).needs_rekey_on_receive(100.0 + 165.0)
    assert not _session(True).needs_rekey_on_receive(100.0 + 164.9)
    assert not _session(False).needs_rekey_on_receive(100.0 + 179.0)


def test_rekey_after_messages_on_both_sides() -> None:
    for initiator in (True, False):
        s = _session(initiator)
        s.send_counter = REKEY_AFTER_MESSAGES - 1
        assert not s.needs_rekey(100.0)
        s.reserve(1, 100.0)
        assert s.needs_rekey(100.0)
        assert s.can_send(100.0)  # rekey is a wish, not a stop


def test_wipe() -> None:
    s = _session()
    s.wipe()
    assert s.send_key == b"" and s.receive_key == b""
    assert not s.can_send(100.0) and not s.can_receive(100.0)
    assert "s" * 32 not in repr(s)
