"""The CPU executor on NumPy float64 arrays against the float64 reference, and
every error path of Plan.run."""

import numpy as np
import pytest

import canopy
import reference
from reference import csr, kv_shape, padded, shared_prefix_batch


def problem(spec, seed=0, per_prompt=3):
    rng = np.random.default_rng(seed)
    pages, lens, num_pages = shared_prefix_batch(rng, spec.page_size, per_prompt=per_prompt)
    q = rng.standard_normal((len(lens), spec.num_qo_heads, spec.head_dim))
    k = rng.standard_normal(kv_shape(spec, num_pages))
    v = rng.standard_normal(kv_shape(spec, num_pages))
    return pages, lens, num_pages, q, k, v


CASES = [
    # (head_dim, group, layout, page_size, soft cap, with_lse, sm_scale)
    (64, 1, "NHD", 16, 0.0, False, 0.0),
    (128, 4, "HND", 16, 0.0, True, 0.0),
    (256, 5, "NHD", 4, 30.0, True, 0.0),
    (64, 8, "HND", 1, 0.0, False, 0.3),
    (128, 8, "NHD", 8, 5.0, True, 0.0),
]


@pytest.mark.parametrize("head_dim, group, layout, page_size, cap, with_lse, scale", CASES)
@pytest.mark.parametrize("form", ["padded", "csr"])
def test_matches_the_reference(head_dim, group, layout, page_size, cap, with_lse, scale, form):
    spec = canopy.AttentionSpec(num_qo_heads=2 * group, num_kv_heads=2, head_dim=head_dim,
                                kv_layout=layout, page_size=page_size, logits_soft_cap=cap,
                                with_lse=with_lse, sm_scale=scale)
    pages, lens, num_pages, q, k, v = problem(spec)
    if form == "padded":
        plan = canopy.plan(spec, padded(pages), lens, num_pages=num_pages, device="cpu")
    else:
        indptr, indices = csr(pages)
        plan = canopy.plan(spec, seq_lens=lens, indptr=indptr, indices=indices,
                           num_pages=num_pages, device="cpu")
    result = plan.run(q, k, v)
    out, lse = result if with_lse else (result, None)
    ref_out, ref_lse = reference.attention(spec, pages, lens, q, k, v)
    assert out.shape == (len(lens), spec.num_qo_heads, head_dim) and out.dtype == np.float64
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-10)
    if with_lse:
        np.testing.assert_allclose(lse, ref_lse, rtol=0, atol=1e-10)


def test_one_plan_serves_every_layer():
    spec = canopy.AttentionSpec(num_qo_heads=8, num_kv_heads=2, head_dim=64, page_size=4)
    pages, lens, num_pages, _, _, _ = problem(spec)
    plan = canopy.plan(spec, padded(pages), lens, device="cpu")
    rng = np.random.default_rng(1)
    for _ in range(3):
        q = rng.standard_normal((len(lens), 8, 64))
        k = rng.standard_normal(kv_shape(spec, num_pages))
        v = rng.standard_normal(kv_shape(spec, num_pages))
        np.testing.assert_allclose(plan.run(q, k, v), reference.attention(spec, pages, lens, q, k,
                                                                           v)[0], atol=1e-10)


def test_writes_the_given_outputs_in_place():
    spec = canopy.AttentionSpec(num_qo_heads=4, num_kv_heads=1, head_dim=64, page_size=8,
                                with_lse=True)
    pages, lens, num_pages, q, k, v = problem(spec)
    plan = canopy.plan(spec, padded(pages), lens, device="cpu")
    out = np.full((len(lens), 4, 64), np.nan)
    lse = np.full((len(lens), 4), np.nan)
    got_out, got_lse = plan.run(q, k, v, out=out, lse=lse)
    assert got_out is out and got_lse is lse
    ref_out, ref_lse = reference.attention(spec, pages, lens, q, k, v)
    np.testing.assert_allclose(out, ref_out, atol=1e-10)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-10)


