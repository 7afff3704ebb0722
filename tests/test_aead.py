"""Sealed envelopes (scion_appliance._fast.aead): known answers, the envelope layout checked against PyNaCl
and cryptography, batch round trips, per-packet failures, replay integration and key lifetime."""

from __future__ import annotations

import array
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings

from scion_appliance._fast.aead import (
    DROP_EXHAUSTED,
    DROP_FORGED,
    DROP_MALFORMED,
    DROP_REASONS,
    DROP_RECEIVER,
    DROP_REPLAYED,
    DROP_TYPE,
    OVERHEAD,
    REJECT_AFTER_MESSAGES,
    TYPE_DATA,
    AeadKey,
    EnvelopeError,
    KeyClosedError,
    parse_header,
    read_headers,
)
from scion_appliance._fast.replay import ReplayWindow

KEY = bytes(range(0x40, 0x60))
RECEIVER = 0xA1B2C3D4
STRIDE = 256


def test_rfc8439_aead_known_answer() -> None:
    # RFC 8439 section 2.8.2, "Example and Test Vector for AEAD_CHACHA20_POLY1305".
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("070000004041424344454647")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
        b"sunscreen would be it."
    )
    ciphertext = bytes.fromhex(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
        "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
        "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
        "3ff4def08e4b7a9de576d26586cec64b6116"
    )
    tag = bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")
    k = AeadKey(key)
    assert k.seal_raw(nonce, aad, plaintext) == ciphertext + tag
    assert k.open_raw(nonce, aad, ciphertext + tag) == plaintext
    with pytest.raises(EnvelopeError) as e:
        k.open_raw(nonce, aad[:-1], ciphertext + tag)
    assert e.value.reason == DROP_FORGED


def reference_envelope(key: bytes, receiver: int, counter: int, plaintext: bytes) -> bytes:
    """The envelope of DESIGN.md built with PyNaCl: nonce 4 zero bytes + LE counter, AD the header."""
    header = bytes([TYPE_DATA, 0, 0, 0]) + receiver.to_bytes(4, "little") + counter.to_bytes(8, "little")
    nonce = bytes(4) + counter.to_bytes(8, "little")
    return header + bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, header, nonce, key)


@pytest.mark.parametrize("counter", [0, 1, 255, 256, 2**32 + 5, 2**63, REJECT_AFTER_MESSAGES - 1])
def test_envelope_layout_matches_pynacl_and_cryptography(counter: int) -> None:
    plaintext = b"SIG frame " * 7
    k = AeadKey(KEY, send_counter=counter)
    env = k.seal(RECEIVER, plaintext)
    assert env == reference_envelope(KEY, RECEIVER, counter, plaintext)
    assert env[:4] == b"\x04\x00\x00\x00"
    assert env[4:8] == RECEIVER.to_bytes(4, "little")
    assert env[8:16] == counter.to_bytes(8, "little")
    assert len(env) == len(plaintext) + OVERHEAD
    # cryptography (OpenSSL) opens it with the same nonce and AD: an independent implementation.
    nonce = bytes(4) + counter.to_bytes(8, "little")
    assert ChaCha20Poly1305(KEY).decrypt(nonce, env[16:], env[:16]) == plaintext
    assert parse_header(env) == (TYPE_DATA, RECEIVER, counter)
    assert k.open(env, receiver=RECEIVER) == (counter, plaintext)


