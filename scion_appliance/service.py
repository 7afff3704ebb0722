"""The appliance service: one trio nursery running what the config file asks for (``scion-appliance run``).

What it owns: building the parts from a ``Config`` and their life together. The parts are the state
store, the gateway (underlay socket, sessions, probes, selection), the TUN device with its IP tunnel
(when ``[tun]`` is set and the process may create one), the border router of the local AS (when
``[router]`` is set), telemetry, and the control socket with the gateway's ``ControlBackend``.

Rules kept here:
- Start order: state store, path source, gateway, path quality restored from the store, TUN, router,
  telemetry, then the control socket last: once it answers, everything behind it runs. With systemd's
  ``Type=notify`` the service then sends ``READY=1``.
- With ``[router]``, what the embedded router delivers to the gateway's own underlay address reaches the
  gateway in this process, with the router step's parse (``connect_local_delivery``): no socket hop and
  no second parse. The gateway's own packets still leave through its socket.
- Where the config leaves something out and the path catalogue lies in a lab directory (``lab.json``
  beside ``paths.json``), the lab supplies it: our own host address (for a wildcard
  ``underlay.listen_address``), a peer's address (its AS's end-host address, our underlay port) and its
  probe address (the router of its AS). Outside a lab these keys are required, and the error names them.
- SIGTERM or SIGINT: graceful stop. Status says ``stopping``, the control socket closes, path quality and
  the lifetime counters are written to the store (one batch each), telemetry is flushed, the store is
  closed. Exit status 0.
- SIGHUP: reload. The config file is read again; if it does not load, the error is logged and nothing
  changes. Peers (added, removed, changed) and the selection policy are applied to the running gateway:
  the sessions of unchanged peers stay (no handshake). The traffic policy of the TUN is replaced.
  Settings that only a restart can change (identity, underlay, state, control, tun, router, telemetry,
  catalogue, replay window, probe interval) are logged as such and keep their running values.
- Housekeeping runs on one timer (``TICK_S``): the peer watch (missing or silent sessions get a handshake,
  idle ones a keepalive), telemetry events (handshakes, failovers, probe RTTs) and snapshots; the path
  catalogue is checked for changes every second; path quality and lifetime counters are saved every
  ``SAVE_EVERY_S``. Nothing of it is per packet.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from scion_appliance import config as config_mod
from scion_appliance import log as log_mod
from scion_appliance import telemetry as telemetry_mod
from scion_appliance.config import Config, ConfigError
from scion_appliance.control.server import serve_control
from scion_appliance.errors import OperatorError
from scion_appliance.gateway.control_backend import GatewayControl
from scion_appliance.gateway.ip_tunnel import IpTunnel
from scion_appliance.gateway.service import Gateway, GatewayError, PeerSpec
from scion_appliance.gateway.traffic_policy import TrafficPolicy
from scion_appliance.lab.lab import Lab
from scion_appliance.paths.catalogue_file import CatalogueError, CatalogueFile
from scion_appliance.paths.quality import PathQuality, QualityConfig
from scion_appliance.paths.selection import Metric, SelectionPolicy
from scion_appliance.state import StateStore
from scion_appliance.tunnel import messages
from scion_appliance.tunnel.keys import load_preshared_key, load_private_key, public_key

TICK_S = 0.25
CATALOGUE_CHECK_S = 1.0
SAVE_EVERY_S = 10.0

log = log_mod.get_logger("service")


# -- building the parts from the config -------------------------------------------------------------------


def find_lab(cfg: Config) -> Lab | None:
    """The lab whose catalogue the config names (``lab.json`` beside ``paths.json``), if it is one."""
    cat = cfg.paths.catalogue
    if cat is None or not (cat.parent / "lab.json").is_file():
        return None
    try:
        return Lab.load(cat.parent)
    except OperatorError as e:
        raise ConfigError(
            cfg.source, "paths.catalogue", "a lab directory with a readable lab.json", str(e)
        ) from None


def local_host(cfg: Config, lab: Lab | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = cfg.underlay.listen_address
    if not addr.is_unspecified:
        return addr
    if lab is not None:
        try:
            return ipaddress.ip_address(lab.host_address(str(cfg.identity.isd_as)))
        except OperatorError as e:
            raise ConfigError(cfg.source, "identity.isd_as", "an AS of the lab", str(e)) from None
    raise ConfigError(
        cfg.source,
        "underlay.listen_address",
        "this appliance's own address inside its AS (SCION packets carry it as their source); "
        "a wildcard works only with a lab catalogue",
        str(addr),
    )


def peer_specs(cfg: Config, lab: Lab | None) -> list[PeerSpec]:
    """The gateway's peers from the config, with the lab's defaults where keys are left out."""
    out = []
    for i, p in enumerate(cfg.peers):
        ia = str(p.isd_as)
        if p.address is not None:
            # A plain peer is a reference gateway: its data port is 30056 unless the address says otherwise.
            host, port = p.address[0], p.address[1] or (config_mod.SIG_PORT if p.plain else cfg.underlay.port)
        elif lab is not None:
            try:
                host = ipaddress.ip_address(lab.host_address(ia))
                port = config_mod.SIG_PORT if p.plain else cfg.underlay.port
            except OperatorError as e:
                raise ConfigError(cfg.source, f"peers[{i}].isd_as", "an AS of the lab", str(e)) from None
        else:
            raise ConfigError(
                cfg.source,
                f"peers[{i}].address",
                'the peer appliance\'s host inside its AS, "IP" or "IP:port" (required without a lab catalogue)',
                "nothing",
            )
        if p.probe_address is not None:
            probe: Any = p.probe_address
        elif lab is not None:
            probe = ipaddress.ip_address(lab.router_address(ia)[0])
        else:
            raise ConfigError(
                cfg.source,
                f"peers[{i}].probe_address",
                "a host in the peer's AS that answers SCMP echo, e.g. its border router "
                "(required without a lab catalogue)",
                "nothing",
            )
        psk = load_preshared_key(p.preshared_key_file) if p.preshared_key_file is not None else None
        out.append(PeerSpec(p.name, p.isd_as, host, port, p.public_key, probe, psk, plain=p.plain))
    return out


def selection_policy(cfg: Config) -> SelectionPolicy:
    P = cfg.paths
    if P.failover_rtt_threshold <= 1.0:
        raise ConfigError(cfg.source, "paths.failover_rtt_threshold", "a factor above 1.0", "1.0")
    if P.failover_loss_threshold >= 1.0:
        raise ConfigError(cfg.source, "paths.failover_loss_threshold", "a loss ratio below 1.0", "1.0")
    return SelectionPolicy(
        metric=Metric(P.select),
        preferred_ases=frozenset(str(ia) for ia in P.preferred_ases),
        excluded_ases=frozenset(str(ia) for ia in P.excluded_ases),
        failover_rtt_threshold=P.failover_rtt_threshold,
        failover_loss_threshold=P.failover_loss_threshold,
        min_paths=P.min_paths,
        exploration_probability=P.exploration_probability,
        min_dwell=P.hysteresis_ms / 1000.0,
        spread_paths=P.spread,
    )


def quality_config(cfg: Config) -> QualityConfig:
    # A path that carried data and heard nothing back for this long is suspect; it must exceed a probe
    # interval plus the RTT, or an idle return direction makes healthy paths suspect.
    interval = cfg.paths.probe_interval_ms / 1000.0
    return QualityConfig(liveness_timeout=max(0.25, 2.5 * interval))


def sd_notify(state: str) -> None:
    """Tell systemd (``Type=notify``) about a state change; nothing without ``$NOTIFY_SOCKET``."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.send(state.encode())


