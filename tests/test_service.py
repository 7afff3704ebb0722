"""The service end to end: two `scion-appliance run` processes for the lab's two leaf ASes, operated
through the control socket and the CLI as an operator would.

The lab (six router processes on a random 127.NET network) and both appliances are started once for the
module; the tests run in file order and each leaves the pair healthy for the next, except the last ones,
which stop the appliances. No TUN device is configured: traffic goes through `POST /v1/send`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from scion_appliance import netns
from scion_appliance.lab import Lab, running_lab
from scion_appliance.state import StateStore
from scion_appliance.tunnel import keys
from tests.test_telemetry import Receiver, points, value

ROOT = Path(__file__).resolve().parents[1]
A, B = "1-ff00:0:111", "2-ff00:0:211"
A_LINKS = ("111-110#1", "111-110#2", "111-120#1")  # every link of leaf A: cut them all and A is cut off
PORT = 30757
KEEPALIVE_S = 0.5


def cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "scion_appliance", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def cli_expecting(code: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI's answer once it exits ``code``. Its exit code follows the daemon's state of the moment,
    and on a loaded machine a probe can time out now and then, making a path degraded or down for a
    few hundred milliseconds; a few tries ride that out without hiding a lasting problem."""
    r = cli(*args)
    for _ in range(4):
        if r.returncode == code:
            break
        time.sleep(0.5)
        r = cli(*args)
    return r


def wait_until(what: str, check: Callable[[], Any], timeout: float = 10.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@dataclass
class Node:
    """One appliance: its files, its process and a client for its control socket."""

    ia: str
    peer_ia: str
    dir: Path
    private: bytes
    peer_public: bytes
    lab: Lab
    port: int = PORT
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    notify: socket.socket | None = None  # systemd's NOTIFY_SOCKET, played by the test
    otlp: Receiver | None = None  # an OTLP/HTTP collector, played by the test

    @property
    def config(self) -> Path:
        return self.dir / "appliance.toml"

    @property
    def socket(self) -> Path:
        return self.dir / "control.sock"

    @property
    def log(self) -> Path:
        return self.dir / "appliance.log"

    @property
    def public_b64(self) -> str:
        return keys.encode_key(keys.public_key(self.private))

    def write_config(self, extra_paths: str = "", extra: str = "") -> None:
        self.config.write_text(
            f"""
[identity]
private_key_file = "private.key"
isd_as = "{self.ia}"

[state]
dir = "state"

[control]
socket = "{self.socket}"

[underlay]
port = {self.port}

[paths]
catalogue = "{self.lab.directory}/paths.json"
{extra_paths}

[[peers]]
name = "{"b" if self.peer_ia == B else "a"}"
isd_as = "{self.peer_ia}"
public_key = "{keys.encode_key(self.peer_public)}"
keepalive_s = {KEEPALIVE_S}
remote_prefixes = ["{"198.51.100.0/24" if self.peer_ia == B else "203.0.113.0/24"}"]

{extra}
"""
        )

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = self.notify.getsockname()
        if self.otlp is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.otlp.url
            env["OTEL_METRIC_EXPORT_INTERVAL"] = "300"
            env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # spans leave within 0.2 s, not the default 5 s
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scion_appliance", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.starts += 1

    def notifications(self) -> list[str]:
        """What the daemon told systemd since the last call."""
        assert self.notify is not None
        out = []
        while True:
            try:
                out.append(self.notify.recv(4096).decode())
            except BlockingIOError:
                return out

    def http(self) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://appliance", timeout=5.0
        )

    def get(self, url: str, **params: str) -> Any:
        with self.http() as c:
            r = c.get(url, params=params or None)
            r.raise_for_status()
            return r.json()

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.get("/v1/status")
        return doc

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                if doc.get("event") == name:
                    out.append(doc)
        return out

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


