"""``scion-appliance router``: run one AS's border router from SCION's topology.json and keys."""

from __future__ import annotations

import argparse

HELP = "run one AS's border router (SCION topology.json + keys/master0.key)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--topology", required=True, metavar="FILE", help="the AS's topology.json (scionproto format)"
    )
    p.add_argument("--keys", required=True, metavar="DIR", help="the AS's keys directory (master0.key)")
    p.add_argument(
        "--name", metavar="BR", help="which border router of the file to run (default: the only one)"
    )
    p.add_argument(
        "--control", metavar="PATH", help="Unix datagram socket for run-time commands (lab impairments)"
    )
    p.add_argument(
        "--ready-file", metavar="PATH", help="written (JSON) once every socket is bound; removed on exit"
    )
    p.add_argument(
        "--scmp-rate",
        type=float,
        default=100.0,
        metavar="N",
        help="SCMP errors per second at most (default 100)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    from scion_appliance import log
    from scion_appliance.router import service

    log.configure(args.log_level)
    service.run(
        args.topology,
        args.keys,
        name=args.name,
        control_path=args.control,
        ready_file=args.ready_file,
        scmp_error_rate=args.scmp_rate,
    )
    return 0