class Batch:
    """A slot batch as the gateway holds it: one buffer, per-slot lengths, status and counters."""

    def __init__(self, payloads: list[bytes], off: int = 0, stride: int = STRIDE) -> None:
        self.n, self.off, self.stride = len(payloads), off, stride
        self.buf = bytearray(self.n * stride)
        self.lengths = array.array("I", [len(p) for p in payloads])
        self.status = bytearray(self.n)
        self.counters = array.array("Q", bytes(8 * self.n))
        for i, p in enumerate(payloads):
            start = i * stride + off + 16
            self.buf[start : start + len(p)] = p

    def slot(self, i: int) -> bytearray:
        return self.buf[i * self.stride : (i + 1) * self.stride]

    def envelope(self, i: int) -> bytes:
        return bytes(self.buf[i * self.stride + self.off : i * self.stride + self.lengths[i]])

    def plaintext(self, i: int) -> bytes:
        start = i * self.stride + self.off + 16
        return bytes(self.buf[start : start + self.lengths[i]])

    def seal(self, key: AeadKey, **kw: Any) -> int:
        return key.seal_batch(
            self.buf,
            self.stride,
            self.lengths,
            self.status,
            RECEIVER,
            off=self.off,
            counters=self.counters,
            **kw,
        )

    def open(self, key: AeadKey, **kw: Any) -> int:
        return key.open_batch(
            self.buf, self.stride, self.lengths, self.status, self.counters, off=self.off, **kw
        )


def payloads(n: int, size: int = 100) -> list[bytes]:
    return [bytes([i % 256]) * (size + i % 7) for i in range(n)]


def test_batch_seal_matches_reference_and_opens() -> None:
    data = payloads(9)
    b = Batch(data, off=40)
    b.buf[0:40] = b"S" * 40  # the SCION/UDP header room before the envelope stays as it was
    k = AeadKey(KEY, send_counter=1000)
    assert b.seal(k) == 9
    assert k.send_counter == 1009
    assert list(b.counters) == list(range(1000, 1009))
    assert list(b.lengths) == [40 + OVERHEAD + len(p) for p in data]
    assert b.buf[0:40] == b"S" * 40
    for i, p in enumerate(data):
        assert b.envelope(i) == reference_envelope(KEY, RECEIVER, 1000 + i, p)
    b.counters = array.array("Q", bytes(8 * 9))
    assert b.open(AeadKey(KEY)) == 9
    assert not any(b.status)
    assert list(b.counters) == list(range(1000, 1009))
    assert [b.plaintext(i) for i in range(9)] == data


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, STRIDE - 64 - OVERHEAD), min_size=1, max_size=40),
    offsets=st.data(),
)
def test_round_trip_with_per_slot_offsets(sizes: list[int], offsets: st.DataObject) -> None:
    n = len(sizes)
    offs = array.array("I", [offsets.draw(st.integers(0, 64)) for _ in range(n)])
    buf = bytearray(n * STRIDE)
    data = [bytes((i * 31 + j) % 256 for j in range(s)) for i, s in enumerate(sizes)]
    for i, p in enumerate(data):
        start = i * STRIDE + offs[i] + 16
        buf[start : start + len(p)] = p
    lengths, status, counters = array.array("I", sizes), bytearray(n), array.array("Q", bytes(8 * n))
    k = AeadKey(KEY)
    assert k.seal_batch(buf, STRIDE, lengths, status, 7, offsets=offs, counters=counters) == n
    assert list(lengths) == [offs[i] + OVERHEAD + sizes[i] for i in range(n)]
    for i in range(n):  # each slot equals the reference envelope at its own offset
        env = bytes(buf[i * STRIDE + offs[i] : i * STRIDE + lengths[i]])
        assert env == reference_envelope(KEY, 7, i, data[i])
    w = ReplayWindow(64)
    assert k.open_batch(buf, STRIDE, lengths, status, counters, offsets=offs, receiver=7, window=w) == n
    assert list(lengths) == sizes
    assert [
        bytes(buf[i * STRIDE + offs[i] + 16 : i * STRIDE + offs[i] + 16 + sizes[i]]) for i in range(n)
    ] == data
    assert w.highest == n - 1


