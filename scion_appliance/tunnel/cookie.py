"""Denial-of-service defences of the handshake: mac1, mac2 and cookie replies, load detection, rate limits.

What this module owns: WireGuard's cookie mechanism (whitepaper section 5.4.4 and 5.4.7, wireguard-go
``device/cookie.go``, ``ratelimiter/``, ``device.IsUnderLoad``), with the time passed in.

Rules kept here:
- mac1 = MAC(HASH("mac1----" || responder static public), message up to mac1). Every handshake message
  carries it; a wrong mac1 is dropped before any Diffie-Hellman work.
- Under load, a handshake message must also carry mac2 = MAC(cookie, message up to mac2), where
  cookie = MAC(secret, source). The secret is random and replaced every COOKIE_REFRESH_TIME (120 s).
  A message without a valid mac2 gets a cookie reply (XChaCha20-Poly1305 under
  HASH("cookie--" || responder static public), associated data = the message's mac1) instead of DH work.
- Deliberate difference from WireGuard: HASH is BLAKE2b with a 32-byte output and MAC is keyed BLAKE2b
  with a 16-byte output (WireGuard uses BLAKE2s); the appliance uses the BLAKE2b family everywhere.
- ``source`` is whatever bytes name where a message came from (the service passes the SCION source
  address: ISD-AS, host and port); a cookie binds to it, the rate limiter counts per it.
- Rate limit per source: 20 handshake messages per second, bursts of 5 (wireguard-go's ratelimiter).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from enum import StrEnum

from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from scion_appliance.tunnel import messages
from scion_appliance.tunnel.messages import CookieReply
from scion_appliance.tunnel.noise_protocol import blake2b
from scion_appliance.tunnel.timers import COOKIE_REFRESH_TIME

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
KEY_LEN = 32
MAC_LEN = messages.MAC_LEN
NONCE_LEN = messages.COOKIE_NONCE_LEN

_ZERO_MAC = bytes(MAC_LEN)


def blake2b_hash(data: bytes) -> bytes:
    """HASH for key derivation: BLAKE2b with a 32-byte output."""
    return blake2b(data, KEY_LEN)


def blake2b_mac(key: bytes, data: bytes) -> bytes:
    """MAC: keyed BLAKE2b with a 16-byte output."""
    return blake2b(data, MAC_LEN, key)


def mac1_key(static_public: bytes) -> bytes:
    return blake2b_hash(LABEL_MAC1 + static_public)


def cookie_key(static_public: bytes) -> bytes:
    return blake2b_hash(LABEL_COOKIE + static_public)


class CookieDrop(StrEnum):
    NO_INITIATION = "cookie_unexpected"  # a cookie reply for nothing we sent
    DECRYPT = "cookie_decrypt"


class CookieError(Exception):
    def __init__(self, reason: CookieDrop, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


class CookieChecker:
    """The responder side: checks mac1/mac2 of messages sent to us and writes cookie replies."""

    def __init__(self, local_public: bytes, randombytes: Callable[[int], bytes] = sodium.randombytes) -> None:
        self._mac1_key = mac1_key(local_public)
        self._cookie_key = cookie_key(local_public)
        self._randombytes = randombytes
        self._secret = bytes(KEY_LEN)
        self._secret_set: float | None = None

    def check_mac1(self, msg: bytes) -> bool:
        off = messages.mac1_offset(len(msg))
        if off < 0:
            return False
        return hmac.compare_digest(blake2b_mac(self._mac1_key, msg[:off]), msg[off : off + MAC_LEN])

    def _secret_fresh(self, now: float) -> bool:
        return self._secret_set is not None and now - self._secret_set <= COOKIE_REFRESH_TIME

    def check_mac2(self, msg: bytes, source: bytes, now: float) -> bool:
        off = messages.mac2_offset(len(msg))
        if off < 0 or not self._secret_fresh(now):
            return False  # a stale secret makes every cookie invalid: the sender gets a new one
        cookie = blake2b_mac(self._secret, source)
        return hmac.compare_digest(blake2b_mac(cookie, msg[:off]), msg[off : off + MAC_LEN])

    def create_reply(self, msg: bytes, receiver: int, source: bytes, now: float) -> bytes:
        """A cookie reply to ``msg`` (whose sender index is ``receiver``), bound to ``source``."""
        if not self._secret_fresh(now):
            self._secret = self._randombytes(KEY_LEN)
            self._secret_set = now
        cookie = blake2b_mac(self._secret, source)
        nonce = self._randombytes(NONCE_LEN)
        mac1 = msg[messages.mac1_offset(len(msg)) : messages.mac2_offset(len(msg))]
        sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(cookie, mac1, nonce, self._cookie_key)
        return CookieReply(receiver, nonce, sealed).encode()


class CookieGenerator:
    """The sender side toward one peer: adds mac1/mac2 to our messages and takes the peer's cookies."""

    def __init__(self, peer_public: bytes) -> None:
        self._mac1_key = mac1_key(peer_public)
        self._cookie_key = cookie_key(peer_public)
        self._cookie = bytes(MAC_LEN)
        self._cookie_set: float | None = None
        self._last_mac1: bytes | None = None

    def add_macs(self, msg: bytes, now: float) -> bytes:
        """``msg`` with its last 32 bytes replaced by mac1 and mac2 (mac2 zero without a fresh cookie)."""
        off1 = messages.mac1_offset(len(msg))
        off2 = messages.mac2_offset(len(msg))
        mac1 = blake2b_mac(self._mac1_key, msg[:off1])
        self._last_mac1 = mac1
        body = msg[:off1] + mac1
        if self._cookie_set is None or now - self._cookie_set > COOKIE_REFRESH_TIME:
            return body + _ZERO_MAC
        assert len(body) == off2
        return body + blake2b_mac(self._cookie, body)

    def consume_reply(self, reply: CookieReply, now: float) -> None:
        if self._last_mac1 is None:
            raise CookieError(CookieDrop.NO_INITIATION, "no handshake message sent to this peer yet")
        try:
            cookie = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                reply.encrypted_cookie, self._last_mac1, reply.nonce, self._cookie_key
            )
        except CryptoError:
            raise CookieError(CookieDrop.DECRYPT, "cookie reply did not authenticate") from None
        self._cookie = cookie
        self._cookie_set = now

    @property
    def has_fresh_cookie(self) -> bool:
        return self._cookie_set is not None


