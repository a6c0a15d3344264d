#!/usr/bin/env python3
"""Real pyroscope-io client driver for flamepipe integration tests.

Burns CPU in distinctively named functions while the pyroscope-io SDK
(1.x or 0.8.x) profiles the process and uploads to --server.

    python pyroscope_python.py --server http://127.0.0.1:4040 --app myapp \
        --seconds 12 --tag env=test --tag region=local [--tenant t1]

Run it with integration/.venv/bin/python (1.x) or
integration/.venv-legacy/bin/python (0.8.x).
"""
import argparse
import inspect
import sys
import time

import pyroscope


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


def flamepipe_main_loop(seconds, tag_fib=False):
    end = time.time() + seconds
    rounds = 0
    while time.time() < end:
        # roughly 2/3 of the time in busy_work, 1/3 in fib.
        flamepipe_busy_work(min(end, time.time() + 0.1))
        if tag_fib:
            # The SDK's tag wrapper: samples taken inside carry phase=fib.
            with pyroscope.tag_wrapper({"phase": "fib"}):
                flamepipe_fib(27)
        else:
            flamepipe_fib(27)
        rounds += 1
    return rounds


def sdk_version():
    try:
        from importlib.metadata import version
        return version("pyroscope-io")
    except Exception:
        return "unknown"


def parse_tag(s):
    if "=" not in s:
        raise argparse.ArgumentTypeError("tag must be k=v, got %r" % s)
    k, v = s.split("=", 1)
    return k, v


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="e.g. http://127.0.0.1:4040")
    p.add_argument("--app", required=True, help="application name")
    p.add_argument("--seconds", type=float, default=12.0, help="CPU burn duration")
    p.add_argument("--tag", type=parse_tag, action="append", default=[], help="k=v (repeatable)")
    p.add_argument("--tenant", default="", help="tenant id (X-Scope-OrgID), if SDK supports it")
    p.add_argument("--sample-rate", type=int, default=100)
    p.add_argument("--upload-interval", type=int, default=None,
                   help="seconds between uploads (1.x only; ignored by 0.8.x which uses 10s)")
    p.add_argument("--flush-wait", type=float, default=12.0,
                   help="if the SDK has no shutdown(), seconds to wait for the upload")
    p.add_argument("--mem", action="store_true",
                   help="also enable the memory profiler (1.x only: mem_enabled=True)")
    p.add_argument("--verbose", action="store_true", help="enable SDK logging")
    p.add_argument("--tag-fib", action="store_true",
                   help="run flamepipe_fib inside pyroscope.tag_wrapper({'phase': 'fib'})")
    a = p.parse_args(argv)

    params = inspect.signature(pyroscope.configure).parameters
    kwargs = dict(
        application_name=a.app,
        server_address=a.server.rstrip("/"),
        tags=dict(a.tag),
        sample_rate=a.sample_rate,
        enable_logging=a.verbose,
    )
    if a.tenant:
        if "tenant_id" in params:
            kwargs["tenant_id"] = a.tenant
        else:
            print("warning: this pyroscope-io has no tenant_id; --tenant ignored", file=sys.stderr)
    if a.upload_interval is not None and "upload_interval" in params:
        kwargs["upload_interval"] = a.upload_interval
    if a.mem:
        if "mem_enabled" in params:
            kwargs["mem_enabled"] = True
        else:
            print("warning: this pyroscope-io has no mem_enabled; --mem ignored", file=sys.stderr)
    kwargs = {k: v for k, v in kwargs.items() if k in params}

    print("pyroscope-io %s: app=%s server=%s seconds=%s tags=%s" % (
        sdk_version(), a.app, a.server, a.seconds, dict(a.tag)), flush=True)
    pyroscope.configure(**kwargs)
    start = time.time()
    rounds = flamepipe_main_loop(a.seconds, tag_fib=a.tag_fib)
    shutdown = getattr(pyroscope, "shutdown", None)
    if callable(shutdown):
        # Both 1.x and 0.8.x: drop_agent stops the sampler and flushes the
        # pending report, blocking until the upload attempt has finished.
        shutdown()
    else:
        time.sleep(a.flush_wait)
    print("done: rounds=%d elapsed=%.1fs" % (rounds, time.time() - start), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
