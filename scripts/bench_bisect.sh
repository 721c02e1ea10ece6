#!/usr/bin/env bash
# Time the same workloads with the benchmark as it was at several commits, to
# find which commit moved a kernel's speed (docs/perf-notes.md v2.2). Two steps:
#
#   scripts/bench_bisect.sh build COMMIT...
#       HERE (no GPU): for each commit, a git worktree under $BISECT_WT
#       (default ../bisect-wt), a Release build of that commit's
#       libcanopy_bench_capi.so, and into build-bisect/<short sha>/ the library,
#       that commit's bench/gpu/*.py and suite, and the kernels its planner
#       picks for $WORKLOADS, compiled with its NVRTC flags (kernel-cache.tar.xz).
#       Prints the carry size (build-bisect/ travels with `run`'s carry).
#   scripts/bench_bisect.sh run
#       ON THE GPU MACHINE, with build-bisect/ carried: every built commit's own
#       run_bench.py times $WORKLOADS with method $METHOD (each commit's own
#       harness, so the library and its caller always match), $ROUNDS times in
#       alternating order (forward, then backward) so drift of the GPU's clocks
#       does not favour one commit; then the table of median times per commit.
#
# Environment: NCU (1: also one step per workload under Nsight Compute, each
# launch's duration, instructions and DRAM bytes), WORKLOADS (default
# flat-256x1k,ft-1-2-64,sys-4k-x64), METHOD
# (canopy: each commit's default planner; commits with a tuning database get
# canopy-untuned automatically), ROUNDS (2), ITERS (50), OUT (./device-out).
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEST=$ROOT/build-bisect
WORKLOADS=${WORKLOADS:-flat-256x1k,ft-1-2-64,sys-4k-x64}

