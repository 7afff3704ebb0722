"""One AS's border router over batches, sans-IO: received batches in, datagrams to send out.

Rules kept here:
- The caller owns sockets and time. For each socket (``link``: 0 is the internal socket, else the
  external interface id) it receives into ``rx(link)`` (a slot batch for ``udpio.recv_batch``) and calls
  ``process(link, n, now)``; the returned ``Out`` items are sent in order, before the next receive
  (``SlotSend`` points into the batch's buffer: nothing is copied on the forwarding path).
- Path processing of a whole batch is one call into C (``routerstep``: ingress then egress processing
  for transit, egress for packets from the internal side), which also groups the packets by
  (action, egress). Python runs once per group; per packet only for local delivery (each needs its own
  destination), for drops with an SCMP answer, and for impaired links.
- Local delivery follows scionproto's dispatcherless rule (router/dataplane.go ``addEndhostPort``):
  UDP to (dst host, UDP dst port); SCMP echo/traceroute replies to (dst host, identifier); SCMP errors
  to (dst host, the quoted packet's UDP source port, or its echo/traceroute identifier); anything
  else to (dst host, 30041); ports outside ``dispatched_ports`` go to 30041.
- Packets addressed to the router itself (dst host = its internal IP) are answered, not delivered:
  echo request -> echo reply. Traceroute requests are answered at router alerts. Errors the reference
  router answers (``reasons.scmp_for``) get an SCMP error on the reversed path, built as scionproto's
  ``prepareSCMP`` does; errors are rate-limited by a token bucket and never sent about an SCMP error.
- Local delivery in the same process: a destination (host, UDP port) with a registered local sink
  (``local_sink``: the gateway of the same appliance) gets its packets in one call per batch, slots
  of the receive buffer with the parse records the step made (``routerstep``: equal to the codec's),
  instead of a sendmmsg on the internal socket; the sender it sees is the internal address, as
  recvmmsg would show. They count as ``delivered`` and ``delivered_in_process``. With one sink, its
  plain UDP datagrams are picked out in C (``routerstep.split_local``): no Python per packet for them.
- Every received packet is counted once by what became of it: ``forwarded``, ``to_sibling``,
  ``delivered``, ``to_router`` (answered by the router itself), ``slow.<reason>`` (router alerts) or
  ``drop.<reason>``; what the router sends on its own is counted under ``scmp.<type>``.
- Lab impairments apply per external interface, to everything leaving through it: cut (down: the step
  answers "external interface down", arrivals are dropped), loss, delay with jitter, reordering.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import random
import socket
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from scion_appliance._fast import codec, routerstep, udpio
from scion_appliance.router import reasons
from scion_appliance.router.topology import ENDHOST_PORT, Address, BorderRouter, Topology
from scion_appliance.scion import scmp
from scion_appliance.scion.errors import ScionParseError
from scion_appliance.scion.packet import ScionPacket, parse
from scion_appliance.scion.path import EmptyPath, PathMeta, ScionPath

BATCH = 64
PROTO_UDP = 17
PROTO_SCMP = 202
PROTO_HBH = 200
PROTO_E2E = 201
MAX_SCMP_PACKET = 1232  # slayers.MaxSCMPPacketLen: an SCMP error fits the minimum SCION MTU
REORDER_HOLD_S = 0.010  # a held-back packet leaves after the next one, or after this long

_LINK_CODES = {
    "core": routerstep.LINK_CORE,
    "parent": routerstep.LINK_PARENT,
    "child": routerstep.LINK_CHILD,
    "peer": routerstep.LINK_PEER,
}
_U16 = struct.Struct(">H")

# A local sink: (buf, stride, lens, source addresses, parse records, slots) of one batch; the slots
# ('I' items) index the other arrays; the source addresses are ``udpio`` records. All of it is the
# router's and reused by the next batch: a sink copies what it keeps before it returns.
LocalSink = Callable[[bytearray, int, memoryview, bytearray, codec.ScionRecords, memoryview], None]


def link_name(link: int) -> str:
    return "internal" if link == 0 else str(link)


def _record(addr: Address) -> bytes:
    return udpio.addr_pack(addr[0], addr[1])


class RxBatch:
    """The slot batch of one socket and the step's per-packet outputs."""

    def __init__(self, n: int, stride: int) -> None:
        self.n = n
        self.stride = stride
        self.buf = bytearray(n * stride)
        self.lens = memoryview(array("I", bytes(4 * n)))
        self.addrs = udpio.new_addrs(n)
        self.reason = bytearray(n)
        self.action = bytearray(n)
        self.egress = memoryview(array("H", bytes(2 * n)))
        self.pointer = memoryview(array("H", bytes(2 * n)))
        self.order = memoryview(array("I", bytes(4 * n)))
        self.group_off = memoryview(array("I", bytes(4 * (n + 1))))
        self.group_key = memoryview(array("I", bytes(4 * n)))
        self.sel = memoryview(array("I", bytes(4 * n)))  # the packets of a group that leave now
        self.dests = udpio.new_addrs(n)  # per-slot destinations (local delivery)
        self.flags = bytearray(n)
        self.recs = codec.ScionRecords(n)  # parse records of delivered packets (with a local sink)
        self.local_sel = memoryview(array("I", bytes(4 * n)))  # a local sink's slots picked in C
        self.rest = memoryview(array("I", bytes(4 * n)))  # the other delivered slots

    def packet(self, i: int) -> bytes:
        return bytes(self.buf[i * self.stride : i * self.stride + min(self.lens[i], self.stride)])


