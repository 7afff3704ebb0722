"""The TUN -> wire worker thread's coordinator: trio keeps the C thread's lanes right and takes what it
hands up; in steady state no Python runs per batch (``_fast.txworker``, csrc/tx_worker.h).

What the thread does per batch (no GIL): read the TUN device, classify, and for each remote with an
armed lane frame, seal, stamp and send its packets. What trio does here:
- Lanes: a remote's lane is armed with its current sending session (key, receiver index) and the path
  ``Gateway._choose`` picked, re-checked every ``LANE_CHECK`` seconds (so a failover moves traffic within
  that) and at once when the peer's sessions rotate (``Gateway.on_rotation``, called before the keys of
  dropped sessions are wiped: the lane moves to the sending session first, or is disarmed).
- One framer per stream: a remote is armed only while the Python path has no frames of it waiting
  (``_Remote.inflight``), and disarmed (its sequence number handed back to the Python ``FrameEncoder``)
  before the Python path frames anything for it. So frames of a stream never overtake each other.
- Handed-up packets (the classifier's slow cases, remotes without a lane) go through ``IpTunnel``'s
  per-packet path, which names their drops or waits for the handshake as before.
- Send records become ``SendLog`` ranges (acks find their path) and start the path's liveness clock
  (``Gateway._data_sent``); a lookup that misses pulls them in first (``SendLog.pull``).
- Counters: the thread's cumulative counters are harvested as deltas into the names the batch path uses
  (``IpTunnel.counters``, per remote, ``Gateway.counters``, ``transfer``, ``last_tx``), so status and
  telemetry read the same.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from scion_appliance._fast import aead, udpio
from scion_appliance._fast.pipeline import PrefixTable
from scion_appliance._fast.txworker import TxWorker
from scion_appliance.gateway.service import GatewayError
from scion_appliance.tunnel import messages

if TYPE_CHECKING:
    from scion_appliance.gateway.ip_tunnel import IpTunnel, _Remote
    from scion_appliance.gateway.service import Gateway
    from scion_appliance.paths.source import PathInfo
    from scion_appliance.scion.builder import UdpPacketBuilder

LANE_CHECK = 0.005  # seconds between lane checks (session, path): the failover delay the thread adds
SLOTS_KEPT = 4096  # path slots remembered for send records still in the ring
_EXHAUSTED = f"drop_{aead.DROP_REASONS[aead.DROP_EXHAUSTED]}"
_TUNNEL_DROPS = {"drop_handoff_full": "handoff_full", "drop_bad_offload": "bad_offload"}


@dataclass
class _Lane:
    tun: Any  # the gateway's _Tunnel whose send key the lane seals with
    path: PathInfo
    builder: UdpPacketBuilder  # where the header template came from (rebuilt when paths change)
    slot: int


class TxThread:
    """Runs ``tunnel``'s outbound direction in a ``TxWorker`` thread over ``gateway``'s socket."""

    def __init__(self, tunnel: IpTunnel, gateway: Gateway, prefixes: PrefixTable) -> None:
        sock = gateway._sock
        if sock is None:
            raise GatewayError("the gateway's socket is not open: enter the gateway before the tunnel")
        self.tunnel, self.gw = tunnel, gateway
        self.worker = TxWorker(tunnel.tun.fileno(), tunnel.tun.vnet_hdr, sock.fileno(), prefixes, tunnel.batch,
                               tunnel.stride, tunnel.frame_size, int(messages.MessageType.DATA))
        self._by_key = {str(r.ia): r for r in tunnel._by_index}
        self._lanes: dict[int, _Lane] = {}
        self._slots: OrderedDict[int, tuple[int, str, str]] = OrderedDict()  # -> (session, path id, peer)
        self._next_slot = 0
        self._seen: Counter[str] = Counter()  # thread counters already harvested
        self._seen_remote: dict[int, dict[str, float]] = {}
        self._wake = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        gw = self.gw
        gw.on_rotation.append(self._rotating)
        gw._send_log.pull = self.pull_sends
        self.worker.start()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._handoff_loop)
                nursery.start_soon(self._lane_loop)
                task_status.started()
        finally:
            self.worker.stop()
            for r in list(self._lanes):
                self._disarm(r)
            self.pull_sends()
            self.harvest()
            gw.on_rotation.remove(self._rotating)
            if gw._send_log.pull == self.pull_sends:
                gw._send_log.pull = None

    def wake(self) -> None:
        """Check the lanes now (a remote's Python queue ran empty, a session changed)."""
        self._wake.set()

    async def _handoff_loop(self) -> None:
        fd = self.worker.wake_fd
        while True:
            await trio.lowlevel.wait_readable(fd)
            self.take_handoff()

    def take_handoff(self) -> None:
        packets = self.worker.take_handoff()
        if packets:
            self.tunnel._slow_packets(packets)

    async def _lane_loop(self) -> None:
        while True:
            # Packets handed up before a lane is armed go out first: the Python path takes them now (and
            # the remote is not armed while they are queued), so the thread's later ones cannot pass them.
            self.take_handoff()
            for remote in self.tunnel._by_index:
                self.check(remote)
            self.pull_sends()
            self.harvest()
            with trio.move_on_after(LANE_CHECK):
                await self._wake.wait()
            if self._wake.is_set():
                self._wake = trio.Event()

    # -- lanes -----------------------------------------------------------------------------------------

    def check(self, remote: _Remote) -> None:
        """Arms, re-arms or disarms ``remote``'s lane after its sending session and chosen path."""
        gw, key = self.gw, str(remote.ia)
        want = None
        spec = gw.peers.get(key)
        if spec is not None and not spec.plain and remote.inflight == 0:
            try:
                tun = gw._tunnel_now(key)  # also starts a rekey when one is due
                if tun is not None and not tun.send.closed:
                    want = (tun, gw._choose(key))
            except GatewayError:
                pass  # no session or no usable path: the Python path waits, counts and says why
        lane = self._lanes.get(remote.index)
        if want is None:
            if lane is not None:
                self._disarm(remote.index)
            return
        tun, path = want
        builder = gw._builder(key, path)
        if lane is not None and lane.tun is tun and lane.path.id == path.id and lane.builder is builder \
                and lane.path.next_hop == path.next_hop:
            return
        self._arm(remote, tun, path, builder)

    def release(self, remote: _Remote) -> bool:
        """The Python path is about to frame packets of ``remote``: the stream goes back to its encoder.
        True if the lane was armed."""
        if remote.index not in self._lanes:
            return False
        self._disarm(remote.index)
        return True

    def _arm(self, remote: _Remote, tun: Any, path: PathInfo, builder: UdpPacketBuilder) -> None:
        self._next_slot = (self._next_slot + 1) & 0xFFFFFFFF
        slot = self._next_slot
        self._slots[slot] = (tun.session.local_index, path.id, str(remote.ia))
        while len(self._slots) > SLOTS_KEPT:
            self._slots.popitem(last=False)
        enc = remote.encoder
        try:
            enc.seq = self.worker.arm(remote.index, tun.send, tun.session.remote_index, enc.session_id,
                                      enc.stream_id, enc.seq, builder.build(b""),
                                      udpio.addr_pack(path.next_hop[0], path.next_hop[1]), slot)
        except aead.KeyClosedError:
            self._disarm(remote.index)
            return
        self._lanes[remote.index] = _Lane(tun, path, builder, slot)

    def _disarm(self, index: int) -> None:
        seq = self.worker.disarm(index)
        self._lanes.pop(index, None)
        if seq is not None:
            self.tunnel._by_index[index].encoder.seq = seq

    def _rotating(self, key: str) -> None:
        """``Gateway.on_rotation``: keys of dropped sessions are about to be wiped. The lane moves to the
        sending session (same path; the next check re-chooses) or is disarmed."""
        remote = self._by_key.get(key)
        lane = self._lanes.get(remote.index) if remote is not None else None
        if remote is None or lane is None:
            return
        peer = self.gw._sessions.get(key)
        s = peer.sending_session(time.monotonic()) if peer is not None else None
        entry = self.gw._by_index.get(s.local_index) if s is not None else None
        if entry is None or entry[1].send.closed:
            self._disarm(remote.index)
        elif entry[1] is not lane.tun:
            self._arm(remote, entry[1], lane.path, lane.builder)
        self.wake()

    # -- what the thread hands up ----------------------------------------------------------------------

    def pull_sends(self) -> None:
        """Send records -> SendLog ranges; each (peer, path) that carried data starts its liveness clock."""
        latest: dict[tuple[str, str], float] = {}
        log = self.gw._send_log
        for _, slot, first, count, _, at, retract in self.worker.take_sends():
            meta = self._slots.get(slot)
            if meta is None:
                self.tunnel.counters["tx_worker_send_records_unmatched"] += 1
                continue
            session, path_id, key = meta
            if retract:  # recorded before the send, and these could not go after all
                log.retract_range(session, first, count, path_id)
                continue
            log.record_range(session, first, count, path_id, at)
            latest[(key, path_id)] = at
        for (key, path_id), at in latest.items():
            self.gw._data_sent(key, path_id, at)

    def harvest(self) -> None:
        """The thread's counters since the last harvest, into the batch path's counter names."""
        tunnel, gw = self.tunnel, self.gw
        for name, value in self.worker.counters().items():
            d = value - self._seen[name]
            if d <= 0:
                continue
            self._seen[name] = value
            if name == "tun_packets_read":
                tunnel.counters[name] += d
            elif name in _TUNNEL_DROPS:
                tunnel._drop(_TUNNEL_DROPS[name], d)
            elif name.startswith("drop_") or name == "gso_refused":
                gw.counters[_EXHAUSTED if name == "drop_exhausted" else name] += d
            else:
                tunnel.counters[f"tx_worker_{name}"] += d
        for remote in tunnel._by_index:
            now = self.worker.remote_counters(remote.index)
            seen = self._seen_remote.setdefault(remote.index, {})
            delta = {k: int(now[k] - seen.get(k, 0)) for k in ("packets", "frames", "datagrams", "bytes")}
            if not any(delta.values()):
                continue
            self._seen_remote[remote.index] = now
            key = str(remote.ia)
            remote.encoder.packets_in += delta["packets"]
            remote.encoder.frames_out += delta["frames"]
            remote.counters["packets_queued"] += delta["packets"]
            tunnel.counters["packets_queued"] += delta["packets"]
            remote.counters["frames_sent"] += delta["datagrams"]
            tunnel.counters["frames_sent"] += delta["datagrams"]
            gw.counters["datagrams_sent"] += delta["datagrams"]
            gw._account(key, "tx", delta["bytes"], gw.last_tx, packets=delta["datagrams"], at=now["last_tx"])
