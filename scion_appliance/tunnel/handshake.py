"""The appliance's handshake: Noise IKpsk2 (or IK) between allowlisted static keys, WireGuard-style.

What this module owns: turning handshake messages (``tunnel.messages``) into sessions' key material for
configured peers, and refusing everything else. One ``Handshaker`` serves one local identity in both roles.

The construction (compare the WireGuard whitepaper, section 5.4):
- Noise protocol name ``Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b`` (``Noise_IK_...`` when configured without
  pre-shared keys), prologue ``scion-appliance v1``. With IKpsk2 a peer without a configured pre-shared key
  uses 32 zero bytes, as WireGuard does: the psk enters only in the second message, after the responder
  has learnt who the initiator is, so it can be chosen per peer. Both sides must use the same pattern.
- Initiation payload: a TAI64N timestamp (12 bytes, whitened to ~16 ms like wireguard-go). Response
  payload: empty. Transport keys: Noise Split(); the initiator sends with the first key.
- Every message carries mac1 (and, under load, mac2): see ``tunnel.cookie``.

Rules kept here:
- Allowlist: an initiation from a static key that is not configured is refused as soon as the static key is
  decrypted, before the remaining Diffie-Hellman.
- Handshake replay: an initiation is accepted only if its timestamp is greater than the highest one
  accepted from that peer so far. The mark lives in a ``HandshakeTimestampStore`` (the rocksdict
  ``StateStore`` in the service, so it survives restarts) and is written before the response is returned.
- At most one initiation per peer is consumed per 20 ms (wireguard-go's HandshakeInitationRate).
- A failed response does not disturb the pending initiation it claims to answer; a consumed one is gone.
- Every refusal is a ``HandshakeError`` with a ``HandshakeDrop`` reason (a drop-counter label).
- Sans-IO: ``now`` is monotonic seconds, ``wall_time`` Unix seconds (only for the TAI64N timestamp).
"""

from __future__ import annotations

import copy
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from nacl import bindings as sodium

from scion_appliance.tunnel import messages
from scion_appliance.tunnel.cookie import CookieChecker, CookieError, CookieGenerator, RateLimiter
from scion_appliance.tunnel.messages import MessageError
from scion_appliance.tunnel.noise_protocol import HandshakeState, KeyPair, NoiseError
from scion_appliance.tunnel.timers import HANDSHAKE_INITIATION_RATE

PROTOCOL_IK = "Noise_IK_25519_ChaChaPoly_BLAKE2b"
PROTOCOL_IKPSK2 = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"
IDENTIFIER = b"scion-appliance v1"
KEY_LEN = 32
PSK_LEN = 32
TAI64N_LEN = 12
_TAI64_BASE = 0x400000000000000A  # TAI64 label of the Unix epoch, as wireguard-go writes it
_WHITENER_MASK = 0x1000000 - 1  # drop the low 24 bits of the nanoseconds: the clock is not leaked finely


# --- TAI64N -------------------------------------------------------------------------------------------------


def tai64n(wall_time: float) -> bytes:
    """The TAI64N label of a Unix time, nanoseconds whitened to multiples of 2^24 (about 16.8 ms)."""
    secs = math.floor(wall_time)
    nanos = min(int((wall_time - secs) * 1e9), 999_999_999) & ~_WHITENER_MASK
    return struct.pack(">QI", _TAI64_BASE + secs, nanos)


def tai64n_after(previous: bytes) -> bytes:
    """The smallest whitened TAI64N label greater than ``previous``."""
    secs, nanos = struct.unpack(">QI", previous)
    nanos = (nanos & ~_WHITENER_MASK) + _WHITENER_MASK + 1
    if nanos >= 1_000_000_000:
        secs, nanos = secs + 1, 0
    return struct.pack(">QI", secs, nanos)


# --- the replay mark store ----------------------------------------------------------------------------------


class HandshakeTimestampStore(Protocol):
    """Where the per-peer initiation timestamp high-water mark lives (``state.StateStore`` in production)."""

    def get_handshake_timestamp(self, peer_public: bytes) -> bytes | None: ...

    def set_handshake_timestamp(self, peer_public: bytes, ts: bytes) -> None: ...


