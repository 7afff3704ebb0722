"""IP over SCION: the LAN's packets from the TUN device to peer appliances in SIG frames, and back.

Outbound: one task waits until the TUN fd is readable, reads a batch, classifies each packet by the
traffic policy (destination -> remote ISD-AS), packs each remote's packets into SCION IP Gateway frames
with that remote's encoder and queues the frames; one sender task per remote hands them to the gateway
(``gateway.send(ia, frame, msg_type=DATA)``), which seals them for the session and sends them on the
selected path. Inbound: the gateway passes every authenticated SIG frame to ``deliver`` (its
``ip_sink``); the remote's decoder reassembles packets, whose source must lie in that remote's prefixes,
and they are written to the TUN device.

Batch path (when the gateway offers it: ``Gateway.send_frames`` and ``ip_batch_sink``): the read batch
is classified, framed, sealed, stamped and sent in a few C calls per remote (``_fast.pipeline``), and
received frames are deframed and written to the TUN device a batch at a time. Packets and frames the C
path does not take (drops to count, partial packets the Python decoder is reassembling, remotes
without a session yet) go the per-packet way described above, so behaviour and counters are the same.

Threaded (``threads=True``, the default, with a ``Gateway``): the outbound batch path runs in a C thread
without the GIL (``tx_thread``, ``_fast.txworker``); trio keeps its per-remote lanes on the current
session and path and takes the packets it hands up through the per-packet way above. The inbound
direction then runs in the gateway's receive thread (``Gateway.attach_rx`` with ``rx_target``: this
tunnel's TUN device, prefixes and deframers); what it leaves comes to ``deliver`` as before.

Rules kept here:
- One ``FrameEncoder`` per remote with its own (session id, stream id); the stream id is random per
  start so a restarted appliance is never mistaken for late frames of the old stream. One
  ``FrameDecoder`` per remote: frames of different peers never mix in reassembly.
- The reader never waits on a remote: frames go into a bounded per-remote queue; when it is full the
  batch is dropped and counted (``queue_full``), so a remote whose handshake or path is pending cannot
  stall traffic to the others or the TUN device.
- A packet sent by remote X must carry a source address of X's prefixes, otherwise it is dropped
  (``spoofed_source``): a peer can only inject traffic for what it is configured to own.
- Nothing is dropped silently: every drop increments ``counters["drop_<reason>"]`` (reasons in
  ``TunnelDrop`` and ``traffic_policy.PacketClass``; framing losses as ``frame_<FrameDrop>``) and the
  first drop of each reason is logged with the same word.
"""

from __future__ import annotations

import array
import enum
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from scion_appliance import log as _log
from scion_appliance._fast import pipeline
from scion_appliance.gateway.rx_thread import RxTarget
from scion_appliance.gateway.service import GatewayError
from scion_appliance.gateway.traffic_policy import PacketClass, TrafficPolicy
from scion_appliance.gateway.tx_thread import TxThread
from scion_appliance.scion.addr import IA
from scion_appliance.scion.sig_frame import FrameDecoder, FrameEncoder
from scion_appliance.tun import TunDevice
from scion_appliance.tunnel import messages

# SIG frame size: a 1400-byte TUN packet (the config's default MTU) plus the 16-byte SIG header fits
# one frame; sealed (+32) in SCION/UDP (+44 with an IPv4 host pair, + path) it stays far under the
# gateway's 2048-byte receive slots even on long paths.
FRAME_SIZE = 1472
BATCH = 64
# UDP datagrams in one coalesced TUN write: the receiving host's socket (without UDP_GRO) takes all of
# them into its buffer at once.
UDP_WRITE_SEGS = 64
QUEUE_BATCHES = 64  # per remote: batches of frames waiting for the gateway

log = _log.get_logger("ip_tunnel")


class TunnelDrop(enum.StrEnum):
    """Why a packet or frame was dropped here (besides ``PacketClass`` and ``FrameDrop``)."""

    OVERSIZED = "oversized"  # read from the TUN longer than the read slot (MTU above the stride)
    QUEUE_FULL = "queue_full"  # the remote's send queue is full (handshake or path pending)
    NO_SESSION = "no_session"  # the gateway could not send: no session or no usable path
    UNKNOWN_REMOTE = "unknown_remote"  # a frame from a peer the traffic policy does not list
    SPOOFED_SOURCE = "spoofed_source"  # inner source address outside the sending remote's prefixes
    TUN_WRITE = "tun_write_failed"  # the kernel refused the packet (device down, queue full)
    BAD_OFFLOAD = "bad_offload"  # an offload read (GSO super-packet) that could not be split validly
    HANDOFF_FULL = "handoff_full"  # the TX thread's ring for the Python path was full


