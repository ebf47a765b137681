#!/usr/bin/env python3
"""A small instrumented service for the dashboard tests: the real OpenTelemetry Python SDK
sending a trace and its logs over OTLP/HTTP.

  app.py ENDPOINT SERVICE

Sends one trace (a server span, a child that raises and records the exception with its
stack trace), logs written through Python's `logging` inside the spans (so the SDK stamps
them with the trace and span ids) with attributes, and one log outside any trace. Prints
{"trace_id": ..., "ok": true}; exits 1 unless every export succeeded.
"""
import json
import logging
import sys

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

endpoint, service = sys.argv[1].rstrip("/"), sys.argv[2]
span_exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
log_exporter = OTLPLogExporter(endpoint=endpoint + "/v1/logs")
results = []
for exporter in (span_exporter, log_exporter):
    original = exporter.export
    def export(*args, _original=original, **kwargs):
        result = _original(*args, **kwargs)
        # Span and log exporters answer with enums of their own, both named SUCCESS on success.
        results.append(getattr(result, "name", "") == "SUCCESS")
        return result
    exporter.export = export

resource = Resource.create({"service.name": service, "service.version": "2.0.0", "host.name": "app-1"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
set_logger_provider(logger_provider)
log = logging.getLogger("checkout.app")
log.setLevel(logging.INFO)
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

log.info("service started", extra={"app.port": 8080})
tracer = tracer_provider.get_tracer("vigil.tests.app", "0.1.0")
with tracer.start_as_current_span("POST /api/pay", kind=trace.SpanKind.SERVER,
                                  attributes={"http.request.method": "POST", "http.route": "/api/pay"}) as root:
    log.info("payment requested", extra={"order.id": "A-1001"})
    with tracer.start_as_current_span("charge card", kind=trace.SpanKind.CLIENT) as child:
        try:
            def charge(amount):
                raise TimeoutError(f"card processor did not answer for an amount of {amount}")
            charge(42)
        except TimeoutError as error:
            child.record_exception(error)
            child.set_status(Status(StatusCode.ERROR, str(error)))
            log.error("payment failed", extra={"order.id": "A-1001"})
trace_id = format(root.get_span_context().trace_id, "032x")

tracer_provider.shutdown()
logger_provider.shutdown()
print(json.dumps({"trace_id": trace_id, "ok": bool(results) and all(results)}))
sys.exit(0 if results and all(results) else 1)
