"""Noise framework pieces against the cacophony known answers (tests/data/noise-vectors.json, see README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.tunnel import noise_protocol as noise
from scion_appliance.tunnel.noise_protocol import CipherState, HandshakeState, KeyPair, NoiseError

DATA = Path(__file__).parent / "data" / "noise-vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(DATA.read_text())["vectors"]


def _h(v: dict[str, Any], key: str) -> bytes | None:
    return bytes.fromhex(v[key]) if key in v else None


def _pair(v: dict[str, Any], key: str) -> KeyPair | None:
    raw = _h(v, key)
    return KeyPair.from_private(raw) if raw is not None else None


def _states(v: dict[str, Any]) -> tuple[HandshakeState, HandshakeState]:
    init = HandshakeState(
        v["protocol_name"],
        initiator=True,
        prologue=bytes.fromhex(v["init_prologue"]),
        s=_pair(v, "init_static"),
        e=_pair(v, "init_ephemeral"),
        rs=_h(v, "init_remote_static"),
        psks=[bytes.fromhex(p) for p in v.get("init_psks", [])],
    )
    resp = HandshakeState(
        v["protocol_name"],
        initiator=False,
        prologue=bytes.fromhex(v["resp_prologue"]),
        s=_pair(v, "resp_static"),
        e=_pair(v, "resp_ephemeral"),
        psks=[bytes.fromhex(p) for p in v.get("resp_psks", [])],
    )
    return init, resp


@pytest.mark.parametrize("v", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_vector(v: dict[str, Any]) -> None:
    init, resp = _states(v)
    msgs = v["messages"]
    # Handshake: message 0 initiator -> responder, message 1 back.
    for i, (writer, reader) in enumerate(((init, resp), (resp, init))):
        payload, expect = bytes.fromhex(msgs[i]["payload"]), bytes.fromhex(msgs[i]["ciphertext"])
        assert writer.write_message(payload) == expect, f"message {i} ciphertext"
        assert reader.read_message(expect) == payload, f"message {i} decrypted"
    assert init.finished and resp.finished
    expected_hash = bytes.fromhex(v["handshake_hash"])
    assert init.get_handshake_hash() == expected_hash
    assert resp.get_handshake_hash() == expected_hash
    assert init.split_result is not None and resp.split_result is not None
    i_send, i_recv = init.split_result
    r_recv, r_send = resp.split_result
    assert i_send.k == r_recv.k and i_recv.k == r_send.k and i_send.k != i_recv.k
    # Transport: alternate, initiator first; every ciphertext is checked on the wire and decrypted back.
    for i, m in enumerate(msgs[2:], start=2):
        payload, expect = bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])
        send, recv = (i_send, r_recv) if i % 2 == 0 else (r_send, i_recv)
        assert send.encrypt_with_ad(b"", payload) == expect, f"transport message {i}"
        assert recv.decrypt_with_ad(b"", expect) == payload


@pytest.mark.parametrize("v", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_vector_tampered_handshake_refused(v: dict[str, Any]) -> None:
    _, resp = _states(v)
    msg = bytearray.fromhex(v["messages"][0]["ciphertext"])
    msg[-1] ^= 1  # the last byte is always inside an authenticated part (payload or its tag)
    if v["protocol_name"].startswith("Noise_NN"):
        # NN's first message has no key yet: its payload travels in clear, so tampering is not detectable.
        assert resp.read_message(bytes(msg)) != bytes.fromhex(v["messages"][0]["payload"])
    else:
        with pytest.raises(NoiseError) as err:
            resp.read_message(bytes(msg))
        assert err.value.reason == "decrypt"


def test_nonce_layout_is_little_endian_after_four_zero_bytes() -> None:
    assert noise.nonce_bytes(1) == bytes.fromhex("000000000100000000000000")
    assert noise.nonce_bytes(0x0102030405060708) == bytes.fromhex("000000000807060504030201")


def test_hmac_matches_rfc2104_over_blake2b() -> None:
    # Independent check of the construction: Python's hmac module with hashlib.blake2b (block size 128).
    import hashlib
    import hmac

    key, data = b"k" * 64, b"some data"
    assert noise.hmac_hash(key, data) == hmac.new(key, data, hashlib.blake2b).digest()
    long_key = b"x" * 200
    assert noise.hmac_hash(long_key, data) == hmac.new(long_key, data, hashlib.blake2b).digest()


def test_failed_decrypt_leaves_nonce() -> None:
    k = bytes(range(32))
    a, b = CipherState(k), CipherState(k)
    ct = a.encrypt_with_ad(b"ad", b"hello")
    with pytest.raises(NoiseError):
        b.decrypt_with_ad(b"other ad", ct)
    assert b.n == 0
    assert b.decrypt_with_ad(b"ad", ct) == b"hello" and b.n == 1


def test_reserved_nonce_refused() -> None:
    cs = CipherState(bytes(32), noise.MAX_NONCE - 1)
    cs.encrypt_with_ad(b"", b"last")
    with pytest.raises(NoiseError) as err:
        cs.encrypt_with_ad(b"", b"one too many")
    assert err.value.reason == "nonce"


def test_rekey_changes_key_deterministically() -> None:
    a, b = CipherState(bytes(32)), CipherState(bytes(32))
    a.rekey()
    b.rekey()
    assert a.k == b.k and a.k != bytes(32) and a.k is not None and len(a.k) == 32


def test_small_order_public_key_refused() -> None:
    with pytest.raises(NoiseError) as err:
        noise.dh(bytes(range(32)), bytes(32))
    assert err.value.reason == "dh"


def test_out_of_turn_and_after_finish() -> None:
    v = VECTORS[0]
    init, resp = _states(v)
    with pytest.raises(NoiseError):
        init.read_message(b"x" * 48)
    resp.read_message(init.write_message(b""))
    init.read_message(resp.write_message(b""))
    with pytest.raises(NoiseError):
        init.write_message(b"")


def test_unknown_protocol_names() -> None:
    for name in (
        "Noise_XX_25519_ChaChaPoly_BLAKE2b",
        "Noise_IK_448_ChaChaPoly_BLAKE2b",
        "IK",
        "Noise_IK_25519",
    ):
        with pytest.raises(ValueError):
            HandshakeState(name, initiator=True)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2))
def test_random_bytes_never_crash_a_responder(data: bytes, which: int) -> None:
    _init, resp = _states(VECTORS[which])
    try:
        resp.read_message(data)
    except NoiseError:
        pass


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_fresh_ik_handshake_round_trip(p1: bytes, p2: bytes) -> None:
    si, sr = KeyPair.generate(), KeyPair.generate()
    psk = bytes(range(32))
    init = HandshakeState(
        "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b", True, b"pro", s=si, rs=sr.public, psks=[psk]
    )
    resp = HandshakeState("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b", False, b"pro", s=sr)
    assert resp.read_message(init.write_message(p1)) == p1
    assert resp.rs == si.public
    resp.psks.append(psk)  # the responder learns the psk after it learnt who the initiator is
    assert init.read_message(resp.write_message(p2)) == p2
    assert init.get_handshake_hash() == resp.get_handshake_hash()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64), st.binary(max_size=64))
def test_blake2b_matches_hashlib(data: bytes, size: int, key: bytes) -> None:
    # hashlib's BLAKE2b is an independent implementation (CPython's own), checking the direct cffi call.
    import hashlib

    assert noise.blake2b(data, size, key) == hashlib.blake2b(data, digest_size=size, key=key).digest()
