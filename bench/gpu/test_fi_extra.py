"""CPU tests of fi-batch-attention and fi-xqa's host side (fi_extra_methods.py):
support decisions per shape and per suite workload, the arguments handed to
flashinfer.BatchAttention and flashinfer.xqa, the AOT module list, fi-best and
the tables. The torch tests (skipped without torch) run both methods against
selftest_cpu.py's emulation of the two APIs and compare with direct attention.
"""
import json
import math
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import bench_logic as L  # noqa: E402
import fi_extra_methods as X  # noqa: E402

with open(os.path.join(ROOT, "bench", "workloads", "suite.json")) as f:
    SUITE = json.load(f)


def spec(hq=32, hk=8, d=128, dtype="fp16", page=16, layout="nhd", cap=0.0, sm_scale=None):
    return {"num_qo_heads": hq, "num_kv_heads": hk, "head_dim": d, "q_dtype": dtype,
            "kv_dtype": dtype, "o_dtype": dtype, "kv_layout": layout, "page_size": page,
            "sm_scale": sm_scale or 1 / math.sqrt(d), "logits_soft_cap": cap, "with_lse": False}


def test_names_agree_with_bench_logic():
    assert [L.FI_BATCH_ATTENTION, L.FI_XQA] == X.METHODS == L.FI_EXTRA
    assert L.UNSUPPORTED == X.UNSUPPORTED
    assert all(m in L.ALL_METHODS and m in L.FI_METHODS for m in X.METHODS)


@pytest.mark.parametrize("shape", [
    spec(), spec(dtype="bf16"), spec(d=64, hq=16, hk=4), spec(d=256, hq=16, hk=8),
    spec(hq=16, hk=1), spec(hq=40, hk=8), spec(hq=56, hk=8), spec(hq=32, hk=32),
    spec(page=1), spec(page=64), spec(layout="hnd"), spec(cap=30.0), spec(sm_scale=0.05)])
def test_batch_attention_takes_the_suite_shapes(shape):
    assert X.batch_attention_unsupported(shape) is None


def test_batch_attention_limits():
    assert "256" in X.batch_attention_unsupported(spec(d=512, hq=8, hk=8))
    assert "fp32" in X.batch_attention_unsupported(spec(dtype="fp32"))
    s = spec()
    s["o_dtype"] = "bf16"
    assert "output dtype" in X.batch_attention_unsupported(s)
    assert "multiple" in X.batch_attention_unsupported(spec(hq=30, hk=8))


@pytest.mark.parametrize("shape", [
    spec(), spec(dtype="bf16"), spec(d=64, hq=16, hk=4), spec(d=256, hq=16, hk=8),
    spec(hq=16, hk=1), spec(hq=40, hk=8), spec(hq=56, hk=8), spec(hq=32, hk=32),
    spec(page=32), spec(page=64), spec(page=128), spec(layout="hnd"), spec(sm_scale=0.05),
    spec(hq=64, hk=1), spec(d=256, hq=32, hk=1), spec(d=64, hq=128, hk=1),
    spec(d=512, hq=16, hk=1)])
def test_xqa_takes(shape):
    assert X.xqa_unsupported(shape, 9) is None


@pytest.mark.parametrize("shape,words", [
    (spec(page=1), "page size 1"), (spec(page=8), "page size 8"),
    (spec(cap=30.0), "soft cap"), (spec(d=72, hq=8, hk=8), "multiples of 16"),
    (spec(d=576, hq=8, hk=8), "multiples of 16 in 16..512"),
    (spec(hq=80, hk=1), "16 KB"),  # group 80 > 64 at head_dim 128
    (spec(d=256, hq=48, hk=1), "16 KB"), (spec(d=64, hq=144, hk=1), "16 KB"),
    (spec(d=512, hq=32, hk=1), "groups <= 16"), (spec(dtype="fp32"), "fp16/bf16")])
def test_xqa_limits(shape, words):
    why = X.xqa_unsupported(shape, 9)
    assert why and words in why, why


