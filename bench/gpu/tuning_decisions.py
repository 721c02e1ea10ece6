#!/usr/bin/env python3
"""The tuning database's decisions, side by side (docs/tuning.md, "Decisions").

    canopy-tune --workloads suite --report decisions.json
    python3 bench/gpu/tuning_decisions.py decisions.json [--bench gpu_bench.json]

For every batch of the report: the built-in defaults' plan (no database), the
database's pick (the winner canopy-tune recorded for the batch's shape class,
which may be the built-in defaults themselves, else the database's default
plan), the fastest of the planner's alternatives timed
in the same run, and the pick against that best. With --bench (a run of
bench/gpu/run_bench.py with methods canopy and canopy-untuned), the same
comparison measured again independently: the suite benchmark's time with the
database against without it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys


def picks(report: dict) -> dict[str, str]:
    """The alternative the database plans each shape class with, as canopy-tune
    recorded it (its winner rule lives in tools/tune_winners.hpp only); a class
    without a recorded winner plans with the database's defaults."""
    out = {}
    for cls, w in report.get("winners", {}).items():
        if "alternative" not in w:
            raise ValueError(f"winner of {cls} has no 'alternative': a report from a canopy-tune "
                             "before 3bf9841; rerun canopy-tune --workloads --report")
        out[cls] = w["alternative"]
    return out


def rows(report: dict, bench: dict | None = None) -> list[dict]:
    chosen = picks(report)
    bench_times = {}
    if bench:
        for w in bench["workloads"]:
            m = w.get("methods", {})
            tuned = m.get("canopy", {}).get("median_us")
            untuned = m.get("canopy-untuned", {}).get("median_us")
            bench_times[w["workload"]] = (tuned, untuned)
    out = []
    for b in report["batches"]:
        alts = b["alternatives"]
        best = min(alts, key=alts.get)
        pick = chosen.get(b["shape_class"], "defaults")
        r = {
            "workload": b["workload"],
            "builtin_us": b.get("builtin_defaults_us"),
            "pick": pick,
            "pick_us": alts.get(pick),
            "best": best,
            "best_us": alts[best],
        }
        r["pick_over_best"] = r["pick_us"] / r["best_us"] if r["pick_us"] else None
        r["pick_over_builtin"] = (
            r["pick_us"] / r["builtin_us"] if r["pick_us"] and r["builtin_us"] else None
        )
        if b["workload"] in bench_times:
            r["bench_tuned_us"], r["bench_untuned_us"] = bench_times[b["workload"]]
        out.append(r)
    return out


def fmt(x, spec=".1f"):
    return "" if x is None else format(x, spec)


def markdown(report: dict, bench: dict | None = None) -> str:
    rs = rows(report, bench)
    head = "| workload | built-in defaults us | database's pick | pick us | best alternative | best us | pick / best | pick / built-in |"
    sep = "|---|---:|---|---:|---|---:|---:|---:|"
    if bench:
        head += " bench: with database us | without us |"
        sep += "---:|---:|"
    lines = [head, sep]
    for r in rs:
        line = (
            f"| {r['workload']} | {fmt(r['builtin_us'])} | {r['pick']} | {fmt(r['pick_us'])} | "
            f"{r['best']} | {fmt(r['best_us'])} | {fmt(r['pick_over_best'], '.3f')} | "
            f"{fmt(r['pick_over_builtin'], '.3f')} |"
        )
        if bench:
            line += f" {fmt(r.get('bench_tuned_us'))} | {fmt(r.get('bench_untuned_us'))} |"
        lines.append(line)
    over = [r["pick_over_best"] for r in rs if r["pick_over_best"]]
    vs_builtin = [r["pick_over_builtin"] for r in rs if r["pick_over_builtin"]]
    lines.append("")
    lines.append(
        f"{len(rs)} batches on {report['device']}"
        + (" (SYNTHETIC timings)" if report.get("synthetic") else "")
        + f": pick within 5% of the best on {sum(x <= 1.05 for x in over)} of {len(over)} "
        f"(worst {max(over):.3f}); geometric mean pick / built-in defaults "
        f"{statistics.geometric_mean(vs_builtin):.3f}, worst {max(vs_builtin):.3f}"
    )
    if bench:
        ratios = [
            r["bench_tuned_us"] / r["bench_untuned_us"]
            for r in rs
            if r.get("bench_tuned_us") and r.get("bench_untuned_us")
        ]
        if ratios:
            lines.append(
                f"suite benchmark, with / without the database: geometric mean "
                f"{statistics.geometric_mean(ratios):.3f}, worst {max(ratios):.3f} "
                f"({len(ratios)} workloads)"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="canopy-tune --report FILE")
    ap.add_argument("--bench", help="run_bench.py JSON with methods canopy and canopy-untuned")
    args = ap.parse_args()
    with open(args.report) as f:
        report = json.load(f)
    if report.get("format") != "canopy-tune-decisions/1":
        print(f"{args.report}: not a canopy-tune decision report", file=sys.stderr)
        return 2
    try:
        picks(report)
    except ValueError as e:
        print(f"{args.report}: {e}", file=sys.stderr)
        return 2
    bench = None
    if args.bench:
        with open(args.bench) as f:
            bench = json.load(f)
    print(markdown(report, bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
