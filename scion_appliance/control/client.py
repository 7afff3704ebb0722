"""The CLI's side of the control socket: httpx over a Unix socket, errors sorted by exit code.

Rules kept here:
- ``DaemonUnreachable`` (exit 3): no socket file, nobody listening, or not allowed to connect. Its message
  is one line naming the socket path and ``systemctl status scion-appliance``.
- ``ProtocolError`` (exit 4): the daemon answered something that is not the control API (not JSON, an
  unexpected status, a timeout mid-answer).
- A 4xx answer with a JSON error from the API is an ``OperatorError`` (exit 2): the request was wrong
  (unknown peer, bad ISD-AS), and the daemon's message says why.
"""

from __future__ import annotations

import errno
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from scion_appliance.errors import OperatorError

DEFAULT_SOCKET = Path("/run/scion-appliance/control.sock")
TIMEOUT_S = 5.0
EXIT_OK, EXIT_DEGRADED, EXIT_UNREACHABLE, EXIT_PROTOCOL = 0, 1, 3, 4


class DaemonUnreachable(Exception):
    exit_code = EXIT_UNREACHABLE


class ProtocolError(Exception):
    exit_code = EXIT_PROTOCOL


def _unreachable(path: Path, why: str) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"scion-appliance is not reachable on {path}: {why}; see `systemctl status scion-appliance`"
    )


def _cause_errno(exc: BaseException) -> int | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return None


class ControlClient:
    """``with ControlClient(path) as c: doc = c.get("/v1/status")``."""

    def __init__(self, socket_path: Path | str = DEFAULT_SOCKET, timeout_s: float = TIMEOUT_S) -> None:
        self.path = Path(socket_path)
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.path)),
            base_url="http://scion-appliance",
            timeout=timeout_s,
        )

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, url: str, params: dict[str, str] | None = None) -> Any:
        return self.request("GET", url, params=params)

    def post(
        self, url: str, json: Any = None, content: bytes | None = None, params: dict[str, str] | None = None
    ) -> Any:
        return self.request("POST", url, json=json, content=content, params=params)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.request_raw(method, url, **kwargs)[0]

    def request_raw(self, method: str, url: str, **kwargs: Any) -> tuple[Any, str]:
        """The decoded JSON document and the body exactly as the daemon sent it."""
        if not self.path.exists():
            raise _unreachable(self.path, "no control socket there (is the daemon running?)")
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.ConnectError as e:
            code = _cause_errno(e)
            if code == errno.ECONNREFUSED:
                raise _unreachable(self.path, "connection refused (the daemon is not running)") from None
            if code in (errno.EACCES, errno.EPERM):
                raise _unreachable(
                    self.path, "permission denied (run as root or join the socket's group)"
                ) from None
            if code == errno.ENOENT:
                raise _unreachable(self.path, "no control socket there (is the daemon running?)") from None
            raise _unreachable(self.path, str(e) or type(e).__name__) from None
        except httpx.TimeoutException:
            raise ProtocolError(
                f"scion-appliance on {self.path} did not answer {method} {url} within the timeout"
            ) from None
        except httpx.HTTPError as e:
            raise ProtocolError(f"scion-appliance on {self.path}: {method} {url} failed: {e}") from None
        try:
            doc = response.json()
        except ValueError:
            raise ProtocolError(
                f"scion-appliance on {self.path} answered {method} {url} with HTTP {response.status_code} "
                "and a body that is not JSON"
            ) from None
        if response.status_code >= 400:
            message = doc.get("error") if isinstance(doc, dict) else None
            if 400 <= response.status_code < 500 and isinstance(message, str):
                raise OperatorError(message)
            raise ProtocolError(
                f"scion-appliance on {self.path} answered {method} {url} with HTTP {response.status_code}: "
                f"{message or doc!r}"
            )
        return doc, response.text
