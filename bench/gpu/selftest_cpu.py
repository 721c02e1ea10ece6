#!/usr/bin/env python3
"""Runs run_bench.py end to end on the CPU, for developers without a GPU.

torch.cuda's events, streams, delay and graphs are replaced by CPU stand-ins,
FlashInfer by a float32 torch emulation of the 0.7.4 APIs the benchmark
uses (the decode and cascade wrappers, BatchAttention and xqa; same signatures;
it asserts the contracts the real ones rely on: every cascade level covers
every query in contiguous non-empty groups, last page lengths in 1..page_size,
BatchAttention's page counts and soft cap at run time, xqa's shapes, dtypes,
page sizes and zeroed semaphores), and Canopy's run (which needs a GPU) by the
reference, planned through the real C API. What this checks: the supervisor,
worker, restarts, inputs, reference, cascade plumbing (sort, un-permute),
correctness checks, timing loop, JSON and tables. What it cannot: anything
that happens on a GPU.

    python3 bench/gpu/selftest_cpu.py [run_bench.py arguments]
    (needs torch and libcanopy_bench_capi.so: the C API builds the workloads)

Environment for fault injection: CANOPY_BENCH_SELFTEST_CRASH=B makes the
emulated cascade kill the worker on batches of size B; ..._HANG=B makes it hang;
..._CRASH_FI_IMPORT=1 kills the worker while it imports FlashInfer.
"""
import contextlib
import math
import os
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _attention(q, k_rows, v_rows, scale, cap):
    """q [rows, Hq, D], k/v [n, Hk, D] float32 -> (out [rows, Hq, D], lse [rows, Hq])."""
    import torch
    hq, hk = q.shape[1], k_rows.shape[1]
    g = hq // hk
    qv = q.float().view(q.shape[0], hk, g, q.shape[2])
    s = torch.einsum("rhgd,nhd->rhgn", qv, k_rows) * scale
    if cap:
        s = cap * torch.tanh(s / cap)
    lse = torch.logsumexp(s, dim=-1)
    o = torch.einsum("rhgn,nhd->rhgd", torch.softmax(s, dim=-1), v_rows)
    return o.reshape(q.shape[0], hq, -1), lse.reshape(q.shape[0], hq)


def _gather(cache, pages, ntok, layout):
    x = cache[pages.long()]
    if layout == "NHD":
        x = x.reshape(-1, x.shape[2], x.shape[3])
    else:
        x = x.permute(0, 2, 1, 3).reshape(-1, x.shape[1], x.shape[3])
    return x[:ntok].float()


