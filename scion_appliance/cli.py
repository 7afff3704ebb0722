"""The ``scion-appliance`` command line: one subcommand per module in ``scion_appliance.commands``.

Rules kept here:
- Command modules keep heavy imports inside ``run`` so that ``--help`` stays fast.
- Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
  the integer is the process exit code.
- Errors meant for the operator are ``OperatorError``: printed as one line naming what went wrong
  and what to do, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from scion_appliance import __version__
from scion_appliance.errors import OperatorError

# name -> module under scion_appliance.commands; keep in the order `--help` should list them.
COMMANDS: dict[str, str] = {
    "decode": "decode",
    "check-config": "check_config",
    "status": "status",
    "paths": "paths",
    "peers": "peers",
    "keygen": "keygen",
    "pubkey": "pubkey",
    "router": "router",
    "lab": "lab",
    "run": "run",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scion-appliance",
        description="SCION edge appliance: border router, IP gateway over SCION, and a local lab.",
    )
    parser.add_argument("--version", action="version", version=f"scion-appliance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"scion_appliance.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args))
    except OperatorError as e:
        print(f"scion-appliance {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