CAP_NET_ADMIN = 12


def has_cap_net_admin() -> bool:
    """True if this process holds CAP_NET_ADMIN (root, or systemd's AmbientCapabilities=CAP_NET_ADMIN)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def tun_unavailable() -> str | None:
    """Why a TUN device cannot be created here (one line), or None. A capability suffices: the
    service user need not be root."""
    from scion_appliance import tun as tun_mod

    if not os.path.exists(tun_mod.TUN_PATH):
        return tun_mod.unavailable_reason() or f"{tun_mod.TUN_PATH} is missing"
    if not has_cap_net_admin():
        return f"creating TUN devices needs CAP_NET_ADMIN: {tun_mod.NEEDS_PRIVILEGE}"
    return None


# Settings a reload cannot change: they shape sockets, devices and files opened at start.
RESTART_ONLY = ("identity", "state", "control", "telemetry", "underlay", "router", "tun", "replay")
RESTART_ONLY_PATHS = ("catalogue", "probe_interval_ms")


class Appliance:
    """The running appliance. ``await Appliance(cfg).run()`` serves until SIGTERM (or ``stop()``)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.started = time.monotonic()
        self.store: StateStore | None = None
        self.gateway: Gateway | None = None
        self.backend: GatewayControl | None = None
        self.source: CatalogueFile | None = None
        self.lab: Lab | None = None
        self.tunnel: IpTunnel | None = None
        self.telemetry: telemetry_mod.Telemetry | None = None
        self._tun_dev: Any = None
        self._tun_scope: trio.CancelScope | None = None
        self._router: Any = None
        self._nursery: trio.Nursery | None = None
        self._counter_snap: Mapping[str, int] = {}
        self._path_snap: list[dict[str, Any]] = []
        self._flushed: dict[str, int] = {}
        self._seen_failovers = 0
        self._active: dict[str, str | None] = {}
        self._sessions: dict[str, int] = {}
        self._rtt_seen: dict[str, int] = {}
        self._catalogue_error = ""
        self.reloads = 0

    # -- build ----------------------------------------------------------------------------------------

    def _build_gateway(self, store: StateStore) -> Gateway:
        cfg = self.cfg
        if cfg.paths.catalogue is None:
            if cfg.peers:
                raise ConfigError(
                    cfg.source,
                    "paths.catalogue",
                    "a path catalogue (the path source of this release: a lab's paths.json)",
                    "nothing, so there would be no paths to the peers",
                )
            self.source = None
        else:
            try:
                self.source = CatalogueFile(cfg.paths.catalogue, cfg.identity.isd_as)
            except CatalogueError as e:
                raise ConfigError(cfg.source, "paths.catalogue", "a usable path catalogue", str(e)) from None
        self.lab = find_lab(cfg)
        private = load_private_key(cfg.identity.private_key_file)
        host = local_host(cfg, self.lab)
        specs = peer_specs(cfg, self.lab)
        gw = Gateway(
            ia=cfg.identity.isd_as,
            host=host,
            port=cfg.underlay.port,
            private_key=private,
            peers=specs,
            path_source=self.source if self.source is not None else _NoPaths(),
            probe_interval=cfg.paths.probe_interval_ms / 1000.0,
            policy=selection_policy(cfg),
            quality=quality_config(cfg),
            window_bits=cfg.replay.window_size,
            store=store,
            sig_port=cfg.underlay.sig_port,
        )
        self.backend = GatewayControl(
            gw,
            isd_as=str(cfg.identity.isd_as),
            public_key=public_key(private),
            peers=cfg.peers,
            lab=self.lab,
            started=self.started,
        )
        self.backend.interfaces["underlay"] = {
            "address": str(host),
            "port": cfg.underlay.port,
            "sig_port": 0,  # set once the plain SIG socket is open (some peer is plain)
        }
        self.backend.lifetime = self._lifetime
        return gw

    def _show_sig_port(self) -> None:
        """Status shows the plain SIG port only while its socket is open (some peer is plain)."""
        assert self.gateway is not None and self.backend is not None
        plain = self.gateway.plain_sig
        underlay = self.backend.interfaces.get("underlay")
        if underlay is not None:
            underlay["sig_port"] = plain.port if plain is not None and plain.active else 0

    def _restore_quality(self) -> int:
        """Path quality saved at the last stop, for paths that are still candidates; returns how many."""
        assert self.gateway is not None and self.store is not None
        n = 0
        qc = quality_config(self.cfg)
        for dst in self.gateway.peers:
            for pid, record in self.store.load_path_quality(dst).items():
                if pid in self.gateway.prober.quality:
                    self.gateway.prober.quality[pid] = PathQuality.restore(record, qc)
                    n += 1
        return n

    def _save_quality(self) -> None:
        assert self.gateway is not None and self.store is not None
        gw = self.gateway
        for dst in gw.peers:
            records = {
                p.id: gw.prober.quality[p.id].export()
                for p in gw.path_source.paths(dst)
                if p.id in gw.prober.quality
            }
            if records:
                self.store.save_path_quality(dst, records)

    def _flush_counters(self) -> None:
        assert self.backend is not None and self.store is not None
        flat = self.backend.flat_counters()
        flat.pop("sessions", None)  # a gauge, not a count
        delta = {k: v - self._flushed.get(k, 0) for k, v in flat.items() if v != self._flushed.get(k, 0)}
        self.store.add_counters(delta)
        self._flushed = flat

    def _lifetime(self) -> dict[str, int]:
        if self.store is None or self.store.closed or self.backend is None:
            return {}
        total = self.store.counters()
        flat = self.backend.flat_counters()
        flat.pop("sessions", None)
        for k, v in flat.items():
            total[k] = total.get(k, 0) + v - self._flushed.get(k, 0)
        return dict(sorted(total.items()))

    # -- run ------------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Appliance] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        self.store = StateStore.open(cfg.state.dir)
        try:
            self.gateway = gw = self._build_gateway(self.store)
            async with gw, trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._signals)
                self._show_sig_port()
                restored = self._restore_quality()
                self._start_tun(nursery)
                self._start_router(nursery)
                self.telemetry = telemetry_mod.install(
                    telemetry_mod.Telemetry.start(
                        cfg.telemetry, counters=lambda: self._counter_snap, paths=lambda: self._path_snap
                    )
                )
                assert self.backend is not None
                await nursery.start(
                    serve_control, self.backend, cfg.control.socket, cfg.control.mode, cfg.control.group
                )
                nursery.start_soon(self._housekeeping)
                for key in gw.peers:
                    gw.ensure_session(key)
                sd_notify("READY=1")
                log.info(
                    "appliance.ready",
                    isd_as=str(cfg.identity.isd_as),
                    underlay=f"{gw.host}:{gw.port}",
                    peers=[p.name for p in cfg.peers],
                    paths={k: len(gw.path_source.paths(k)) for k in gw.peers},
                    path_quality_restored=restored,
                    lab=str(self.lab.directory) if self.lab else None,
                    telemetry=self.telemetry.settings.reason,
                    config=str(cfg.source),
                )
                task_status.started(self)
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Stop gracefully (what SIGTERM does)."""
        if self.backend is not None:
            self.backend.stopping = True
        sd_notify("STOPPING=1")
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _shutdown(self) -> None:
        saved = False
        if self.store is not None and not self.store.closed:
            try:
                if self.gateway is not None and self.backend is not None:
                    self._save_quality()
                    self._flush_counters()
                    saved = True
            finally:
                self.store.close()
        if self.telemetry is not None:
            self.telemetry.shutdown()
        if self._tun_dev is not None:
            self._tun_dev.close()
        log.info("appliance.stopped", state_saved=saved, reloads=self.reloads)

    async def _signals(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                    continue
                log.info("appliance.stopping", signal=signal.Signals(signum).name)
                self.stop()
                return

    # -- TUN and router ---------------------------------------------------------------------------------

    def _start_tun(self, nursery: trio.Nursery) -> None:
        t = self.cfg.tun
        if t is None:
            return
        from scion_appliance import tun as tun_mod

        why = tun_unavailable()
        if why is not None:
            log.warning("tun.skipped", reason=why, device=t.name)  # the datagram API still works
            return
        policy = TrafficPolicy.from_peers(self.cfg.peers, source=str(self.cfg.source))
        routes = [str(n) for ia in policy.remotes for n in policy.prefixes(ia)]
        self._tun_dev = tun_mod.TunDevice.open(
            t.name, netns=t.netns, mtu=t.mtu, addresses=[str(t.address)] if t.address else [], routes=routes,
            txqueuelen=t.txqueuelen,
        )
        assert self.backend is not None
        self.backend.interfaces["tun"] = {
            "name": self._tun_dev.name,
            "address": str(t.address) if t.address else None,
            "mtu": t.mtu,
            "up": True,
            "netns": t.netns,
        }
        self._routes = set(routes)
        nursery.start_soon(self._run_tunnel, policy)

    async def _run_tunnel(self, policy: TrafficPolicy) -> None:
        assert self.gateway is not None and self.backend is not None
        tunnel = IpTunnel(self.gateway, self._tun_dev, policy, threads=self.cfg.datapath.threads)
        with trio.CancelScope() as scope:
            self._tun_scope = scope
            self.tunnel = self.backend.tunnel = tunnel
            await tunnel.run()

    def _replace_tunnel(self, policy: TrafficPolicy) -> None:
        """A new traffic policy: a fresh tunnel (framing state per remote) on the same device."""
        if self._tun_dev is None or self._nursery is None:
            return
        routes = {str(n) for ia in policy.remotes for n in policy.prefixes(ia)}
        for prefix in sorted(routes - self._routes):
            self._tun_dev.add_route(prefix)
        if self._routes - routes:
            log.warning(
                "tun.routes_kept",
                prefixes=sorted(self._routes - routes),
                note="routes of removed prefixes stay until restart; their packets are dropped as no_route",
            )
        self._routes |= routes
        if self._tun_scope is not None:
            self._tun_scope.cancel()
        self._nursery.start_soon(self._run_tunnel, policy)

    def _start_router(self, nursery: trio.Nursery) -> None:
        r = self.cfg.router
        if r is None:
            return
        from scion_appliance.router import service as router_service
        from scion_appliance.router import topology
        from scion_appliance.scion.keys import load_master_keys

        class EmbeddedRouter(router_service.RouterService):
            async def _signals(self) -> None:  # the appliance's own handler stops the whole nursery
                return None

        dp = router_service.build(topology.load(r.topology), load_master_keys(r.keys_dir).hop_key)
        if self.gateway is not None and connect_local_delivery(dp, self.gateway):
            gw = self.gateway
            log.info("router.local_delivery", gateway=f"{gw.host}:{gw.port}", note="in process, parsed once")
        self._router = EmbeddedRouter(dp)
        nursery.start_soon(self._router.serve)

    def _router_status(self) -> dict[str, Any] | None:
        if self._router is None:
            return None
        dp = self._router.dp
        return {
            "isd_as": str(dp.ia),
            "name": dp.router.name,
            "delivered": dp.counters.get("delivered", 0),
            "delivered_in_process": dp.counters.get("delivered_in_process", 0),
            "interfaces": [
                {
                    "id": ifid,
                    "remote_isd_as": str(intf.neighbor_ia),
                    "state": "up" if dp.links[ifid].up else "down",
                }
                for ifid, intf in sorted(dp.router.interfaces.items())
            ],
        }

    # -- housekeeping -----------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        assert self.gateway is not None and self.backend is not None
        gw, backend = self.gateway, self.backend
        next_catalogue = next_save = time.monotonic()
        while True:
            now = time.monotonic()
            for key in backend.tick(now):
                try:
                    await gw.send(key, b"", msg_type=messages.MessageType.DATA)
                    gw.counters["keepalives_sent"] += 1
                except GatewayError:
                    pass  # no path right now: the peer shows down; the next tick tries again
            self._events(now)
            backend.interfaces["router"] = self._router_status()
            if backend.interfaces.get("tun") is not None and self.tunnel is not None:
                backend.interfaces["tun"]["datapath"] = self.tunnel.datapath()
            self._counter_snap = backend.flat_counters()
            self._path_snap = backend.path_snapshot()
            if now >= next_catalogue:
                next_catalogue = now + CATALOGUE_CHECK_S
                self._check_catalogue()
            if now >= next_save:
                next_save = now + SAVE_EVERY_S
                if self.store is not None and not self.store.closed:
                    self._save_quality()
                    self._flush_counters()
            await trio.sleep(TICK_S)

    def _events(self, now: float) -> None:
        """Handshakes and failovers since the last tick, as log lines and telemetry spans/counters."""
        assert self.gateway is not None and self.backend is not None
        gw, t = self.gateway, telemetry_mod.current()
        names = {str(p.isd_as): p.name for p in self.cfg.peers}
        for key in gw.peers:
            s = gw.session(key)
            if s is not None and self._sessions.get(key) != s.local_index:
                self._sessions[key] = s.local_index
                since = self.backend._connecting_since.get(key)
                duration = max(0.0, s.created - since) if since is not None else 0.0
                t.record_handshake(names.get(key, key), duration, initiator=s.initiator, peer_ia=key)
                log.info("handshake.complete", peer=names.get(key, key), isd_as=key, initiator=s.initiator)
        entries = gw.failover_log
        for e in entries[min(self._seen_failovers, len(entries)) :]:
            dst, to = str(e.get("dst")), e.get("path")
            before = self._active.get(dst)
            self._active[dst] = to
            if e.get("failover") and to:
                t.record_failover(dst, before, str(to), str(e.get("reason")), max(0.0, now - float(e["t"])))
                log.warning("path.failover", dst=dst, to=to, previous=before, reason=e.get("reason"))
            elif to is None:
                log.warning("path.none", dst=dst, reason=e.get("reason"))
        self._seen_failovers = len(entries)
        if t.enabled:
            for dst in gw.peers:
                for p in gw.path_source.paths(dst):
                    q = gw.prober.quality.get(p.id)
                    if q is None:
                        continue
                    new = q.samples - self._rtt_seen.get(p.id, 0)
                    self._rtt_seen[p.id] = q.samples
                    recent = list(getattr(q, "_samples", ()))[-new:] if new > 0 else []
                    for rtt in recent:
                        t.record_path_rtt(dst, p.id, rtt)

    def _check_catalogue(self) -> None:
        if self.source is None or self.gateway is None:
            return
        try:
            changed = self.source.reload_if_changed()
        except CatalogueError as e:
            if str(e) != self._catalogue_error:
                self._catalogue_error = str(e)
                log.error(
                    "paths.catalogue_unusable", error=str(e), note="the paths loaded before stay in use"
                )
            return
        self._catalogue_error = ""
        if changed:
            self.gateway.paths_changed()
            log.info("paths.catalogue_reloaded", file=str(self.source.file), loads=self.source.loads)

    # -- reload (SIGHUP) --------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the config file and apply peers and policy; False (and a log line) if it does not load."""
        assert self.gateway is not None and self.backend is not None
        sd_notify("RELOADING=1")
        try:
            new = config_mod.load(self.cfg.source)
            specs = peer_specs(new, self.lab)
            policy = selection_policy(new)
            tpolicy = TrafficPolicy.from_peers(new.peers, source=str(new.source)) if self._tun_dev else None
        except OperatorError as e:
            log.error("config.reload_failed", error=str(e), note="the running configuration stays")
            sd_notify("READY=1")
            return False
        old = self.cfg
        kept = [k for k in RESTART_ONLY if getattr(old, k) != getattr(new, k)]
        kept += [f"paths.{k}" for k in RESTART_ONLY_PATHS if getattr(old.paths, k) != getattr(new.paths, k)]
        if kept:
            log.warning("config.restart_needed", keys=kept, note="these keep their running values")
        try:
            changes = self.gateway.set_peers(specs)
        except GatewayError as e:
            log.error("config.reload_failed", error=str(e), note="the running configuration stays")
            sd_notify("READY=1")
            return False
        self._show_sig_port()
        self.backend.peers_cfg = list(new.peers)
        self.backend.apply_policy(policy)
        if tpolicy is not None and [(p.isd_as, p.remote_prefixes) for p in old.peers] != [
            (p.isd_as, p.remote_prefixes) for p in new.peers
        ]:
            self._replace_tunnel(tpolicy)
        if new.logging.level != old.logging.level:
            import logging

            logging.getLogger().setLevel(log_mod.parse_level(new.logging.level))
        self.cfg = _merge_reloadable(old, new)
        for key in self.gateway.peers:
            self.gateway.ensure_session(key)
        self.reloads += 1
        log.info("config.reloaded", **changes, restart_needed=kept)
        sd_notify("READY=1")
        return True