def healthy(node: Node) -> bool:
    return node.status()["state"] == "healthy"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    base = tmp_path_factory.mktemp("svc")
    with running_lab(base / "lab") as lab:
        ka, kb = keys.generate_private_key(), keys.generate_private_key()
        a = Node(A, B, base / "a", ka, keys.public_key(kb), lab)
        b = Node(B, A, base / "b", kb, keys.public_key(ka), lab)
        a.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.notify.bind(str(base / "notify.sock"))
        a.notify.setblocking(False)
        a.otlp = Receiver()
        for n in (a, b):
            n.dir.mkdir()
            keys.write_private_key(n.dir / "private.key", n.private)  # as `scion-appliance keygen` does
            n.write_config()
            n.start()
        try:
            for n in (a, b):
                wait_until(f"{n.ia} healthy", lambda n=n: healthy(n), timeout=15)  # type: ignore[misc]
            yield a, b
        finally:
            for n in (a, b):
                if n.proc is not None and n.proc.poll() is None:
                    n.proc.kill()
                    n.proc.wait(5)
            a.otlp.close()


STATUS_FIELDS = {
    "schema": int,
    "version": str,
    "state": str,
    "problems": list,
    "uptime_s": float,
    "identity": dict,
    "interfaces": dict,
    "peers": list,
    "sessions": dict,
    "paths": dict,
    "counters": dict,
    "lifetime": dict,
}
PEER_FIELDS: tuple[str, ...] = (
    "name", "isd_as", "public_key", "endpoint", "remote_prefixes", "state", "latest_handshake_age_s",
    "transfer", "session",
)  # fmt: skip
PATH_FIELDS = ("id", "sequence", "hop_count", "state", "active", "rtt_s", "rtt_p95_s", "jitter_s", "loss")


def check_status_document(doc: dict[str, Any], me: Node) -> None:
    """The shape docs/control-api.md promises, field by field."""
    for name, kind in STATUS_FIELDS.items():
        assert isinstance(doc[name], kind), name
    assert doc["schema"] == 1 and doc["state"] in ("healthy", "degraded", "starting", "stopping")
    assert doc["identity"] == {"isd_as": me.ia, "public_key": me.public_b64}
    assert doc["interfaces"]["underlay"]["port"] == PORT and doc["interfaces"]["tun"] is None
    (peer,) = doc["peers"]
    assert all(k in peer for k in PEER_FIELDS)
    assert peer["isd_as"] == me.peer_ia and peer["public_key"] == keys.encode_key(me.peer_public)
    assert peer["endpoint"] == f"{me.lab.host_address(me.peer_ia)}:{PORT}"  # defaulted from the lab
    assert set(peer["transfer"]) == {"rx_bytes", "tx_bytes", "rx_packets", "tx_packets"}
    pset = doc["paths"][me.peer_ia]
    ids = [p.id for p in me.lab.paths(me.ia, me.peer_ia)]
    assert [p["id"] for p in pset["paths"]] == ids  # every catalogue path, catalogue order
    for p in pset["paths"]:
        assert all(k in p for k in PATH_FIELDS)
        assert p["active"] == (p["id"] == pset["active"])
    counters = doc["counters"]
    for k in ("packets", "bytes"):
        assert set(counters[k]) == {"rx", "tx"}
    for k in ("replay_rejects", "handshakes", "handshake_failures", "failovers"):
        assert isinstance(counters[k], int)
    assert isinstance(counters["drops"], dict)


# -- status, paths, peers -----------------------------------------------------------------------------


def test_status_summary_and_json(pair: tuple[Node, Node]) -> None:
    a, b = pair
    r = cli_expecting(0, "status", "--socket", str(a.socket))
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout
    assert text.startswith(f"interface: scion-appliance {A}\n")
    assert f"  public key: {a.public_b64}" in text and "  private key: (hidden)" in text
    assert "  state: healthy" in text and "  sessions: 1" in text
    assert f"peer: b\n  public key: {b.public_b64}\n  endpoint: {B} " in text
    assert "  state: up" in text and text.count("\n  * ") == 1  # one active path marked
    assert keys.encode_key(a.private) not in text

    r = cli_expecting(0, "status", "--json", "--socket", str(a.socket))
    assert r.returncode == 0, json.loads(r.stdout)["problems"]
    # Printed as the daemon sent it: one compact JSON line, not re-serialised by the CLI.
    assert r.stdout.count("\n") == 1 and r.stdout.startswith('{"schema":1,')
    doc = json.loads(r.stdout)
    check_status_document(doc, a)
    assert doc["peers"][0]["state"] == "up" and doc["sessions"] == {"active": 1}
    assert doc["counters"]["handshakes"] >= 1 and doc["counters"]["failovers"] >= 0
    check_status_document(b.status(), b)
    assert a.notifications() == ["READY=1"]  # Type=notify: sent once the control socket answers


