"""mac1/mac2, cookie replies, load detection and the per-source rate limiter, with time passed in."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.tunnel import cookie, messages
from scion_appliance.tunnel.cookie import CookieChecker, CookieDrop, CookieError, CookieGenerator
from scion_appliance.tunnel.noise_protocol import KeyPair

RESP = KeyPair.from_private(bytes(range(32)))
SRC = b"1-ff00:0:111,[127.0.0.1]:30041"


def _msg() -> bytes:
    return messages.Initiation(42, b"e" * 32, b"s" * 48, b"t" * 28).encode()


def test_mac_construction_is_keyed_blake2b() -> None:
    # Independent of libsodium: Python's hashlib implements the same BLAKE2b.
    assert cookie.mac1_key(RESP.public) == hashlib.blake2b(b"mac1----" + RESP.public, digest_size=32).digest()
    k = cookie.mac1_key(RESP.public)
    body = _msg()[:116]
    assert cookie.blake2b_mac(k, body) == hashlib.blake2b(body, digest_size=16, key=k).digest()


def test_mac1_accepts_own_and_refuses_tampering() -> None:
    gen, chk = CookieGenerator(RESP.public), CookieChecker(RESP.public)
    msg = gen.add_macs(_msg(), now=0.0)
    assert chk.check_mac1(msg)
    assert msg[-16:] == bytes(16)  # no cookie yet: mac2 zero
    for i in (0, 8, 115, 116, 131):
        bad = bytearray(msg)
        bad[i] ^= 0x80
        assert not chk.check_mac1(bytes(bad)), i
    # mac1 toward another responder does not verify here
    other = CookieGenerator(KeyPair.generate().public).add_macs(_msg(), now=0.0)
    assert not chk.check_mac1(other)
    assert not chk.check_mac1(b"short")


def test_cookie_round_trip_makes_mac2_valid() -> None:
    gen, chk = CookieGenerator(RESP.public), CookieChecker(RESP.public)
    msg = gen.add_macs(_msg(), now=10.0)
    assert not chk.check_mac2(msg, SRC, now=10.0)
    reply = chk.create_reply(msg, receiver=42, source=SRC, now=10.0)
    parsed = messages.parse_cookie_reply(reply)
    assert parsed.receiver == 42
    gen.consume_reply(parsed, now=10.1)
    msg2 = gen.add_macs(_msg(), now=10.2)
    assert msg2[-16:] != bytes(16)
    assert chk.check_mac1(msg2) and chk.check_mac2(msg2, SRC, now=10.3)
    # bound to the source address
    assert not chk.check_mac2(msg2, b"1-ff00:0:111,[127.0.0.2]:30041", now=10.3)


def test_secret_rotation_and_cookie_lifetime() -> None:
    gen, chk = CookieGenerator(RESP.public), CookieChecker(RESP.public)
    msg = gen.add_macs(_msg(), now=0.0)
    gen.consume_reply(messages.parse_cookie_reply(chk.create_reply(msg, 1, SRC, now=0.0)), now=0.0)
    assert chk.check_mac2(gen.add_macs(_msg(), now=119.0), SRC, now=119.0)
    # after 120 s the checker's secret is stale: old cookies stop working and the next reply rotates it
    m = gen.add_macs(_msg(), now=119.0)
    assert not chk.check_mac2(m, SRC, now=121.0)
    gen.consume_reply(messages.parse_cookie_reply(chk.create_reply(m, 1, SRC, now=121.0)), now=121.0)
    assert chk.check_mac2(gen.add_macs(_msg(), now=122.0), SRC, now=122.0)
    # the generator stops sending a cookie older than 120 s
    assert gen.add_macs(_msg(), now=121.0 + 121.0)[-16:] == bytes(16)


def test_cookie_reply_checks() -> None:
    gen, chk = CookieGenerator(RESP.public), CookieChecker(RESP.public)
    reply = messages.parse_cookie_reply(chk.create_reply(gen.add_macs(_msg(), 0.0), 1, SRC, 0.0))
    with pytest.raises(CookieError) as err:
        CookieGenerator(RESP.public).consume_reply(reply, 0.0)  # never sent anything
    assert err.value.reason is CookieDrop.NO_INITIATION
    gen.add_macs(messages.Initiation(43, b"x" * 32, b"s" * 48, b"t" * 28).encode(), 0.0)  # newer mac1
    with pytest.raises(CookieError) as err:
        gen.consume_reply(reply, 0.0)  # answers a message we no longer wait for
    assert err.value.reason is CookieDrop.DECRYPT
    forged = messages.CookieReply(1, reply.nonce, bytes(32))
    with pytest.raises(CookieError):
        gen.consume_reply(forged, 0.0)


def test_load_monitor_holds_for_a_second() -> None:
    lm = cookie.LoadMonitor(threshold=128, hold=1.0)
    assert not lm.under_load(127, now=0.0)
    assert lm.under_load(128, now=1.0)
    assert lm.under_load(0, now=1.9)
    assert not lm.under_load(0, now=2.0)


def test_rate_limiter_burst_then_rate() -> None:
    rl = cookie.RateLimiter()
    assert [rl.allow(SRC, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert rl.allow(b"other", 0.0)  # per source
    assert not rl.allow(SRC, 0.049)
    assert rl.allow(SRC, 0.050)  # one token per 50 ms (20/s)
    assert not rl.allow(SRC, 0.051)
    # a long pause refills at most a burst
    assert [rl.allow(SRC, 100.0) for _ in range(6)] == [True] * 5 + [False]


def test_rate_limiter_sustained_rate_and_gc() -> None:
    rl = cookie.RateLimiter()
    allowed = sum(rl.allow(SRC, i * 0.001) for i in range(10_000))  # 1000/s offered for 10 s
    assert 200 <= allowed <= 205  # 20/s for 10 s plus the burst
    rl.allow(b"a", 20.0)
    rl.allow(b"b", 22.0)
    assert len(rl) == 1  # idle entries were collected


def test_rate_limiter_table_is_bounded() -> None:
    rl = cookie.RateLimiter(max_sources=3)
    assert all(rl.allow(bytes([i]), 0.0) for i in range(3))
    assert not rl.allow(b"new", 0.0)
    assert rl.allow(b"new", 2.0)  # after the others went idle and were collected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_checker_never_crashes(data: bytes) -> None:
    chk = CookieChecker(RESP.public)
    assert chk.check_mac1(data) in (True, False)
    assert chk.check_mac2(data, SRC, 0.0) in (True, False)