class MemoryTimestampStore:
    """In-memory marks (tests, and tools that need no persistence). Never moves a mark backwards."""

    def __init__(self) -> None:
        self.marks: dict[bytes, bytes] = {}

    def get_handshake_timestamp(self, peer_public: bytes) -> bytes | None:
        return self.marks.get(bytes(peer_public))

    def set_handshake_timestamp(self, peer_public: bytes, ts: bytes) -> None:
        old = self.marks.get(bytes(peer_public))
        if old is None or ts > old:
            self.marks[bytes(peer_public)] = bytes(ts)


# --- values in and out -------------------------------------------------------------------------------------


class HandshakeDrop(StrEnum):
    """Why a handshake message was refused: the drop-counter label and log reason."""

    MALFORMED = "handshake_malformed"
    BAD_MAC1 = "handshake_bad_mac1"
    RATE_LIMITED = "handshake_rate_limited"
    DECRYPT = "handshake_decrypt"
    UNKNOWN_PEER = "handshake_unknown_peer"
    REPLAY = "handshake_replay"
    FLOOD = "handshake_flood"
    UNKNOWN_INDEX = "handshake_unknown_index"
    BAD_COOKIE = "handshake_bad_cookie"


class HandshakeError(Exception):
    def __init__(self, reason: HandshakeDrop, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class PeerConfig:
    """A peer this appliance accepts: its static public key and optional pre-shared key."""

    public_key: bytes
    psk: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.public_key) != KEY_LEN:
            raise ValueError("a peer's static public key is 32 bytes")
        if self.psk is not None and len(self.psk) != PSK_LEN:
            raise ValueError("a pre-shared key is 32 bytes")


@dataclass(frozen=True)
class HandshakeResult:
    """Key material of a completed handshake: what a ``session.Session`` is made of."""

    peer_public: bytes
    local_index: int  # the receiver index the peer will put in data messages to us
    remote_index: int  # the receiver index we put in data messages to the peer
    send_key: bytes = field(repr=False)
    receive_key: bytes = field(repr=False)
    initiator: bool
    handshake_hash: bytes = field(repr=False)


@dataclass(frozen=True)
class Accepted:
    """A handshake message was accepted. ``reply`` is the response to send back (responder), or None
    (initiator: it should now send data or a keepalive so the responder can start using the session)."""

    result: HandshakeResult
    reply: bytes | None


@dataclass(frozen=True)
class CookieChallenge:
    """Under load and without a valid mac2: send ``reply`` (a cookie reply) to the source, nothing else."""

    reply: bytes


class IndexTable:
    """Random, unique 32-bit local indexes, each naming the peer it belongs to (wireguard-go indextable)."""

    def __init__(self, randombytes: Callable[[int], bytes] = sodium.randombytes) -> None:
        self._randombytes = randombytes
        self._table: dict[int, bytes] = {}

    def allocate(self, peer_public: bytes) -> int:
        for _ in range(64):
            index = int.from_bytes(self._randombytes(4), "little")
            if index not in self._table:
                self._table[index] = peer_public
                return index
        raise RuntimeError("no free index after 64 random draws")  # 2^32 slots: only a broken RNG gets here

    def lookup(self, index: int) -> bytes | None:
        return self._table.get(index)

    def free(self, index: int) -> None:
        self._table.pop(index, None)

    def __len__(self) -> int:
        return len(self._table)


@dataclass
class _PeerState:
    config: PeerConfig
    cookies: CookieGenerator
    pending: HandshakeState | None = None  # our initiation awaiting its response
    pending_index: int | None = None
    last_sent_timestamp: bytes | None = None
    last_initiation_consumed: float | None = None