if [[ "${1:-}" == "build" ]]; then
  set -e
  shift
  [[ $# -gt 0 ]] || { echo "usage: $0 build COMMIT..." >&2; exit 2; }
  WT=${BISECT_WT:-$ROOT/../bisect-wt}
  mkdir -p "$WT" "$DEST"
  for c in "$@"; do
    sha=$(git rev-parse --short=7 "$c^{commit}")
    src=$WT/$sha
    [[ -d "$src" ]] || git worktree add -q --detach "$src" "$sha"
    echo "== $sha: build ($(git log -1 --format=%s "$sha" | cut -c1-70))"
    cmake -S "$src" -B "$src/build-capi" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCANOPY_BUILD_TESTS=OFF -DCANOPY_BUILD_BENCH=ON \
      -DCUDAToolkit_ROOT="${CUDA_HOME:-/usr/local/cuda}" >/dev/null
    ninja -j"${JOBS:-2}" -C "$src/build-capi" canopy_bench_capi >/dev/null
    out=$DEST/$sha
    rm -rf "$out"
    mkdir -p "$out/lib" "$out/bench/gpu" "$out/bench/workloads"
    cp "$src/build-capi/bench/gpu/libcanopy_bench_capi.so" "$out/lib/"
    strip --strip-unneeded "$out/lib/libcanopy_bench_capi.so"
    cp "$src"/bench/gpu/*.py "$out/bench/gpu/"
    cp "$src/bench/workloads/suite.json" "$out/bench/workloads/"
    git log -1 --format='%h %ct %cs %s' "$sha" >"$out/COMMIT"
    cache=$(mktemp -d)
    python3 "$out/bench/gpu/run_bench.py" --prewarm "$cache" \
      --capi "$out/lib/libcanopy_bench_capi.so" --methods canopy --workloads "$WORKLOADS"
    tar -C "$cache" -cJf "$out/kernel-cache.tar.xz" .
    rm -rf "$cache"
  done
  du -sh "$DEST"
  exit 0
fi

if [[ "${1:-}" != "run" ]]; then
  echo "usage: $0 build COMMIT... | run" >&2
  exit 2
fi
OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT"
mapfile -t shas < <(for d in "$DEST"/*/COMMIT; do
  # oldest first, by commit time
  echo "$(cut -d' ' -f2 "$d") $(basename "$(dirname "$d")")"
done | sort -n | cut -d' ' -f2)
[[ ${#shas[@]} -gt 0 ]] || { echo "nothing built in $DEST" >&2; exit 2; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
for sha in "${shas[@]}"; do
  mkdir -p "/tmp/bisect-cache/$sha"
  tar xJf "$DEST/$sha/kernel-cache.tar.xz" -C "/tmp/bisect-cache/$sha"
  # Each kernel's registers and SASS instruction count, for the table's reader.
  if command -v cuobjdump >/dev/null; then
    for f in "/tmp/bisect-cache/$sha"/*.cubin; do
      # The cache's files are a short header, then the ELF cubin.
      python3 -c "import sys; d = open(sys.argv[1], 'rb').read(); \
open(sys.argv[2], 'wb').write(d[d.index(b'\x7fELF'):])" "$f" /tmp/bisect-kernel.cubin
      regs=$(cuobjdump -res-usage /tmp/bisect-kernel.cubin 2>/dev/null | grep -o 'REG:[0-9]*' | head -n 1)
      insts=$(cuobjdump -sass /tmp/bisect-kernel.cubin 2>/dev/null | grep -cE '^ +/\*[0-9a-f]{4,}\*/')
      name=$(basename "$f" .cubin | cut -d. -f1)
      cuobjdump -sass /tmp/bisect-kernel.cubin >"$OUT/bisect-sass-$sha-$name.txt" 2>&1
      echo "$sha $name $regs SASS:$insts"
    done | tee -a "$OUT/bisect-kernels.txt"
  fi
done
# The Canopy method to time a commit with: $METHOD, or for commits that load
# a tuning database their built-in defaults (canopy-untuned).
method_of() {
  if grep -q canopy-untuned "$DEST/$1/bench/gpu/bench_logic.py"; then
    echo canopy-untuned
  else
    echo "${METHOD:-canopy}"
  fi
}
order=("${shas[@]}")
for ((round = 1; round <= ${ROUNDS:-2}; round++)); do
  for sha in "${order[@]}"; do
    method=$(method_of "$sha")
    echo "== round $round: $(cut -d' ' -f1,3- "$DEST/$sha/COMMIT" | cut -c1-80) [$method]"
    CANOPY_CACHE_DIR=/tmp/bisect-cache/$sha python3 "$DEST/$sha/bench/gpu/run_bench.py" \
      --capi "$DEST/$sha/lib/libcanopy_bench_capi.so" --cache-dir "/tmp/bisect-cache/$sha" \
      --methods "$method" --workloads "$WORKLOADS" --iters "${ITERS:-50}" \
      --out "$OUT/bisect-$sha-r$round.json" >"$OUT/bisect-$sha-r$round.log" 2>&1 ||
      { echo "   failed:"; tail -n 5 "$OUT/bisect-$sha-r$round.log"; }
  done
  # next round in the other order
  for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do
    t=${order[i]}; order[i]=${order[j]}; order[j]=$t
  done
done
python3 - "$OUT" "${shas[@]}" <<'EOF' | tee "$OUT/bisect-table.txt"
import glob, json, os, statistics, sys
out, shas = sys.argv[1], sys.argv[2:]
rows = {}
for sha in shas:
    for path in sorted(glob.glob(os.path.join(out, f"bisect-{sha}-r*.json"))):
        with open(path) as f:
            doc = json.load(f)
        for w in doc.get("workloads", []):
            for m in w.get("methods", {}).values():
                if m.get("median_us"):
                    rows.setdefault(w["workload"], {}).setdefault(sha, []).append(m["median_us"])
print("median us (min over rounds of each round's median); commits oldest first")
print(f"{'workload':<16}" + "".join(f"{s:>10}" for s in shas))
for wl, per in rows.items():
    print(f"{wl:<16}" + "".join(f"{min(per[s]):10.1f}" if s in per else f"{'-':>10}"
                                for s in shas))
EOF
# NCU=1: each kernel launch of one step per workload under Nsight Compute
# (duration, instructions, DRAM bytes), per commit, in launch order.
if [[ "${NCU:-0}" == 1 ]] && command -v ncu >/dev/null; then
  for sha in "${shas[@]}"; do
    method=$(method_of "$sha")
    CANOPY_CACHE_DIR=/tmp/bisect-cache/$sha timeout -k 5 120 ncu --clock-control none --print-units base \
      --profile-from-start off --metrics gpu__time_duration.sum,sm__inst_executed.sum,dram__bytes_read.sum,launch__grid_size,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio \
      --csv --log-file "$OUT/bisect-ncu-$sha.csv" \
      python3 "$DEST/$sha/bench/gpu/run_bench.py" --ncu --ncu-methods "$method" \
      --capi "$DEST/$sha/lib/libcanopy_bench_capi.so" --cache-dir "/tmp/bisect-cache/$sha" \
      --workloads "$WORKLOADS" --out "$OUT/bisect-ncu-$sha/gpu_bench.json" \
      >"$OUT/bisect-ncu-$sha-r0.log" 2>&1 || echo "ncu $sha: failed (bisect-ncu-$sha-r0.log)"
  done
  python3 - "$OUT" "${shas[@]}" <<'EOF' | tee -a "$OUT/bisect-table.txt"
import csv, os, sys
out, shas = sys.argv[1], sys.argv[2:]
print("\nNsight Compute, one step per workload, launches in order: "
      "us / instructions (M) / DRAM MB / grid / registers / warps active % / "
      "stalls per issue on no instruction / on long scoreboard")
for sha in shas:
    path = os.path.join(out, f"bisect-ncu-{sha}.csv")
    if not os.path.exists(path):
        continue
    with open(path) as f:
        rows = list(csv.reader(line for line in f if line.startswith('"')))
    head, rows = rows[0], rows[1:]
    i_id, i_name = head.index("ID"), head.index("Kernel Name")
    i_metric, i_value = head.index("Metric Name"), head.index("Metric Value")
    kernels = {}
    for r in rows:
        k = kernels.setdefault(int(r[i_id]), {"name": r[i_name]})
        try:
            k[r[i_metric]] = float(r[i_value].replace(",", ""))
        except ValueError:  # "n/a"
            pass
    cells = []
    for _, k in sorted(kernels.items()):
        if not k["name"].startswith("canopy_"):
            continue  # the marker kernel
        name = k["name"].split("_")[1]
        cells.append(f"{name} {k.get('gpu__time_duration.sum', 0) / 1e3:.1f}/"
                     f"{k.get('sm__inst_executed.sum', 0) / 1e6:.2f}/"
                     f"{k.get('dram__bytes_read.sum', 0) / 1e6:.0f}/"
                     f"{k.get('launch__grid_size', 0):.0f}/"
                     f"{k.get('launch__registers_per_thread', 0):.0f}/"
                     f"{k.get('sm__warps_active.avg.pct_of_peak_sustained_active', 0):.0f}/"
                     f"{k.get('smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio', 0):.2f}/"
                     f"{k.get('smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio', 0):.2f}")
    print(f"{sha}: " + "  ".join(cells))
EOF
fi
# The runs' files in one archive (the device returns a limited number of files).
(cd "$OUT" && tar cJf bisect-runs.tar.xz bisect-*-r*.* bisect-sass-* bisect-ncu-* &&
  rm -rf bisect-*-r*.json bisect-*-r*.jsonl bisect-*-r*.log bisect-sass-* bisect-ncu-*)
