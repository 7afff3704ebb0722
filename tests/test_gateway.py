"""The gateway service end to end on loopback: handshake, sealed datagrams, replay refusal, failover.

Two gateways in one AS talk over direct paths; each "path" goes through a small UDP relay of the test's
own, so a path can be cut (the relay stops forwarding) without a lab.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import time
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from scion_appliance.gateway import Gateway, GatewayError, PeerSpec
from scion_appliance.lab import running_lab
from scion_appliance.paths.quality import QualityConfig
from scion_appliance.paths.selection import SelectionPolicy
from scion_appliance.paths.source import PathInfo, StaticPathSource
from scion_appliance.scion import packet as scion_packet
from scion_appliance.scion.addr import IA
from scion_appliance.state import StateStore
from scion_appliance.tunnel import messages
from scion_appliance.tunnel.handshake import MemoryTimestampStore
from scion_appliance.tunnel.keys import generate_private_key, public_key

IA1 = IA.parse("1-ff00:0:111")
HA, HB = ipaddress.ip_address("127.0.0.11"), ipaddress.ip_address("127.0.0.12")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Relay:
    """Forwards datagrams between one gateway and the other; ``cut`` makes it drop everything."""

    def __init__(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.a, self.b = a, b
        self.cut = False
        self.captured: list[bytes] = []

    async def bind(self) -> tuple[str, int]:
        await self.sock.bind(("127.0.0.13", 0))
        return self.sock.getsockname()

    def drops(self, data: bytes) -> bool:
        """Whether this relay drops ``data``; subclasses narrow what a broken path loses."""
        return self.cut

    async def run(self) -> None:
        while True:
            data, src = await self.sock.recvfrom(65535)
            if self.drops(data):
                continue
            self.captured.append(data)
            await self.sock.sendto(data, self.b if src == self.a else self.a)


def pair(
    pa: list[PathInfo], pb: list[PathInfo], ports: tuple[int, int], kb_peer: bytes | None = None
) -> tuple[Gateway, Gateway]:
    ka, kb = generate_private_key(), generate_private_key()
    quality = QualityConfig(down_after_lost=2, probe_timeout_initial=0.1, probe_timeout_min=0.05)
    policy = SelectionPolicy(min_dwell=0.2)
    a = Gateway(
        ia=IA1, host=HA, port=ports[0], private_key=ka, path_source=StaticPathSource({str(IA1): pa}),
        peers=[PeerSpec("b", IA1, HB, ports[1], kb_peer or public_key(kb), HB)],
        probe_interval=0.02, quality=quality, policy=policy,
    )  # fmt: skip
    b = Gateway(
        ia=IA1, host=HB, port=ports[1], private_key=kb, path_source=StaticPathSource({str(IA1): pb}),
        peers=[PeerSpec("a", IA1, HA, ports[0], public_key(ka), HA)],
        probe_interval=0.02, quality=quality, policy=policy,
    )  # fmt: skip
    return a, b


R = TypeVar("R", bound=Relay)


def direct_pair(kb_peer: bytes | None = None) -> tuple[Gateway, Gateway]:
    """``pair`` on loopback whose one path to each other is the direct one (no router, no relay)."""
    pa_, pb_ = free_port(str(HA)), free_port(str(HB))
    return pair([PathInfo("direct", 0, (), b"", (str(HB), pb_))],
                [PathInfo("direct", 0, (), b"", (str(HA), pa_))], (pa_, pb_), kb_peer)


async def relayed_pair(relay: type[R]) -> tuple[Gateway, Gateway, list[R]]:
    """``pair`` with two paths, ``path0`` and ``path1``, each through its own relay (bound here; start
    each one's ``run`` in a nursery)."""
    pa_, pb_ = free_port(str(HA)), free_port(str(HB))
    relays = [relay((str(HA), pa_), (str(HB), pb_)) for _ in range(2)]
    addrs = [await r.bind() for r in relays]
    paths = [PathInfo(f"path{i}", i + 1, (), b"", addrs[i]) for i in range(2)]
    a, b = pair(paths, paths, (pa_, pb_))
    return a, b, relays


async def test_handshake_and_datagrams_in_order() -> None:
    a, b = direct_pair()
    async with a, b:
        sent = [f"datagram {i}".encode() for i in range(200)]
        for d in sent:
            info = await a.send(IA1, d)
        assert info["path"] == "direct"
        got: list[bytes] = []
        with trio.fail_after(5):
            while len(got) < len(sent):
                got.append((await b.receive())[1])
        assert got == sent
        assert a.counters["handshakes_completed"] == b.counters["handshakes_completed"] == 1
        # And back: the responder can send on the session it accepted.
        await b.send(IA1, b"reply")
        with trio.fail_after(2):
            assert await a.receive() == (IA1, b"reply")


async def test_sessions_idle_for_540_s_are_wiped_and_the_next_send_handshakes_again() -> None:
    """WireGuard's zero-keys rule (3 x REJECT_AFTER_TIME without a new session): every session of the peer
    goes, its AEAD keys are zeroed, and traffic afterwards brings up a fresh session."""
    a, b = direct_pair()
    async with a, b:
        await a.send(IA1, b"before")
        with trio.fail_after(5):
            assert await b.receive() == (IA1, b"before")
        tun = a._tunnel_now(str(IA1))
        assert tun is not None
        now = time.monotonic()
        assert a.expire_idle(now + 539) == []  # not yet
        assert a.expire_idle(now + 541) == [str(IA1)]
        assert tun.send.closed and tun.recv.closed  # the keys are wiped, not just forgotten
        assert a.session(IA1) is None and a.counters["sessions_expired"] == 1
        await a.send(IA1, b"after")
        with trio.fail_after(5):
            assert await b.receive() == (IA1, b"after")
        assert a.counters["handshakes_completed"] == 2


async def test_replayed_packets_are_refused_and_counted() -> None:
    pa_, pb_ = free_port(str(HA)), free_port(str(HB))
    relay = Relay((str(HA), pa_), (str(HB), pb_))
    r = await relay.bind()
    a, b = pair([PathInfo("relay", 0, (), b"", r)], [PathInfo("relay", 0, (), b"", r)], (pa_, pb_))
    async with trio.open_nursery() as n, a, b:
        n.start_soon(relay.run)
        for i in range(20):
            await a.send(IA1, b"x%d" % i)
        with trio.fail_after(5):
            for _ in range(20):
                await b.receive()
        assert len(relay.captured) >= 20
        # Replay every captured packet straight at B: not one datagram may come out again.
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.13", 0))
        for p in list(relay.captured):
            await sock.sendto(p, (str(HB), pb_))
        with trio.move_on_after(0.5):
            extra = await b.receive()
            pytest.fail(f"a replayed packet was delivered: {extra!r}")
        assert b.counters["drop_replayed"] >= 20
        n.cancel_scope.cancel()


async def test_unknown_static_key_gets_no_session() -> None:
    wrong = public_key(generate_private_key())
    a, b = direct_pair(kb_peer=wrong)  # A expects another key than B's: B's answers cannot authenticate
    async with a, b:
        with pytest.raises(GatewayError, match="no session"), trio.fail_after(10):
            await a.send(IA1, b"hello")
        assert a.counters["handshakes_completed"] == 0


async def test_failover_when_the_active_path_is_cut() -> None:
    a, b, relays = await relayed_pair(Relay)
    async with trio.open_nursery() as n, a, b:
        for r in relays:
            n.start_soon(r.run)
        await trio.sleep(0.5)
        first = (await a.send(IA1, b"start"))["path"]
        relays[int(first[-1])].cut = True
        t_cut = time.monotonic()
        received: list[int] = []

        async def reader() -> None:
            while True:
                _, d = await b.receive()
                received.append(int(d))

        n.start_soon(reader)
        seq = 0
        while time.monotonic() - t_cut < 1.5:
            try:
                info = await a.send(IA1, b"%d" % seq)
            except GatewayError:
                info = {}
            seq += 1
            await trio.sleep(0.005)
        assert info.get("path") not in (None, first)
        assert a.counters["failovers"] >= 1
        # The outage is the gap in received sequence numbers, in send intervals (~5 ms each).
        gaps = [y - x for x, y in itertools.pairwise(received)]
        outage_s = (max(gaps, default=seq) - 1) * 0.005 + (received[0] * 0.005 if received else 1.5)
        assert received and outage_s < 1.0
        n.cancel_scope.cancel()


def _initiations(captured: list[bytes]) -> list[bytes]:
    """The SCION packets among ``captured`` that carry a handshake initiation."""
    out = []
    for raw in captured:
        rec = scion_packet.record(raw)
        if rec["l4_proto"] == 17 and raw[rec["l4_off"] + 8] == messages.MessageType.INITIATION:
            out.append(raw)
    return out


async def test_replayed_initiation_is_refused_also_after_a_restart(tmp_path: Path) -> None:
    """B keeps its handshake marks in the rocksdict store: a captured initiation replayed at B is refused
    while B runs, and again by a new gateway opened on the same state directory after B stopped."""
    pa_, pb_ = free_port(str(HA)), free_port(str(HB))
    relay = Relay((str(HA), pa_), (str(HB), pb_))
    r = await relay.bind()
    ka, kb = generate_private_key(), generate_private_key()

    def gateway_b(store: StateStore) -> Gateway:
        return Gateway(
            ia=IA1, host=HB, port=pb_, private_key=kb,
            path_source=StaticPathSource({str(IA1): [PathInfo("relay", 0, (), b"", r)]}),
            peers=[PeerSpec("a", IA1, HA, pa_, public_key(ka), HA)], probe_interval=0.02, store=store,
        )  # fmt: skip

    a = Gateway(
        ia=IA1, host=HA, port=pa_, private_key=ka,
        path_source=StaticPathSource({str(IA1): [PathInfo("relay", 0, (), b"", r)]}),
        peers=[PeerSpec("b", IA1, HB, pb_, public_key(kb), HB)], probe_interval=0.02,
    )  # fmt: skip
    replayer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await replayer.bind(("127.0.0.13", 0))
    async with trio.open_nursery() as n:
        n.start_soon(relay.run)
        async with a:
            with StateStore.open(tmp_path) as store:
                async with gateway_b(store) as b:
                    await a.send(IA1, b"hello")
                    with trio.fail_after(5):
                        assert await b.receive() == (IA1, b"hello")
                    (initiation,) = _initiations(relay.captured)
                    await replayer.sendto(initiation, (str(HB), pb_))
                    with trio.fail_after(2):
                        while b.counters["drop_handshake_replay"] < 1:
                            await trio.sleep(0.01)
                    assert b.counters["handshakes_completed"] == 1
            # B is gone; a new B on the same state directory must know the initiation was consumed.
            with StateStore.open(tmp_path) as store:
                assert store.get_handshake_timestamp(public_key(ka)) is not None
                async with gateway_b(store) as b2:
                    await replayer.sendto(initiation, (str(HB), pb_))
                    with trio.fail_after(2):
                        while b2.counters["drop_handshake_replay"] < 1:
                            await trio.sleep(0.01)
                    assert b2.counters["handshakes_completed"] == 0
                    assert b2.session(IA1) is None
                    # A fresh initiation (newer timestamp) from the real A is still accepted.
                    assert a.ensure_session(IA1, rekey=True)
                    await trio.sleep(0.3)
                    await a.send(IA1, b"again")
                    with trio.fail_after(5):
                        assert await b2.receive() == (IA1, b"again")
                    assert b2.counters["handshakes_completed"] == 1
        n.cancel_scope.cancel()


class SlowStore(MemoryTimestampStore):
    """A store whose durable write takes 300 ms (a slow disk); it records when each write finished."""

    def __init__(self) -> None:
        super().__init__()
        self.written_at: list[float] = []

    def set_handshake_timestamp(self, peer_public: bytes, ts: bytes) -> None:
        time.sleep(0.3)
        super().set_handshake_timestamp(peer_public, ts)
        self.written_at.append(time.monotonic())


async def test_durable_mark_is_written_off_the_loop_and_before_the_response() -> None:
    pa_, pb_ = free_port(str(HA)), free_port(str(HB))
    relay = Relay((str(HA), pa_), (str(HB), pb_))
    r = await relay.bind()
    a, b = pair([PathInfo("relay", 0, (), b"", r)], [PathInfo("relay", 0, (), b"", r)], (pa_, pb_))
    slow = SlowStore()
    b._marks.durable = slow  # the responder's durable store
    responses: list[float] = []

    async def run_and_time() -> None:
        # Wrap the relay's forwarding to note when B's response passes.
        while True:
            data, src = await relay.sock.recvfrom(65535)
            rec = scion_packet.record(data)
            if rec["l4_proto"] == 17 and data[rec["l4_off"] + 8] == messages.MessageType.RESPONSE:
                responses.append(time.monotonic())
            await relay.sock.sendto(data, relay.b if src == relay.a else relay.a)

    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await trio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with trio.open_nursery() as n, a, b:
        n.start_soon(run_and_time)
        n.start_soon(ticker)
        await a.send(IA1, b"x")
        with trio.fail_after(5):
            assert await b.receive() == (IA1, b"x")
        # A retries after 200 ms, so the slow disk sees more than one initiation; each response left
        # only after its mark was durable ...
        assert responses and len(responses) <= len(slow.written_at)
        assert all(r >= w for r, w in zip(responses, slow.written_at, strict=False))
        # ... and the 300 ms write never stalled the loop B (and this test) run on.
        assert max(gaps) < 0.1, max(gaps)
        n.cancel_scope.cancel()


async def test_full_handshake_across_the_lab(tmp_path: Path) -> None:
    """Two appliances in different ISDs handshake over multi-hop SCION paths through the lab's router
    processes (every hop field verified), then carry datagrams both ways on the new session."""
    with running_lab(tmp_path / "lab") as lab:
        a_ia, b_ia = lab.leaves[0], lab.leaves[1]
        ka, kb = generate_private_key(), generate_private_key()

        def make(me: str, peer: str, key: bytes, peer_key: bytes) -> Gateway:
            return Gateway(
                ia=IA.parse(me), host=ipaddress.ip_address(lab.host_address(me)), port=30056, private_key=key,
                peers=[PeerSpec(peer, IA.parse(peer), ipaddress.ip_address(lab.host_address(peer)), 30056,
                                public_key(peer_key), ipaddress.ip_address(lab.router_address(peer)[0]))],
                path_source=lab.path_source(me), probe_interval=0.05,
            )  # fmt: skip

        a, b = make(a_ia, b_ia, ka, kb), make(b_ia, a_ia, kb, ka)
        async with a, b:
            with trio.fail_after(10):
                info = await a.send(b_ia, b"over the lab")
                assert await b.receive() == (IA.parse(a_ia), b"over the lab")
                await b.send(a_ia, b"and back")
                assert await a.receive() == (IA.parse(b_ia), b"and back")
            sa, sb = a.session(b_ia), b.session(a_ia)
            assert sa is not None and sb is not None
            assert sa.initiator and not sb.initiator  # B promoted A's session once A's data arrived
            assert sa.remote_index == sb.local_index and sb.remote_index == sa.local_index
            used = next(p for p in a.paths(b_ia) if p["id"] == info["path"])
            assert used["hops"] >= 2 and len(used["ases"]) >= 3  # a real inter-ISD path, not a direct one


async def test_a_handshake_flood_is_answered_with_cookies_and_a_real_peer_still_gets_in() -> None:
    from scion_appliance.scion.builder import UdpPacketBuilder
    from scion_appliance.tunnel.handshake import Handshaker, PeerConfig

    pa_, pb_ = free_port(str(HA)), free_port(str(HB))
    a, b = pair(
        [PathInfo("direct", 0, (), b"", (str(HB), pb_))],
        [PathInfo("direct", 0, (), b"", (str(HA), pa_))],
        (pa_, pb_),
    )
    b._load.threshold = 5  # a flood is 5 handshake messages within a second here
    async with a, b:
        b_pub = b.handshaker.public_key
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.13", 0))
        builder = UdpPacketBuilder(
            IA1, ipaddress.ip_address("127.0.0.13"), sock.getsockname()[1], IA1, HB, pb_
        )
        for _ in range(40):  # initiations from keys B does not know, with a valid mac1
            attacker = Handshaker(generate_private_key(), [PeerConfig(b_pub)], MemoryTimestampStore())
            msg = attacker.create_initiation(b_pub, now=time.monotonic(), wall_time=time.time())
            await sock.sendto(builder.build(msg), (str(HB), pb_))
        await trio.sleep(0.3)
        # Past the threshold B stops doing the DH work and answers with cookie replies instead.
        assert b.counters["handshake_cookie_replies_sent"] >= 30
        assert 1 <= b.counters["drop_handshake_unknown_peer"] <= 6  # the ones before the flood was seen
        # The real peer, while B is still under load, gets a cookie, retries with mac2 and gets in.
        with trio.fail_after(8):
            await a.send(IA1, b"through the flood")
            assert await b.receive() == (IA1, b"through the flood")
