"""The control socket: a Unix stream socket with the right mode and group, served by hypercorn on trio.

Rules kept here:
- The socket is bound under a temporary name in the target directory, given its mode and group, and
  only then renamed into place: there is no moment where the final path exists with looser permissions,
  and nothing depends on the process umask (which other threads share).
- A live socket at the path (another appliance answering on it) is an ``OperatorError``; a stale one
  (nobody listening) is replaced. On the way out the socket file is removed if it is still ours.
- Limits against bad clients (h11 and hypercorn do the HTTP parsing): request heads over
  ``MAX_HEAD`` bytes are refused, a connection that does not complete a request within
  ``IDLE_TIMEOUT_S`` (keep-alive) or stalls a read for ``READ_TIMEOUT_S`` is closed; bodies are capped
  by the app. One client can hold one connection's task; it cannot block the event loop.
- Hypercorn's own log lines go through the stdlib logger ``hypercorn.error`` (JSON, see log.py);
  per-request access lines are off.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import secrets
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from scion_appliance.control.app import create_app
from scion_appliance.control.backend import ControlBackend
from scion_appliance.errors import OperatorError
from scion_appliance.log import get_logger

DEFAULT_SOCKET = Path("/run/scion-appliance/control.sock")
MAX_HEAD = 16 * 1024
IDLE_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10
GRACEFUL_TIMEOUT_S = 1.0
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the terminating NUL

log = get_logger("control")


def _gid(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise OperatorError(
            f"control socket group {group!r} does not exist (config key control.group): create it "
            f"(`groupadd --system {group}`) or set another group"
        ) from None


def _live(path: Path) -> bool:
    """True if something accepts connections on the Unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bind_control_socket(path: Path, mode: int = 0o660, group: str | int | None = None) -> socket.socket:
    """A bound (not yet listening) Unix stream socket at ``path`` with ``mode`` and ``group``."""
    path = Path(path)
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise OperatorError(
            f"control socket path {path} is {len(os.fsencode(path))} bytes, over the {SUN_PATH_MAX}-byte "
            "limit of Unix sockets: choose a shorter path (config key control.socket)"
        )
    gid = _gid(group)
    try:
        os.makedirs(path.parent, mode=0o755, exist_ok=True)
    except OSError as e:
        raise OperatorError(
            f"cannot create the control socket's directory {path.parent}: {e.strerror}; create it for the "
            "service user (systemd's RuntimeDirectory= does this) or set control.socket"
        ) from e
    try:
        st = path.lstat()
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OperatorError(
                f"{path} exists and is not a socket: move it away or set control.socket to another path"
            )
        if _live(path):
            raise OperatorError(
                f"another process already answers on the control socket {path} (is scion-appliance already "
                "running? `systemctl status scion-appliance`); stop it or set control.socket"
            )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp))
        os.chmod(tmp, mode)
        if gid != -1:
            os.chown(tmp, -1, gid)
        os.rename(tmp, path)
    except OSError as e:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        what = "permission denied" if e.errno in (errno.EACCES, errno.EPERM) else e.strerror
        raise OperatorError(
            f"cannot create the control socket {path}: {what}; the service user needs write access to "
            f"{path.parent} (and membership of the group it sets)"
        ) from e
    return sock


class _DropBindLine(logging.Filter):
    """Hypercorn announces the descriptor's temporary bind name; ``control.listening`` says the real one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on")


def hypercorn_config(fd: int) -> HypercornConfig:
    cfg = HypercornConfig()
    cfg.bind = [f"fd://{fd}"]
    cfg.h11_max_incomplete_size = MAX_HEAD
    cfg.keep_alive_timeout = IDLE_TIMEOUT_S
    cfg.read_timeout = READ_TIMEOUT_S
    cfg.graceful_timeout = GRACEFUL_TIMEOUT_S
    cfg.shutdown_timeout = GRACEFUL_TIMEOUT_S
    cfg.startup_timeout = 5.0
    cfg.alpn_protocols = ["http/1.1"]
    errorlog = logging.getLogger("hypercorn.error")
    if not any(isinstance(f, _DropBindLine) for f in errorlog.filters):
        errorlog.addFilter(_DropBindLine())
    cfg.errorlog = errorlog
    cfg.accesslog = None
    cfg.include_server_header = False
    return cfg


async def serve_control(
    backend: ControlBackend,
    path: Path | str = DEFAULT_SOCKET,
    mode: int = 0o660,
    group: str | int | None = None,
    *,
    shutdown: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API on ``path`` until ``shutdown()`` returns or the task is cancelled.

    Use with ``await nursery.start(serve_control, backend, path)``: it returns once clients can connect.
    """
    path = Path(path)
    sock = bind_control_socket(path, mode, group)
    ino = os.stat(path).st_ino
    fd = sock.detach()  # hypercorn adopts the descriptor (fd://) and listens on it
    cfg = hypercorn_config(fd)
    try:
        # Starlette is an ASGI app; hypercorn's stricter protocol type does not see it.
        app = cast(Any, create_app(backend))
        started = cast(Any, _Started(task_status, path))
        await hypercorn_serve(app, cfg, shutdown_trigger=shutdown, task_status=started)
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == ino:
                os.unlink(path)
        log.info("control.stopped", socket=str(path))


class _Started:
    """Relays hypercorn's readiness (a list of binds) as the socket path, and logs it."""

    def __init__(self, outer: trio.TaskStatus[Path], path: Path) -> None:
        self.outer = outer
        self.path = path

    def started(self, value: object = None) -> None:
        log.info("control.listening", socket=str(self.path))
        self.outer.started(self.path)
