"""``scion-appliance check-config``: validate a config file without starting anything."""

from __future__ import annotations

import argparse

from scion_appliance.config import DEFAULT_CONFIG_PATH

HELP = "validate a config file (exit 0 and a one-line summary, or the error and exit 2)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        default=str(DEFAULT_CONFIG_PATH),
        help=f"the config file (default {DEFAULT_CONFIG_PATH})",
    )
    p.add_argument(
        "--check-files",
        action="store_true",
        help="also check that the key files and topology it names exist and key files are mode 0600",
    )


def run(args: argparse.Namespace) -> int:
    from scion_appliance.config import load

    cfg = load(args.file, check_files_exist=args.check_files)
    print(cfg.summary())
    return 0
