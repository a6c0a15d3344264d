#!/usr/bin/env python3
"""Independent reference totals of an OTLP profiles request, for flamepipe's tests.

Decodes an ExportProfilesServiceRequest (profiles/v1development, OTLP proto v1.10) with
the PyPI `opentelemetry-proto` package (1.45.x has the v1.10 layout) and prints JSON:

    {"proto": "1.45.2",
     "profiles": 82, "samples": 317,
     "totals": {"<service>|<profile type id>": total, ...},
     "thread_totals": {"<service>|<profile type id>|<thread.name>": total, ...},
     "sample_attribute_keys": ["cpu.logical_number", "thread.id", "thread.name"]}

It does not share code with flamepipe: it applies the mapping that docs/otlp.md documents
(receivers/otlp/src/convert.rs `profile_type`), written again here:

* service: the last `service.name` among the resource's, then the scope's, then the
  profile's attributes; `unknown_service` if there is none or it is empty. Keys and string
  values may be given by index into the dictionary's string table (`key_strindex`,
  `string_value_strindex`).
* profile type: a sample type `samples`, `sample` or `cpu` with unit `count` (or no unit),
  period type `cpu` / `nanoseconds` and a period > 0 becomes
  `process_cpu:cpu:nanoseconds:cpu:nanoseconds`, each value multiplied by the period,
  unless a profile of the same scope already holds `cpu` / `nanoseconds` (`wall` periods
  likewise become `wall:wall:nanoseconds:wall:nanoseconds`; the fixtures have none);
  a sample type `off_cpu` stays `off_cpu:off_cpu:<unit>:<period type>:<period unit>`;
  any other is named by Pyroscope's pprof rules. A type named by the
  `flamepipe.profile.name` attribute is an error here (the fixtures have none).
* Usable with opentelemetry-proto 1.45.x (v1.10 layout) and 1.40 (v1.9 layout; the
  v1.8 fixture is the same bytes as a v1.9 request).
* value of a sample: the sum of its `values`; a sample without values counts one per
  entry of `timestamps_unix_nano`.

Usage: otlp_reference.py REQUEST.pb   (run with integration/.venv-otlp/bin/python)
"""
import json
import sys
from collections import defaultdict
from importlib.metadata import version

from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"


def text(any_value, strings):
    kind = any_value.WhichOneof("value")
    if kind == "string_value":
        return any_value.string_value
    if kind == "string_value_strindex":
        return strings[any_value.string_value_strindex]
    if kind == "int_value":
        return str(any_value.int_value)
    if kind == "bool_value":
        return "true" if any_value.bool_value else "false"
    return None


def service_of(attributes, current, strings):
    for kv in attributes:
        key = kv.key or strings[kv.key_strindex]
        if key == "service.name":
            value = text(kv.value, strings)
            if value is not None:
                current = value
    return current


def profile_type(sample_type, sample_unit, period_type, period_unit, period, counts_as_cpu):
    if (
        counts_as_cpu
        and sample_type in ("samples", "sample", "cpu")
        and sample_unit in ("count", "")
        and period_type == "cpu"
        and period_unit == "nanoseconds"
        and period > 0
    ):
        return CPU, period
    if sample_type == "off_cpu":
        name = "off_cpu"
    else:
        name = pprof_name(sample_type)
    return "%s:%s:%s:%s:%s" % (name, sample_type, sample_unit, period_type, period_unit), 1


# Pyroscope's pprof naming (docs/profile-types.md) for one sample type.
DISPLAY = {"samples": "cpu", "goroutine": "goroutines", "contentions": "mutex_count", "delay": "mutex_duration"}


def pprof_name(sample_type):
    if sample_type == "wall":
        return "wall"
    shown = DISPLAY.get(sample_type, sample_type)
    if "cpu" in shown:
        return "process_cpu"
    if "alloc_" in shown or "inuse_" in shown or shown in ("space", "objects"):
        return "memory"
    if "mutex_" in shown:
        return "mutex"
    if "block_" in shown:
        return "block"
    if "goroutines" in shown:
        return "goroutines"
    return shown


def main(path):
    request = ExportProfilesServiceRequest()
    with open(path, "rb") as f:
        request.ParseFromString(f.read())
    d = request.dictionary
    strings = d.string_table
    totals = defaultdict(int)
    thread_totals = defaultdict(int)
    keys = set()
    profiles = samples = 0
    for rp in request.resource_profiles:
        resource_service = service_of(rp.resource.attributes, None, strings)
        for sp in rp.scope_profiles:
            scope_service = service_of(sp.scope.attributes, resource_service, strings)
            has_cpu_time = any(
                (strings[p.sample_type.type_strindex], strings[p.sample_type.unit_strindex])
                == ("cpu", "nanoseconds")
                for p in sp.profiles
            )
            for p in sp.profiles:
                profiles += 1
                service = scope_service
                for i in p.attribute_indices:
                    attr = d.attribute_table[i]
                    key = strings[attr.key_strindex]
                    value = text(attr.value, strings)
                    if key == "flamepipe.profile.name":
                        raise SystemExit("a profile type named by flamepipe.profile.name")
                    if key == "service.name" and value is not None:
                        service = value
                service = service or "unknown_service"
                type_id, scale = profile_type(
                    strings[p.sample_type.type_strindex],
                    strings[p.sample_type.unit_strindex],
                    strings[p.period_type.type_strindex],
                    strings[p.period_type.unit_strindex],
                    p.period,
                    not has_cpu_time,
                )
                for s in p.samples:
                    samples += 1
                    value = sum(s.values) if len(s.values) else len(s.timestamps_unix_nano)
                    value *= scale
                    totals["%s|%s" % (service, type_id)] += value
                    thread = ""
                    for i in s.attribute_indices:
                        attr = d.attribute_table[i]
                        key = strings[attr.key_strindex]
                        keys.add(key)
                        if key == "thread.name":
                            thread = text(attr.value, strings) or ""
                    thread_totals["%s|%s|%s" % (service, type_id, thread)] += value
    json.dump(
        {
            "proto": version("opentelemetry-proto"),
            "profiles": profiles,
            "samples": samples,
            "totals": totals,
            "thread_totals": thread_totals,
            "sample_attribute_keys": sorted(keys),
        },
        sys.stdout,
        indent=1,
        sort_keys=True,
    )
    print()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
