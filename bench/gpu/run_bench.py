#!/usr/bin/env python3
"""Canopy side by side with FlashInfer on one GPU: one command, one JSON, one table.

    python3 bench/gpu/run_bench.py                      # the whole suite, every method
    python3 bench/gpu/run_bench.py --workloads sys-4k-x64,two-level-3 --iters 100
    python3 bench/gpu/run_bench.py --tree '1,4,64|2048,1024,256' --batch my_batch.json
    python3 bench/gpu/run_bench.py --methods canopy,canopy-blind,fi-cascade

Methods (the same inputs for all): canopy (prefix-aware, default planner
options), canopy-blind (prefix_blind=true), fi-decode / fi-decode-tc
(BatchDecodeWithPagedKVCacheWrapper, use_tensor_cores False / True),
fi-cascade-2level / -root / -depth (MultiLevelCascadeAttentionWrapper with
levels cut from the block tables' page trie), fi-batch-attention
(BatchAttention, the persistent kernel) and fi-xqa (xqa, TensorRT-LLM's decode
kernel; fi_extra_methods.py: a shape either cannot take is recorded as
UNSUPPORTED with the reason); fi-cascade (the best correct variant) and
fi-best (the best FlashInfer method) are derived.

Other modes:
    --ncu                 run under `ncu --profile-from-start off`: each method once
                          per workload between cudaProfilerStart/Stop, plus a manifest
    --parse-ncu CSV       sum dram__bytes_read.sum per (workload, method) into the JSON
    --prewarm DIR         no GPU: plan every workload for the H200 and compile
                          Canopy's kernels into the cubin cache DIR

docs/benchmark.md describes the method (floors, ceilings, flush, delay, reference).
The run is supervised: the measuring happens in a worker process; if it dies
(a CUDA error that poisons the context, a hang), the method that was running
is recorded as failed and a new worker goes on with the rest.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections import deque

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import bench_logic as L  # noqa: E402
import canopy_capi as C  # noqa: E402
import fi_extra_methods as X  # noqa: E402  (fi-batch-attention, fi-xqa)

DEFAULT_SUITE = os.path.join(ROOT, "bench", "workloads", "suite.json")
CASCADE_ALIAS = "fi-cascade"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def short_error(e, limit=600):
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) <= limit else text[:limit] + " ..."


# ---------------------------------------------------------------------------
# Arguments


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="", help="suite workload names, comma separated "
                    "(default: the whole suite unless --tree/--batch are given)")
    ap.add_argument("--tree", action="append", default=[], help="a tree string (repeatable)")
    ap.add_argument("--model", default="llama3-8b", help="suite model for --tree")
    ap.add_argument("--dtype", default="fp16", help="dtype for --tree: fp16 | bf16")
    ap.add_argument("--page-size", type=int, default=16, help="page size for --tree")
    ap.add_argument("--batch", action="append", default=[], help="a batch JSON file (repeatable)")
    ap.add_argument("--suite", default=DEFAULT_SUITE)
    ap.add_argument("--methods", default=None,
                    help=f"comma separated; '{CASCADE_ALIAS}' means its three variants "
                    f"(default: all; {L.CANOPY_TUNED} only with --tuning-db)")
    ap.add_argument("--tuning-db", default=os.environ.get("CANOPY_BENCH_TUNING_DB") or None,
                    help=f"tuning database (file or folder) that {L.CANOPY_TUNED} plans with "
                    "(default: $CANOPY_BENCH_TUNING_DB)")
    ap.add_argument("--iters", type=int, default=50, help="timed runs per method (>= 30)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=os.path.join("device-out", "gpu_bench.json"))
    ap.add_argument("--capi", default=None, help="libcanopy_bench_capi.so (default: "
                    "$CANOPY_BENCH_CAPI, build-gpu-bench/lib, build/bench/gpu)")
    ap.add_argument("--cache-dir", default=None, help="Canopy cubin cache (default: Canopy's)")
    ap.add_argument("--flush-mb", type=int, default=512, help="L2 flush buffer (>= 512 MB)")
    ap.add_argument("--read-gib", type=float, default=4.0, help="read-bandwidth buffer (>= 4)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-graph", action="store_true", help="skip Canopy's graph replay")
    ap.add_argument("--no-launch-count", action="store_true",
                    help="skip counting FlashInfer's kernels with torch.profiler")
    ap.add_argument("--deadline-s", type=float, default=0,
                    help="stop starting workloads after this many seconds (0: none)")
    ap.add_argument("--stall-s", type=float, default=150,
                    help="restart the worker when it shows no progress for this long")
    ap.add_argument("--in-process", action="store_true", help="no supervisor (debugging)")
    ap.add_argument("--ncu", action="store_true", help="Nsight Compute mode (see above)")
    ap.add_argument("--ncu-methods", default="canopy,canopy-blind")
    ap.add_argument("--ncu-manifest", default=None, help="default: next to --out")
    ap.add_argument("--parse-ncu", default=None, metavar="CSV")
    ap.add_argument("--manifest", default=None, help="for --parse-ncu (default: next to --out)")
    ap.add_argument("--json", default=None, help="for --parse-ncu: results JSON (default --out)")
    ap.add_argument("--prewarm", default=None, metavar="DIR")
    ap.add_argument("--prewarm-threads", type=int, default=0)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.iters < 30:
        log(f"--iters {args.iters} raised to 30 (the method asks for a median of >= 30 runs)")
        args.iters = 30
    args.flush_mb = max(args.flush_mb, 512)
    args.read_gib = max(args.read_gib, 4.0)
    if args.methods is None:
        args.methods = ",".join(m for m in L.ALL_METHODS
                                if m != L.CANOPY_TUNED or args.tuning_db)
    if L.CANOPY_TUNED in method_list(args.methods) and not args.tuning_db:
        ap.error(f"{L.CANOPY_TUNED} needs --tuning-db FILE (or $CANOPY_BENCH_TUNING_DB)")
    return args


def method_list(text):
    out = []
    for m in [x.strip() for x in text.split(",") if x.strip()]:
        names = list(L.CASCADE_VARIANTS) if m == CASCADE_ALIAS else [m]
        for n in names:
            if n not in L.ALL_METHODS:
                raise SystemExit(f"unknown method '{n}' (known: {', '.join(L.ALL_METHODS)}, "
                                 f"{CASCADE_ALIAS})")
            if n not in out:
                out.append(n)
    return out


def workload_refs(args, lib):
    """What to run, as plain dicts a worker can load."""
    refs = []
    names = [x.strip() for x in args.workloads.split(",") if x.strip()]
    if not names and not args.tree and not args.batch:
        names = suite_names(args.suite, lib)
    for n in names:
        refs.append({"kind": "suite", "name": n, "suite": os.path.abspath(args.suite)})
    for t in args.tree:
        refs.append({"kind": "tree", "name": t, "tree": t, "model": args.model,
                     "dtype": args.dtype, "page_size": args.page_size,
                     "suite": os.path.abspath(args.suite)})
    for b in args.batch:
        refs.append({"kind": "batch", "name": os.path.basename(b), "path": os.path.abspath(b)})
    return refs


def suite_names(path, lib):
    return lib.suite_names(path)


def load_lib(path):
    try:
        return C.Lib(path), None
    except (OSError, C.CanopyError) as e:
        return None, f"cannot load the Canopy C API ({path or C.default_library_path()}): {e}"


def require_lib(path):
    """The C API, or exit saying why: it builds every workload (suite, tree
    strings, batch files) as the library does, for FlashInfer's methods too."""
    lib, err = load_lib(path)
    if lib is None:
        raise SystemExit(f"{err}\nThe benchmark's workloads come from the C API: build it with "
                         "`cmake --build build --target canopy_bench_capi` (or pass --capi).")
    return lib


