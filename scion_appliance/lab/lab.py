"""A local multi-AS SCION network on loopback: files, router processes, links and their impairments.

Rules kept here:
- Everything about a lab lives in its directory (default ``/tmp/scion-lab/NAME``): ``lab.json`` (ASes,
  routers, links and their state), ``paths.json`` (the path catalogue) and one directory per AS with
  SCION's own ``topology.json`` and ``keys/master0.key``, the router's log, ready file and control
  socket. ``Lab.load(directory)`` works from any process: the CLI, tests, the gateway, the demo.
- Addressing: the n-th AS (1-based, in the order the topology lists them) has its router on
  ``127.NET.n.1`` (internal port 30042, interface ``i`` on port 50000+i) and its end hosts (gateways) on
  ``127.NET.n.2``; NET is 0 unless the lab was created with another ``net``.
- ``up`` writes fresh paths (timestamps = now, exp_time 63: about 6 hours) and starts one router process
  per AS, each in its own session so it outlives the command that started it; it returns once every
  router has written its ready file. ``down`` stops exactly the processes the lab recorded (checked
  against /proc), with SIGTERM then SIGKILL.
- Link changes (cut, restore, impair) go to the routers at both ends of the link over their control
  sockets, and are recorded in ``lab.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scion_appliance.errors import OperatorError
from scion_appliance.lab import catalogue
from scion_appliance.lab.topologies import LabTopology
from scion_appliance.lab.topologies import load as load_topology
from scion_appliance.paths.source import PathInfo, PathInterface, StaticPathSource
from scion_appliance.router import control
from scion_appliance.router import topology as topo_json
from scion_appliance.router.topology import BorderRouter, Interface, Topology
from scion_appliance.scion.addr import IA
from scion_appliance.scion.keys import load_master_keys, write_master_key

LAB_ROOT = Path("/tmp/scion-lab")
INTERNAL_PORT = 30042
INTERFACE_PORT_BASE = 50000
FORMAT_VERSION = 1
NO_IMPAIRMENT = {"loss": 0.0, "delay_ms": 0.0, "jitter_ms": 0.0, "reorder": 0.0}


def _dir_name(ia: str) -> str:
    return "AS" + ia.replace(":", "_")


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def _alive(pid: int | None, marker: str) -> bool:
    """True when ``pid`` runs and is the router started with ``marker`` (its topology path)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker.encode() in cmdline and b"router" in cmdline


