"""Crash safety of the tunnel: a gateway killed with SIGKILL mid-traffic and restarted, again and again.

Gateway B runs in its own process (``tests/gateway_proc.py``) with its rocksdict state store in a tmp
directory; gateway A runs in this test. Both send a steady stream of datagrams to each other through a
relay that records every packet (time, direction, bytes) before forwarding it: the relay is the wire.
B is killed with SIGKILL at random moments (some inside its first handshake after a start, most in steady
traffic, some while A forces a rekey so the kill can land inside B's synced write of a handshake mark),
and started again on the same state directory. After every restart:

(a) No (key, nonce) pair ever repeats on the wire. Every data envelope (types 4 and 5, keepalives
    included) is named by (key, counter): the nonce is the counter, and the key is named by a BLAKE2b
    fingerprint. Both gateways report each session's key fingerprints with its indexes (``on_session``)
    before the first packet is sealed with it (B through an atomic pipe write, which survives SIGKILL),
    so the sealer's fingerprint for the envelope's receiver index is known for every envelope. Why the
    check is complete: every envelope on the wire was sealed by A or by B (the relay sees all traffic and
    injected replays are sent beside it, not through it); each sealer's receiver-index -> key map is
    logged before use; the receiver's own log must name the same key (cross-check); so every
    (key, counter) actually used is in the record, and a repeat of any of them is found. Distinct sessions
    must also have distinct fingerprints, which rules out a key resumed across a restart.
(b) Packets captured before the crash and replayed after it are all refused: the wire packets from B's
    previous life (and A's packets to it), replayed straight at the restarted B and at A, are counted as
    drops and nothing is delivered twice or late: every datagram B delivers after a restart was sealed
    after that restart began, and no datagram is ever delivered twice on either side. Initiations B
    answered must be refused by the durable handshake mark; an initiation B never answered (it died
    before the mark was durable, or the initiation only reached a dead port) was never consumed, so
    accepting it is legitimate; it only creates an unconfirmed ``next`` session and delivers nothing.
(c) The store opens cleanly each time: B reaches ``ready`` (not ``store-error``) with schema 1, the
    handshake mark never moves backwards and the lifetime counters never decrease.
(d) Traffic flows again within 1 s of the restart: measured from B's ``ready`` line (store open, socket
    bound) to the first datagram delivered in each direction on the new session.

SCION/SCMP probes on the wire are not sealed and not replay-protected by design (an echo is answered
again); they are left out of (b).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import trio

from scion_appliance.gateway import Gateway, GatewayError, PeerSpec
from scion_appliance.gateway.service import SessionKeys
from scion_appliance.paths.quality import QualityConfig
from scion_appliance.paths.selection import SelectionPolicy
from scion_appliance.paths.source import PathInfo, StaticPathSource
from scion_appliance.scion import packet as scion_packet
from scion_appliance.scion.addr import IA
from scion_appliance.state import StateStore
from scion_appliance.tunnel import messages
from scion_appliance.tunnel.keys import generate_private_key, public_key

IA1 = IA.parse("1-ff00:0:111")
HOST_A, HOST_B, HOST_RELAY = "127.0.0.21", "127.0.0.22", "127.0.0.23"
RUNNER = Path(__file__).with_name("gateway_proc.py")
ROOT = RUNNER.parent.parent
SEND_INTERVAL = 0.01
INITIATION, RESPONSE = messages.MessageType.INITIATION, messages.MessageType.RESPONSE
DATA_TYPES = (messages.MessageType.DATA, 5, 6)  # IP frames, datagrams, acks (paths.acks): all sealed


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class WirePacket:
    t: float
    from_a: bool
    raw: bytes
    kind: int  # first payload byte of a SCION/UDP packet, or -1 for SCMP


class RecordingRelay:
    """The wire between A and B: forwards each datagram to the other side and records it first."""

    def __init__(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        self.a, self.b = a, b
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.packets: list[WirePacket] = []

    async def bind(self) -> tuple[str, int]:
        await self.sock.bind((HOST_RELAY, 0))
        addr: tuple[str, int] = self.sock.getsockname()
        return addr

    async def run(self) -> None:
        while True:
            data, src = await self.sock.recvfrom(65535)
            rec = scion_packet.record(data)
            kind = data[rec["l4_off"] + 8] if rec["l4_proto"] == 17 else -1
            self.packets.append(WirePacket(time.monotonic(), src == self.a, data, kind))
            try:
                await self.sock.sendto(data, self.b if src == self.a else self.a)
            except OSError:
                pass  # B's port is closed while B is dead: the packet is on the wire, then lost


def payload(raw: bytes) -> bytes:
    rec = scion_packet.record(raw)
    return raw[rec["l4_off"] + 8 : rec["l4_off"] + rec["l4_len"]]


@dataclass
class BProcess:
    """One life of gateway B: its process and everything it said on stdout, time-stamped on arrival."""

    gen: int
    proc: trio.Process
    t_spawn: float
    ready: dict[str, Any] | None = None
    t_ready: float = 0.0
    store_error: str | None = None
    sessions: list[SessionKeys] = field(default_factory=list)
    received: list[tuple[float, str]] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    t_counters: float = 0.0
    t_killed: float | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        while True:
            chunk = await self.proc.stdout.receive_some(65536)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            now = time.monotonic()
            for line in lines:
                kind, _, body = line.decode().partition(" ")
                if kind == "ready":
                    self.ready, self.t_ready = json.loads(body), now
                elif kind == "store-error":
                    self.store_error = body
                elif kind == "session":
                    d = json.loads(body)
                    d["send_fingerprint"] = bytes.fromhex(d["send_fingerprint"])
                    d["receive_fingerprint"] = bytes.fromhex(d["receive_fingerprint"])
                    self.sessions.append(SessionKeys(**d))
                elif kind == "recv":
                    self.received.append((now, body))
                elif kind == "counters":
                    self.counters, self.t_counters = Counter(json.loads(body)), now


async def until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``cond`` every 2 ms; the time it became true. Fails the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await trio.sleep(0.002)
    return time.monotonic()


def drops(c: Counter[str]) -> int:
    return sum(v for k, v in c.items() if k.startswith("drop_"))


class Harness:
    def __init__(self, tmp: Path, nursery: trio.Nursery) -> None:
        self.tmp = tmp
        self.nursery = nursery
        self.ka, self.kb = generate_private_key(), generate_private_key()
        self.pa, self.pb = free_port(HOST_A), free_port(HOST_B)
        self.relay = RecordingRelay((HOST_A, self.pa), (HOST_B, self.pb))
        self.lives: list[BProcess] = []
        self.a_sessions: list[SessionKeys] = []
        self.a_received: list[tuple[float, str]] = []
        self.a_seq = 0
        self.a_sent_at: dict[int, float] = {}
        self.replayer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def start_a(self, store: StateStore) -> Gateway:
        relay_addr = await self.relay.bind()
        await self.replayer.bind((HOST_RELAY, 0))
        self.relay_addr = relay_addr
        a = Gateway(
            ia=IA1, host=ip_address(HOST_A), port=self.pa, private_key=self.ka,
            peers=[PeerSpec("b", IA1, ip_address(HOST_B), self.pb, public_key(self.kb), ip_address(HOST_B))],
            path_source=StaticPathSource({str(IA1): [PathInfo("relay", 0, (), b"", relay_addr)]}),
            probe_interval=0.02,
            quality=QualityConfig(down_after_lost=2, probe_timeout_initial=0.1, probe_timeout_min=0.05),
            policy=SelectionPolicy(min_dwell=0.2), store=store,
        )  # fmt: skip
        a.on_session = self.a_sessions.append
        self.a = a
        return a

    async def a_sender(self) -> None:
        while True:
            seq = self.a_seq
            self.a_seq += 1
            self.a_sent_at[seq] = time.monotonic()
            try:
                await self.a.send(IA1, f"A:{seq}".encode())
            except GatewayError:
                pass
            await trio.sleep(SEND_INTERVAL)

    async def a_receiver(self) -> None:
        while True:
            _, data = await self.a.receive()
            self.a_received.append((time.monotonic(), data.decode()))

    async def spawn_b(self, send_interval: float = SEND_INTERVAL) -> BProcess:
        gen = len(self.lives)
        cfg = {
            "state_dir": str(self.tmp / "b-state"), "key": self.kb.hex(), "peer_key": public_key(self.ka).hex(),
            "ia": str(IA1), "host": HOST_B, "port": self.pb, "peer_host": HOST_A, "peer_port": self.pa,
            "next_hop": list(self.relay_addr), "gen": gen, "send_interval": send_interval,
        }  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.tmp / f"b-{gen}.stderr", "wb") as err:
            proc = await trio.lowlevel.open_process(
                [sys.executable, str(RUNNER), json.dumps(cfg)], stdout=subprocess.PIPE, stderr=err, env=env
            )
        life = BProcess(gen, proc, time.monotonic())
        self.lives.append(life)
        self.nursery.start_soon(life.read)
        await until(lambda: life.ready is not None or life.store_error is not None, 20, f"B{gen} ready")
        return life

    async def kill(self, life: BProcess) -> None:
        life.t_killed = time.monotonic()
        life.proc.send_signal(signal.SIGKILL)
        await life.proc.wait()
        assert life.proc.returncode == -signal.SIGKILL

    async def counters_after(self, life: BProcess, t: float) -> Counter[str]:
        """B's counters as reported after time ``t`` (its reporter writes every 50 ms)."""
        await until(lambda: life.t_counters > t, 2, f"B{life.gen} counters")
        return Counter(life.counters)

    def answered_initiations(self) -> set[int]:
        """Sender indexes of initiations that got a response on the wire (the response names them)."""
        out = set()
        for p in self.relay.packets:
            if p.kind == RESPONSE and not p.from_a:
                out.add(messages.parse_response(payload(p.raw)).receiver)
        return out


