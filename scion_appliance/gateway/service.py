"""The gateway service: one trio task group carrying datagrams to peer appliances over SCION.

Rules kept here:
- One UDP underlay socket; receive is batched (recvmmsg) and parsed by the C codec in one call per batch.
  While an IP tunnel runs threaded (``attach_rx``), a C thread reads the socket instead and carries the
  data of confirmed sessions to the TUN device itself (``gateway.rx_thread``); this loop then runs the
  Python path on what the thread hands up. Every Python-side open holds the thread's lock (``_rx_guard``).
  The border router of the same appliance hands its deliveries in already parsed (``receive_parsed``:
  the same code after the parse, no socket hop, no second parse).
- Sessions come only from a fresh Noise IK handshake (``tunnel.handshake``); keys live in libsodium
  guarded memory (``_fast.aead.AeadKey``) and are wiped when replaced. Every received data message is
  replay-checked before it is opened and committed to the window only after it authenticates.
- Key rotation per peer is ``tunnel.peer``'s (current, previous, next): a responder sends on a new
  session only once the initiator used it (the initiator confirms at once with a keepalive, an empty
  data message, which is never delivered); a data message opens only with the session its receiver
  index names, so packets in flight on the previous session still arrive.
- Handshake replay marks: the Handshaker runs on the trio loop; the accepted initiation's mark is written
  to the durable store (``state.StateStore``, a synced write) in a worker thread, and only then is the
  session installed and the response sent, back on the reverse of the path the initiation came on.
  So no response is ever seen for an initiation whose mark a crash could lose.
- The path for each send is the selector's decision over the probed candidates: a path known down is
  never used. SCMP interface-down notices and lost probes move traffic at once. The decision is reused
  for RESELECT_INTERVAL, but never once its path is down or suspect.
- Failover from the data itself: every authenticated data message (types 4, 5) is answered by a sealed
  acknowledgement (type 6, ``MSG_ACK``; layout and rate in ``paths.acks``), at most one per
  ACK_INTERVAL per (peer, arrival path), on the reverse of the path it came on. The sender maps the
  acked counter back to the path it chose (``SendLog``) and feeds that path's quality: liveness, data
  RTT, data loss. A path whose data goes unanswered past its liveness timeout is suspect and traffic
  moves. Before acting on a suspicion the socket is drained once, so a stalled loop is not mistaken
  for a dead path.
- Peers marked ``plain`` (``PeerSpec.plain``) are reference SCION IP gateways: no handshake, no session,
  frames travel without the envelope on a second socket (``gateway.plain_sig``), opened only when some
  peer is plain. ``send`` hands their frames over there; nothing else here changes for them.
- Drops are counted by reason in ``counters``; nothing is dropped silently.
"""

from __future__ import annotations

import array
import hashlib
import ipaddress
import math
import random
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import trio

from scion_appliance import log as _log
from scion_appliance._fast import aead, codec, routerstep, udpio
from scion_appliance._fast.replay import ReplayWindow
from scion_appliance.gateway.datapath import BatchDatapath, BatchSink
from scion_appliance.gateway.plain_sig import PlainSig
from scion_appliance.gateway.rx_thread import RxTarget, RxThread
from scion_appliance.paths.acks import ACK_INTERVAL, AckError, AckResponder, SendLog, decode_ack
from scion_appliance.paths.prober import Prober
from scion_appliance.paths.quality import QualityConfig
from scion_appliance.paths.selection import Candidate, PathSelector, SelectionPolicy
from scion_appliance.paths.source import PathInfo, PathSource
from scion_appliance.scion import packet as scion_packet
from scion_appliance.scion.addr import IA, HostAddr
from scion_appliance.scion.builder import UdpPacketBuilder
from scion_appliance.scion.errors import ScionParseError
from scion_appliance.scion.l4 import UdpDatagram
from scion_appliance.scion.path import EmptyPath, ScionPath
from scion_appliance.scion.scmp import ECHO_REQUEST, Echo
from scion_appliance.tunnel import messages
from scion_appliance.tunnel.cookie import LoadMonitor
from scion_appliance.tunnel.handshake import (
    Accepted,
    CookieChallenge,
    HandshakeError,
    Handshaker,
    HandshakeResult,
    HandshakeTimestampStore,
    MemoryTimestampStore,
    PeerConfig,
)
from scion_appliance.tunnel.peer import Peer
from scion_appliance.tunnel.session import Session
from scion_appliance.tunnel.timers import REJECT_AFTER_TIME

log = _log.get_logger("gateway")

STRIDE = 2048
BATCH = 64
MSG_DATAGRAM = messages.MessageType.DATAGRAM
MSG_ACK = messages.MessageType.ACK
RESELECT_INTERVAL = 0.02  # a path decision is reused this long (seconds) unless its path turns bad
HANDSHAKE_LOAD_THRESHOLD = 128  # handshake messages per second that count as a flood
HANDSHAKE_TIMEOUT = 5.0


class GatewayError(Exception):
    """A send that cannot be done: no session, no usable path. The message says why."""


@dataclass(frozen=True)
class PeerSpec:
    """A peer appliance: where it is in SCION, its static key, and where probes go in its AS."""

    name: str
    ia: IA
    host: HostAddr
    port: int
    public_key: bytes | None  # None only for a plain peer (no session, no key)
    probe_host: HostAddr
    psk: bytes | None = field(default=None, repr=False)
    # A reference SCION IP gateway: plain SIG frames to ``port`` (normally 30056), no envelope, no session.
    plain: bool = False

    def __post_init__(self) -> None:
        if self.public_key is None and not self.plain:
            raise ValueError(f"peer {self.name}: a sealed peer needs its static public key")

    @property
    def static_key(self) -> bytes:
        """The static public key of a sealed peer (the handshake's)."""
        if self.public_key is None:
            raise GatewayError(f"peer {self.name} is plain: it has no static key and no session")
        return self.public_key


@dataclass(frozen=True)
class SessionKeys:
    """What ``Gateway.on_session`` reports when a session is installed: its indexes and BLAKE2b-128
    fingerprints of its two keys (never the keys). Tests use it to name the key behind a wire packet."""

    peer: str
    local_index: int
    remote_index: int
    initiator: bool
    send_fingerprint: bytes
    receive_fingerprint: bytes