def test_a_larger_cache_than_the_tables_use():
    spec = canopy.AttentionSpec(num_qo_heads=4, num_kv_heads=2, head_dim=64, page_size=4)
    pages, lens, num_pages, q, k, v = problem(spec)
    rng = np.random.default_rng(5)
    big_k = np.concatenate([k, rng.standard_normal(kv_shape(spec, 7))])
    big_v = np.concatenate([v, rng.standard_normal(kv_shape(spec, 7))])
    plan = canopy.plan(spec, padded(pages), lens, device="cpu")
    np.testing.assert_allclose(plan.run(q, big_k, big_v),
                               reference.attention(spec, pages, lens, q, k, v)[0], atol=1e-10)


# ---------------------------------------------------------------------------
# Error paths of run().

SPEC = canopy.AttentionSpec(num_qo_heads=8, num_kv_heads=2, head_dim=64, page_size=4)


@pytest.fixture(scope="module")
def setup():
    pages, lens, num_pages, q, k, v = problem(SPEC)
    return canopy.plan(SPEC, padded(pages), lens, num_pages=num_pages, device="cpu"), q, k, v


def test_bad_q_shape(setup):
    plan, q, k, v = setup
    with pytest.raises(canopy.InvalidArgumentError) as info:
        plan.run(q[:, :4], k, v)
    assert str(info.value) == (
        "q: expected shape [batch=6, num_qo_heads=8, head_dim=64], got [6, 4, 64]")


def test_wrong_dtype_on_the_cpu(setup):
    plan, q, k, v = setup
    with pytest.raises(canopy.InvalidArgumentError) as info:
        plan.run(q.astype(np.float32), k, v)
    assert str(info.value) == (
        "q: expected dtype float64 (the CPU executor computes in float64), got float32")


def test_non_contiguous_q(setup):
    plan, q, k, v = setup
    wide = np.repeat(q, 2, axis=2)[:, :, ::2]
    with pytest.raises(canopy.InvalidArgumentError, match="q must be C-contiguous"):
        plan.run(wide, k, v)


def test_too_few_pages(setup):
    plan, q, k, v = setup
    with pytest.raises(canopy.InvalidArgumentError) as info:
        plan.run(q, k[:-1], v[:-1])
    assert f"k_cache: expected shape [num_pages>={plan.num_pages}, page_size=4" in str(info.value)


def test_k_and_v_pages_differ(setup):
    plan, q, k, v = setup
    with pytest.raises(canopy.InvalidArgumentError, match="k_cache has .* pages but v_cache"):
        plan.run(q, np.concatenate([k, k]), v)


def test_hnd_cache_for_an_nhd_spec(setup):
    plan, q, k, v = setup
    hnd = np.ascontiguousarray(k.transpose(0, 2, 1, 3))
    with pytest.raises(canopy.InvalidArgumentError, match="k_cache: expected shape"):
        plan.run(q, hnd, hnd)


def test_out_errors(setup):
    plan, q, k, v = setup
    with pytest.raises(canopy.InvalidArgumentError, match="out: expected dtype float64"):
        plan.run(q, k, v, out=np.empty(q.shape, np.float16))
    frozen = np.empty_like(q)
    frozen.flags.writeable = False
    with pytest.raises(canopy.InvalidArgumentError, match="out is read-only"):
        plan.run(q, k, v, out=frozen)


def test_lse_without_with_lse(setup):
    plan, q, k, v = setup
    with pytest.raises(canopy.InvalidArgumentError) as info:
        plan.run(q, k, v, lse=np.empty(q.shape[:2]))
    assert str(info.value) == "lse was given but the spec has with_lse=False"


def test_not_an_array(setup):
    plan, q, k, v = setup
    with pytest.raises(canopy.InvalidArgumentError, match="q: expected an array with __dlpack__"):
        plan.run(q.tolist(), k, v)


def test_stream_on_the_cpu(setup):
    plan, q, k, v = setup
    with pytest.raises(canopy.InvalidArgumentError, match="stream applies to CUDA arrays"):
        plan.run(q, k, v, stream=0)
