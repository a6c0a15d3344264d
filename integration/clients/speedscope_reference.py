#!/usr/bin/env python3
"""Independent reference for speedscope files: per profile, the total and the per-function
flat and cumulative values, in the integer units flamepipe stores (nanoseconds for time
units, each weight or interval rounded to the nearest; bytes; counts).

Reads the JSON with the standard library only and shares no code with flamepipe.

    python3 speedscope_reference.py FILE.speedscope.json

Prints JSON: [{"index": i, "name": ..., "unit": ..., "total": n,
               "functions": {"name": [flat, cum], ...}}, ...]
"""
import json
import math
import sys

NS_PER_UNIT = {"nanoseconds": 1, "microseconds": 1e3, "milliseconds": 1e6, "seconds": 1e9}


def stored(value, unit):
    """A weight or interval as flamepipe stores it: scaled to ns, rounded half away from 0."""
    scaled = value * NS_PER_UNIT.get(unit, 1)
    return int(math.floor(scaled + 0.5))


def add(functions, stack, value):
    """stack: frame names, root first."""
    if value == 0 or not stack:
        return
    flat_cum = functions.setdefault(stack[-1], [0, 0])
    flat_cum[0] += value
    for name in set(stack):
        functions.setdefault(name, [0, 0])[1] += value


def profile_totals(profile, frames):
    unit = profile["unit"]
    functions = {}
    total = 0
    if profile["type"] == "sampled":
        for stack, weight in zip(profile["samples"], profile["weights"]):
            value = stored(weight, unit)
            total += value
            add(functions, [frames[i] for i in stack], value)
    else:
        open_frames = []
        last = profile["startValue"]
        for event in profile["events"]:
            if open_frames and event["at"] > last:
                value = stored(event["at"] - last, unit)
                total += value if open_frames else 0
                add(functions, list(open_frames), value)
            last = event["at"]
            if event["type"] == "O":
                open_frames.append(frames[event["frame"]])
            else:
                open_frames.pop()
    return total, functions


def main(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    frames = [frame["name"] for frame in doc["shared"]["frames"]]
    out = []
    for i, profile in enumerate(doc["profiles"]):
        total, functions = profile_totals(profile, frames)
        out.append({
            "index": i,
            "name": profile.get("name", ""),
            "unit": profile["unit"],
            "total": total,
            "functions": functions,
        })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