def test_paths_and_peers_commands(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    r = cli_expecting(0, "paths", B, "--socket", str(a.socket))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"paths to {B}: active ")
    n = len(a.lab.paths(A, B))
    assert len(lines) == 1 + n and sum(line.startswith("* ") for line in lines) == 1
    assert all(" up " in line for line in lines[1:])
    r = cli("paths", B, "--json", "--socket", str(a.socket))
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["dst"] == B and len(doc["paths"]) == n
    r = cli("paths", "1-ff00:0:999", "--socket", str(a.socket))
    assert r.returncode == 2 and "not a destination of this appliance" in r.stderr
    r = cli_expecting(0, "peers", "--socket", str(a.socket))
    assert r.returncode == 0 and r.stdout.startswith("peer: b\n") and "  state: up" in r.stdout


# -- the datagram API --------------------------------------------------------------------------------


def send(node: Node, payload: bytes, client: httpx.Client | None = None) -> httpx.Response:
    if client is not None:
        return client.post("/v1/send", params={"dst": node.peer_ia}, content=payload)
    with node.http() as c:
        return c.post("/v1/send", params={"dst": node.peer_ia}, content=payload)


def rx_bytes(node: Node) -> int:
    value: int = node.status()["peers"][0]["transfer"]["rx_bytes"]
    return value


def test_send_delivers_to_the_other_side(pair: tuple[Node, Node]) -> None:
    a, b = pair
    before = rx_bytes(b)
    ids = {p["id"] for p in a.get("/v1/paths", dst=B)["paths"]}
    with a.http() as c:
        answers = [send(a, bytes([i]) * 100, c) for i in range(20)]
    for r in answers:
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["dst"] == B and doc["bytes"] == 100 and doc["path"] in ids
        assert 0 < doc["elapsed_s"] < 1.0 and "-" in doc["packet_id"]
    assert len({r.json()["packet_id"] for r in answers}) == 20
    # Keepalives carry no bytes: B's received payload bytes grow by exactly what was sent.
    wait_until("B to count 2000 bytes", lambda: rx_bytes(b) - before == 2000, timeout=3)


