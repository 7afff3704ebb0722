"""OpenTelemetry metrics and traces, exported over OTLP/HTTP (protobuf), off the data plane.

Rules kept here:
- Configuration: the standard ``OTEL_*`` environment variables win over the config file's ``[telemetry]``
  (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_SERVICE_NAME``, ``OTEL_METRIC_EXPORT_INTERVAL`` in ms,
  ``OTEL_EXPORTER_OTLP_TIMEOUT`` in ms, ``OTEL_SDK_DISABLED``). With no endpoint anywhere, or
  ``OTEL_SDK_DISABLED=true``, telemetry is off: no SDK objects, no threads, and every ``record_*`` call
  returns at once. An unreachable collector costs at most the export timeout (3 s unless set), never more.
- The data plane never calls in here. It bumps counters in C; the service registers a snapshot function
  (``counters`` below) that the SDK's export thread calls through observable instruments. So the
  snapshot function must be safe to call from another thread and cheap.
- Control-plane events (handshakes, failovers, probe RTTs) are recorded by the trio code that sees them:
  counters plus spans for handshakes and failovers, a histogram for RTTs.
- Names are dot-namespaced under ``scion.appliance.``, units are UCUM (``{packet}``, ``By``, ``s``, ``1``).

The counter snapshot (``Callable[[], Mapping[str, int]]``, cumulative totals since start); absent keys
are simply not reported:
  ``packets.rx``, ``packets.tx``, ``bytes.rx``, ``bytes.tx``  -> packets/bytes with direction=receive|transmit
  ``drops.<reason>``                                           -> drops with reason=<reason>
  ``replay.rejects``                                           -> replay.rejects
  ``sessions``                                                 -> sessions (current number, up-down)
The path snapshot (``Callable[[], Iterable[Mapping[str, Any]]]``), one mapping per candidate path with
``dst`` (ISD-AS text), ``path`` (path id), ``loss`` (ratio 0..1), ``state`` (e.g. "up", "down") and
``active`` (bool) -> path.loss and path.state gauges.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the SDK is imported only when telemetry is on
    from opentelemetry.metrics import CallbackOptions, Observation

    from scion_appliance.config import Telemetry as TelemetryConfig

PREFIX = "scion.appliance."
DEFAULT_SERVICE_NAME = "scion-appliance"
DEFAULT_INTERVAL_S = 10.0
# An unreachable collector must not hold up a SIGTERM for the SDK's default 10 s per signal.
DEFAULT_EXPORT_TIMEOUT_S = 3.0
# RTT buckets from LAN (0.5 ms) to a bad intercontinental path (2 s).
RTT_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0)

CounterSource = Callable[[], Mapping[str, int]]
PathSource = Callable[[], Iterable[Mapping[str, Any]]]

_DIRECTION = {"rx": "receive", "tx": "transmit"}


@dataclass(frozen=True)
class Settings:
    """Where and how to export, after combining the environment with the config file."""

    enabled: bool
    metrics_endpoint: str | None
    traces_endpoint: str | None
    service_name: str
    interval_s: float
    reason: str
    timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S  # why it is off, or where it exports (for a log line)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def resolve(cfg: TelemetryConfig | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Combine ``OTEL_*`` variables (which win) with the config file's ``[telemetry]`` section."""
    env = os.environ if env is None else env
    service = env.get("OTEL_SERVICE_NAME") or (cfg.service_name if cfg else DEFAULT_SERVICE_NAME)
    interval = cfg.export_interval_s if cfg else DEFAULT_INTERVAL_S
    raw_interval = env.get("OTEL_METRIC_EXPORT_INTERVAL")
    if raw_interval:
        try:
            interval = max(0.001, float(raw_interval) / 1000.0)
        except ValueError:
            pass  # the SDK ignores a bad value the same way; keep the file's
    timeout = DEFAULT_EXPORT_TIMEOUT_S
    raw_timeout = env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    if raw_timeout:
        try:
            timeout = max(0.1, float(raw_timeout) / 1000.0)
        except ValueError:
            pass
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return Settings(False, None, None, service, interval, "off (OTEL_SDK_DISABLED)")
    base = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or (cfg.otlp_endpoint if cfg else None) or "").rstrip("/")
    metrics = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or (f"{base}/v1/metrics" if base else None)
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (f"{base}/v1/traces" if base else None)
    if not metrics and not traces:
        return Settings(False, None, None, service, interval, "off (no OTLP endpoint configured)")
    where = ", ".join(f"{k} to {v}" for k, v in (("metrics", metrics), ("traces", traces)) if v)
    return Settings(True, metrics, traces, service, interval, where, timeout)


