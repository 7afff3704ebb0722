"""Static X25519 identities and pre-shared keys: generation, base64 text form, key files on disk.

What this module owns: the key file format (one line, the 32-byte key in standard base64, exactly what
``wg genkey`` / ``wg genpsk`` write) and the rules for reading and writing such files.

Rules kept here:
- A private key file is created with mode 0600 and never overwritten unless asked (``force``); it is
  written to a temporary file, fsync'd, then linked into place, so a crash never leaves half a key.
- A secret key file readable or writable by group or others is refused, as ssh does with its keys.
- Every failure is an ``OperatorError`` naming the file, what is wrong and the command that fixes it.
- Private keys are clamped at generation, as ``wg genkey`` does (X25519 clamps again anyway).
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from nacl import bindings as sodium

from scion_appliance.errors import OperatorError

KEY_LEN = 32


def generate_private_key(randombytes: Callable[[int], bytes] = sodium.randombytes) -> bytes:
    raw = bytearray(randombytes(KEY_LEN))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return bytes(raw)


def public_key(private: bytes) -> bytes:
    if len(private) != KEY_LEN:
        raise ValueError("an X25519 private key is 32 bytes")
    return sodium.crypto_scalarmult_base(private)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Base64 text -> 32 bytes; ValueError with a short reason otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != KEY_LEN:
        raise ValueError(f"{len(raw)} bytes after base64 decoding, a key is 32")
    return raw


def _check_private_mode(path: Path, st: os.stat_result, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise OperatorError(f"{path}: {what} is not a regular file; point the config at the key file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise OperatorError(
            f"{path}: {what} is accessible by group or others (mode {mode:04o}); "
            f"run `chmod 600 {path}` (and make a new key if others may have read it)"
        )


def _read_secret(path: Path, what: str, fix: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OperatorError(f"{path}: {what} does not exist; {fix}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OperatorError(
                f"{path}: {what} is a symbolic link; point the config at the file itself"
            ) from None
        raise OperatorError(
            f"{path}: cannot read {what} ({e.strerror}); check the path and permissions"
        ) from None
    try:
        _check_private_mode(path, os.fstat(fd), what)
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        reason = "not text"
    else:
        try:
            return decode_key(text)
        except ValueError as e:
            reason = str(e)
    raise OperatorError(f"{path}: {what} is not one base64-encoded 32-byte key ({reason}); {fix}")


def load_private_key(path: str | os.PathLike[str]) -> bytes:
    """The private key in ``path`` (mode 0600, base64); OperatorError naming the file and the fix if not."""
    p = Path(path)
    return _read_secret(p, "the private key file", f"write one with `scion-appliance keygen --out {p}`")


def load_preshared_key(path: str | os.PathLike[str]) -> bytes:
    """A pre-shared key file: same format and rules as a private key file (``wg genpsk`` writes one)."""
    p = Path(path)
    fix = f"write one with `wg genpsk > {p}` or `head -c 32 /dev/urandom | base64 > {p}`, then chmod 600"
    return _read_secret(p, "the pre-shared key file", fix)


def write_private_key(path: str | os.PathLike[str], private: bytes, *, force: bool = False) -> None:
    """Write ``private`` in base64 to ``path``, mode 0600, atomically; never overwrite unless ``force``."""
    p = Path(path)
    if len(private) != KEY_LEN:
        raise ValueError("an X25519 private key is 32 bytes")
    if not p.parent.is_dir():
        raise OperatorError(f"{p}: directory {p.parent} does not exist; create it (mode 0700) or pick --out")
    if p.exists() and not force:
        raise OperatorError(f"{p}: a key file is already there; keep it, or pass --force to replace it")
    tmp = p.parent / f".{p.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise OperatorError(f"{tmp}: a leftover temporary file is in the way; remove it and retry") from None
    except OSError as e:
        raise OperatorError(
            f"{p}: cannot write in {p.parent} ({e.strerror}); run as a user who can"
        ) from None
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask said
            os.write(fd, (encode_key(private) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, p)
        else:
            try:
                os.link(tmp, p)  # fails if the name exists: no window where another key gets clobbered
            except FileExistsError:
                raise OperatorError(
                    f"{p}: a key file appeared there meanwhile; keep it, or pass --force to replace it"
                ) from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
