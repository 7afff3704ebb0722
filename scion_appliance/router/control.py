"""The router's run-time control channel: one JSON command per Unix datagram, one JSON answer back.

Rules kept here:
- ``handle(dataplane, doc)`` is sans-IO: a decoded command in, the answer document out. Every answer
  has ``ok``; a failed command says why in ``error`` and changes nothing.
- Commands: ``{"cmd": "ping"}``, ``{"cmd": "status"}``, ``{"cmd": "counters"}``,
  ``{"cmd": "link", "ifid": N, "up": bool}``,
  ``{"cmd": "impair", "ifid": N, "loss": 0..1, "delay_ms": ms, "jitter_ms": ms, "reorder": 0..1}``
  (omitted fields are 0: each impair command replaces the interface's impairment),
  ``{"cmd": "stop"}`` (the service stops after answering).
- ``request(path, doc)`` is the blocking client (the lab, the CLI); the socket it answers from is an
  autobound abstract address, so clients leave nothing on disk.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from scion_appliance.errors import OperatorError
from scion_appliance.router.dataplane import Dataplane, Impairment

MAX_DATAGRAM = 256 * 1024


def _ifid(doc: dict[str, Any]) -> int:
    ifid = doc.get("ifid")
    if not isinstance(ifid, int) or isinstance(ifid, bool):
        raise ValueError("'ifid' must be an interface id (integer)")
    return ifid


def handle(dp: Dataplane, doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get("cmd"), str):
        return {"ok": False, "error": 'expected a JSON object like {"cmd": "status"}'}
    cmd = doc["cmd"]
    try:
        if cmd in ("ping", "stop"):
            return {"ok": True}
        if cmd == "status":
            return {"ok": True, **dp.status()}
        if cmd == "counters":
            return {"ok": True, "counters": dp.snapshot()}
        if cmd == "link":
            up = doc.get("up")
            if not isinstance(up, bool):
                raise ValueError("'up' must be true or false")
            dp.set_link_up(_ifid(doc), up)
            return {"ok": True}
        if cmd == "impair":
            fields = {k: float(doc.get(k, 0.0)) for k in ("loss", "delay_ms", "jitter_ms", "reorder")}
            dp.set_impairment(_ifid(doc), Impairment(**fields))
            return {"ok": True}
    except (KeyError, ValueError, TypeError) as e:
        return {"ok": False, "error": str(e).strip("'\"")}
    return {"ok": False, "error": f"unknown command {cmd!r}; known: ping status counters link impair stop"}


def request(path: str | os.PathLike[str], doc: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    """Sends one command to the router listening on ``path`` and returns its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("")  # autobind: an abstract address the router can answer to
        s.settimeout(timeout)
        try:
            s.sendto(json.dumps(doc).encode(), os.fspath(path))
            data = s.recv(MAX_DATAGRAM)
        except (FileNotFoundError, ConnectionRefusedError):
            raise OperatorError(
                f"no router answers on control socket {path}; is it running? (scion-appliance lab status)"
            ) from None
        except TimeoutError:
            raise OperatorError(
                f"router on control socket {path} did not answer within {timeout} s"
            ) from None
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise OperatorError(f"router on {path} answered with something other than a JSON object")
    return answer
