"""Hop-field MACs: AES-128-CMAC known answers, key derivation, and constant-time comparison."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance._fast.hopmac import HopFieldKey, ct_equal, derive_hop_key, has_aesni, mac_input

DATA = Path(__file__).parent / "data"
VECTORS = json.loads((DATA / "mac-vectors.json").read_text())

PATHS = [False, True] if has_aesni() else [True]  # AES-NI (if present) and the OpenSSL fallback


@pytest.mark.parametrize("portable", PATHS)
@pytest.mark.parametrize("vec", VECTORS["cmac"], ids=lambda v: v["input"])
def test_cmac_known_answers(vec: dict[str, str], portable: bool) -> None:
    # Known answers: tests/data/mac-vectors.json (from the scapy-scion-int router capture).
    key = HopFieldKey(bytes.fromhex(vec["key"]), portable=portable)
    assert key.uses_aesni is (not portable)
    assert key.mac(bytes.fromhex(vec["input"])).hex() == vec["mac"]


@pytest.mark.parametrize("vec", VECTORS["cmac"], ids=lambda v: v["input"])
def test_hop_mac_builds_the_reference_input(vec: dict[str, str]) -> None:
    raw = bytes.fromhex(vec["input"])
    seg_id, ts = int.from_bytes(raw[2:4], "big"), int.from_bytes(raw[4:8], "big")
    exp, ing, eg = raw[9], int.from_bytes(raw[10:12], "big"), int.from_bytes(raw[12:14], "big")
    assert mac_input(seg_id, ts, exp, ing, eg) == raw
    key = HopFieldKey(bytes.fromhex(vec["key"]))
    assert key.full_hop_mac(seg_id, ts, exp, ing, eg).hex() == vec["mac"]
    assert key.hop_mac(seg_id, ts, exp, ing, eg) == bytes.fromhex(vec["mac"])[:6]
    assert key.verify(seg_id, ts, exp, ing, eg, bytes.fromhex(vec["mac"])[:6])


@pytest.mark.parametrize("portable", PATHS)
def test_aes_fips197_known_answer(portable: bool) -> None:
    # FIPS-197 appendix C.1 (AES-128).
    key = HopFieldKey(bytes(range(16)), portable=portable)
    assert key.aes(bytes.fromhex("00112233445566778899aabbccddeeff")).hex() == (
        "69c4e0d86a7b0430d8cdb78070b4c55a"
    )


def test_cmac_rfc4493_example2() -> None:
    # RFC 4493 section 4, example 2: one complete block.
    key = HopFieldKey(bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"))
    assert key.mac(bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")).hex() == (
        "070a16b46b4d4144f79bdd9dd04a287c"
    )


@pytest.mark.parametrize("vec", VECTORS["key_derivation"], ids=lambda v: v["master_b64"])
def test_key_derivation(vec: dict[str, str]) -> None:
    master = base64.b64decode(vec["master_b64"])
    want = (
        base64.b64decode(vec["hop_field_key_b64"])
        if "hop_field_key_b64" in vec
        else bytes.fromhex(vec["hop_field_key_hex"])
    )
    assert derive_hop_key(master) == want


def test_key_derivation_refuses_empty_master() -> None:
    with pytest.raises(ValueError):
        derive_hop_key(b"")


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), block=st.binary(min_size=16, max_size=16))
def test_cmac_matches_cryptography(key: bytes, block: bytes) -> None:
    # Differential: OpenSSL's CMAC through `cryptography` is an independent implementation.
    c = CMAC(algorithms.AES(key))
    c.update(block)
    want = c.finalize()
    for portable in PATHS:
        assert HopFieldKey(key, portable=portable).mac(block) == want


def test_ct_equal_semantics() -> None:
    assert ct_equal(b"abcdef", b"abcdef")
    assert ct_equal(b"", b"")
    assert not ct_equal(b"abcdef", b"abcdeg")
    assert not ct_equal(b"\x00abcde", b"\x01abcde")
    assert not ct_equal(b"abcdef", b"abcde")


def test_verify_rejects_wrong_mac_and_length() -> None:
    key = HopFieldKey(bytes(16))
    good = key.hop_mac(1, 2, 3, 4, 5)
    assert key.verify(1, 2, 3, 4, 5, good)
    for i in range(6):
        bad = bytearray(good)
        bad[i] ^= 0x80
        assert not key.verify(1, 2, 3, 4, 5, bytes(bad))
    assert not key.verify(1, 2, 3, 4, 5, good[:5])
    assert not key.verify(1, 2, 3, 4, 6, good)  # every field is covered


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0, 0, 0, 0),
        (0x10000, 0, 0, 0, 0),
        (0, 1 << 32, 0, 0, 0),
        (0, 0, 256, 0, 0),
        (0, 0, 0, 0, 1 << 16),
    ],
)
def test_field_ranges_are_checked(args: tuple[int, int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        HopFieldKey(bytes(16)).hop_mac(*args)


def test_key_length_is_checked() -> None:
    with pytest.raises(ValueError):
        HopFieldKey(bytes(15))
    with pytest.raises(ValueError):
        HopFieldKey(bytes(16)).mac(bytes(15))
