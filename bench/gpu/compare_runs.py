#!/usr/bin/env python3
"""Compares two runs of the side-by-side benchmark (gpu_bench.json files).

Per workload: Canopy's median time in each run and the ratio new / old, and
the same for FlashInfer's best method, which did not change between the runs
and so measures how comparable the two machines and runs were. Last line: the
geometric means of both ratios.

    python3 bench/gpu/compare_runs.py bench/results/OLD.json bench/results/NEW.json
"""
import json
import math
import sys


def times(path):
    """workload -> (canopy median us, FlashInfer best median us)."""
    with open(path) as f:
        run = json.load(f)
    out = {}
    for w in run["workloads"]:
        methods = w["methods"]
        fi = [m["median_us"] for name, m in methods.items()
              if name.startswith("fi-") and m.get("status") == "PASS" and "median_us" in m]
        canopy = methods.get("canopy", {})
        if canopy.get("status") == "PASS" and fi:
            out[w["workload"]] = (canopy["median_us"], min(fi))
    return out


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    old, new = times(argv[1]), times(argv[2])
    common = [w for w in old if w in new]
    if not common:
        print("no workload passed in both runs", file=sys.stderr)
        return 1
    print(f"{'workload':18} {'canopy old':>10} {'new':>8} {'new/old':>8}   "
          f"{'fi-best old':>11} {'new':>8} {'new/old':>8}")
    canopy, fi = [], []
    for w in common:
        (c0, f0), (c1, f1) = old[w], new[w]
        canopy.append(c1 / c0)
        fi.append(f1 / f0)
        print(f"{w:18} {c0:10.1f} {c1:8.1f} {c1 / c0:8.3f}   {f0:11.1f} {f1:8.1f} {f1 / f0:8.3f}")
    print(f"geomean new/old over {len(common)} workloads: canopy {geomean(canopy):.3f} "
          f"(min {min(canopy):.3f}, max {max(canopy):.3f}), FlashInfer best {geomean(fi):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
