"""End to end on the lab: six real router processes on loopback, SCMP echo from leaf to leaf.

The lab runs on a random 127.NET network so that it does not collide with a lab someone else runs.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scion_appliance.cli import main
from scion_appliance.lab import Lab, running_lab
from scion_appliance.paths.source import PathInfo
from scion_appliance.scion import scmp
from scion_appliance.scion.addr import IA
from scion_appliance.scion.errors import ScionParseError
from scion_appliance.scion.packet import ScionPacket, parse
from scion_appliance.scion.path import ScionPath

SRC, DST = "1-ff00:0:111", "2-ff00:0:211"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp("lab")) as lab:
        yield lab


class Pinger:
    """An end host of ``src`` sending SCMP echo requests to the router of ``dst``."""

    def __init__(self, lab: Lab, src: str, dst: str) -> None:
        self.lab, self.src, self.dst = lab, src, dst
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((lab.host_address(src), 0))
        self.port = self.sock.getsockname()[1]

    def send(self, path: PathInfo, seq: int) -> ScionPacket:
        pkt = ScionPacket(
            dst_ia=IA.parse(self.dst),
            src_ia=IA.parse(self.src),
            dst_host=ipaddress.ip_address(self.lab.router_address(self.dst)[0]),
            src_host=ipaddress.ip_address(self.lab.host_address(self.src)),
            l4=scmp.Echo.new(self.port, seq, b"lab-echo"),
            path=ScionPath.from_bytes(path.raw),
        ).with_checksum()
        self.sock.sendto(pkt.serialize(), path.next_hop)
        return pkt

    def receive(self, timeout: float) -> list[ScionPacket]:
        got = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(9000)
            except TimeoutError:
                break
            try:
                got.append(parse(data))
            except ScionParseError:
                continue
        return got

    def echo(self, path: PathInfo, seq: int, timeout: float = 1.0) -> ScionPacket | None:
        """The echo reply (or SCMP error) for ``seq``, as soon as it arrives; None after ``timeout``."""
        self.send(path, seq)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                reply = parse(self.sock.recv(9000))
            except TimeoutError:
                return None
            except ScionParseError:
                continue
            l4 = reply.l4
            if isinstance(l4, scmp.Echo) and l4.type == scmp.ECHO_REPLY and l4.sequence == seq:
                return reply
            if isinstance(l4, scmp.ScmpMessage) and scmp.is_error(l4):
                return reply
        return None

    def close(self) -> None:
        self.sock.close()


def _rx(lab: Lab) -> dict[str, int]:
    return {ia: lab.counters(ia).get("rx", 0) for ia in lab.ases}


def _hops(path: ScionPath) -> list[tuple[int, int]]:
    return [(h.cons_ingress, h.cons_egress) for h in path.hop_fields]


@pytest.mark.parametrize(("src", "dst"), [(SRC, DST), (DST, SRC)])
def test_echo_on_every_minted_path(lab: Lab, src: str, dst: str) -> None:
    paths = lab.paths(src, dst)
    assert len(paths) >= 3 and paths == sorted(paths, key=lambda p: p.hop_count)
    pinger = Pinger(lab, src, dst)
    try:
        for seq, path in enumerate(paths):
            before = _rx(lab)
            reply = pinger.echo(path, seq)
            assert reply is not None, f"no reply on path {seq}: {lab.links_of(path)}"
            assert isinstance(reply.l4, scmp.Echo) and reply.l4.type == scmp.ECHO_REPLY, reply.l4
            assert (reply.src_ia, str(reply.src_host)) == (IA.parse(dst), lab.router_address(dst)[0])
            assert reply.l4.data == b"lab-echo"
            # the reply came back on the reversed path: same hop fields, in reverse order
            assert isinstance(reply.path, ScionPath)
            assert _hops(reply.path) == _hops(ScionPath.from_bytes(path.raw))[::-1]
            # every router on the path, and only those, saw the packets
            after = _rx(lab)
            crossed = {ia for ia in lab.ases if after[ia] > before[ia]}
            assert crossed == set(path.ases), (crossed, path.ases)
            assert len(crossed) >= 4
    finally:
        pinger.close()


def test_path_catalogue_and_api(lab: Lab) -> None:
    assert lab.leaves == [SRC, DST]
    source = lab.path_source(SRC)
    paths = source.paths(DST)
    assert paths == lab.paths(SRC, DST)
    p0 = paths[0]
    assert p0.next_hop == lab.router_address(SRC) and p0.mtu == 1472 and p0.hop_count == 3
    assert len(p0.interfaces) == 2 * p0.hop_count and len(p0.id) == 64
    assert len({p.id for p in paths}) == len(paths)
    # at least three link-disjoint paths
    disjoint: list[set[str]] = []
    for p in paths:
        links = set(lab.links_of(p))
        if all(links.isdisjoint(d) for d in disjoint):
            disjoint.append(links)
    assert len(disjoint) >= 3, disjoint
    assert lab.link_of(p0, 0).startswith("111-") and lab.link_of(p0, -1).startswith("211-")
    again = Lab.load(lab.directory)
    assert again.paths(SRC, DST) == paths and again.is_up()
    doc = json.loads((lab.directory / "paths.json").read_text())
    entry = doc[SRC][DST][0]
    assert set(entry) >= {"id", "hop_count", "interfaces", "raw", "next_hop", "mtu"}
    raw = ScionPath.from_bytes(bytes.fromhex(entry["raw"]))
    assert (raw.meta.curr_inf, raw.meta.curr_hf) == (0, 0)


def test_cut_link_and_restore(lab: Lab) -> None:
    pinger = Pinger(lab, SRC, DST)
    try:
        path = lab.paths(SRC, DST)[0]
        core_link = lab.link_of(path, 1)  # e.g. 110-210#1
        lab.cut(core_link)
        reply = pinger.echo(path, 1000)
        assert reply is not None and isinstance(reply.l4, scmp.ExternalInterfaceDown)
        a, b = lab.links[core_link]["a"], lab.links[core_link]["b"]
        assert (str(reply.l4.ia), reply.l4.interface) in ((a[0], a[1]), (b[0], b[1]))
        assert str(reply.src_ia) == path.ases[1]  # the core AS before the cut link answered
        other = next(p for p in lab.paths(SRC, DST) if core_link not in lab.links_of(p))
        ok = pinger.echo(other, 1001)
        assert ok is not None and isinstance(ok.l4, scmp.Echo)
        lab.restore(core_link)
        back = pinger.echo(path, 1002)
        assert back is not None and isinstance(back.l4, scmp.Echo) and back.l4.type == scmp.ECHO_REPLY
        # a cut first link: the leaf's own router answers
        first = lab.link_of(path, 0)
        lab.cut(first)
        reply = pinger.echo(path, 1003)
        assert reply is not None and isinstance(reply.l4, scmp.ExternalInterfaceDown)
        assert str(reply.src_ia) == SRC
        lab.restore(first)
        assert lab.links[first]["up"] is True
    finally:
        pinger.close()


def test_loss_impairment_drops_about_the_configured_share(lab: Lab) -> None:
    path = lab.paths(SRC, DST)[0]
    link = lab.link_of(path, 1)
    loss, n = 0.3, 400
    pinger = Pinger(lab, SRC, DST)
    try:
        lab.impair(link, loss=loss)
        for seq in range(n):
            pinger.send(path, seq)
            if seq % 50 == 49:
                time.sleep(0.005)  # keep within the sockets' buffers
        replies = pinger.receive(1.0)
    finally:
        lab.impair(link)
        pinger.close()
    got = {r.l4.sequence for r in replies if isinstance(r.l4, scmp.Echo)}
    # each echo crosses the link twice (request and reply), each time lost with p = 0.3
    expected = (1 - loss) ** 2
    assert abs(len(got) / n - expected) < 0.1, (len(got), n)
    a_ia = lab.links[link]["a"][0]
    c = lab.counters(a_ia)
    assert c.get("impair.loss", 0) > 0
    assert lab.links[link]["impairment"]["loss"] == 0.0


def test_delay_impairment_adds_latency(lab: Lab) -> None:
    path = lab.paths(SRC, DST)[0]
    link = lab.link_of(path, 1)
    pinger = Pinger(lab, SRC, DST)
    try:
        t0 = time.monotonic()
        assert pinger.echo(path, 2000) is not None
        base = time.monotonic() - t0
        lab.impair(link, delay_ms=40.0)
        t0 = time.monotonic()
        assert pinger.echo(path, 2001) is not None
        delayed = time.monotonic() - t0
    finally:
        lab.impair(link)
        pinger.close()
    assert delayed >= 0.08 and delayed > base + 0.07, (base, delayed)  # 40 ms each way


def test_status_command(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "status", "--dir", str(lab.directory)]) == 0
    out = capsys.readouterr().out
    assert "1-ff00:0:111" in out and "111-110#1" in out and "-> 2-ff00:0:211: 28" in out
    assert out.count("up (pid") == 6
    assert main(["lab", "status", "--dir", str(lab.directory), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert all(a["alive"] for a in doc["ases"].values())


def test_lab_down_stops_every_router(tmp_path: Path) -> None:
    lab = Lab.create("default", tmp_path / "lab2", net=251)
    lab.up()
    pids = [a["router_pid"] for a in lab.ases.values()]
    assert all(lab.running().values())
    lab.down()
    assert not any(lab.running().values())
    for a in lab.ases.values():  # SIGTERM stopped each router cleanly (it logged its counters)
        assert '"event":"router.stopped"' in Path(a["log"]).read_text()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert main(["lab", "status", "--dir", str(tmp_path / "lab2")]) == 3
