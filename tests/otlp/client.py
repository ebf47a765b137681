#!/usr/bin/env python3
"""The tests' OTLP client: the real OpenTelemetry Python SDK and exporters.

  client.py MODE ENDPOINT SERVICE

MODE: http (OTLP/HTTP protobuf), http-gzip, grpc, grpc-gzip. ENDPOINT: base URL of the
receiver. Exports, under service.name SERVICE, one collection of: a counter
(rig_requests), an up-down counter (rig_inflight), a histogram (rig_latency, ms), an
observable gauge (rig_temperature, Cel), and one trace of three spans (one failing, with an
event). Prints a JSON summary of what was sent; exits 1 unless every export succeeded.
"""
import json
import sys
import time

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableGauge, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import Status, StatusCode

mode, endpoint, service = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
gzip = mode.endswith("-gzip")
cumulative = {Counter: AggregationTemporality.CUMULATIVE, UpDownCounter: AggregationTemporality.CUMULATIVE,
              Histogram: AggregationTemporality.CUMULATIVE, ObservableGauge: AggregationTemporality.CUMULATIVE}
if mode.startswith("grpc"):
    from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    compression = Compression.Gzip if gzip else Compression.NoCompression
    # An https:// endpoint uses TLS with the CA of OTEL_EXPORTER_OTLP_CERTIFICATE; headers
    # (a bearer token) come from OTEL_EXPORTER_OTLP_HEADERS, as for any SDK user.
    insecure = not endpoint.startswith("https://")
    metric_exporter = OTLPMetricExporter(endpoint=endpoint, insecure=insecure, compression=compression,
                                         preferred_temporality=cumulative)
    span_exporter = OTLPSpanExporter(endpoint=endpoint, insecure=insecure, compression=compression)
else:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    compression = Compression.Gzip if gzip else Compression.NoCompression
    # With endpoint= the SDK does not append /v1/...; the full URL is given.
    metric_exporter = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", compression=compression,
                                         preferred_temporality=cumulative)
    span_exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", compression=compression)

# force_flush() reports success even when an export failed: record the real results.
results = []
for exporter in (metric_exporter, span_exporter):
    original = exporter.export
    def export(*args, _original=original, **kwargs):
        result = _original(*args, **kwargs)
        results.append(result in (MetricExportResult.SUCCESS, SpanExportResult.SUCCESS))
        return result
    exporter.export = export

resource = Resource.create({"service.name": service, "service.version": "1.2.3", "deployment.environment": "test"})
reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = meter_provider.get_meter("vigil.tests", "0.1.0")
requests = meter.create_counter("rig_requests", unit="1", description="requests handled")
inflight = meter.create_up_down_counter("rig_inflight", unit="1", description="in flight")
latency = meter.create_histogram("rig_latency", unit="ms", description="request latency")
meter.create_observable_gauge("rig_temperature", unit="Cel", description="a gauge",
                              callbacks=[lambda options: [metrics.Observation(21.5, {"room": "a"}),
                                                          metrics.Observation(19.0, {"room": "b"})]])
for i in range(10):
    route = "/api" if i % 2 else "/health"
    requests.add(1, {"route": route, "code": "200"})
    latency.record(5.0 * (i + 1), {"route": route})
inflight.add(3)
inflight.add(-1)

tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
tracer = tracer_provider.get_tracer("vigil.tests", "0.1.0")
with tracer.start_as_current_span("GET /api/orders", kind=trace.SpanKind.SERVER,
                                  attributes={"http.request.method": "GET", "http.response.status_code": 200}) as root:
    with tracer.start_as_current_span("db.query", kind=trace.SpanKind.CLIENT, attributes={"db.system": "postgresql"}):
        time.sleep(0.01)
    with tracer.start_as_current_span("cache.get", kind=trace.SpanKind.CLIENT) as failing:
        failing.add_event("cache miss", {"key": "orders:42"})
        failing.set_status(Status(StatusCode.ERROR, "redis timeout"))
    # Recorded inside a sampled span: the SDK attaches exemplars carrying this trace.
    meter.create_counter("rig_orders", unit="1").add(1, {"route": "/api/orders"})
    meter.create_histogram("rig_order_latency", unit="ms").record(42.0, {"route": "/api/orders"})
trace_id = format(root.get_span_context().trace_id, "032x")

meter_provider.shutdown()  # one final collect + export
tracer_provider.shutdown()
print(json.dumps({"trace_id": trace_id, "exports": len(results), "ok": all(results)}))
sys.exit(0 if results and all(results) else 1)
