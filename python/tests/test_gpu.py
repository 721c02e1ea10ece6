"""GPU tests on CUDA tensors from torch: every head dim, dtype, layout and GQA
ratio, soft cap and LSE against the float64 reference; CUDA-graph capture and
replay; streams; device block tables. Outputs are poisoned with NaN before
every run. Skipped (visibly) without a GPU or without torch built with CUDA."""

import json

import numpy as np
import pytest

import canopy
import reference
from reference import kv_shape, padded, shared_prefix_batch

try:
    import torch

    TORCH_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover - depends on the machine
    torch = None
    TORCH_CUDA = False

if not canopy.gpu_available():
    _SKIP = f"no GPU: {canopy.gpu_unavailable_reason()}"
elif torch is None:
    _SKIP = "torch is not importable"
elif not TORCH_CUDA:
    _SKIP = "torch has no CUDA device"
else:
    _SKIP = ""
pytestmark = pytest.mark.skipif(bool(_SKIP), reason=_SKIP or "GPU available")

HEAD_DIMS = [64, 128, 256]
DTYPES = ["fp16", "bf16"]
LAYOUTS = ["NHD", "HND"]
GROUPS = [1, 4, 5, 8]
TOLERANCE = {"fp16": 2e-3, "bf16": 1e-2}  # relative L2, as the C++ GPU tests


def spec_for(head_dim, dtype, layout, group, cap=0.0, with_lse=True, page_size=16):
    return canopy.AttentionSpec(num_qo_heads=2 * group, num_kv_heads=2, head_dim=head_dim,
                                dtype=dtype, kv_layout=layout, page_size=page_size,
                                logits_soft_cap=cap, with_lse=with_lse)


def matrix():
    """Every (head_dim, dtype, layout, group); the soft cap on for half of them
    so each (head_dim, dtype, layout) runs with and without it."""
    for d in HEAD_DIMS:
        for dt in DTYPES:
            for layout in LAYOUTS:
                for g in GROUPS:
                    yield d, dt, layout, g, (30.0 if g in (4, 8) else 0.0)


@pytest.fixture(scope="module", autouse=True)
def prewarm():
    """Compiles every kernel the module's plans use, in parallel, before the
    first plan (otherwise each plan compiles its own kernels one by one)."""
    specs = [spec_for(d, dt, layout, g, cap) for d, dt, layout, g, cap in matrix()]
    specs += [spec_for(d, dt, layout, 1, 0.0, with_lse=False)
              for d in HEAD_DIMS for dt in DTYPES for layout in LAYOUTS]
    result = canopy.prewarm(specs)
    print(f"prewarm: {result}")
    assert result["failures"] == 0, result["first_error"]


def torch_dtype(name):
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


class Case:
    """A shared-prefix batch on the GPU, with its float64 reference."""

    def __init__(self, spec, seed=0, prompts=2, per_prompt=3, prompt_pages=5, max_extra=200):
        rng = np.random.default_rng(seed)
        self.spec = spec
        self.pages, self.lens, self.num_pages = shared_prefix_batch(
            rng, spec.page_size, prompts, per_prompt, prompt_pages, max_extra)
        gen = torch.Generator(device="cuda").manual_seed(seed)
        b, h, d = len(self.lens), spec.num_qo_heads, spec.head_dim
        self.q = torch.randn((b, h, d), generator=gen, device="cuda").to(torch_dtype(spec.q_dtype))
        shape = kv_shape(spec, self.num_pages)
        kv = torch_dtype(spec.kv_dtype)
        self.k = torch.randn(shape, generator=gen, device="cuda").to(kv)
        self.v = torch.randn(shape, generator=gen, device="cuda").to(kv)

    def reference(self, q=None, k=None, v=None):
        q, k, v = (x.double().cpu().numpy() for x in (q if q is not None else self.q,
                                                        k if k is not None else self.k,
                                                        v if v is not None else self.v))
        return reference.attention(self.spec, self.pages, self.lens, q, k, v)

    def poisoned_outputs(self):
        b, h, d = self.q.shape
        out = torch.full((b, h, d), float("nan"), dtype=torch_dtype(self.spec.o_dtype),
                         device="cuda")
        lse = torch.full((b, h), float("nan"), dtype=torch.float32, device="cuda")
        return out, (lse if self.spec.with_lse else None)


