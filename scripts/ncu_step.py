#!/usr/bin/env python3
"""Per-kernel durations of one decode step from an ncu CSV (docs/performance.md, experiment 55).

    ncu --graph-profiling node --clock-control none --csv --page raw \\
        --metrics gpu__time_duration.sum decdec bench decode ... --tokens 2 > step.csv
    scripts/ncu_step.py step.csv [more.csv ...]

Takes the last complete step (between the last two `step_begin` kernels) and sums the kernels'
durations by name (dtype suffix dropped) and grid size. ncu runs every graph node alone with the
caches flushed, so the durations have no PDL overlap and no warm L2: an upper bound per kernel."""
import collections
import csv
import re
import sys

UNIT_TO_US = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "ns": 1e-3, "us": 1.0}


def load(path):
    lines = open(path).read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    rows = list(csv.reader(lines[start:]))
    header, units, body = rows[0], rows[1], rows[2:]
    name, dur, grid = (header.index(c) for c in ("Kernel Name", "gpu__time_duration.sum", "Grid Size"))
    scale = UNIT_TO_US[units[dur]]
    return [(r[name], float(r[dur].replace(",", "")) * scale, r[grid]) for r in body]


def main():
    for path in sys.argv[1:]:
        kernels = load(path)
        starts = [i for i, k in enumerate(kernels) if k[0] == "step_begin"]
        if len(starts) < 2:
            sys.exit(f"{path}: fewer than two decode steps profiled")
        step = kernels[starts[-2]:starts[-1]]
        total = sum(t for _, t, _ in step)
        print(f"== {path}: {len(starts)} steps seen, last complete step {len(step)} kernels, "
              f"sum of durations {total:.1f} us")
        agg = collections.OrderedDict()
        for name, t, grid in step:
            key = re.sub(r"_(f16|bf16)$", "", name) + " " + grid.replace(", 1, 1", "")
            count, acc = agg.get(key, (0, 0.0))
            agg[key] = (count + 1, acc + t)
        for key, (count, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
            print(f"  {key:<34} x{count:<3} {t:9.1f} us  {t / count:7.2f} us each  {100 * t / total:5.1f}%")


if __name__ == "__main__":
    main()