def test_xqa_needs_sm90_or_newer():
    assert "SM90" in X.xqa_unsupported(spec(), 8)
    assert X.xqa_unsupported(spec(), 10) is None and X.xqa_unsupported(spec(), None) is None


def test_suite_support():
    specs = X.suite_specs(SUITE)
    assert [n for n, _ in specs] == [e["name"] for e in SUITE["workloads"]]
    table = X.support_table(specs)
    unsupported = {(n, m): why for n, row in table.items() for m, why in row.items() if why}
    assert list(unsupported) == [("sys-4k-x64-p1", X.FI_XQA)], unsupported
    assert "page size 1" in unsupported[("sys-4k-x64-p1", X.FI_XQA)]
    s = dict(specs)
    assert s["sys-8k-x512-mqa"]["num_kv_heads"] == 1 and s["sys-16k-x128-bf16"]["q_dtype"] == "bf16"
    assert s["two-level-d256"]["head_dim"] == 256 and s["sys-4k-x64-p64"]["page_size"] == 64


def test_suite_modules():
    mods = X.needed_modules(X.suite_specs(SUITE))
    ba = [a for m, a in mods if m == X.FI_BATCH_ATTENTION]
    xq = [a for m, a in mods if m == X.FI_XQA]
    assert sorted((a[0], a[4]) for a in ba) == [("bf16", 128), ("fp16", 64), ("fp16", 128),
                                                ("fp16", 256)]
    assert all(a[1] == a[2] == a[0] and a[3] == "int32" and a[6:] == (0, False, False)
               for a in ba)
    # (dtype, page size, head_dim, group)
    assert sorted((a[0], a[2], a[3], a[4]) for a in xq) == sorted([
        ("fp16", 16, 128, 4), ("fp16", 16, 128, 1), ("fp16", 16, 128, 8), ("fp16", 16, 128, 16),
        ("fp16", 16, 64, 4), ("fp16", 16, 256, 2), ("bf16", 16, 128, 4), ("fp16", 64, 128, 4)])
    assert all(a[5] is False and a[7] == 1 and a[8] is False for a in xq)
    assert X.module_args(X.FI_BATCH_ATTENTION, spec(cap=30.0))[7] is True


def small_tables():
    # three requests sharing pages 0-1; request 1's row has an unused entry (page 9)
    return L.Tables([0, 3, 7, 9], [0, 1, 2, 0, 1, 3, 9, 0, 1], [40, 33, 32], 16, 10)


def test_batch_attention_plan_args():
    qo, ip, idx, lens = X.batch_attention_plan_args(small_tables())
    assert qo == [0, 1, 2, 3]
    assert ip == [0, 3, 6, 8] and idx == [0, 1, 2, 0, 1, 3, 0, 1]  # trimmed to used pages
    assert lens == [40, 33, 32]


def test_xqa_arguments():
    rows, lens = X.xqa_page_table(small_tables())
    assert rows == [[0, 1, 2], [0, 1, 3], [0, 1, 1]]  # padded with the row's last page
    assert lens == [40, 33, 32]
    assert X.xqa_q_scale(spec()) == pytest.approx(1.0)
    assert X.xqa_q_scale(spec(d=64, sm_scale=0.1)) == pytest.approx(0.8)
    assert X.xqa_semaphore_count(4, 8) >= 2 * 4 * 8 + 4


def test_fi_best_takes_the_new_methods_and_skips_unsupported():
    row = {"workload": "w", "floor_us": 10.0, "bytes": {"unique_bytes": 4.5e7, "sharing": True},
           "methods": {"canopy": {"status": "PASS", "median_us": 20.0},
                       "fi-decode": {"status": "PASS", "median_us": 50.0},
                       "fi-batch-attention": {"status": "PASS", "median_us": 40.0},
                       "fi-xqa": {"status": "PASS", "median_us": 30.0}}}
    L.derive_row(row)
    assert row["fi-best"]["method"] == "fi-xqa" and row["speedup_vs_fi_best"] == 1.5
    row["methods"]["fi-xqa"] = {"status": X.UNSUPPORTED, "note": "not supported: page size 1"}
    L.derive_row(row)
    assert row["fi-best"]["method"] == "fi-batch-attention"
    cells = dict(zip(L.TABLE_COLUMNS, L.table_rows([row])[0]))
    assert cells["fi-xqa"] == "n/a" and cells["fi-batch-attn"].startswith("40.0")
    md = L.markdown({"workloads": [row], "summary": L.summarize([row])})
    assert "not supported: page size 1" in md
    assert "fi-xqa" in L.text_table([row], L.summarize([row]))


