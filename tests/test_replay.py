"""Anti-replay window (scion_appliance._fast.replay): WireGuard's counter self-test, window edges, the
reject limit, and a model-based property test of check/commit."""

from __future__ import annotations

import array
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance._fast.replay import (
    DROP_REPLAYED,
    REJECT_AFTER_MESSAGES,
    ReplayWindow,
)

SIZES = [64, 1024, 8192]


def test_reject_limit_is_wireguards() -> None:
    # REJECT_AFTER_MESSAGES in drivers/net/wireguard/messages.h: U64_MAX - COUNTER_WINDOW_SIZE - 1 with
    # the 8192-bit ring, i.e. 2^64 - 2^13 - 1.
    assert REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1


class Stepper:
    """Runs one step of the self-test as check-then-commit and insists both agree with `expect`."""

    def __init__(self, size_bits: int) -> None:
        self.w = ReplayWindow(size_bits)
        self.step = 0

    def __call__(self, counter: int, expect: bool) -> None:
        self.step += 1
        assert self.w.check(counter) is expect, f"check, step {self.step}, counter {counter}"
        assert self.w.check(counter) is expect, f"check changed state, step {self.step}"
        assert self.w.commit(counter) is expect, f"commit, step {self.step}, counter {counter}"
        assert self.w.check(counter) is False, f"accepted again after commit, step {self.step}"


@pytest.mark.parametrize("size", SIZES)
def test_wireguard_counter_selftest(size: int) -> None:
    # The sequence of drivers/net/wireguard/selftest/counter.c (Linux), with COUNTER_WINDOW_SIZE = size:
    # T(n, v) there is one counter_validate(); here each step is check() then commit(), which must agree.
    lim = size + 1  # T_LIM
    reject = REJECT_AFTER_MESSAGES
    t = Stepper(size)
    for counter, expect in [
        (0, True),  # 1
        (1, True),
        (1, False),
        (9, True),
        (8, True),
        (7, True),
        (7, False),
        (lim, True),
        (lim - 1, True),
        (lim - 1, False),  # 10
        (lim - 2, True),
        (2, True),
        (2, False),
        (lim + 16, True),
        (3, False),
        (lim + 16, False),
        (lim * 4, True),
        (lim * 4 - (lim - 1), True),
        (10, False),
        (lim * 4 - lim, False),  # 20
        (lim * 4 - (lim + 1), False),
        (lim * 4 - (lim - 2), True),
        (lim * 4 + 1 - lim, False),
        (0, False),
        (reject, False),
        (reject - 1, True),
        (reject, False),
        (reject - 1, False),
        (reject - 2, True),
        (reject + 1, False),  # 30
        (reject + 2, False),
        (reject - 2, False),
        (reject - 3, True),
        (0, False),  # 34
    ]:
        t(counter, expect)

    # Full sweeps: forward then the one left below...
    t = Stepper(size)
    for i in range(1, size + 1):
        t(i, True)
    t(0, True)
    t(0, False)

    t = Stepper(size)
    for i in range(2, size + 2):
        t(i, True)
    t(1, True)
    t(0, False)

    # ...and backward from the top of the window.
    t = Stepper(size)
    for i in range(size, -1, -1):
        t(i, True)

    t = Stepper(size)
    for i in range(size + 1, 0, -1):
        t(i, True)
    t(0, False)

    t = Stepper(size)
    for i in range(size, 0, -1):
        t(i, True)
    t(size + 1, True)
    t(0, False)

    t = Stepper(size)
    for i in range(size, 0, -1):
        t(i, True)
    t(0, True)
    t(size + 1, True)


@pytest.mark.parametrize("size", SIZES)
def test_window_edges(size: int) -> None:
    w = ReplayWindow(size)
    top = 10 * size + 37  # not word aligned
    assert w.commit(top)
    assert w.highest == top
    assert w.check(top - size)  # oldest still inside
    assert not w.check(top - size - 1)  # first one outside
    assert w.commit(top - size)
    assert not w.commit(top - size)
    assert not w.commit(top - size - 1)
    # Moving the top by one pushes the oldest out, even though it was never seen.
    assert w.check(top - size + 1)
    assert w.commit(top + 1)
    assert not w.check(top - size)
    assert w.check(top - size + 1)


@pytest.mark.parametrize("size", SIZES)
def test_far_jumps_clear_the_ring(size: int) -> None:
    w = ReplayWindow(size)
    for c in range(0, size + 1):
        assert w.commit(c)
    # A jump of exactly one ring, of more than one ring and a huge one: every slot behind the new top
    # must read as unseen, although the ring words held bits from before.
    for jump in (w.ring_bits, w.ring_bits + 1, 3 * w.ring_bits - 5, 2**40):
        top = w.highest + jump
        assert w.commit(top)
        for c in range(top - size, top):
            assert w.check(c), (jump, c)
        assert not w.check(top - size - 1)
        assert not w.check(top)
    # Filling the window after the last jump accepts every counter once.
    top = w.highest
    for c in range(top - size, top):
        assert w.commit(c)
        assert not w.commit(c)


@pytest.mark.parametrize("size", SIZES)
def test_near_the_limit(size: int) -> None:
    w = ReplayWindow(size)
    last = REJECT_AFTER_MESSAGES - 1
    assert w.commit(last)
    assert not w.commit(REJECT_AFTER_MESSAGES)
    assert not w.check(2**64 - 1)
    for c in range(last - size, last):
        assert w.commit(c)
    assert not w.check(last - size - 1)
    assert w.highest == last