def make_fake_flashinfer():
    fi = types.ModuleType("flashinfer")
    fi.__version__ = "0.7.4 (CPU emulation, selftest)"

    class BatchDecodeWithPagedKVCacheWrapper:
        def __init__(self, float_workspace_buffer, kv_layout="NHD", use_cuda_graph=False,
                     use_tensor_cores=False, **kwargs):
            assert kv_layout in ("NHD", "HND")
            self.layout, self.tc = kv_layout, use_tensor_cores

        def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim,
                 page_size, *, q_data_type="float16", kv_data_type=None, sm_scale=None,
                 logits_soft_cap=None, **kwargs):
            if not self.tc and num_qo_heads // num_kv_heads in (5, 7):
                raise RuntimeError("Unsupported group_size")  # as the real one
            assert 1 <= int(last_page_len.min()) and int(last_page_len.max()) <= page_size
            self.t = (indptr.tolist(), indices, last_page_len.tolist(), page_size)
            self.scale = sm_scale or 1 / math.sqrt(head_dim)
            self.cap = logits_soft_cap or 0.0

        def run(self, q, paged_kv_cache, *, out=None, **kwargs):
            k, v = paged_kv_cache
            indptr, indices, last, p = self.t
            res = out if out is not None else q.new_empty(q.shape)
            for r in range(q.shape[0]):
                pages = indices[indptr[r]:indptr[r + 1]]
                n = (len(pages) - 1) * p + last[r]
                o, _ = _attention(q[r:r + 1], _gather(k, pages, n, self.layout),
                                  _gather(v, pages, n, self.layout), self.scale, self.cap)
                res[r] = o[0].to(q.dtype)
            return res

    class MultiLevelCascadeAttentionWrapper:
        def __init__(self, num_levels, float_workspace_buffer, kv_layout="NHD",
                     use_cuda_graph=False, **kwargs):
            assert kv_layout in ("NHD", "HND")
            self.num_levels, self.layout = num_levels, kv_layout

        def plan(self, qo_indptr_arr, paged_kv_indptr_arr, paged_kv_indices_arr,
                 paged_kv_last_page_len, num_qo_heads, num_kv_heads, head_dim, page_size,
                 causal=False, pos_encoding_mode="NONE", use_fp16_qk_reduction=False,
                 sm_scale=None, window_left=-1, logits_soft_cap=None, rope_scale=None,
                 rope_theta=None, q_data_type="float16", kv_data_type=None):
            assert len(qo_indptr_arr) == len(paged_kv_indptr_arr) == self.num_levels
            self.levels = []
            for qo, ip, idx, last in zip(qo_indptr_arr, paged_kv_indptr_arr,
                                         paged_kv_indices_arr, paged_kv_last_page_len):
                qo, ip, last = qo.tolist(), ip.tolist(), last.tolist()
                assert qo[0] == 0 and ip[0] == 0 and len(qo) == len(ip) == len(last) + 1
                assert all(b > a for a, b in zip(qo, qo[1:])), "empty query group (NaN, #4051)"
                assert all(b > a for a, b in zip(ip, ip[1:])), "empty KV group (NaN, #4051)"
                assert all(1 <= x <= page_size for x in last)
                assert ip[-1] == idx.numel()
                self.levels.append((qo, ip, idx, last))
            self.p = page_size
            self.scale = sm_scale or 1 / math.sqrt(head_dim)
            self.cap = logits_soft_cap or 0.0

        def run(self, q, paged_kv_cache):
            import torch
            crash, hang = (os.environ.get("CANOPY_BENCH_SELFTEST_" + k) for k in ("CRASH", "HANG"))
            if crash and q.shape[0] == int(crash):
                os._exit(3)
            if hang and q.shape[0] == int(hang):
                time.sleep(3600)
            k, v = paged_kv_cache
            acc_o, acc_lse = None, None
            for qo, ip, idx, last in self.levels:
                assert qo[-1] == q.shape[0], "a level does not cover every query"
                o = torch.empty(q.shape, dtype=torch.float32)
                lse = torch.empty(q.shape[0], q.shape[1])
                for g in range(len(qo) - 1):
                    pages = idx[ip[g]:ip[g + 1]]
                    n = (len(pages) - 1) * self.p + last[g]
                    o[qo[g]:qo[g + 1]], lse[qo[g]:qo[g + 1]] = _attention(
                        q[qo[g]:qo[g + 1]], _gather(k, pages, n, self.layout),
                        _gather(v, pages, n, self.layout), self.scale, self.cap)
                if acc_o is None:
                    acc_o, acc_lse = o, lse
                else:
                    m = torch.maximum(acc_lse, lse)
                    wa, wb = torch.exp(acc_lse - m), torch.exp(lse - m)
                    acc_o = (acc_o * wa[..., None] + o * wb[..., None]) / (wa + wb)[..., None]
                    acc_lse = m + torch.log(wa + wb)
            return acc_o.to(q.dtype)

    fi.BatchDecodeWithPagedKVCacheWrapper = BatchDecodeWithPagedKVCacheWrapper
    fi.MultiLevelCascadeAttentionWrapper = MultiLevelCascadeAttentionWrapper
    fi.BatchAttention, fi.xqa = make_fake_batch_attention(), make_fake_xqa()
    return fi


