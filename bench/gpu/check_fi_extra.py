#!/usr/bin/env python3
"""GPU smoke test of fi-batch-attention and fi-xqa alone (one short device call):
small workloads in every shape of the suite (so every ahead-of-time module
loads), each method checked against a float32 reference and timed.

    python3 bench/gpu/check_fi_extra.py          # needs torch with CUDA and flashinfer 0.7.4
    bash scripts/gpu_bench.sh check-fi           # on the lent GPU: installs the carried
                                                 # bundle (.peers) first, then runs this

Prints one line per (workload, method): PASS / FAIL with the relative L2 error
against the reference (the benchmark's thresholds: 5e-3 fp16, 2e-2 bf16), the
median time of 20 back-to-back runs (CUDA events; no L2 flush: a sanity
number, not the benchmark's), or n/a with the reason for a shape the method
cannot take, or ERROR with the exception. Exit status 0 when nothing failed.
Needs no Canopy library: the workloads are built here (a shared prefix, then
one private tail per request).
"""
import argparse
import math
import os
import statistics
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_logic as L  # noqa: E402
import fi_extra_methods as X  # noqa: E402

DEV = "cuda"  # --selftest-cpu: "cpu", with selftest_cpu.py's emulation of FlashInfer

# (name, q heads, KV heads, head dim, dtype, page size, layout, sm_scale, prefix, tails)
CASES = [
    ("llama3-8b fp16 p16 NHD", 32, 8, 128, "fp16", 16, "nhd", None, 1024, [100] * 32),
    ("llama3-8b bf16 p16 HND", 32, 8, 128, "bf16", 16, "hnd", None, 512, [37, 200, 64, 1] * 8),
    ("llama3-8b fp16 p64 scale 0.05", 32, 8, 128, "fp16", 64, "nhd", 0.05, 2048, [250] * 16),
    ("llama3-8b fp16 p1 (xqa: n/a)", 32, 8, 128, "fp16", 1, "nhd", None, 256, [32] * 16),
    # the suite's other models, small: every remaining ahead-of-time module loads and runs
    ("llama2-7b MHA fp16", 32, 32, 128, "fp16", 16, "nhd", None, 512, [40] * 8),
    ("llama3-70b group 8 fp16", 64, 8, 128, "fp16", 16, "nhd", None, 512, [40] * 8),
    ("mqa-16 group 16 fp16", 16, 1, 128, "fp16", 16, "nhd", None, 512, [40] * 8),
    ("small-d64 fp16", 16, 4, 64, "fp16", 16, "nhd", None, 512, [40] * 8),
    ("gemma-d256 fp16", 16, 8, 256, "fp16", 16, "nhd", None, 512, [40] * 8),
]


