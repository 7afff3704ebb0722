"""The gateway's batch data path: whole batches of SIG frames sealed and sent, or received and opened, in
a few C calls (``_fast.pipeline`` around ``AeadKey.seal_batch``/``open_batch``); Python runs once per
batch for the session, path, ack and accounting decisions ``Gateway.send`` and ``Gateway._on_data`` make
per message.

Rules kept here:
- The same decisions as the per-message path: a batch is sealed only with the peer's current sending
  session (``None`` is returned when there is none, so the caller takes the path that waits for a
  handshake), sent only on the path ``Gateway._choose`` picked (never one known down), logged per counter
  in the ``SendLog`` so acks find their path, and every data message counts for the acks of its arrival
  path. The replay window is checked before and committed after authentication inside ``open_batch``.
- Anything unusual takes the per-message path: the receive side hands back every slot that is not a
  data envelope of a live session (handshakes, acks, SCMP, unknown receivers, expired sessions).
- Drops are counted under the same reason names as the per-message path.
"""

from __future__ import annotations

import array
import select
import time
from typing import TYPE_CHECKING, Any, Protocol

from scion_appliance._fast import aead, codec, pipeline, udpio
from scion_appliance.paths.source import PathInfo
from scion_appliance.scion.builder import UdpPacketBuilder
from scion_appliance.scion.sig_frame import FrameEncoder
from scion_appliance.tunnel import messages

if TYPE_CHECKING:
    from scion_appliance.gateway.service import Gateway
    from scion_appliance.scion.addr import IA

DATA = int(messages.MessageType.DATA)
Lengths = array.array | memoryview  # per-slot uint32 lengths of a receive batch
SEND_WAIT = 0.005  # longest wait (s) for room in the socket's send buffer before the rest is dropped


class BatchSink(Protocol):
    """Takes the opened SIG frames of one peer's batch (``IpTunnel.deliver_batch``)."""

    def __call__(self, peer_ia: IA, buf: bytearray, stride: int, lengths: Lengths,
                 rx: pipeline.RxBatch) -> None: ...


