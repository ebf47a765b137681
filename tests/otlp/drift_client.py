#!/usr/bin/env python3
"""The tests' drift client: a model service instrumented with the real OpenTelemetry SDK.

  drift_client.py ENDPOINT SPEC_JSON

ENDPOINT: base URL of an OTLP/HTTP receiver. SPEC_JSON: {"model", "version", "feature",
"edges": [...], "values": [...], "category_feature", "categories": [...]}. Records the numeric
values into a histogram whose bucket boundaries are the reference's edges, and the categories
into a counter, all carrying ml.model.name / ml.model.version / ml.feature.name (and
ml.feature.category), exporting cumulative points twice (half the data each time) so the
receiver has to take increments. Exits 1 unless every export succeeded.
"""
import json
import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

endpoint, spec = sys.argv[1].rstrip("/"), json.loads(sys.argv[2])
exporter = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics")
results = []
original = exporter.export
def export(*args, **kwargs):
    result = original(*args, **kwargs)
    results.append(result)
    return result
exporter.export = export

reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
view = View(instrument_name="model_feature_value",
            aggregation=ExplicitBucketHistogramAggregation(boundaries=spec["edges"]))
provider = MeterProvider(resource=Resource.create({"service.name": "fraud-scoring"}),
                         metric_readers=[reader], views=[view])
meter = provider.get_meter("drift-client")
histogram = meter.create_histogram("model_feature_value")
counter = meter.create_counter("model_feature_category")
base = {"ml.model.name": spec["model"], "ml.model.version": spec["version"]}

values, categories = spec["values"], spec["categories"]
for part in (slice(0, len(values) // 2), slice(len(values) // 2, None)):
    for v in values[part]:
        histogram.record(v, {**base, "ml.feature.name": spec["feature"]})
    share = slice(part.start * len(categories) // len(values), None if part.stop is None else part.stop * len(categories) // len(values))
    for c in categories[share]:
        counter.add(1, {**base, "ml.feature.name": spec["category_feature"], "ml.feature.category": c})
    provider.force_flush()
provider.shutdown()
ok = bool(results) and all(r == MetricExportResult.SUCCESS for r in results)
print(json.dumps({"exports": len(results), "ok": ok}))
sys.exit(0 if ok else 1)
