"""The Noise Protocol Framework (revision 34), 25519 / ChaChaPoly / BLAKE2b, patterns NN, IK and IKpsk2.

What this module owns: CipherState, SymmetricState and HandshakeState exactly as the specification names
them, over libsodium primitives reached through PyNaCl. It knows nothing about the appliance's wire format,
peers or time; ``tunnel.handshake`` builds the appliance's handshake on top of it.

Rules kept here:
- Byte-exact with the specification: it reproduces the cacophony test vectors (tests/data/noise-vectors.json).
- HASH is BLAKE2b-512 (HASHLEN 64, BLOCKLEN 128); HMAC and HKDF are the specification's own constructions
  over it; keys coming out of HKDF are truncated to 32 bytes, as the specification says for 64-byte hashes.
- The ChaChaPoly nonce is 4 zero bytes followed by the 64-bit counter in little-endian order.
- Nonce 2^64-1 is reserved: a CipherState refuses to go there.
- Every failure (bad tag, short message, invalid public key) raises ``NoiseError`` with a reason; a failed
  decryption leaves the CipherState's nonce unchanged, as the specification requires.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nacl import bindings as sodium
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as SodiumRuntimeError

DHLEN = 32
HASHLEN = 64
BLOCKLEN = 128
KEYLEN = 32
TAGLEN = 16
PSKLEN = 32
MAX_MESSAGE_LEN = 65535
MAX_NONCE = 2**64 - 1  # reserved by the specification, never used for a message

_ZERO_KEY = bytes(KEYLEN)
# byte -> byte ^ pad, so HMAC's key padding is one C-level translate instead of a Python loop
_XOR_36 = bytes(b ^ 0x36 for b in range(256))
_XOR_5C = bytes(b ^ 0x5C for b in range(256))


class NoiseError(Exception):
    """A handshake or transport message could not be processed; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --- crypto functions --------------------------------------------------------------------------------------


def blake2b(data: bytes, digest_size: int = HASHLEN, key: bytes = b"") -> bytes:
    """libsodium's BLAKE2b (optionally keyed), called through PyNaCl's cffi module directly.

    ``nacl.bindings.crypto_generichash_blake2b_salt_personal`` spends ~35 us per call validating its
    arguments in Python, 90% of a handshake's cost; the C call takes ~2 us. Sizes are checked here instead.
    """
    if not 1 <= digest_size <= 64 or len(key) > 64:
        raise ValueError("BLAKE2b gives 1..64 bytes and takes keys of at most 64 bytes")
    out = _ffi.new("unsigned char[]", digest_size)
    rc = _lib.crypto_generichash_blake2b_salt_personal(
        out, digest_size, data, len(data), key if key else _ffi.NULL, len(key), _ffi.NULL, _ffi.NULL
    )
    if rc != 0:
        raise RuntimeError("crypto_generichash_blake2b failed")
    return bytes(_ffi.buffer(out, digest_size))


def noise_hash(data: bytes) -> bytes:
    """HASH(): BLAKE2b with a 64-byte output."""
    return blake2b(data)


def hmac_hash(key: bytes, data: bytes) -> bytes:
    """HMAC-HASH(key, data) per RFC 2104 with BLOCKLEN 128 (the specification's section 4.3)."""
    if len(key) > BLOCKLEN:
        key = noise_hash(key)
    key = key.ljust(BLOCKLEN, b"\x00")
    return noise_hash(key.translate(_XOR_5C) + noise_hash(key.translate(_XOR_36) + data))


def hkdf(chaining_key: bytes, input_key_material: bytes, num_outputs: int) -> tuple[bytes, ...]:
    """HKDF(chaining_key, input_key_material, num_outputs) with 2 or 3 outputs of HASHLEN bytes."""
    if num_outputs not in (2, 3):
        raise ValueError("HKDF gives 2 or 3 outputs")
    temp_key = hmac_hash(chaining_key, input_key_material)
    out1 = hmac_hash(temp_key, b"\x01")
    out2 = hmac_hash(temp_key, out1 + b"\x02")
    if num_outputs == 2:
        return out1, out2
    out3 = hmac_hash(temp_key, out2 + b"\x03")
    return out1, out2, out3


def nonce_bytes(n: int) -> bytes:
    """The 96-bit ChaChaPoly nonce: 32 zero bits then the counter, little-endian."""
    return b"\x00\x00\x00\x00" + struct.pack("<Q", n)


def encrypt(k: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, nonce_bytes(n), k)


def decrypt(k: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    try:
        return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, nonce_bytes(n), k)
    except CryptoError:
        raise NoiseError("decrypt", "authentication tag did not verify") from None


