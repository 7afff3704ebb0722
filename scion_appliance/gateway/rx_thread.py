"""The gateway's side of the receive worker thread (``_fast.rxworker``): what trio does while a C thread
carries the wire -> TUN direction.

When threads are on and an IP tunnel offers its TUN device (``IpTunnel`` hands an ``RxTarget`` to
``Gateway.attach_rx``), the worker owns reading the underlay socket. This module arms and disarms its
lanes, runs the existing Python path on what it hands up, and harvests its counters into the gateway's.

Rules kept here:
- A lane is armed for a session that receives data in steady state: the peer's current session once it
  is confirmed (``Gateway._session_ready``) and the previous one while it lives. A responder's unconfirmed
  ``next`` session is never armed: its first message confirms it, and that takes the Python path.
- A lane is disarmed before its keys are wiped (``Gateway._forget_dropped``, peer removal, shutdown):
  after ``disarm`` returns the thread no longer touches the key or the window.
- Python opens a message of an armed session only under the worker's lock (``Gateway._rx_guard``): the
  replay window and the remote's deframer are shared with the thread.
- What is handed up runs through the same code as the in-loop path: datagrams through
  ``Gateway._receive_parsed`` (in arrival order), "ack due" records through ``Gateway._ack_send`` (which
  seals and sends as ``_send_ack`` does), frames the C deframer left through ``ip_sink``.
- Counters are harvested every ``HARVEST_INTERVAL`` (and on ``Gateway.harvest_rx``) into the names the
  in-loop path uses; ``Peer.received`` is called once per harvest per session that heard anything, so
  keepalive and rekey timers behave as before.
"""

from __future__ import annotations

import array
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scion_appliance import log as _log
from scion_appliance._fast import codec, pipeline, rxworker, udpio
from scion_appliance.paths.acks import ACK_INTERVAL, encode_ack
from scion_appliance.tunnel import messages
from scion_appliance.tunnel.timers import REJECT_AFTER_TIME

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from scion_appliance.gateway.service import Gateway, _Tunnel

HARVEST_INTERVAL = 0.1  # seconds between counter harvests (last_rx, transfer, drops; session timers)
DATA = int(messages.MessageType.DATA)

log = _log.get_logger("gateway.rx_thread")


@dataclass
class RxTarget:
    """What the receive thread needs from the IP tunnel (``IpTunnel.rx_target``)."""

    tun_fd: int
    vnet_hdr: bool
    udp_write_segs: int
    table: pipeline.PrefixTable  # remote prefixes: a packet's source must lie in its sender's
    remotes: dict[str, tuple[int, pipeline.Deframer]]  # peer ISD-AS -> (remote index, its deframer)
    # True while the Python decoder of that peer holds a partial packet (frames keep going up to it).
    decoder_pending: Callable[[str], bool]
    # The thread's tunnel-side counts of one harvest: frames, written, spoofed, tun_failed, tun_errno.
    delivered: Callable[[str, dict[str, int]], None]


