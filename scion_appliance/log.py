"""Structured logs: one JSON object per line on stderr, for journald and ``jq``.

Rules kept here:
- Every line has ``ts`` (RFC 3339, UTC, microseconds, ``Z``), ``level``, ``component`` and ``event``;
  the call's keyword fields follow at the top level (a field that would shadow one of those four is
  written as ``field_<name>``).
- Key material never reaches a log line. ``RedactKeyMaterial`` (on the handler, so it also covers
  records from other libraries) replaces the value of any field whose name contains ``key``, ``secret``
  or ``psk`` with ``"[redacted]"``, at any depth of nested dicts. Names that say ``public`` are exempt: a
  public key identifies a peer and is what an operator greps for. As a second guard, raw bytes are never
  printed, whatever the field is called; they appear as ``"<N bytes>"`` (pass base64 text on purpose).
- Logging never raises into the caller: a value JSON cannot hold is written as its ``str()``.
- Code logs events, not prose: ``log.info("handshake.complete", peer="branch-a", rtt_ms=3.1)``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

ROOT_LOGGER = "scion_appliance"
RESERVED = ("ts", "level", "component", "event")
REDACTED = "[redacted]"
_SECRET_WORDS = ("key", "secret", "psk")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def is_secret_name(name: str) -> bool:
    """True for a field name that may carry key material (``private_key``, ``psk``, ``secret``...)."""
    lowered = name.lower()
    if "public" in lowered:
        return False
    return any(word in lowered for word in _SECRET_WORDS)


def redact(value: Any, name: str = "") -> Any:
    """The value as it may be logged under ``name``: secrets replaced, bytes reduced to their length."""
    if name and is_secret_name(name):
        return REDACTED
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    return value


class RedactKeyMaterial(logging.Filter):
    """Strips key material from a record's fields before any formatter sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            record.fields = {str(k): redact(v, str(k)) for k, v in fields.items()}
        # Plain stdlib calls with dict args ("%(psk)s") are redacted the same way.
        if isinstance(record.args, Mapping):
            record.args = {str(k): redact(v, str(k)) for k, v in record.args.items()}
        return True


def rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        component = getattr(record, "component", None)
        if component is None:
            name = record.name
            component = name[len(ROOT_LOGGER) + 1 :] if name.startswith(ROOT_LOGGER + ".") else name
        doc: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(),
            "component": component,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for k, v in fields.items():
                doc[f"field_{k}" if k in RESERVED else k] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False, separators=(",", ":"))


class EventLogger:
    """``log.info("event.name", field=value, ...)`` on top of a stdlib logger."""

    __slots__ = ("_logger", "component")

    def __init__(self, component: str) -> None:
        self.component = component
        self._logger = logging.getLogger(f"{ROOT_LOGGER}.{component}")

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level,
                event,
                extra={"component": self.component, "fields": fields},
                exc_info=exc_info,
                stacklevel=3,
            )

    def debug(self, event: str, /, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, /, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, /, **fields: Any) -> None:
        """An error with the current exception's traceback (call from an ``except`` block)."""
        self._log(logging.ERROR, event, fields, exc_info=True)

    def is_enabled(self, level: str) -> bool:
        return self._logger.isEnabledFor(parse_level(level))


def get_logger(component: str) -> EventLogger:
    return EventLogger(component)


def parse_level(level: str) -> int:
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}") from None


def configure(level: str = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Send the appliance's logs (and those of the libraries under it) as JSON lines to ``stream``.

    Replaces a handler installed by an earlier call, so calling it again (SIGHUP, tests) is safe.
    Returns the handler.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLinesFormatter())
    handler.addFilter(RedactKeyMaterial())
    handler.set_name("scion-appliance-json")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "scion-appliance-json":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    return handler