def rel_l2(got, want):
    got = np.asarray(got, dtype=np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def check(case, out, lse=None, ref=None):
    torch.cuda.synchronize()
    ref_out, ref_lse = ref if ref is not None else case.reference()
    got = out.double().cpu().numpy()
    assert np.isfinite(got).all(), "out has non-finite values (NaN poison left?)"
    tol = TOLERANCE[case.spec.o_dtype]
    assert rel_l2(got, ref_out) < tol
    if case.spec.with_lse:
        got_lse = lse.double().cpu().numpy()
        assert np.isfinite(got_lse).all()
        assert rel_l2(got_lse, ref_lse) < tol


@pytest.mark.parametrize("head_dim, dtype, layout, group, cap", list(matrix()),
                         ids=lambda x: str(x))
def test_matches_the_reference(head_dim, dtype, layout, group, cap):
    case = Case(spec_for(head_dim, dtype, layout, group, cap), seed=head_dim + group)
    plan = canopy.plan(case.spec, padded(case.pages), case.lens, num_pages=case.num_pages)
    assert plan.device == "cuda:0" and plan.tree_depth == 2
    out, lse = case.poisoned_outputs()
    got_out, got_lse = plan.run(case.q, case.k, case.v, out=out, lse=lse)
    assert got_out is out and got_lse is lse
    check(case, out, lse)


@pytest.mark.parametrize("page_size", [1, 64])
def test_page_sizes(page_size):
    case = Case(spec_for(128, "fp16", "NHD", 4, page_size=page_size), seed=page_size,
                prompt_pages=max(1, 64 // page_size))
    plan = canopy.plan(case.spec, padded(case.pages), case.lens)
    out, lse = plan.run(case.q, case.k, case.v)  # allocated by canopy.torch
    check(case, out, lse)


def test_without_lse_and_allocated_outputs():
    case = Case(spec_for(128, "bf16", "HND", 4, with_lse=False))
    plan = canopy.plan(case.spec, padded(case.pages), case.lens)
    out = plan.run(case.q, case.k, case.v)
    assert out.dtype == torch.bfloat16 and out.is_cuda
    check(case, out)


def test_one_plan_serves_every_layer():
    case = Case(spec_for(128, "fp16", "NHD", 4))
    plan = canopy.plan(case.spec, padded(case.pages), case.lens)
    for layer in range(3):
        q, k, v = torch.randn_like(case.q), torch.randn_like(case.k), torch.randn_like(case.v)
        out, lse = case.poisoned_outputs()
        plan.run(q, k, v, out=out, lse=lse)
        check(case, out, lse, ref=case.reference(q, k, v))


def test_cuda_graph_capture_and_replay():
    case = Case(spec_for(128, "fp16", "NHD", 8, cap=30.0))
    plan = canopy.plan(case.spec, padded(case.pages), case.lens)
    q, k, v = case.q.clone(), case.k.clone(), case.v.clone()
    out, lse = case.poisoned_outputs()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside capture, as torch recommends
        plan.run(q, k, v, out=out, lse=lse)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        plan.run(q, k, v, out=out, lse=lse)
        allocated_out, allocated_lse = plan.run(q, k, v)  # outputs from the graph's pool
    for step in range(3):
        q.copy_(torch.randn_like(q))
        k.copy_(torch.randn_like(k))
        v.copy_(torch.randn_like(v))
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        allocated_out.fill_(float("nan"))
        graph.replay()
        ref = case.reference(q, k, v)
        check(case, out, lse, ref=ref)
        check(case, allocated_out, allocated_lse, ref=ref)


def test_runs_on_the_current_and_the_given_stream():
    case = Case(spec_for(64, "fp16", "HND", 5))
    plan = canopy.plan(case.spec, padded(case.pages), case.lens)
    stream = torch.cuda.Stream()
    out, lse = case.poisoned_outputs()
    stream.wait_stream(torch.cuda.current_stream())  # the inputs and the poison are ready
    with torch.cuda.stream(stream):
        plan.run(case.q, case.k, case.v, out=out, lse=lse)  # torch's current stream: `stream`
    stream.synchronize()
    check(case, out, lse)
    out, lse = case.poisoned_outputs()
    torch.cuda.synchronize()
    plan.run(case.q, case.k, case.v, out=out, lse=lse, stream=stream)  # a torch.cuda.Stream
    stream.synchronize()
    check(case, out, lse)
    out, lse = case.poisoned_outputs()
    torch.cuda.synchronize()
    plan.run(case.q, case.k, case.v, out=out, lse=lse, stream=stream.cuda_stream)  # a handle
    stream.synchronize()
    check(case, out, lse)


def test_device_block_tables_and_csr():
    case = Case(spec_for(128, "fp16", "NHD", 4))
    host = canopy.plan(case.spec, padded(case.pages), case.lens)
    dev = canopy.plan(case.spec, torch.from_numpy(padded(case.pages)).cuda(),
                      torch.tensor(case.lens, device="cuda"))
    assert dev.device == "cuda:0"
    assert json.loads(dev.to_json())["items"] == json.loads(host.to_json())["items"]
    indptr, indices = reference.csr(case.pages)
    from_csr = canopy.plan(case.spec, seq_lens=torch.tensor(case.lens, device="cuda"),
                           indptr=torch.from_numpy(indptr).cuda(),
                           indices=torch.from_numpy(indices).cuda())
    assert from_csr.to_json() == dev.to_json()
    out, lse = case.poisoned_outputs()
    from_csr.run(case.q, case.k, case.v, out=out, lse=lse)
    check(case, out, lse)


def test_gpu_plan_also_runs_the_cpu_executor():
    case = Case(spec_for(64, "fp16", "NHD", 4))
    plan = canopy.plan(case.spec, padded(case.pages), case.lens)
    q, k, v = (x.double().cpu().numpy() for x in (case.q, case.k, case.v))
    out, lse = plan.run(q, k, v)
    ref_out, ref_lse = case.reference()
    np.testing.assert_allclose(out, ref_out, atol=1e-10)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-10)


def test_caller_workspace():
    case = Case(spec_for(128, "fp16", "NHD", 4))
    sizing = canopy.plan(case.spec, padded(case.pages), case.lens)
    workspace = torch.full((sizing.workspace_bytes,), 255, dtype=torch.uint8, device="cuda")
    plan = canopy.plan(case.spec, padded(case.pages), case.lens, workspace=workspace)
    out, lse = case.poisoned_outputs()
    plan.run(case.q, case.k, case.v, out=out, lse=lse)
    check(case, out, lse)
    if sizing.workspace_bytes > 0:
        with pytest.raises(canopy.InvalidArgumentError, match="workspace has .* bytes"):
            canopy.plan(case.spec, padded(case.pages), case.lens, workspace=workspace[:1])


def test_gpu_errors():
    case = Case(spec_for(128, "fp16", "NHD", 4))
    plan = canopy.plan(case.spec, padded(case.pages), case.lens)
    out, lse = case.poisoned_outputs()
    with pytest.raises(canopy.InvalidArgumentError) as info:
        plan.run(case.q.bfloat16(), case.k, case.v, out=out, lse=lse)
    assert str(info.value) == "q: expected dtype float16 (spec.q_dtype), got bfloat16"
    with pytest.raises(canopy.InvalidArgumentError, match="lse: expected dtype float32"):
        plan.run(case.q, case.k, case.v, out=out, lse=lse.half())
    with pytest.raises(canopy.InvalidArgumentError, match="k_cache is on cpu but this run"):
        plan.run(case.q, case.k.cpu(), case.v, out=out, lse=lse)
    interleaved = torch.stack([case.k, case.v], dim=1)  # [pages, 2, ...]: FlashInfer's kv_cache
    with pytest.raises(canopy.InvalidArgumentError, match="k_cache must be C-contiguous"):
        plan.run(case.q, interleaved[:, 0], interleaved[:, 1], out=out, lse=lse)
    cpu_plan = canopy.plan(case.spec, padded(case.pages), case.lens, device="cpu")
    with pytest.raises(canopy.InvalidArgumentError, match="made for the CPU executor"):
        cpu_plan.run(case.q, case.k, case.v, out=out, lse=lse)
    with pytest.raises(canopy.InvalidArgumentError, match="stream: expected"):
        plan.run(case.q, case.k, case.v, out=out, lse=lse, stream="default")


def test_tuning_status():
    status = canopy.tuning_status()
    assert status["device"] and status["message"]
    assert isinstance(status["tuned"], bool) and isinstance(status["refused"], list)
    assert status["tuned"] == bool(status["database"])
    assert '"canopy-coefficients/1"' in status["coefficients"]


def test_device_info():
    info = canopy.device_info()
    assert info["name"] and info["arch"].startswith("sm_") and info["num_sms"] > 0
    assert info["arch"] == canopy.plan(spec_for(64, "fp16", "NHD", 1),
                                       [[0]], [1]).arch


def test_incremental_planner_on_the_gpu():
    # A decode loop with a departure and an arrival: patched and full GPU plans
    # both match the float64 reference.
    from canopy import _engine
    from test_engine import decode_loop

    spec = canopy.AttentionSpec(num_qo_heads=16, num_kv_heads=2, head_dim=128, page_size=4,
                                with_lse=True)
    rng = np.random.default_rng(9)
    num_pages = 64
    k = torch.randn(kv_shape(spec, num_pages), dtype=torch.float16, device="cuda")
    v = torch.randn(kv_shape(spec, num_pages), dtype=torch.float16, device="cuda")
    planner = canopy.IncrementalPlanner(spec, device="cuda")
    for pages, lens in decode_loop(spec, 6, rng):
        indptr, indices, seq_lens = _engine.step_csr(pages, lens, spec.page_size)
        plan = planner.plan(seq_lens=seq_lens, indptr=indptr, indices=indices, num_pages=num_pages)
        assert plan.device == "cuda:0"
        q = torch.randn(len(lens), 16, 128, dtype=torch.float16, device="cuda")
        out, lse = plan.run(q, k, v)
        want, want_lse = reference.attention(spec, pages, lens, q.double().cpu().numpy(),
                                             k.double().cpu().numpy(), v.double().cpu().numpy())
        assert rel_l2(out.double().cpu().numpy(), want) < TOLERANCE["fp16"]
        assert rel_l2(lse.double().cpu().numpy(), want_lse) < TOLERANCE["fp16"]
    assert planner.patched_plans > 0 and planner.full_plans >= 3