def test_forgeries_fail_alone_and_the_batch_goes_on() -> None:
    data = payloads(12)
    b = Batch(data, off=24)
    k = AeadKey(KEY)
    b.seal(k)
    base = [i * STRIDE + 24 for i in range(12)]
    b.buf[base[1] + b.lengths[1] - 24 - 1] ^= 0x01  # last tag byte
    b.buf[base[3] + 8] ^= 0x80  # counter (authenticated header)
    b.buf[base[5] + 4] ^= 0x01  # receiver index (authenticated header)
    b.buf[base[6] + 2] = 1  # a reserved byte
    b.buf[base[7] + 16 + 50] ^= 0x10  # ciphertext
    b.buf[base[9]] = 1  # envelope type 1, a handshake initiation: not for this call
    b.lengths[10] = 24 + OVERHEAD - 1  # shorter than an envelope
    b.lengths[11] = STRIDE + 1  # longer than its slot
    w = ReplayWindow(1024)
    assert b.open(k, window=w) == 4
    expect = {1: DROP_FORGED, 3: DROP_FORGED, 5: DROP_FORGED, 6: DROP_FORGED, 7: DROP_FORGED}
    expect |= {9: DROP_TYPE, 10: DROP_MALFORMED, 11: DROP_MALFORMED}
    assert {i: s for i, s in enumerate(b.status) if s} == expect
    for i in range(12):
        if i in expect:
            assert b.lengths[i] == 0
        else:
            assert b.plaintext(i) == data[i]
    # Forgeries never moved the window: the flipped counter of slot 3 was 2^63 + 3.
    assert w.highest == 8
    assert DROP_REASONS[DROP_FORGED] == "forged"


def test_wrong_key_fails_every_packet() -> None:
    b = Batch(payloads(5))
    b.seal(AeadKey(KEY))
    other = bytearray(KEY)
    other[0] ^= 1
    assert b.open(AeadKey(bytes(other))) == 0
    assert list(b.status) == [DROP_FORGED] * 5


def test_replays_within_and_across_batches() -> None:
    k = AeadKey(KEY)
    b = Batch(payloads(6))
    b.seal(k)
    sealed = bytes(b.buf)
    lengths = array.array("I", b.lengths)
    # Slot 4 carries a copy of slot 1: both pass the check, the second fails its commit.
    b.buf[4 * STRIDE : 5 * STRIDE] = b.buf[1 * STRIDE : 2 * STRIDE]
    b.lengths[4] = b.lengths[1]
    w = ReplayWindow(64)
    assert b.open(k, window=w) == 5
    assert list(b.status) == [0, 0, 0, 0, DROP_REPLAYED, 0]
    assert b.lengths[4] == 0
    assert b.plaintext(1) == payloads(6)[1]
    # The original batch again, as an attacker would replay it: refused before decryption, except the
    # packet with counter 4, which the copy had displaced and which was never delivered.
    b.buf[:] = sealed
    b.lengths[:] = lengths
    b.status[:] = bytes(6)
    assert b.open(k, window=w) == 1
    assert list(b.status) == [DROP_REPLAYED] * 4 + [0, DROP_REPLAYED]
    assert b.plaintext(4) == payloads(6)[4]
    assert b.buf[: 4 * STRIDE] == sealed[: 4 * STRIDE]  # nothing refused was touched


def test_replay_steps_done_by_the_caller() -> None:
    # read_headers -> check_batch -> open_batch -> commit_batch: the path without a fused window.
    k = AeadKey(KEY)
    b = Batch(payloads(5), off=8)
    b.seal(k)
    w = ReplayWindow(64)
    assert w.commit(2)  # counter 2 was delivered before
    receivers = array.array("I", bytes(4 * 5))
    assert read_headers(b.buf, STRIDE, b.lengths, b.status, b.counters, receivers, off=8) == 5
    assert list(b.counters) == [0, 1, 2, 3, 4]
    assert list(receivers) == [RECEIVER] * 5
    assert w.check_batch(b.counters, b.status) == 4
    assert b.open(k) == 4
    assert b.status[2] == DROP_REPLAYED and b.lengths[2] != 0  # skipped: untouched by open
    assert w.commit_batch(b.counters, b.status) == 4
    assert [b.plaintext(i) for i in (0, 1, 3, 4)] == [payloads(5)[i] for i in (0, 1, 3, 4)]


