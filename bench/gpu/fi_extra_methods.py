"""Two more FlashInfer 0.7.4 methods for the GPU benchmark (run_bench.py):

- ``fi-batch-attention``: ``flashinfer.BatchAttention``, the persistent
  ("holistic") kernel that schedules prefill and decode work of a whole batch
  in one launch (plus a merge of split KV chunks);
- ``fi-xqa``: ``flashinfer.xqa``, TensorRT-LLM's XQA decode kernel (one
  launch; a CTA holds one KV head's whole GQA group, long sequences are split
  over CTAs and reduced in the same kernel).

The support rules below are read from FlashInfer 0.7.4's Python and kernel
sources (flashinfer/attention/_core.py BatchAttention.plan, flashinfer/xqa.py,
flashinfer/jit/xqa.py, data/csrc/xqa/mha.h and mha.cu); a workload outside them
is recorded as "not supported: <reason>" instead of being run. The module's
pure-Python half (support, arguments, AOT module names) needs no torch and is
tested on the CPU (test_fi_extra.py); the method classes import torch lazily.

Users get FlashInfer with ``pip install flashinfer-python==0.7.4``; the lent
GPU machine gets the carried bundle plus the extra ahead-of-time modules that
prebuild_flashinfer_extra.py compiles (scripts/gpu_bench.sh build).
"""
import math
import types

FI_BATCH_ATTENTION = "fi-batch-attention"
FI_XQA = "fi-xqa"
METHODS = [FI_BATCH_ATTENTION, FI_XQA]
UNSUPPORTED = "UNSUPPORTED"  # a result's status for a shape the method cannot take

XQA_PAGE_SIZES = (16, 32, 64, 128)  # flashinfer/jit/xqa.py gen_xqa_module
XQA_ARCH_MAJORS = (9, 10, 12)  # flashinfer/xqa.py: SM90, SM100, SM120/121
XQA_SCRATCH_BYTES = 256 << 20  # FlashInfer's own tests give xqa 256 MiB of scratch
HALF_DTYPES = ("fp16", "f16", "bf16")


class NotSupported(Exception):
    """The method cannot take this workload's shape (recorded, not a failure)."""


def _dt(name):
    return {"f16": "fp16", "f32": "fp32"}.get(str(name).lower(), str(name).lower())


def group_size(spec):
    return spec["num_qo_heads"] // spec["num_kv_heads"]


def _common_unsupported(spec):
    q, kv, o = _dt(spec["q_dtype"]), _dt(spec["kv_dtype"]), _dt(spec["o_dtype"])
    if q not in HALF_DTYPES:
        return f"q dtype {q}: only fp16/bf16"
    if kv != q:
        return f"KV dtype {kv} differs from q dtype {q} (benchmarked: 16-bit KV equal to q)"
    if o != q:
        return f"output dtype {o} differs from q dtype {q}: the kernel writes q's dtype"
    if spec["num_qo_heads"] % spec["num_kv_heads"]:
        return f"{spec['num_qo_heads']} query heads are not a multiple of " \
               f"{spec['num_kv_heads']} KV heads"
    if str(spec.get("kv_layout", "nhd")).lower() not in ("nhd", "hnd"):
        return f"KV layout {spec.get('kv_layout')}"
    return None


def batch_attention_unsupported(spec):
    """None when flashinfer.BatchAttention takes the shape, else the reason.

    BatchAttention.plan rejects head_dim > 256 (the persistent kernel's limit);
    its JIT module takes fp16/bf16 q and KV, any GQA group, any page size
    (FlashInfer tests page sizes 1, 8, 16, 64), NHD and HND, and a soft cap
    (a separate module: use_logits_soft_cap is a template parameter)."""
    why = _common_unsupported(spec)
    if why:
        return why
    d = spec["head_dim"]
    if d > 256:
        return f"head_dim {d} > 256 (the persistent kernel's limit)"
    if d % 16:
        return f"head_dim {d} is not a multiple of 16"
    return None


