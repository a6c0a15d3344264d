#!/usr/bin/env python3
"""OpenTelemetry Python profiling SDK driver for flamepipe's OTLP tests.

Burns CPU in distinctively named functions, one of them on a thread with a chosen name,
while `opentelemetry-sdk-extension-profiling` samples every thread's stack and exports
OTLP profiles over gRPC or OTLP/HTTP:

    python otel_python_profiled.py --endpoint http://127.0.0.2:4317 --protocol grpc \
        --service my-service --seconds 4 [--tenant t1] [--thread-name flamepipe-worker]
    python otel_python_profiled.py --endpoint http://127.0.0.3:4318 --protocol http ...

`--endpoint` is the server's base URL; for OTLP/HTTP the driver appends
`/v1development/profiles`. Run it with integration/.venv-otel/bin/python.

Unlike the Pyroscope drivers, this one reports what the exporter saw: it prints one
`export: SUCCESS|FAILURE` line per export and exits 3 if any export failed or none
happened (the SDK itself only logs failures).
"""
import argparse
import logging
import sys
import threading
import time
from importlib.metadata import version

from opentelemetry.sdk.extension.profiling import Profiler
from opentelemetry.sdk.extension.profiling.export.grpc import OTLPProfileExporter
from opentelemetry.sdk.extension.profiling.export.http import OTLPHTTPProfileExporter
from opentelemetry.sdk.extension.profiling.export.result import ProfileExportResult
from opentelemetry.sdk.resources import Resource


def flamepipe_fib(n):
    if n < 2:
        return n
    return flamepipe_fib(n - 1) + flamepipe_fib(n - 2)


def flamepipe_busy_work(deadline):
    acc = 0
    while time.time() < deadline:
        for i in range(20000):
            acc = (acc * 31 + i) % 1000003
    return acc


def flamepipe_main_loop(deadline):
    rounds = 0
    while time.time() < deadline:
        flamepipe_fib(22)
        rounds += 1
    return rounds


class RecordingExporter:
    """Wraps the SDK's exporter to keep each export's result. On a failure it sends the
    same request once more by itself to print what the server said (the SDK logs only the
    gRPC code or the HTTP reason phrase)."""

    def __init__(self, inner, protocol, endpoint, headers):
        self._inner = inner
        self._protocol = protocol
        self._endpoint = endpoint
        self._headers = headers or {}
        self.results = []

    def export(self, request):
        samples = sum(
            len(p.samples)
            for rp in request.resource_profiles
            for sp in rp.scope_profiles
            for p in sp.profiles
        )
        result = self._inner.export(request)
        self.results.append(result)
        print("export: %s (%d samples, %d bytes)" % (
            result.name, samples, request.ByteSize()), flush=True)
        if result != ProfileExportResult.SUCCESS:
            print("  server said: %s" % self._diagnose(request), flush=True)
        return result

    def _diagnose(self, request):
        try:
            if self._protocol == "grpc":
                import grpc
                from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2_grpc import (
                    ProfilesServiceStub,
                )
                target = self._endpoint.split("://", 1)[-1]
                with grpc.insecure_channel(target) as channel:
                    try:
                        ProfilesServiceStub(channel).Export(
                            request, metadata=list(self._headers.items()), timeout=10)
                        return "OK on the second try"
                    except grpc.RpcError as e:
                        return "%s %s" % (e.code(), e.details())
            import requests
            from google.rpc import status_pb2
            response = requests.post(
                self._endpoint, data=request.SerializeToString(), timeout=10,
                headers=dict(self._headers, **{"Content-Type": "application/x-protobuf"}))
            status = status_pb2.Status()
            try:
                status.ParseFromString(response.content)
            except Exception:
                return "HTTP %d %r" % (response.status_code, response.content[:300])
            return "HTTP %d %s" % (response.status_code, status.message)
        except Exception as e:  # a diagnosis must not hide the failure itself
            return "(could not ask: %r)" % (e,)

    def shutdown(self):
        self._inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self._inner.force_flush(timeout_millis)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:4317")
    p.add_argument("--protocol", choices=["grpc", "http"], required=True)
    p.add_argument("--service", required=True, help="service.name of the resource")
    p.add_argument("--seconds", type=float, default=4.0, help="CPU burn duration")
    p.add_argument("--tenant", default="", help="X-Scope-OrgID")
    p.add_argument("--thread-name", default="flamepipe-worker")
    p.add_argument("--export-interval", type=float, default=2.0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    headers = {"x-scope-orgid": a.tenant} if a.tenant else None
    base = a.endpoint.rstrip("/")
    if a.protocol == "grpc":
        endpoint = base
        inner = OTLPProfileExporter(endpoint=endpoint, insecure=True, headers=headers, timeout=10)
    else:
        endpoint = base + "/v1development/profiles"
        inner = OTLPHTTPProfileExporter(endpoint=endpoint, headers=headers, timeout=10)
    exporter = RecordingExporter(inner, a.protocol, endpoint, headers)
    profiler = Profiler(
        exporter=exporter,
        resource=Resource.create({"service.name": a.service}),
        sample_interval=0.01,
        export_interval=a.export_interval,
    )
    print("opentelemetry-sdk-extension-profiling %s (opentelemetry-proto %s): %s %s service=%s" % (
        version("opentelemetry-sdk-extension-profiling"), version("opentelemetry-proto"),
        a.protocol, a.endpoint, a.service), flush=True)
    profiler.start()
    deadline = time.time() + a.seconds
    worker = threading.Thread(
        target=flamepipe_busy_work, args=(deadline,), name=a.thread_name)
    worker.start()
    rounds = flamepipe_main_loop(deadline)
    worker.join()
    # Flushes what is buffered, exports it and shuts the exporter down.
    profiler.stop(flush=True)
    ok = sum(r == ProfileExportResult.SUCCESS for r in exporter.results)
    print("done: rounds=%d exports=%d ok=%d" % (rounds, len(exporter.results), ok), flush=True)
    if not exporter.results or ok != len(exporter.results):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
