"""An OTLP metrics and traces receiver for the tests, built on the OpenTelemetry Python proto
package and grpcio (both in integration/.venv-otel): serves MetricsService/Export and
TraceService/Export over gRPC on 127.0.0.1, and OTLP/HTTP POST /v1/metrics (protobuf, gzip
or not) on another port; prints the gRPC port as the first line and the HTTP port as the
second, then one JSON line per data point (sums, gauges, histograms) or span it decoded."""

import gzip
import http.server
import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def attributes(kvs):
    out = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


class Spans(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    print(
                        json.dumps(
                            {
                                "span": span.name,
                                "attributes": attributes(span.attributes),
                                "resource": attributes(rs.resource.attributes),
                                "start_ns": span.start_time_unix_nano,
                                "end_ns": span.end_time_unix_nano,
                            }
                        ),
                        flush=True,
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


class Sink(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        print_metrics(request, dict(context.invocation_metadata()))
        return metrics_service_pb2.ExportMetricsServiceResponse()


class HttpMetrics(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/metrics":
            self.send_response(404)
            self.end_headers()
            return
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        request.ParseFromString(body)
        print_metrics(request, {k.lower(): v for k, v in self.headers.items()}, "http")
        answer = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def print_metrics(request, metadata, transport="grpc"):
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind == "gauge":
                    for dp in m.gauge.data_points:
                        print(json.dumps({"name": m.name, "kind": kind, "attributes": attributes(dp.attributes),
                                          "value": dp.as_double}), flush=True)
                    continue
                if kind == "histogram":
                    for dp in m.histogram.data_points:
                        print(json.dumps({"name": m.name, "kind": kind, "attributes": attributes(dp.attributes),
                                          "count": dp.count, "sum": dp.sum,
                                          "buckets": len(dp.bucket_counts), "bounds": len(dp.explicit_bounds),
                                          "temporality": m.histogram.aggregation_temporality}), flush=True)
                    continue
                if kind != "sum":
                    print(json.dumps({"name": m.name, "error": f"unexpected {kind}"}), flush=True)
                    continue
                for dp in m.sum.data_points:
                    print(
                        json.dumps(
                            {
                                "name": m.name,
                                "kind": kind,
                                "unit": m.unit,
                                "monotonic": m.sum.is_monotonic,
                                "temporality": m.sum.aggregation_temporality,
                                "attributes": attributes(dp.attributes),
                                "resource": attributes(rm.resource.attributes),
                                "scope": sm.scope.name,
                                "start_ns": dp.start_time_unix_nano,
                                "time_ns": dp.time_unix_nano,
                                "value": dp.as_double,
                                "tenant": metadata.get("x-scope-orgid", ""),
                                "transport": transport,
                            }
                        ),
                        flush=True,
                    )


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Sink(), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Spans(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HttpMetrics)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    print(port, flush=True)
    print(web.server_address[1], flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
