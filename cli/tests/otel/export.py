"""Exports a counter, a histogram and a gauge with the OpenTelemetry Python
SDK's OTLP gRPC exporter to the endpoint given as the first argument."""

import sys

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

endpoint = sys.argv[1]
exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=200)
resource = Resource.create({"service.name": "shop", "service.instance.id": "py-1"})
provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = provider.get_meter("tidemark-test", "0.1")

orders = meter.create_counter("orders", description="orders placed")
latency = meter.create_histogram("checkout.latency", unit="s")
meter.create_observable_gauge("queue.depth", callbacks=[lambda _: [Observation(5, {"queue": "emails"})]])

for i in range(10):
    orders.add(1, {"region": "eu"})
    latency.record(0.05 * (i + 1), {"region": "eu"})

provider.force_flush()
provider.shutdown()
