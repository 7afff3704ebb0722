"""Wire format of the tunnel messages carried in the SCION/UDP payload between appliances.

What this module owns: byte layouts, type numbers and their parsers/encoders. No cryptography happens here.

Every message opens with the same 4-byte envelope head: ``type (1) | reserved (3, zero)``, which is
WireGuard's little-endian 32-bit message type. All integers are little-endian, as in WireGuard.

  1 initiation (148 B)  type|rsv | sender index (4) | ephemeral (32) | encrypted static (32+16)
                        | encrypted TAI64N timestamp (12+16) | mac1 (16) | mac2 (16)
  2 response (92 B)     type|rsv | sender index (4) | receiver index (4) | ephemeral (32)
                        | encrypted empty payload (16) | mac1 (16) | mac2 (16)
  3 cookie reply (64 B) type|rsv | receiver index (4) | nonce (24) | encrypted cookie (16+16)
  4 data (>= 32 B)      type|rsv | receiver index (4) | counter (8) | ciphertext | tag (16)

Rules kept here:
- Handshake and cookie messages have one exact length; anything else is refused.
- Parsers never raise anything but ``MessageError``, whose ``reason`` is a stable code for a drop counter.
- mac1 covers every byte before it, mac2 every byte before it (mac1 included), as in WireGuard.
- The data header (16 bytes) is the AEAD's associated data; sealing and opening live in ``_fast.aead``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum

KEY_LEN = 32
TAG_LEN = 16
MAC_LEN = 16
TIMESTAMP_LEN = 12
COOKIE_LEN = 16
COOKIE_NONCE_LEN = 24


class MessageType(IntEnum):
    """Every envelope type on the appliance's port, in one place."""

    INITIATION = 1
    RESPONSE = 2
    COOKIE_REPLY = 3
    DATA = 4  # sealed SIG frames of IP packets
    DATAGRAM = 5  # a sealed application datagram (the datagram API)
    ACK = 6  # a sealed acknowledgement of data (layout in ``paths.acks``)


class MessageDrop(StrEnum):
    """Why a message was refused before any cryptography: the drop-counter label."""

    EMPTY = "empty"
    UNKNOWN_TYPE = "unknown_type"
    RESERVED = "reserved_nonzero"
    LENGTH = "bad_length"