def key_fingerprint(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=16, person=b"scion-app keyfp").digest()


class _Tunnel:
    """One session with a peer: keys in guarded memory and the receive replay window."""

    def __init__(self, session: Session, window_bits: int) -> None:
        self.session = session
        self.send = aead.AeadKey(session.send_key)
        self.recv = aead.AeadKey(session.receive_key)
        self.window = ReplayWindow(window_bits)
        self.fingerprints = (key_fingerprint(session.send_key), key_fingerprint(session.receive_key))
        # Python cannot scrub immutable bytes; drop our references so only the guarded copies remain.
        session.send_key = session.receive_key = b""

    def close(self) -> None:
        self.send.close()
        self.recv.close()


class _DeferredMarks:
    """The handshake replay marks as the ``Handshaker`` sees them: the durable store plus marks accepted
    on the trio loop whose synced write has not finished yet.

    A synced RocksDB write takes milliseconds, too long for the loop. The Handshaker records its mark
    here (instantly, so a second copy of the same initiation arriving meanwhile is refused); the gateway
    takes the unsynced marks, writes them to the durable store in a worker thread and only then sends the
    response. So a response is never seen for an initiation whose mark could be lost in a crash."""

    def __init__(self, durable: HandshakeTimestampStore) -> None:
        self.durable = durable
        self._overlay: dict[bytes, bytes] = {}
        self._unsynced: list[tuple[bytes, bytes]] = []

    def get_handshake_timestamp(self, peer_public: bytes) -> bytes | None:
        stored = self.durable.get_handshake_timestamp(peer_public)
        pending = self._overlay.get(bytes(peer_public))
        if stored is None or (pending is not None and pending > stored):
            return pending
        return stored

    def set_handshake_timestamp(self, peer_public: bytes, ts: bytes) -> None:
        old = self._overlay.get(bytes(peer_public))
        if old is None or ts > old:
            self._overlay[bytes(peer_public)] = bytes(ts)
        self._unsynced.append((bytes(peer_public), bytes(ts)))

    def take_unsynced(self) -> list[tuple[bytes, bytes]]:
        out, self._unsynced = self._unsynced, []
        return out

    def synced(self, peer_public: bytes, ts: bytes) -> None:
        """``ts`` is durable: the overlay entry is no longer needed unless a newer one is in flight."""
        if self._overlay.get(peer_public) == ts:
            del self._overlay[peer_public]


