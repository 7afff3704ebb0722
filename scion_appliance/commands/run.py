"""``scion-appliance run``: the appliance service (what systemd starts)."""

from __future__ import annotations

import argparse

from scion_appliance.config import DEFAULT_CONFIG_PATH

HELP = "run the appliance: gateway, TUN, router, control socket (SIGTERM stops, SIGHUP reloads peers)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        default=str(DEFAULT_CONFIG_PATH),
        help=f"the config file (default {DEFAULT_CONFIG_PATH})",
    )


def run(args: argparse.Namespace) -> int:
    from scion_appliance import config, log, service

    cfg = config.load(args.config, check_files_exist=True)
    log.configure(cfg.logging.level)
    return service.run(cfg)
