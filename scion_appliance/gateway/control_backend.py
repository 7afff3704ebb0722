"""The control API's view of a running gateway: the ``ControlBackend`` the service hands to the socket.

Rules kept here:
- Documents follow docs/control-api.md exactly (field names, units in seconds, states); extra fields are
  allowed by the schema and kept few. Nothing here ever shows key material: public keys only.
- Everything but ``send`` answers at once from the gateway's memory (the methods run on the trio loop).
  ``lab_link`` is the one exception that does I/O: one datagram to each of two local lab routers'
  control sockets, answered in well under a millisecond.
- Peer health is decided here, from facts the gateway keeps: a live session, a usable path, and
  (with keepalives on) having heard from the peer within ``STALE_KEEPALIVES`` keepalive intervals. A new
  session counts as hearing from the peer. ``tick`` (called by the service's housekeeping timer) keeps
  the watch: when a handshake started, which peers need a keepalive, which silent sessions to renew.
- Pinning uses the selector's single ``pinned_path``: one pin per appliance. Pinning a path to another
  destination replaces the previous pin (the answer names it). Pins survive a SIGHUP reload.
- Refusals are ``ControlError`` subclasses (400, 404, 409, 503); the app turns them into JSON errors.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from scion_appliance import __version__
from scion_appliance._fast import aead
from scion_appliance.control.backend import BadRequest, Conflict, NotFound, Unavailable
from scion_appliance.errors import OperatorError
from scion_appliance.gateway.service import STRIDE, Gateway, GatewayError
from scion_appliance.paths.quality import PathState
from scion_appliance.paths.selection import SelectionPolicy
from scion_appliance.paths.source import PathInfo
from scion_appliance.tunnel.timers import REKEY_AFTER_TIME

if TYPE_CHECKING:
    from scion_appliance.config import Peer as PeerConfig
    from scion_appliance.gateway.ip_tunnel import IpTunnel
    from scion_appliance.lab.lab import Lab

SCHEMA = 1
STALE_KEEPALIVES = 3  # a peer silent for this many keepalive intervals is down
CONNECTING_GRACE_S = 5.0  # a handshake unanswered this long makes the peer down, not connecting
STARTING_S = 5.0
SESSION_WAIT_S = 1.0  # without a sending session this long (and no handshake under way): start one  # "starting" while young and not every peer is up
SCION_FIXED_HEADERS = 12 + 16 + 8  # common header, both ISD-AS, UDP (host addresses and path added)


def sequence(path: PathInfo) -> str:
    """The hop sequence in scionproto's notation: ``1-ff00:0:110#2 1-ff00:0:120#1,2 1-ff00:0:111#4``."""
    groups: list[tuple[str, list[int]]] = []
    for intf in path.interfaces:
        if groups and groups[-1][0] == intf.ia:
            groups[-1][1].append(intf.ifid)
        else:
            groups.append((intf.ia, [intf.ifid]))
    return " ".join(f"{ia}#{','.join(map(str, ifids))}" for ia, ifids in groups)


def _seconds(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, digits)


def _endpoint(host: Any, port: int) -> str:
    return f"[{host}]:{port}" if isinstance(host, ipaddress.IPv6Address) else f"{host}:{port}"