@dataclass(slots=True)
class SlotSend:
    """Slots ``order[start:start+count]`` of ``batch`` out of socket ``link``, to ``dests`` (one
    record for all, or one per slot)."""

    link: int
    batch: RxBatch
    order: memoryview
    start: int
    count: int
    dests: bytes | bytearray


@dataclass(slots=True)
class Datagram:
    link: int
    data: bytes
    dest: Address


Out = SlotSend | Datagram


@dataclass(frozen=True)
class Impairment:
    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "reorder"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a share from 0 to 1, got {v}")
        for name in ("delay_ms", "jitter_ms"):
            v = getattr(self, name)
            if not 0.0 <= v <= 60_000.0:
                raise ValueError(f"{name} must be 0 to 60000 ms, got {v}")

    @property
    def active(self) -> bool:
        return bool(self.loss or self.delay_ms or self.jitter_ms or self.reorder)

    def to_json(self) -> dict[str, float]:
        return {
            "loss": self.loss,
            "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms,
            "reorder": self.reorder,
        }


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; time is passed in."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last: float | None = None

    def take(self, now: float) -> bool:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class LinkState:
    ifid: int
    remote: Address
    record: bytes
    up: bool = True
    impairment: Impairment = Impairment()
    held: Datagram | None = None
    held_at: float = 0.0


def _l4(pkt: bytes | memoryview, length: int) -> tuple[int, int] | None:
    """(upper-layer protocol, its offset) past the extension headers, or None when truncated."""
    if length < 12:
        return None
    proto, off = pkt[4], pkt[5] * 4
    while proto in (PROTO_HBH, PROTO_E2E):
        if off + 2 > length:
            return None
        proto, off = pkt[off], off + (pkt[off + 1] + 1) * 4
    return (proto, off) if off <= length else None


def _quoted_port(quote: bytes) -> int | None:
    """The port an SCMP error goes to: the quoted UDP source port or echo/traceroute identifier."""
    found = _l4(quote, len(quote))
    if found is None:
        return None
    proto, off = found
    if proto == PROTO_UDP and off + 2 <= len(quote):
        port = _U16.unpack_from(quote, off)[0]
        return port or None
    if (
        proto == PROTO_SCMP
        and off + 6 <= len(quote)
        and quote[off] in (scmp.ECHO_REQUEST, scmp.TRACEROUTE_REQUEST)
    ):
        return int(_U16.unpack_from(quote, off + 4)[0])
    return None


_ERROR_QUOTE_AT = {
    scmp.EXTERNAL_INTERFACE_DOWN: 20,
    scmp.INTERNAL_CONNECTIVITY_DOWN: 28,
}


