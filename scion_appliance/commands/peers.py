"""``scion-appliance peers``: the configured peers with handshake age and transfer, like ``wg show``."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "show the peers: endpoint AS, latest handshake, transfer, state (exit 1 if any is down)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scion_appliance.control.cli import add_socket_argument

    add_socket_argument(p)


def run(args: argparse.Namespace) -> int:
    from scion_appliance.control.cli import run_query
    from scion_appliance.control.render import render_peers

    def render(doc: Any) -> tuple[str, int]:
        text = render_peers(doc)
        down = any(isinstance(p, dict) and p.get("state") == "down" for p in doc["peers"])
        return text, 1 if down else 0

    return run_query(args, "/v1/peers", None, render)