class GatewayControl:
    """``ControlBackend`` over a running ``Gateway`` (see the module rules)."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        isd_as: str,
        public_key: bytes,
        peers: Sequence[PeerConfig],
        lab: Lab | None = None,
        started: float | None = None,
    ) -> None:
        self.gateway = gateway
        self.isd_as = isd_as
        self.public_key = public_key
        self.peers_cfg: list[PeerConfig] = list(peers)
        self.lab = lab
        self.started = time.monotonic() if started is None else started
        self.tunnel: IpTunnel | None = None
        self.interfaces: dict[str, Any] = {"underlay": None, "tun": None, "router": None}
        self.lifetime: Callable[[], Mapping[str, int]] | None = None
        self.stopping = False
        self.pin_dst: str | None = None
        self._connecting_since: dict[str, float] = {}
        self._no_session_since: dict[str, float] = {}

    # -- peer watch (the service's housekeeping calls tick) -------------------------------------------

    def _peer_ia(self, p: PeerConfig) -> str:
        return str(p.isd_as)

    def _heard(self, key: str) -> float:
        """When we last had proof of life from this peer: an authenticated packet or a new session."""
        s = self.gateway.session(key)
        return max(self.gateway.last_rx.get(key, -math.inf), s.created if s is not None else -math.inf)

    def _live(self, key: str, now: float) -> bool:
        s = self.gateway.session(key)
        return s is not None and s.can_send(now)

    def tick(self, now: float) -> list[str]:
        """Start handshakes where a session is missing or has gone silent; returns the peers (ISD-AS)
        a keepalive should go to now."""
        keepalives = []
        for p in self.peers_cfg:
            key = self._peer_ia(p)
            if p.plain:  # a reference gateway: no session to watch, no keepalives it would understand
                continue
            if self.gateway.handshaking(key):
                self._connecting_since.setdefault(key, now)
            else:
                self._connecting_since.pop(key, None)
            if not self._live(key, now):
                # A handshake we answered waits for the initiator's first packet: give it a moment
                # before starting one of our own.
                since = self._no_session_since.setdefault(key, now)
                if now - since >= SESSION_WAIT_S:
                    self.gateway.ensure_session(key)
                continue
            self._no_session_since.pop(key, None)
            if p.keepalive_s <= 0:
                continue
            if now - self._heard(key) > STALE_KEEPALIVES * p.keepalive_s:
                # Silent: the peer may have restarted (its old session is gone) or died. A fresh
                # handshake repairs the first case; the peer shows down in the meantime.
                self.gateway.ensure_session(key, rekey=True)
            if now - self.gateway.last_tx.get(key, -math.inf) >= p.keepalive_s:
                keepalives.append(key)
        return keepalives

    def peer_state(self, p: PeerConfig, now: float) -> tuple[str, str]:
        """(state, why) of one peer: ``up``, ``connecting`` or ``down``."""
        key = self._peer_ia(p)
        if p.plain:  # no session: up while a path carries its frames
            if self.gateway.selector.status(key).active is None:
                return "down", f"no usable path to {key}: {self.gateway.reason(key) or 'no paths'}"
            return "up", "plain SIG (no session)"
        if self._live(key, now):
            if self.gateway.selector.status(key).active is None:
                return "down", f"no usable path to {key}: {self.gateway.reason(key) or 'no paths'}"
            silent = now - self._heard(key)
            if p.keepalive_s > 0 and silent > STALE_KEEPALIVES * p.keepalive_s:
                return "down", f"nothing heard for {silent:.1f} s (keepalive every {p.keepalive_s:g} s)"
            return "up", "session up"
        since = self._connecting_since.get(key)
        if self.gateway.handshaking(key) and (since is None or now - since < CONNECTING_GRACE_S):
            return "connecting", "handshake under way"
        if since is not None:
            return "down", f"no session: handshake unanswered for {now - since:.1f} s"
        return "down", "no session"

    # -- documents --------------------------------------------------------------------------------------

    def _peer_doc(self, p: PeerConfig, now: float) -> dict[str, Any]:
        key = self._peer_ia(p)
        spec = self.gateway.peers.get(key)
        state, why = self.peer_state(p, now)
        s = self.gateway.session(key)
        t = self.gateway.transfer.get(key, Counter())
        heard = self.gateway.last_rx.get(key)
        return {
            "name": p.name,
            "isd_as": key,
            "public_key": base64.b64encode(p.public_key).decode() if p.public_key is not None else None,
            "mode": "plain" if p.plain else "sealed",
            "endpoint": _endpoint(spec.host, spec.port) if spec else None,
            "probe_address": str(spec.probe_host) if spec else None,
            "remote_prefixes": [str(n) for n in p.remote_prefixes],
            "state": state,
            "state_reason": why,
            "latest_handshake_age_s": _seconds(now - s.created, 3) if s is not None else None,
            "latest_receive_age_s": _seconds(now - heard, 3) if heard is not None else None,
            "transfer": {
                "rx_bytes": t["rx_bytes"],
                "tx_bytes": t["tx_bytes"],
                "rx_packets": t["rx_packets"],
                "tx_packets": t["tx_packets"],
            },
            "session": (
                {
                    "age_s": _seconds(s.age(now), 3),
                    "rekey_in_s": _seconds(max(0.0, REKEY_AFTER_TIME - s.age(now)), 3)
                    if s.initiator
                    else None,
                    "initiator": s.initiator,
                }
                if s is not None and s.can_send(now)
                else None
            ),
        }

    def _path_set(self, dst: str, now: float) -> dict[str, Any]:
        gw = self.gateway
        active = gw.selector.status(dst).active
        out = []
        for p in gw.path_source.paths(dst):
            q = gw.prober.quality.get(p.id)
            snap = q.snapshot(now) if q is not None else None
            if snap is None:
                state, why = "probing", "not probed yet"
            elif snap.state is PathState.UP and not snap.measured:
                state, why = "probing", snap.reason
            else:
                state, why = str(snap.state), snap.reason
            out.append(
                {
                    "id": p.id,
                    "sequence": sequence(p),
                    "hop_count": p.hop_count,
                    "state": state,
                    "state_reason": why,
                    "active": p.id == active,
                    "rtt_s": _seconds(snap.rtt) if snap else None,
                    "rtt_p95_s": _seconds(snap.rtt_p95) if snap else None,
                    "jitter_s": _seconds(snap.jitter) if snap and snap.measured else None,
                    "loss": round(snap.loss, 4) if snap and snap.probes_sent else None,
                    "mtu": p.mtu or None,
                }
            )
        pinned = gw.selector.policy.pinned_path if self.pin_dst == dst else None
        return {"active": active, "pinned": pinned, "reason": gw.reason(dst) or None, "paths": out}

    def flat_counters(self) -> dict[str, int]:
        """Totals since start in the telemetry snapshot's names (``packets.rx``, ``drops.<reason>``...)."""
        gw = self.gateway
        totals: Counter[str] = Counter()
        for t in gw.transfer.values():
            totals.update(t)
        out = {
            "packets.rx": totals["rx_packets"],
            "packets.tx": totals["tx_packets"],
            "bytes.rx": totals["rx_bytes"],
            "bytes.tx": totals["tx_bytes"],
            "replay.rejects": gw.counters["drop_replayed"],
            "handshakes": gw.counters["handshakes_completed"],
            "handshake.failures": sum(v for k, v in gw.counters.items() if k.startswith("drop_handshake_")),
            "failovers": gw.counters["failovers"],
            "sessions": sum(1 for p in self.peers_cfg if self._live(self._peer_ia(p), time.monotonic())),
        }
        drops: Counter[str] = Counter({k[5:]: v for k, v in gw.counters.items() if k.startswith("drop_")})
        if self.tunnel is not None:
            drops.update(
                {k[5:]: v for k, v in self.tunnel.snapshot()["totals"].items() if k.startswith("drop_")}
            )
        out.update({f"drops.{k}": v for k, v in drops.items()})
        return out

    def path_snapshot(self) -> list[dict[str, Any]]:
        """One mapping per candidate path for telemetry: dst, path, loss, state, active."""
        now = time.monotonic()
        rows = []
        for p in self.peers_cfg:
            dst = self._peer_ia(p)
            for path in self._path_set(dst, now)["paths"]:
                rows.append(
                    {
                        "dst": dst,
                        "path": path["id"],
                        "loss": path["loss"],
                        "state": path["state"],
                        "active": path["active"],
                    }
                )
        return rows

    def status(self) -> dict[str, Any]:
        self.gateway.harvest_rx()  # the receive thread's counts (transfer, last receive) up to date
        now = time.monotonic()
        peers = [self._peer_doc(p, now) for p in self.peers_cfg]
        paths = {self._peer_ia(p): self._path_set(self._peer_ia(p), now) for p in self.peers_cfg}
        problems = []
        for peer in peers:
            if peer["state"] != "up":
                problems.append(f"peer {peer['name']} is {peer['state']}: {peer['state_reason']}")
        for dst, pset in paths.items():
            down = [p for p in pset["paths"] if p["state"] == "down"]
            if pset["active"] is None:
                problems.append(f"no active path to {dst}: {pset['reason'] or 'no candidates'}")
            if down:
                problems.append(f"{len(down)} of {len(pset['paths'])} paths to {dst} down")
        uptime = now - self.started
        if self.stopping:
            state = "stopping"
        elif problems and uptime < STARTING_S and all(p["state"] != "down" for p in peers):
            state = "starting"
        else:
            state = "degraded" if problems else "healthy"
        flat = self.flat_counters()
        c = self.gateway.counters
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "version": __version__,
            "state": state,
            "problems": problems,
            "uptime_s": round(uptime, 3),
            "identity": {"isd_as": self.isd_as, "public_key": base64.b64encode(self.public_key).decode()},
            "interfaces": self.interfaces,
            "peers": peers,
            "sessions": {"active": flat["sessions"]},
            "paths": paths,
            "counters": {
                "packets": {"rx": flat["packets.rx"], "tx": flat["packets.tx"]},
                "bytes": {"rx": flat["bytes.rx"], "tx": flat["bytes.tx"]},
                "drops": {k[6:]: v for k, v in sorted(flat.items()) if k.startswith("drops.")},
                "replay_rejects": flat["replay.rejects"],
                "handshakes": flat["handshakes"],
                "handshake_failures": flat["handshake.failures"],
                "failovers": flat["failovers"],
                "keepalives": {"rx": c["keepalives_received"], "tx": c["keepalives_sent"]},
                "probes_sent": c["probes_sent"],
            },
            "lifetime": dict(self.lifetime()) if self.lifetime is not None else None,
        }
        return doc

    def _dst(self, dst: str) -> PeerConfig:
        for p in self.peers_cfg:
            if self._peer_ia(p) == dst:
                return p
        known = ", ".join(self._peer_ia(p) for p in self.peers_cfg) or "none configured"
        raise NotFound(f"{dst} is not a destination of this appliance (peers: {known})")

    def paths(self, dst: str) -> dict[str, Any]:
        self._dst(dst)
        return {"dst": dst, **self._path_set(dst, time.monotonic())}

    def peers(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"peers": [self._peer_doc(p, now) for p in self.peers_cfg]}

    # -- admin actions ----------------------------------------------------------------------------------

    def rekey(self, name: str) -> dict[str, Any] | None:
        for p in self.peers_cfg:
            if p.name == name:
                started = self.gateway.ensure_session(self._peer_ia(p), rekey=True)
                return (
                    {"started": started}
                    if started
                    else {"started": False, "note": "a handshake is under way"}
                )
        raise NotFound(
            f"no peer named {name!r} (peers: {', '.join(p.name for p in self.peers_cfg) or 'none'})"
        )

    def apply_policy(self, policy: SelectionPolicy) -> None:
        """Install a (reloaded) policy, keeping the operator's pin."""
        pin = self.gateway.selector.policy.pinned_path if self.pin_dst else None
        self.gateway.selector.set_policy(dataclasses.replace(policy, pinned_path=pin))

    def pin(self, dst: str, path_id: str) -> dict[str, Any] | None:
        self._dst(dst)
        paths = self.gateway.path_source.paths(dst)
        exact = [p for p in paths if p.id == path_id]
        found = exact or [p for p in paths if len(path_id) >= 4 and p.id.startswith(path_id)]
        if not found:
            raise NotFound(f"no path {path_id!r} to {dst}; `scion-appliance paths {dst}` lists them")
        if len(found) > 1:
            raise BadRequest(
                f"path id prefix {path_id!r} matches {len(found)} paths to {dst}; give more of it"
            )
        path = found[0]
        q = self.gateway.prober.quality.get(path.id)
        if q is not None and q.snapshot(time.monotonic()).state is PathState.DOWN:
            raise Conflict(
                f"path {path.short_id} to {dst} is down ({q.state(time.monotonic())[1]}); not pinned"
            )
        old = self.gateway.selector.policy.pinned_path
        replaced = (
            {"dst": self.pin_dst, "path": old} if old and self.pin_dst and self.pin_dst != dst else None
        )
        self.gateway.selector.set_policy(
            dataclasses.replace(self.gateway.selector.policy, pinned_path=path.id)
        )
        self.pin_dst = dst
        return {"pinned": path.id, "replaced": replaced}

    def unpin(self, dst: str) -> dict[str, Any] | None:
        self._dst(dst)
        if self.pin_dst != dst:
            return {"note": f"no path to {dst} was pinned"}
        self.gateway.selector.set_policy(dataclasses.replace(self.gateway.selector.policy, pinned_path=None))
        self.pin_dst = None
        return None

    def lab_link(self, name: str, action: str) -> dict[str, Any] | None:
        if self.lab is None:
            raise Unavailable("no lab here: [paths] catalogue is not a lab's paths.json (lab.json beside it)")
        if name not in self.lab.links:
            raise NotFound(f"no link {name!r} in the lab; links are: {', '.join(self.lab.links)}")
        try:
            self.lab.cut(name) if action == "cut" else self.lab.restore(name)
        except (OperatorError, OSError) as e:
            raise Unavailable(f"the lab could not {action} link {name}: {e}") from None
        return None

    def max_datagram(self, dst: str) -> int:
        """The largest payload that fits every candidate path to ``dst`` and the receiver's buffer."""
        spec = self.gateway.peers[dst]
        hosts = (4 if isinstance(self.gateway.host, ipaddress.IPv4Address) else 16) + (
            4 if isinstance(spec.host, ipaddress.IPv4Address) else 16
        )
        limit = STRIDE
        for p in self.gateway.path_source.paths(dst):
            room = min(p.mtu or STRIDE, STRIDE) - SCION_FIXED_HEADERS - hosts - len(p.raw) - aead.OVERHEAD
            limit = min(limit, room)
        return max(0, limit)

    async def send(self, dst: str, payload: bytes) -> dict[str, Any]:
        self._dst(dst)
        limit = self.max_datagram(dst)
        if len(payload) > limit:
            raise BadRequest(
                f"a datagram to {dst} holds at most {limit} bytes (the smallest path MTU less headers); "
                f"got {len(payload)}"
            )
        try:
            return await self.gateway.send(dst, payload)
        except GatewayError as e:
            raise Unavailable(str(e)) from None