def test_telemetry_exports_what_the_status_shows(pair: tuple[Node, Node]) -> None:
    """A's OTLP/HTTP export (to a collector the test runs) carries the service's counters and events."""
    a, _ = pair
    assert a.otlp is not None
    tx = a.status()["counters"]["bytes"]["tx"]
    assert tx >= 2000  # the datagrams of the test before

    def exported() -> dict[str, Any] | None:
        got = a.otlp.latest_metrics() if a.otlp and a.otlp.metrics else {}
        sent = points(got["scion.appliance.bytes"]) if "scion.appliance.bytes" in got else {}
        point = sent.get((("direction", "transmit"),))
        return got if point is not None and value(point) >= tx else None

    metrics = wait_until("an export with A's bytes", exported, timeout=5)
    assert metrics["scion.appliance.bytes"].unit == "By"
    assert metrics["scion.appliance.packets"].unit == "{packet}"
    assert value(points(metrics["scion.appliance.packets"])[(("direction", "transmit"),)]) >= 20
    assert value(next(iter(points(metrics["scion.appliance.sessions"]).values()))) == 1
    assert sum(value(p) for p in points(metrics["scion.appliance.handshakes"]).values()) >= 1
    rtt = metrics["scion.appliance.path.rtt"]
    assert rtt.unit == "s" and sum(p.count for p in rtt.histogram.data_points) > 0
    states = points(metrics["scion.appliance.path.state"])
    assert len(states) == len(a.lab.paths(A, B))  # one point per candidate path
    assert sum(dict(k)["active"] for k in states) == 1

    def spans() -> list[str]:
        assert a.otlp is not None
        traces = a.otlp.traces
        return [s.name for r in traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    wait_until("a handshake span", lambda: "scion.handshake" in spans(), timeout=3)


def test_bad_requests_get_errors_while_traffic_keeps_flowing(pair: tuple[Node, Node]) -> None:
    a, b = pair
    before = rx_bytes(b)
    stop = threading.Event()
    results: list[int] = []
    failures: list[str] = []

    def traffic() -> None:
        with a.http() as c:
            while not stop.is_set() and len(results) < 2000:
                r = send(a, b"x" * 50, c)
                results.append(r.status_code)
                if r.status_code != 200:
                    failures.append(r.text)
                time.sleep(0.005)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        slow = socket.socket(socket.AF_UNIX)  # a client that starts a request head and stalls
        slow.connect(str(a.socket))
        slow.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(a.socket))
        raw.sendall(b"\x16\x03\x01garbage that is not HTTP\r\n\r\n")
        answer = raw.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
        raw.close()
        with a.http() as c:
            r = c.post("/v1/send", params={"dst": B}, content=b"x" * (10 << 20))
            assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
            r = c.post("/v1/send", params={"dst": B}, content=iter([b"y" * 65536] * 3))  # chunked, no length
            assert r.status_code == 413
            r = c.post("/v1/send", params={"dst": B}, content=b"z" * 3000)  # over a datagram's room
            assert r.status_code == 400 and "holds at most" in r.json()["error"]
            assert c.post("/v1/send", params={"dst": "1-ff00:0:999"}, content=b"q").status_code == 404
            assert c.post("/v1/send", params={"dst": "not-an-ia"}, content=b"q").status_code == 400
            assert c.get("/v1/send").status_code == 405
            assert c.get("/v1/nothing").status_code == 404
            assert c.post("/v1/paths/pin", content=b"{not json").status_code == 400
            assert c.post("/v1/peers/nobody/rekey").status_code == 404
            assert c.get("/v1/health").json()["status"] == "ok"  # while the slow client still hangs
        # Traffic must go on after all that (and with the slow client still connected): wait for more
        # sends to complete instead of counting how many fit in a fixed time on a loaded machine.
        mark = len(results)
        wait_until("traffic to keep flowing", lambda: len(results) >= mark + 10 or not t.is_alive(), timeout=20)
        slow.close()
    finally:
        stop.set()
        t.join(10)
    assert len(results) >= mark + 10 and set(results) == {200}, failures[:3]
    wait_until("B to receive every datagram", lambda: rx_bytes(b) - before == 50 * len(results), timeout=3)


# -- admin actions ------------------------------------------------------------------------------------


