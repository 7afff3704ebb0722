"""Plain SIG mode: SCION IP Gateway frames without the sealed envelope, for the reference gateway.

scionproto's gateway carries its frames (``scion.sig_frame``) as the bare UDP payload of SCION/UDP
packets to its data port 30056. A peer configured ``plain = true`` is such a gateway: for it, frames go
out from our ``sig_port`` to the peer's port (30056 unless its ``address`` names another) on the path
the selector chose for that peer, as sealed data would; probing and failover work the same. What
arrives on ``sig_port`` from the ISD-AS of a plain peer is a frame of that peer and goes to the
gateway's ``ip_sink`` (``IpTunnel.deliver``: deframing and the traffic policy's source check).

Rules kept here:
- Plain mode gives up confidentiality, authenticity and replay protection: anyone who can put a packet
  with a plain peer's source ISD-AS on the path can inject IP packets (limited to that peer's prefixes by
  the source check). It exists for interop with the reference gateway only; sealed peers never use it.
- The second underlay socket is opened only when some peer is plain; the sealed port and its hot path
  (``Gateway._receive_batch``, ``gateway.datapath``) never see plain frames.
- Only IP frames (``MessageType.DATA``) travel plain; datagrams and empty keepalives have no meaning to
  the reference gateway and are refused with a ``GatewayError``.
- A packet on ``sig_port`` from any ISD-AS that is not a plain peer is dropped and counted
  (``drop_plain_unknown_peer``); SCMP arriving here (errors about our plain packets) goes to the
  gateway's SCMP handling, so an interface-down notice still moves traffic. Every drop is counted.
"""

from __future__ import annotations

import array
import ipaddress
import socket
import time
from typing import TYPE_CHECKING, Any

import trio

from scion_appliance._fast import codec, udpio
from scion_appliance.scion.addr import IA
from scion_appliance.scion.builder import UdpPacketBuilder
from scion_appliance.scion.path import EmptyPath, ScionPath
from scion_appliance.tunnel import messages

if TYPE_CHECKING:
    from scion_appliance.gateway.service import Gateway, PeerSpec
    from scion_appliance.paths.source import PathInfo

REFERENCE_SIG_PORT = 30056  # scionproto gateway's data port (gateway/dataplane, "data_addr" default)
STRIDE = 2048
BATCH = 32
DATA = int(messages.MessageType.DATA)
SCMP = 202
UDP = 17


class PlainSig:
    """The plain-frame side of one ``Gateway``: a socket on ``port`` and the send/receive of frames."""

    def __init__(self, gateway: Gateway, port: int) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"plain SIG port {port} out of range 1..65535")
        self.gw = gateway
        self.port = port
        self.sock: socket.socket | None = None
        self._builders: dict[tuple[str, str], tuple[PeerSpec, UdpPacketBuilder]] = {}
        self._buf = bytearray(STRIDE * BATCH)
        self._lengths = array.array("I", bytes(4 * BATCH))
        self._addrs = udpio.new_addrs(BATCH)
        self._recs = codec.ScionRecords(BATCH)

    @property
    def active(self) -> bool:
        return self.sock is not None

    def open(self) -> None:
        """Bind the plain socket on the gateway's host (idempotent)."""
        if self.sock is not None:
            return
        family = socket.AF_INET6 if isinstance(self.gw.host, ipaddress.IPv6Address) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((str(self.gw.host), self.port))
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def forget(self) -> None:
        """Peers or paths changed: rebuild headers from the current specs on the next send."""
        self._builders.clear()

    # -- send -----------------------------------------------------------------------------------------

    def _builder(self, key: str, path: PathInfo) -> UdpPacketBuilder:
        peer = self.gw.peers[key]
        hit = self._builders.get((key, path.id))
        if hit is None or hit[0] is not peer:
            scion_path = ScionPath.from_bytes(path.raw) if path.raw else EmptyPath()
            b = UdpPacketBuilder(self.gw.ia, self.gw.host, self.port, peer.ia, peer.host, peer.port, scion_path)
            hit = self._builders[(key, path.id)] = (peer, b)
        return hit[1]

    def send(self, key: str, payload: bytes, msg_type: int) -> dict[str, Any]:
        """Sends one SIG frame to plain peer ``key`` on the selected path; raises GatewayError when that
        cannot be done (no path, not an IP frame, plain socket not open)."""
        from scion_appliance.gateway.service import GatewayError

        if msg_type != DATA or not payload:
            raise GatewayError(
                f"{key} is a plain SIG peer (the reference gateway): only non-empty IP frames can go to it"
            )
        if self.sock is None:
            raise GatewayError(f"no plain SIG socket is open for {key} (underlay.sig_port is 0?)")
        t0 = time.perf_counter()
        gw = self.gw
        path = gw._choose(key)
        pkt = self._builder(key, path).build(payload)
        peer = gw.peers[key]
        # Inside our own AS there is no router: the underlay hop is the peer itself, at its SIG port.
        dest = path.next_hop if path.raw else (str(peer.host), peer.port)
        try:
            self.sock.sendto(pkt, dest)
        except BlockingIOError:
            gw.counters["drop_send_would_block"] += 1
            return {"packet_id": None, "path": path.id, "elapsed_s": time.perf_counter() - t0}
        gw._data_sent(key, path.id, time.monotonic())
        gw.counters["plain_frames_sent"] += 1
        gw._account(key, "tx", len(payload), gw.last_tx)
        return {"packet_id": None, "path": path.id, "elapsed_s": time.perf_counter() - t0}

    # -- receive --------------------------------------------------------------------------------------

    async def receive_loop(self) -> None:
        assert self.sock is not None
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            while self.sock is sock and self.receive_batch() == BATCH:
                await trio.lowlevel.checkpoint()
            if self.sock is not sock:
                return

    def receive_batch(self) -> int:
        """Handle one waiting batch (never blocks); returns its size."""
        if self.sock is None:
            return 0
        buf, lengths, addrs, recs = self._buf, self._lengths, self._addrs, self._recs
        n = udpio.recv_batch(self.sock.fileno(), buf, STRIDE, lengths, addrs, BATCH)
        if n <= 0:
            return 0
        recs.parse_batch(buf, STRIDE, lengths, n)
        now = time.monotonic()
        gw = self.gw
        for i in range(n):
            status = recs.status(i)
            if status:
                gw.counters[f"drop_{codec.REASONS[status]}"] += 1
                continue
            rec = recs.get(i)
            raw = bytes(buf[i * STRIDE : i * STRIDE + lengths[i]])
            if rec["l4_proto"] == SCMP:
                gw._handle(raw, rec, udpio.addr_bytes(addrs, i), udpio.addr_get(addrs, i), now)
                continue
            if rec["l4_proto"] != UDP or rec["dst_port"] != self.port:
                gw.counters["drop_not_for_us"] += 1
                continue
            key = str(IA.from_int(rec["src_ia"]))
            peer = gw.peers.get(key)
            if peer is None or not peer.plain:
                gw.counters["drop_plain_unknown_peer"] += 1
                continue
            frame = raw[rec["l4_off"] + 8 : rec["l4_off"] + rec["l4_len"]]
            if not frame:
                gw.counters["drop_empty"] += 1
                continue
            gw._account(key, "rx", len(frame), gw.last_rx)
            gw.counters["plain_frames_received"] += 1
            if gw.ip_sink is None:
                gw.counters["drop_no_ip_sink"] += 1
            else:
                gw.ip_sink(peer.ia, frame)
        return n