def test_sizes_and_bad_sizes() -> None:
    assert ReplayWindow().size_bits == 8192
    assert ReplayWindow(1024).size_bits == 1024
    assert ReplayWindow(64).ring_bits == 128
    assert ReplayWindow(100).size_bits == 100  # any size works; the ring rounds up
    for bad in (0, 63, -1, 2**25):
        with pytest.raises(ValueError, match="replay window"):
            ReplayWindow(bad)
    with pytest.raises(TypeError):
        ReplayWindow(1024.0)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        ReplayWindow().check(2**64)
    with pytest.raises(OverflowError):
        ReplayWindow().commit(-1)


def test_reset_forgets_everything() -> None:
    w = ReplayWindow(64)
    assert w.commit(5)
    w.reset()
    assert w.highest == -1
    assert w.commit(5)


class Model:
    """The window's meaning in plain Python: accepted once, at most `size` behind the highest."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: set[int] = set()
        self.highest = -1

    def check(self, c: int) -> bool:
        if c >= REJECT_AFTER_MESSAGES or c in self.seen:
            return False
        return self.highest < 0 or c >= self.highest - self.size

    def commit(self, c: int) -> bool:
        if not self.check(c):
            return False
        self.seen.add(c)
        self.highest = max(self.highest, c)
        return True


@settings(max_examples=150, deadline=None)
@given(
    size=st.sampled_from(SIZES),
    ops=st.lists(
        st.tuples(st.booleans(), st.one_of(st.integers(0, 40_000), st.integers(0, 2**64 - 1))),
        max_size=300,
    ),
)
def test_matches_model_and_check_is_pure(size: int, ops: list[tuple[bool, int]]) -> None:
    w, m = ReplayWindow(size), Model(size)
    base = 0
    for is_commit, raw in ops:
        # Keep most counters near the current top, where the interesting cases are.
        c = raw if raw > 40_000 else base + raw - 20_000 if base + raw >= 20_000 else raw
        if is_commit:
            assert w.commit(c) is m.commit(c), c
            base = max(m.highest, 0)
        else:
            assert w.check(c) is m.check(c), c
    assert w.highest == m.highest


@settings(max_examples=60, deadline=None)
@given(size=st.sampled_from(SIZES), data=st.data())
def test_any_order_within_the_window_is_accepted_exactly_once(size: int, data: st.DataObject) -> None:
    start = data.draw(st.sampled_from([0, 1, 63, 64, 12345, REJECT_AFTER_MESSAGES - size - 1]))
    # size + 1 counters fit: with the highest one first, the lowest is exactly `size` behind it.
    counters = list(range(start, start + size + 1))
    order = data.draw(st.permutations(counters))
    dups = data.draw(st.lists(st.sampled_from(counters), max_size=50))
    stream = list(order)
    for d in dups:  # each duplicate goes somewhere after its original
        first = stream.index(d)
        stream.insert(data.draw(st.integers(first + 1, len(stream))), d)
    w = ReplayWindow(size)
    accepted: list[int] = []
    for c in stream:
        fresh = w.check(c)
        assert w.commit(c) is fresh
        if fresh:
            accepted.append(c)
    assert sorted(accepted) == counters  # zero false rejects, each exactly once


def test_any_order_large_shuffles() -> None:
    rng = random.Random(6479)
    for size in SIZES:
        w = ReplayWindow(size)
        base = 0
        for _ in range(20):
            block = list(range(base, base + size + 1))
            rng.shuffle(block)
            # The block's highest counter lands first: every other one is then at most `size` behind.
            block.remove(base + size)
            block.insert(0, base + size)
            replays = rng.sample(block, 50)
            assert all(w.commit(c) for c in block)
            assert not any(w.commit(c) for c in replays)
            base += size + 1


def test_batch_forms_follow_the_status_convention() -> None:
    w = ReplayWindow(64)
    assert w.commit(100)
    counters = array.array("Q", [100, 101, 101, 30, 37, 99, 2**64 - 1, 102])
    status = bytearray([0, 0, 0, 0, 0, 0, 0, 9])  # slot 7 was dropped earlier for another reason
    assert w.check_batch(counters, status) == 4
    R = DROP_REPLAYED
    # 101 appears twice and both pass the check: nothing is recorded until commit.
    assert list(status) == [R, 0, 0, R, 0, 0, R, 9]
    assert w.highest == 100
    assert w.commit_batch(counters, status) == 3
    assert list(status) == [R, 0, R, R, 0, 0, R, 9]
    assert w.highest == 101
    assert not w.check(37) and not w.check(99) and w.check(102)
    # 37 was inside the window when checked and still is after 101 moved the top (101 - 37 == 64).


def test_batch_forms_reject_mismatched_arrays() -> None:
    w = ReplayWindow()
    with pytest.raises(ValueError, match="differ in length"):
        w.check_batch(array.array("Q", [1, 2]), bytearray(3))
    assert w.commit_batch(array.array("Q"), bytearray()) == 0


@settings(max_examples=40, deadline=None)
@given(
    size=st.sampled_from(SIZES),
    counters=st.lists(st.integers(0, 3000), max_size=400),
)
def test_batch_equals_one_by_one(size: int, counters: list[int]) -> None:
    one, batch = ReplayWindow(size), ReplayWindow(size)
    expect = [one.commit(c) for c in counters]
    status = bytearray(len(counters))
    batch.commit_batch(array.array("Q", counters), status)
    assert [s == 0 for s in status] == expect
    assert one.highest == batch.highest
