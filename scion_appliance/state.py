"""Durable appliance state: one rocksdict (RocksDB) store under the state directory.

What it holds (each kind under its own key prefix; all keys and values are bytes, raw mode):
- ``meta/schema_version``      ASCII decimal; checked on open (see below).
- ``hs/<32-byte public key>``  the highest Noise IK initiation timestamp (12-byte TAI64N) seen from that
                               peer, so a replayed initiation is refused even after a restart.
- ``pq/<ISD-AS>``              path quality history for one remote AS, a JSON object {path id: record}.
- ``ctr/<name>``               lifetime counters for ``status``, signed 64-bit little-endian.

Rules kept here:
- Every write is one ``WriteBatch``: after a crash (kill -9 at any instant) each batch is there whole or
  not at all, and the store opens cleanly (RocksDB replays its write-ahead log).
- Handshake marks are written with ``sync=True`` before the caller answers the handshake, and never move
  backwards (TAI64N is big-endian, so byte order is time order).
- The schema version is checked on open: a newer one is refused (an older program must not rewrite a
  newer store), an older one is migrated in one batch, an empty store is initialised.
- A store that cannot be opened is an ``OperatorError`` naming the path and the fix.
- Nothing here is on the packet path: callers batch (counters are flushed periodically, not per packet).
"""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from scion_appliance.errors import OperatorError

DEFAULT_STATE_DIR = Path("/var/lib/scion-appliance")
STORE_NAME = "state.rocksdb"
SCHEMA_VERSION = 1

META_SCHEMA = b"meta/schema_version"
PREFIX_HANDSHAKE = b"hs/"
PREFIX_PATH_QUALITY = b"pq/"
PREFIX_COUNTER = b"ctr/"

TAI64N_LEN = 12
PUBLIC_KEY_LEN = 32
_I64 = struct.Struct("<q")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


class StateError(OperatorError):
    """The state store cannot be used; the message names the path and what to do."""


# version found -> function that adds the upgrade to the next version to a batch.
# Version 1 is the first; a future version 2 adds an entry 1: _migrate_1_to_2 here.
MIGRATIONS: dict[int, Callable[[Rdict, WriteBatch], None]] = {}


def store_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / STORE_NAME


def _explain_open_failure(path: Path, exc: BaseException) -> StateError:
    text = str(exc)
    where = f"state store {path}"
    if "lock" in text.lower() and ("unavailable" in text or "hold by current process" in text):
        return StateError(
            f"{where} is in use by another running scion-appliance (its LOCK file is held): stop that one "
            "(`systemctl stop scion-appliance`) or give this one its own directory ([state] dir)"
        )
    if "Permission denied" in text or isinstance(exc, PermissionError):
        return StateError(
            f"cannot open {where}: permission denied; the service user needs read and write access: "
            f"`chown -R scion-appliance: {path.parent}` (systemd's StateDirectory= does this)"
        )
    if "Not a directory" in text or "File exists" in text:
        return StateError(
            f"cannot open {where}: a file is in the way where a directory should be; "
            "move it aside or set [state] dir to another directory"
        )
    if "No space left" in text:
        return StateError(f"cannot open {where}: the disk is full; free space on {path.parent}")
    if "Corruption" in text:
        return StateError(
            f"{where} is damaged ({text}); move it aside (`mv {path} {path}.broken`) and start again: "
            "handshake marks, path history and lifetime counters then start empty"
        )
    return StateError(f"cannot open {where}: {text}; check that directory and its permissions")