def make_tables(prefix, tails, page):
    """Requests sharing `prefix` tokens (its full pages shared, a partial last
    page copied into each request), then their own tails."""
    full = prefix // page
    indptr, indices, lens, nxt = [0], [], [], full
    for t in tails:
        n = prefix + t
        own = -(-n // page) - full
        indices += list(range(full)) + list(range(nxt, nxt + own))
        nxt += own
        indptr.append(len(indices))
        lens.append(n)
    return L.Tables(indptr, indices, lens, page, nxt)


class Workload:
    def __init__(self, case):
        name, hq, hk, d, dt, p, layout, scale, prefix, tails = case
        self.name = name
        self.info = {"num_qo_heads": hq, "num_kv_heads": hk, "head_dim": d, "q_dtype": dt,
                     "kv_dtype": dt, "o_dtype": dt, "kv_layout": layout, "page_size": p,
                     "sm_scale": scale or 1 / math.sqrt(d), "logits_soft_cap": 0.0,
                     "with_lse": False}
        self.tables = make_tables(prefix, tails, p)


class Inputs:
    def __init__(self, torch, wl, seed=1234):
        s, t = wl.info, wl.tables
        g = torch.Generator(device=DEV).manual_seed(seed)
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[s["q_dtype"]]
        hq, hk, d, p = s["num_qo_heads"], s["num_kv_heads"], s["head_dim"], s["page_size"]
        self.q = torch.empty(t.batch, hq, d, dtype=dt, device=DEV).uniform_(-2, 2, generator=g)
        shape = (t.num_pages, p, hk, d) if s["kv_layout"] == "nhd" else (t.num_pages, hk, p, d)
        self.k = torch.empty(shape, dtype=dt, device=DEV).uniform_(-1, 1, generator=g)
        self.v = torch.empty(shape, dtype=dt, device=DEV).uniform_(-1, 1, generator=g)


def reference(torch, wl, inp):
    s, t = wl.info, wl.tables
    hq, hk, d = s["num_qo_heads"], s["num_kv_heads"], s["head_dim"]
    out = torch.empty(t.batch, hq, d, dtype=torch.float32, device=DEV)
    for r in range(t.batch):
        pages = torch.tensor(t.pages(r), device=DEV)
        kk, vv = inp.k.index_select(0, pages), inp.v.index_select(0, pages)
        if s["kv_layout"] == "hnd":
            kk, vv = kk.permute(0, 2, 1, 3), vv.permute(0, 2, 1, 3)
        n = t.seq_lens[r]
        kk = kk.reshape(-1, hk, d)[:n].float()
        vv = vv.reshape(-1, hk, d)[:n].float()
        sc = torch.einsum("hgd,nhd->hgn", inp.q[r].float().view(hk, hq // hk, d), kk)
        pr = torch.softmax(sc * s["sm_scale"], dim=-1)
        out[r] = torch.einsum("hgn,nhd->hgd", pr, vv).reshape(hq, d)
    return out


def rel_l2(torch, out, ref):
    o = out.double()
    if not bool(torch.isfinite(o).all()):
        return float("nan")
    return (o - ref.double()).norm().item() / ref.double().norm().item()


def time_us(torch, run, reps=20):
    if DEV != "cuda":
        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) * 1e6
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(X.METHODS))
    ap.add_argument("--cases", default="", help="indices into the case list (default: all)")
    ap.add_argument("--selftest-cpu", action="store_true",
                    help="run on the CPU against selftest_cpu.py's FlashInfer emulation")
    args = ap.parse_args(argv)
    global DEV
    import torch
    t0 = time.time()
    if args.selftest_cpu:
        import selftest_cpu
        DEV, fi = "cpu", selftest_cpu.make_fake_flashinfer()
        where = "CPU emulation"
    else:
        import flashinfer as fi
        cc = "".join(map(str, torch.cuda.get_device_capability()))
        where = f"{torch.cuda.get_device_name(0)} (sm_{cc}), {os.path.dirname(fi.__file__)}"
    print(f"{where}; torch {torch.__version__}, flashinfer {getattr(fi, '__version__', '?')}, "
          f"FLASHINFER_DISABLE_JIT={os.environ.get('FLASHINFER_DISABLE_JIT', '')}, "
          f"import {time.time() - t0:.1f} s", flush=True)
    methods = [m for m in args.methods.split(",") if m]
    picks = [int(i) for i in args.cases.split(",") if i] or range(len(CASES))
    bad = 0
    for i in picks:
        wl = Workload(CASES[i])
        inp = Inputs(torch, wl)
        ref = reference(torch, wl, inp)
        thr = L.threshold(wl.info["o_dtype"])
        for name in methods:
            head = f"{wl.name:32s} {name:18s}"
            m = None
            try:
                t1 = time.time()
                m = X.make_method(name, fi, wl, inp, DEV)
                setup = time.time() - t1
                m.poison()
                m.run()
                if DEV == "cuda":
                    torch.cuda.synchronize()
                err = rel_l2(torch, m.output(), ref)
                ok = err <= thr
                us = time_us(torch, m.run)
                bad += not ok
                print(f"{head} {'PASS' if ok else 'FAIL'}  rel-L2 {err:.2e}  {us:9.1f} us  "
                      f"(setup {setup:.1f} s; batch {wl.tables.batch})", flush=True)
            except X.NotSupported as e:
                print(f"{head} n/a   not supported: {e}", flush=True)
            except Exception as e:
                bad += 1
                print(f"{head} ERROR {type(e).__name__}: {str(e)[:500]}", flush=True)
                print("    " + traceback.format_exc(limit=6)[-1500:].replace("\n", "\n    "),
                      flush=True)
            finally:
                if m is not None:
                    m.close()
        del inp, ref
        if DEV == "cuda":
            torch.cuda.empty_cache()
    print(f"{'all passed' if not bad else f'{bad} failed'} in {time.time() - t0:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