def delivery_port(pkt: bytes | memoryview, length: int, topo: Topology) -> int | None:
    """The UDP port a packet for a local end host is delivered to; None: drop (malformed SCMP)."""
    found = _l4(pkt, length)
    if found is None:
        return None
    proto, off = found
    if proto == PROTO_UDP:
        if off + 8 > length:
            return None
        return topo.dispatched(_U16.unpack_from(pkt, off + 2)[0])
    if proto == PROTO_SCMP:
        if off + 4 > length:
            return None
        t = pkt[off]
        if t in (scmp.ECHO_REPLY, scmp.TRACEROUTE_REPLY):
            return topo.dispatched(_U16.unpack_from(pkt, off + 4)[0]) if off + 6 <= length else None
        if t in (scmp.ECHO_REQUEST, scmp.TRACEROUTE_REQUEST):
            return ENDHOST_PORT
        if t < 128:
            start = off + _ERROR_QUOTE_AT.get(t, 8)
            port = _quoted_port(bytes(pkt[start:length])) if start < length else None
            return None if port is None else topo.dispatched(port)
        return None
    return ENDHOST_PORT


def _inc_path(p: ScionPath) -> ScionPath:
    hf = p.meta.curr_hf + 1
    if hf >= p.meta.num_hops:
        raise ValueError("path already at its last hop field")
    meta = PathMeta(p.segment_of_hop(hf), hf, p.meta.seg_len)
    return replace(p, meta=meta)


def _is_xover(p: ScionPath) -> bool:
    hf = p.meta.curr_hf
    return hf + 1 < p.meta.num_hops and p.meta.curr_inf != p.segment_of_hop(hf + 1)


def _is_peering(p: ScionPath) -> bool:
    info = p.info_fields[p.meta.curr_inf]
    if not info.peer:
        return False
    s0, s1, s2 = p.meta.seg_len
    if s0 == 0 or s1 == 0 or s2 != 0:
        raise ValueError("malformed peering path")
    return p.meta.curr_hf in (s0 - 1, s0)


def reply_path(path: ScionPath, *, external: bool) -> ScionPath:
    """scionproto ``prepareSCMP``: the reversed path, with any cross-over undone and, when the reply
    leaves through an external interface, this router's egress processing applied."""
    rev = path.reverse()
    peering = _is_peering(rev)
    if _is_xover(rev) and not peering:
        rev = _inc_path(rev)
    if external:
        ci = rev.meta.curr_inf
        info = rev.info_fields[ci]
        if info.cons_dir and not peering:
            mac = rev.hop_fields[rev.meta.curr_hf].mac
            infos = list(rev.info_fields)
            infos[ci] = replace(info, seg_id=info.seg_id ^ int.from_bytes(mac[:2], "big"))
            rev = replace(rev, info_fields=tuple(infos))
        rev = _inc_path(rev)
    return rev


