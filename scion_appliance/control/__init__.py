"""The control socket: HTTP/1.1 + JSON over a Unix socket (server, app, client, rendering for the CLI).

The service implements ``ControlBackend`` and runs ``serve_control`` in its nursery; the CLI commands
``status``, ``paths`` and ``peers`` use ``ControlClient``. The API is described in docs/control-api.md.
"""

from scion_appliance.control.backend import (
    BadRequest,
    Conflict,
    ControlBackend,
    ControlError,
    NotFound,
    Unavailable,
)
from scion_appliance.control.client import ControlClient, DaemonUnreachable, ProtocolError

__all__ = [
    "BadRequest",
    "Conflict",
    "ControlBackend",
    "ControlClient",
    "ControlError",
    "DaemonUnreachable",
    "NotFound",
    "ProtocolError",
    "Unavailable",
]