class LoadMonitor:
    """Under load while the handshake backlog is at least ``threshold``, and for ``hold`` seconds after.

    wireguard-go: under load when the handshake queue is at least 1/8 full (128 of 1024), for 1 s after.
    """

    def __init__(self, threshold: int = 128, hold: float = 1.0) -> None:
        self.threshold = threshold
        self.hold = hold
        self._until = float("-inf")

    def under_load(self, backlog: int, now: float) -> bool:
        if backlog >= self.threshold:
            self._until = now + self.hold
            return True
        return now < self._until


class RateLimiter:
    """Token bucket per source: ``rate`` messages per second, bursts of ``burst``.

    Time is kept in integer nanoseconds so the arithmetic is exact. Entries idle for more than a second are
    dropped at most once a second. Beyond ``max_sources`` tracked sources a new source is refused, so a
    flood of forged sources cannot grow the table without bound.
    """

    def __init__(self, rate: int = 20, burst: int = 5, max_sources: int = 65536) -> None:
        self._cost = 1_000_000_000 // rate
        self._max_tokens = self._cost * burst
        self._max_sources = max_sources
        self._table: dict[bytes, list[int]] = {}  # source -> [tokens, last time]
        self._last_gc = 0

    def allow(self, source: bytes, now: float) -> bool:
        t = int(now * 1e9)
        if t - self._last_gc > 1_000_000_000:
            self._gc(t)
        entry = self._table.get(source)
        if entry is None:
            if len(self._table) >= self._max_sources:
                return False
            self._table[source] = [self._max_tokens - self._cost, t]
            return True
        entry[0] = min(self._max_tokens, entry[0] + max(0, t - entry[1]))
        entry[1] = t
        if entry[0] >= self._cost:
            entry[0] -= self._cost
            return True
        return False

    def _gc(self, t: int) -> None:
        self._last_gc = t
        stale = [k for k, (_, last) in self._table.items() if t - last > 1_000_000_000]
        for k in stale:
            del self._table[k]

    def __len__(self) -> int:
        return len(self._table)
