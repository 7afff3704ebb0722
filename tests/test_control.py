"""The control socket end to end: a real hypercorn server on a Unix socket, in trio, with a fake backend.

The server runs in its own thread (its own trio loop) so that the synchronous CLI and raw sockets can
talk to it from the test thread. A ticker task in the server's loop stands in for the data plane: bad
clients must never stall it.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from scion_appliance import cli
from scion_appliance.control import app as control_app
from scion_appliance.control import render, server
from scion_appliance.control.backend import Conflict, ControlBackend, NotFound, Unavailable
from scion_appliance.errors import OperatorError

HEALTHY: dict[str, Any] = {
    "schema": 1,
    "version": "0.1.0",
    "state": "healthy",
    "problems": [],
    "uptime_s": 7384.2,
    "identity": {"isd_as": "1-ff00:0:110", "public_key": "4TGM1B3erwcXCs68DRQy5lfbjCrt/kJ7FVFKRlF6Iws="},
    "interfaces": {
        "underlay": {"address": "0.0.0.0", "port": 30057, "sig_port": 30056},
        "tun": {"name": "scion0", "address": "10.1.0.1/24", "mtu": 1400, "up": True},
        "router": None,
    },
    "peers": [
        {
            "name": "branch-a",
            "isd_as": "1-ff00:0:111",
            "public_key": "BZBSQwYIs4LLjGLW0HBSW38Z2d6M00cxc9Ubx5AsEEY=",
            "endpoint": "10.0.0.2:30057",
            "remote_prefixes": ["10.2.0.0/16"],
            "state": "up",
            "latest_handshake_age_s": 12.4,
            "transfer": {
                "rx_bytes": round(1.2 * 1024 * 1024),
                "tx_bytes": round(3.4 * 1024 * 1024),
                "rx_packets": 1020,
                "tx_packets": 2710,
            },
            "session": {"age_s": 12.4, "rekey_in_s": 107.6},
        }
    ],
    "sessions": {"active": 1},
    "paths": {
        "1-ff00:0:111": {
            "active": "a1",
            "pinned": None,
            "reason": "lowest latency",
            "paths": [
                {
                    "id": "a1",
                    "sequence": "1-ff00:0:110#2 1-ff00:0:111#1",
                    "hop_count": 2,
                    "state": "up",
                    "active": True,
                    "rtt_s": 0.0041,
                    "rtt_p95_s": 0.005,
                    "jitter_s": 0.0002,
                    "loss": 0.0,
                },
                {
                    "id": "b7",
                    "sequence": "1-ff00:0:110#3 1-ff00:0:120#1,2 1-ff00:0:111#4",
                    "hop_count": 3,
                    "state": "up",
                    "active": False,
                    "rtt_s": 0.0098,
                    "rtt_p95_s": 0.012,
                    "jitter_s": 0.001,
                    "loss": 0.0,
                },
            ],
        }
    },
    "counters": {
        "packets": {"rx": 1020, "tx": 2710},
        "bytes": {"rx": 1258291, "tx": 3565158},
        "drops": {"bad_mac": 0, "replay": 3},
        "replay_rejects": 3,
        "handshakes": 4,
        "handshake_failures": 0,
        "failovers": 1,
    },
}


class FakeBackend:
    """A ControlBackend with a canned document and a log of the admin calls it received."""

    def __init__(self) -> None:
        self.doc = copy.deepcopy(HEALTHY)
        self.calls: list[tuple[Any, ...]] = []
        self.sent: list[tuple[str, bytes]] = []
        self.lab = True

    def status(self) -> dict[str, Any]:
        return self.doc

    def paths(self, dst: str) -> dict[str, Any]:
        if dst == "9-ff00:0:999":
            raise RuntimeError("backend bug")  # to see a 500
        pset = self.doc["paths"].get(dst)
        if pset is None:
            raise NotFound(f"no destination {dst}")
        return {"dst": dst, **pset}

    def peers(self) -> dict[str, Any]:
        return {"peers": self.doc["peers"]}

    def rekey(self, name: str) -> dict[str, Any] | None:
        if name not in [p["name"] for p in self.doc["peers"]]:
            raise NotFound(f"no peer named {name!r}")
        self.calls.append(("rekey", name))
        return None

    def pin(self, dst: str, path_id: str) -> dict[str, Any] | None:
        if path_id == "down-path":
            raise Conflict(f"path {path_id} to {dst} is down")
        self.calls.append(("pin", dst, path_id))
        return {"reason": "pinned"}

    def unpin(self, dst: str) -> dict[str, Any] | None:
        self.calls.append(("unpin", dst))
        return None

    def lab_link(self, name: str, action: str) -> dict[str, Any] | None:
        if not self.lab:
            raise Unavailable("no lab is running")
        self.calls.append(("lab", name, action))
        return None

    async def send(self, dst: str, payload: bytes) -> dict[str, Any]:
        await trio.sleep(0)
        self.sent.append((dst, payload))
        return {"packet_id": len(self.sent), "path": "a1", "elapsed_s": 0.0005}


class ServerThread:
    """serve_control in a trio loop on a thread, next to a ticker that records the longest stall."""

    def __init__(
        self, backend: ControlBackend, path: Path, mode: int = 0o660, group: int | None = None
    ) -> None:
        self.backend, self.path, self.mode, self.group = backend, path, mode, group
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.max_gap = 0.0
        self.ticks = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as e:  # surfaced by start()/stop()
            self.error = e
            self.ready.set()

    async def _ticker(self) -> None:
        last = time.monotonic()
        while True:
            await trio.sleep(0.005)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now

    async def _serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self._stop is not None
        await server.serve_control(
            self.backend, self.path, self.mode, self.group, shutdown=self._stop.wait, task_status=task_status
        )
        self._served.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self._served = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ticker)
            await nursery.start(self._serve)
            self.ready.set()
            await self._served.wait()  # serve_control returns by itself after the shutdown trigger
            nursery.cancel_scope.cancel()

    def start(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(10), "control server did not start"
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        if self._token is not None and self._stop is not None and self.thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self.thread.join(10)
        assert not self.thread.is_alive()


def short_dir() -> Path:
    # sun_path is 108 bytes; pytest's tmp_path can be long, so sockets live in a short /tmp dir.
    return Path(tempfile.mkdtemp(prefix="sa-ctl-", dir="/tmp"))


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    saved = (server.IDLE_TIMEOUT_S, control_app.BODY_TIMEOUT_S)
    server.IDLE_TIMEOUT_S, control_app.BODY_TIMEOUT_S = 1.0, 1.0  # keep the slow-client tests short
    s = ServerThread(FakeBackend(), short_dir() / "control.sock").start()
    try:
        yield s
    finally:
        s.stop()
        server.IDLE_TIMEOUT_S, control_app.BODY_TIMEOUT_S = saved


@pytest.fixture
def backend(srv: ServerThread) -> FakeBackend:
    b = srv.backend
    assert isinstance(b, FakeBackend) and isinstance(b, ControlBackend)  # the fake has the whole protocol
    b.doc = copy.deepcopy(HEALTHY)
    b.calls.clear()
    b.lab = True
    return b


@pytest.fixture
def http(srv: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(srv.path)), base_url="http://x", timeout=5) as c:
        yield c


def raw_exchange(path: Path, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or timeout)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


# -- routes ------------------------------------------------------------------------------------------


def test_health(http: httpx.Client) -> None:
    r = http.get("/v1/health")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ok" and doc["version"] == "0.1.0" and doc["uptime_s"] >= 0


def test_status_is_the_backend_document(http: httpx.Client, backend: FakeBackend) -> None:
    r = http.get("/v1/status")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == HEALTHY


def test_paths(http: httpx.Client, backend: FakeBackend) -> None:
    r = http.get("/v1/paths", params={"dst": "1-FF00:0:111"})  # canonicalised before the backend sees it
    assert r.status_code == 200 and r.json()["dst"] == "1-ff00:0:111" and r.json()["active"] == "a1"
    r = http.get("/v1/paths", params={"dst": "1-ff00:0:222"})
    assert r.status_code == 404 and r.json() == {"error": "no destination 1-ff00:0:222", "code": "not_found"}
    r = http.get("/v1/paths")
    assert r.status_code == 400 and "dst is required" in r.json()["error"]
    r = http.get("/v1/paths", params={"dst": "1-ff00:0:1:2"})
    assert r.status_code == 400 and r.json()["code"] == "bad_request" and "hex form" in r.json()["error"]


def test_peers(http: httpx.Client, backend: FakeBackend) -> None:
    r = http.get("/v1/peers")
    assert r.status_code == 200 and r.json() == {"peers": HEALTHY["peers"]}


def test_rekey(http: httpx.Client, backend: FakeBackend) -> None:
    r = http.post("/v1/peers/branch-a/rekey")
    assert r.status_code == 202 and r.json() == {"ok": True, "peer": "branch-a"}
    assert backend.calls == [("rekey", "branch-a")]
    r = http.post("/v1/peers/nobody/rekey")
    assert r.status_code == 404 and "nobody" in r.json()["error"]


def test_pin_and_unpin(http: httpx.Client, backend: FakeBackend) -> None:
    r = http.post("/v1/paths/pin", json={"dst": "1-ff00:0:111", "path": "b7"})
    assert r.status_code == 200
    assert r.json() == {"ok": True, "dst": "1-ff00:0:111", "pinned": "b7", "reason": "pinned"}
    r = http.post("/v1/paths/unpin", json={"dst": "1-ff00:0:111"})
    assert r.status_code == 200 and r.json()["pinned"] is None
    assert backend.calls == [("pin", "1-ff00:0:111", "b7"), ("unpin", "1-ff00:0:111")]
    r = http.post("/v1/paths/pin", json={"dst": "1-ff00:0:111", "path": "down-path"})
    assert r.status_code == 409 and r.json()["code"] == "conflict"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"dst": "1-ff00:0:111"}', "'path'"),
        (b'{"dst": "1-ff00:0:111", "path": 7}', "'path'"),
        (b'{"dst": 5, "path": "a"}', "field 'dst'"),
        (b'{"dst": "nope", "path": "a"}', "field 'dst'"),
        (b"", "not JSON"),
    ],
)
def test_pin_malformed_bodies(http: httpx.Client, backend: FakeBackend, body: bytes, needle: str) -> None:
    r = http.post("/v1/paths/pin", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and needle in r.json()["error"], r.text
    assert backend.calls == []


def test_lab_links(http: httpx.Client, backend: FakeBackend) -> None:
    assert http.post("/v1/lab/links/ab-1/cut").json() == {"ok": True, "link": "ab-1", "action": "cut"}
    assert http.post("/v1/lab/links/ab-1/restore").status_code == 200
    assert backend.calls == [("lab", "ab-1", "cut"), ("lab", "ab-1", "restore")]
    r = http.post("/v1/lab/links/ab-1/explode")
    assert r.status_code == 404 and "cut or restore" in r.json()["error"]
    backend.lab = False
    r = http.post("/v1/lab/links/ab-1/cut")
    assert r.status_code == 503 and r.json() == {"error": "no lab is running", "code": "unavailable"}


def test_send(http: httpx.Client, backend: FakeBackend) -> None:
    payload = bytes(range(256)) * 4
    r = http.post("/v1/send", params={"dst": "1-ff00:0:111"}, content=payload)
    assert r.status_code == 200
    doc = r.json()
    assert doc["path"] == "a1" and doc["elapsed_s"] == 0.0005 and doc["bytes"] == 1024
    assert doc["dst"] == "1-ff00:0:111" and isinstance(doc["packet_id"], int)
    assert backend.sent[-1] == ("1-ff00:0:111", payload)
    assert http.post("/v1/send", content=b"x").status_code == 400


def test_unknown_route_and_wrong_method(http: httpx.Client) -> None:
    r = http.get("/v2/status")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = http.get("/v1/send")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    r = http.delete("/v1/status")
    assert r.status_code == 405


def test_backend_failure_is_a_500_and_the_server_goes_on(http: httpx.Client, backend: FakeBackend) -> None:
    r = http.get("/v1/paths", params={"dst": "9-ff00:0:999"})
    assert r.status_code == 500 and r.json() == {
        "error": "the service failed to answer: RuntimeError",
        "code": "internal_error",
    }
    assert http.get("/v1/health").status_code == 200


# -- limits and bad clients --------------------------------------------------------------------------


def test_huge_body_by_content_length_is_413_and_closes(http: httpx.Client, backend: FakeBackend) -> None:
    n = len(backend.sent)
    r = http.post("/v1/send", params={"dst": "1-ff00:0:111"}, content=b"\0" * (control_app.MAX_BODY + 1))
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert r.headers["connection"] == "close"
    assert len(backend.sent) == n
    # exactly at the limit is fine
    r = http.post("/v1/send", params={"dst": "1-ff00:0:111"}, content=b"\0" * control_app.MAX_BODY)
    assert r.status_code == 200


def test_huge_chunked_body_is_413(http: httpx.Client, backend: FakeBackend) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"\0" * 4096

    n = len(backend.sent)
    r = http.post("/v1/send", params={"dst": "1-ff00:0:111"}, content=chunks())
    assert r.status_code == 413
    assert len(backend.sent) == n


def test_garbage_bytes_get_400_and_server_survives(srv: ServerThread, http: httpx.Client) -> None:
    for junk in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64) + b"\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ):
        out = raw_exchange(srv.path, junk)
        assert out.startswith(b"HTTP/1.1 400"), out[:80]
    assert http.get("/v1/health").status_code == 200


def test_huge_header_is_refused(srv: ServerThread, http: httpx.Client) -> None:
    r = http.get("/v1/status", headers={"x-big": "a" * 20000})
    assert r.status_code == 431 and r.json()["code"] == "headers_too_large"
    # a head that dribbles in past h11's 16 KiB incomplete limit is refused by hypercorn itself
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(srv.path))
    s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
    try:
        for _ in range(40):
            s.sendall(b"x-pad: " + b"a" * 1000 + b"\r\n")
            time.sleep(0.001)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        out = s.recv(65536)
    except (ConnectionResetError, TimeoutError):
        out = b""
    s.close()
    assert out.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), out[:80]
    assert http.get("/v1/health").status_code == 200


def test_slow_clients_time_out_without_stalling_the_loop(srv: ServerThread, http: httpx.Client) -> None:
    gap_before = srv.max_gap
    ticks_before = srv.ticks
    # 20 slowloris connections with half a request head, and 1 with a head but a stalled body
    stalled = []
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(srv.path))
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        stalled.append(s)
    body = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    body.connect(str(srv.path))
    body.sendall(
        b"POST /v1/send?dst=1-ff00:0:111 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    )
    # meanwhile, other clients are served at once
    t0 = time.monotonic()
    for _ in range(20):
        assert http.get("/v1/status").status_code == 200
    assert time.monotonic() - t0 < 2.0
    # the stalled body gets a 408 after BODY_TIMEOUT_S, and the connection closes
    body.settimeout(5)
    out = b""
    while chunk := body.recv(65536):
        out += chunk
    assert out.startswith(b"HTTP/1.1 408"), out[:80]
    assert b'"code":"request_timeout"' in out
    body.close()
    # the slowloris connections are closed by the server (idle timeout), not by us
    for s in stalled:
        s.settimeout(5)
        assert s.recv(65536) == b""
        s.close()
    assert srv.ticks > ticks_before
    assert max(srv.max_gap, gap_before) < 0.5, f"the event loop stalled for {srv.max_gap:.3f} s"


# -- the socket file ---------------------------------------------------------------------------------


def test_socket_mode_group_and_cleanup() -> None:
    d = short_dir()
    path = d / "c.sock"
    gid = os.getgid()
    s = ServerThread(FakeBackend(), path, mode=0o640, group=gid).start()
    try:
        st = path.lstat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == gid
        assert [p.name for p in d.iterdir()] == ["c.sock"]  # no temporary name left behind
        # a second server on the same path is refused while the first one answers
        with pytest.raises(OperatorError, match="another process already answers"):
            server.bind_control_socket(path)
    finally:
        s.stop()
    assert not path.exists()


def test_stale_socket_is_replaced() -> None:
    path = short_dir() / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a kill -9 leaves
    s = ServerThread(FakeBackend(), path).start()
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://x") as c:
            assert c.get("/v1/health").status_code == 200
    finally:
        s.stop()


def test_bind_refusals() -> None:
    d = short_dir()
    (d / "file").write_text("x")
    with pytest.raises(OperatorError, match="exists and is not a socket"):
        server.bind_control_socket(d / "file")
    with pytest.raises(OperatorError, match="over the 107-byte limit"):
        server.bind_control_socket(d / ("x" * 120))
    with pytest.raises(OperatorError, match=r"group 'no-such-group-xyz' does not exist.*control.group"):
        server.bind_control_socket(d / "c.sock", group="no-such-group-xyz")


# -- the CLI -----------------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_status_text_like_wg_show(
    srv: ServerThread, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["status", "--socket", str(srv.path)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "interface: scion-appliance 1-ff00:0:110"
    assert "  public key: 4TGM1B3erwcXCs68DRQy5lfbjCrt/kJ7FVFKRlF6Iws=" in lines
    assert "  private key: (hidden)" in lines
    assert "  listening port: 30057 (plain SIG 30056)" in lines
    assert "  state: healthy" in lines
    assert "  version: 0.1.0, up 2 hours, 3 minutes, 4 seconds" in lines
    assert "peer: branch-a" in lines
    assert "  endpoint: 1-ff00:0:111 10.0.0.2:30057" in lines
    assert "  allowed ips: 10.2.0.0/16" in lines
    assert "  latest handshake: 12 seconds ago" in lines
    assert "  transfer: 1.20 MiB received, 3.40 MiB sent" in lines
    active = next(line for line in lines if "a1" in line and "rtt" in line)
    other = next(line for line in lines if "b7" in line and "rtt" in line)
    assert active.lstrip().startswith("* a1") and "4.1 ms" in active and "0.0%" in active
    assert not other.lstrip().startswith("*") and "9.8 ms" in other
    assert "  drops: replay 3" in lines


def test_status_json_is_the_document_unchanged(
    srv: ServerThread, http: httpx.Client, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["status", "--json", "--socket", str(srv.path)], capsys)
    assert code == 0
    assert out == http.get("/v1/status").text + "\n"
    assert json.loads(out) == HEALTHY


def test_status_degraded_exit_1(
    srv: ServerThread, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.doc["paths"]["1-ff00:0:111"]["paths"][1]["state"] = "down"  # the daemon still says healthy
    code, out, _ = run_cli(["status", "--socket", str(srv.path)], capsys)
    assert code == 1
    assert "  state: degraded: path b7 to 1-ff00:0:111 is down" in out.splitlines()
    backend.doc = copy.deepcopy(HEALTHY)
    backend.doc["state"] = "degraded"
    backend.doc["problems"] = ["peer branch-a: handshake timed out"]
    backend.doc["peers"][0]["state"] = "down"
    code, out, _ = run_cli(["status", "--json", "--socket", str(srv.path)], capsys)
    assert code == 1 and json.loads(out)["state"] == "degraded"
    code, out, _ = run_cli(["peers", "--socket", str(srv.path)], capsys)
    assert code == 1 and "  state: down" in out


def test_status_unknown_state_exit_4(
    srv: ServerThread, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.doc = {"state": "confused"}
    code, out, err = run_cli(["status", "--socket", str(srv.path)], capsys)
    assert code == 4 and out == "" and "no known state" in err
    backend.doc = {"state": "healthy", "identity": "not an object"}
    code, _, err = run_cli(["status", "--socket", str(srv.path)], capsys)
    assert code == 4 and "malformed" in err


def test_status_protocol_garbage_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    path = short_dir() / "g.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        conn.close()

    t = threading.Thread(target=answer_garbage, daemon=True)
    t.start()
    try:
        code, _, err = run_cli(["status", "--socket", str(path)], capsys)
    finally:
        t.join(5)
        listener.close()
    assert code == 4 and str(path) in err


def test_status_not_json_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    path = short_dir() / "h.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def answer_html() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        body = b"<html>hello</html>"
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/html\r\n\r\n%s" % (len(body), body)
        )
        conn.close()

    t = threading.Thread(target=answer_html, daemon=True)
    t.start()
    try:
        code, _, err = run_cli(["status", "--socket", str(path)], capsys)
    finally:
        t.join(5)
        listener.close()
    assert code == 4 and "not JSON" in err


def test_status_daemon_not_running_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    missing = short_dir() / "control.sock"
    code, out, err = run_cli(["status", "--socket", str(missing)], capsys)
    assert code == 3 and out == ""
    assert err.count("\n") == 1
    assert str(missing) in err and "systemctl status scion-appliance" in err and "no control socket" in err


def test_status_daemon_stopped_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    path = short_dir() / "control.sock"
    s = ServerThread(FakeBackend(), path).start()
    assert run_cli(["status", "--socket", str(path)], capsys)[0] == 0
    s.stop()
    code, _, err = run_cli(["status", "--socket", str(path)], capsys)
    assert code == 3 and str(path) in err
    # a socket file left behind by a killed daemon: connection refused, still 3
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    code, _, err = run_cli(["status", "--json", "--socket", str(path)], capsys)
    assert code == 3 and "connection refused" in err and "systemctl status scion-appliance" in err


def test_socket_from_environment(
    srv: ServerThread,
    backend: FakeBackend,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SCION_APPLIANCE_SOCKET", str(srv.path))
    assert run_cli(["status"], capsys)[0] == 0


def test_paths_command(srv: ServerThread, backend: FakeBackend, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["paths", "1-ff00:0:111", "--socket", str(srv.path)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "paths to 1-ff00:0:111: active a1 (lowest latency)"
    assert (
        lines[1].startswith("* a1") and "2 hops" in lines[1] and "1-ff00:0:110#2 1-ff00:0:111#1" in lines[1]
    )
    assert lines[2].startswith("  b7")
    code, out, _ = run_cli(["paths", "1-ff00:0:111", "--json", "--socket", str(srv.path)], capsys)
    assert code == 0 and json.loads(out)["dst"] == "1-ff00:0:111"
    backend.doc["paths"]["1-ff00:0:111"]["paths"][1]["state"] = "down"
    assert run_cli(["paths", "1-ff00:0:111", "--socket", str(srv.path)], capsys)[0] == 1
    code, _, err = run_cli(["paths", "1-ff00:0:222", "--socket", str(srv.path)], capsys)
    assert code == 2 and "no destination 1-ff00:0:222" in err
    code, _, err = run_cli(["paths", "not-an-ia", "--socket", str(srv.path)], capsys)
    assert code == 2 and "not-an-ia" in err


def test_peers_command(srv: ServerThread, backend: FakeBackend, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["peers", "--socket", str(srv.path)], capsys)
    assert code == 0
    assert out.splitlines()[:3] == [
        "peer: branch-a",
        "  public key: BZBSQwYIs4LLjGLW0HBSW38Z2d6M00cxc9Ubx5AsEEY=",
        "  endpoint: 1-ff00:0:111 10.0.0.2:30057",
    ]
    assert "  latest handshake: 12 seconds ago" in out
    backend.doc["peers"] = []
    code, out, _ = run_cli(["peers", "--socket", str(srv.path)], capsys)
    assert code == 0 and out == "no peers configured\n"


# -- rendering details -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (1258291, "1.20 MiB"),
        (5 * 1024**3, "5.00 GiB"),
        (None, "-"),
    ],
)
def test_iec_bytes(n: Any, text: str) -> None:
    assert render.iec_bytes(n) == text


@pytest.mark.parametrize(
    ("s", "text"),
    [
        (0.3, "Now"),
        (1, "1 second ago"),
        (12.9, "12 seconds ago"),
        (61, "1 minute, 1 second ago"),
        (7384, "2 hours, 3 minutes, 4 seconds ago"),
        (86400 * 2 + 5, "2 days, 5 seconds ago"),
        (None, "never"),
    ],
)
def test_ago(s: Any, text: str) -> None:
    assert render.ago(s) == text


def test_assess() -> None:
    assert render.assess(HEALTHY) == (True, [])
    doc = copy.deepcopy(HEALTHY)
    doc["state"] = "starting"
    assert render.assess(doc) == (False, ["the daemon reports starting"])
    for bad in ([], {"state": None}, {"state": "healthy", "peers": {}}):
        with pytest.raises(render.ProtocolError):
            render.assess(bad)