def test_receiver_index_check() -> None:
    k = AeadKey(KEY)
    b = Batch(payloads(3))
    b.seal(k)
    assert b.open(k, receiver=RECEIVER + 1) == 0
    assert list(b.status) == [DROP_RECEIVER] * 3
    with pytest.raises(EnvelopeError) as e:
        k.open(k.seal(5, b"x"), receiver=6)
    assert e.value.reason == DROP_RECEIVER and e.value.reason_name == "wrong_receiver"


def test_slots_already_dropped_are_left_alone() -> None:
    k = AeadKey(KEY, send_counter=10)
    b = Batch(payloads(4))
    b.status[1] = 200  # dropped by an earlier stage
    before = b.slot(1)
    assert b.seal(k) == 3
    assert b.slot(1) == before and b.lengths[1] == len(payloads(4)[1]) and b.status[1] == 200
    assert [b.counters[i] for i in (0, 2, 3)] == [10, 11, 12]  # no counter spent on the skipped slot
    assert b.open(k) == 3
    assert b.status[1] == 200


def test_plaintext_that_does_not_fit_its_slot() -> None:
    k = AeadKey(KEY)
    b = Batch([b"a" * 10, b"", b"c" * 10], off=16)
    b.lengths[0] = STRIDE - 16 - OVERHEAD + 1
    b.lengths[2] = STRIDE - 16 - OVERHEAD
    assert b.seal(k) == 2
    assert list(b.status) == [DROP_MALFORMED, 0, 0]
    assert list(b.lengths)[1:] == [16 + OVERHEAD, STRIDE]
    assert k.send_counter == 2  # the refused slot took no counter
    assert b.open(k) == 2 and b.lengths[1] == 0 and b.lengths[2] == STRIDE - 16 - OVERHEAD
    # An offset beyond the slot is refused too, for seal and open.
    lengths, status = array.array("I", [0]), bytearray(1)
    counters = array.array("Q", [0])
    assert k.seal_batch(bytearray(64), 64, lengths, status, 1, off=40) == 0
    assert status[0] == DROP_MALFORMED
    status[0] = 0
    lengths[0] = 64
    assert k.open_batch(bytearray(64), 64, lengths, status, counters, off=65) == 0
    assert status[0] == DROP_MALFORMED


def test_sending_stops_at_the_reject_limit() -> None:
    k = AeadKey(KEY, send_counter=REJECT_AFTER_MESSAGES - 2)
    b = Batch(payloads(4))
    assert b.seal(k) == 2
    assert list(b.status) == [0, 0, DROP_EXHAUSTED, DROP_EXHAUSTED]
    assert list(b.counters)[:2] == [REJECT_AFTER_MESSAGES - 2, REJECT_AFTER_MESSAGES - 1]
    assert k.send_counter == REJECT_AFTER_MESSAGES
    with pytest.raises(EnvelopeError, match="rekey") as e:
        k.seal(1, b"keepalive")
    assert e.value.reason == DROP_EXHAUSTED


def test_single_packet_helpers() -> None:
    k = AeadKey(KEY)
    env = k.seal(9, b"")  # a keepalive: empty plaintext
    assert len(env) == OVERHEAD
    view = memoryview(bytearray(env))
    assert k.open(view) == (0, b"")
    assert bytes(view) == env  # open leaves its input unchanged
    w = ReplayWindow(64)
    assert k.open(env, window=w) == (0, b"")
    with pytest.raises(EnvelopeError) as e:
        k.open(env, window=w)
    assert e.value.reason == DROP_REPLAYED
    with pytest.raises(EnvelopeError) as e:
        k.open(env[:-1])
    assert e.value.reason == DROP_MALFORMED
    with pytest.raises(EnvelopeError) as e:
        k.open(k.seal(9, b"hi", msg_type=2))
    assert e.value.reason == DROP_TYPE
    assert k.open(k.seal(9, b"hi", msg_type=2), msg_type=2) == (2, b"hi")
    with pytest.raises(EnvelopeError):
        parse_header(b"short")