def test_pin_unpin_and_rekey(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    pset = a.get("/v1/paths", dst=B)
    other = next(p["id"] for p in pset["paths"] if not p["active"] and p["state"] != "down")
    with a.http() as c:
        r = c.post("/v1/paths/pin", json={"dst": B, "path": other[:12]})  # a unique prefix will do
        assert r.status_code == 200 and r.json()["pinned"] == other
        assert c.post("/v1/paths/pin", json={"dst": B, "path": "ffffffffff"}).status_code == 404
    pset = wait_until(
        "the pinned path to be active", lambda: (s := a.get("/v1/paths", dst=B))["active"] == other and s
    )
    assert pset["pinned"] == other and pset["reason"] == "pinned by operator"
    r = send(a, b"on the pinned path")
    assert r.json()["path"] == other
    with a.http() as c:
        assert c.post("/v1/paths/unpin", json={"dst": B}).json()["pinned"] is None
    assert a.get("/v1/paths", dst=B)["pinned"] is None

    handshakes = a.status()["counters"]["handshakes"]
    with a.http() as c:
        r = c.post("/v1/peers/b/rekey")
    assert r.status_code == 202 and r.json()["peer"] == "b"
    wait_until("a new handshake", lambda: a.status()["counters"]["handshakes"] > handshakes, timeout=5)
    wait_until("A healthy after the rekey", lambda: healthy(a))


def test_sighup_reloads_policy_without_dropping_the_session(pair: tuple[Node, Node]) -> None:
    a, b = pair
    before = a.status()
    handshakes = before["counters"]["handshakes"]
    age = before["peers"][0]["latest_handshake_age_s"]
    a.write_config(extra_paths='excluded_ases = ["1-ff00:0:110"]')  # leaves the paths through 120 only
    assert a.proc is not None
    a.proc.send_signal(signal.SIGHUP)
    wait_until("the reload", lambda: len(a.events("config.reloaded")) == 1, timeout=5)
    pset = wait_until(
        "a path avoiding 1-ff00:0:110",
        lambda: (
            (s := a.get("/v1/paths", dst=B))["active"]
            and "1-ff00:0:110" not in next(p for p in s["paths"] if p["active"])["sequence"]
            and s
        ),
    )
    assert pset["active"]
    r = send(a, b"after the reload")
    assert r.status_code == 200
    after = a.status()
    assert after["counters"]["handshakes"] == handshakes  # the session stayed
    assert after["peers"][0]["latest_handshake_age_s"] >= age
    assert after["state"] == "healthy"
    assert a.notifications() == ["RELOADING=1", "READY=1"]

    a.config.write_text("[identity\nbroken")  # a bad file on reload: logged, nothing changes
    a.proc.send_signal(signal.SIGHUP)
    (failed,) = wait_until("the failed reload", lambda: a.events("config.reload_failed"), timeout=5)
    assert str(a.config) in failed["error"] and "expected valid TOML" in failed["error"]
    wait_until("A healthy after the failed reload", lambda: healthy(a))
    assert a.status()["counters"]["handshakes"] == handshakes
    # A peer added, then removed again: b's session stays through both.
    c_key = keys.encode_key(keys.public_key(keys.generate_private_key()))
    a.write_config(extra=f'[[peers]]\nname = "c"\nisd_as = "1-ff00:0:110"\npublic_key = "{c_key}"\n')
    a.proc.send_signal(signal.SIGHUP)
    (_, added) = wait_until(
        "the second reload", lambda: (e := a.events("config.reloaded"))[1:] and e, timeout=5
    )
    assert added["added"] == ["1-ff00:0:110"] and added["removed"] == []
    doc = a.status()
    assert [p["name"] for p in doc["peers"]] == ["b", "c"]
    assert doc["peers"][1]["state"] != "up" and doc["state"] != "healthy"  # c: no paths in the catalogue
    a.write_config()
    a.proc.send_signal(signal.SIGHUP)
    (*_, removed) = wait_until(
        "the third reload", lambda: (e := a.events("config.reloaded"))[2:] and e, timeout=5
    )
    assert removed["removed"] == ["1-ff00:0:110"]
    wait_until("A healthy with b alone", lambda: healthy(a))
    assert a.status()["counters"]["handshakes"] == handshakes
    assert send(a, b"still the same session").status_code == 200
    del b


# -- TUN mode -------------------------------------------------------------------------------------------

ECHO_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.1", 7000))
s.settimeout(20)
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(4096)
    s.sendto(data, addr)
"""

ECHO_CLIENT = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("203.0.113.1", 0))
s.settimeout(2)
good = 0
for i in range(50):
    msg = b"%d-" % i + bytes(range(256)) * 4
    s.sendto(msg, ("198.51.100.1", 7000))
    try:
        data, _ = s.recvfrom(4096)
        good += data == msg
    except socket.timeout:
        pass
print(good)
"""


@pytest.mark.netns
def test_tun_mode_carries_ip_between_namespaces(pair: tuple[Node, Node], requires_root_netns: None) -> None:
    """Two more appliances with TUN devices in namespaces of their own (``[tun] netns``): UDP from a
    host behind A to one behind B and back, through both appliances and the lab's routers."""
    lab = pair[0].lab
    base = pair[0].dir.parent / "tun"
    ka, kb = keys.generate_private_key(), keys.generate_private_key()
    with netns.scratch("sa-svca") as nsa, netns.scratch("sa-svcb") as nsb:
        a = Node(A, B, base / "a", ka, keys.public_key(kb), lab, port=PORT + 1)
        b = Node(B, A, base / "b", kb, keys.public_key(ka), lab, port=PORT + 1)
        for n, ns, addr in ((a, nsa, "203.0.113.1/24"), (b, nsb, "198.51.100.1/24")):
            n.dir.mkdir(parents=True)
            keys.write_private_key(n.dir / "private.key", n.private)
            n.write_config(extra=f'[tun]\nname = "sa-tun0"\nnetns = "{ns}"\naddress = "{addr}"\nmtu = 1400\n')
            n.start()
        server = None
        try:
            for n in (a, b):
                wait_until(f"{n.ia} (TUN) healthy", lambda n=n: healthy(n), timeout=15)  # type: ignore[misc]
            tun = a.status()["interfaces"]["tun"]
            tun.pop("datapath", None)  # set by the first housekeeping tick after the tunnel started
            assert tun == {
                "name": "sa-tun0",
                "address": "203.0.113.1/24",
                "mtu": 1400,
                "up": True,
                "netns": nsa,
            }
            server = netns.popen(nsb, [sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            before = a.status()["peers"][0]["transfer"]["tx_packets"]
            done = netns.run(nsa, [sys.executable, "-c", ECHO_CLIENT], timeout=60)
            assert done.stdout.strip() == "50", done.stdout + done.stderr
            assert a.status()["peers"][0]["transfer"]["tx_packets"] - before >= 50
            # Both directions ran in the worker threads (the default [datapath] threads = true).
            for n in (a, b):
                assert n.status()["interfaces"]["tun"]["datapath"] == {"outbound": "thread", "inbound": "thread"}
        finally:
            if server is not None:
                server.kill()
                server.wait(5)
            for n in (a, b):
                assert n.stop() == 0


# -- degraded, stopped --------------------------------------------------------------------------------


def test_exit_1_when_the_peer_has_no_path(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    with a.http() as c:  # one cut through the control API (the lab behind the catalogue), the rest directly
        cut = c.post(f"/v1/lab/links/{quote(A_LINKS[0], safe='')}/cut")  # '#' is in link names
        assert cut.status_code == 200 and cut.json() == {"ok": True, "link": A_LINKS[0], "action": "cut"}
        assert c.post("/v1/lab/links/no-such-link/cut").status_code == 404
    for name in A_LINKS[1:]:
        a.lab.cut(name)
    try:
        wait_until("no active path", lambda: a.get("/v1/paths", dst=B)["active"] is None, timeout=5)
        r = cli("status", "--socket", str(a.socket))
        assert r.returncode == 1, r.stdout
        assert "  state: degraded: " in r.stdout and "peer b is down: no usable path" in r.stdout
        r = cli("paths", B, "--socket", str(a.socket))
        assert r.returncode == 1 and "no active path" in r.stdout
        assert send(a, b"nowhere").status_code == 503
    finally:
        for name in A_LINKS:
            a.lab.restore(name)
    wait_until("A healthy again", lambda: healthy(a), timeout=10)


def test_peer_stopped_then_restarted_with_its_state(pair: tuple[Node, Node]) -> None:
    a, b = pair
    lifetime_rx = b.status()["lifetime"]["packets.rx"]
    assert b.stop() == 0  # SIGTERM: graceful
    assert b.events("appliance.stopped")[-1]["state_saved"] is True
    r = cli("status", "--socket", str(b.socket))
    assert r.returncode == 3 and str(b.socket) in r.stderr
    with StateStore.open(b.dir / "state") as store:  # flushed at stop
        assert A in store.path_quality_destinations()
        assert len(store.load_path_quality(A)) == len(a.lab.paths(B, A))
        assert store.counters()["packets.rx"] >= lifetime_rx > 0

    # A hears nothing for three keepalive intervals: B is down, A is degraded.
    wait_until("A to see B down", lambda: a.status()["peers"][0]["state"] == "down", timeout=5)
    r = cli("status", "--socket", str(a.socket))
    assert r.returncode == 1 and "peer b is down" in r.stdout

    b.start()
    wait_until("B ready", lambda: len(b.events("appliance.ready")) == 2, timeout=10)
    assert b.events("appliance.ready")[-1]["path_quality_restored"] == len(a.lab.paths(B, A))
    wait_until("both healthy", lambda: healthy(a) and healthy(b), timeout=10)
    assert b.status()["lifetime"]["packets.rx"] >= lifetime_rx  # lifetime counters carry on
    assert send(b, b"back").status_code == 200


def test_sigterm_then_status_exits_3(pair: tuple[Node, Node]) -> None:
    a, b = pair
    for n in (a, b):
        assert n.stop() == 0
        assert not n.socket.exists()  # removed on the way out
    assert a.notifications()[-1] == "STOPPING=1"
    for n in (a, b):
        r = cli("status", "--socket", str(n.socket))
        assert r.returncode == 3 and "not reachable" in r.stderr


def test_embedded_router_forwards_for_its_as(pair: tuple[Node, Node]) -> None:
    """``[router]``: the appliance runs its AS's border router in its own nursery. The lab's router
    process for A is stopped; probes to B only get through if the appliance's router forwards them."""
    a0, _ = pair
    lab = a0.lab
    info = lab.ases[A]
    os.kill(info["router_pid"], signal.SIGTERM)
    wait_until("the lab's router of A to stop", lambda: not lab.running()[A], timeout=5)
    node = Node(A, B, a0.dir.parent / "router", a0.private, a0.peer_public, lab, port=PORT + 2)
    node.dir.mkdir()
    keys.write_private_key(node.dir / "private.key", node.private)
    node.write_config(extra=f'[router]\ntopology = "{info["topology"]}"\nkeys_dir = "{info["keys"]}"\n')
    node.start()
    try:
        doc = wait_until(
            "every path to B answering through the embedded router",
            lambda: (
                (d := node.status())["paths"][B]["paths"]
                and all(p["state"] == "up" and p["rtt_s"] for p in d["paths"][B]["paths"])
                and d
            ),
            timeout=10,
        )
        router = doc["interfaces"]["router"]
        assert router["isd_as"] == A
        assert [(i["id"], i["state"]) for i in router["interfaces"]] == [(41, "up"), (42, "up"), (43, "up")]
        # The probe replies for the appliance's own gateway reach it in process (parsed once, by
        # the router's step), not through the internal socket. (Status shows the router's counters
        # as of the last housekeeping tick.)
        wait_until(
            "the router's deliveries to the gateway counted as in process",
            lambda: node.status()["interfaces"]["router"]["delivered_in_process"] > 0,
            timeout=3,
        )
        assert doc["peers"][0]["state"] != "up"  # B's appliance is stopped: only the routers answer
    finally:
        assert node.stop() == 0


def test_run_refuses_a_config_without_paths(tmp_path: Path) -> None:
    keys.write_private_key(tmp_path / "k", keys.generate_private_key())
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        f'[identity]\nprivate_key_file = "k"\nisd_as = "{A}"\n[state]\ndir = "s"\n'
        f'[control]\nsocket = "{tmp_path}/c.sock"\n'
        f'[[peers]]\nname = "b"\nisd_as = "{B}"\npublic_key = "{keys.encode_key(bytes(32))}"\n'
    )
    r = cli("run", "--config", str(cfg))
    assert r.returncode == 2
    assert f"{cfg}: paths.catalogue: expected a path catalogue" in r.stderr
