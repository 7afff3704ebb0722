"""SCION AS master keys on disk (``keys/master0.key``, ``keys/master1.key``) and hop-field keys.

Rules kept here:
- The file format is SCION's: the key as base64 text (surrounding whitespace ignored).
- Every failure is an ``OperatorError`` naming the file and what to do about it.
- The router's hop-field MAC key is derived from master key 0, as scionproto's router does
  (PBKDF2-HMAC-SHA256, salt "Derive OF Key", 1000 iterations, 16 bytes).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from scion_appliance._fast.hopmac import derive_hop_key
from scion_appliance.errors import OperatorError

MASTER0 = "master0.key"
MASTER1 = "master1.key"
MIN_MASTER_LEN = 16


@dataclass(frozen=True, repr=False)
class MasterKeys:
    key0: bytes
    key1: bytes | None

    def __repr__(self) -> str:  # never print key material
        return f"MasterKeys(key0=<{len(self.key0)} bytes>, key1={'<set>' if self.key1 else None})"

    @property
    def hop_key(self) -> bytes:
        """The 16-byte hop-field MAC key this AS's routers use."""
        return derive_hop_key(self.key0)


def read_master_key(path: str | os.PathLike[str]) -> bytes:
    """One master key from a SCION ``masterN.key`` file."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise OperatorError(
            f"master key file {p} does not exist; create it (base64 of 16 random bytes), "
            f"e.g. with `scion-pki key symmetric`, or point --keys at the AS's keys directory"
        ) from None
    except OSError as e:
        raise OperatorError(f"cannot read master key file {p}: {e.strerror}; check its permissions") from None
    stripped = text.strip()
    if not stripped:
        raise OperatorError(f"master key file {p} is empty; it must hold the key as base64")
    try:
        key = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise OperatorError(
            f"master key file {p} is not valid base64; it must hold only the base64 text of the key"
        ) from None
    if len(key) < MIN_MASTER_LEN:
        raise OperatorError(
            f"master key in {p} is {len(key)} bytes; a SCION master key has at least {MIN_MASTER_LEN}"
        )
    return key


def load_master_keys(keys_dir: str | os.PathLike[str]) -> MasterKeys:
    """``master0.key`` (required) and ``master1.key`` (optional) from an AS's keys directory."""
    d = Path(keys_dir)
    if not d.is_dir():
        raise OperatorError(f"keys directory {d} does not exist or is not a directory")
    key1_path = d / MASTER1
    key1 = read_master_key(key1_path) if key1_path.exists() else None
    return MasterKeys(key0=read_master_key(d / MASTER0), key1=key1)


def write_master_key(path: str | os.PathLike[str], key: bytes | None = None) -> bytes:
    """Writes a master key file (mode 0600; a fresh random 16-byte key unless given)."""
    k = secrets.token_bytes(16) if key is None else key
    if len(k) < MIN_MASTER_LEN:
        raise ValueError(f"master key must be at least {MIN_MASTER_LEN} bytes")
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(k) + b"\n")
    return k