# ---------------------------------------------------------------------------
# With torch: both methods through selftest_cpu's emulation of the two APIs


class _Wl:
    def __init__(self, info, tables):
        self.info, self.tables, self.name = info, tables, "t"


class _Inp:
    pass


def _inputs(torch, s, tables, seed=0):
    g = torch.Generator().manual_seed(seed)
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[s["q_dtype"]]
    hq, hk, d, p = s["num_qo_heads"], s["num_kv_heads"], s["head_dim"], s["page_size"]
    inp = _Inp()
    inp.q = (torch.rand(tables.batch, hq, d, generator=g) * 4 - 2).to(dt)
    n = tables.num_pages
    shape = (n, p, hk, d) if s["kv_layout"] == "nhd" else (n, hk, p, d)
    inp.k = (torch.rand(shape, generator=g) * 2 - 1).to(dt)
    inp.v = (torch.rand(shape, generator=g) * 2 - 1).to(dt)
    return inp


def _direct(torch, s, tables, inp):
    hq, hk, d = s["num_qo_heads"], s["num_kv_heads"], s["head_dim"]
    out = torch.empty(tables.batch, hq, d)
    for r in range(tables.batch):
        pages = torch.tensor(tables.pages(r))
        kk, vv = inp.k[pages].float(), inp.v[pages].float()
        if s["kv_layout"] == "hnd":
            kk, vv = kk.permute(0, 2, 1, 3), vv.permute(0, 2, 1, 3)
        n = tables.seq_lens[r]
        kk, vv = kk.reshape(-1, hk, d)[:n], vv.reshape(-1, hk, d)[:n]
        sc = torch.einsum("hgd,nhd->hgn", inp.q[r].float().view(hk, hq // hk, d), kk)
        sc = sc * s["sm_scale"]
        if s["logits_soft_cap"]:
            sc = s["logits_soft_cap"] * torch.tanh(sc / s["logits_soft_cap"])
        out[r] = torch.einsum("hgn,nhd->hgd", torch.softmax(sc, -1), vv).reshape(hq, d)
    return out


@pytest.mark.parametrize("method", X.METHODS)
@pytest.mark.parametrize("shape", [
    spec(hq=40, hk=8, d=64, layout="hnd", sm_scale=0.07),  # group 5, HND, own scale
    spec(hq=16, hk=1, d=128, page=64, dtype="bf16"),  # MQA, page 64
    spec(hq=14, hk=2, d=64, cap=20.0)])  # group 7, soft cap (BatchAttention only)
def test_methods_against_emulation(method, shape):
    torch = pytest.importorskip("torch")
    import selftest_cpu
    fi = selftest_cpu.make_fake_flashinfer()
    p = shape["page_size"]
    # requests share a 2-page prefix; lengths end mid-page and on a page boundary
    lens = [2 * p + 5, 3 * p, 2 * p + 1]
    indptr, indices, nxt = [0], [], 2
    for n in lens:
        row = [0, 1] + list(range(nxt, nxt + (-(-n // p)) - 2))
        nxt += len(row) - 2
        indices += row
        indptr.append(len(indices))
    tables = L.Tables(indptr, indices, lens, p, nxt)
    wl = _Wl(shape, tables)
    inp = _inputs(torch, shape, tables)
    why = X.unsupported(method, shape, 9)
    if why:
        with pytest.raises(X.NotSupported):
            X.make_method(method, fi, wl, inp, "cpu")
        return
    m = X.make_method(method, fi, wl, inp, "cpu")
    m.poison()
    m.run()
    ref = _direct(torch, shape, tables, inp)
    out = m.output().float()
    err = ((out - ref).norm() / ref.norm()).item()
    assert err < L.threshold(shape["o_dtype"]), err
    m.close()


# ---------------------------------------------------------------------------
# With the real flashinfer 0.7.4 Python (skipped where it is not installed):
# its xqa() and BatchAttention run on the CPU up to the compiled module, which
# is replaced by a recorder that computes attention the way the kernel reads
# its arguments (xqa: K/V as [page, token, head, dim] by strides, Q*K^T scaled
# by q_scale / sqrt(dim)); and the module each asks for must be one the AOT
# build makes (prebuild_flashinfer_extra.py uses X.module_args).


def _real_flashinfer(monkeypatch):
    torch = pytest.importorskip("torch")
    try:
        import flashinfer  # noqa: F401
        import flashinfer.jit.xqa  # noqa: F401
    except Exception as e:  # not installed, or no CUDA toolkit for its import
        pytest.skip(f"flashinfer not importable: {e}")
    monkeypatch.setenv("FLASHINFER_CUDA_ARCH_LIST", "9.0")
    return torch, sys.modules["flashinfer"]


def _dtypes(torch, args):
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "int32": torch.int32}
    return tuple(dt.get(a, a) if isinstance(a, str) else a for a in args)


def _case(torch, shape):
    p = shape["page_size"]
    lens = [2 * p + 5, 3 * p, 2 * p + 1]
    indptr, indices, nxt = [0], [], 2
    for n in lens:
        row = [0, 1] + list(range(nxt, nxt + (-(-n // p)) - 2))
        nxt += len(row) - 2
        indices += row
        indptr.append(len(indices))
    tables = L.Tables(indptr, indices, lens, p, nxt)
    return _Wl(shape, tables), _inputs(torch, shape, tables)


@pytest.mark.parametrize("shape", [spec(hq=40, hk=8, d=64, layout="hnd", sm_scale=0.07),
                                   spec(hq=16, hk=1, page=64, dtype="bf16")])
def test_real_xqa_python_path(monkeypatch, shape):
    torch, fi = _real_flashinfer(monkeypatch)
    xm = sys.modules["flashinfer.xqa"]
    asked = []

    def kernel(run_sm90_fp8_mha, sm_count, num_kv_heads, sliding_win_size, q_scale, output,
               rcp_out_scale, q, sinks, k_cache, v_cache, k_sf, v_sf, page_table, max_seq_len,
               seq_lens, batch_size, kv_scale, semaphores, workspace, enable_pdl, q_seq_len,
               q_cu_seq_lens, mask):
        assert not run_sm90_fp8_mha and sliding_win_size == 0 and q_seq_len == 1
        assert q.shape == output.shape == (batch_size, 1, q.shape[2], q.shape[3])
        assert k_cache.stride() == v_cache.stride()
        assert max_seq_len == page_table.shape[1] * shape["page_size"]
        d = q.shape[-1]
        g = q.shape[2] // num_kv_heads
        for b in range(batch_size):
            n = int(seq_lens.view(torch.int32)[b, 0])
            pages = page_table[b, :-(-n // shape["page_size"])].long()
            kk = k_cache[pages].reshape(-1, num_kv_heads, d)[:n].float()  # [page, token, head]
            vv = v_cache[pages].reshape(-1, num_kv_heads, d)[:n].float()
            qq = q[b, 0].float().view(num_kv_heads, g, d)
            sc = torch.einsum("hgd,nhd->hgn", qq, kk) * (q_scale * kv_scale / math.sqrt(d))
            o = torch.einsum("hgn,nhd->hgd", torch.softmax(sc, -1), vv)
            output[b, 0] = o.reshape(-1, d).to(output.dtype)

    def get_module(*args):
        asked.append(args)
        return types.SimpleNamespace(xqa=kernel)

    import types
    monkeypatch.setattr(xm, "get_xqa_module", get_module)
    monkeypatch.setattr(xm, "get_compute_capability", lambda dev: (9, 0))
    monkeypatch.setattr(xm, "get_device_sm_count", lambda dev: 132)
    monkeypatch.setattr(xm, "device_support_pdl", lambda dev: True)
    wl, inp = _case(torch, shape)
    m = X.make_method(X.FI_XQA, fi, wl, inp, "cpu")
    m.poison()
    m.run()
    ref = _direct(torch, shape, wl.tables, inp)
    err = ((m.output().float() - ref).norm() / ref.norm()).item()
    assert err < L.threshold(shape["o_dtype"]), err
    a = asked[0]  # get_xqa_module(q, kv, page, dim, group, window, out, q_seq_len, ragged)
    assert a == _dtypes(torch, X.xqa_module_args(shape)), a


@pytest.mark.parametrize("shape", [spec(hq=56, hk=8, d=128, layout="hnd", page=1),
                                   spec(d=64, hq=16, hk=4, cap=30.0, dtype="bf16")])
def test_real_batch_attention_python_path(monkeypatch, shape):
    torch, fi = _real_flashinfer(monkeypatch)
    core = sys.modules["flashinfer.attention._core"]
    asked, calls = [], {}

    class Module:
        def plan(self, fws, iws, pws, qo_indptr, kv_indptr, kv_len, batch, hq, hk, dvo, causal):
            calls["plan"] = (qo_indptr.tolist(), kv_indptr.tolist(), kv_len.tolist(), batch,
                             hq, hk, dvo, causal)
            return [0]

        def run(self, fws, iws, plan_info, q, k, v, kv_indices, out, lse, mask_mode, layout,
                hq, hk, page_size, v_scale, sm_scale, cap, k_sf, v_sf):
            calls["run"] = (mask_mode, layout, hq, hk, page_size, v_scale, sm_scale, cap)
            calls["tensors"] = (q, k, v, kv_indices, out, lse)

    def get_module(*args):
        asked.append(args)
        return Module()

    monkeypatch.setattr(core, "get_holistic_attention_module", get_module)
    monkeypatch.setattr(core, "get_holistic_attention_independent_module", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    real_empty = torch.empty

    def empty(*a, **k):  # the wrapper's buffers: CPU, unpinned
        k.pop("pin_memory", None)
        k["device"] = "cpu"
        return real_empty(*a, **k)

    monkeypatch.setattr(core.torch, "empty", empty)
    wl, inp = _case(torch, shape)
    m = X.make_method(X.FI_BATCH_ATTENTION, fi, wl, inp, "cpu")
    monkeypatch.setattr(core.torch, "empty", real_empty)
    m.run()
    qo, ip, idx, lens = X.batch_attention_plan_args(wl.tables)
    assert calls["plan"] == (qo, ip, lens, wl.tables.batch, shape["num_qo_heads"],
                             shape["num_kv_heads"], shape["head_dim"], False)
    mask_mode, layout, hq, hk, page, v_scale, sm_scale, cap = calls["run"]
    assert mask_mode == 0 and layout == (0 if shape["kv_layout"] == "nhd" else 1)
    assert (hq, hk, page) == (shape["num_qo_heads"], shape["num_kv_heads"], shape["page_size"])
    assert v_scale == 1.0 and sm_scale == pytest.approx(shape["sm_scale"])
    assert cap == shape["logits_soft_cap"]
    q, k, v, kv_indices, out, lse = calls["tensors"]
    assert q is inp.q and k is inp.k and v is inp.v and out is m.out and lse is m.lse
    assert kv_indices.tolist() == idx and k.stride() == v.stride()  # the "equal" module
    assert asked[0] == _dtypes(torch, X.batch_attention_module_args(shape)), asked[0]


def test_check_script_on_cpu():
    """check_fi_extra.py (the GPU smoke test) end to end on the CPU emulation."""
    pytest.importorskip("torch")
    import subprocess
    r = subprocess.run([sys.executable, os.path.join(HERE, "check_fi_extra.py"), "--selftest-cpu",
                        "--cases", "1,3"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("PASS") == 3 and "n/a   not supported: page size 1" in r.stdout