class Lab:
    """A lab network. Create with ``Lab.create`` (writes the files) or ``Lab.load`` (reads them)."""

    def __init__(self, directory: Path, doc: dict[str, Any]) -> None:
        self.directory = directory
        self.doc = doc
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- files ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        topology: str = "default",
        directory: str | os.PathLike[str] | None = None,
        *,
        net: int = 0,
    ) -> Lab:
        """Writes a lab's keys, topology files and ``lab.json`` (not its paths: ``up`` mints them)."""
        topo = load_topology(topology)
        if not 0 <= net <= 255:
            raise OperatorError(f"lab net {net} is not 0..255 (routers use 127.NET.n.1)")
        d = Path(directory) if directory is not None else LAB_ROOT / topo.name
        existing = d / "lab.json"
        if existing.exists():
            with contextlib.suppress(OperatorError, ValueError, KeyError):
                old = cls.load(d)
                if old.running():
                    raise OperatorError(
                        f"the lab in {d} is up; run `scion-appliance lab down --dir {d}` first"
                    )
        d.mkdir(parents=True, exist_ok=True)
        ases: dict[str, Any] = {}
        index = {ia: n for n, ia in enumerate(topo.ases, start=1)}
        for ia, spec in topo.ases.items():
            n = index[ia]
            as_dir = d / _dir_name(ia)
            (as_dir / "keys").mkdir(parents=True, exist_ok=True)
            key0 = as_dir / "keys" / "master0.key"
            if not key0.exists():
                write_master_key(key0)
                write_master_key(as_dir / "keys" / "master1.key")
            router_ip = f"127.{net}.{n}.1"
            interfaces: dict[int, Interface] = {}
            for link in topo.links.values():
                for side, other_side in (("a", "b"), ("b", "a")):
                    if getattr(link, side) != ia:
                        continue
                    other = getattr(link, other_side)
                    my_if, other_if = getattr(link, f"{side}_if"), getattr(link, f"{other_side}_if")
                    interfaces[my_if] = Interface(
                        ifid=my_if,
                        local=(router_ip, INTERFACE_PORT_BASE + my_if),
                        remote=(f"127.{net}.{index[other]}.1", INTERFACE_PORT_BASE + other_if),
                        neighbor_ia=IA.parse(other),
                        link_to=link.link_to(side).lower(),
                        mtu=link.mtu,
                        remote_ifid=other_if,
                    )
            br_name = f"br{ia.replace(':', '_')}-1"
            as_topo = Topology(
                ia=IA.parse(ia),
                core=spec.core,
                mtu=spec.mtu,
                dispatched_ports=(1, 0xFFFF),
                border_routers={
                    br_name: BorderRouter(
                        br_name, (router_ip, INTERNAL_PORT), dict(sorted(interfaces.items()))
                    )
                },
            )
            _write_json(as_dir / "topology.json", topo_json.to_json(as_topo))
            ases[ia] = {
                "core": spec.core,
                "index": n,
                "dir": str(as_dir),
                "topology": str(as_dir / "topology.json"),
                "keys": str(as_dir / "keys"),
                "router_pid": None,
                "internal_addr": [router_ip, INTERNAL_PORT],
                "control": str(as_dir / "control.sock"),
                "ready_file": str(as_dir / "router.ready"),
                "log": str(as_dir / "router.log"),
                "host": f"127.{net}.{n}.2",
            }
        links = {
            name: {
                "a": [link.a, link.a_if],
                "b": [link.b, link.b_if],
                "kind": link.kind,
                "mtu": link.mtu,
                "up": True,
                "impairment": dict(NO_IMPAIRMENT),
            }
            for name, link in topo.links.items()
        }
        doc = {
            "version": FORMAT_VERSION,
            "name": topo.name,
            "directory": str(d),
            "net": net,
            "topology": topology,
            "ases": ases,
            "links": links,
        }
        _write_json(existing, doc)
        (d / "topology.source.json").write_text(json.dumps(_topology_doc(topo), indent=2) + "\n")
        return cls(d, doc)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Lab:
        d = Path(directory)
        try:
            doc = json.loads((d / "lab.json").read_text())
        except FileNotFoundError:
            raise OperatorError(
                f"no lab in {d} (lab.json missing); run `scion-appliance lab up --dir {d}`"
            ) from None
        except (OSError, ValueError) as e:
            raise OperatorError(
                f"cannot read {d / 'lab.json'}: {e}; remove the directory and recreate"
            ) from None
        if doc.get("version") != FORMAT_VERSION:
            raise OperatorError(f"{d / 'lab.json'} has format {doc.get('version')}; recreate the lab")
        return cls(d, doc)

    def _save(self) -> None:
        _write_json(self.directory / "lab.json", self.doc)

    def _topology(self) -> LabTopology:
        from scion_appliance.lab.topologies import parse

        source = self.directory / "topology.source.json"
        return parse(json.loads(source.read_text()), self.doc["name"], str(source))

    # -- facts ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.doc["name"])

    @property
    def ases(self) -> dict[str, dict[str, Any]]:
        return dict(self.doc["ases"])

    @property
    def leaves(self) -> list[str]:
        return [ia for ia, a in self.doc["ases"].items() if not a["core"]]

    @property
    def cores(self) -> list[str]:
        return [ia for ia, a in self.doc["ases"].items() if a["core"]]

    @property
    def links(self) -> dict[str, dict[str, Any]]:
        return dict(self.doc["links"])

    def _as(self, ia: str) -> dict[str, Any]:
        try:
            return dict(self.doc["ases"][str(IA.parse(ia))])
        except (KeyError, ValueError):
            raise OperatorError(f"AS {ia} is not part of the lab in {self.directory}") from None

    def host_address(self, ia: str) -> str:
        """The end-host (gateway) IP of AS ``ia``."""
        return str(self._as(ia)["host"])

    def router_address(self, ia: str) -> tuple[str, int]:
        """The internal (host, port) of AS ``ia``'s router: the first hop of its hosts' packets."""
        host, port = self._as(ia)["internal_addr"]
        return str(host), int(port)

    def keys_dir(self, ia: str) -> str:
        return str(self._as(ia)["keys"])

    def hop_key(self, ia: str) -> bytes:
        return load_master_keys(self.keys_dir(ia)).hop_key

    def paths_doc(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        path = self.directory / "paths.json"
        try:
            doc: dict[str, dict[str, list[dict[str, Any]]]] = json.loads(path.read_text())
        except FileNotFoundError:
            raise OperatorError(f"no paths in {self.directory} yet; run `scion-appliance lab up`") from None
        return doc

    def paths(self, src_ia: str, dst_ia: str) -> list[PathInfo]:
        """The catalogue's paths from ``src_ia`` to ``dst_ia``, shortest first."""
        entries = self.paths_doc().get(str(IA.parse(src_ia)), {}).get(str(IA.parse(dst_ia)), [])
        return [_path_info(e) for e in entries]

    def path_source(self, src_ia: str) -> StaticPathSource:
        """A path source for end hosts of ``src_ia`` holding every destination of the catalogue."""
        by_dst = self.paths_doc().get(str(IA.parse(src_ia)), {})
        return StaticPathSource({dst: [_path_info(e) for e in entries] for dst, entries in by_dst.items()})

    def links_of(self, path: PathInfo) -> list[str]:
        """The names of the links ``path`` crosses, in travel order."""
        ends = {}
        for name, link in self.doc["links"].items():
            ends[(link["a"][0], int(link["a"][1]))] = name
            ends[(link["b"][0], int(link["b"][1]))] = name
        names = []
        for k in range(0, len(path.interfaces) - 1, 2):
            intf = path.interfaces[k]
            try:
                names.append(ends[(intf.ia, intf.ifid)])
            except KeyError:
                raise OperatorError(
                    f"path {path.short_id} crosses {intf.ia}#{intf.ifid}, not a lab link"
                ) from None
        return names

    def link_of(self, path: PathInfo, index: int) -> str:
        """The ``index``-th link ``path`` crosses (0 = the first, -1 = the last)."""
        return self.links_of(path)[index]

    # -- processes ------------------------------------------------------------------------

    def running(self) -> dict[str, bool]:
        """ISD-AS -> whether its router process is alive."""
        return {ia: _alive(a.get("router_pid"), a["topology"]) for ia, a in self.doc["ases"].items()}

    def is_up(self) -> bool:
        return all(self.running().values())

    def mint_paths(self, *, now: int | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Mints a fresh catalogue (timestamps = now) and writes ``paths.json``."""
        topo = self._topology()
        keys = {ia: self.hop_key(ia) for ia in topo.ases}
        next_hops = {ia: self.router_address(ia) for ia in topo.ases}
        doc = catalogue.build(topo, keys, next_hops, now=int(time.time()) if now is None else now)
        _write_json(self.directory / "paths.json", doc)
        return doc

    def up(self, timeout: float = 20.0) -> None:
        """Mints paths and starts every router that is not running; returns when all are ready."""
        self.mint_paths()
        alive = self.running()
        started: dict[str, subprocess.Popen[bytes]] = {}
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for ia, a in self.doc["ases"].items():
            if alive[ia]:
                continue
            Path(a["ready_file"]).unlink(missing_ok=True)
            cmd = [
                sys.executable, "-m", "scion_appliance", "router",
                "--topology", a["topology"], "--keys", a["keys"],
                "--control", a["control"], "--ready-file", a["ready_file"],
            ]  # fmt: skip
            with open(a["log"], "ab") as logf:
                started[ia] = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    start_new_session=True, env=env,
                )  # fmt: skip
            a["router_pid"] = started[ia].pid
            for link in self.doc["links"].values():
                if ia in (link["a"][0], link["b"][0]):
                    link["up"], link["impairment"] = True, dict(NO_IMPAIRMENT)
        self._save()
        self._procs.update(started)
        deadline = time.monotonic() + timeout
        waiting = dict(started)
        while waiting:
            for ia, proc in list(waiting.items()):
                if Path(self.doc["ases"][ia]["ready_file"]).exists():
                    del waiting[ia]
                elif proc.poll() is not None:
                    tail = (
                        Path(self.doc["ases"][ia]["log"])
                        .read_text(errors="replace")
                        .strip()
                        .splitlines()[-3:]
                    )
                    self.down()
                    raise OperatorError(
                        f"router of {ia} exited with status {proc.returncode} while starting: "
                        + (" | ".join(tail) or "no output")
                        + f"; see {self.doc['ases'][ia]['log']}"
                    )
            if waiting and time.monotonic() > deadline:
                self.down()
                raise OperatorError(
                    f"routers of {', '.join(waiting)} not ready after {timeout} s; see their router.log in "
                    f"{self.directory}"
                )
            if waiting:
                time.sleep(0.02)

    def down(self, timeout: float = 5.0) -> None:
        """Stops the lab's routers (SIGTERM, then SIGKILL after ``timeout``)."""
        pids = {}
        for ia, a in self.doc["ases"].items():
            pid = a.get("router_pid")
            if pid and _alive(pid, a["topology"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                pids[ia] = pid
        deadline = time.monotonic() + timeout
        for ia, pid in pids.items():
            topo = self.doc["ases"][ia]["topology"]
            proc = self._procs.get(ia)
            while _alive(pid, topo) and time.monotonic() < deadline:
                if proc is not None and proc.poll() is not None:
                    break
                time.sleep(0.02)
            if _alive(pid, topo):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ia, proc in list(self._procs.items()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)
            del self._procs[ia]
        for a in self.doc["ases"].values():
            a["router_pid"] = None
            Path(a["ready_file"]).unlink(missing_ok=True)
        self._save()

    # -- links and counters -----------------------------------------------------------------

    def _link(self, name: str) -> dict[str, Any]:
        try:
            return dict(self.doc["links"][name])
        except KeyError:
            known = ", ".join(self.doc["links"])
            raise OperatorError(f"no link {name!r} in the lab; links are: {known}") from None

    def _both_ends(self, name: str, command: dict[str, Any]) -> None:
        link = self._link(name)
        for ia, ifid in (link["a"], link["b"]):
            answer = control.request(self.doc["ases"][ia]["control"], {**command, "ifid": ifid})
            if not answer.get("ok"):
                raise OperatorError(
                    f"router of {ia} refused {command['cmd']} on interface {ifid}: {answer.get('error')}"
                )

    def cut(self, name: str) -> None:
        """Takes link ``name`` down at both ends: nothing crosses it, senders get SCMP interface-down."""
        self._both_ends(name, {"cmd": "link", "up": False})
        self.doc["links"][name]["up"] = False
        self._save()

    def restore(self, name: str) -> None:
        self._both_ends(name, {"cmd": "link", "up": True})
        self.doc["links"][name]["up"] = True
        self._save()

    def impair(
        self,
        name: str,
        loss: float = 0.0,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        reorder: float = 0.0,
    ) -> None:
        """Sets link ``name``'s impairment in both directions (replacing the previous one); each
        direction loses ``loss`` of its packets, delays them by ``delay_ms`` +/- ``jitter_ms``, and
        reorders a ``reorder`` share of them."""
        imp = {
            "loss": float(loss),
            "delay_ms": float(delay_ms),
            "jitter_ms": float(jitter_ms),
            "reorder": float(reorder),
        }
        self._both_ends(name, {"cmd": "impair", **imp})
        self.doc["links"][name]["impairment"] = imp
        self._save()

    def counters(self, ia: str) -> dict[str, int]:
        """The router's counters (packets by event and reason) of AS ``ia``."""
        answer = control.request(self._as(ia)["control"], {"cmd": "counters"})
        return dict(answer.get("counters", {}))

    def status(self) -> dict[str, Any]:
        running = self.running()
        try:
            paths = self.paths_doc()
        except OperatorError:
            paths = {}
        return {
            "name": self.name,
            "directory": str(self.directory),
            "ases": {
                ia: {
                    "core": a["core"],
                    "router_pid": a.get("router_pid"),
                    "alive": running[ia],
                    "internal_addr": a["internal_addr"],
                    "host": a["host"],
                }
                for ia, a in self.doc["ases"].items()
            },
            "links": self.links,
            "paths": {src: {dst: len(v) for dst, v in by_dst.items()} for src, by_dst in paths.items()},
        }


def _path_info(entry: dict[str, Any]) -> PathInfo:
    host, port = entry["next_hop"]
    return PathInfo(
        id=entry["id"],
        hop_count=int(entry["hop_count"]),
        interfaces=tuple(PathInterface(ia, int(ifid)) for ia, ifid in entry["interfaces"]),
        raw=bytes.fromhex(entry["raw"]),
        next_hop=(str(host), int(port)),
        mtu=int(entry["mtu"]),
    )


def _topology_doc(topo: LabTopology) -> dict[str, Any]:
    return {
        "ASes": {ia: {"core": a.core, "mtu": a.mtu} for ia, a in topo.ases.items()},
        "links": [
            {"a": f"{ln.b}#{ln.b_if}", "b": f"{ln.a}#{ln.a_if}", "linkAtoB": "CHILD", "mtu": ln.mtu}
            if ln.kind == "PARENT"
            else {"a": f"{ln.a}#{ln.a_if}", "b": f"{ln.b}#{ln.b_if}", "linkAtoB": ln.kind, "mtu": ln.mtu}
            for ln in topo.links.values()
        ],
    }


@contextlib.contextmanager
def running_lab(
    directory: str | os.PathLike[str], topology: str = "default", *, net: int | None = None
) -> Iterator[Lab]:
    """A lab created in ``directory`` and up for the ``with`` block; always taken down after.
    ``net`` None picks a random 127.NET network (1..250) so parallel labs do not collide."""
    lab = Lab.create(topology, directory, net=random.randint(1, 250) if net is None else net)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()