class RxThread:
    """One running receive worker and its lanes (made by ``Gateway.attach_rx``)."""

    def __init__(self, gw: Gateway, target: RxTarget, batch: int, stride: int) -> None:
        assert gw._sock is not None
        self.gw, self.target = gw, target
        self.batch, self.stride = batch, stride
        self.worker = rxworker.RxWorker(
            gw._sock.fileno(), gw._gro is not None, target.tun_fd, target.vnet_hdr, target.udp_write_segs,
            gw.port, target.table, batch, stride, ACK_INTERVAL, DATA,
        )  # fmt: skip
        self.by_remote = {index: key for key, (index, _) in target.remotes.items()}
        self.lanes: dict[int, tuple[str, _Tunnel]] = {}  # receiver index -> (peer, its session's keys)
        self.next_harvest = 0.0
        self._busy = False
        # Buffers for handed-up datagrams (the Python path's batch layout) and for ack records.
        self._buf = bytearray(stride * batch)
        self._lengths = array.array("I", bytes(4 * batch))
        self._addrs = udpio.new_addrs(batch)
        self._recs = codec.ScionRecords(batch)
        self._one = codec.ScionRecords(1)

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        self.worker.start()
        for key in list(self.gw._sessions):
            self.arm_peer(key)
        self.next_harvest = time.monotonic() + HARVEST_INTERVAL

    def stop(self, *, run_pending: bool = True) -> None:
        """Joins the thread and accounts its last counters; ``run_pending``: what it handed up last runs
        (not at shutdown, when nothing may be sent any more)."""
        last = self.worker.stop()
        self._account(last, time.monotonic())
        self.lanes.clear()
        if run_pending:
            self.take()

    @property
    def wake_fd(self) -> int:
        return self.worker.wake_fd

    def locked(self) -> AbstractContextManager[Any]:
        return self.worker.locked()

    # -- lanes -----------------------------------------------------------------------------------------

    def arm_peer(self, key: str) -> None:
        """Arms the peer's confirmed sessions (current, previous) that have no lane yet."""
        gw = self.gw
        peer = gw._sessions.get(key)
        remote = self.target.remotes.get(key)
        if peer is None or remote is None or self.worker.stopped:
            return
        now = time.monotonic()
        for s in (peer.current, peer.previous):
            if s is None or s.local_index in self.lanes or not s.can_receive(now):
                continue
            entry = gw._by_index.get(s.local_index)
            if entry is None:
                continue
            tun = entry[1]
            try:
                self.worker.arm(s.local_index, tun.recv, tun.window, remote[1], remote[0],
                                expires_at=s.created + REJECT_AFTER_TIME)
            except OverflowError:
                gw.counters["rx_lanes_full"] += 1  # this session's data takes the Python path
                continue
            self.lanes[s.local_index] = (key, tun)

    def disarm(self, index: int) -> None:
        """Takes the lane of ``index`` back (before its keys are wiped), accounting what it counted."""
        entry = self.lanes.pop(index, None)
        if entry is None:
            return
        counts = self.worker.disarm(index)
        if counts is not None:
            self._account_lane(entry[0], entry[1], counts)

    # -- what the thread hands up --------------------------------------------------------------------

    def service(self, now: float) -> None:
        """The receive task's turn: take what was handed up; harvest when due; notice a dead thread."""
        self.take()
        if now >= self.next_harvest:
            self.harvest(now)
        if not self.worker.running and not self.worker.stopped:
            self.gw.counters["rx_worker_failed"] += 1
            log.error("rx_worker.failed", errno=self.worker.failed_errno,
                      note="the receive path falls back to the event loop")
            self.gw.detach_rx()

    def drain(self) -> bool:
        """What ``Gateway._drain_receive`` does with a thread: run what waits in the handoff now."""
        return self.take() > 0

    def take(self) -> int:
        """Runs the Python path on the handed-up records, in order; returns how many there were."""
        if self._busy:
            return 0
        self._busy = True
        try:
            records = self.worker.take_handoff()
            pending: list[tuple[bytes, bytes]] = []
            frames_of: dict[int, int] = {}  # remote -> the number of its last FRAME record here
            for kind, receiver, remote, counter, received, addr, data in records:
                if kind == rxworker.DATAGRAM:
                    pending.append((addr, data))
                    if len(pending) == self.batch:
                        self._datagrams(pending)
                elif kind == rxworker.ACK:
                    self._ack(receiver, counter, received, addr, data)
                else:
                    self._datagrams(pending)  # frames of one stream stay in arrival order
                    self._frame(remote, data)
                    frames_of[remote] = received
            self._datagrams(pending)
            for remote, seen in frames_of.items():
                key = self.by_remote.get(remote)
                if key is not None and not self.target.decoder_pending(key):
                    self.worker.stream_idle(remote, seen)  # refused if more frames went up meanwhile
            return len(records)
        finally:
            self._busy = False

    def _datagrams(self, pending: list[tuple[bytes, bytes]]) -> None:
        if not pending:
            return
        n = len(pending)
        stride = self.stride
        for i, (addr, data) in enumerate(pending):
            self._buf[i * stride : i * stride + len(data)] = data
            self._lengths[i] = len(data)
            self._addrs[i * udpio.ADDR_SIZE : (i + 1) * udpio.ADDR_SIZE] = addr
        pending.clear()
        self._recs.parse_batch(self._buf, stride, self._lengths, n)
        self.gw._receive_parsed(self._buf, self._lengths, self._addrs, self._recs, n, time.monotonic())

    def _ack(self, receiver: int, counter: int, received: int, addr: bytes, raw: bytes) -> None:
        entry = self.gw._by_index.get(receiver)
        if entry is None:  # the session ended meanwhile: nothing to seal the ack with
            return
        self._one.parse_batch(raw, len(raw), array.array("I", [len(raw)]), 1)
        if self._one.status(0):
            return
        arrival = (raw, self._one.get(0), udpio.addr_get(addr, 0))
        self.gw._ack_send(entry[0], entry[1], encode_ack(counter, received), arrival)

    def _frame(self, remote: int, frame: bytes) -> None:
        gw = self.gw
        key = self.by_remote.get(remote)
        if key is None or key not in gw.peers:
            return
        if gw.ip_sink is None:
            gw.counters["drop_no_ip_sink"] += 1
            return
        gw.ip_sink(gw.peers[key].ia, frame)

    # -- counters --------------------------------------------------------------------------------------

    def harvest(self, now: float) -> None:
        """Counters since the last harvest into the gateway's; lanes whose session can no longer receive
        are disarmed (their data then takes the Python path, which drops it by its reason)."""
        self.next_harvest = now + HARVEST_INTERVAL
        self._account(self.worker.counters(), now)
        for index, (_, tun) in list(self.lanes.items()):
            if not tun.session.can_receive(now):
                self.disarm(index)

    def _account(self, counts: dict[str, Any], now: float) -> None:
        c = self.gw.counters
        for name, v in counts.get("worker", {}).items():
            if not v:
                continue
            if name.startswith("drop_"):
                c[name] += v
            elif name == "handoff_full":
                c["drop_handoff_full"] += v
            else:
                c[f"rx_worker_{name}"] += v
        for receiver, lane in counts.get("lanes", {}).items():
            entry = self.lanes.get(receiver)
            if entry is not None:
                self._account_lane(entry[0], entry[1], lane)

    def _account_lane(self, key: str, tun: _Tunnel, lane: dict[str, Any]) -> None:
        gw = self.gw
        if lane["rx_packets"]:
            gw._account(key, "rx", lane["rx_bytes"], gw.last_rx, packets=lane["rx_packets"], at=lane["last_rx"])
        for name, v in lane.items():
            if name.startswith("drop_") and v:
                gw.counters[name] += v
        if lane["keepalives"]:
            gw.counters["keepalives_received"] += lane["keepalives"]
        if lane["data"]:
            gw.counters["frames_received"] += lane["data"]
        if lane["frames_fast"] or lane["written"] or lane["spoofed"] or lane["tun_failed"]:
            self.target.delivered(key, {
                "frames": lane["frames_fast"], "written": lane["written"], "spoofed": lane["spoofed"],
                "tun_failed": lane["tun_failed"], "tun_errno": lane["tun_errno"],
            })  # fmt: skip
        peer = gw._sessions.get(key)
        if lane["rx_packets"] and peer is not None and tun.session in peer.sessions():
            out = peer.received(tun.session, lane["last_rx"], time.time(), keepalive=not lane["data"])
            if out.initiation is not None:
                gw._reply(key, out.initiation)