def xqa_padded_head_elems(head_dim):
    """mha.h's headElems: the head padded to 64, 128, 256 or 512 elements."""
    for e in (64, 128, 256, 512):
        if head_dim <= e:
            return e
    return None


def xqa_unsupported(spec, arch_major=None):
    """None when flashinfer.xqa takes the shape, else the reason.

    From flashinfer/xqa.py, flashinfer/jit/xqa.py and csrc/xqa/mha.{h,cu}:
    16-bit q (KV of the same type here; fp8/int8/fp4 KV exist but are not this
    benchmark's inputs), page size 16/32/64/128 (TOKENS_PER_PAGE), head_dim a
    multiple of 16 in 16..512 (above 256 only with a group <= 16), no logits
    soft cap (the kernel has none), SM90/100/120 only, and the CTA's queries
    (the group padded to 16 rows x the padded head in bytes) must fit in 16 KB
    of shared memory (mha.cu: static_assert(persistentQ)), i.e. a group of at
    most 128 / 64 / 32 / 16 for head_dim <= 64 / 128 / 256 / 512. NHD and HND
    are both taken (HND by strides). sm_scale is any: xqa scales Q*K^T by
    q_scale / sqrt(head_dim), so q_scale = sm_scale * sqrt(head_dim)."""
    why = _common_unsupported(spec)
    if why:
        return why
    if arch_major is not None and arch_major not in XQA_ARCH_MAJORS:
        return f"sm_{arch_major}x: xqa runs on SM90, SM100 and SM120 only"
    p, d, g = spec["page_size"], spec["head_dim"], group_size(spec)
    if p not in XQA_PAGE_SIZES:
        return f"page size {p}: xqa takes 16, 32, 64 or 128 tokens per page"
    if d % 16 or d < 16 or d > 512:
        return f"head_dim {d}: xqa takes multiples of 16 in 16..512"
    if (spec.get("logits_soft_cap") or 0.0) > 0:
        return "logits soft cap: xqa has none"
    if d > 256 and g > 16:
        return f"GQA group {g} with head_dim {d} > 256: xqa allows groups <= 16 there"
    rows = -(-g // 16) * 16
    if xqa_padded_head_elems(d) * 2 * rows > 16 * 1024:
        return (f"GQA group {g} with head_dim {d}: the CTA's {rows} query rows of "
                f"{xqa_padded_head_elems(d) * 2} bytes exceed xqa's 16 KB (persistentQ)")
    return None


def unsupported(name, spec, arch_major=None):
    """The reason method `name` cannot take `spec`, or None."""
    if name == FI_BATCH_ATTENTION:
        return batch_attention_unsupported(spec)
    if name == FI_XQA:
        return xqa_unsupported(spec, arch_major)
    raise ValueError(f"unknown method {name}")


# ---------------------------------------------------------------------------
# Arguments (plain lists; the methods turn them into tensors)


def batch_attention_plan_args(tables):
    """(qo_indptr, kv_indptr, kv_indices, kv_len) for BatchAttention.plan: one
    query per request, the trimmed CSR of used pages, lengths in tokens (the
    kernel finds the last page's fill from kv_len and the page size)."""
    indptr, indices, _ = tables.flat()
    return list(range(tables.batch + 1)), indptr, indices, list(tables.seq_lens)


def xqa_page_table(tables):
    """(page_table rows, seq_lens) for xqa: a dense [batch, max pages] table
    (rows padded with the request's own last page; xqa reads only the first
    ceil(seq_len / page_size) entries of a row) and the lengths in tokens. xqa
    derives max_seq_len as the row length times the page size."""
    rows = [list(tables.pages(r)) for r in range(tables.batch)]
    width = max((len(r) for r in rows), default=1)
    return [r + [r[-1]] * (width - len(r)) for r in rows], list(tables.seq_lens)


def xqa_q_scale(spec):
    """xqa's q_scale for the spec's sm_scale (xqa multiplies by 1/sqrt(head_dim))."""
    return float(spec["sm_scale"]) * math.sqrt(spec["head_dim"])


def xqa_semaphore_count(batch, num_kv_heads):
    """Semaphores for xqa's multi-block mode, as FlashInfer's tests size them
    (one per (request, KV head), rounded, plus padding), at least 1 Mi."""
    n = batch * num_kv_heads
    return max(-(-n // 2) * 2 + 2 + n + 2, 1 << 20)


# ---------------------------------------------------------------------------
# The JIT modules each method loads (for the ahead-of-time build)


def batch_attention_module_args(spec):
    """Arguments of flashinfer.jit.attention.modules._gen_batch_attention_primary_module
    as BatchAttention.plan passes them (dtype names as strings): (q, kv, o=q,
    idx int32, head_dim_qk, head_dim_vo, pos_encoding 0, soft cap on, profiler off).
    K and V as two tensors of equal strides load the primary ("equal") module."""
    q = _dt(spec["q_dtype"])
    return (q, _dt(spec["kv_dtype"]), q, "int32", spec["head_dim"], spec["head_dim"], 0,
            (spec.get("logits_soft_cap") or 0.0) > 0, False)


def xqa_module_args(spec):
    """Arguments of flashinfer.jit.xqa.gen_xqa_module as flashinfer.xqa passes
    them for one-token decode: (q, kv, page_size, head_dim, group, no sliding
    window, output dtype, q_seq_len 1, no ragged q)."""
    return (_dt(spec["q_dtype"]), _dt(spec["kv_dtype"]), spec["page_size"], spec["head_dim"],
            group_size(spec), False, _dt(spec["o_dtype"]), 1, False)


def module_args(name, spec):
    return batch_attention_module_args(spec) if name == FI_BATCH_ATTENTION else \
        xqa_module_args(spec)


def suite_specs(suite):
    """(workload name, spec) for each entry of a parsed suite.json, from its
    models and defaults only (the fields the support rules and modules need)."""
    d = suite.get("defaults", {})
    out = []
    for e in suite.get("workloads", []):
        m = suite["models"][e.get("model", d.get("model"))]
        dt = e.get("dtype", d.get("dtype", "fp16"))
        hd = m["head_dim"]
        out.append((e["name"], {
            "num_qo_heads": m["num_qo_heads"], "num_kv_heads": m["num_kv_heads"],
            "head_dim": hd, "q_dtype": dt, "kv_dtype": dt, "o_dtype": dt,
            "kv_layout": str(e.get("kv_layout", d.get("kv_layout", "nhd"))).lower(),
            "page_size": e.get("page_size", d.get("page_size", 16)),
            "sm_scale": 1.0 / math.sqrt(hd),
            "logits_soft_cap": e.get("logits_soft_cap", d.get("logits_soft_cap", 0.0))}))
    return out


def support_table(specs, arch_major=9):
    """{workload: {method: None | reason}} for (name, spec) pairs."""
    return {n: {m: unsupported(m, s, arch_major) for m in METHODS} for n, s in specs}


def needed_modules(specs, methods=METHODS, arch_major=9):
    """The distinct (method, module args) the given specs need, in first-use order."""
    seen, out = set(), []
    for _, s in specs:
        for m in methods:
            if unsupported(m, s, arch_major) is None:
                key = (m, module_args(m, s))
                if key not in seen:
                    seen.add(key)
                    out.append(key)
    return out


# ---------------------------------------------------------------------------
# The methods (run_bench.py's Method protocol: run, poison, output, close)


def _torch_dtype(torch, name):
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
            "int32": torch.int32}[_dt(name)]


def _arch_major(torch, dev):
    try:
        if str(dev).startswith("cuda"):
            return torch.cuda.get_device_capability()[0]
    except Exception:
        pass
    return None


class _FiMethod:
    launches = None
    levels = None
    info = None

    def poison(self):
        self.out.fill_(float("nan"))

    def output(self):
        return self.out

    def close(self):
        pass


class FiBatchAttention(_FiMethod):
    """flashinfer.BatchAttention: plan once (outside the timing), run = one step."""

    def __init__(self, fi, wl, inp, dev):
        import torch
        s = wl.info
        why = batch_attention_unsupported(s)
        if why:
            raise NotSupported(why)
        qo, kv_indptr, kv_indices, kv_len = batch_attention_plan_args(wl.tables)

        def t(x):
            return torch.tensor(x, dtype=torch.int32, device=dev)

        self.inp = inp
        self.cap = float(s.get("logits_soft_cap") or 0.0)
        self.wrapper = fi.BatchAttention(kv_layout=s["kv_layout"].upper(), device=str(dev))
        self.kv_indices = t(kv_indices)  # the wrapper keeps a reference, not a copy
        self.wrapper.plan(t(qo), t(kv_indptr), self.kv_indices, t(kv_len), s["num_qo_heads"],
                          s["num_kv_heads"], s["head_dim"], s["head_dim"], s["page_size"],
                          causal=False, sm_scale=s["sm_scale"],
                          logits_soft_cap=(self.cap or None),
                          q_data_type=_torch_dtype(torch, s["q_dtype"]),
                          kv_data_type=_torch_dtype(torch, s["kv_dtype"]))
        B, hq, _ = inp.q.shape
        self.out = torch.empty_like(inp.q)
        self.lse = torch.empty(B, hq, dtype=torch.float32, device=dev)

    def run(self):
        self.wrapper.run(self.inp.q, (self.inp.k, self.inp.v), out=self.out, lse=self.lse,
                         logits_soft_cap=self.cap)

    def close(self):
        self.wrapper = None


def _xqa_function(fi):
    f = getattr(fi, "xqa")
    return f.xqa if isinstance(f, types.ModuleType) else f  # the function, not the module


class FiXqa(_FiMethod):
    """flashinfer.xqa on the benchmark's K and V (two paged tensors, NHD or HND):
    q as [batch, beam 1, heads, dim], a dense page table, uint32 lengths, a
    zeroed scratch and semaphores (xqa leaves them zeroed after each call)."""

    def __init__(self, fi, wl, inp, dev):
        import torch
        s = wl.info
        why = xqa_unsupported(s, _arch_major(torch, dev))
        if why:
            raise NotSupported(why)
        rows, lens = xqa_page_table(wl.tables)
        self.inp, self.fn = inp, _xqa_function(fi)
        self.page_table = torch.tensor(rows, dtype=torch.int32, device=dev)
        u32 = getattr(torch, "uint32", None)
        lens_t = torch.tensor(lens, dtype=torch.int32, device=dev).view(-1, 1)
        self.seq_lens = lens_t.view(u32) if u32 is not None else lens_t
        self.out = torch.empty_like(inp.q)
        self.q4, self.out4 = inp.q.unsqueeze(1), self.out.unsqueeze(1)
        sem = torch.zeros(xqa_semaphore_count(wl.tables.batch, s["num_kv_heads"]),
                          dtype=torch.int32, device=dev)
        self.semaphores = sem.view(u32) if u32 is not None else sem
        self.scratch = torch.zeros(XQA_SCRATCH_BYTES, dtype=torch.uint8, device=dev)
        self.kw = {"q_scale": xqa_q_scale(s), "kv_layout": s["kv_layout"].upper()}
        self.num_kv_heads, self.page_size = s["num_kv_heads"], s["page_size"]

    def run(self):
        self.fn(self.q4, self.inp.k, self.inp.v, self.page_table, self.seq_lens, self.out4,
                self.scratch, self.semaphores, self.num_kv_heads, self.page_size, **self.kw)

    def close(self):
        self.scratch = self.semaphores = None


def make_method(name, fi, wl, inp, dev="cuda"):
    """The method object for `name` (raises NotSupported for a shape it cannot take)."""
    if fi is None:
        raise RuntimeError("FlashInfer unavailable")
    if name == FI_BATCH_ATTENTION:
        return FiBatchAttention(fi, wl, inp, dev)
    if name == FI_XQA:
        return FiXqa(fi, wl, inp, dev)
    raise ValueError(f"unknown method {name}")
