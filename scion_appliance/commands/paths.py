"""``scion-appliance paths ISD-AS``: the candidate paths to one remote AS and which one is active."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "show the paths to a remote AS with RTT, loss and state; the active one is marked *"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scion_appliance.control.cli import add_socket_argument

    p.add_argument("dst", metavar="ISD-AS", help="the remote AS, e.g. 1-ff00:0:111")
    add_socket_argument(p)


def run(args: argparse.Namespace) -> int:
    from scion_appliance.control.cli import run_query
    from scion_appliance.control.client import ProtocolError
    from scion_appliance.control.render import render_paths
    from scion_appliance.errors import OperatorError
    from scion_appliance.scion.addr import IA, AddressError

    try:
        dst = str(IA.parse(args.dst))
    except AddressError as e:
        raise OperatorError(str(e)) from None

    def render(doc: Any) -> tuple[str, int]:
        if not isinstance(doc, dict) or not isinstance(doc.get("paths", []), list):
            raise ProtocolError("the paths document is not an object with a paths list")
        down = any(isinstance(p, dict) and p.get("state") == "down" for p in doc.get("paths", []))
        degraded = down or not doc.get("active")
        return "\n".join(render_paths(dst, doc, indent="")), 1 if degraded else 0

    return run_query(args, "/v1/paths", {"dst": dst}, render)