class Dataplane:
    """One border router of ``topo`` (``router``), keyed with the AS's hop-field key."""

    def __init__(
        self,
        topo: Topology,
        router: BorderRouter,
        hop_key: bytes,
        *,
        batch: int = BATCH,
        stride: int | None = None,
        scmp_error_rate: float = 100.0,
        scmp_error_burst: float = 100.0,
        scmp_info_rate: float = 5000.0,
        rng: random.Random | None = None,
    ) -> None:
        self.topo = topo
        self.router = router
        self.ia = topo.ia
        self.internal_ip = ipaddress.ip_address(router.internal_addr[0])
        self._internal_packed = self.internal_ip.packed
        self.step = routerstep.RouterStep(hop_key, mode=routerstep.MODE_TABLE, local_ia=int(topo.ia))
        self._sibling: dict[int, bytes] = {}
        for br in topo.border_routers.values():
            for ifid, intf in br.interfaces.items():
                self.step.set_interface(ifid, _LINK_CODES[intf.link_to], owned=br is router)
                if br is not router:
                    self._sibling[ifid] = _record(br.internal_addr)
        self.links: dict[int, LinkState] = {
            ifid: LinkState(ifid, intf.remote, _record(intf.remote))
            for ifid, intf in router.interfaces.items()
        }
        mtu = max([topo.mtu, *(i.mtu for i in router.interfaces.values())])
        self.stride = stride or (mtu + 256 + 511) // 512 * 512
        self.batch_size = batch
        self._rx: dict[int, RxBatch] = {}
        self.counters: dict[str, int] = {}
        self._errors = TokenBucket(scmp_error_rate, scmp_error_burst)
        self._info = TokenBucket(scmp_info_rate, scmp_info_rate)
        self._rng = rng or random.Random()
        self._delayed: list[tuple[float, int, Datagram]] = []
        self._seq = 0
        # (host as packed bytes, UDP port) -> the receiver of its packets in this process.
        self.local_sink: dict[tuple[bytes, int], LocalSink] = {}
        internal = _record(router.internal_addr)
        self._internal_src = bytearray(internal * batch)  # the sender a local sink sees, per slot

    # -- configuration (the control channel) -------------------------------------------------

    @property
    def sockets(self) -> dict[int, Address]:
        """Every socket this router needs: link id -> local address (0: internal)."""
        socks = {0: self.router.internal_addr}
        socks.update({ifid: intf.local for ifid, intf in self.router.interfaces.items()})
        return socks

    def _link(self, ifid: int) -> LinkState:
        try:
            return self.links[ifid]
        except KeyError:
            raise KeyError(f"interface {ifid} is not an external interface of {self.router.name}") from None

    def set_link_up(self, ifid: int, up: bool) -> None:
        self._link(ifid).up = up
        self.step.set_up(ifid, up)

    def set_impairment(self, ifid: int, impairment: Impairment) -> None:
        self._link(ifid).impairment = impairment

    def snapshot(self) -> dict[str, int]:
        return dict(self.counters)

    def status(self) -> dict[str, Any]:
        return {
            "isd_as": str(self.ia),
            "router": self.router.name,
            "internal_addr": list(self.router.internal_addr),
            "interfaces": {
                str(ifid): {
                    "up": st.up,
                    "remote": list(st.remote),
                    "impairment": st.impairment.to_json(),
                }
                for ifid, st in self.links.items()
            },
        }

    def delivers_to(self, host: str, port: int) -> bool:
        """Whether UDP for ``host``:``port`` (an end host of this AS) is delivered to that address
        (not to the router itself, and ``port`` within the dispatched range)."""
        return ipaddress.ip_address(host) != self.internal_ip and self.topo.dispatched(port) == port

    def add_local_sink(self, host: str, port: int, sink: LocalSink) -> None:
        """Packets this router delivers to ``host``:``port`` go to ``sink`` instead of the socket."""
        if not self.delivers_to(host, port):
            raise ValueError(f"{host}:{port} is not an address this router delivers to")
        self.local_sink[(ipaddress.ip_address(host).packed, port)] = sink

    def remove_local_sink(self, host: str, port: int) -> None:
        self.local_sink.pop((ipaddress.ip_address(host).packed, port), None)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    # -- the forwarding path ----------------------------------------------------------------

    def rx(self, link: int) -> RxBatch:
        b = self._rx.get(link)
        if b is None:
            b = self._rx[link] = RxBatch(self.batch_size, self.stride)
        return b

    def process(self, link: int, n: int, now: float) -> list[Out]:
        """Processes the ``n`` packets just received into ``rx(link)``; returns what to send."""
        out: list[Out] = []
        if n <= 0:
            return out
        b = self.rx(link)
        self.count("rx", n)
        self.count(f"rx.{link_name(link)}", n)
        if link and not self.links[link].up:
            self.count("drop.link_down", n)
            return out
        n_ok, groups = self.step.batch(
            b.buf, b.lens, n, b.stride, link, max(0, math.ceil(now)),
            b.reason, b.action, b.egress, b.pointer, b.order, b.group_off, b.group_key,
            recs=b.recs if self.local_sink else None,
        )  # fmt: skip
        for g in range(groups):
            key = b.group_key[g]
            action, eg = key >> 16, key & 0xFFFF
            start, end = b.group_off[g], b.group_off[g + 1]
            if action == routerstep.ACT_FORWARD:
                self.count("forwarded", end - start)
                self._forward(b, eg, start, end, now, out)
            elif action == routerstep.ACT_SIBLING:
                self.count("to_sibling", end - start)
                self._emit(SlotSend(0, b, b.order, start, end - start, self._sibling[eg]), out)
            elif action == routerstep.ACT_DELIVER:
                self._deliver(b, link, start, end, now, out)
        if n_ok < n:
            for i in range(n):
                if b.reason[i]:
                    self._not_ok(b, link, i, now, out)
        return out

    def _forward(self, b: RxBatch, eg: int, start: int, end: int, now: float, out: list[Out]) -> None:
        st = self.links[eg]
        if not st.impairment.active:
            self._emit(SlotSend(eg, b, b.order, start, end - start, st.record), out)
            return
        # Impaired link: decide per packet; survivors that leave now keep the zero-copy path.
        k = start
        for j in range(start, end):
            i = b.order[j]
            verdict = self._impair(st, now)
            if verdict == "send":
                b.sel[k] = i
                k += 1
            elif verdict != "drop":
                self._defer(st, Datagram(eg, b.packet(i), st.remote), verdict, now, out)
        if k > start:
            self._emit(SlotSend(eg, b, b.sel, start, k - start, st.record), out)

    def _impair(self, st: LinkState, now: float) -> str:
        imp, rng = st.impairment, self._rng
        if imp.loss and rng.random() < imp.loss:
            self.count("impair.loss")
            self.count(f"impair.loss.{st.ifid}")
            return "drop"
        if imp.delay_ms or imp.jitter_ms:
            return "delay"
        if imp.reorder and rng.random() < imp.reorder:
            return "hold"
        return "send"

    def _defer(self, st: LinkState, d: Datagram, verdict: str, now: float, out: list[Out]) -> None:
        if verdict == "delay":
            imp = st.impairment
            delay = imp.delay_ms + (
                self._rng.uniform(-imp.jitter_ms, imp.jitter_ms) if imp.jitter_ms else 0.0
            )
            due = now + max(0.0, delay) / 1000.0
            if imp.reorder and self._rng.random() < imp.reorder:
                due += max(imp.delay_ms, 1.0) / 1000.0  # overtaken by the packets behind it
                self.count("impair.reordered")
            self.count("impair.delayed")
            self._seq += 1
            heapq.heappush(self._delayed, (due, self._seq, d))
            return
        # hold: leaves right after the next packet on this link
        if st.held is not None:
            self._emit(st.held, out, release=False)
        self.count("impair.reordered")
        st.held, st.held_at = d, now

    def _emit(self, item: Out, out: list[Out], *, release: bool = True) -> None:
        out.append(item)
        n = item.count if isinstance(item, SlotSend) else 1
        self.count(f"tx.{link_name(item.link)}", n)
        st = self.links.get(item.link) if item.link else None
        if release and st is not None and st.held is not None:
            held, st.held = st.held, None
            out.append(held)
            self.count(f"tx.{link_name(item.link)}")

    def send_datagram(self, d: Datagram, now: float, out: list[Out]) -> None:
        """A packet the router itself sends: through the link's impairments, like forwarded ones."""
        if d.link == 0:
            self._emit(d, out)
            return
        st = self.links[d.link]
        if not st.up:
            self.count("drop.link_down")
            return
        verdict = self._impair(st, now) if st.impairment.active else "send"
        if verdict == "send":
            self._emit(d, out)
        elif verdict != "drop":
            self._defer(st, d, verdict, now, out)

    def next_deadline(self) -> float | None:
        """When ``due`` next has something to release (delayed or held-back packets)."""
        times = [t for t, _, _ in self._delayed[:1]]
        times += [st.held_at + REORDER_HOLD_S for st in self.links.values() if st.held is not None]
        return min(times) if times else None

    def due(self, now: float) -> list[Out]:
        out: list[Out] = []
        while self._delayed and self._delayed[0][0] <= now:
            _, _, d = heapq.heappop(self._delayed)
            st = self.links.get(d.link)
            if st is not None and not st.up:
                self.count("drop.link_down")
                continue
            self._emit(d, out)
        for st in self.links.values():
            if st.held is not None and st.held_at + REORDER_HOLD_S <= now:
                held, st.held = st.held, None
                self._emit(held, out, release=False)
        return out

    # -- local delivery and the router's own answers ------------------------------------------

    def _deliver(self, b: RxBatch, link: int, start: int, end: int, now: float, out: list[Out]) -> None:
        buf, stride = b.buf, b.stride
        sinks = self.local_sink
        local: dict[LocalSink, list[int]] = {}
        todo = b.order[start:end]
        picked: tuple[LocalSink, memoryview] | None = None
        if len(sinks) == 1:
            # The plain datagrams of the one sink are picked out in C (from the step's records); the
            # loop below decides the rest, the sink's other packets included, as it always does.
            (((host0, port0), sink0),) = sinks.items()
            nl, nr = routerstep.split_local(
                buf, stride, b.recs, b.order, start, end, host0, port0, b.local_sel, b.rest
            )
            todo, picked = b.rest[:nr], (sink0, b.local_sel[:nl])
        k = start
        for i in todo:
            base = i * stride
            length = b.lens[i]
            pkt = memoryview(buf)[base : base + length]
            code = pkt[9] >> 4
            host_len = 4 * ((code & 3) + 1)
            if code & 0xC:  # a service address: no services behind this router
                self.count("drop.no_svc_backend")
                self._answer_error(b, link, i, now, out, lambda q: scmp.DestinationUnreachable.new(0, q))
                continue
            host = bytes(pkt[28 : 28 + host_len])
            if host == self._internal_packed:
                self._to_router(b, link, i, now, out)
                continue
            port = delivery_port(pkt, length, self.topo)
            if port is None:
                self.count("drop.undeliverable")
                continue
            if sinks:
                sink = sinks.get((host, port))
                if sink is not None:
                    local.setdefault(sink, []).append(i)
                    continue
            ip = socket.inet_ntop(socket.AF_INET if host_len == 4 else socket.AF_INET6, host)
            udpio.addr_set(b.dests, i, ip, port)
            b.sel[k] = i
            k += 1
        if k > start:
            self.count("delivered", k - start)
            self._emit(SlotSend(0, b, b.sel, start, k - start, b.dests), out)
        calls = [(sink, memoryview(array("I", slots))) for sink, slots in local.items()]
        if picked is not None and len(picked[1]):
            sink, fast = picked
            more = local.get(sink)
            slots = fast if more is None else memoryview(array("I", sorted([*fast, *more])))  # arrival order
            calls = [(sink, slots), *[c for c in calls if c[0] is not sink]]
        for sink, slots in calls:
            self.count("delivered", len(slots))
            self.count("delivered_in_process", len(slots))
            sink(buf, stride, b.lens, self._internal_src, b.recs, slots)

    def _to_router(self, b: RxBatch, link: int, i: int, now: float, out: list[Out]) -> None:
        raw = b.packet(i)
        try:
            pkt = parse(raw)
        except ScionParseError:
            self.count("drop.to_router_unparseable")
            return
        if isinstance(pkt.l4, scmp.Echo) and pkt.l4.type == scmp.ECHO_REQUEST:
            self.count("to_router")
            echo = pkt.l4
            self._reply(
                b,
                link,
                i,
                pkt,
                lambda _: scmp.Echo.new(echo.identifier, echo.sequence, echo.data, reply=True),
                now,
                out,
            )
            return
        self.count("drop.to_router")

    def _not_ok(self, b: RxBatch, link: int, i: int, now: float, out: list[Out]) -> None:
        code = b.reason[i]
        if code in reasons.SLOW_PATH:
            self._traceroute(b, link, i, code, now, out)
            return
        self.count(f"drop.{reasons.name(code)}")
        # cons_dir for the ingress/egress code choice: the step's flag, re-derived from the packet
        # (the batch form does not return flags): the current info field's ConsDir bit.
        answer = reasons.scmp_for(code, cons_dir=self._cons_dir(b, i))
        if answer is None:
            return
        typ, scode = answer
        eg = b.egress[i]
        if typ == reasons.SCMP_PARAMETER_PROBLEM:
            pointer = b.pointer[i]
            self._answer_error(b, link, i, now, out, lambda q: scmp.ParameterProblem.new(scode, pointer, q))
        elif typ == reasons.SCMP_EXTERNAL_INTERFACE_DOWN:
            self._answer_error(b, link, i, now, out, lambda q: scmp.ExternalInterfaceDown.new(self.ia, eg, q))
        elif typ == reasons.SCMP_INTERNAL_CONNECTIVITY_DOWN:
            self._answer_error(
                b, link, i, now, out, lambda q: scmp.InternalConnectivityDown.new(self.ia, link, eg, q)
            )

    def _cons_dir(self, b: RxBatch, i: int) -> bool:
        base, length = i * b.stride, min(b.lens[i], b.stride)
        pkt = b.buf
        if length < 36 or pkt[base + 8] != 1:
            return False
        path_off = 28 + 4 * (((pkt[base + 9] >> 4) & 3) + 1) + 4 * ((pkt[base + 9] & 3) + 1)
        if path_off + 4 > length:
            return False
        curr_inf = pkt[base + path_off] >> 6
        info = path_off + 4 + 8 * curr_inf
        return info < length and bool(pkt[base + info] & 0x01)

    def _traceroute(self, b: RxBatch, link: int, i: int, code: int, now: float, out: list[Out]) -> None:
        raw = b.packet(i)
        try:
            pkt = parse(raw)
        except ScionParseError:
            self.count("drop.router_alert_unparseable")
            return
        if not (isinstance(pkt.l4, scmp.Traceroute) and pkt.l4.type == scmp.TRACEROUTE_REQUEST):
            self.count("drop.router_alert_not_traceroute")
            return
        self.count(f"slow.{reasons.name(code)}")  # its fate: answered by the slow path
        ifid = link if code == reasons.ROUTER_ALERT_INGRESS else b.egress[i]
        tr = pkt.l4
        self._reply(
            b,
            link,
            i,
            pkt,
            lambda _: scmp.Traceroute.new(tr.identifier, tr.sequence, self.ia, ifid, reply=True),
            now,
            out,
        )

    def _answer_error(
        self,
        b: RxBatch,
        link: int,
        i: int,
        now: float,
        out: list[Out],
        make: Callable[[bytes], scmp.ScmpMessage],
    ) -> None:
        raw = b.packet(i)
        try:
            pkt = parse(raw)
        except ScionParseError:
            self.count("scmp.unparseable")
            return
        if isinstance(pkt.l4, scmp.ScmpMessage) and scmp.is_error(pkt.l4):
            self.count("scmp.not_about_errors")
            return
        self._reply(b, link, i, pkt, make, now, out, quote=raw)

    def _reply(
        self,
        b: RxBatch,
        link: int,
        i: int,
        pkt: ScionPacket,
        make: Callable[[bytes], scmp.ScmpMessage],
        now: float,
        out: list[Out],
        *,
        quote: bytes | None = None,
    ) -> None:
        bucket = self._errors if quote is not None else self._info
        if not bucket.take(now):
            self.count("scmp.rate_limited")
            return
        path = pkt.path
        if isinstance(path, ScionPath):
            try:
                path = reply_path(path, external=link != 0)
            except (ValueError, IndexError):
                self.count("scmp.unreversible_path")
                return
        elif not isinstance(path, EmptyPath) or link != 0:
            self.count("scmp.unsupported_path")
            return
        first = make(b"")
        reply = ScionPacket(
            dst_ia=pkt.src_ia,
            src_ia=self.ia,
            dst_host=pkt.src_host,
            src_host=self.internal_ip,
            l4=first,
            path=path,
            traffic_class=pkt.traffic_class,
            flow_id=pkt.flow_id,
        )
        if quote:
            # the error with its quote stays within the minimum SCION MTU (slayers.MaxSCMPPacketLen)
            room = MAX_SCMP_PACKET - len(reply.serialize())
            reply = replace(reply, l4=make(quote[: max(0, room)]))
        data = reply.with_checksum().serialize()
        dest = self.links[link].remote if link else udpio.addr_get(b.addrs, i)
        self.count(f"scmp.{first.name}")
        self.send_datagram(Datagram(link, data, dest), now, out)