def test_closed_key_is_wiped_and_unusable() -> None:
    k = AeadKey(bytearray(KEY))
    env = k.seal(1, b"before")
    b = Batch(payloads(2))
    assert not k.closed
    k.close()
    assert k.closed
    for use in (
        lambda: k.seal(1, b"after"),
        lambda: k.open(env),
        lambda: b.seal(k),
        lambda: b.open(k),
        lambda: k.seal_raw(bytes(12), b"", b""),
        lambda: k.open_raw(bytes(12), b"", bytes(16)),
    ):
        with pytest.raises(KeyClosedError, match="closed and wiped"):
            use()
    k.close()  # idempotent
    with AeadKey(KEY) as k2:
        assert k2.open(env) == (0, b"before")
    assert k2.closed


def test_guarded_idle_key_works_and_closes() -> None:
    k = AeadKey(KEY, protect_idle=True)
    b = Batch(payloads(3))
    assert b.seal(k) == 3
    assert b.open(AeadKey(KEY, protect_idle=True)) == 3
    assert k.open(k.seal(1, b"x")) == (3, b"x")
    k.wipe()
    with pytest.raises(KeyClosedError):
        k.seal(1, b"x")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        AeadKey(bytes(31))
    k = AeadKey(KEY)
    b = Batch(payloads(4))
    with pytest.raises(ValueError, match="holds 3 slots"):
        k.seal_batch(b.buf[: 3 * STRIDE + 10], STRIDE, b.lengths, b.status, 1)
    with pytest.raises(ValueError, match="status has 2"):
        k.seal_batch(b.buf, STRIDE, b.lengths, bytearray(2), 1)
    with pytest.raises(ValueError, match="counters has 1"):
        k.open_batch(b.buf, STRIDE, b.lengths, b.status, array.array("Q", [0]))
    with pytest.raises(ValueError, match="stride"):
        k.seal_batch(b.buf, 0, b.lengths, b.status, 1)
    with pytest.raises(ValueError, match="nonce"):
        k.seal_raw(bytes(8), b"", b"")
    with pytest.raises(BufferError, match="not writable"):
        k.seal_batch(bytes(b.buf), STRIDE, b.lengths, b.status, 1)  # read-only buffer
    assert k.seal_batch(bytearray(), STRIDE, array.array("I"), bytearray(), 1) == 0
    assert k.send_counter == 0


def test_close_while_a_batch_runs_in_another_thread() -> None:
    # The batch runs without the GIL; close() must not free the key under it. Whichever comes first, the
    # batch either completes in full or is refused as a whole, and the key ends up closed.
    k = AeadKey(KEY)
    b = Batch(payloads(2048, size=150))
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(b.seal(k))
        except KeyClosedError as e:
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    k.close()
    t.join(timeout=30)
    assert outcome and (outcome[0] == 2048 or isinstance(outcome[0], KeyClosedError))
    assert k.closed
    with pytest.raises(KeyClosedError):
        k.seal(1, b"")
    if outcome[0] == 2048:
        assert AeadKey(KEY).open_batch(b.buf, STRIDE, b.lengths, b.status, b.counters) == 2048


def test_two_threads_sealing_with_one_key_never_share_a_counter() -> None:
    # The TX worker thread seals batches while the trio thread seals keepalives and acks with the same
    # key: each call reserves its run of counters atomically (both batch calls release the GIL).
    k = AeadKey(KEY)
    rounds, n = 200, 64
    seen: list[list[int]] = [[], []]

    def run(who: int) -> None:
        b = Batch(payloads(n, 64))
        for _ in range(rounds):
            b.lengths = array.array("I", [64 + i % 7 for i in range(n)])
            b.status = bytearray(n)
            assert b.seal(k) == n
            for i in range(n):
                assert parse_header(b.envelope(i))[2] == b.counters[i]
            seen[who].extend(b.counters)

    threads = [threading.Thread(target=run, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    singles = [parse_header(k.seal(RECEIVER, b"ka"))[2] for _ in range(500)]
    for t in threads:
        t.join(timeout=30)
    everything = seen[0] + seen[1] + singles
    assert len(everything) == 2 * rounds * n + 500
    assert sorted(everything) == list(range(len(everything)))  # every counter once, none skipped
    assert k.send_counter == len(everything)