class Workload:
    """A workload's spec (dict with canopy_capi's field names), tables and its
    C API handle; the library builds it (workloads/workload.cpp)."""

    def __init__(self, ref, lib):
        self.ref, self.name, self.handle = ref, ref["name"], None
        if lib is None:
            raise RuntimeError("workloads need the Canopy C API (libcanopy_bench_capi.so)")
        if ref["kind"] == "suite":
            w = C.Workload.from_suite(lib, ref["name"], ref["suite"])
        elif ref["kind"] == "tree":
            w = C.Workload.from_tree(lib, ref["tree"], ref["model"], ref["dtype"],
                                     ref["page_size"])
        else:
            w = C.Workload.from_batch(lib, ref["path"])
        self.handle, self.info = w, dict(w.info)
        self.tables = L.Tables(w.indptr, w.indices, w.seq_lens, w.info["page_size"], w.num_pages)
        self.info["kv_layout"] = self.info["kv_layout"].lower()
        self.info["name"] = self.name

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None


# ---------------------------------------------------------------------------
# Prewarm (build step, no GPU, no torch)


def prewarm(args):
    lib = require_lib(args.capi)
    refs = workload_refs(args, lib)
    methods = [m for m in method_list(args.methods) if m in L.CANOPY_METHODS] or [L.CANOPY]
    pw = C.Prewarm(lib, args.prewarm)
    failures = []
    for ref in refs:
        try:
            w = Workload(ref, lib)
            for m in methods:
                p = C.Plan(lib, w.handle, L.canopy_options(m, w.info["head_dim"]))
                pw.add(p)
                p.close()
            w.close()
        except C.CanopyError as e:
            failures.append(f"{ref['name']}: {e}")
    try:
        s = pw.compile(args.prewarm_threads)
    except C.CanopyError as e:
        s = getattr(e, "summary", {})
        failures.append(str(e))
    log(f"prewarm: {s.get('kernels')} kernels for sm_{C.H200['arch']} in "
        f"{s.get('seconds', 0):.1f} s ({s.get('compiled')} compiled, {s.get('disk_hits')} from "
        f"disk) into {s.get('dir')}")
    for f in failures:
        log(f"prewarm FAILED: {f}")
    return 1 if failures else 0


# ---------------------------------------------------------------------------
# GPU side (torch imported lazily: the modes above need no torch)

torch = None
DEV = "cuda"  # selftest_cpu.py sets "cpu" to run the harness without a GPU


def import_torch():
    global torch
    import torch as _torch
    torch = _torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def torch_dtype(name):
    return {"fp16": torch.float16, "f16": torch.float16, "bf16": torch.bfloat16,
            "fp32": torch.float32, "f32": torch.float32}[name.lower()]


class Gpu:
    """Device facts, the L2 flush, the GPU-side delay and the timers."""

    def __init__(self, args):
        self.dev = torch.device(DEV)
        self.props = torch.cuda.get_device_properties(0)
        self.flush_buf = torch.empty(args.flush_mb * 1024 * 1024 // 4, dtype=torch.int32,
                                     device=self.dev)
        self.flush_i = 0
        self.sleep_kind, self.cycles_per_us = None, None
        self._calibrate_sleep()

    def flush(self):
        """Writes the whole flush buffer (>= 512 MB), evicting the L2."""
        self.flush_i = (self.flush_i + 1) % 127
        self.flush_buf.fill_(self.flush_i + 1)

    def _calibrate_sleep(self):
        # Busy the GPU ~0.2 s first, so that the SM clock the delay counts in is
        # the boost clock the measurements run at.
        a = torch.randn(4096, 4096, dtype=torch.bfloat16, device=self.dev)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.2:
            for _ in range(20):
                torch.matmul(a, a)
            torch.cuda.synchronize()
        del a
        try:
            torch.cuda._sleep(1000)
            self.sleep_kind = "torch.cuda._sleep"
        except Exception:
            self.sleep_kind = None
        if self.sleep_kind is None:
            return
        times = []
        for _ in range(3):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            torch.cuda._sleep(2_000_000)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) * 1e3)
        self.cycles_per_us = 2_000_000 / statistics.median(times)

    def sleep_us(self, us):
        """Enqueues a GPU-side delay of about `us` microseconds."""
        if self.sleep_kind and us > 0:
            torch.cuda._sleep(max(1, int(us * self.cycles_per_us)))

    def marker(self):
        """A small kernel with a known name ('spin_kernel'), for ncu ranges."""
        if self.sleep_kind:
            torch.cuda._sleep(1)
            return "spin_kernel"
        return None