class MessageError(Exception):
    def __init__(self, reason: MessageDrop, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


# --- layouts ------------------------------------------------------------------------------------------------

_HEAD = struct.Struct("<B3x")
_INITIATION = struct.Struct(
    f"<B3xI{KEY_LEN}s{KEY_LEN + TAG_LEN}s{TIMESTAMP_LEN + TAG_LEN}s{MAC_LEN}s{MAC_LEN}s"
)
_RESPONSE = struct.Struct(f"<B3xII{KEY_LEN}s{TAG_LEN}s{MAC_LEN}s{MAC_LEN}s")
_COOKIE_REPLY = struct.Struct(f"<B3xI{COOKIE_NONCE_LEN}s{COOKIE_LEN + TAG_LEN}s")
_DATA_HEADER = struct.Struct("<B3xIQ")

INITIATION_LEN = _INITIATION.size  # 148
RESPONSE_LEN = _RESPONSE.size  # 92
COOKIE_REPLY_LEN = _COOKIE_REPLY.size  # 64
DATA_HEADER_LEN = _DATA_HEADER.size  # 16
DATA_MIN_LEN = DATA_HEADER_LEN + TAG_LEN  # an empty payload (a keepalive) still carries its tag

# The Noise handshake message sits between the index fields and the MACs.
INITIATION_NOISE = slice(8, INITIATION_LEN - 2 * MAC_LEN)  # 108 bytes: e | enc(s) | enc(timestamp)
RESPONSE_NOISE = slice(12, RESPONSE_LEN - 2 * MAC_LEN)  # 48 bytes: e | enc(empty)

_EXACT = {
    MessageType.INITIATION: INITIATION_LEN,
    MessageType.RESPONSE: RESPONSE_LEN,
    MessageType.COOKIE_REPLY: COOKIE_REPLY_LEN,
}


def mac1_offset(message_len: int) -> int:
    return message_len - 2 * MAC_LEN


def mac2_offset(message_len: int) -> int:
    return message_len - MAC_LEN


def message_type(data: bytes) -> MessageType:
    """The type of a message, after checking the envelope head and the type's length rule."""
    if len(data) < _HEAD.size:
        raise MessageError(MessageDrop.EMPTY if not data else MessageDrop.LENGTH, f"{len(data)} bytes")
    raw = data[0]
    if data[1:4] != b"\x00\x00\x00":
        raise MessageError(MessageDrop.RESERVED, "reserved bytes of the envelope are not zero")
    try:
        kind = MessageType(raw)
    except ValueError:
        raise MessageError(MessageDrop.UNKNOWN_TYPE, f"type {raw}") from None
    exact = _EXACT.get(kind)
    if exact is not None and len(data) != exact:
        raise MessageError(MessageDrop.LENGTH, f"{kind.name.lower()} of {len(data)} bytes, expected {exact}")
    if kind is MessageType.DATA and len(data) < DATA_MIN_LEN:
        raise MessageError(MessageDrop.LENGTH, f"data message of {len(data)} bytes, at least {DATA_MIN_LEN}")
    return kind


def _expect(data: bytes, kind: MessageType) -> None:
    got = message_type(data)
    if got is not kind:
        raise MessageError(MessageDrop.UNKNOWN_TYPE, f"expected {kind.name.lower()}, got {got.name.lower()}")


@dataclass(frozen=True)
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(MAC_LEN)
    mac2: bytes = bytes(MAC_LEN)

    def encode(self) -> bytes:
        return _INITIATION.pack(
            MessageType.INITIATION,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )

    @property
    def noise_message(self) -> bytes:
        return self.ephemeral + self.encrypted_static + self.encrypted_timestamp

    @classmethod
    def from_noise(cls, sender: int, noise_message: bytes) -> Initiation:
        if len(noise_message) != INITIATION_NOISE.stop - INITIATION_NOISE.start:
            raise ValueError("an initiation's Noise message is 108 bytes")
        e, s = noise_message[:KEY_LEN], noise_message[KEY_LEN : 2 * KEY_LEN + TAG_LEN]
        return cls(sender, e, s, noise_message[2 * KEY_LEN + TAG_LEN :])


def parse_initiation(data: bytes) -> Initiation:
    _expect(data, MessageType.INITIATION)
    _, sender, e, s, ts, mac1, mac2 = _INITIATION.unpack(data)
    return Initiation(sender, e, s, ts, mac1, mac2)


@dataclass(frozen=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(MAC_LEN)
    mac2: bytes = bytes(MAC_LEN)

    def encode(self) -> bytes:
        return _RESPONSE.pack(
            MessageType.RESPONSE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )

    @property
    def noise_message(self) -> bytes:
        return self.ephemeral + self.encrypted_nothing

    @classmethod
    def from_noise(cls, sender: int, receiver: int, noise_message: bytes) -> Response:
        if len(noise_message) != KEY_LEN + TAG_LEN:
            raise ValueError("a response's Noise message is 48 bytes")
        return cls(sender, receiver, noise_message[:KEY_LEN], noise_message[KEY_LEN:])


def parse_response(data: bytes) -> Response:
    _expect(data, MessageType.RESPONSE)
    _, sender, receiver, e, nothing, mac1, mac2 = _RESPONSE.unpack(data)
    return Response(sender, receiver, e, nothing, mac1, mac2)


@dataclass(frozen=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def encode(self) -> bytes:
        return _COOKIE_REPLY.pack(MessageType.COOKIE_REPLY, self.receiver, self.nonce, self.encrypted_cookie)


def parse_cookie_reply(data: bytes) -> CookieReply:
    _expect(data, MessageType.COOKIE_REPLY)
    _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(data)
    return CookieReply(receiver, nonce, cookie)


@dataclass(frozen=True)
class DataHeader:
    receiver: int
    counter: int

    def encode(self) -> bytes:
        return _DATA_HEADER.pack(MessageType.DATA, self.receiver, self.counter)


def encode_data_header(receiver: int, counter: int) -> bytes:
    """The 16-byte data header; the AEAD module seals the payload with it as associated data."""
    return _DATA_HEADER.pack(MessageType.DATA, receiver, counter)


def parse_data_header(data: bytes) -> DataHeader:
    _expect(data, MessageType.DATA)
    _, receiver, counter = _DATA_HEADER.unpack_from(data)
    return DataHeader(receiver, counter)
