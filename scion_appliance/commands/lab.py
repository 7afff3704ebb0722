"""``scion-appliance lab``: a local multi-AS SCION network of the appliance's own routers on loopback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "run a local multi-AS SCION lab on loopback: up, down, status, link (cut/restore/impair)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=["up", "down", "status", "link", "demo"],
        help="what to do; `demo` runs two gateways across the lab, cuts the active path and shows the failover",
    )
    p.add_argument("link_args", nargs="*", metavar="LINK ACTION", help="for `link`: NAME cut|restore|impair")
    p.add_argument("--topology", default="default", metavar="NAME|FILE", help="built-in name or JSON file")
    p.add_argument("--dir", metavar="DIR", help="lab directory (default /tmp/scion-lab/NAME)")
    p.add_argument("--net", type=int, default=0, help="routers on 127.NET.n.1 (default 0)")
    p.add_argument("--json", action="store_true", help="status: print the lab's status document")
    p.add_argument("--loss", type=float, default=0.0, help="impair: share of packets lost per direction")
    p.add_argument("--delay-ms", type=float, default=0.0, help="impair: added one-way delay")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="impair: delay varies by +/- this much")
    p.add_argument("--reorder", type=float, default=0.0, help="impair: share of packets reordered")


def _directory(args: argparse.Namespace) -> Path:
    from scion_appliance.lab import LAB_ROOT
    from scion_appliance.lab.topologies import BUILTIN

    if args.dir:
        return Path(args.dir)
    name = args.topology if args.topology in BUILTIN else Path(args.topology).stem
    return LAB_ROOT / name


def _print_status(doc: dict[str, Any]) -> None:
    print(f"lab {doc['name']} in {doc['directory']}")
    print("ASes:")
    for ia, a in doc["ases"].items():
        state = f"up (pid {a['router_pid']})" if a["alive"] else "down"
        kind = "core" if a["core"] else "leaf"
        router = f"{a['internal_addr'][0]}:{a['internal_addr'][1]}"
        print(f"  {ia:<16} {kind:<4}  router {router:<18} hosts {a['host']:<14} {state}")
    print("links:")
    for name, ln in doc["links"].items():
        imp = ln["impairment"]
        extra = ", ".join(f"{k} {v:g}" for k, v in imp.items() if v)
        state = "up" if ln["up"] else "CUT"
        a, b = ln["a"], ln["b"]
        ends = f"{a[0]}#{a[1]} <-> {b[0]}#{b[1]}"
        print(f"  {name:<10} {ends:<34} {ln['kind']:<6} {state}{'  ' + extra if extra else ''}")
    print("paths:")
    if not doc["paths"]:
        print("  none minted (lab up mints them)")
    for src, by_dst in doc["paths"].items():
        for dst, n in by_dst.items():
            print(f"  {src} -> {dst}: {n}")


def run(args: argparse.Namespace) -> int:
    from scion_appliance.errors import OperatorError
    from scion_appliance.lab import Lab

    if args.action == "demo":
        from scion_appliance import log
        from scion_appliance.lab.demo import run_demo

        log.configure("warning")  # JSON lines on stderr for anything that goes wrong; progress on stdout

        summary = run_demo(args.dir)
        return 0 if summary["received"] > 0 and summary["path_after"] != summary["path_before"] else 1
    d = _directory(args)
    if args.action == "up":
        lab = Lab.load(d) if (d / "lab.json").exists() else None
        if lab is None or (lab.doc.get("topology"), lab.doc.get("net")) != (args.topology, args.net):
            lab = Lab.create(args.topology, d, net=args.net)  # refuses while the old lab is up
        lab.up()
        print(f"lab {lab.name} up in {d}: {len(lab.ases)} routers; `scion-appliance lab status --dir {d}`")
        return 0
    lab = Lab.load(d)
    if args.action == "down":
        lab.down()
        print(f"lab {lab.name} down")
        return 0
    if args.action == "status":
        doc = lab.status()
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            _print_status(doc)
        alive = [a["alive"] for a in doc["ases"].values()]
        return 0 if all(alive) else (1 if any(alive) else 3)
    if len(args.link_args) != 2:
        raise OperatorError("usage: scion-appliance lab link NAME cut|restore|impair [--loss ...]")
    name, what = args.link_args
    if what == "cut":
        lab.cut(name)
    elif what == "restore":
        lab.restore(name)
    elif what == "impair":
        lab.impair(
            name, loss=args.loss, delay_ms=args.delay_ms, jitter_ms=args.jitter_ms, reorder=args.reorder
        )
    else:
        raise OperatorError(f"unknown link action {what!r}; use cut, restore or impair")
    print(f"link {name}: {what} done")
    return 0