def env_info(args, lib, runtime_info, fi_version):
    p = torch.cuda.get_device_properties(0)
    driver = None
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                 "--format=csv,noheader"], capture_output=True, text=True,
                                timeout=20).stdout.strip().splitlines()[0]
    except Exception:
        pass
    return {"device": torch.cuda.get_device_name(0), "sms": p.multi_processor_count,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "l2_mb": round(getattr(p, "L2_cache_size", 0) / 1e6, 1) or None,
            "driver": driver, "torch": torch.__version__, "cuda": torch.version.cuda,
            "flashinfer": fi_version, "python": platform.python_version(),
            "canopy_capi": lib.path if lib else None, "canopy_runtime": runtime_info,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "command": " ".join([os.path.basename(sys.argv[0])] +
                                                         sys.argv[1:])}


# ---- ceilings ----------------------------------------------------------------

READ_KERNEL = r"""
extern "C" __global__ void canopy_bench_stream_read(const uint4* __restrict__ p,
                                                    unsigned long long n, unsigned int* sink) {
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned int acc = 0;
  for (; i + 3 * stride < n; i += 4 * stride) {  // four independent 16-byte loads in flight
    const uint4 a = p[i], b = p[i + stride], c = p[i + 2 * stride], d = p[i + 3 * stride];
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^
           d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = p[i];
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;  // keeps the loads; practically never taken
}
"""