class StateStore:
    """The appliance's durable state. Open with ``StateStore.open(state_dir)``; close or use ``with``."""

    def __init__(self, db: Rdict, path: Path) -> None:
        self._db: Rdict | None = db
        self.path = path
        self._lock = threading.Lock()
        self._sync = WriteOptions()
        self._sync.sync = True
        self._plain = WriteOptions()

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> StateStore:
        """Open (creating if needed) the store in ``state_dir``; raise ``StateError`` if it cannot be used."""
        path = store_path(state_dir)
        try:
            os.makedirs(path.parent, mode=0o700, exist_ok=True)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StateError(
                    f"cannot create state directory {path.parent}: {e.strerror}; create it for the service "
                    f"user (`install -d -o scion-appliance -m 0700 {path.parent}`) or set [state] dir"
                ) from e
            raise _explain_open_failure(path, e) from e
        try:
            db = Rdict(str(path), options=Options(raw_mode=True))
        except Exception as e:  # rocksdict raises plain Exception with RocksDB's status text
            raise _explain_open_failure(path, e) from e
        store = cls(db, path)
        try:
            store._check_schema()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._db is None

    # -- internals ---------------------------------------------------------------------------------

    def _require(self) -> Rdict:
        if self._db is None:
            raise RuntimeError(f"state store {self.path} is closed")
        return self._db

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        db = self._require()
        it = db.iter()
        try:
            it.seek(prefix)
            while it.valid():
                key = it.key()
                if not key.startswith(prefix):
                    break
                yield key, it.value()
                it.next()
        finally:
            # An iterator keeps the database open; drop it now so close() really closes.
            del it

    def _write(self, batch: WriteBatch, sync: bool = False) -> None:
        self._require().write(batch, self._sync if sync else self._plain)

    def _check_schema(self) -> None:
        db = self._require()
        raw = db.get(META_SCHEMA)
        if raw is None:
            if next(self._scan(b""), None) is not None:
                raise StateError(
                    f"{self.path} holds data but no schema version: it is not a scion-appliance state "
                    f"store; move it aside (`mv {self.path} {self.path}.unknown`) or set [state] dir"
                )
            batch = WriteBatch(raw_mode=True)
            batch.put(META_SCHEMA, str(SCHEMA_VERSION).encode())
            self._write(batch, sync=True)
            return
        try:
            version = int(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise StateError(
                f"state store {self.path} has an unreadable schema version {raw!r}; "
                f"move it aside (`mv {self.path} {self.path}.broken`) and start again"
            ) from None
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state store {self.path} has schema version {version}, newer than this scion-appliance "
                f"understands ({SCHEMA_VERSION}): it was written by a later release; install that release "
                f"again, or move the store aside (`mv {self.path} {self.path}.v{version}`) to start empty"
            )
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise StateError(
                    f"state store {self.path} has schema version {version}, which this release cannot "
                    f"migrate; move it aside (`mv {self.path} {self.path}.v{version}`) to start empty"
                )
            batch = WriteBatch(raw_mode=True)
            step(db, batch)
            version += 1
            batch.put(META_SCHEMA, str(version).encode())
            self._write(batch, sync=True)

    @property
    def schema_version(self) -> int:
        raw = self._require().get(META_SCHEMA)
        return int(raw.decode("ascii")) if raw is not None else 0

    # -- handshake high-water marks ----------------------------------------------------------------

    def get_handshake_timestamp(self, peer_public: bytes) -> bytes | None:
        """The highest TAI64N initiation timestamp accepted from this peer, or None if never."""
        _check_len("peer_public", peer_public, PUBLIC_KEY_LEN)
        value: bytes | None = self._require().get(PREFIX_HANDSHAKE + bytes(peer_public))
        return value

    def set_handshake_timestamp(self, peer_public: bytes, ts: bytes) -> None:
        """Record ``ts`` for this peer, durably (fsync'd) before returning; an older ``ts`` is ignored."""
        _check_len("peer_public", peer_public, PUBLIC_KEY_LEN)
        _check_len("ts", ts, TAI64N_LEN)
        key = PREFIX_HANDSHAKE + bytes(peer_public)
        with self._lock:
            old = self._require().get(key)
            if old is not None and old >= bytes(ts):
                return
            batch = WriteBatch(raw_mode=True)
            batch.put(key, bytes(ts))
            self._write(batch, sync=True)

    # -- path quality history ----------------------------------------------------------------------

    def save_path_quality(self, dst_ia: str, records: dict[str, dict[str, Any]]) -> None:
        """Replace the stored quality records of every path to ``dst_ia`` (JSON-serialisable dicts)."""
        try:
            value = json.dumps(records, separators=(",", ":"), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"path quality records for {dst_ia} are not JSON-serialisable: {e}") from e
        batch = WriteBatch(raw_mode=True)
        batch.put(PREFIX_PATH_QUALITY + dst_ia.encode(), value.encode())
        self._write(batch)

    def load_path_quality(self, dst_ia: str) -> dict[str, dict[str, Any]]:
        """The records last saved for ``dst_ia``; empty if none."""
        raw = self._require().get(PREFIX_PATH_QUALITY + dst_ia.encode())
        if raw is None:
            return {}
        loaded: dict[str, dict[str, Any]] = json.loads(raw)
        return loaded

    def path_quality_destinations(self) -> list[str]:
        return [k[len(PREFIX_PATH_QUALITY) :].decode() for k, _ in self._scan(PREFIX_PATH_QUALITY)]

    # -- lifetime counters -------------------------------------------------------------------------

    def add_counters(self, deltas: dict[str, int]) -> None:
        """Add each delta to its lifetime counter, all in one atomic batch."""
        if not deltas:
            return
        db = self._require()
        with self._lock:
            batch = WriteBatch(raw_mode=True)
            for name, delta in deltas.items():
                if not isinstance(delta, int) or isinstance(delta, bool):
                    raise TypeError(f"counter delta for {name!r} must be an int, not {type(delta).__name__}")
                key = PREFIX_COUNTER + name.encode()
                old = db.get(key)
                total = (_I64.unpack(old)[0] if old is not None else 0) + delta
                if not _I64_MIN <= total <= _I64_MAX:
                    raise OverflowError(f"lifetime counter {name!r} would leave the signed 64-bit range")
                batch.put(key, _I64.pack(total))
            self._write(batch)

    def counters(self) -> dict[str, int]:
        return {k[len(PREFIX_COUNTER) :].decode(): _I64.unpack(v)[0] for k, v in self._scan(PREFIX_COUNTER)}


def _check_len(name: str, value: bytes, n: int) -> None:
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) != n:
        size = len(value) if isinstance(value, bytes | bytearray | memoryview) else type(value).__name__
        raise ValueError(f"{name} must be {n} bytes, got {size}")
