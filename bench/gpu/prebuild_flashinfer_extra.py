#!/usr/bin/env python3
"""Compiles, ahead of time and without a GPU, the FlashInfer 0.7.4 JIT modules
that fi-batch-attention (flashinfer.BatchAttention) and fi-xqa (flashinfer.xqa)
load for the benchmark's workloads, laid out as FlashInfer's AOT folder
(DIR/<module>/<module>.so), optionally packed into a tarball.

    FLASHINFER_CUDA_ARCH_LIST=9.0 MAX_JOBS=2 nice -n 19 \\
        python3 bench/gpu/prebuild_flashinfer_extra.py .peers/fi_aot_extra \\
        --tar .peers/fi_aot_extra.tar.xz
    python3 bench/gpu/prebuild_flashinfer_extra.py DIR --list     # names only

Needs the FULL flashinfer-python==0.7.4 wheel (xqa's kernel sources live in
flashinfer/data/csrc/xqa/, which the trimmed bundle lacks), apache-tvm-ffi, a
torch (CPU is enough: modules are built with nvcc and link no torch), nvcc
(CUDA 13) and ninja. On the GPU machine the modules are unpacked into
<site>/flashinfer/data/aot/, where FlashInfer looks first; with them nothing
there compiles and no kernel source is needed.

Which modules: every workload of the suite (or --workloads) that a method
supports on sm_90 (fi_extra_methods.unsupported), each distinct
(method, dtype, head_dim, group, page size, soft cap) once. Module arguments
mirror what the two APIs request at run time (fi_extra_methods.module_args),
so names match what FlashInfer looks up.
"""
import argparse
import json
import os
import shutil
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import fi_extra_methods as X  # noqa: E402

DEFAULT_SUITE = os.path.join(ROOT, "bench", "workloads", "suite.json")


def jit_spec(method, args):
    """FlashInfer's JitSpec for one (method, module args)."""
    import torch
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "int32": torch.int32}

    def conv(a):
        return dt[a] if isinstance(a, str) else a

    a = [conv(x) for x in args]
    if method == X.FI_BATCH_ATTENTION:
        from flashinfer.jit.attention.modules import _gen_batch_attention_primary_module
        return _gen_batch_attention_primary_module(*a)
    from flashinfer.jit.xqa import gen_xqa_module
    return gen_xqa_module(*a)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--suite", default=DEFAULT_SUITE)
    ap.add_argument("--workloads", default="", help="comma list (default: the whole suite)")
    ap.add_argument("--methods", default=",".join(X.METHODS))
    ap.add_argument("--list", action="store_true", help="print the modules, build nothing")
    ap.add_argument("--tar", default=None, help="also pack OUT_DIR into this .tar.xz")
    ap.add_argument("--report", default=None, help="write names, sizes, compile times (JSON)")
    args = ap.parse_args(argv)
    os.environ.setdefault("FLASHINFER_CUDA_ARCH_LIST", "9.0")
    with open(args.suite) as f:
        specs = X.suite_specs(json.load(f))
    names = [x for x in args.workloads.split(",") if x]
    if names:
        specs = [(n, s) for n, s in specs if n in names]
    methods = [m for m in args.methods.split(",") if m]
    needed = X.needed_modules(specs, methods)
    os.makedirs(args.out_dir, exist_ok=True)
    report, failed = [], 0
    for method, margs in needed:
        spec = jit_spec(method, margs)
        dst = os.path.join(args.out_dir, spec.name, spec.name + ".so")
        entry = {"method": method, "args": list(margs), "name": spec.name}
        if args.list:
            print(f"{'present' if os.path.exists(dst) else 'missing'}  {method:18s} {spec.name}")
            continue
        if os.path.exists(dst):
            entry.update(status="have", bytes=os.path.getsize(dst))
            print(f"have  {spec.name} ({entry['bytes'] / 2**20:.1f} MiB)", flush=True)
            report.append(entry)
            continue
        t0 = time.time()
        try:
            spec.build()
        except Exception as e:  # go on: the device reports the missing module per workload
            failed += 1
            entry.update(status="FAIL", error=f"{type(e).__name__}: {str(e)[-1500:]}")
            print(f"FAIL  {spec.name}: {entry['error']}", flush=True)
            report.append(entry)
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(spec.get_library_path(), dst)
        entry.update(status="built", seconds=round(time.time() - t0, 1),
                     bytes=os.path.getsize(dst))
        print(f"built {spec.name} in {entry['seconds']:.0f} s, {entry['bytes'] / 2**20:.1f} MiB",
              flush=True)
        report.append(entry)
    if args.list:
        return 0
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
    if args.tar:
        with tarfile.open(args.tar, "w:xz", preset=9) as tar:
            for e in sorted(os.listdir(args.out_dir)):
                tar.add(os.path.join(args.out_dir, e), arcname=e)
        print(f"packed {args.tar}: {os.path.getsize(args.tar) / 2**20:.1f} MiB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