async def replay_at(h: Harness, packets: list[WirePacket], dst: tuple[str, int]) -> None:
    for p in packets:
        await h.replayer.sendto(p.raw, dst)
        await trio.sleep(0)  # let the receiver drain its socket between bursts


async def await_flow(h: Harness, life: BProcess) -> tuple[float, float]:
    """(d): seconds from B's ready line until B delivers one of A's datagrams and A one of B's."""
    tag = f"B{life.gen}:"
    await until(lambda: bool(life.received), 2.0, f"B{life.gen} receiving")
    await until(lambda: any(d.startswith(tag) for _, d in h.a_received), 2.0, f"A receiving from B{life.gen}")
    t_b = life.received[0][0]  # both stamped when the line / datagram arrived here
    t_a = next(t for t, d in h.a_received if d.startswith(tag))
    return t_b - life.t_ready, t_a - life.t_ready


async def replay_previous(h: Harness, life: BProcess, prev_start: float, rng: random.Random) -> Counter[str]:
    """(b): the wire's packets from before ``life`` began, replayed at both ends; all must be refused."""
    before = [p for p in h.relay.packets if p.t < life.t_spawn and p.kind != -1]
    recent = [p for p in before if p.t >= prev_start]  # the previous life and its downtime: all of it
    older = [p for p in before if p.t < prev_start]
    chosen = recent + rng.sample(older, min(200, len(older)))
    to_b = [p for p in chosen if p.from_a]
    to_a = [p for p in chosen if not p.from_a]
    answered = h.answered_initiations()
    inits = [p for p in to_b if p.kind == INITIATION]
    unanswered = [p for p in inits if messages.parse_initiation(payload(p.raw)).sender not in answered]
    b0 = await h.counters_after(life, time.monotonic())
    a0 = Counter(h.a.counters)
    await replay_at(h, to_b, (HOST_B, h.pb))
    await replay_at(h, to_a, (HOST_A, h.pa))
    # Every replay is a counted drop (an unanswered initiation may be taken: it was never consumed).
    refusable_b = len(to_b) - len(unanswered)
    await until(lambda: drops(life.counters) - drops(b0) >= refusable_b, 2.0, "B counting the replays")
    await until(lambda: drops(h.a.counters) - drops(a0) >= len(to_a), 2.0, "A counting the replays")
    b1 = await h.counters_after(life, time.monotonic())
    # Initiations B answered before it died are refused by the mark it made durable before answering.
    refused = b1["drop_handshake_replay"] - b0["drop_handshake_replay"]
    assert refused >= len(inits) - len(unanswered), (refused, len(inits), len(unanswered))
    return Counter(
        replayed_at_b=len(to_b),
        replayed_at_a=len(to_a),
        unanswered_initiations=len(unanswered),
        answered_initiations_refused=len(inits) - len(unanswered),
    )


