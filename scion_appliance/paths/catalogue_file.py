"""A path source backed by a path catalogue file: the lab's ``paths.json`` format, read for one local AS.

Rules kept here:
- The file is ``{src ISD-AS: {dst ISD-AS: [entry, ...]}}``; an entry is ``{"id", "hop_count",
  "interfaces": [[ISD-AS, ifid], ...], "raw": hex, "next_hop": [host, port], "mtu"}`` (further keys, such
  as the lab's ``links``, are ignored). ``scion_appliance.lab.catalogue`` writes it. Only the part whose
  source is the local AS is kept.
- A load is all or nothing: a file that does not parse leaves the paths held before in place, and the
  ``CatalogueError`` names the file, the entry (``["1-ff00:0:111"]["2-ff00:0:211"][3].raw``), what was
  expected and what was found.
- Every entry is checked before it is used: its raw path parses as a SCION path, its id is the
  fingerprint of its interfaces (the identity probing and selection rely on), its next hop is an
  address and port.
- ``paths()`` answers from memory (sans-IO, as ``PathSource`` requires); ``reload_if_changed()`` re-reads
  the file when its identity (device, inode, size, mtime) changed. The service's timer calls it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scion_appliance.errors import OperatorError
from scion_appliance.paths.source import PathInfo, PathInterface, fingerprint
from scion_appliance.scion.addr import IA, AddressError
from scion_appliance.scion.errors import ScionParseError
from scion_appliance.scion.path import ScionPath


class CatalogueError(OperatorError):
    """The catalogue file cannot be used: ``file: where: expected X, found Y``."""

    def __init__(self, file: Path | str, where: str, expected: str, found: str) -> None:
        self.file, self.where, self.expected, self.found = str(file), where, expected, found
        place = f"{file}: {where}" if where else str(file)
        super().__init__(f"{place}: expected {expected}, found {found}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _ia(text: Any, file: Path, where: str) -> str:
    if not isinstance(text, str):
        raise CatalogueError(file, where, "an ISD-AS like 1-ff00:0:110", _short(text))
    try:
        return str(IA.parse(text))
    except AddressError as e:
        raise CatalogueError(file, where, "an ISD-AS like 1-ff00:0:110", f"{text!r} ({e})") from None


def parse_entry(entry: Any, file: Path, where: str) -> PathInfo:
    """One catalogue entry as a ``PathInfo``; ``CatalogueError`` naming ``where`` if it is not one."""
    if not isinstance(entry, Mapping):
        raise CatalogueError(file, where, "a path object", _short(entry))
    for key in ("id", "hop_count", "interfaces", "raw", "next_hop", "mtu"):
        if key not in entry:
            raise CatalogueError(file, f"{where}.{key}", "a value (this key is required)", "nothing")
    intfs_raw = entry["interfaces"]
    if not isinstance(intfs_raw, list):
        raise CatalogueError(file, f"{where}.interfaces", "an array of [ISD-AS, ifid]", _short(intfs_raw))
    interfaces = []
    for i, item in enumerate(intfs_raw):
        w = f"{where}.interfaces[{i}]"
        if not (isinstance(item, list) and len(item) == 2 and type(item[1]) is int and 0 < item[1] < 1 << 16):
            raise CatalogueError(file, w, "[ISD-AS, interface id 1..65535]", _short(item))
        interfaces.append(PathInterface(_ia(item[0], file, w), item[1]))
    raw_hex = entry["raw"]
    try:
        raw = bytes.fromhex(raw_hex) if isinstance(raw_hex, str) else None
    except ValueError:
        raw = None
    if raw is None:
        raise CatalogueError(file, f"{where}.raw", "the encoded SCION path in hex", _short(raw_hex))
    if raw:
        try:
            ScionPath.from_bytes(raw)
        except (ScionParseError, ValueError, struct.error) as e:  # struct.error: truncated path fields
            raise CatalogueError(
                file, f"{where}.raw", "an encoded SCION path", f"one that does not parse ({e})"
            ) from None
    path_id = entry["id"]
    expected_id = fingerprint(interfaces)
    if path_id != expected_id:
        raise CatalogueError(
            file, f"{where}.id", f"the fingerprint of its interfaces ({expected_id[:16]}...)", _short(path_id)
        )
    hop_count, mtu = entry["hop_count"], entry["mtu"]
    if type(hop_count) is not int or hop_count < 0:
        raise CatalogueError(file, f"{where}.hop_count", "a non-negative integer", _short(hop_count))
    if type(mtu) is not int or not 0 <= mtu <= 65535:
        raise CatalogueError(file, f"{where}.mtu", "an MTU 0..65535 (0: unknown)", _short(mtu))
    nh = entry["next_hop"]
    ok = isinstance(nh, list) and len(nh) == 2 and isinstance(nh[0], str) and type(nh[1]) is int
    if ok:
        try:
            ipaddress.ip_address(nh[0])
        except ValueError:
            ok = False
    if not ok or not 0 < nh[1] < 65536:
        raise CatalogueError(file, f"{where}.next_hop", '["router IP", UDP port]', _short(nh))
    return PathInfo(
        id=path_id,
        hop_count=hop_count,
        interfaces=tuple(interfaces),
        raw=raw,
        next_hop=(nh[0], nh[1]),
        mtu=mtu,
    )


def parse_catalogue(doc: Any, local_ia: str, file: Path) -> dict[str, list[PathInfo]]:
    """The paths of ``local_ia`` in a catalogue document: ``{dst ISD-AS: [PathInfo, ...]}``."""
    if not isinstance(doc, Mapping):
        raise CatalogueError(
            file, "", "a JSON object {source ISD-AS: {destination: [path, ...]}}", _short(doc)
        )
    mine: Any = None
    for src, by_dst in doc.items():
        if _ia(src, file, f"[{src!r}]") == local_ia:
            mine = by_dst
    if mine is None:
        return {}
    if not isinstance(mine, Mapping):
        raise CatalogueError(file, f'["{local_ia}"]', "an object {destination: [path, ...]}", _short(mine))
    out: dict[str, list[PathInfo]] = {}
    for dst, entries in mine.items():
        where = f'["{local_ia}"]["{dst}"]'
        dst_ia = _ia(dst, file, where)
        if not isinstance(entries, list):
            raise CatalogueError(file, where, "an array of paths", _short(entries))
        out[dst_ia] = [parse_entry(e, file, f"{where}[{i}]") for i, e in enumerate(entries)]
    return out


class CatalogueFile:
    """The paths from ``local_ia`` in catalogue ``file``; a ``PathSource``."""

    def __init__(self, file: str | os.PathLike[str], local_ia: IA | str) -> None:
        self.file = Path(file)
        self.local_ia = str(local_ia)
        self._paths: dict[str, list[PathInfo]] = {}
        self._stamp: tuple[int, int, int, int] | None = None
        self.loads = 0
        self.reload_if_changed(force=True)

    def paths(self, dst_ia: str) -> list[PathInfo]:
        return list(self._paths.get(dst_ia, ()))

    def destinations(self) -> list[str]:
        return sorted(self._paths)

    def _identity(self) -> tuple[int, int, int, int]:
        try:
            st = self.file.stat()
        except FileNotFoundError:
            raise CatalogueError(
                self.file,
                "",
                "a path catalogue file",
                "no such file (is the lab up? `scion-appliance lab up`)",
            ) from None
        except OSError as e:
            raise CatalogueError(
                self.file, "", "a readable path catalogue file", e.strerror or str(e)
            ) from None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed since the last load; True if the paths were replaced.
        On any problem the paths held before stay and ``CatalogueError`` says what is wrong."""
        stamp = self._identity()
        if not force and stamp == self._stamp:
            return False
        try:
            text = self.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CatalogueError(self.file, "", "a readable UTF-8 JSON file", str(e)) from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise CatalogueError(self.file, f"line {e.lineno}", "JSON", f"a syntax error: {e.msg}") from None
        parsed = parse_catalogue(doc, self.local_ia, self.file)
        changed = parsed != self._paths
        self._paths = parsed
        self._stamp = stamp
        self.loads += 1
        return changed