def time_events(fn, reps, warmup=2):
    """Median and all times (us) of fn() with CUDA events, fn back to back."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1e3)
    return statistics.median(ts), ts


def measure_ceilings(args):
    out = {}
    nbytes = int(args.read_gib * 2**30) // 16 * 16
    buf = torch.empty(nbytes // 4, dtype=torch.int32, device=DEV)
    buf.random_()  # never zeros
    try:
        import cupy
        kernel = cupy.RawKernel(READ_KERNEL, "canopy_bench_stream_read")
        sink = cupy.zeros(1, dtype=cupy.uint32)
        n16 = nbytes // 16
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        grid, block = sms * 8, 256
        ptr = cupy.cuda.MemoryPointer(
            cupy.cuda.UnownedMemory(buf.data_ptr(), nbytes, buf), 0)
        arr = cupy.ndarray((n16 * 4,), dtype=cupy.uint32, memptr=ptr)

        def read():
            with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
                kernel((grid,), (block,), (arr, cupy.uint64(n16), sink))

        med, ts = time_events(read, 12)
        out["read_bw_method"] = f"cupy RawKernel, 16-byte loads, {nbytes / 2**30:.1f} GiB"
    except Exception as e:
        log(f"cupy read kernel unavailable ({short_error(e, 200)}); using torch sum")
        view = buf.view(torch.int64)
        med, ts = time_events(lambda: view.sum(), 12)
        out["read_bw_method"] = f"torch int64 sum over {nbytes / 2**30:.1f} GiB (fallback)"
    out["read_bw_tbs"] = nbytes / (med * 1e-6) / 1e12
    out["read_bw_times_us"] = [round(t, 2) for t in ts]
    del buf
    out.update(measure_matrix_rate())
    torch.cuda.empty_cache()
    return out


def measure_matrix_rate(n=8192):
    a = torch.randn(n, n, dtype=torch.bfloat16, device=DEV)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=DEV)
    c = torch.empty(n, n, dtype=torch.bfloat16, device=DEV)
    med, ts = time_events(lambda: torch.matmul(a, b, out=c), 12, warmup=3)
    return {"matrix_tflops": 2 * n**3 / (med * 1e-6) / 1e12,
            "matrix_method": f"torch.matmul bf16 {n}^3, random inputs",
            "matrix_times_us": [round(t, 2) for t in ts]}


# ---- inputs and reference ------------------------------------------------------


class Inputs:
    """Random q, K, V (never zeros) in the workload's dtypes and layout, and
    the trimmed block tables on the GPU: the same tensors for every method."""

    def __init__(self, wl, seed):
        s, t = wl.info, wl.tables
        g = torch.Generator(device=DEV)
        g.manual_seed(seed)
        B, hq, hk, d, p = (t.batch, s["num_qo_heads"], s["num_kv_heads"], s["head_dim"],
                           s["page_size"])
        self.q = torch.empty(B, hq, d, dtype=torch_dtype(s["q_dtype"]), device=DEV)
        self.q.uniform_(-2, 2, generator=g)
        shape = (t.num_pages, p, hk, d) if s["kv_layout"] == "nhd" else (t.num_pages, hk, p, d)
        kvdt = torch_dtype(s["kv_dtype"])
        self.k = torch.empty(shape, dtype=kvdt, device=DEV).uniform_(-1, 1, generator=g)
        self.v = torch.empty(shape, dtype=kvdt, device=DEV).uniform_(-1, 1, generator=g)
        indptr, indices, last = t.flat()
        self.indptr_host = indptr
        self.indptr = torch.tensor(indptr, dtype=torch.int32, device=DEV)
        self.indices = torch.tensor(indices, dtype=torch.int32, device=DEV)
        self.last_page_len = torch.tensor(last, dtype=torch.int32, device=DEV)
        self.o_dtype = torch_dtype(s["o_dtype"])


def gather_kv(cache, pages, n, layout):
    x = cache.index_select(0, pages)
    if layout == "nhd":  # [np, P, H, D]
        x = x.reshape(-1, x.shape[2], x.shape[3])
    else:  # [np, H, P, D] -> [np, P, H, D]
        x = x.permute(0, 2, 1, 3).reshape(-1, x.shape[1], x.shape[3])
    return x[:n].float()


def reference(wl, inp):
    """float32 attention on the GPU from the gathered KV, one request at a time."""
    s, t = wl.info, wl.tables
    hq, hk, d = s["num_qo_heads"], s["num_kv_heads"], s["head_dim"]
    scale, cap = s["sm_scale"], s.get("logits_soft_cap") or 0.0
    out = torch.empty(t.batch, hq, d, dtype=torch.float32, device=DEV)
    for r in range(t.batch):
        pages = inp.indices[inp.indptr_host[r]:inp.indptr_host[r + 1]]
        n = t.seq_lens[r]
        kk = gather_kv(inp.k, pages, n, s["kv_layout"])
        vv = gather_kv(inp.v, pages, n, s["kv_layout"])
        qr = inp.q[r].float().view(hk, hq // hk, d)
        sc = torch.einsum("hgd,nhd->hgn", qr, kk) * scale
        if cap > 0:
            sc = cap * torch.tanh(sc / cap)
        pr = torch.softmax(sc, dim=-1)
        out[r] = torch.einsum("hgn,nhd->hgd", pr, vv).reshape(hq, d)
    return out


def rel_l2(out, ref):
    o = out.double()
    if not bool(torch.isfinite(o).all()):
        return float("nan")
    r = ref.double()
    den = r.norm().item()
    return (o - r).norm().item() / (den if den > 0 else 1.0)


# ---- methods ---------------------------------------------------------------------


class Method:
    """One way to compute the step. setup() plans; run() enqueues one step on
    the current stream (what is timed); output() is the result in request
    order after a run; launches is the kernel count per run when known."""
    launches = None
    levels = None
    info = None

    def poison(self):
        pass

    def close(self):
        pass


class CanopyMethod(Method):
    def __init__(self, name, lib, runtime, wl, inp):
        if runtime is None:
            raise RuntimeError("no Canopy runtime (see the env record's errors)")
        self.name, self.inp, self.wl = name, inp, wl
        self.plan = C.Plan(lib, wl.handle, L.canopy_options(name, wl.info["head_dim"]),
                           runtime=runtime)
        self.info = self.plan.info()
        self.launches = self.info["kernel_launches"]
        B, hq, d = inp.q.shape
        self.out = torch.empty(B, hq, d, dtype=inp.o_dtype, device=DEV)
        self.lse = (torch.empty(B, hq, dtype=torch.float32, device=DEV)
                    if wl.info.get("with_lse") else None)
        self.args = (inp.q.data_ptr(), inp.k.data_ptr(), inp.v.data_ptr(), self.out.data_ptr(),
                     self.lse.data_ptr() if self.lse is not None else 0)

    def run(self):
        self.plan.run(*self.args, stream=torch.cuda.current_stream().cuda_stream)

    def poison(self):
        self.out.fill_(float("nan"))

    def output(self):
        return self.out

    def close(self):
        self.plan.close()


class FiDecode(Method):
    def __init__(self, name, fi, wl, inp, ws):
        s = wl.info
        self.inp = inp
        self.wrapper = fi.BatchDecodeWithPagedKVCacheWrapper(
            ws, s["kv_layout"].upper(), use_tensor_cores=(name == L.FI_DECODE_TC))
        self.wrapper.plan(inp.indptr, inp.indices, inp.last_page_len, s["num_qo_heads"],
                          s["num_kv_heads"], s["head_dim"], s["page_size"],
                          q_data_type=torch_dtype(s["q_dtype"]),
                          kv_data_type=torch_dtype(s["kv_dtype"]), sm_scale=s["sm_scale"],
                          logits_soft_cap=(s.get("logits_soft_cap") or None))
        self.out = torch.empty_like(inp.q)

    def run(self):
        self.wrapper.run(self.inp.q, (self.inp.k, self.inp.v), out=self.out)

    def poison(self):
        self.out.fill_(float("nan"))

    def output(self):
        return self.out


class FiCascade(Method):
    def __init__(self, name, fi, wl, inp, ws, levels):
        s = wl.info
        self.inp, self.levels = inp, levels["num_levels"]
        self.order = torch.tensor(levels["order"], dtype=torch.int64, device=DEV)
        self.q_sorted = inp.q.index_select(0, self.order).contiguous()  # outside the timing

        def t(key):
            return [torch.tensor(lv[key], dtype=torch.int32, device=DEV)
                    for lv in levels["levels"]]

        self.wrapper = fi.MultiLevelCascadeAttentionWrapper(self.levels, ws, s["kv_layout"].upper())
        self.wrapper.plan(t("qo_indptr"), t("kv_indptr"), t("kv_indices"), t("kv_last_page_len"),
                          s["num_qo_heads"], s["num_kv_heads"], s["head_dim"], s["page_size"],
                          q_data_type=torch_dtype(s["q_dtype"]),
                          kv_data_type=torch_dtype(s["kv_dtype"]), sm_scale=s["sm_scale"],
                          logits_soft_cap=(s.get("logits_soft_cap") or None))
        self.out_sorted = None
        self.info = {"levels": self.levels, "groups": [lv["groups"] for lv in levels["levels"]],
                     "max_group": [lv["max_group"] for lv in levels["levels"]]}

    def run(self):
        self.out_sorted = self.wrapper.run(self.q_sorted, (self.inp.k, self.inp.v))

    def output(self):
        out = torch.empty_like(self.out_sorted)
        out[self.order] = self.out_sorted  # un-permute: sorted row i is request order[i]
        return out


def level_signature(levels):
    return json.dumps([[lv[k] for k in ("qo_indptr", "kv_indptr", "kv_indices",
                                         "kv_last_page_len")] for lv in levels["levels"]])


# ---- timing ---------------------------------------------------------------------


def time_method(gpu, run, iters, warmup):
    """Median GPU time of run() with the L2 flushed and a GPU-side delay before
    each start event (so host launch time cannot leak into it), and the median
    host time of one run() call (perf_counter around the call, no sync)."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    probe = []
    for _ in range(5):
        t0 = time.perf_counter()
        run()
        probe.append((time.perf_counter() - t0) * 1e6)
    torch.cuda.synchronize()
    delay = min(max(2 * max(probe) + 50, 100), 20000)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    host = []
    for i in range(iters):
        gpu.flush()
        gpu.sleep_us(delay)
        starts[i].record()
        t0 = time.perf_counter()
        run()
        host.append((time.perf_counter() - t0) * 1e6)
        ends[i].record()
        # One run in flight at a time: a full launch queue would block run() and
        # count as host time; the flush and the delay hide this sync's gap.
        torch.cuda.synchronize()
    ts = sorted(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))
    return {"median_us": statistics.median(ts), "min_us": ts[0],
            "p10_us": ts[len(ts) // 10], "p90_us": ts[(len(ts) * 9) // 10], "iters": iters,
            "host_us": statistics.median(host), "host_max_us": max(host), "delay_us": delay,
            "delay": gpu.sleep_kind or "none",
            "host_over_delay": sum(1 for h in host if h > delay)}


def capture_graph(run):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=side, capture_error_mode="thread_local"):
        run()
    torch.cuda.synchronize()
    return g