class Telemetry:
    """Metrics and spans of one running appliance. ``Telemetry.start(...)``; ``shutdown()`` at exit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._counters: CounterSource | None = None
        self._paths: PathSource | None = None
        self._meter_provider: Any = None
        self._tracer_provider: Any = None
        self._tracer: Any = None
        self._handshakes: Any = None
        self._handshake_failures: Any = None
        self._failovers: Any = None
        self._rtt: Any = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @classmethod
    def start(
        cls,
        cfg: TelemetryConfig | None = None,
        counters: CounterSource | None = None,
        paths: PathSource | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Telemetry:
        t = cls(resolve(cfg, env))
        t.set_sources(counters, paths)
        if t.enabled:
            t._start_sdk()
        return t

    def set_sources(self, counters: CounterSource | None = None, paths: PathSource | None = None) -> None:
        """Register (or replace) the snapshot functions the export thread reads."""
        with self._lock:
            if counters is not None:
                self._counters = counters
            if paths is not None:
                self._paths = paths

    # -- SDK wiring (only when enabled) ---------------------------------------------------------------

    def _start_sdk(self) -> None:
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

        from scion_appliance import __version__

        s = self.settings
        resource = Resource.create({SERVICE_NAME: s.service_name, SERVICE_VERSION: __version__})
        if s.metrics_endpoint:
            self._start_metrics(resource, s.metrics_endpoint, s.interval_s, s.timeout_s)
        if s.traces_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self._tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=s.traces_endpoint, timeout=s.timeout_s))
            )
            self._tracer = self._tracer_provider.get_tracer("scion_appliance")

    def _start_metrics(self, resource: Any, endpoint: str, interval_s: float, timeout_s: float) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

        from scion_appliance import __version__

        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=endpoint, timeout=timeout_s),
            export_interval_millis=interval_s * 1000.0,
            export_timeout_millis=timeout_s * 1000.0,
        )
        rtt_view = View(
            instrument_name=PREFIX + "path.rtt",
            aggregation=ExplicitBucketHistogramAggregation(boundaries=RTT_BUCKETS_S),
        )
        self._meter_provider = MeterProvider(
            metric_readers=[reader], resource=resource, views=[rtt_view], shutdown_on_exit=False
        )
        m = self._meter_provider.get_meter("scion_appliance", __version__)
        m.create_observable_counter(
            PREFIX + "packets",
            [self._observe_packets],
            unit="{packet}",
            description="SCION packets by direction",
        )
        m.create_observable_counter(
            PREFIX + "bytes",
            [self._observe_bytes],
            unit="By",
            description="bytes on the underlay by direction",
        )
        m.create_observable_counter(
            PREFIX + "drops", [self._observe_drops], unit="{packet}", description="packets dropped, by reason"
        )
        m.create_observable_counter(
            PREFIX + "replay.rejects",
            [self._observe_key("replay.rejects")],
            unit="{packet}",
            description="packets refused by the anti-replay window",
        )
        m.create_observable_up_down_counter(
            PREFIX + "sessions",
            [self._observe_key("sessions")],
            unit="{session}",
            description="live sessions",
        )
        m.create_observable_gauge(
            PREFIX + "path.loss", [self._observe_path_loss], unit="1", description="probe loss ratio per path"
        )
        m.create_observable_gauge(
            PREFIX + "path.state",
            [self._observe_path_state],
            unit="1",
            description="1 for each path in its current state (attribute state), with active=true|false",
        )
        self._handshakes = m.create_counter(
            PREFIX + "handshakes", unit="{handshake}", description="completed Noise IK handshakes"
        )
        self._handshake_failures = m.create_counter(
            PREFIX + "handshake.failures", unit="{handshake}", description="failed handshakes, by reason"
        )
        self._failovers = m.create_counter(
            PREFIX + "failovers", unit="{failover}", description="switches of the active path, by reason"
        )
        self._rtt = m.create_histogram(
            PREFIX + "path.rtt", unit="s", description="probe round-trip time per path"
        )

    # -- observable callbacks (run on the SDK's export thread) -----------------------------------------

    def _snapshot(self) -> Mapping[str, int]:
        source = self._counters
        return source() if source is not None else {}

    def _path_snapshot(self) -> list[Mapping[str, Any]]:
        source = self._paths
        return list(source()) if source is not None else []

    def _observe_direction(self, what: str) -> list[Observation]:
        from opentelemetry.metrics import Observation

        snap = self._snapshot()
        return [
            Observation(snap[f"{what}.{d}"], {"direction": name})
            for d, name in _DIRECTION.items()
            if f"{what}.{d}" in snap
        ]

    def _observe_packets(self, options: CallbackOptions) -> list[Observation]:
        return self._observe_direction("packets")

    def _observe_bytes(self, options: CallbackOptions) -> list[Observation]:
        return self._observe_direction("bytes")

    def _observe_drops(self, options: CallbackOptions) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(v, {"reason": k[len("drops.") :]})
            for k, v in self._snapshot().items()
            if k.startswith("drops.")
        ]

    def _observe_key(self, key: str) -> Callable[[CallbackOptions], list[Observation]]:
        def observe(options: CallbackOptions) -> list[Observation]:
            from opentelemetry.metrics import Observation

            snap = self._snapshot()
            return [Observation(snap[key])] if key in snap else []

        return observe

    def _observe_path_loss(self, options: CallbackOptions) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(float(p["loss"]), {"dst": str(p["dst"]), "path": str(p["path"])})
            for p in self._path_snapshot()
            if p.get("loss") is not None
        ]

    def _observe_path_state(self, options: CallbackOptions) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(
                1,
                {
                    "dst": str(p["dst"]),
                    "path": str(p["path"]),
                    "state": str(p.get("state", "unknown")),
                    "active": bool(p.get("active", False)),
                },
            )
            for p in self._path_snapshot()
        ]

    # -- control-plane events ----------------------------------------------------------------------------

    def record_path_rtt(self, dst_ia: str, path_id: str, rtt_s: float) -> None:
        if self._rtt is not None:
            self._rtt.record(rtt_s, {"dst": dst_ia, "path": path_id})

    def record_handshake(
        self,
        peer: str,
        duration_s: float,
        *,
        ok: bool = True,
        initiator: bool = True,
        reason: str | None = None,
        peer_ia: str | None = None,
    ) -> None:
        """A finished handshake (``ok``) or a failed one (``reason`` says why): a counter and a span."""
        if not self.enabled:
            return
        role = "initiator" if initiator else "responder"
        attrs: dict[str, str] = {"peer": peer, "role": role}
        if ok:
            if self._handshakes is not None:
                self._handshakes.add(1, attrs)
        elif self._handshake_failures is not None:
            self._handshake_failures.add(1, {**attrs, "reason": reason or "unknown"})
        span_attrs: dict[str, str | bool] = {"scion.peer": peer, "scion.handshake.role": role, "scion.ok": ok}
        if peer_ia:
            span_attrs["scion.peer.isd_as"] = peer_ia
        if reason:
            span_attrs["scion.handshake.failure"] = reason
        self._span("scion.handshake", duration_s, span_attrs, None if ok else (reason or "handshake failed"))

    def record_failover(
        self,
        dst_ia: str,
        from_path: str | None,
        to_path: str,
        reason: str,
        detection_s: float = 0.0,
    ) -> None:
        """A switch of the active path to ``dst_ia``: a counter and a span covering detection to switch."""
        if not self.enabled:
            return
        if self._failovers is not None:
            self._failovers.add(1, {"dst": dst_ia, "reason": reason})
        attrs: dict[str, str | bool] = {
            "scion.dst.isd_as": dst_ia,
            "scion.path.from": from_path or "",
            "scion.path.to": to_path,
            "scion.failover.reason": reason,
        }
        self._span("scion.failover", detection_s, attrs, None)

    def _span(self, name: str, duration_s: float, attrs: Mapping[str, str | bool], error: str | None) -> None:
        if self._tracer is None:
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        end = time.time_ns()
        start = end - max(0, int(duration_s * 1e9))
        span = self._tracer.start_span(name, kind=SpanKind.INTERNAL, start_time=start, attributes=dict(attrs))
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export everything now (used at shutdown and by tests); False if a provider timed out."""
        ok = True
        if self._meter_provider is not None:
            ok = bool(self._meter_provider.force_flush(timeout_millis=timeout_s * 1000)) and ok
        if self._tracer_provider is not None:
            ok = bool(self._tracer_provider.force_flush(timeout_millis=int(timeout_s * 1000))) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and stop the export threads. Safe to call twice, and on a disabled instance."""
        mp, self._meter_provider = self._meter_provider, None
        tp, self._tracer_provider = self._tracer_provider, None
        self._tracer = self._handshakes = self._handshake_failures = self._failovers = self._rtt = None
        if mp is not None:
            mp.shutdown()
        if tp is not None:
            tp.shutdown()


# -- the process-wide instance: modules call telemetry.record_handshake(...) without plumbing -----------

_current = Telemetry(
    Settings(False, None, None, DEFAULT_SERVICE_NAME, DEFAULT_INTERVAL_S, "off (not started)")
)


def install(t: Telemetry) -> Telemetry:
    """Make ``t`` the instance the module-level ``record_*`` helpers use (the service does this)."""
    global _current
    _current = t
    return t


def current() -> Telemetry:
    return _current


def record_handshake(
    peer: str,
    duration_s: float,
    *,
    ok: bool = True,
    initiator: bool = True,
    reason: str | None = None,
    peer_ia: str | None = None,
) -> None:
    _current.record_handshake(peer, duration_s, ok=ok, initiator=initiator, reason=reason, peer_ia=peer_ia)


def record_failover(
    dst_ia: str, from_path: str | None, to_path: str, reason: str, detection_s: float = 0.0
) -> None:
    _current.record_failover(dst_ia, from_path, to_path, reason, detection_s)


def record_path_rtt(dst_ia: str, path_id: str, rtt_s: float) -> None:
    _current.record_path_rtt(dst_ia, path_id, rtt_s)
