"""Shared plumbing of the CLI commands that talk to the daemon (status, paths, peers).

Rules kept here:
- ``--socket PATH`` on every such command; default ``$SCION_APPLIANCE_SOCKET`` or
  /run/scion-appliance/control.sock.
- Exit codes: 0 healthy, 1 degraded, 3 daemon not reachable, 4 unknown or protocol error (2 stays the
  CLI's code for an operator mistake, e.g. an unknown ISD-AS). The failure is one line on stderr.
- ``--json`` prints the daemon's document exactly as it was sent.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from scion_appliance.control.client import DEFAULT_SOCKET, ControlClient, DaemonUnreachable, ProtocolError


def add_socket_argument(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    default = os.environ.get("SCION_APPLIANCE_SOCKET") or str(DEFAULT_SOCKET)
    p.add_argument("--socket", metavar="PATH", default=default, help=f"control socket (default {default})")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print the daemon's JSON document unchanged")


def run_query(
    args: argparse.Namespace,
    url: str,
    params: dict[str, str] | None,
    render: Callable[[Any], tuple[str, int]],
) -> int:
    """Fetch ``url`` and print it (as text via ``render``, or raw JSON); return the exit code."""
    try:
        with ControlClient(args.socket) as client:
            doc, raw = client.request_raw("GET", url, params=params)
        try:
            text, code = render(doc)
        except (AttributeError, TypeError, KeyError, ValueError) as e:
            raise ProtocolError(
                f"the daemon's document for {url} is malformed ({type(e).__name__}: {e})"
            ) from e
    except (DaemonUnreachable, ProtocolError) as e:
        print(f"scion-appliance {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    print(raw if getattr(args, "json", False) else text)
    return code