class FrameCarrier(Protocol):
    """What the tunnel needs from the gateway service (``gateway.service.Gateway`` is one)."""

    ip_sink: Callable[[IA, bytes], None] | None

    async def send(self, dst_ia: IA | str, payload: bytes, *, msg_type: int = ...) -> dict[str, Any]: ...


@dataclass
class _Remote:
    ia: IA
    encoder: FrameEncoder
    decoder: FrameDecoder
    queue_in: trio.MemorySendChannel[list[bytes]]
    queue_out: trio.MemoryReceiveChannel[list[bytes]]
    index: int = 0
    deframer: pipeline.Deframer | None = None
    counters: Counter[str] = field(default_factory=Counter)
    inflight: int = 0  # batches of frames queued for ``_sender`` and not yet sent (the TX thread waits)


class IpTunnel:
    """Carries the IP packets of ``policy``'s remote prefixes between ``tun`` and ``gateway``.

    Run it in a nursery: ``await nursery.start(tunnel.run)``; it installs itself as the gateway's
    ``ip_sink`` until it stops."""

    def __init__(
        self,
        gateway: FrameCarrier,
        tun: TunDevice,
        policy: TrafficPolicy,
        *,
        frame_size: int = FRAME_SIZE,
        batch: int = BATCH,
        stride: int | None = None,
        queue_batches: int = QUEUE_BATCHES,
        udp_write_segs: int = UDP_WRITE_SEGS,
        threads: bool = True,
    ) -> None:
        if len(policy.remotes) > 256:
            raise ValueError("at most 256 remotes: the SIG session id is one byte")
        self.gateway = gateway
        self.tun = tun
        self.policy = policy
        self.frame_size = frame_size
        self.batch = batch
        if not 1 <= udp_write_segs <= 64:
            raise ValueError("udp_write_segs: 1 to 64 datagrams per coalesced TUN write")
        self.udp_write_segs = udp_write_segs
        # A slot must hold the largest packet the device can hand us; one byte more flags truncation.
        self.stride = stride if stride is not None else max(2048, tun.mtu + 64)
        self.counters: Counter[str] = Counter()
        self._remotes: dict[IA, _Remote] = {}
        for session_id, ia in enumerate(policy.remotes):
            send, recv = trio.open_memory_channel[list[bytes]](queue_batches)
            self._remotes[ia] = _Remote(
                ia,
                FrameEncoder(session_id, random.getrandbits(20), frame_size),
                FrameDecoder(),
                send,
                recv,
                session_id,
                pipeline.Deframer(batch, self.stride),
            )
        self._buf = bytearray(self.stride * batch)
        self._lengths = array.array("I", bytes(4 * batch))
        self._by_index = list(self._remotes.values())
        self._table = pipeline.PrefixTable(
            (i, str(net)) for i, ia in enumerate(policy.remotes) for net in policy.prefixes(ia)
        )
        # The batch path needs a gateway that can seal and send a whole batch (``Gateway``).
        self._tx = pipeline.TxBatch(batch, self.stride, frame_size) if hasattr(gateway, "send_frames") else None
        # With ``threads`` (and a gateway that has a socket and rotation hooks), a C thread reads the TUN
        # device and sends (``tx_thread``); trio only coordinates it.
        self.threads = threads
        self._thread: TxThread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reads the TUN device and sends to every remote until cancelled; inbound frames are delivered
        while it runs."""
        self.gateway.ip_sink = self.deliver
        if self._tx is not None:
            self.gateway.ip_batch_sink = self.deliver_batch  # type: ignore[attr-defined]
        attach_rx = getattr(self.gateway, "attach_rx", None)
        rx_target = self.rx_target()
        rx_thread = False
        try:
            # Threaded, the wire -> TUN direction runs in the gateway's receive thread (``rx_thread``).
            rx_thread = bool(self.threads and self._tx is not None and attach_rx is not None
                             and attach_rx(rx_target))
            async with trio.open_nursery() as nursery:
                for remote in self._remotes.values():
                    nursery.start_soon(self._sender, remote)
                self._thread = self._new_thread()
                if self._thread is not None:
                    await nursery.start(self._thread.run)
                else:
                    nursery.start_soon(self._reader)
                task_status.started()
        finally:
            self._thread = None
            if rx_thread:
                self.gateway.detach_rx(rx_target)  # type: ignore[attr-defined]
            if self.gateway.ip_sink == self.deliver:
                self.gateway.ip_sink = None
            if getattr(self.gateway, "ip_batch_sink", None) == self.deliver_batch:
                self.gateway.ip_batch_sink = None  # type: ignore[attr-defined]

    # -- LAN -> SCION ------------------------------------------------------------------------------------

    def _new_thread(self) -> TxThread | None:
        """The TX worker thread when threads are on and the gateway offers what it needs, else None."""
        gw = self.gateway
        if not (self.threads and self._tx is not None and getattr(gw, "_sock", None) is not None
                and hasattr(gw, "on_rotation")):
            return None
        try:
            return TxThread(self, gw, self._table)  # type: ignore[arg-type]
        except OSError as e:  # out of descriptors or memory: the event loop still does the job
            log.warning("ip_tunnel.tx_thread_unavailable", error=str(e), note="outbound stays in the event loop")
            return None

    async def _reader(self) -> None:
        fd = self.tun.fileno()
        while True:
            await trio.lowlevel.wait_readable(fd)
            # Drain what is queued, but yield between batches so the gateway's receive loop keeps up.
            read = self.read_once if self._tx is None else self.read_once_batch
            while read() == self.batch:
                await trio.lowlevel.checkpoint()

    def read_once(self) -> int:
        """Reads one batch from the TUN device, frames it per remote and queues the frames.
        Returns the number of packets read (0: nothing waiting)."""
        n = self.tun.read_batch(self._buf, self.stride, self._lengths, self.batch)
        if n <= 0:
            return 0
        self.counters["tun_packets_read"] += n
        mv = memoryview(self._buf)
        per_remote: dict[IA, list[memoryview]] = {}
        stride, lengths, classify = self.stride, self._lengths, self.policy.classify
        for i in range(n):
            length = lengths[i]
            if length > stride:
                self._drop(TunnelDrop.OVERSIZED)
                continue
            pkt = mv[i * stride : i * stride + length]
            dst = classify(pkt)
            if isinstance(dst, PacketClass):
                self._drop(dst)
                continue
            per_remote.setdefault(dst, []).append(pkt)
        for ia, pkts in per_remote.items():
            remote = self._remotes[ia]
            frames = remote.encoder.encode(pkts)
            if not frames:
                continue
            try:
                remote.queue_in.send_nowait(frames)
            except trio.WouldBlock:
                self._drop(TunnelDrop.QUEUE_FULL, len(pkts), remote=ia)
                continue
            remote.inflight += 1
            remote.counters["packets_queued"] += len(pkts)
            self.counters["packets_queued"] += len(pkts)
        return n

    def read_once_batch(self) -> int:
        """``read_once`` on the batch path: one TUN read, then per remote one framing, sealing and
        sendmmsg in C. Returns the number of packets read (0: nothing waiting)."""
        tx = self._tx
        assert tx is not None
        reader = self.tun.reader
        n = tx.read_tun(self.tun.fileno(), reader)
        if reader is not None and reader.dropped:
            self._drop(TunnelDrop.BAD_OFFLOAD, reader.dropped)
            reader.dropped = 0
        if n <= 0:
            return 0
        self.counters["tun_packets_read"] += n
        if tx.classify(self._table) < n:
            self._slow_packets((length, pkt) for _, length, pkt in tx.slow_packets())
        for r in tx.remotes():
            remote = self._by_index[r]
            try:
                sent = self.gateway.send_frames(remote.ia, tx, r, remote.encoder)  # type: ignore[attr-defined]
            except GatewayError as e:
                self._drop(TunnelDrop.NO_SESSION, sum(1 for _ in tx.packets_of(r)), remote=remote.ia,
                           detail=str(e))
                continue
            if sent is None:  # no session yet: the per-packet way waits for the handshake
                self._queue(remote, tx.packets_of(r))
                continue
            count = len(tx.packets_of(r))
            remote.counters["packets_queued"] += count
            self.counters["packets_queued"] += count
            remote.counters["frames_sent"] += sent
            self.counters["frames_sent"] += sent
        return n

    def _slow_packets(self, packets: Iterable[tuple[int, bytes]]) -> None:
        """Packets (read length, bytes) the C path left: the reference classification names the drop (or,
        for a packet the encoder refuses, the encoder counts it); the TX thread also hands up the packets
        of remotes it has no lane for."""
        per_remote: dict[IA, list[bytes]] = {}
        for length, pkt in packets:
            if length > self.stride:
                self._drop(TunnelDrop.OVERSIZED)
                continue
            dst = self.policy.classify(pkt)
            if isinstance(dst, PacketClass):
                self._drop(dst)
                continue
            per_remote.setdefault(dst, []).append(pkt)
        for ia, pkts in per_remote.items():
            self._queue(self._remotes[ia], pkts)

    def _queue(self, remote: _Remote, pkts: list[bytes]) -> None:
        # The encoder frames this stream now; when it queues nothing (it refused the packets) the thread
        # takes the stream back at once, so a LAN host sending bad packets cannot keep it on this path.
        thread = self._thread
        released = thread is not None and thread.release(remote)
        frames = remote.encoder.encode(pkts)
        if not frames:
            if released and thread is not None:
                thread.check(remote)
            return
        try:
            remote.queue_in.send_nowait(frames)
        except trio.WouldBlock:
            self._drop(TunnelDrop.QUEUE_FULL, len(pkts), remote=remote.ia)
            if released and thread is not None:
                thread.check(remote)
            return
        remote.inflight += 1
        remote.counters["packets_queued"] += len(pkts)
        self.counters["packets_queued"] += len(pkts)

    async def _sender(self, remote: _Remote) -> None:
        async for frames in remote.queue_out:
            for i, frame in enumerate(frames):
                try:
                    await self.gateway.send(remote.ia, frame, msg_type=messages.MessageType.DATA)
                except GatewayError as e:
                    # The rest of this batch would fail the same way; later batches try again.
                    self._drop(TunnelDrop.NO_SESSION, len(frames) - i, remote=remote.ia, detail=str(e))
                    break
                remote.counters["frames_sent"] += 1
                self.counters["frames_sent"] += 1
            remote.inflight -= 1
            if remote.inflight == 0 and self._thread is not None:
                self._thread.wake()  # the TX thread may take this stream back

    # -- SCION -> LAN ------------------------------------------------------------------------------------

    def deliver(self, peer_ia: IA, frame: bytes) -> None:
        """The gateway's ``ip_sink``: one authenticated SIG frame from ``peer_ia``."""
        remote = self._remotes.get(peer_ia)
        if remote is None:
            self._drop(TunnelDrop.UNKNOWN_REMOTE, remote=peer_ia)
            return
        self.counters["frames_received"] += 1
        remote.counters["frames_received"] += 1
        for pkt in remote.decoder.feed(frame):
            if not self.policy.source_allowed(peer_ia, pkt):
                self._drop(TunnelDrop.SPOOFED_SOURCE, remote=peer_ia)
                continue
            try:
                self.tun.write(pkt)
            except OSError as e:
                self._drop(TunnelDrop.TUN_WRITE, remote=peer_ia, detail=e.strerror or str(e))
                continue
            remote.counters["packets_written"] += 1
            self.counters["tun_packets_written"] += 1

    def deliver_batch(self, peer_ia: IA, buf: bytearray, stride: int, lengths: array.array[int] | memoryview,
                      rx: pipeline.RxBatch) -> None:
        """The gateway's ``ip_batch_sink``: the opened frames of one batch from ``peer_ia`` (status 0 in
        ``rx``), deframed and written to the TUN device in C; the rest through ``deliver``."""
        remote = self._remotes.get(peer_ia)
        if remote is None or remote.deframer is None:
            self._drop(TunnelDrop.UNKNOWN_REMOTE, remote=peer_ia)
            return
        # While the Python decoder holds a partial packet, it must see the frames that follow.
        npkts, spoofed, fast = rx.deframe(buf, stride, lengths, self._table, remote.index, remote.deframer,
                                          remote.decoder.pending() > 0)
        self._count_deframed(remote, fast, npkts, spoofed)
        if npkts:
            self._count_written(remote, *rx.write_tun(self.tun.fileno(), self.tun.vnet_hdr, self.udp_write_segs))
        for i in rx.slow_frames():
            start = i * stride + rx.offsets[i] + 16
            self.deliver(peer_ia, bytes(buf[start: start + lengths[i]]))

    def rx_target(self) -> RxTarget:
        """What the gateway's receive thread needs to write this tunnel's packets (``Gateway.attach_rx``)."""
        return RxTarget(
            tun_fd=self.tun.fileno(),
            vnet_hdr=self.tun.vnet_hdr,
            udp_write_segs=self.udp_write_segs,
            table=self._table,
            remotes={str(ia): (r.index, r.deframer) for ia, r in self._remotes.items() if r.deframer is not None},
            decoder_pending=lambda key: self._remotes[IA.parse(key)].decoder.pending() > 0,
            delivered=self._rx_delivered,
        )

    def _rx_delivered(self, key: str, counts: dict[str, int]) -> None:
        """The receive thread's deframing and TUN writes for one remote since its last harvest (as
        ``deliver_batch`` counts them)."""
        remote = self._remotes.get(IA.parse(key))
        if remote is None:
            return
        written, failed = counts["written"], counts["tun_failed"]
        self._count_deframed(remote, counts["frames"], written + failed, counts["spoofed"])
        if written or failed:
            self._count_written(remote, written, failed, counts["tun_errno"])

    def _count_deframed(self, remote: _Remote, fast: int, packets: int, spoofed: int) -> None:
        """``fast`` frames of ``remote`` deframed in C gave ``packets`` packets and ``spoofed`` refused ones
        (kept in its decoder's counts, as if the Python decoder had seen them)."""
        if fast:
            remote.decoder.frames_in += fast
            remote.decoder.packets_out += packets + spoofed
            self.counters["frames_received"] += fast
            remote.counters["frames_received"] += fast
        if spoofed:
            self._drop(TunnelDrop.SPOOFED_SOURCE, spoofed, remote=remote.ia)

    def _count_written(self, remote: _Remote, written: int, failed: int, err: int) -> None:
        if failed:
            self._drop(TunnelDrop.TUN_WRITE, failed, remote=remote.ia, detail=os.strerror(err))
        remote.counters["packets_written"] += written
        self.counters["tun_packets_written"] += written

    # -- accounting --------------------------------------------------------------------------------------

    def datapath(self) -> dict[str, str]:
        """Where each direction runs now, for status: "thread" (a C worker thread) or "event loop"
        (threads off, or a thread that could not start or failed)."""
        tx = self._thread is not None and self._thread.worker.running
        rx = bool(getattr(self.gateway, "receive_thread_running", False))
        return {"outbound": "thread" if tx else "event loop", "inbound": "thread" if rx else "event loop"}

    def _drop(self, reason: str, count: int = 1, *, remote: IA | None = None, **fields: Any) -> None:
        key = f"drop_{reason}"
        first = key not in self.counters
        self.counters[key] += count
        if remote is not None and remote in self._remotes:
            self._remotes[remote].counters[key] += count
        if first:
            # Link-local multicast (the kernel's IPv6 router solicitations on a new TUN) is expected noise.
            emit = log.debug if reason == PacketClass.MULTICAST else log.warning
            emit("ip_tunnel.drop", reason=str(reason), count=count,
                        remote=str(remote) if remote else None, **fields)

    def snapshot(self) -> dict[str, Any]:
        """Counters for status and telemetry: totals (framing losses as ``drop_frame_<reason>``) and
        per remote."""
        harvest = getattr(self.gateway, "harvest_rx", None)
        if harvest is not None:  # the receive thread's counts, up to date
            harvest()
        if self._thread is not None:  # and the send thread's
            self._thread.harvest()
        totals: Counter[str] = Counter(self.counters)
        remotes: dict[str, dict[str, int]] = {}
        for ia, r in self._remotes.items():
            mine: Counter[str] = Counter(r.counters)
            for reason, n in (r.encoder.drops + r.decoder.drops).items():
                mine[f"drop_frame_{reason}"] += n
                totals[f"drop_frame_{reason}"] += n
            remotes[str(ia)] = dict(mine)
        return {"totals": dict(totals), "remotes": remotes}