def _merge_reloadable(old: Config, new: Config) -> Config:
    """``new`` with the running values of what a reload cannot change."""
    import dataclasses

    paths = dataclasses.replace(new.paths, **{k: getattr(old.paths, k) for k in RESTART_ONLY_PATHS})
    return dataclasses.replace(new, paths=paths, **{k: getattr(old, k) for k in RESTART_ONLY})


def connect_local_delivery(dp: Any, gw: Gateway) -> bool:
    """When ``dp`` (a ``router.dataplane.Dataplane``) is the border router of the gateway's AS and delivers
    to the gateway's underlay address, that traffic goes to ``gw`` in this process, parsed once (by the
    router's step): no sendmmsg, recvmmsg and second parse. Returns whether it was connected."""
    if str(dp.ia) != str(gw.ia) or not dp.delivers_to(str(gw.host), gw.port):
        return False

    def sink(buf: bytearray, stride: int, lens: Any, addrs: bytearray, recs: Any, slots: Any) -> None:
        gw.receive_parsed(buf, stride, lens, addrs, recs, slots, time.monotonic())

    dp.add_local_sink(str(gw.host), gw.port, sink)
    return True


class _NoPaths:
    """The path source of an appliance without peers (nothing to reach)."""

    def paths(self, dst_ia: str) -> list[Any]:
        return []


def run(cfg: Config) -> int:
    """Serve ``cfg`` until SIGTERM; the process exit status."""
    trio.run(Appliance(cfg).run)
    return 0


__all__ = ["Appliance", "connect_local_delivery", "find_lab", "local_host", "peer_specs", "run", "selection_policy"]