def make_fake_batch_attention():
    """flashinfer.BatchAttention's contract (0.7.4): plan(qo_indptr, kv_indptr (pages),
    kv_indices, kv_len_arr (tokens), heads, dims, page_size, ...), run(q, (k, v),
    out, lse, logits_soft_cap=...) with the cap repeated at run time."""

    class BatchAttention:
        def __init__(self, kv_layout="NHD", device="cuda"):
            assert kv_layout in ("NHD", "HND")
            self.layout = kv_layout

        def plan(self, qo_indptr, kv_indptr, kv_indices, kv_len_arr, num_qo_heads,
                 num_kv_heads, head_dim_qk, head_dim_vo, page_size, causal=False,
                 sm_scale=None, logits_soft_cap=None, q_data_type=None, kv_data_type=None,
                 use_profiler=False):
            import torch
            for t in (qo_indptr, kv_indptr, kv_indices, kv_len_arr):
                assert t.dtype == torch.int32
            assert head_dim_qk == head_dim_vo <= 256 and num_qo_heads % num_kv_heads == 0
            qo, ip, lens = qo_indptr.tolist(), kv_indptr.tolist(), kv_len_arr.tolist()
            assert qo == list(range(len(lens) + 1)), "decode: one query per request"
            assert len(ip) == len(lens) + 1 and ip[0] == 0 and ip[-1] == kv_indices.numel()
            for r, n in enumerate(lens):
                assert ip[r + 1] - ip[r] == -(-n // page_size), "pages != ceil(kv_len / page)"
            self.t = (ip, kv_indices, lens, page_size)
            self.scale = sm_scale or 1 / math.sqrt(head_dim_qk)
            self.cap = logits_soft_cap or 0.0
            self.dtype = q_data_type

        def run(self, q, kv_cache, out=None, lse=None, k_scale=None, v_scale=None,
                logits_soft_cap=0.0, profiler_buffer=None, kv_cache_sf=None):
            assert q.dtype == self.dtype and (logits_soft_cap or 0.0) == self.cap, \
                "the soft cap must be given to plan() and run() alike"
            k, v = kv_cache
            ip, idx, lens, p = self.t
            out = out if out is not None else q.new_empty(q.shape)
            for r in range(q.shape[0]):
                pages = idx[ip[r]:ip[r + 1]]
                o, s = _attention(q[r:r + 1], _gather(k, pages, lens[r], self.layout),
                                  _gather(v, pages, lens[r], self.layout), self.scale, self.cap)
                out[r] = o[0].to(out.dtype)
                if lse is not None:
                    lse[r] = s[0]
            return out, lse

    return BatchAttention


def make_fake_xqa():
    """flashinfer.xqa's contract (0.7.4, one-token decode): q and output
    [batch, 1, Hq, D] of q's dtype, a dense int32 page table [batch, max pages],
    uint32 seq_lens [batch, 1], page size 16/32/64/128, zeroed semaphores, Q*K^T
    scaled by q_scale / sqrt(D), no soft cap."""

    def xqa(q, k_cache, v_cache, page_table, seq_lens, output, workspace_buffer, semaphores,
            num_kv_heads, page_size, sinks=None, q_scale=1.0, kv_scale=1.0, sliding_win_size=0,
            kv_layout="NHD", sm_count=None, enable_pdl=None, rcp_out_scale=1.0, q_seq_len=1,
            mask=None, **kwargs):
        import torch
        assert q.dim() == 4 and q.shape[1] == 1 and output.shape == q.shape
        assert output.dtype == q.dtype == k_cache.dtype == v_cache.dtype
        assert page_size in (16, 32, 64, 128) and kv_layout in ("NHD", "HND")
        assert page_table.dtype == torch.int32 and page_table.shape[0] == q.shape[0]
        assert seq_lens.shape == (q.shape[0], 1) and str(seq_lens.dtype) == "torch.uint32"
        assert not bool(semaphores.view(torch.int32).any()), "semaphores must start zeroed"
        assert workspace_buffer.dtype == torch.uint8
        hk_dim = 2 if kv_layout == "NHD" else 1
        assert k_cache.shape[hk_dim] == num_kv_heads and q.shape[2] % num_kv_heads == 0
        lens = seq_lens.view(torch.int32).flatten().tolist()
        d = q.shape[-1]
        scale = float(q_scale) / math.sqrt(d)
        for r, n in enumerate(lens):
            assert n <= page_table.shape[1] * page_size
            pages = page_table[r, :-(-n // page_size)]
            o, _ = _attention(q[r, 0:1], _gather(k_cache, pages, n, kv_layout),
                              _gather(v_cache, pages, n, kv_layout), scale, 0.0)
            output[r, 0] = o[0].to(output.dtype)

    return xqa


def install(R=None):
    """Patches torch.cuda, FlashInfer and Canopy's run for a CPU run of run_bench
    (R: the run_bench module object to patch; imported when None)."""
    import torch

    import canopy_capi as C
    if R is None:
        import run_bench as R

    R.DEV = "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False

    class Event:
        def __init__(self, enable_timing=False):
            self.t = None

        def record(self, stream=None):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return (end.t - self.t) * 1e3

    class Stream:
        cuda_stream = 0

        def wait_stream(self, other):
            pass

    class Props:
        multi_processor_count, total_memory, L2_cache_size = 132, 141 * 2**30, 60 * 10**6

    torch.cuda.Event = Event
    torch.cuda.Stream = Stream
    torch.cuda.current_stream = lambda *a: Stream()
    torch.cuda.stream = lambda s: contextlib.nullcontext()
    torch.cuda.synchronize = lambda *a: None
    torch.cuda.is_available = lambda: True
    torch.cuda.init = lambda: None
    torch.cuda.empty_cache = lambda: None
    torch.cuda.get_device_properties = lambda *a: Props()
    torch.cuda.get_device_name = lambda *a: "CPU stand-in (selftest_cpu.py)"
    torch.cuda._sleep = lambda cycles: None
    torch.cuda.profiler.start = lambda: None
    torch.cuda.profiler.stop = lambda: None
    sys.modules["flashinfer"] = make_fake_flashinfer()
    if os.environ.get("CANOPY_BENCH_SELFTEST_CRASH_FI_IMPORT"):
        class Dying(types.ModuleType):
            def __getattr__(self, name):
                os._exit(3)  # as a crash inside a real import would

        sys.modules["flashinfer"] = Dying("flashinfer")

    def calibrate(self):
        self.sleep_kind, self.cycles_per_us = "torch.cuda._sleep", 1980.0

    R.Gpu._calibrate_sleep = calibrate
    R.Gpu.flush = lambda self: None
    R.measure_ceilings = lambda args: {"read_bw_tbs": 4.5, "read_bw_method": "selftest constant",
                                       "matrix_tflops": 790.0, "matrix_method": "selftest constant"}
    R.count_kernels = lambda run: (run(), None)[1]

    class FakeGraph:
        def __init__(self, run):
            self.replay = run

    R.capture_graph = lambda run: FakeGraph(run)

    class FakeRuntime:
        """Stands in for canopy::Runtime: plans on the host through the real C API."""

        def __init__(self, lib, device=0, cache_dir=None, tuning_db=None):
            self.lib, self.handle, self.tuning_db = lib, None, tuning_db

        def info(self):
            tuned = bool(self.tuning_db) and self.tuning_db != "off"
            return {"device_name": "CPU stand-in", "arch": 90, "num_sms": 132,
                    "tuned": tuned, "tuning_db": self.tuning_db if tuned else "",
                    "tuning_message": "stand-in"}

    class FakeCanopy(R.CanopyMethod):
        def __init__(self, name, lib, runtime, wl, inp):
            self.name, self.inp, self.wl = name, inp, wl
            if lib is not None and wl.handle is not None:
                self.plan = C.Plan(lib, wl.handle, {"prefix_blind": name == R.L.BLIND})
                self.info = self.plan.info()
                self.launches = self.info["kernel_launches"]
            else:
                self.plan, self.info, self.launches = None, {}, 2
            self.out = torch.empty(inp.q.shape, dtype=inp.o_dtype)

        def run(self):
            self.out.copy_(R.reference(self.wl, self.inp).to(self.out.dtype))

        def close(self):
            if self.plan is not None:
                self.plan.close()

    C.Runtime = FakeRuntime
    R.CanopyMethod = FakeCanopy


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    os.environ["CANOPY_BENCH_SELFTEST"] = "1"  # the worker processes install it too
    import run_bench as R
    install(R)
    return R.main(argv)


if __name__ == "__main__":
    sys.exit(main())