class BatchDatapath:
    def __init__(self, gateway: Gateway, batch: int, stride: int) -> None:
        self.gw = gateway
        self.stride = stride
        self.rx = pipeline.RxBatch(batch, stride)
        self._templates: dict[tuple[str, str], tuple[UdpPacketBuilder, pipeline.HeaderTemplate, bytes]] = {}
        self._receiving = False  # the receive state is in use (an ack or reply may drain the socket)
        self.gso = True  # UDP_SEGMENT sends until the kernel refuses one (then plain sendmmsg)

    # -- send -----------------------------------------------------------------------------------------

    def _route(self, key: str, path: PathInfo) -> tuple[pipeline.HeaderTemplate, bytes]:
        builder = self.gw._builder(key, path)
        hit = self._templates.get((key, path.id))
        if hit is None or hit[0] is not builder:
            hit = (builder, pipeline.HeaderTemplate(builder.build(b"")),
                   udpio.addr_pack(path.next_hop[0], path.next_hop[1]))
            self._templates[(key, path.id)] = hit
        return hit[1], hit[2]

    def send_frames(self, dst_ia: IA | str, tx: pipeline.TxBatch, remote: int,
                    encoder: FrameEncoder) -> int | None:
        """Frames the batch's packets of ``remote`` with ``encoder``'s stream, seals them for the peer's
        current session and sends them on the chosen path. Returns the number of datagrams sent, or None
        (nothing consumed) when there is no sending session yet. Raises GatewayError without a path."""
        gw = self.gw
        key = str(dst_ia)
        tun = gw._tunnel_now(key)
        if tun is None:
            return None
        path = gw._choose(key)
        tmpl, dest = self._route(key, path)
        k, taken, seq = tx.frame(remote, encoder.session_id, encoder.stream_id, encoder.seq)
        encoder.seq = seq
        encoder.frames_out += k
        encoder.packets_in += taken
        if k == 0:
            return 0
        sealed = tun.send.seal_batch(tx.out, tx.out_stride, tx.out_lens[:k], tx.out_status[:k],
                                     tun.session.remote_index, off=pipeline.HEADROOM,
                                     counters=tx.counters[:k], msg_type=DATA)
        if sealed < k:
            gw.counters[f"drop_{aead.DROP_REASONS[aead.DROP_EXHAUSTED]}"] += k - sealed
        live = tx.stamp(tmpl)
        sent = self._sendmmsg(tx, dest, live)
        now = time.monotonic()
        if sent:
            # The sealed slots took one run of counters (another thread may seal with this key too).
            gw._send_log.record_range(tun.session.local_index, tx.counters[0], sent, path.id, now)
            gw._data_sent(key, path.id, now)
        gw.counters["datagrams_sent"] += sent
        payload = sum(tx.out_lens[i] for i in range(sent)) - sent * (tmpl.length + aead.OVERHEAD)
        gw._account(key, "tx", payload, gw.last_tx, packets=sent, at=now)
        return sent

    def _sendmmsg(self, tx: pipeline.TxBatch, dest: bytes, live: int) -> int:
        sock = self.gw._sock
        assert sock is not None
        fd = sock.fileno()
        sent = 0
        deadline = time.monotonic() + SEND_WAIT
        while sent < live:
            try:
                got = tx.send(fd, dest, sent, self.gso)
                if tx.gso_refused:
                    self.gso = False
                    self.gw.counters["gso_refused"] += 1
            except OSError as e:
                # That datagram is lost (the kernel refused it); the next call goes on after it.
                self.gw.counters[f"drop_send_errno_{e.errno}"] += 1
                sent += 1
                continue
            if got == 0:
                left = deadline - time.monotonic()
                # Backpressure from the kernel: wait briefly for room rather than drop the batch at once.
                if left <= 0 or not select.select([], [sock], [], left)[1]:
                    self.gw.counters["drop_send_would_block"] += live - sent
                    break
            sent += got
        return sent

    # -- receive --------------------------------------------------------------------------------------

    def receive(self, buf: bytearray, lengths: Lengths, addrs: bytearray, recs: codec.ScionRecords,
                n: int, now: float) -> set[int]:
        """Opens and delivers the data envelopes of live sessions in one batch; returns the slots it
        handled (the caller treats the others one by one)."""
        gw = self.gw
        sink = gw.ip_batch_sink
        handled: set[int] = set()
        if sink is None or self._receiving:
            return handled
        self._receiving = True
        try:
            with gw._rx_guard():  # a receive thread shares the windows and deframers of armed sessions
                self._receive(buf, lengths, addrs, recs, n, now, sink, handled)
        finally:
            self._receiving = False
        return handled

    def _receive(self, buf: bytearray, lengths: Lengths, addrs: bytearray, recs: codec.ScionRecords,
                 n: int, now: float, sink: BatchSink, handled: set[int]) -> None:
        gw = self.gw
        rx = self.rx
        for receiver in rx.select(buf, self.stride, lengths, recs, n, gw.port, DATA):
            entry = gw._by_index.get(receiver)
            if entry is None:
                continue
            key, tun = entry
            if not tun.session.can_receive(now):
                continue
            slots = rx.mark(receiver)
            # Where acks go: one arrival per run of slots that came the same way (taken before the
            # slots are opened in place).
            runs: list[tuple[int, tuple[bytes, dict[str, Any], tuple[str, int]]]] = []
            prev = -1
            for i in slots:
                if prev < 0 or not rx.same_route(buf, self.stride, recs, addrs, prev, i):
                    raw = bytes(buf[i * self.stride: i * self.stride + lengths[i]])
                    runs.append((i, (raw, recs.get(i), udpio.addr_get(addrs, i))))
                prev = i
            tun.recv.open_batch(buf, self.stride, lengths, rx.status, rx.counters, offsets=rx.offsets,
                                receiver=receiver, window=tun.window, msg_type=DATA)
            handled.update(slots)
            opened: list[int] = []
            status = rx.status
            for i in slots:
                if status[i]:
                    gw.counters[f"drop_{aead.DROP_REASONS[status[i]]}"] += 1
                else:
                    opened.append(i)
            if opened:
                self._opened(key, tun, opened, runs, buf, lengths, now, sink)

    def _opened(self, key: str, tun: Any, opened: list[int],
                runs: list[tuple[int, tuple[bytes, dict[str, Any], tuple[str, int]]]], buf: bytearray,
                lengths: Lengths, now: float, sink: BatchSink) -> None:
        gw = self.gw
        rx = self.rx
        peer = gw._sessions[key]
        confirmed = tun.session is peer.next
        data = [i for i in opened if lengths[i]]
        out = peer.received(tun.session, now, time.time(), keepalive=not data)
        if confirmed:  # the initiator used the session we answered: it is now our current one
            gw._forget_dropped(key)
            gw._session_ready(key)
        if out.initiation is not None:
            gw._reply(key, out.initiation)
        gw._account(key, "rx", sum(lengths[i] for i in opened), gw.last_rx, packets=len(opened), at=now)
        if len(data) < len(opened):
            gw.counters["keepalives_received"] += len(opened) - len(data)
        if not data:
            return
        # Acks: every data message counts on its arrival path; the first of each run of one path goes
        # through ``_send_ack`` (which acks it when one is due), the rest are only counted. An ack that
        # falls due within the microseconds of one batch waits for the next interval.
        counters = rx.counters
        run_at = -1
        route: tuple[str, bytes, tuple[str, int]] | None = None
        on_data = gw._acks.on_data
        for i in data:
            if run_at + 1 < len(runs) and runs[run_at + 1][0] <= i:
                while run_at + 1 < len(runs) and runs[run_at + 1][0] <= i:
                    run_at += 1
                raw, rec, underlay = runs[run_at][1]
                route = (key, raw[rec["path_off"]: rec["path_off"] + rec["path_len"]], underlay)
                gw._send_ack(key, tun, counters[i], runs[run_at][1], now)
            else:
                assert route is not None
                on_data(route, counters[i], now)
        gw.counters["frames_received"] += len(data)
        sink(gw.peers[key].ia, buf, self.stride, lengths, rx)
