#!/usr/bin/env python3
"""Plots and the markdown table from run_bench.py's JSON (for docs/performance.md).

    python3 bench/gpu/plot_bench.py device-out/gpu_bench.json            # PNGs next to it
    python3 bench/gpu/plot_bench.py device-out/gpu_bench.json --out-dir docs/img
    python3 bench/gpu/plot_bench.py device-out/gpu_bench.json --markdown  # the full table

PNGs: time_vs_floor.png (median time per workload and method against the
floor, log scale), speedup_vs_flashinfer.png (Canopy's speedup over
FlashInfer's best method per workload, plain and graph replay) and
fraction_of_floor.png.
"""
import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_logic as L  # noqa: E402

SERIES = [  # (label, how to read a row's time, marker)
    ("canopy graph", lambda r: _graph(r), "D"),
    ("canopy", lambda r: _t(r, L.CANOPY), "o"),
    ("canopy-blind", lambda r: _t(r, L.BLIND), "v"),
    ("fi-decode", lambda r: _t(r, L.FI_DECODE), "x"),
    ("fi-decode-tc", lambda r: _t(r, L.FI_DECODE_TC), "+"),
    ("fi-cascade (best variant)", lambda r: (r.get(L.FI_CASCADE) or {}).get("median_us"), "s"),
    ("fi-batch-attention", lambda r: _t(r, L.FI_BATCH_ATTENTION), "^"),
    ("fi-xqa", lambda r: _t(r, L.FI_XQA), "*"),
]


def _t(row, name):
    m = row.get("methods", {}).get(name)
    return m.get("median_us") if L.passed(m) else None


def _graph(row):
    return L.graph_us(row.get("methods", {}).get(L.CANOPY))


def _ok(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def plot(results, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results.get("workloads", []) if r.get("methods")]
    for r in rows:
        L.derive_row(r)
    names = [r["workload"] for r in rows]
    x = list(range(len(rows)))
    device = results.get("env", {}).get("device", "GPU")
    written = []

    fig, ax = plt.subplots(figsize=(max(10, 0.45 * len(rows) + 3), 6))
    floors = [r.get("floor_us") for r in rows]
    ax.bar(x, [f if _ok(f) else 0 for f in floors], color="0.85", label="floor", width=0.8)
    for label, get, marker in SERIES:
        pts = [(i, get(r)) for i, r in enumerate(rows)]
        pts = [(i, t) for i, t in pts if _ok(t)]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label,
                       s=28, zorder=3)
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("median time per step (us, log)")
    ax.set_title(f"Decode attention per workload against the floor ({device})")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    path = os.path.join(out_dir, "time_vs_floor.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(max(10, 0.45 * len(rows) + 3), 5))
    sp = [r.get("speedup_vs_fi_best") for r in rows]
    gsp = [r.get("graph_speedup_vs_fi_best") for r in rows]
    w = 0.4
    # bars grow from 1 (parity) up or down, on a log axis
    ax.bar([i - w / 2 for i in x], [s - 1 if _ok(s) else 0 for s in sp], width=w, bottom=1,
           label="canopy / fi-best")
    ax.bar([i + w / 2 for i in x], [s - 1 if _ok(s) else 0 for s in gsp], width=w, bottom=1,
           label="canopy graph replay / fi-best")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(2.0, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("speedup over FlashInfer's best method (log)")
    ax.set_title(f"Canopy's speedup over FlashInfer's best method ({device})")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, "speedup_vs_flashinfer.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(max(10, 0.45 * len(rows) + 3), 5))
    for label, get, marker in SERIES:
        pts = [(i, r.get("floor_us") / get(r)) for i, r in enumerate(rows)
               if _ok(get(r)) and _ok(r.get("floor_us"))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, ls="", label=label)
    ax.axhline(0.6, color="k", lw=0.8, ls="--")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("fraction of floor (floor / time)")
    ax.set_title(f"Fraction of the floor per workload ({device})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    path = os.path.join(out_dir, "fraction_of_floor.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    written.append(path)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="run_bench.py's results JSON")
    ap.add_argument("--out-dir", default=None, help="where the PNGs go (default: next to JSON)")
    ap.add_argument("--markdown", action="store_true", help="print the full markdown table")
    ap.add_argument("--table", action="store_true", help="print the text table (last)")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    with open(args.json) as f:
        results = json.load(f)
    if args.markdown:
        print(L.markdown(results), end="")
    if not args.no_plots:
        out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.json))
        os.makedirs(out_dir, exist_ok=True)
        for p in plot(results, out_dir):
            print(f"wrote {p}", file=sys.stderr if args.markdown else sys.stdout)
    if args.table:
        print(text_report(results))
    return 0


def text_report(results):
    """The run's table with its summary, DRAM ratios (if merged) and error count."""
    rows = results.get("workloads", [])
    env, ceil = results.get("env", {}), results.get("ceilings", {})
    lines = [f"device {env.get('device', '?')}, driver {env.get('driver', '?')}, torch "
             f"{env.get('torch', '?')}, flashinfer {env.get('flashinfer', '?')}; read "
             f"{ceil.get('read_bw_tbs') or float('nan'):.2f} TB/s, bf16 "
             f"{ceil.get('matrix_tflops') or float('nan'):.0f} TFLOP/s; "
             f"iters {results.get('iters', '?')}"]
    dram = [(r["workload"], r["methods"][L.CANOPY]) for r in rows
            if r.get("methods", {}).get(L.CANOPY, {}).get("dram_ratio")]
    if dram:
        lines.append("canopy DRAM bytes / unique bytes (x reduction vs blind): " + ", ".join(
            f"{w} {m['dram_ratio']:.2f}"
            + (f" ({m['dram_reduction_vs_blind']:.1f}x)" if m.get("dram_reduction_vs_blind")
               else "") for w, m in dram))
    notes = results.get("notes") or []
    errors = results.get("errors") or []
    if notes:
        lines.append("notes: " + " || ".join(notes)[:1500])
    lines.append(f"{len(errors)} method errors (JSON 'errors'); first: "
                 + " || ".join(e[:160] for e in errors[:4]) if errors else "no method errors")
    lines.append(L.text_table(rows, results.get("summary") or L.summarize(rows)))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