def dh(private_key: bytes, public_key: bytes) -> bytes:
    """X25519. A public key of small order (all-zero shared secret) is refused rather than used."""
    if len(private_key) != DHLEN or len(public_key) != DHLEN:
        raise NoiseError("dh", "keys are 32 bytes")
    try:
        return sodium.crypto_scalarmult(private_key, public_key)
    except SodiumRuntimeError:
        raise NoiseError("dh", "public key of small order") from None


@dataclass(frozen=True)
class KeyPair:
    """A static or ephemeral X25519 key pair."""

    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != DHLEN:
            raise ValueError("an X25519 private key is 32 bytes")
        return cls(private, sodium.crypto_scalarmult_base(private))

    @classmethod
    def generate(cls, randombytes: Callable[[int], bytes] = sodium.randombytes) -> KeyPair:
        return cls.from_private(randombytes(DHLEN))


# --- CipherState / SymmetricState -------------------------------------------------------------------------


class CipherState:
    """A key (or none) and a 64-bit nonce counter."""

    __slots__ = ("k", "n")

    def __init__(self, k: bytes | None = None, n: int = 0) -> None:
        self.k = k
        self.n = n

    def initialize_key(self, k: bytes | None) -> None:
        self.k = k
        self.n = 0

    def has_key(self) -> bool:
        return self.k is not None

    def set_nonce(self, n: int) -> None:
        self.n = n

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.k is None:
            return plaintext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce", "nonce space exhausted")
        out = encrypt(self.k, self.n, ad, plaintext)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.k is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce", "nonce space exhausted")
        out = decrypt(self.k, self.n, ad, ciphertext)  # raises before the nonce moves
        self.n += 1
        return out

    def rekey(self) -> None:
        if self.k is None:
            raise NoiseError("state", "rekey without a key")
        self.k = encrypt(self.k, MAX_NONCE, b"", _ZERO_KEY)[:KEYLEN]