class Gateway:
    def __init__(
        self,
        *,
        ia: IA,
        host: HostAddr,
        port: int,
        private_key: bytes,
        peers: list[PeerSpec],
        path_source: PathSource,
        probe_interval: float = 0.1,
        policy: SelectionPolicy | None = None,
        quality: QualityConfig | None = None,
        window_bits: int = 8192,
        store: HandshakeTimestampStore | None = None,
        handshake_load_threshold: int = HANDSHAKE_LOAD_THRESHOLD,
        sig_port: int = 0,
    ) -> None:
        self.ia, self.host, self.port = ia, host, port
        self.peers = {str(p.ia): p for p in peers}
        self.path_source = path_source
        self.window_bits = window_bits
        # ``store`` is the durable home of the handshake replay marks (``state.StateStore`` in the service).
        self._marks = _DeferredMarks(store or MemoryTimestampStore())
        self._store_writer = trio.CapacityLimiter(1)  # one synced write at a time, off the trio loop
        # Under a flood of handshake messages, answer with cookies instead of doing the DH work
        # (WireGuard's rule; our handling is synchronous, so the "backlog" is the last second's count).
        self._load = LoadMonitor(threshold=handshake_load_threshold, hold=1.0)
        self._recent_handshakes: deque[float] = deque()
        self._rng = random.SystemRandom()
        self.handshaker = Handshaker(
            private_key, [PeerConfig(p.static_key, p.psk) for p in peers if not p.plain], self._marks
        )
        # Plain SIG (reference gateway interop): our source port for plain frames, its socket opened
        # only while some peer is plain.
        self.plain_sig = PlainSig(self, sig_port) if sig_port else None
        if any(p.plain for p in peers) and self.plain_sig is None:
            raise ValueError("a plain peer needs a sig_port for its frames")
        q = quality or QualityConfig()
        # Our peers ack data (paths.acks): an answer may lag by up to one ack interval.
        q = replace(q, answer_delay=max(q.answer_delay, ACK_INTERVAL))
        self.prober = Prober(ia, host, port, probe_interval, q)
        self._acks = AckResponder()
        self._acking: set[str] = set()  # peers that have acked our data (on any path)
        self._send_log = SendLog()
        self._ack_routes: dict[tuple[str, bytes, tuple[str, int]], UdpPacketBuilder] = {}
        self._chosen: dict[str, tuple[float, PathInfo]] = {}  # peer ia -> (decided at, path)
        self._rx_drain: _RxBatch | None = None
        self._draining = False
        self._rx_local: _RxBatch | None = None  # packets handed in already parsed (receive_parsed)
        self._local_busy = False
        # The receive worker thread (``rx_thread``) while an IP tunnel runs threaded: it reads the socket.
        self._rx: RxThread | None = None
        self._rx_wait: trio.CancelScope | None = None
        self.selector = PathSelector(policy or SelectionPolicy())
        self.counters: Counter[str] = Counter()
        # Key rotation per peer (current, previous, next: ``tunnel.peer``); the keys of each session are in
        # its _Tunnel, found by the receiver index the peer writes into data messages to us.
        self._sessions = {
            k: Peer(p.static_key, self.handshaker) for k, p in self.peers.items() if not p.plain
        }
        self._by_index: dict[int, tuple[str, _Tunnel]] = {}
        self._ready: dict[str, trio.Event] = {}
        self._builders: dict[tuple[str, str], UdpPacketBuilder] = {}
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[IA, bytes]](1024)
        self._sock: socket.socket | None = None
        self._gro: udpio.GroReader | None = None
        self._nursery: trio.Nursery | None = None
        self._started = time.monotonic()
        self.last_decision: dict[str, str] = {}
        self.failover_log: list[dict[str, Any]] = []
        # Receives (peer ISD-AS, plaintext SIG frame) for every authenticated IP data message.
        self.ip_sink: Callable[[IA, bytes], None] | None = None
        # When set, IP data of live sessions is opened a batch at a time and handed over here instead
        # (``gateway.datapath``); ``ip_sink`` still gets what the batch path leaves to the message path.
        self.ip_batch_sink: BatchSink | None = None
        self.datapath = BatchDatapath(self, BATCH, STRIDE)
        # Told about every installed session (indexes and key fingerprints; tests and audit logs).
        self.on_session: Callable[[SessionKeys], None] | None = None
        # Told (peer ISD-AS) before a peer's sessions rotate and the keys of dropped ones are wiped: a worker
        # thread sealing with one of them moves to the sending session first (``IpTunnel``'s TX worker).
        self.on_rotation: list[Callable[[str], None]] = []
        # Per peer ISD-AS: sealed payload packets/bytes each way, and when we last sent / heard from it.
        self.transfer: dict[str, Counter[str]] = {}
        self.last_tx: dict[str, float] = {}
        self.last_rx: dict[str, float] = {}

    # -- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        family = socket.AF_INET6 if isinstance(self.host, ipaddress.IPv6Address) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        # Bursts (TCP inside the tunnel) outrun one receive batch; a deep buffer keeps them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)  # sendmmsg batches of full frames
        sock.bind((str(self.host), self.port))
        self._sock = sock
        # UDP GRO: a burst of one sender arrives as one message, cut back into datagrams in C.
        self._gro = udpio.GroReader() if udpio.enable_gro(sock) else None
        self._cm = trio.open_nursery()
        self._nursery = await self._cm.__aenter__()
        self._refresh_paths()
        self._nursery.start_soon(self._receive_loop)
        self._nursery.start_soon(self._probe_loop)
        try:
            self._start_plain()
        except BaseException:
            self._nursery.cancel_scope.cancel()
            await self._cm.__aexit__(None, None, None)
            self._sock.close()
            raise
        return self

    def _start_plain(self, peers: list[PeerSpec] | None = None) -> None:
        """Open the plain SIG socket and its receive loop if some peer is plain and it is not open yet."""
        peers = list(self.peers.values()) if peers is None else peers
        if self.plain_sig is None or self.plain_sig.active or not any(p.plain for p in peers):
            return
        assert self._nursery is not None
        try:
            self.plain_sig.open()
        except OSError as e:
            raise GatewayError(
                f"cannot open the plain SIG socket on {self.host} port {self.plain_sig.port}: "
                f"{e.strerror or e}; free the port or change underlay.sig_port"
            ) from None
        self._nursery.start_soon(self.plain_sig.receive_loop)

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        try:
            return await self._cm.__aexit__(t, e, tb)
        finally:  # also when the block raised: keys wiped, the port free for the next gateway
            self.detach_rx(run_pending=False)  # the thread lets go of the keys before they are wiped
            for peer in self._sessions.values():
                peer.expire()
            for _, tun in self._by_index.values():
                tun.close()
            self._by_index.clear()
            if self._sock is not None:
                self._sock.close()
            if self.plain_sig is not None:
                self.plain_sig.close()

    # -- the datagram API ---------------------------------------------------------------------------

    async def send(self, dst_ia: IA | str, payload: bytes, *, msg_type: int = MSG_DATAGRAM) -> dict[str, Any]:
        """Seals ``payload`` for the appliance of ``dst_ia`` and sends it on the selected path.

        ``msg_type`` is ``MSG_DATAGRAM`` for application datagrams (they come out of ``receive``) or
        ``messages.MessageType.DATA`` for SIG frames of IP packets (they go to ``ip_sink``)."""
        t0 = time.perf_counter()
        key = str(dst_ia)
        spec = self.peers.get(key)
        if spec is not None and spec.plain:
            assert self.plain_sig is not None
            await trio.lowlevel.checkpoint()
            return self.plain_sig.send(key, payload, msg_type)
        tun = await self._tunnel(key)
        path = self._choose(key)
        envelope = tun.send.seal(tun.session.remote_index, payload, msg_type=msg_type)
        counter = aead.parse_header(envelope)[2]  # the TX thread may seal with this key too: not send_counter
        self._send_on(path, self._builder(key, path).build(envelope))
        now = time.monotonic()
        self._send_log.record(tun.session.local_index, counter, path.id, now)
        self._data_sent(key, path.id, now)
        self.counters["datagrams_sent"] += 1
        self._account(key, "tx", len(payload), self.last_tx)
        return {
            "packet_id": f"{tun.session.remote_index:08x}-{counter}",
            "path": path.id,
            "elapsed_s": time.perf_counter() - t0,
        }

    def _data_sent(self, key: str, path_id: str, now: float) -> None:
        """Data went out on ``path_id``: start its liveness clock (shorter once the peer is known to ack)."""
        q = self.prober.quality.get(path_id)
        if q is not None:
            q.far_end_acks = key in self._acking
            q.data_sent(now)

    async def receive(self) -> tuple[IA, bytes]:
        """The next datagram from any peer: (its ISD-AS, payload)."""
        return await self._inbox.receive()

    def paths(self, dst_ia: IA | str) -> list[dict[str, Any]]:
        """Every candidate path to ``dst_ia`` with its quality, and which one is active and why."""
        key = str(dst_ia)
        now = time.monotonic()
        active = self.selector.status(key).active
        out = []
        for p in self.path_source.paths(key):
            q = self.prober.quality.get(p.id)
            snap = q.snapshot(now) if q else None
            out.append(
                {
                    "id": p.id,
                    "hops": p.hop_count,
                    "ases": list(p.ases),
                    "active": p.id == active,
                    "state": str(snap.state) if snap else "unknown",
                    "rtt_ms": round(q.rtt * 1000, 3) if q and q.rtt is not None else None,
                    "loss": q.loss if q else None,
                }
            )
        return out

    def reason(self, dst_ia: IA | str) -> str:
        return self.selector.status(str(dst_ia)).reason

    # -- sessions and reconfiguration, for the service layer (control API, SIGHUP) ---------------------

    def _account(self, key: str, direction: str, nbytes: int, when: dict[str, float], *, packets: int = 1,
                 at: float | None = None) -> None:
        """``packets`` messages of ``nbytes`` bytes in all went to or came from ``key`` (``direction`` "tx"
        or "rx"); ``when`` (``last_tx`` or ``last_rx``) moves to ``at`` (default: now), never back (a
        thread's harvest may report a time before the event loop's last message)."""
        t = self.transfer.get(key)
        if t is None:
            t = self.transfer[key] = Counter()
        t[f"{direction}_packets"] += packets
        t[f"{direction}_bytes"] += nbytes
        at = time.monotonic() if at is None else at
        if at > when.get(key, 0.0):  # 0.0: a thread's "never" (monotonic times are positive)
            when[key] = at

    def session(self, dst_ia: IA | str) -> Session | None:
        """The live session's bookkeeping (indexes, age, role) with ``dst_ia``; never its keys."""
        peer = self._sessions.get(str(dst_ia))
        return peer.current if peer is not None else None

    def handshaking(self, dst_ia: IA | str) -> bool:
        return str(dst_ia) in self._ready

    def ensure_session(self, dst_ia: IA | str, *, rekey: bool = False) -> bool:
        """Start a handshake with this peer now unless one is under way, or (without ``rekey``) a
        usable session exists. True if one was started."""
        key = str(dst_ia)
        if key not in self._sessions or key in self._ready or self._nursery is None:
            return False
        if not rekey and self._sessions[key].sending_session(time.monotonic()) is not None:
            return False
        self._start_handshake(key)
        return True

    def set_peers(self, peers: list[PeerSpec]) -> dict[str, list[str]]:
        """Take a reloaded peer list; peers that stay keep their sessions. A removed peer, or one whose
        static key changed, loses its session and its place in the handshake allowlist; any other change
        (endpoint, probe host, pre-shared key) applies from the next packet or handshake."""
        new = {str(p.ia): p for p in peers}
        added = [k for k in new if k not in self.peers]
        removed = [k for k in self.peers if k not in new]
        changed = [k for k in new if k in self.peers and new[k] != self.peers[k]]
        if any(p.plain for p in peers) and self.plain_sig is None:
            raise GatewayError("a plain peer needs a sig_port for its frames; this gateway has none")
        if self._nursery is not None:
            self._start_plain(peers)  # before anything changes: a port in use leaves the old peers
        for key in removed + [
            k for k in changed
            if new[k].public_key != self.peers[k].public_key or new[k].plain != self.peers[k].plain
        ]:
            old = self.peers[key]
            if key in self._sessions:
                self.handshaker.remove_peer(old.static_key)
                pending = self._ready.pop(key, None)
                if pending is not None:
                    pending.set()  # ends that handshake's retry loop and wakes its waiters (they get an error)
                self._sessions[key].stop()
                self._forget_dropped(key)  # wipes the keys of the sessions stop() let go of
                del self._sessions[key]
            self.prober.set_paths(old.ia, old.probe_host, [])
            self.selector.forget(key)
        for bkey in [b for b in self._builders if b[0] in removed or b[0] in changed]:
            del self._builders[bkey]
        self.peers = new
        for k, p in new.items():
            if p.plain:
                continue
            self.handshaker.add_peer(PeerConfig(p.static_key, p.psk))
            if k not in self._sessions:
                self._sessions[k] = Peer(p.static_key, self.handshaker)
        if self.plain_sig is not None:
            self.plain_sig.forget()
        self._refresh_paths()
        return {"added": added, "removed": removed, "changed": changed}

    def paths_changed(self) -> None:
        """The path source holds new paths (or new raw bytes for known ids): probe them, rebuild headers."""
        self._builders.clear()
        if self.plain_sig is not None:
            self.plain_sig.forget()
        self._refresh_paths()

    # -- sessions -----------------------------------------------------------------------------------

    def send_frames(self, dst_ia: IA | str, tx: Any, remote: int, encoder: Any) -> int | None:
        """Batch send (``datapath.BatchDatapath.send_frames``): frames, seals and sends the packets of
        ``tx`` (a ``_fast.pipeline.TxBatch``) marked for ``remote``; None when no session is ready.
        Plain peers always get None: their frames take the per-frame way (``send``, ``plain_sig``)."""
        spec = self.peers.get(str(dst_ia))
        if spec is not None and spec.plain:
            return None
        return self.datapath.send_frames(dst_ia, tx, remote, encoder)

    def _tunnel_now(self, key: str) -> _Tunnel | None:
        """The current sending session's keys, or None (never waits). Starts a rekey when one is due."""
        peer = self._sessions.get(key)
        if peer is None:
            raise GatewayError(f"no peer appliance is configured for {key}")
        now = time.monotonic()
        s = peer.sending_session(now)
        if s is None:
            return None
        if s.needs_rekey(now) and key not in self._ready:
            self._start_handshake(key)
        return self._by_index[s.local_index][1]

    async def _tunnel(self, key: str) -> _Tunnel:
        peer = self._sessions.get(key)
        if peer is None:
            raise GatewayError(f"no peer appliance is configured for {key}")
        now = time.monotonic()
        s = peer.sending_session(now)
        if s is not None:
            if s.needs_rekey(now) and key not in self._ready:
                self._start_handshake(key)
            return self._by_index[s.local_index][1]
        if key not in self._ready:
            self._start_handshake(key)
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            await self._ready[key].wait()
        s = peer.sending_session(time.monotonic())
        if s is None:
            raise GatewayError(
                f"no session with {key}: the handshake got no answer within {HANDSHAKE_TIMEOUT} s"
            )
        return self._by_index[s.local_index][1]

    def _start_handshake(self, key: str) -> None:
        self._ready[key] = trio.Event()
        assert self._nursery is not None
        self._nursery.start_soon(self._handshake, key)

    async def _handshake(self, key: str) -> None:
        """Send initiations (backing off) until this peer has a new sending session."""
        peer = self.peers[key]
        event = self._ready[key]
        delay = 0.2
        if self._sessions[key].next is not None:
            # We just answered the peer's initiation; its confirming packet normally makes ours needless.
            with trio.move_on_after(delay):
                await event.wait()
        while not event.is_set():
            try:
                path = self._choose(key)
            except GatewayError:
                with trio.move_on_after(delay):  # the peer's own initiation may still get us a session
                    await event.wait()
                continue
            msg = self.handshaker.create_initiation(
                peer.static_key, now=time.monotonic(), wall_time=time.time()
            )
            self._send_on(path, self._builder(key, path).build(msg))
            self.counters["handshake_initiations_sent"] += 1
            # Jitter (up to a third of the wait, as WireGuard's REKEY_TIMEOUT_JITTER) keeps two peers
            # that restarted together from retrying in lockstep.
            with trio.move_on_after(delay + self._rng.uniform(0, delay / 3)):
                await event.wait()
            delay = min(delay * 2, 2.0)
        self._ready.pop(key, None)

    def _install(self, result: HandshakeResult, now: float) -> str | None:
        """A completed handshake (either role) becomes a session of its peer (``tunnel.peer`` rotation)."""
        key = next(
            (k for k, p in self.peers.items() if p.public_key == result.peer_public and k in self._sessions), None
        )
        if key is None:
            return None
        peer = self._sessions[key]
        out = peer.established(result, now, time.time())
        session = peer.current if result.initiator else peer.next
        assert session is not None and session.local_index == result.local_index
        tun = _Tunnel(session, self.window_bits)
        self._by_index[session.local_index] = (key, tun)
        self._forget_dropped(key)
        self.counters["handshakes_completed"] += 1
        if self.on_session is not None:
            self.on_session(
                SessionKeys(
                    key, session.local_index, session.remote_index, result.initiator, *tun.fingerprints
                )
            )
        if result.initiator:
            self._session_ready(key)
        if out.keepalive:
            self._send_keepalive(key)
        return key

    def _session_ready(self, key: str) -> None:
        """The peer has a new sending session: wake senders and end our handshake attempts; the receive
        thread (if any) opens its data from now on."""
        ev = self._ready.get(key)
        if ev is not None:
            ev.set()
        if self._rx is not None:
            self._rx.arm_peer(key)

    def _forget_dropped(self, key: str) -> None:
        """Wipe the keys of sessions the rotation let go of (their indexes are freed already)."""
        for hook in self.on_rotation:
            hook(key)
        live = {id(s) for s in self._sessions[key].sessions()}
        for index, (k, tun) in list(self._by_index.items()):
            if k == key and id(tun.session) not in live:
                del self._by_index[index]
                if self._rx is not None:
                    self._rx.disarm(index)  # the thread lets go of the keys first
                tun.close()

    def _send_keepalive(self, key: str) -> None:
        """An empty data message on the current session: it confirms a new session to its responder."""
        s = self._sessions[key].sending_session(time.monotonic())
        if s is None:
            return
        try:
            path = self._choose(key)
        except GatewayError:
            self.counters["drop_no_path_for_keepalive"] += 1
            return
        tun = self._by_index[s.local_index][1]
        envelope = tun.send.seal(s.remote_index, b"", msg_type=messages.MessageType.DATA)
        self._send_on(path, self._builder(key, path).build(envelope))
        self.counters["keepalives_sent"] += 1

    # -- paths --------------------------------------------------------------------------------------

    def _refresh_paths(self) -> None:
        self._chosen.clear()
        for key, peer in self.peers.items():
            self.prober.set_paths(peer.ia, peer.probe_host, self.path_source.paths(key))

    def _choose(self, key: str) -> PathInfo:
        now = time.monotonic()
        hit = self._chosen.get(key)
        if hit is not None:
            q = self.prober.quality.get(hit[1].id)
            if q is not None and not q.is_down:
                if not q.suspect(now):
                    if now - hit[0] < RESELECT_INTERVAL:
                        return hit[1]
                elif self._drain_receive():
                    now = time.monotonic()  # acks that were waiting in the socket may clear the suspicion
        cands = [
            Candidate(p, self.prober.quality[p.id].snapshot(now))
            for p in self.path_source.paths(key)
            if p.id in self.prober.quality
        ]
        decision = self.selector.choose_for_batch(key, cands, now)
        if decision.changed:
            self.failover_log.append(
                {
                    "t": now,
                    "dst": key,
                    "path": decision.path.id if decision.path else None,
                    "reason": decision.reason,
                    "failover": decision.failover,
                }
            )
            if decision.failover:
                self.counters["failovers"] += 1
        self.last_decision[key] = decision.reason
        if decision.path is None:
            self._chosen.pop(key, None)
            raise GatewayError(f"no usable path to {key}: {decision.reason}")
        if decision.exploring or self.selector.policy.exploration_probability > 0:
            self._chosen.pop(key, None)  # every batch draws again
        else:
            self._chosen[key] = (now, decision.path)
        return decision.path

    def _builder(self, key: str, path: PathInfo) -> UdpPacketBuilder:
        b = self._builders.get((key, path.id))
        if b is None:
            peer = self.peers[key]
            scion_path = ScionPath.from_bytes(path.raw) if path.raw else EmptyPath()
            b = UdpPacketBuilder(self.ia, self.host, self.port, peer.ia, peer.host, peer.port, scion_path)
            self._builders[(key, path.id)] = b
        return b

    def _send_on(self, path: PathInfo, pkt: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(pkt, path.next_hop)
        except BlockingIOError:
            self.counters["drop_send_would_block"] += 1

    def expire_idle(self, now: float) -> list[str]:
        """WireGuard's zero-keys rule: a peer that derived no new session for 3 x REJECT_AFTER_TIME
        (540 s) has every session wiped (receive lanes disarmed first, keys zeroed); its next send
        handshakes again. Returns the peers whose sessions expired."""
        expired = []
        for key, peer in self._sessions.items():
            sessions = peer.sessions()
            if sessions and now - max(s.created for s in sessions) >= 3 * REJECT_AFTER_TIME:
                peer.expire()
                self._forget_dropped(key)
                self.counters["sessions_expired"] += 1
                expired.append(key)
        if expired:
            log.info("gateway.sessions_expired", peers=expired,
                     note="no new session for 540 s: keys wiped; the next packet handshakes again")
        return expired

    async def _probe_loop(self) -> None:
        next_expiry = time.monotonic() + 1.0
        while True:
            now = time.monotonic()
            if now >= next_expiry:
                next_expiry = now + 1.0
                self.expire_idle(now)
            self.prober.tick(now)
            for path, pkt in self.prober.due(now):
                self._send_on(path, pkt)
                self.counters["probes_sent"] += 1
            for key in self.peers:
                try:
                    self._choose(key)  # re-evaluate so failovers happen on probe results, not only on sends
                except GatewayError:
                    pass
            deadline = self.prober.next_deadline()
            await trio.sleep(
                max(0.001, min(deadline - time.monotonic(), 0.05)) if math.isfinite(deadline) else 0.05
            )

    # -- receive ------------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self._sock is not None
        rx = _RxBatch()
        while True:
            thread = self._rx
            with trio.CancelScope() as scope:  # cancelled when the receive thread starts or stops
                self._rx_wait = scope
                if thread is not None:  # the thread reads the socket; we run what it hands up
                    with trio.move_on_after(max(0.0, thread.next_harvest - time.monotonic())):
                        await trio.lowlevel.wait_readable(thread.wake_fd)
                elif self._gro is None or not self._gro.pending:  # datagrams of a cut message may wait
                    await trio.lowlevel.wait_readable(self._sock)
            self._rx_wait = None
            if scope.cancelled_caught:
                continue
            if thread is not None:
                thread.service(time.monotonic())
            else:
                self._receive_batch(rx)

    def attach_rx(self, target: RxTarget) -> bool:
        """The IP tunnel runs threaded: a C thread reads the socket and carries data of confirmed
        sessions to ``target``'s TUN device (``rx_thread``). A thread for another target (a tunnel being
        replaced) stops first. False when the gateway is not running."""
        if self._sock is None or self._nursery is None:
            return False
        self.detach_rx()
        if self._rx_drain is None:
            self._rx_drain = _RxBatch()
        while self._gro is not None and self._gro.pending:  # cut datagrams waiting in the Python reader
            self._receive_batch(self._rx_drain)
        try:
            thread = RxThread(self, target, BATCH, STRIDE)
            thread.start()
        except OSError as e:  # out of descriptors, memory or threads: the event loop still does the job
            log.warning("gateway.rx_thread_unavailable", error=str(e), note="inbound stays in the event loop")
            return False
        self._rx = thread
        if self._rx_wait is not None:
            self._rx_wait.cancel()
        return True

    def detach_rx(self, target: RxTarget | None = None, *, run_pending: bool = True) -> None:
        """Stops the receive thread (joined; its lanes disarmed, counters taken); the event loop reads the
        socket again. With ``target``, only the thread attached for it. ``run_pending``: what the thread
        handed up last still runs."""
        thread = self._rx
        if thread is None or (target is not None and thread.target is not target):
            return
        self._rx = None
        if self._rx_wait is not None:
            self._rx_wait.cancel()
        trio.lowlevel.notify_closing(thread.wake_fd)
        thread.stop(run_pending=run_pending)

    @property
    def receive_thread_running(self) -> bool:
        """True while the receive worker thread carries the inbound data path (not threads off, not failed)."""
        return self._rx is not None and self._rx.worker.running

    def harvest_rx(self) -> None:
        """Brings the receive thread's counters (transfer, last_rx, drops) up to date now."""
        if self._rx is not None:
            self._rx.harvest(time.monotonic())

    def _rx_guard(self) -> AbstractContextManager[Any]:
        """Held around every Python-side open: with a receive thread, its lock (the replay windows and
        deframers of armed sessions are shared with it)."""
        return self._rx.locked() if self._rx is not None else nullcontext()

    def _receive_batch(self, rx: _RxBatch) -> int:
        """Receive and handle one batch if any is waiting (never blocks); returns its size."""
        assert self._sock is not None
        buf, lengths, addrs, recs = rx.buf, rx.lengths, rx.addrs, rx.recs
        if self._gro is not None:
            n = self._gro.recv_batch(self._sock.fileno(), buf, STRIDE, lengths, addrs, BATCH)
        else:
            n = udpio.recv_batch(self._sock.fileno(), buf, STRIDE, lengths, addrs, BATCH)
        if n <= 0:
            return 0
        recs.parse_batch(buf, STRIDE, lengths, n)
        self.receive_parsed(buf, STRIDE, lengths, addrs, recs, range(n), time.monotonic())
        return n

    def receive_parsed(
        self,
        buf: bytearray,
        stride: int,
        lengths: Any,
        addrs: bytearray,
        recs: codec.ScionRecords,
        slots: range | memoryview,
        now: float,
    ) -> None:
        """Handles received packets that are parsed already: slot i of ``buf`` (``stride`` apart) for
        each i of ``slots``, with ``lengths`` ('I'), ``addrs`` (the senders, ``udpio`` records) and
        ``recs`` (their parse records). The socket path hands in its whole batch (``range(n)``); the
        border router of the same appliance the slots it delivers here (``Dataplane.local_sink``),
        which are first copied into the gateway's own batch layout: copied, not parsed again."""
        if isinstance(slots, range) and slots.start == 0 and slots.step == 1 and stride == STRIDE:
            self._receive_parsed(buf, lengths, addrs, recs, len(slots), now)
            return
        rx = self._rx_local if self._rx_local is not None and not self._local_busy else _RxBatch()
        self._rx_local, self._local_busy = rx, True
        try:
            sel = memoryview(array.array("I", slots)) if isinstance(slots, range) else slots
            for k in range(0, len(sel), BATCH):
                count = min(BATCH, len(sel) - k)
                n = routerstep.take_slots(
                    buf, stride, lengths, addrs, recs, sel[k : k + count], count,
                    rx.buf, STRIDE, rx.lengths, rx.addrs, rx.recs,
                )  # fmt: skip
                if n < count:
                    self.counters["drop_oversize"] += count - n
                self._receive_parsed(rx.buf, rx.lengths, rx.addrs, rx.recs, n, now)
        finally:
            self._local_busy = False

    def _receive_parsed(
        self, buf: bytearray, lengths: Any, addrs: bytearray, recs: codec.ScionRecords, n: int, now: float
    ) -> None:
        handled = self.datapath.receive(buf, lengths, addrs, recs, n, now)
        for i in range(n):
            if i in handled:
                continue
            status = recs.status(i)
            if status:
                self.counters[f"drop_{codec.REASONS[status]}"] += 1
                continue
            raw = bytes(buf[i * STRIDE : i * STRIDE + lengths[i]])
            rec = recs.get(i)
            self._handle(raw, rec, udpio.addr_bytes(addrs, i), udpio.addr_get(addrs, i), now)

    def _drain_receive(self) -> bool:
        """Handle what waits in the socket now (a few batches at most); True if anything did.

        Runs from inside sends and decisions, so it has its own buffers and never nests."""
        if self._rx is not None:
            return self._rx.drain()
        if self._draining or self._sock is None:
            return False
        if self._rx_drain is None:
            self._rx_drain = _RxBatch()
        self._draining = True
        try:
            got = 0
            for _ in range(4):
                n = self._receive_batch(self._rx_drain)
                got += n
                if n < BATCH:
                    break
        finally:
            self._draining = False
        if got:
            self.counters["drained_on_suspicion"] += 1
        return got > 0

    def _handle(
        self, raw: bytes, rec: dict[str, Any], source: bytes, underlay: tuple[str, int], now: float
    ) -> None:
        if rec["l4_proto"] == 202:
            try:
                pkt = scion_packet.from_record(raw, rec)
            except ScionParseError:
                self.counters["drop_bad_scmp"] += 1
                return
            self.counters["scmp_received"] += 1
            if rec["scmp_type"] == ECHO_REQUEST and pkt.dst_host == self.host:
                self._answer_echo(pkt, underlay)
            else:
                self.prober.on_packet(pkt, now)
            return
        if rec["l4_proto"] != 17 or rec["dst_port"] != self.port:
            self.counters["drop_not_for_us"] += 1
            return
        payload = raw[rec["l4_off"] + 8 : rec["l4_off"] + rec["l4_len"]]
        if not payload:
            self.counters["drop_empty"] += 1
            return
        src_ia = IA.from_int(rec["src_ia"])
        kind = payload[0]
        try:
            if kind == messages.MessageType.INITIATION:
                self._on_initiation(payload, source, now, src_ia, (raw, rec, underlay))
            elif kind == messages.MessageType.RESPONSE:
                got = self.handshaker.handle_response(
                    payload, source=source, now=now, under_load=self._under_load(now)
                )
                if isinstance(got, Accepted):
                    self._install(got.result, now)
            elif kind == messages.MessageType.COOKIE_REPLY:
                self.handshaker.handle_cookie_reply(payload, now=now)
            elif kind in (messages.MessageType.DATA, MSG_DATAGRAM, MSG_ACK):
                self._on_data(payload, kind, src_ia, now, (raw, rec, underlay))
            else:
                self.counters["drop_unknown_message_type"] += 1
        except HandshakeError as e:
            self.counters[f"drop_{e.reason.value}"] += 1  # the reason names itself: drop_handshake_replay

    def _answer_echo(self, pkt: scion_packet.ScionPacket, underlay: tuple[str, int]) -> None:
        """Echo replies go back on the reversed path to the underlay hop the request came from."""
        assert isinstance(pkt.l4, Echo) and self._sock is not None
        path = pkt.path.reverse() if isinstance(pkt.path, ScionPath) else pkt.path
        reply = scion_packet.ScionPacket(
            dst_ia=pkt.src_ia,
            src_ia=self.ia,
            dst_host=pkt.src_host,
            src_host=self.host,
            l4=Echo.new(pkt.l4.identifier, pkt.l4.sequence, pkt.l4.data, reply=True),
            path=path,
        ).with_checksum()
        try:
            self._sock.sendto(reply.serialize(), underlay)
            self.counters["echo_replies_sent"] += 1
        except BlockingIOError:
            self.counters["drop_send_would_block"] += 1

    def _under_load(self, now: float) -> bool:
        """Count one handshake message; True while the last second held ``threshold`` or more."""
        recent = self._recent_handshakes
        recent.append(now)
        while recent and now - recent[0] > 1.0:
            recent.popleft()
        return self._load.under_load(len(recent), now)

    def _on_initiation(
        self,
        payload: bytes,
        source: bytes,
        now: float,
        src_ia: IA,
        arrival: tuple[bytes, dict[str, Any], tuple[str, int]],
    ) -> None:
        got = self.handshaker.handle_initiation(
            payload, source=source, now=now, under_load=self._under_load(now)
        )
        if isinstance(got, CookieChallenge):
            self.counters["handshake_cookie_replies_sent"] += 1
            self._reply_back(str(src_ia), got.reply, arrival)
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._answer_initiation, got, self._marks.take_unsynced(), arrival)

    async def _answer_initiation(
        self,
        got: Accepted,
        marks: list[tuple[bytes, bytes]],
        arrival: tuple[bytes, dict[str, Any], tuple[str, int]],
    ) -> None:
        """Make the initiation's replay mark durable (in a worker thread), then install and answer."""
        try:
            for peer_public, ts in marks:
                await trio.to_thread.run_sync(
                    self._marks.durable.set_handshake_timestamp, peer_public, ts, limiter=self._store_writer
                )
                self._marks.synced(peer_public, ts)
        except Exception:  # RocksDB raises plain Exception; no answer without a durable mark
            self.counters["drop_handshake_store_failed"] += 1
            self.handshaker.index_table.free(got.result.local_index)
            return
        key = self._install(got.result, time.monotonic())
        if key is None:
            self.counters["drop_handshake_unknown_peer"] += 1
            return
        assert got.reply is not None
        self._reply_back(key, got.reply, arrival)

    def _reply_back(
        self, key: str, msg: bytes, arrival: tuple[bytes, dict[str, Any], tuple[str, int]]
    ) -> None:
        """A handshake answer goes back the way the message came (reversed path, to the underlay hop it
        came from), as an echo reply does: that path just worked, whatever our probes think of it (after
        the peer restarts, our probes may still call every path down)."""
        raw, rec, underlay = arrival
        try:
            pkt = scion_packet.from_record(raw, rec)
        except ScionParseError:
            self._reply(key, msg)
            return
        assert isinstance(pkt.l4, UdpDatagram) and self._sock is not None
        path = pkt.path.reverse() if isinstance(pkt.path, ScionPath) else pkt.path
        builder = UdpPacketBuilder(
            self.ia, self.host, self.port, pkt.src_ia, pkt.src_host, pkt.l4.src_port, path
        )
        try:
            self._sock.sendto(builder.build(msg), underlay)
            self.counters["handshake_replies_sent"] += 1
        except BlockingIOError:
            self.counters["drop_send_would_block"] += 1

    def _reply(self, key: str, reply: bytes) -> None:
        try:
            path = self._choose(key)
        except GatewayError:
            self.counters["drop_no_path_for_reply"] += 1
            return
        self._send_on(path, self._builder(key, path).build(reply))

    def _on_data(
        self,
        payload: bytes,
        kind: int,
        src_ia: IA,
        now: float,
        arrival: tuple[bytes, dict[str, Any], tuple[str, int]] | None = None,
    ) -> None:
        """An authenticated data message or ack; ``arrival`` (packet, record, underlay source) is where
        the ack for it goes."""
        try:
            _, receiver, _ = aead.parse_header(payload)
        except aead.EnvelopeError as e:
            self.counters[f"drop_{e.reason_name}"] += 1
            return
        entry = self._by_index.get(receiver)
        if entry is None:
            self.counters["drop_unknown_receiver"] += 1
            return
        key, tun = entry
        if not tun.session.can_receive(now):
            self.counters["drop_session_expired"] += 1
            return
        try:
            with self._rx_guard():
                counter, plaintext = tun.recv.open(payload, receiver=receiver, window=tun.window, msg_type=kind)
        except aead.EnvelopeError as e:
            self.counters[f"drop_{e.reason_name}"] += 1
            return
        peer = self._sessions[key]
        confirmed = tun.session is peer.next
        out = peer.received(tun.session, now, time.time(), keepalive=not plaintext or kind == MSG_ACK)
        if confirmed:  # the initiator used the session we answered: it is now our current one
            self._forget_dropped(key)
            self._session_ready(key)
        if out.initiation is not None:
            self._reply(key, out.initiation)
        # Keepalives count too: last_rx is the peer's proof of life for the control status.
        self._account(key, "rx", len(plaintext), self.last_rx)
        if not plaintext:
            self.counters["keepalives_received"] += 1
            return
        if kind == MSG_ACK:
            self._on_ack(key, tun, plaintext, now)
            return
        if arrival is not None:
            self._send_ack(key, tun, counter, arrival, now)
        if kind == messages.MessageType.DATA:
            self.counters["frames_received"] += 1
            if self.ip_sink is None:
                self.counters["drop_no_ip_sink"] += 1
            else:
                self.ip_sink(self.peers[key].ia, plaintext)
            return
        self.counters["datagrams_received"] += 1
        try:
            self._inbox_send.send_nowait((self.peers[key].ia, plaintext))
        except trio.WouldBlock:
            self.counters["drop_inbox_full"] += 1

    # -- acknowledgements (paths.acks) ----------------------------------------------------------------

    def _send_ack(
        self,
        key: str,
        tun: _Tunnel,
        counter: int,
        arrival: tuple[bytes, dict[str, Any], tuple[str, int]],
        now: float,
    ) -> None:
        raw, rec, underlay = arrival
        route = (key, raw[rec["path_off"] : rec["path_off"] + rec["path_len"]], underlay)
        plain = self._acks.on_data(route, counter, now)
        if plain is not None:
            self._ack_send(key, tun, plain, arrival)

    def _ack_send(
        self, key: str, tun: _Tunnel, plain: bytes, arrival: tuple[bytes, dict[str, Any], tuple[str, int]]
    ) -> None:
        """Seals the ack ``plain`` and sends it back the way ``arrival`` came (the receive thread's "ack
        due" records come here too)."""
        raw, rec, underlay = arrival
        if self._sock is None:
            return
        route = (key, raw[rec["path_off"] : rec["path_off"] + rec["path_len"]], underlay)
        builder = self._ack_routes.get(route)
        if builder is None:
            try:
                pkt = scion_packet.from_record(raw, rec)
            except ScionParseError:
                self.counters["drop_ack_unroutable"] += 1
                return
            if not isinstance(pkt.l4, UdpDatagram):
                return
            path = pkt.path.reverse() if isinstance(pkt.path, ScionPath) else pkt.path
            builder = UdpPacketBuilder(
                self.ia, self.host, self.port, pkt.src_ia, pkt.src_host, pkt.l4.src_port, path
            )
            if len(self._ack_routes) >= 1024:
                self._ack_routes.clear()
            self._ack_routes[route] = builder
        envelope = tun.send.seal(tun.session.remote_index, plain, msg_type=MSG_ACK)
        try:
            self._sock.sendto(builder.build(envelope), underlay)
            self.counters["acks_sent"] += 1
        except BlockingIOError:
            self.counters["drop_send_would_block"] += 1

    def _on_ack(self, key: str, tun: _Tunnel, plaintext: bytes, now: float) -> None:
        try:
            counter, received = decode_ack(plaintext)
        except AckError:
            self.counters["drop_bad_ack"] += 1
            return
        self.counters["acks_received"] += 1
        self._acking.add(key)
        sent = self._send_log.lookup(tun.session.local_index, counter)
        if sent is None:
            self.counters["acks_unmatched"] += 1
            return
        q = self.prober.quality.get(sent.path_id)
        if q is not None:
            q.data_acked(now, sent.seq, received, now - sent.at)


class _RxBatch:
    """Buffers for one receive batch: slots, lengths, source addresses, parsed records."""

    def __init__(self) -> None:
        self.buf = bytearray(STRIDE * BATCH)
        self.lengths = array.array("I", bytes(4 * BATCH))
        self.addrs = udpio.new_addrs(BATCH)
        self.recs = codec.ScionRecords(BATCH)
