"""What the control API needs from the running service: the ``ControlBackend`` protocol and its errors.

Rules kept here:
- The HTTP layer (``app.py``) knows nothing about sessions or paths; it calls these methods and turns
  their results into JSON. The service implements the protocol; tests use a fake.
- The synchronous methods are called on the trio event loop: they must return at once (read the
  service's in-memory state; never block, never do I/O). ``send`` is async and may wait.
- ``dst`` arguments arrive as canonical ISD-AS text (already parsed and re-printed by the app).
- A backend refuses a request by raising one of the ``ControlError`` classes below; the app answers with
  the matching status code and the message. Any other exception is a 500 (and is logged).
- Documents are plain JSON-ready dicts; their shapes are described in docs/control-api.md.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class ControlError(Exception):
    """A request the backend refuses; ``status`` is the HTTP status code the client gets."""

    status = 400
    code = "bad_request"


class BadRequest(ControlError):
    status = 400
    code = "bad_request"


class NotFound(ControlError):
    """No such peer, destination, path or lab link."""

    status = 404
    code = "not_found"


class Conflict(ControlError):
    """The request is valid but not now (e.g. pinning a path that is down)."""

    status = 409
    code = "conflict"


class Unavailable(ControlError):
    """The service cannot do it at all right now (e.g. no lab running, still starting)."""

    status = 503
    code = "unavailable"


@runtime_checkable
class ControlBackend(Protocol):
    def status(self) -> dict[str, Any]:
        """The whole status document (docs/control-api.md, "Status document")."""
        ...

    def paths(self, dst: str) -> dict[str, Any]:
        """The path document for one remote AS; ``NotFound`` if there is no such destination."""
        ...

    def peers(self) -> dict[str, Any]:
        """``{"peers": [peer, ...]}`` with the same peer objects as the status document."""
        ...

    def rekey(self, name: str) -> dict[str, Any] | None:
        """Start a new handshake with the named peer now; ``NotFound`` for an unknown name."""
        ...

    def pin(self, dst: str, path_id: str) -> dict[str, Any] | None:
        """Send all traffic to ``dst`` over ``path_id`` until unpinned."""
        ...

    def unpin(self, dst: str) -> dict[str, Any] | None:
        """Return ``dst`` to automatic path selection."""
        ...

    def lab_link(self, name: str, action: str) -> dict[str, Any] | None:
        """Cut (``action == "cut"``) or restore (``"restore"``) a link of the local lab."""
        ...

    async def send(self, dst: str, payload: bytes) -> dict[str, Any]:
        """Send ``payload`` as one datagram to ``dst``'s appliance; answer ``packet_id``, ``path``,
        ``elapsed_s``."""
        ...