class Handshaker:
    """Both roles of the handshake for one local static key and a set of allowed peers."""

    def __init__(
        self,
        private_key: bytes,
        peers: Iterable[PeerConfig],
        store: HandshakeTimestampStore,
        *,
        psk: bool = True,
        randombytes: Callable[[int], bytes] = sodium.randombytes,
        index_table: IndexTable | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._static = KeyPair.from_private(private_key)
        self.protocol = PROTOCOL_IKPSK2 if psk else PROTOCOL_IK
        self._store = store
        self._randombytes = randombytes
        self.index_table = index_table if index_table is not None else IndexTable(randombytes)
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self.cookie_checker = CookieChecker(self._static.public, randombytes)
        self._peers: dict[bytes, _PeerState] = {}
        for p in peers:
            self.add_peer(p)

    @property
    def public_key(self) -> bytes:
        return self._static.public

    # --- allowlist -----------------------------------------------------------------------------------------

    def add_peer(self, config: PeerConfig) -> None:
        if config.psk is not None and self.protocol == PROTOCOL_IK:
            raise ValueError("a pre-shared key needs the IKpsk2 handshake (psk=True)")
        if config.public_key == self._static.public:
            raise ValueError("a peer cannot have this appliance's own public key")
        old = self._peers.get(config.public_key)
        if old is not None:
            old.config = config
        else:
            self._peers[config.public_key] = _PeerState(config, CookieGenerator(config.public_key))

    def remove_peer(self, public_key: bytes) -> None:
        st = self._peers.pop(public_key, None)
        if st is not None and st.pending_index is not None:
            self.index_table.free(st.pending_index)

    def cancel(self, public_key: bytes) -> None:
        """Forget our initiation to this peer still awaiting a response (its index is freed)."""
        st = self._peers.get(public_key)
        if st is not None and st.pending_index is not None:
            self.index_table.free(st.pending_index)
            st.pending, st.pending_index = None, None

    def has_pending(self, public_key: bytes) -> bool:
        st = self._peers.get(public_key)
        return st is not None and st.pending is not None

    def is_allowed(self, public_key: bytes) -> bool:
        return public_key in self._peers

    def _allowed(self, public_key: bytes) -> None:
        if public_key not in self._peers:
            raise HandshakeError(
                HandshakeDrop.UNKNOWN_PEER, f"static key {public_key.hex()[:16]}... not configured"
            )

    def _psks(self, st: _PeerState) -> list[bytes]:
        if self.protocol == PROTOCOL_IK:
            return []
        return [st.config.psk if st.config.psk is not None else bytes(PSK_LEN)]

    def _check_macs(
        self, data: bytes, sender: int, source: bytes, now: float, under_load: bool
    ) -> bytes | None:
        """None to go on; else a cookie reply to send instead. Raises on a bad mac1 or a rate limit."""
        if not self.cookie_checker.check_mac1(data):
            raise HandshakeError(HandshakeDrop.BAD_MAC1, "mac1 does not verify")
        if under_load:
            if not self.cookie_checker.check_mac2(data, source, now):
                return self.cookie_checker.create_reply(data, sender, source, now)
            if not self.rate_limiter.allow(source, now):
                raise HandshakeError(
                    HandshakeDrop.RATE_LIMITED, "too many handshake messages from this source"
                )
        return None

    # --- initiator -----------------------------------------------------------------------------------------

    def create_initiation(self, peer_public: bytes, *, now: float, wall_time: float) -> bytes:
        """A new initiation to ``peer_public``; it replaces any earlier one still awaiting a response."""
        self._allowed(peer_public)
        st = self._peers[peer_public]
        if st.pending_index is not None:
            self.index_table.free(st.pending_index)
        ts = tai64n(wall_time)
        if st.last_sent_timestamp is not None and ts <= st.last_sent_timestamp:
            ts = tai64n_after(st.last_sent_timestamp)  # two in one whitened slot, or the clock stepped back
        st.last_sent_timestamp = ts
        hs = HandshakeState(
            self.protocol,
            initiator=True,
            prologue=IDENTIFIER,
            s=self._static,
            rs=peer_public,
            psks=self._psks(st),
            randombytes=self._randombytes,
        )
        noise_msg = hs.write_message(ts)
        index = self.index_table.allocate(peer_public)
        st.pending, st.pending_index = hs, index
        unmaced = messages.Initiation.from_noise(index, noise_msg).encode()
        return st.cookies.add_macs(unmaced, now)

    def handle_response(
        self, data: bytes, *, source: bytes, now: float, under_load: bool = False
    ) -> Accepted | CookieChallenge:
        try:
            msg = messages.parse_response(data)
        except MessageError as e:
            raise HandshakeError(HandshakeDrop.MALFORMED, str(e)) from None
        challenge = self._check_macs(data, msg.sender, source, now, under_load)
        if challenge is not None:
            return CookieChallenge(challenge)
        peer = self.index_table.lookup(msg.receiver)
        st = self._peers.get(peer) if peer is not None else None
        if st is None or st.pending is None or st.pending_index != msg.receiver or peer is None:
            raise HandshakeError(
                HandshakeDrop.UNKNOWN_INDEX, f"no initiation pending with index {msg.receiver}"
            )
        hs = copy.deepcopy(st.pending)  # a forged response must not spoil the real one still to come
        try:
            hs.read_message(msg.noise_message)
        except NoiseError as e:
            raise HandshakeError(HandshakeDrop.DECRYPT, f"response: {e}") from None
        assert hs.split_result is not None
        c1, c2 = hs.split_result
        st.pending, st.pending_index = None, None  # the index now belongs to the session
        assert c1.k is not None and c2.k is not None
        result = HandshakeResult(peer, msg.receiver, msg.sender, c1.k, c2.k, True, hs.get_handshake_hash())
        return Accepted(result, None)

    def handle_cookie_reply(self, data: bytes, *, now: float) -> bytes:
        """Take a cookie from a peer we sent a handshake message to; returns that peer's public key."""
        try:
            msg = messages.parse_cookie_reply(data)
        except MessageError as e:
            raise HandshakeError(HandshakeDrop.MALFORMED, str(e)) from None
        peer = self.index_table.lookup(msg.receiver)
        st = self._peers.get(peer) if peer is not None else None
        if st is None or peer is None:
            raise HandshakeError(
                HandshakeDrop.UNKNOWN_INDEX, f"cookie reply for unknown index {msg.receiver}"
            )
        try:
            st.cookies.consume_reply(msg, now)
        except CookieError as e:
            raise HandshakeError(HandshakeDrop.BAD_COOKIE, str(e)) from None
        return peer

    # --- responder -----------------------------------------------------------------------------------------

    def handle_initiation(
        self, data: bytes, *, source: bytes, now: float, under_load: bool = False
    ) -> Accepted | CookieChallenge:
        try:
            msg = messages.parse_initiation(data)
        except MessageError as e:
            raise HandshakeError(HandshakeDrop.MALFORMED, str(e)) from None
        challenge = self._check_macs(data, msg.sender, source, now, under_load)
        if challenge is not None:
            return CookieChallenge(challenge)
        hs = HandshakeState(
            self.protocol,
            initiator=False,
            prologue=IDENTIFIER,
            s=self._static,
            randombytes=self._randombytes,
            check_remote_static=self._allowed,
        )
        try:
            ts = hs.read_message(msg.noise_message)
        except NoiseError as e:
            raise HandshakeError(HandshakeDrop.DECRYPT, f"initiation: {e}") from None
        assert hs.rs is not None
        peer = hs.rs
        st = self._peers[peer]
        mark = self._store.get_handshake_timestamp(peer)
        if mark is not None and ts <= mark:
            raise HandshakeError(
                HandshakeDrop.REPLAY, "initiation timestamp not newer than the last accepted"
            )
        if (
            st.last_initiation_consumed is not None
            and now < st.last_initiation_consumed + HANDSHAKE_INITIATION_RATE
        ):
            raise HandshakeError(HandshakeDrop.FLOOD, "initiations from this peer come faster than 50/s")
        self._store.set_handshake_timestamp(peer, ts)  # durable before anyone sees our response
        st.last_initiation_consumed = now
        hs.psks.extend(self._psks(st))
        index = self.index_table.allocate(peer)
        noise_msg = hs.write_message(b"")
        assert hs.split_result is not None
        c1, c2 = hs.split_result
        assert c1.k is not None and c2.k is not None
        reply = st.cookies.add_macs(messages.Response.from_noise(index, msg.sender, noise_msg).encode(), now)
        result = HandshakeResult(peer, index, msg.sender, c2.k, c1.k, False, hs.get_handshake_hash())
        return Accepted(result, reply)
