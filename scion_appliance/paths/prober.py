"""Path probing, sans-IO: SCMP echo requests out, replies and interface-down notices in.

Rules kept here:
- One echo identifier per prober: the local UDP port, because routers deliver informational SCMP
  replies to (destination host, identifier) (scionproto's dispatcherless rule). Sequence numbers are
  16 bits and map back to (path id, probe id) for the outstanding probes only.
- The prober owns the ``PathQuality`` of each path it probes; it never sends or sleeps itself. The
  service calls ``due(now)`` to get the probes to send, ``on_packet`` for every SCMP packet received,
  and ``tick(now)`` to expire lost probes.
- SCMP external-interface-down and internal-connectivity-down mark a path down at once when the
  interface named is on that path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scion_appliance.paths.quality import DownNotice, PathQuality, QualityConfig
from scion_appliance.paths.source import PathInfo
from scion_appliance.scion.addr import IA, HostAddr
from scion_appliance.scion.packet import ScionPacket
from scion_appliance.scion.path import EmptyPath, ScionPath
from scion_appliance.scion.scmp import (
    ECHO_REPLY,
    Echo,
    ExternalInterfaceDown,
    InternalConnectivityDown,
    ScmpMessage,
)


@dataclass
class _Outstanding:
    path_id: str
    probe_id: int
    sent: float


class Prober:
    def __init__(
        self,
        local_ia: IA,
        local_host: HostAddr,
        identifier: int,
        interval: float = 0.1,
        config: QualityConfig | None = None,
    ) -> None:
        self.local_ia = local_ia
        self.local_host = local_host
        self.identifier = identifier & 0xFFFF
        self.interval = interval
        self.config = config
        self.quality: dict[str, PathQuality] = {}
        self._targets: dict[str, tuple[PathInfo, IA, HostAddr]] = {}
        self._next_due: dict[str, float] = {}
        self._seq = 0
        self._probe_id = 0
        self._outstanding: dict[int, _Outstanding] = {}
        self.unmatched_replies = 0

    def set_paths(self, dst_ia: IA, target_host: HostAddr, paths: Iterable[PathInfo]) -> None:
        """Probe these paths to ``dst_ia`` (echo to ``target_host`` there); forget its other paths."""
        keep = set()
        for p in paths:
            keep.add(p.id)
            self._targets[p.id] = (p, dst_ia, target_host)
            if p.id not in self.quality:
                self.quality[p.id] = PathQuality(self.config)
                self._next_due[p.id] = 0.0
        for pid in [pid for pid, (_, ia, _) in self._targets.items() if ia == dst_ia and pid not in keep]:
            del self._targets[pid]
            self._next_due.pop(pid, None)

    def due(self, now: float) -> list[tuple[PathInfo, bytes]]:
        """Probes to send now: (path, SCION packet bytes) for every path whose interval has passed."""
        out = []
        for pid, when in self._next_due.items():
            if when > now:
                continue
            path, dst_ia, host = self._targets[pid]
            self._seq = (self._seq + 1) & 0xFFFF
            self._probe_id += 1
            stale = self._outstanding.pop(self._seq, None)
            if stale is not None:  # 65536 probes later and still unanswered: it is lost
                self.quality[stale.path_id].expire(now)
            self._outstanding[self._seq] = _Outstanding(pid, self._probe_id, now)
            self.quality[pid].probe_sent(self._probe_id, now)
            self._next_due[pid] = now + self.interval
            out.append((path, self._echo(path, dst_ia, host, self._seq)))
        return out

    def next_deadline(self) -> float:
        return min(self._next_due.values(), default=float("inf"))

    def _echo(self, path: PathInfo, dst_ia: IA, host: HostAddr, seq: int) -> bytes:
        msg = Echo.new(self.identifier, seq, b"scion-appliance probe")
        pkt = ScionPacket(
            dst_ia=dst_ia,
            src_ia=self.local_ia,
            dst_host=host,
            src_host=self.local_host,
            l4=msg,
            path=ScionPath.from_bytes(path.raw) if path.raw else EmptyPath(),
        )
        return pkt.with_checksum().serialize()

    def on_packet(self, pkt: ScionPacket, now: float) -> str | None:
        """Feeds one received SCMP packet; returns the id of the path it concerned, if any."""
        msg = pkt.l4
        if not isinstance(msg, ScmpMessage):
            return None
        if msg.type == ECHO_REPLY and isinstance(msg, Echo) and msg.identifier == self.identifier:
            out = self._outstanding.pop(msg.sequence, None)
            if out is None or out.path_id not in self.quality:
                self.unmatched_replies += 1
                return None
            self.quality[out.path_id].probe_reply(out.probe_id, now)
            return out.path_id
        if isinstance(msg, ExternalInterfaceDown | InternalConnectivityDown):
            return self._interface_down(msg)
        return None

    def _interface_down(self, msg: ExternalInterfaceDown | InternalConnectivityDown) -> str | None:
        ia = str(msg.ia)
        if isinstance(msg, ExternalInterfaceDown):
            ifids, notice = {msg.interface}, DownNotice.EXTERNAL_INTERFACE_DOWN
        else:
            ifids, notice = {msg.ingress, msg.egress}, DownNotice.INTERNAL_CONNECTIVITY_DOWN
        hit = None
        for pid, (path, _, _) in self._targets.items():
            if any(i.ia == ia and i.ifid in ifids for i in path.interfaces):
                self.quality[pid].scmp_down(notice, f"{ia} interface {sorted(ifids)}")
                hit = pid
        return hit

    def tick(self, now: float) -> None:
        for q in self.quality.values():
            q.expire(now)
        timeout = 3.0
        for seq in [s for s, o in self._outstanding.items() if now - o.sent > timeout]:
            del self._outstanding[seq]
