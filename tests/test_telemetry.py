"""Telemetry: a real OTLP/HTTP receiver (http.server on 127.0.0.1) decodes what the SDK exports."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from scion_appliance import config, telemetry
from scion_appliance.telemetry import Telemetry

CFG = config.parse(
    '[identity]\nprivate_key_file = "k"\nisd_as = "1-ff00:0:110"\n'
    '[telemetry]\nservice_name = "edge-7"\nexport_interval_s = 3600\n'
).telemetry


class Receiver:
    """A minimal OTLP/HTTP collector: keeps every decoded request, answers 200 with an empty response."""

    def __init__(self) -> None:
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.traces: list[ExportTraceServiceRequest] = []
        self.content_types: set[str] = set()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.content_types.add(self.headers["Content-Type"])
                if self.path == "/v1/metrics":
                    req: Any = ExportMetricsServiceRequest()
                    req.ParseFromString(body)
                    receiver.metrics.append(req)
                elif self.path == "/v1/traces":
                    req = ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    receiver.traces.append(req)
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def latest_metrics(self) -> dict[str, Any]:
        """Metric name -> Metric proto, from the last export."""
        req = self.metrics[-1]
        return {m.name: m for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def resource_attrs(self) -> dict[str, str]:
        rm = self.metrics[-1].resource_metrics[0]
        return {kv.key: kv.value.string_value for kv in rm.resource.attributes}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def attrs(point: Any) -> dict[str, Any]:
    out = {}
    for kv in point.attributes:
        v = kv.value
        out[kv.key] = v.string_value if v.HasField("string_value") else v.bool_value
    return out


def points(metric: Any) -> dict[tuple[tuple[str, Any], ...], Any]:
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    return {tuple(sorted(attrs(p).items())): p for p in data.data_points}


def value(point: Any) -> float:
    return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double


def test_metrics_exported_with_names_units_and_values(receiver: Receiver) -> None:
    counters = {
        "packets.rx": 0,
        "packets.tx": 0,
        "bytes.rx": 0,
        "bytes.tx": 0,
        "drops.bad_mac": 0,
        "drops.replay": 0,
        "replay.rejects": 0,
        "sessions": 0,
    }
    paths = [
        {"dst": "1-ff00:0:111", "path": "a", "loss": 0.0, "state": "up", "active": True},
        {"dst": "1-ff00:0:111", "path": "b", "loss": 0.25, "state": "down", "active": False},
    ]
    t = Telemetry.start(
        CFG,
        counters=lambda: dict(counters),
        paths=lambda: paths,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
    )
    try:
        assert t.enabled
        # Known traffic: 1000 packets of 1400 B out, 998 in, 2 drops with a bad MAC, 3 replays.
        counters.update({"packets.tx": 1000, "bytes.tx": 1_400_000, "packets.rx": 998, "bytes.rx": 1_397_200})
        counters.update({"drops.bad_mac": 2, "drops.replay": 3, "replay.rejects": 3, "sessions": 2})
        t.record_handshake("branch-a", 0.004, peer_ia="1-ff00:0:111")
        t.record_handshake("branch-a", 0.5, ok=False, reason="timeout")
        t.record_handshake("branch-b", 0.003, initiator=False)
        t.record_failover("1-ff00:0:111", "b", "a", "probe_loss", detection_s=0.12)
        for rtt in (0.004, 0.006, 0.030):
            t.record_path_rtt("1-ff00:0:111", "a", rtt)
        assert t.force_flush(10)
    finally:
        t.shutdown()

    assert receiver.content_types == {"application/x-protobuf"}
    assert receiver.resource_attrs()["service.name"] == "edge-7"
    m = receiver.latest_metrics()
    p = "scion.appliance."
    units = {name[len(p) :]: metric.unit for name, metric in m.items() if name.startswith(p)}
    assert units == {
        "packets": "{packet}",
        "bytes": "By",
        "drops": "{packet}",
        "replay.rejects": "{packet}",
        "sessions": "{session}",
        "path.loss": "1",
        "path.state": "1",
        "handshakes": "{handshake}",
        "handshake.failures": "{handshake}",
        "failovers": "{failover}",
        "path.rtt": "s",
    }

    packets = points(m[p + "packets"])
    assert value(packets[(("direction", "transmit"),)]) == 1000
    assert value(packets[(("direction", "receive"),)]) == 998
    assert m[p + "packets"].sum.is_monotonic
    nbytes = points(m[p + "bytes"])
    assert value(nbytes[(("direction", "transmit"),)]) == 1_400_000
    assert value(nbytes[(("direction", "receive"),)]) == 1_397_200
    drops = points(m[p + "drops"])
    assert value(drops[(("reason", "bad_mac"),)]) == 2 and value(drops[(("reason", "replay"),)]) == 3
    assert value(next(iter(points(m[p + "replay.rejects"]).values()))) == 3
    assert value(next(iter(points(m[p + "sessions"]).values()))) == 2
    assert not m[p + "sessions"].sum.is_monotonic

    hs = points(m[p + "handshakes"])
    assert value(hs[(("peer", "branch-a"), ("role", "initiator"))]) == 1
    assert value(hs[(("peer", "branch-b"), ("role", "responder"))]) == 1
    fails = points(m[p + "handshake.failures"])
    assert value(fails[(("peer", "branch-a"), ("reason", "timeout"), ("role", "initiator"))]) == 1
    fo = points(m[p + "failovers"])
    assert value(fo[(("dst", "1-ff00:0:111"), ("reason", "probe_loss"))]) == 1

    loss = points(m[p + "path.loss"])
    assert value(loss[(("dst", "1-ff00:0:111"), ("path", "b"))]) == 0.25
    state = points(m[p + "path.state"])
    assert (("active", True), ("dst", "1-ff00:0:111"), ("path", "a"), ("state", "up")) in state
    assert (("active", False), ("dst", "1-ff00:0:111"), ("path", "b"), ("state", "down")) in state

    (rtt,) = points(m[p + "path.rtt"]).values()
    assert rtt.count == 3 and rtt.sum == pytest.approx(0.040)
    assert list(rtt.explicit_bounds) == list(telemetry.RTT_BUCKETS_S)
    # 0.004 and 0.006 fall in (0.002, 0.005] and (0.005, 0.01]; 0.030 in (0.02, 0.05]
    bounds = list(rtt.explicit_bounds)
    counts = list(rtt.bucket_counts)
    assert counts[bounds.index(0.005)] == 1 and counts[bounds.index(0.01)] == 1
    assert counts[bounds.index(0.05)] == 1

    spans = [
        s for req in receiver.traces for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans
    ]
    names = sorted(s.name for s in spans)
    assert names == ["scion.failover", "scion.handshake", "scion.handshake", "scion.handshake"]
    failed = next(s for s in spans if s.status.code == 2)  # STATUS_CODE_ERROR
    assert failed.status.message == "timeout"
    assert failed.end_time_unix_nano - failed.start_time_unix_nano == pytest.approx(0.5e9, rel=0.01)
    fail_span = next(s for s in spans if s.name == "scion.failover")
    fattrs = {kv.key: kv.value.string_value for kv in fail_span.attributes}
    assert fattrs["scion.path.to"] == "a" and fattrs["scion.failover.reason"] == "probe_loss"


def test_counter_values_follow_the_snapshot_between_exports(receiver: Receiver) -> None:
    snap = {"packets.tx": 5}
    t = Telemetry.start(CFG, counters=lambda: dict(snap), env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
    try:
        t.force_flush()
        snap["packets.tx"] = 12
        t.force_flush()
    finally:
        t.shutdown()
    values = []
    for req in receiver.metrics:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "scion.appliance.packets":
                        values.append(value(metric.sum.data_points[0]))
    assert values[:2] == [5, 12]


def test_signal_specific_endpoint_and_service_name_from_env(receiver: Receiver) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.url + "/v1/metrics",
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_METRIC_EXPORT_INTERVAL": "250",
    }
    s = telemetry.resolve(CFG, env)
    assert s.enabled and s.metrics_endpoint == receiver.url + "/v1/metrics" and s.traces_endpoint is None
    assert s.interval_s == 0.25
    t = Telemetry.start(CFG, counters=lambda: {"sessions": 1}, env=env)
    try:
        t.record_handshake("x", 0.01)  # no trace endpoint: counted, no span, no error
        assert t.force_flush()
    finally:
        t.shutdown()
    assert receiver.resource_attrs()["service.name"] == "from-env"
    assert receiver.traces == []


def test_env_endpoint_wins_over_config_file() -> None:
    cfg = config.parse(
        '[identity]\nprivate_key_file = "k"\nisd_as = "1-ff00:0:110"\n'
        '[telemetry]\notlp_endpoint = "http://file.invalid:4318"\n'
    ).telemetry
    assert telemetry.resolve(cfg, {}).metrics_endpoint == "http://file.invalid:4318/v1/metrics"
    s = telemetry.resolve(cfg, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/"})
    assert s.metrics_endpoint == "http://127.0.0.1:9/v1/metrics"
    assert s.traces_endpoint == "http://127.0.0.1:9/v1/traces"


@pytest.mark.parametrize(
    "env",
    [{}, {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["no-endpoint", "sdk-disabled"],
)
def test_off_cleanly_without_threads(env: dict[str, str]) -> None:
    before = set(threading.enumerate())
    t = Telemetry.start(CFG, counters=lambda: {"packets.tx": 1}, env=env)
    t.record_handshake("x", 0.1)
    t.record_failover("1-ff00:0:111", None, "a", "down")
    t.record_path_rtt("1-ff00:0:111", "a", 0.01)
    assert t.force_flush()
    t.shutdown()
    assert not t.enabled and "off" in t.settings.reason
    assert set(threading.enumerate()) == before


def test_module_helpers_go_to_the_installed_instance(receiver: Receiver) -> None:
    t = telemetry.install(Telemetry.start(CFG, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}))
    try:
        telemetry.record_failover("2-ff00:0:210", "p1", "p2", "link_down")
        telemetry.record_handshake("dc", 0.002)
        telemetry.record_path_rtt("2-ff00:0:210", "p2", 0.01)
        assert telemetry.current() is t
        t.force_flush()
    finally:
        t.shutdown()
        telemetry.install(Telemetry(telemetry.resolve(None, {})))
    m = receiver.latest_metrics()
    assert value(next(iter(points(m["scion.appliance.failovers"]).values()))) == 1
    assert value(next(iter(points(m["scion.appliance.handshakes"]).values()))) == 1


def test_unreachable_collector_does_not_raise_or_hang() -> None:
    # Port 9 (discard) on loopback: nothing listens. Exporting fails quietly within the export timeout,
    # so a SIGTERM is not held up by a dead collector.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "500"}
    assert telemetry.resolve(CFG, env).timeout_s == 0.5
    started = time.monotonic()
    t = Telemetry.start(CFG, counters=lambda: {"packets.tx": 1}, env=env)
    try:
        t.record_handshake("x", 0.01)
        t.force_flush(timeout_s=2)
    finally:
        t.shutdown()
    assert time.monotonic() - started < 5