def count_kernels(run):
    """Kernels one run() launches, from torch.profiler (None when it fails)."""
    try:
        from torch.profiler import ProfilerActivity, profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run()
            torch.cuda.synchronize()
        skip = ("Memcpy", "Memset")
        events = list(prof.events())
        direct = sum(1 for e in events if "CUDA" in str(getattr(e, "device_type", ""))
                     and not e.name.startswith(skip))
        attached = sum(1 for e in events for k in (getattr(e, "kernels", None) or [])
                       if not str(getattr(k, "name", "")).startswith(skip))
        n = max(direct, attached)
        return n if n > 0 else None
    except Exception as e:
        log(f"kernel count failed: {short_error(e, 200)}")
        return None


def cuda_alive():
    try:
        torch.cuda.synchronize()
        x = torch.ones(1, device=DEV)
        return float((x + 1).item()) == 2.0
    except Exception:
        return False


# ---------------------------------------------------------------------------
# Worker


class Recorder:
    """Appends JSON lines (progress, rows) to the results file, flushed at once."""

    def __init__(self, path):
        self.f = open(path, "a")

    def write(self, rec):
        rec.setdefault("t", time.time())
        self.f.write(json.dumps(rec, default=str) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def progress(self, workload, method, phase):
        self.write({"type": "progress", "workload": workload, "method": method, "phase": phase})


def setup_stack(args, need_fi, rec=None, disable=()):
    """torch, the Canopy C API and runtime, FlashInfer: each failure recorded
    (`disable`: components that killed an earlier worker)."""
    import_torch()
    if not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA device")
    torch.cuda.init()
    errors = {k: "disabled: an earlier worker died while starting it" for k in disable}
    if rec:
        rec.progress(None, None, "start-canopy")
    lib, err = load_lib(args.capi)
    # Methods with a runtime of their own (canopy-untuned: the database off;
    # canopy-tuned: --tuning-db); the others share `runtime`.
    runtime, runtime_info, own_runtimes = None, None, {}
    if lib is None:
        errors["canopy"] = err
    elif "canopy" in disable:
        pass
    else:
        try:
            runtime = C.Runtime(lib, 0, args.cache_dir)
            runtime_info = runtime.info()
            own_runtimes[L.CANOPY_UNTUNED] = C.Runtime(lib, 0, args.cache_dir, "off")
            if args.tuning_db:
                rt = C.Runtime(lib, 0, args.cache_dir, args.tuning_db)
                runtime_info["tuned_runtime"] = rt.info()
                if runtime_info["tuned_runtime"].get("tuned"):
                    own_runtimes[L.CANOPY_TUNED] = rt
                else:
                    errors[L.CANOPY_TUNED] = ("tuning database not used: " +
                                              runtime_info["tuned_runtime"]["tuning_message"])
        except C.CanopyError as e:
            errors["canopy"] = f"Canopy runtime: {e}"
    fi, fi_version = None, None
    if rec:
        rec.progress(None, None, "start-flashinfer")
    if need_fi and "flashinfer" not in disable:
        try:
            import flashinfer
            fi, fi_version = flashinfer, getattr(flashinfer, "__version__", "?")
        except Exception as e:
            errors["flashinfer"] = f"import flashinfer: {short_error(e)}"
    return lib, runtime, own_runtimes, runtime_info, fi, fi_version, errors


def run_method(name, ctx, wl, inp, ref_out, cascade_cache, rec):
    """Plans, checks, times one method; never raises (errors go in the result)."""
    args, gpu = ctx["args"], ctx["gpu"]
    res = {"status": "ERROR"}
    m = None
    phase = "setup"
    try:
        rec.progress(wl.name, name, "setup")
        t0 = time.perf_counter()
        if name in L.CANOPY_METHODS:
            if name in (L.CANOPY_TUNED, L.CANOPY_UNTUNED) and name not in ctx["own_runtimes"]:
                raise RuntimeError(ctx["errors"].get(name, f"no Canopy runtime for {name}"))
            m = CanopyMethod(name, ctx["lib"], ctx["own_runtimes"].get(name, ctx["runtime"]), wl,
                             inp)
        else:
            if ctx["fi"] is None:
                raise RuntimeError(ctx["errors"].get("flashinfer", "FlashInfer unavailable"))
            if name in (L.FI_DECODE, L.FI_DECODE_TC):
                m = FiDecode(name, ctx["fi"], wl, inp, ctx["fi_ws"])
            elif name in X.METHODS:
                m = X.make_method(name, ctx["fi"], wl, inp, DEV)
            else:
                levels = cascade_cache[name]
                if isinstance(levels, Exception):
                    raise levels
                m = FiCascade(name, ctx["fi"], wl, inp, ctx["fi_ws"], levels)
        res["setup_ms"] = (time.perf_counter() - t0) * 1e3
        res["launches"] = m.launches
        if m.levels:
            res["levels"] = m.levels
        if m.info is not None:
            res["info"] = {k: v for k, v in m.info.items() if k not in ("options",)}

        phase = "check"
        rec.progress(wl.name, name, "check")
        m.poison()
        m.run()
        torch.cuda.synchronize()
        err = rel_l2(m.output(), ref_out)
        res["rel_l2"] = err
        res["status"] = "PASS" if err <= ctx["threshold"] else "FAIL"

        phase = "time"
        rec.progress(wl.name, name, "time")
        res.update(time_method(gpu, m.run, args.iters, args.warmup))
        if res["status"] == "FAIL":
            add_note(res, f"rel-L2 {err:.2e} over the {ctx['threshold']:.0e} threshold")

        if name in L.CANOPY_METHODS and not args.no_graph:
            phase = "graph"
            rec.progress(wl.name, name, "graph")
            try:
                g = capture_graph(m.run)
                m.poison()
                g.replay()
                torch.cuda.synchronize()
                res["graph_rel_l2"] = rel_l2(m.output(), ref_out)
                gt = time_method(gpu, g.replay, args.iters, args.warmup)
                res["graph_us"] = gt["median_us"]
                res["graph_host_us"] = gt["host_us"]
                res["graph_status"] = ("PASS" if res["graph_rel_l2"] <= ctx["threshold"]
                                       else "FAIL")
                del g
            except Exception as e:
                res["graph_error"] = short_error(e)
                if not cuda_alive():
                    raise

        if not args.no_launch_count:  # FlashInfer's count; for Canopy a check of the plan's
            phase = "count"
            rec.progress(wl.name, name, "count")
            res["launches_profiled"] = count_kernels(m.run)
            if res.get("launches") is None:
                res["launches"] = res["launches_profiled"]
            elif res["launches_profiled"] not in (None, res["launches"]):
                add_note(res, f"the plan says {res['launches']} launches, the profiler saw "
                              f"{res['launches_profiled']} kernels")
    except X.NotSupported as e:  # a shape the method cannot take: recorded, not an error
        res = {"status": X.UNSUPPORTED, "note": f"not supported: {e}"}
    except Exception as e:
        res["error"] = f"{phase}: {short_error(e)}"
        if phase in ("setup", "check", "time"):
            res["status"] = "ERROR"  # no valid time to report
        res["traceback"] = traceback.format_exc(limit=4)[-1500:]
        if not cuda_alive():
            res["sticky"] = True
    finally:
        if m is not None:
            try:
                m.close()
            except Exception:
                pass
    return res


def add_note(res, text):
    res["note"] = f"{res['note']}; {text}" if res.get("note") else text


def workload_row(wl, ceil):
    b = L.workload_bytes(wl.tables, wl.info)
    fl, kind = L.floor_us(b["unique_bytes"], b["flops"],
                          (ceil.get("read_bw_tbs") or 0) * 1e12,
                          (ceil.get("matrix_tflops") or 0) * 1e12)
    spec = {k: wl.info.get(k) for k in ("num_qo_heads", "num_kv_heads", "head_dim", "q_dtype",
                                        "kv_dtype", "o_dtype", "kv_layout", "page_size",
                                        "logits_soft_cap", "with_lse")}
    return {"type": "workload", "workload": wl.name, "tree": wl.info.get("tree"),
            "model": wl.info.get("model"), "spec": spec, "batch": wl.tables.batch,
            "num_pages": wl.tables.num_pages, "bytes": b, "floor_us": fl, "floor_kind": kind,
            "methods": {}, "errors": []}


def worker(cfg_path):
    with open(cfg_path) as f:
        cfg = json.load(f)
    args = argparse.Namespace(**cfg["args"])
    rec = Recorder(cfg["results"])
    methods = cfg["methods"]
    skip = {(s["workload"], s["method"]): s["error"] for s in cfg.get("skip", [])}
    rec.progress(None, None, "start")
    need_fi = any(m in L.FI_METHODS for m in methods)
    lib, runtime, own_runtimes, runtime_info, fi, fi_version, errors = setup_stack(
        args, need_fi, rec, cfg.get("disable", []))
    rec.progress(None, None, "start-gpu")
    gpu = Gpu(args)
    if not cfg.get("env"):
        rec.write({"type": "env", "env": env_info(args, lib, runtime_info, fi_version),
                   "errors": errors})
    ceil = cfg.get("ceilings")
    if not ceil:
        rec.progress(None, None, "ceilings")
        try:
            ceil = measure_ceilings(args)
        except Exception as e:
            ceil = {"error": short_error(e)}
        ceil["delay"] = gpu.sleep_kind
        ceil["delay_cycles_per_us"] = gpu.cycles_per_us
        rec.write({"type": "ceilings", "ceilings": ceil})
        log(f"ceilings: read {ceil.get('read_bw_tbs', float('nan')):.2f} TB/s, bf16 matrix "
            f"{ceil.get('matrix_tflops', float('nan')):.0f} TFLOP/s")
    fi_ws = torch.zeros(256 * 1024 * 1024, dtype=torch.uint8, device=DEV) if fi else None
    ctx = {"args": args, "gpu": gpu, "lib": lib, "runtime": runtime,
           "own_runtimes": own_runtimes, "fi": fi, "fi_ws": fi_ws,
           "errors": errors}
    t_start = cfg.get("t_start", time.time())
    for ref in cfg["workloads"]:
        if args.deadline_s and time.time() - t_start > args.deadline_s:
            log("deadline reached: no more workloads")
            break
        rec.progress(ref["name"], None, "load")
        t_wl = time.time()
        try:
            wl = Workload(ref, lib)
        except Exception as e:
            rec.write({"type": "workload", "workload": ref["name"], "methods": {},
                       "errors": [f"load: {short_error(e)}"]})
            continue
        row = workload_row(wl, ceil)
        row["spec"]["sm_scale"] = wl.info.get("sm_scale")
        ctx["threshold"] = L.threshold(wl.info["o_dtype"])
        try:
            rec.progress(wl.name, None, "inputs")
            inp = Inputs(wl, args.seed)
            rec.progress(wl.name, None, "reference")
            t0 = time.perf_counter()
            ref_out = reference(wl, inp)
            torch.cuda.synchronize()
            row["reference_s"] = time.perf_counter() - t0
        except Exception as e:
            row["errors"].append(f"inputs/reference: {short_error(e)}")
            rec.write(row)
            wl.close()
            if not cuda_alive():
                rec.write({"type": "sticky", "workload": wl.name, "method": None})
                os._exit(3)
            continue
        cascade_cache, signatures = {}, {}
        if any(m in L.CASCADE_VARIANTS for m in methods):
            trie = L.PageTrie(wl.tables)
            for name, variant in L.CASCADE_VARIANTS.items():
                try:
                    cascade_cache[name] = L.build_cascade_levels(wl.tables, variant, trie)
                except L.NotRepresentable as e:
                    cascade_cache[name] = e
        for name in methods:
            if (wl.name, name) in skip:
                row["methods"][name] = {"status": "ERROR", "error": skip[(wl.name, name)]}
                continue
            lv = cascade_cache.get(name)
            if isinstance(lv, dict):  # identical levels to an earlier variant: reuse its numbers
                sig = level_signature(lv)
                if sig in signatures and signatures[sig] in row["methods"]:
                    same = signatures[sig]
                    row["methods"][name] = dict(row["methods"][same], same_as=same)
                    continue
                signatures[sig] = name
            res = run_method(name, ctx, wl, inp, ref_out, cascade_cache, rec)
            row["methods"][name] = res
            st = res.get("status")
            log(f"{wl.name:20s} {name:18s} {st:5s} "
                f"{res.get('median_us', float('nan')):10.1f} us  rel-L2 "
                f"{res.get('rel_l2', float('nan')):.1e}" +
                (f"  graph {res['graph_us']:.1f} us" if res.get("graph_us") else "") +
                (f"  [{res['error'][:160]}]" if res.get("error") else "") +
                (f"  [{res['note'][:160]}]" if st == X.UNSUPPORTED else ""))
            if res.get("sticky"):
                rec.write({"type": "sticky", "workload": wl.name, "method": name,
                           "error": res.get("error")})
                os._exit(3)
        row["seconds"] = time.time() - t_wl
        ci, bi = (row["methods"].get(n, {}).get("info") for n in (L.CANOPY, L.BLIND))
        if ci and bi and all(ci.get(k) == bi.get(k) for k in ("items", "launch_configs",
                                                              "predicted_us")):
            row.setdefault("notes", []).append("prefix_blind planned the same as prefix-aware")
        rec.write(row)
        del inp, ref_out
        wl.close()
        torch.cuda.empty_cache()
    rec.progress(None, None, "done")
    return 0


# ---------------------------------------------------------------------------
# Supervisor


def read_jsonl(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by a kill
    return out


def supervise(args):
    t_start = time.time()
    lib, lib_err = require_lib(args.capi), None
    methods = method_list(args.methods)
    refs = workload_refs(args, lib)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    results_path = os.path.splitext(os.path.abspath(args.out))[0] + ".jsonl"
    open(results_path, "w").close()
    log(f"{len(refs)} workload(s) x {len(methods)} method(s); results stream to {results_path}")
    skip, notes, restarts, disable, ceil_override = [], [], 0, [], None
    remaining = list(refs)
    while remaining:
        records = read_jsonl(results_path)
        env = next((r for r in records if r["type"] == "env"), None)
        ceil = next((r["ceilings"] for r in records if r["type"] == "ceilings"), ceil_override)
        cfg = {"args": vars(args), "methods": methods, "workloads": remaining, "skip": skip,
               "results": results_path, "env": bool(env), "ceilings": ceil,
               "t_start": t_start, "disable": disable}
        cfg_path = os.path.join(out_dir, "worker_config.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        rc, tail, why = run_worker(cfg_path, results_path, args, t_start)
        records = read_jsonl(results_path)
        done = {r["workload"] for r in records if r["type"] == "workload"}
        remaining = [r for r in remaining if r["name"] not in done]
        if rc == 0 and remaining:
            notes.append("deadline reached; not run: " + ", ".join(r["name"] for r in remaining))
        if rc == 0 or not remaining:
            break
        if why == "deadline":
            notes.append(f"deadline of {args.deadline_s:.0f} s reached; not run: "
                         + ", ".join(r["name"] for r in remaining))
            break
        last = next((r for r in reversed(records) if r["type"] in ("progress", "sticky")), {})
        wname, mname, phase = last.get("workload"), last.get("method"), last.get("phase", "?")
        own = [t for t in tail if not t.startswith("[bench ")]
        msg = (f"worker {why or f'exited with {rc}'} during {mname or '-'} {phase} of "
               f"{wname or '-'}" + ("; last output: " + " | ".join(own[-4:]) if own else ""))
        msg = msg[:900]
        notes.append(msg)
        log(msg)
        restarts += 1
        if wname is None and phase in ("start-canopy", "start-flashinfer") and restarts <= 8:
            disable.append(phase.split("-", 1)[1])  # go on without it
            continue
        if wname is None and phase == "ceilings" and restarts <= 8:
            ceil_override = {"error": msg}  # go on without ceilings (no floors)
            continue
        if restarts > 8 or wname is None:
            notes.append("giving up: " + ("too many restarts" if restarts > 8 else
                                          "the worker failed before the first workload"))
            break
        if mname is None:  # the workload itself (inputs, reference) killed it: skip it
            remaining = [r for r in remaining if r["name"] != wname]
            notes.append(f"{wname}: skipped")
            with open(results_path, "a") as f:
                f.write(json.dumps({"type": "workload", "workload": wname, "methods": {},
                                    "errors": [msg]}) + "\n")
        else:
            skip.append({"workload": wname, "method": mname, "error": msg})
    return assemble(args, results_path, refs, methods, notes, lib_err, t_start)


def run_worker(cfg_path, results_path, args, t_start):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", cfg_path]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    tail = deque(maxlen=40)
    last = [time.time()]

    def pump():
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line.rstrip())
            last[0] = time.time()

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    why = None
    while proc.poll() is None:
        time.sleep(0.5)
        try:
            last[0] = max(last[0], os.path.getmtime(results_path))
        except OSError:
            pass
        now = time.time()
        if args.deadline_s and now - t_start > args.deadline_s + 60:
            why = "deadline"
        elif now - last[0] > args.stall_s:
            why = f"stalled (no progress for {args.stall_s:.0f} s)"
        if why:
            log(f"stopping the worker: {why}")
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            break
    proc.wait()
    th.join(timeout=5)
    return proc.returncode, list(tail), why


def assemble(args, results_path, refs, methods, notes, lib_err, t_start):
    records = read_jsonl(results_path)
    env_rec = next((r for r in records if r["type"] == "env"), {})
    ceil = next((r["ceilings"] for r in records if r["type"] == "ceilings"), {})
    rows = {}
    for r in records:
        if r["type"] == "workload":
            rows[r["workload"]] = {k: v for k, v in r.items() if k not in ("type", "t")}
    ordered = []
    for ref in refs:
        row = rows.get(ref["name"]) or {"workload": ref["name"], "methods": {},
                                        "errors": ["not run"]}
        ordered.append(row)
    summary = L.summarize(ordered)
    errors = []
    for k, v in (env_rec.get("errors") or {}).items():
        errors.append(f"{k}: {v}")
    if lib_err:
        errors.append(lib_err)
    for row in ordered:
        for e in row.get("errors", []):
            errors.append(f"{row['workload']}: {e}")
        for name, m in row.get("methods", {}).items():
            if m.get("error"):
                errors.append(f"{row['workload']}/{name}: {m['error']}")
    results = {"format": "canopy-gpu-bench/1", "env": env_rec.get("env", {}),
               "ceilings": ceil, "methods": methods, "iters": args.iters,
               "workloads": ordered, "summary": summary, "errors": errors, "notes": notes,
               "wall_s": time.time() - t_start}
    write_json(args.out, results)
    print()
    print(L.text_table(ordered, summary))
    if notes:
        print("notes: " + " || ".join(notes)[:2000])
    print(f"wrote {args.out} ({len(errors)} method errors, {time.time() - t_start:.0f} s)")
    return 0


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str, allow_nan=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Nsight Compute


def ncu_mode(args):
    """Each chosen method once per workload between cudaProfilerStart/Stop,
    after a warm-up, each range opened by a marker kernel; writes a manifest."""
    t_start = time.time()
    methods = method_list(args.ncu_methods)
    manifest_path = args.ncu_manifest or os.path.join(os.path.dirname(os.path.abspath(args.out)),
                                                      "ncu_manifest.json")
    os.makedirs(os.path.dirname(manifest_path), exist_ok=True)
    need_fi = any(m in L.FI_METHODS for m in methods)
    lib, runtime, own_runtimes, runtime_info, fi, fi_version, errors = setup_stack(args, need_fi)
    gpu = Gpu(args)
    refs = workload_refs(args, lib)
    fi_ws = torch.zeros(256 * 1024 * 1024, dtype=torch.uint8, device=DEV) if fi else None
    manifest = {"entries": [], "errors": dict(errors), "marker": None}

    for ref in refs:
        if args.deadline_s and time.time() - t_start > args.deadline_s:
            manifest["errors"]["deadline"] = f"stopped before {ref['name']}"
            break
        try:
            wl = Workload(ref, lib)
            inp = Inputs(wl, args.seed)
            trie = L.PageTrie(wl.tables)
        except Exception as e:
            manifest["errors"][ref["name"]] = short_error(e)
            continue
        for name in methods:
            m = None
            try:
                if name in L.CANOPY_METHODS:
                    rt = own_runtimes.get(name, runtime)
                    m = CanopyMethod(name, lib, rt, wl, inp)
                elif name in (L.FI_DECODE, L.FI_DECODE_TC):
                    m = FiDecode(name, fi, wl, inp, fi_ws)
                elif name in X.METHODS:
                    m = X.make_method(name, fi, wl, inp, DEV)
                else:
                    lv = L.build_cascade_levels(wl.tables, L.CASCADE_VARIANTS[name], trie)
                    m = FiCascade(name, fi, wl, inp, fi_ws, lv)
                m.run()
                m.run()
                torch.cuda.synchronize()
                torch.cuda.profiler.start()
                marker = gpu.marker()
                m.run()
                torch.cuda.synchronize()
                torch.cuda.profiler.stop()
                manifest["marker"] = marker
                manifest["entries"].append({"workload": wl.name, "method": name,
                                            "kernels": m.launches, "marker": marker})
            except Exception as e:
                manifest["errors"][f"{wl.name}/{name}"] = short_error(e)
                try:
                    torch.cuda.profiler.stop()
                except Exception:
                    pass
            finally:
                if m is not None:
                    m.close()
        wl.close()
        del inp
        torch.cuda.empty_cache()
        write_json(manifest_path, manifest)
        log(f"ncu: {wl.name} done")
    write_json(manifest_path, manifest)
    log(f"ncu manifest: {len(manifest['entries'])} ranges -> {manifest_path}")
    return 0


def parse_ncu(args):
    json_path = args.json or args.out
    manifest_path = args.manifest or os.path.join(os.path.dirname(os.path.abspath(json_path)),
                                                  "ncu_manifest.json")
    with open(args.parse_ncu, errors="replace") as f:
        kernels = L.parse_ncu_csv(f.read())
    with open(manifest_path) as f:
        manifest = json.load(f)
    assigned = L.assign_ncu(manifest["entries"], kernels)
    with open(json_path) as f:
        results = json.load(f)
    L.merge_ncu(results, assigned)
    results["ncu"]["kernels"] = len(kernels)
    results["ncu"]["manifest_errors"] = manifest.get("errors", {})
    results["summary"] = L.summarize(results.get("workloads", []))
    write_json(json_path, results)
    print(f"{'workload':20s} {'method':14s} {'kernels':>7s} {'DRAM MB':>10s} {'/unique':>8s}")
    for a in assigned:
        row = next((r for r in results["workloads"] if r["workload"] == a["workload"]), {})
        ub = row.get("bytes", {}).get("unique_bytes")
        print(f"{str(a['workload']):20s} {str(a['method']):14s} {a['kernels']:7d} "
              f"{a['dram_bytes'] / 1e6:10.1f} "
              f"{(a['dram_bytes'] / ub) if ub else float('nan'):8.2f}"
              + (f"  {'; '.join(a['problems'])}" if a["problems"] else ""))
    for p in results["ncu"]["problems"]:
        log(f"ncu problem: {p}")
    print(f"merged {len(assigned)} ranges ({len(kernels)} kernels) into {json_path}")
    return 0


# ---------------------------------------------------------------------------


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("CANOPY_BENCH_SELFTEST") == "1" and __name__ == "__main__":
        import selftest_cpu  # CPU stand-ins (bench/gpu/selftest_cpu.py): developers only
        selftest_cpu.install(sys.modules[__name__])
    if "--worker" in argv:
        return worker(argv[argv.index("--worker") + 1])
    args = parse_args(argv)
    if args.parse_ncu:
        return parse_ncu(args)
    if args.prewarm:
        return prewarm(args)
    if args.ncu:
        return ncu_mode(args)
    if args.in_process:
        lib = require_lib(args.capi)
        out_dir = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        results_path = os.path.splitext(os.path.abspath(args.out))[0] + ".jsonl"
        open(results_path, "w").close()
        refs, methods = workload_refs(args, lib), method_list(args.methods)
        cfg = {"args": vars(args), "methods": methods, "workloads": refs, "skip": [],
               "results": results_path, "env": False, "ceilings": None, "t_start": time.time()}
        cfg_path = os.path.join(out_dir, "worker_config.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        worker(cfg_path)
        return assemble(args, results_path, refs, methods, [], None, cfg["t_start"])
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
