"""DLPack round trips: NumPy, any __dlpack__ producer, and torch CPU tensors
(when torch is importable)."""

import numpy as np
import pytest

import canopy
import reference
from reference import kv_shape, padded, shared_prefix_batch

SPEC = canopy.AttentionSpec(num_qo_heads=8, num_kv_heads=2, head_dim=64, page_size=4,
                            with_lse=True)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(3)
    pages, lens, num_pages = shared_prefix_batch(rng, SPEC.page_size)
    q = rng.standard_normal((len(lens), 8, 64))
    k = rng.standard_normal(kv_shape(SPEC, num_pages))
    v = rng.standard_normal(kv_shape(SPEC, num_pages))
    plan = canopy.plan(SPEC, padded(pages), lens, device="cpu")
    return plan, pages, lens, q, k, v, reference.attention(SPEC, pages, lens, q, k, v)


class Foreign:
    """A minimal DLPack producer that is not NumPy (as JAX or CuPy arrays on the host are)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, stream=None, **kwargs):
        return self._array.__dlpack__(stream=stream, **kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_numpy_tables_round_trip():
    table = np.array([[4, 1, -1], [4, 2, 3]], dtype=np.int32)
    t = canopy.BlockTables.from_padded(table, np.array([7, 9], np.int32), 4)
    assert isinstance(t.indices, np.ndarray) and t.indices.dtype == np.int32
    np.testing.assert_array_equal(t.indptr, [0, 2, 5])
    np.testing.assert_array_equal(t.indices, [4, 1, 4, 2, 3])
    np.testing.assert_array_equal(t.seq_lens, [7, 9])
    t.indices[0] = 99  # a copy: the tables are unchanged
    assert t.indices[0] == 4


def test_any_dlpack_producer(case):
    plan, _, _, q, k, v, (ref_out, ref_lse) = case
    out = np.full(q.shape, np.nan)
    lse = np.full(q.shape[:2], np.nan)
    plan.run(Foreign(q), Foreign(k), Foreign(v), out=Foreign(out), lse=Foreign(lse))
    np.testing.assert_allclose(out, ref_out, atol=1e-10)  # written through the capsule
    np.testing.assert_allclose(lse, ref_lse, atol=1e-10)


def test_foreign_tables(case):
    plan, pages, lens, *_ = case
    p = canopy.plan(SPEC, Foreign(padded(pages)), Foreign(np.array(lens, np.int32)),
                    device="cpu")
    assert p.to_json() == plan.to_json()


def test_torch_cpu_tensors(case):
    torch = pytest.importorskip("torch")
    plan, pages, lens, q, k, v, (ref_out, ref_lse) = case
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    out, lse = plan.run(tq.requires_grad_(), tk, tv)  # canopy.torch allocates; grad is dropped
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-10)
    np.testing.assert_allclose(lse.numpy(), ref_lse, atol=1e-10)
    given = torch.full(q.shape, float("nan"), dtype=torch.float64)
    plan.run(tq, tk, tv, out=given, lse=torch.empty(q.shape[:2], dtype=torch.float64))
    np.testing.assert_allclose(given.numpy(), ref_out, atol=1e-10)  # zero-copy: written in place
    # Block tables as torch tensors (any int dtype).
    p = canopy.plan(SPEC, torch.from_numpy(padded(pages)).long(), torch.tensor(lens),
                    device="cpu")
    assert p.to_json() == plan.to_json()


def test_torch_errors(case):
    torch = pytest.importorskip("torch")
    plan, _, _, q, k, v, _ = case
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    with pytest.raises(canopy.InvalidArgumentError, match="q: expected dtype float64"):
        plan.run(tq.half(), tk, tv)
    with pytest.raises(canopy.InvalidArgumentError, match="k_cache must be C-contiguous"):
        plan.run(tq, tk.transpose(1, 2).contiguous().transpose(1, 2), tv)
    from canopy import torch as canopy_torch

    out, lse = canopy_torch.empty_outputs(plan, tq)
    assert out.shape == q.shape and lse.shape == q.shape[:2]
    assert canopy_torch.dtype("bf16") is torch.bfloat16


def test_dlpack_capsules(case):
    """Device arrays reach the native module as capsules (made with stream=-1);
    the same path, exercised here with host capsules."""
    plan, _, _, q, k, v, (ref_out, ref_lse) = case
    out = np.full(q.shape, np.nan)
    lse = np.full(q.shape[:2], np.nan)
    plan._impl.run_cpu(q.__dlpack__(), k.__dlpack__(), v.__dlpack__(), out.__dlpack__(),
                       lse.__dlpack__())
    np.testing.assert_allclose(out, ref_out, atol=1e-10)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-10)
