"""``scion-appliance status``: the running daemon's summary, like ``wg show``."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "show the running appliance: identity, peers, paths, counters (exit 0 healthy, 1 degraded, 3 down)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scion_appliance.control.cli import add_socket_argument

    add_socket_argument(p)


def run(args: argparse.Namespace) -> int:
    from scion_appliance.control.cli import run_query
    from scion_appliance.control.render import assess, render_status

    def render(doc: Any) -> tuple[str, int]:
        healthy, _ = assess(doc)
        return render_status(doc), 0 if healthy else 1

    return run_query(args, "/v1/status", None, render)