async def rekey(a: Gateway) -> None:
    """A starts a new handshake now and it completes."""
    done = a.counters["handshakes_completed"] + 1
    assert a.ensure_session(IA1, rekey=True)
    await until(lambda: a.counters["handshakes_completed"] >= done, 2.0, "A's rekey")


async def crash_cycles(tmp_path: Path, kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    figures: dict[str, Any] = {"seed": seed, "flow_a_ms": [], "flow_b_ms": [], "spawn_ready_ms": []}
    totals: Counter[str] = Counter()
    marks: list[str | None] = []
    lifetime_prev: dict[str, int] = {}
    async with trio.open_nursery() as n:
        h = Harness(tmp_path, n)
        with StateStore.open(tmp_path / "a-state") as a_store:
            a = await h.start_a(a_store)
            n.start_soon(h.relay.run)
            async with a:
                n.start_soon(h.a_sender)
                n.start_soon(h.a_receiver)
                prev_start = 0.0
                for cycle in range(kills + 1):
                    a_seq_at_spawn = h.a_seq
                    life = await h.spawn_b()
                    # (c) the store opened cleanly; its mark and lifetime counters never went back.
                    assert life.store_error is None, life.store_error
                    assert life.ready is not None and life.ready["schema"] == 1
                    figures["spawn_ready_ms"].append((life.t_ready - life.t_spawn) * 1000)
                    mark = life.ready["mark"]
                    if marks and marks[-1] is not None:
                        assert mark is not None and bytes.fromhex(mark) >= bytes.fromhex(marks[-1])
                    marks.append(mark)
                    lifetime = life.ready["lifetime"]
                    assert all(lifetime.get(k, 0) >= v for k, v in lifetime_prev.items()), lifetime
                    lifetime_prev = lifetime
                    if cycle % 3 == 1 and cycle < kills:
                        # Kill inside B's first handshake after its start: 0-100 ms after ready.
                        await trio.sleep(rng.uniform(0.0, 0.1))
                        prev_start = life.t_spawn
                        await h.kill(life)
                        continue
                    flow_b, flow_a = await await_flow(h, life)
                    figures["flow_b_ms"].append(flow_b * 1000)
                    figures["flow_a_ms"].append(flow_a * 1000)
                    if cycle > 0:
                        totals += await replay_previous(h, life, prev_start, rng)
                    # B delivers only what A sealed after this life began (every replay is older).
                    stale = [d for _, d in life.received if int(d[2:]) < a_seq_at_spawn]
                    assert not stale, f"B{life.gen} delivered datagrams sealed before its start: {stale[:5]}"
                    if cycle == kills:
                        break
                    # Steady traffic; half the time A forces a rekey so the kill can hit B's mark write.
                    hold = rng.uniform(0.05, 0.6)
                    if cycle == 0:
                        # One rekey B surely answers, so the next life has an answered initiation to refuse.
                        await rekey(a)
                        await trio.sleep(hold)
                    elif rng.random() < 0.5:
                        await trio.sleep(rng.uniform(0.0, hold))
                        a.ensure_session(IA1, rekey=True)
                        await trio.sleep(rng.uniform(0.0, 0.02))
                    else:
                        await trio.sleep(hold)
                    prev_start = life.t_spawn
                    await h.kill(life)
                await trio.sleep(0.2)
                await h.kill(h.lives[-1])
                figures["a_counters"] = dict(a.counters)
            n.cancel_scope.cancel()
    check_nonces(h)
    check_deliveries(h)
    for k in ("replayed_at_b", "replayed_at_a", "unanswered_initiations", "answered_initiations_refused"):
        figures[k] = totals[k]
    figures["lives"] = len(h.lives)
    figures["wire_packets"] = len(h.relay.packets)
    figures["sessions"] = len(h.a_sessions)
    figures["data_envelopes"] = sum(1 for p in h.relay.packets if p.kind in DATA_TYPES)
    return figures


def check_nonces(h: Harness) -> None:
    """(a): every data envelope on the wire named by (sealing key fingerprint, counter); no repeats."""
    b_sessions = [s for life in h.lives for s in life.sessions]
    # The sealer's map: A seals to B's index (A's remote_index); B seals to A's index (B's remote_index).
    a_send = {s.remote_index: s.send_fingerprint for s in h.a_sessions}
    b_send = {s.remote_index: s.send_fingerprint for s in b_sessions}
    assert len(a_send) == len(h.a_sessions) and len(b_send) == len(b_sessions), "receiver index reused"
    # The receivers' view must agree where the receiver completed the session.
    b_recv = {s.local_index: s.receive_fingerprint for s in b_sessions}
    a_recv = {s.local_index: s.receive_fingerprint for s in h.a_sessions}
    for idx, fp in a_send.items():
        assert b_recv.get(idx, fp) == fp
    for idx, fp in b_send.items():
        assert a_recv.get(idx, fp) == fp
    # A key is never used by two sessions (nothing resumed across restarts).
    all_fps = [s.send_fingerprint for s in h.a_sessions + b_sessions]
    assert len(set(all_fps)) == len(all_fps), "a session key was used by two sessions"
    seen: dict[tuple[bytes, int], int] = {}
    envelopes = 0
    for i, p in enumerate(h.relay.packets):
        if p.kind not in DATA_TYPES:
            continue
        env = payload(p.raw)
        receiver = int.from_bytes(env[4:8], "little")
        counter = int.from_bytes(env[8:16], "little")
        key_fp = (a_send if p.from_a else b_send).get(receiver)
        assert key_fp is not None, f"wire packet {i}: no session of its sealer has receiver index {receiver}"
        prior = seen.setdefault((key_fp, counter), i)
        assert prior == i, f"(key, nonce) repeated on the wire: packets {prior} and {i}, counter {counter}"
        envelopes += 1
    assert envelopes > 0


def check_deliveries(h: Harness) -> None:
    """(b): nothing is delivered twice, on either side, across all of B's lives."""
    at_b = [d for life in h.lives for _, d in life.received]
    assert len(at_b) == len(set(at_b)), "B delivered a datagram twice"
    at_a = [d for _, d in h.a_received]
    assert len(at_a) == len(set(at_a)), "A delivered a datagram twice"


def report(figures: dict[str, Any]) -> None:
    for k in ("flow_a_ms", "flow_b_ms", "spawn_ready_ms"):
        v = figures[k]
        print(f"{k}: n={len(v)} median={statistics.median(v):.1f} max={max(v):.1f}")
    print({k: v for k, v in figures.items() if not isinstance(v, list)})


async def run_and_check(tmp_path: Path, kills: int) -> None:
    seed = int(os.environ.get("SCION_CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash test seed {seed} (set SCION_CRASH_SEED to repeat)")
    figures = await crash_cycles(tmp_path, kills, seed)
    report(figures)
    # (d) traffic within 1 s of every restart, both ways.
    assert max(figures["flow_a_ms"]) < 1000 and max(figures["flow_b_ms"]) < 1000, figures
    assert figures["replayed_at_b"] > 0 and figures["replayed_at_a"] > 0
    assert figures["answered_initiations_refused"] >= 1


async def test_kill_9_mid_traffic_three_times(tmp_path: Path) -> None:
    await run_and_check(tmp_path, 3)


@pytest.mark.slow
async def test_kill_9_mid_traffic_twenty_times(tmp_path: Path) -> None:
    await run_and_check(tmp_path, 20)


async def test_replayed_initiation_refused_after_kill_9(tmp_path: Path) -> None:
    """B answers A's initiation, is killed with SIGKILL, starts again: the captured initiation is refused
    by the durable mark alone (B sends nothing, so no newer handshake raises the mark meanwhile)."""
    async with trio.open_nursery() as n:
        h = Harness(tmp_path, n)
        with StateStore.open(tmp_path / "a-state") as a_store:
            a = await h.start_a(a_store)
            n.start_soon(h.relay.run)
            async with a:
                b = await h.spawn_b(send_interval=0)
                await a.send(IA1, b"hello")
                await until(lambda: bool(b.received), 5, "B receiving")
                (init,) = [p for p in h.relay.packets if p.kind == INITIATION]
                await h.kill(b)
                b2 = await h.spawn_b(send_interval=0)
                assert b2.ready is not None and b2.ready["mark"] is not None
                await h.replayer.sendto(init.raw, (HOST_B, h.pb))
                await until(lambda: b2.counters["drop_handshake_replay"] >= 1, 2, "B2 refusing the replay")
                assert b2.counters["handshakes_completed"] == 0 and not b2.sessions
                await h.kill(b2)
            n.cancel_scope.cancel()
