"""The appliance handshake between in-memory peers: keys, allowlist, replay marks, tampering, cookies."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.tunnel import keys, messages
from scion_appliance.tunnel import noise_protocol as noise
from scion_appliance.tunnel.handshake import (
    Accepted,
    CookieChallenge,
    HandshakeDrop,
    HandshakeError,
    Handshaker,
    HandshakeResult,
    HandshakeTimestampStore,
    MemoryTimestampStore,
    PeerConfig,
    tai64n,
    tai64n_after,
)

A_PRIV = bytes.fromhex("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1")
B_PRIV = bytes.fromhex("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893")
A_PUB, B_PUB = keys.public_key(A_PRIV), keys.public_key(B_PRIV)
PSK = bytes(range(32))
SRC_A = b"1-ff00:0:110,[127.0.0.1]:30057"
SRC_B = b"1-ff00:0:111,[127.0.0.2]:30057"
WALL = 1_700_000_000.0


def _pair(
    psk: bytes | None = None, use_psk: bool = True, store: HandshakeTimestampStore | None = None
) -> tuple[Handshaker, Handshaker]:
    a = Handshaker(A_PRIV, [PeerConfig(B_PUB, psk)], MemoryTimestampStore(), psk=use_psk)
    b = Handshaker(B_PRIV, [PeerConfig(A_PUB, psk)], store or MemoryTimestampStore(), psk=use_psk)
    return a, b


def _accept(outcome: Accepted | CookieChallenge) -> Accepted:
    assert isinstance(outcome, Accepted), outcome
    return outcome


def _handshake(
    a: Handshaker, b: Handshaker, now: float = 0.0, wall: float = WALL
) -> tuple[HandshakeResult, ...]:
    init = a.create_initiation(B_PUB, now=now, wall_time=wall)
    resp = _accept(b.handle_initiation(init, source=SRC_A, now=now))
    assert resp.reply is not None
    fin = _accept(a.handle_response(resp.reply, source=SRC_B, now=now))
    assert fin.reply is None
    return fin.result, resp.result


def _reason(exc: pytest.ExceptionInfo[HandshakeError]) -> HandshakeDrop:
    return exc.value.reason


@pytest.mark.parametrize(
    ("psk", "use_psk"), [(None, False), (None, True), (PSK, True)], ids=["IK", "IKpsk2-zero", "IKpsk2"]
)
def test_full_handshake_derives_matching_keys(psk: bytes | None, use_psk: bool) -> None:
    a, b = _pair(psk, use_psk)
    ra, rb = _handshake(a, b)
    assert ra.initiator and not rb.initiator
    assert ra.peer_public == B_PUB and rb.peer_public == A_PUB
    assert ra.send_key == rb.receive_key and ra.receive_key == rb.send_key and ra.send_key != ra.receive_key
    assert ra.local_index == rb.remote_index and ra.remote_index == rb.local_index
    assert ra.handshake_hash == rb.handshake_hash
    assert a.protocol == (
        "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b" if use_psk else "Noise_IK_25519_ChaChaPoly_BLAKE2b"
    )
    # The keys work for the data envelope: nonce = counter, header as associated data.
    header = messages.encode_data_header(ra.remote_index, 0)
    sealed = noise.encrypt(ra.send_key, 0, header, b"ip packet")
    assert noise.decrypt(rb.receive_key, 0, header, sealed) == b"ip packet"


def test_handshake_keys_differ_every_time() -> None:
    a, b = _pair(PSK)
    first = _handshake(a, b, now=0.0, wall=WALL)[0]
    second = _handshake(a, b, now=10.0, wall=WALL + 10)[0]
    assert first.send_key != second.send_key and first.local_index != second.local_index


def test_psk_mismatch_fails_at_the_response() -> None:
    a = Handshaker(A_PRIV, [PeerConfig(B_PUB, PSK)], MemoryTimestampStore())
    b = Handshaker(B_PRIV, [PeerConfig(A_PUB, bytes(32))], MemoryTimestampStore())
    resp = _accept(
        b.handle_initiation(a.create_initiation(B_PUB, now=0, wall_time=WALL), source=SRC_A, now=0)
    )
    assert resp.reply is not None
    with pytest.raises(HandshakeError) as err:
        a.handle_response(resp.reply, source=SRC_B, now=0)
    assert _reason(err) is HandshakeDrop.DECRYPT


def test_pattern_mismatch_refused() -> None:
    a = Handshaker(A_PRIV, [PeerConfig(B_PUB)], MemoryTimestampStore(), psk=False)
    b = Handshaker(B_PRIV, [PeerConfig(A_PUB)], MemoryTimestampStore(), psk=True)
    with pytest.raises(HandshakeError) as err:
        b.handle_initiation(a.create_initiation(B_PUB, now=0, wall_time=WALL), source=SRC_A, now=0)
    assert _reason(err) is HandshakeDrop.DECRYPT


def test_psk_needs_ikpsk2() -> None:
    with pytest.raises(ValueError, match="IKpsk2"):
        Handshaker(A_PRIV, [PeerConfig(B_PUB, PSK)], MemoryTimestampStore(), psk=False)


def test_unknown_static_key_refused() -> None:
    stranger = keys.generate_private_key()
    s = Handshaker(stranger, [PeerConfig(B_PUB)], MemoryTimestampStore())
    store = MemoryTimestampStore()
    b = Handshaker(B_PRIV, [PeerConfig(A_PUB)], store)
    with pytest.raises(HandshakeError) as err:
        b.handle_initiation(s.create_initiation(B_PUB, now=0, wall_time=WALL), source=SRC_A, now=0)
    assert _reason(err) is HandshakeDrop.UNKNOWN_PEER
    assert store.marks == {} and len(b.index_table) == 0  # nothing was recorded or allocated
    # ... and the initiator side refuses to start a handshake with a key that is not configured
    with pytest.raises(HandshakeError) as err:
        s.create_initiation(A_PUB, now=0, wall_time=WALL)
    assert _reason(err) is HandshakeDrop.UNKNOWN_PEER


def test_removed_peer_refused() -> None:
    a, b = _pair()
    b.remove_peer(A_PUB)
    assert not b.is_allowed(A_PUB)
    with pytest.raises(HandshakeError) as err:
        b.handle_initiation(a.create_initiation(B_PUB, now=0, wall_time=WALL), source=SRC_A, now=0)
    assert _reason(err) is HandshakeDrop.UNKNOWN_PEER


def test_replayed_initiation_refused() -> None:
    a, b = _pair(PSK)
    init = a.create_initiation(B_PUB, now=0, wall_time=WALL)
    _accept(b.handle_initiation(init, source=SRC_A, now=0))
    with pytest.raises(HandshakeError) as err:
        b.handle_initiation(init, source=SRC_A, now=1.0)
    assert _reason(err) is HandshakeDrop.REPLAY
    # an older initiation captured earlier is refused too
    a2, _ = _pair(PSK)
    older = a2.create_initiation(B_PUB, now=0, wall_time=WALL - 60)
    with pytest.raises(HandshakeError) as err:
        b.handle_initiation(older, source=SRC_A, now=2.0)
    assert _reason(err) is HandshakeDrop.REPLAY
    # a newer one is fine
    _accept(b.handle_initiation(a.create_initiation(B_PUB, now=3, wall_time=WALL + 3), source=SRC_A, now=3.0))


def test_replay_refused_by_a_fresh_responder_sharing_the_store() -> None:
    store = MemoryTimestampStore()
    a, b = _pair(PSK, store=store)
    init = a.create_initiation(B_PUB, now=0, wall_time=WALL)
    _accept(b.handle_initiation(init, source=SRC_A, now=0))
    restarted = Handshaker(B_PRIV, [PeerConfig(A_PUB, PSK)], store)  # "after a restart": new process state
    with pytest.raises(HandshakeError) as err:
        restarted.handle_initiation(init, source=SRC_A, now=0)
    assert _reason(err) is HandshakeDrop.REPLAY


def test_replay_refused_after_reopening_the_rocksdict_store(tmp_path: Path) -> None:
    from scion_appliance.state import StateStore

    a, _ = _pair(PSK)
    init = a.create_initiation(B_PUB, now=0, wall_time=WALL)
    with StateStore.open(tmp_path) as store:
        b = Handshaker(B_PRIV, [PeerConfig(A_PUB, PSK)], store)
        _accept(b.handle_initiation(init, source=SRC_A, now=0))
        mark = store.get_handshake_timestamp(A_PUB)
        assert mark is not None and len(mark) == 12
    with StateStore.open(tmp_path) as store:
        with pytest.raises(HandshakeError) as err:
            Handshaker(B_PRIV, [PeerConfig(A_PUB, PSK)], store).handle_initiation(init, source=SRC_A, now=0)
        assert _reason(err) is HandshakeDrop.REPLAY
        assert store.get_handshake_timestamp(A_PUB) == mark


def test_initiations_in_one_clock_slot_still_increase() -> None:
    a, b = _pair()
    first = a.create_initiation(B_PUB, now=0, wall_time=WALL)
    second = a.create_initiation(B_PUB, now=0.001, wall_time=WALL)  # same whitened timestamp
    backwards = a.create_initiation(B_PUB, now=0.002, wall_time=WALL - 5)  # the wall clock stepped back
    _accept(b.handle_initiation(first, source=SRC_A, now=0))
    _accept(b.handle_initiation(second, source=SRC_A, now=1))
    _accept(b.handle_initiation(backwards, source=SRC_A, now=2))


def test_initiation_flood_refused() -> None:
    a, b = _pair()
    _accept(b.handle_initiation(a.create_initiation(B_PUB, now=0, wall_time=WALL), source=SRC_A, now=10.0))
    with pytest.raises(HandshakeError) as err:
        b.handle_initiation(a.create_initiation(B_PUB, now=0, wall_time=WALL + 1), source=SRC_A, now=10.01)
    assert _reason(err) is HandshakeDrop.FLOOD
    _accept(
        b.handle_initiation(a.create_initiation(B_PUB, now=0, wall_time=WALL + 2), source=SRC_A, now=10.02)
    )


def _remac(msg: bytes, responder_public: bytes) -> bytes:
    from scion_appliance.tunnel.cookie import CookieGenerator

    return CookieGenerator(responder_public).add_macs(msg, 0.0)


@pytest.mark.parametrize("offset", [4, 8, 39, 40, 87, 88, 115])
def test_tampered_initiation_refused(offset: int) -> None:
    a, b = _pair(PSK)
    init = bytearray(a.create_initiation(B_PUB, now=0, wall_time=WALL))
    init[offset] ^= 0x01
    with pytest.raises(HandshakeError) as err:
        b.handle_initiation(bytes(init), source=SRC_A, now=0)
    assert _reason(err) is HandshakeDrop.BAD_MAC1
    # with a correct mac1 over the tampered bytes the Noise layer catches it (the sender index is not
    # covered by Noise: a changed index only changes where the response goes)
    if offset >= 8:
        with pytest.raises(HandshakeError) as err:
            b.handle_initiation(_remac(bytes(init), B_PUB), source=SRC_A, now=0)
        assert _reason(err) in (HandshakeDrop.DECRYPT, HandshakeDrop.UNKNOWN_PEER)


def test_bad_mac1_refused_and_nothing_recorded() -> None:
    store = MemoryTimestampStore()
    a, b = _pair(store=store)
    init = bytearray(a.create_initiation(B_PUB, now=0, wall_time=WALL))
    init[messages.mac1_offset(len(init))] ^= 0x80
    with pytest.raises(HandshakeError) as err:
        b.handle_initiation(bytes(init), source=SRC_A, now=0)
    assert _reason(err) is HandshakeDrop.BAD_MAC1
    assert store.marks == {}
    # an initiation meant for another responder fails mac1 here too
    other = Handshaker(A_PRIV, [PeerConfig(A_PUB[::-1])], MemoryTimestampStore())
    with pytest.raises(HandshakeError) as err:
        b.handle_initiation(other.create_initiation(A_PUB[::-1], now=0, wall_time=WALL), source=SRC_A, now=0)
    assert _reason(err) is HandshakeDrop.BAD_MAC1


def test_tampered_response_refused_and_real_one_still_accepted() -> None:
    a, b = _pair(PSK)
    resp = _accept(
        b.handle_initiation(a.create_initiation(B_PUB, now=0, wall_time=WALL), source=SRC_A, now=0)
    )
    assert resp.reply is not None
    for offset in (12, 43, 44, 59):
        bad = bytearray(resp.reply)
        bad[offset] ^= 0x01
        with pytest.raises(HandshakeError) as err:
            a.handle_response(bytes(bad), source=SRC_B, now=0)
        assert _reason(err) is HandshakeDrop.BAD_MAC1
        with pytest.raises(HandshakeError) as err:
            a.handle_response(_remac(bytes(bad), A_PUB), source=SRC_B, now=0)
        assert _reason(err) is HandshakeDrop.DECRYPT
    fin = _accept(a.handle_response(resp.reply, source=SRC_B, now=0))
    assert fin.result.send_key == resp.result.receive_key
    with pytest.raises(HandshakeError) as err:  # a replayed response finds nothing pending
        a.handle_response(resp.reply, source=SRC_B, now=1)
    assert _reason(err) is HandshakeDrop.UNKNOWN_INDEX


def test_response_to_a_superseded_initiation_refused() -> None:
    a, b = _pair()
    old = a.create_initiation(B_PUB, now=0, wall_time=WALL)
    a.create_initiation(B_PUB, now=5, wall_time=WALL + 5)
    resp = _accept(b.handle_initiation(old, source=SRC_A, now=0))
    assert resp.reply is not None
    with pytest.raises(HandshakeError) as err:
        a.handle_response(resp.reply, source=SRC_B, now=5)
    assert _reason(err) is HandshakeDrop.UNKNOWN_INDEX


def test_under_load_cookie_round_trip_then_rate_limit() -> None:
    a, b = _pair(PSK)
    init = a.create_initiation(B_PUB, now=0, wall_time=WALL)
    out = b.handle_initiation(init, source=SRC_A, now=0, under_load=True)
    assert isinstance(out, CookieChallenge)
    assert a.handle_cookie_reply(out.reply, now=0) == B_PUB
    # the retry carries mac2 and goes through, even under load
    retry = a.create_initiation(B_PUB, now=0.1, wall_time=WALL + 0.1)
    assert retry[-16:] != bytes(16)
    _accept(b.handle_initiation(retry, source=SRC_A, now=0.1, under_load=True))
    # the cookie is bound to the source: another address gets a challenge
    third = a.create_initiation(B_PUB, now=0.2, wall_time=WALL + 0.2)
    assert isinstance(b.handle_initiation(third, source=SRC_B, now=0.2, under_load=True), CookieChallenge)
    # per-source rate limit under load: 40 initiations over 0.84 s (just under the per-peer flood limit)
    # get a burst of 5 plus 20/s through, the rest is refused
    outcomes = []
    for i in range(40):
        msg = a.create_initiation(B_PUB, now=1.0, wall_time=WALL + 1 + i)
        try:
            b.handle_initiation(msg, source=SRC_A, now=1.0 + i * 0.021, under_load=True)
            outcomes.append("ok")
        except HandshakeError as e:
            outcomes.append(e.reason.value)
    assert set(outcomes) == {"ok", HandshakeDrop.RATE_LIMITED.value}
    assert 20 <= outcomes.count("ok") <= 23


def test_cookie_reply_errors() -> None:
    a, _ = _pair()
    with pytest.raises(HandshakeError) as err:
        a.handle_cookie_reply(messages.CookieReply(1234, bytes(24), bytes(32)).encode(), now=0)
    assert _reason(err) is HandshakeDrop.UNKNOWN_INDEX
    init = a.create_initiation(B_PUB, now=0, wall_time=WALL)
    index = messages.parse_initiation(init).sender
    with pytest.raises(HandshakeError) as err:
        a.handle_cookie_reply(messages.CookieReply(index, bytes(24), bytes(32)).encode(), now=0)
    assert _reason(err) is HandshakeDrop.BAD_COOKIE


def test_tai64n() -> None:
    # TAI64N of the Unix epoch: label 2^62 + 10 (as wireguard-go's tai64n package writes it), 0 ns.
    assert tai64n(0.0) == bytes.fromhex("400000000000000a00000000")
    ts = tai64n(1.999999999)
    assert ts[:8] == bytes.fromhex("400000000000000b") and int.from_bytes(ts[8:], "big") % (1 << 24) == 0
    assert tai64n_after(ts) > ts
    assert tai64n_after(bytes.fromhex("400000000000000b3b000000")) == bytes.fromhex(
        "400000000000000c00000000"
    )
    assert all(tai64n(WALL + i / 7) <= tai64n(WALL + (i + 1) / 7) for i in range(50))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_only_raise_handshake_error(data: bytes, load: bool) -> None:
    a, b = _pair()
    for call in (b.handle_initiation, a.handle_response):
        try:
            call(data, source=SRC_A, now=0, under_load=load)
        except HandshakeError:
            pass
    try:
        a.handle_cookie_reply(data, now=0)
    except HandshakeError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=147), st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_to_an_initiation_is_refused(offset: int, flip: int) -> None:
    a, b = _pair(PSK)
    init = bytearray(a.create_initiation(B_PUB, now=0, wall_time=WALL))
    init[offset] ^= flip
    try:
        out = b.handle_initiation(bytes(init), source=SRC_A, now=0)
    except HandshakeError:
        return
    # only mac2 is not checked when not under load
    assert offset >= 132 and isinstance(out, Accepted)


def test_session_keys_drive_the_aead_module_both_ways() -> None:
    aead = pytest.importorskip("scion_appliance._fast.aead")
    ra, rb = _handshake(*_pair(PSK))
    a_send, b_recv = aead.AeadKey(ra.send_key), aead.AeadKey(rb.receive_key)
    b_send, a_recv = aead.AeadKey(rb.send_key), aead.AeadKey(ra.receive_key)
    to_b = a_send.seal(ra.remote_index, b"from a")
    to_a = b_send.seal(rb.remote_index, b"from b")
    assert messages.parse_data_header(to_b).receiver == rb.local_index
    assert messages.parse_data_header(to_a).receiver == ra.local_index
    assert b_recv.open(to_b, receiver=rb.local_index) == (0, b"from a")
    assert a_recv.open(to_a, receiver=ra.local_index) == (0, b"from b")
    # the same bytes through Noise's own CipherState primitive: nonce = 4 zero bytes + LE counter
    assert noise.decrypt(rb.receive_key, 0, to_b[:16], to_b[16:]) == b"from a"
    for k in (a_send, b_recv, b_send, a_recv):
        k.close()