class SymmetricState:
    """Chaining key ``ck``, handshake hash ``h`` and the CipherState they key."""

    __slots__ = ("ck", "cs", "h")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = noise_hash(protocol_name)
        self.ck = self.h
        self.cs = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, input_key_material, 2)
        self.cs.initialize_key(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = noise_hash(self.h + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self.ck, temp_h, temp_k = hkdf(self.ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self.cs.initialize_key(temp_k[:KEYLEN])

    def get_handshake_hash(self) -> bytes:
        return self.h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = hkdf(self.ck, b"", 2)
        return CipherState(temp_k1[:KEYLEN]), CipherState(temp_k2[:KEYLEN])


# --- handshake patterns -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """A handshake pattern: pre-message tokens per side and the message token lists, initiator first."""

    name: str
    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]

    @property
    def psk_mode(self) -> bool:
        return any("psk" in m for m in self.messages)


PATTERNS: dict[str, Pattern] = {
    "NN": Pattern("NN", (), (), (("e",), ("e", "ee"))),
    "IK": Pattern("IK", (), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "IKpsk2": Pattern("IKpsk2", (), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se", "psk"))),
}

SUPPORTED_SUITE = ("25519", "ChaChaPoly", "BLAKE2b")


def parse_protocol_name(name: str) -> Pattern:
    """``Noise_<pattern>_25519_ChaChaPoly_BLAKE2b`` -> Pattern; anything else is a ValueError."""
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise ValueError(f"not a Noise protocol name: {name!r}")
    if tuple(parts[2:]) != SUPPORTED_SUITE:
        raise ValueError(f"unsupported suite in {name!r}: only 25519_ChaChaPoly_BLAKE2b is implemented")
    pattern = PATTERNS.get(parts[1])
    if pattern is None:
        raise ValueError(f"unsupported handshake pattern {parts[1]!r}: one of {', '.join(PATTERNS)}")
    return pattern


class HandshakeState:
    """One side of one handshake.

    ``e`` may be given (test vectors); otherwise a fresh ephemeral is generated with ``randombytes``.
    ``psks`` is a list the caller may still fill before the message that consumes the psk, so that a
    responder can pick the psk after it learnt who the initiator is. ``check_remote_static`` runs as soon
    as a remote static key is decrypted, before any further DH work; raising there aborts the handshake.
    After the last message ``split_result`` holds ``(c1, c2)``: the initiator sends with c1.
    """

    def __init__(
        self,
        protocol_name: str,
        initiator: bool,
        prologue: bytes = b"",
        s: KeyPair | None = None,
        e: KeyPair | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
        randombytes: Callable[[int], bytes] = sodium.randombytes,
        check_remote_static: Callable[[bytes], None] | None = None,
    ) -> None:
        self.pattern = parse_protocol_name(protocol_name)
        self.initiator = initiator
        self.s, self.e, self.rs, self.re = s, e, rs, re
        self.psks = list(psks)
        self._randombytes = randombytes
        self._check_remote_static = check_remote_static
        self.ss = SymmetricState(protocol_name.encode("ascii"))
        self.ss.mix_hash(prologue)
        # Pre-messages: the initiator's first, then the responder's, each as the side that knows them.
        for owner_is_initiator, tokens in (
            (True, self.pattern.initiator_pre),
            (False, self.pattern.responder_pre),
        ):
            for token in tokens:
                mine = owner_is_initiator == initiator
                if token == "s":
                    key = self.s.public if mine and self.s else self.rs
                elif token == "e":
                    key = self.e.public if mine and self.e else self.re
                else:
                    raise ValueError(f"pre-message token {token!r}")
                if key is None:
                    raise ValueError(f"pattern {self.pattern.name} needs the pre-message key {token!r}")
                self.ss.mix_hash(key)
        self._index = 0
        self._psk_index = 0
        self.split_result: tuple[CipherState, CipherState] | None = None

    @property
    def finished(self) -> bool:
        return self.split_result is not None

    def _my_turn(self) -> bool:
        return (self._index % 2 == 0) == self.initiator

    def _next_tokens(self, writing: bool) -> tuple[str, ...]:
        if self.finished or self._index >= len(self.pattern.messages):
            raise NoiseError("state", "handshake already finished")
        if self._my_turn() != writing:
            raise NoiseError("state", "not this side's turn")
        return self.pattern.messages[self._index]

    def _dh_token(self, token: str) -> None:
        # es: initiator's e with responder's s; se: initiator's s with responder's e.
        if token == "ee":
            local, remote = self.e, self.re
        elif token == "ss":
            local, remote = self.s, self.rs
        elif token == "es":
            local, remote = (self.e, self.rs) if self.initiator else (self.s, self.re)
        else:  # "se"
            local, remote = (self.s, self.re) if self.initiator else (self.e, self.rs)
        if local is None or remote is None:
            raise NoiseError("state", f"token {token} needs keys this side does not have")
        self.ss.mix_key(dh(local.private, remote))

    def _psk_token(self) -> None:
        if self._psk_index >= len(self.psks):
            raise NoiseError("psk", "no pre-shared key for the psk token")
        psk = self.psks[self._psk_index]
        if len(psk) != PSKLEN:
            raise NoiseError("psk", "a pre-shared key is 32 bytes")
        self._psk_index += 1
        self.ss.mix_key_and_hash(psk)

    def _advance(self) -> None:
        self._index += 1
        if self._index == len(self.pattern.messages):
            self.split_result = self.ss.split()

    def write_message(self, payload: bytes) -> bytes:
        out = bytearray()
        for token in self._next_tokens(writing=True):
            if token == "e":
                if self.e is None:
                    self.e = KeyPair.generate(self._randombytes)
                out += self.e.public
                self.ss.mix_hash(self.e.public)
                if self.pattern.psk_mode:
                    self.ss.mix_key(self.e.public)
            elif token == "s":
                if self.s is None:
                    raise NoiseError("state", "token s needs a static key")
                out += self.ss.encrypt_and_hash(self.s.public)
            elif token == "psk":
                self._psk_token()
            else:
                self._dh_token(token)
        out += self.ss.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE_LEN:
            raise NoiseError("length", "message longer than 65535 bytes")
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseError("length", "message longer than 65535 bytes")
        view = memoryview(message)
        pos = 0
        for token in self._next_tokens(writing=False):
            if token == "e":
                if len(view) - pos < DHLEN:
                    raise NoiseError("truncated", "message too short for an ephemeral key")
                self.re = bytes(view[pos : pos + DHLEN])
                pos += DHLEN
                self.ss.mix_hash(self.re)
                if self.pattern.psk_mode:
                    self.ss.mix_key(self.re)
            elif token == "s":
                n = DHLEN + TAGLEN if self.ss.cs.has_key() else DHLEN
                if len(view) - pos < n:
                    raise NoiseError("truncated", "message too short for a static key")
                self.rs = self.ss.decrypt_and_hash(bytes(view[pos : pos + n]))
                pos += n
                if self._check_remote_static is not None:
                    self._check_remote_static(self.rs)
            elif token == "psk":
                self._psk_token()
            else:
                self._dh_token(token)
        rest = bytes(view[pos:])
        if self.ss.cs.has_key() and len(rest) < TAGLEN:
            raise NoiseError("truncated", "message too short for its tag")
        payload = self.ss.decrypt_and_hash(rest)
        self._advance()
        return payload

    def get_handshake_hash(self) -> bytes:
        return self.ss.get_handshake_hash()
