"""canopy.plan(): padded and CSR block tables, host arrays, options, inspection
and every error path of planning."""

import json

import numpy as np
import pytest

import canopy
from reference import csr, padded, shared_prefix_batch

SPEC = canopy.AttentionSpec(num_qo_heads=8, num_kv_heads=2, head_dim=64, page_size=4)


def batch(seed=0):
    return shared_prefix_batch(np.random.default_rng(seed), SPEC.page_size)


def test_padded_and_csr_give_the_same_plan():
    pages, lens, num_pages = batch()
    indptr, indices = csr(pages)
    a = canopy.plan(SPEC, padded(pages), lens, num_pages=num_pages, device="cpu")
    b = canopy.plan(SPEC, seq_lens=lens, indptr=indptr, indices=indices, num_pages=num_pages,
                    device="cpu")
    assert a.to_json() == b.to_json()
    np.testing.assert_array_equal(a.block_tables.indptr, indptr)
    np.testing.assert_array_equal(a.block_tables.indices, indices)
    np.testing.assert_array_equal(a.block_tables.seq_lens, lens)
    assert a.batch_size == b.batch_size == len(lens)
    assert a.num_pages == num_pages


def test_shared_prompts_make_a_tree():
    pages, lens, num_pages = batch()
    p = canopy.plan(SPEC, padded(pages), lens, device="cpu")
    assert p.tree_depth == 2  # a prompt node above each request's own pages
    assert p.device == "cpu"
    p.check()
    doc = json.loads(p.to_json())
    assert doc["format"].startswith("canopy-plan/")
    assert doc["batch_size"] == len(lens) and doc["tree_depth"] == 2
    assert doc["configs"] == p.configs
    text = p.describe()
    assert text.startswith("device: cpu") and f"{len(lens)} requests" in text
    assert len(p.kernel_specs) >= len(p.configs)
    assert p.num_items >= 1 and p.num_launches >= 1 and p.predicted_us > 0
    assert "canopy.Plan(device='cpu'" in repr(p)


def test_padding_past_the_used_pages_is_ignored():
    # Request 0 uses 2 pages of 4 tokens (7 tokens); the rest of its row is junk.
    table = np.array([[0, 1, 999, -5], [2, 3, 4, -1]], dtype=np.int32)
    p = canopy.plan(SPEC, table, [7, 12], device="cpu")
    assert p.num_pages == 5  # inferred: the largest used page id + 1
    np.testing.assert_array_equal(p.block_tables.indices, [0, 1, 2, 3, 4])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16])
def test_integer_dtypes_and_lists(dtype):
    pages, lens, num_pages = batch()
    table = padded(pages, fill=0).astype(dtype)
    ref = canopy.plan(SPEC, padded(pages), lens, num_pages=num_pages, device="cpu")
    p = canopy.plan(SPEC, table, np.asarray(lens, dtype=dtype), num_pages=num_pages, device="cpu")
    assert p.to_json() == ref.to_json()
    p = canopy.plan(SPEC, table.tolist(), list(lens), num_pages=num_pages, device="cpu")
    assert p.to_json() == ref.to_json()


def test_non_contiguous_tables_are_copied():
    pages, lens, num_pages = batch()
    wide = np.repeat(padded(pages, fill=0), 2, axis=1)[:, ::2]
    assert not wide.flags.c_contiguous
    p = canopy.plan(SPEC, wide, lens, num_pages=num_pages, device="cpu")
    assert p.to_json() == canopy.plan(SPEC, padded(pages), lens, device="cpu").to_json()


def test_options_reach_the_planner():
    pages, lens, _ = batch()
    blind = canopy.plan(SPEC, padded(pages), lens, device="cpu",
                        options=canopy.PlannerOptions(prefix_blind=True))
    assert blind.tree_depth == 1  # every request planned alone
    only = canopy.plan(SPEC, padded(pages), lens, device="cpu",
                       options=canopy.PlannerOptions(candidates=["mma_q64_kv64_w4_s3"]))
    assert only.configs == ["mma_q64_kv64_w4_s3"]
    doc = json.loads(canopy.default_coefficients())
    doc["num_sms"] = 7
    small = canopy.plan(SPEC, padded(pages), lens, device="cpu",
                        options=canopy.PlannerOptions(coefficients=json.dumps(doc)))
    assert json.loads(small.to_json())["num_sms"] == 7
    # The same options as a dict of the library's JSON form.
    as_dict = canopy.plan(SPEC, padded(pages), lens, device="cpu",
                          options={"prefix_blind": True})
    assert as_dict.to_json() == blind.to_json()
    small_dict = canopy.plan(SPEC, padded(pages), lens, device="cpu",
                             options={"coefficients": doc, "candidates": ["mma_q64_kv64_w4_s3"]})
    assert json.loads(small_dict.to_json())["num_sms"] == 7


def test_empty_batch():
    tables = canopy.BlockTables.from_padded(np.zeros((0, 3), np.int32), np.zeros(0, np.int32), 4)
    assert tables.batch_size == 0 and tables.num_pages == 0
    with pytest.raises(canopy.InvalidArgumentError, match="the batch has no requests"):
        canopy.plan(SPEC, np.zeros((0, 3), np.int32), np.zeros(0, np.int32), device="cpu")


def test_device_argument_spellings():
    from canopy._plan import _device_ordinal

    assert _device_ordinal("cpu", None) == -1
    assert _device_ordinal("cuda", None) == 0
    assert _device_ordinal("cuda:3", None) == 3
    assert _device_ordinal(2, None) == 2
    assert _device_ordinal(None, np.zeros(2)) == 0


# ---------------------------------------------------------------------------
# Error paths: each names what is wrong.

TABLE = np.array([[0, 1, 2], [0, 1, 3]], dtype=np.int32)
LENS = [10, 12]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"block_tables": np.array([[0, 1, 2], [0, 1, 99]]), "num_pages": 8},
         "request 1: page id 99 at table position 2 is out of range [0, 8)"),
        ({"block_tables": np.array([[0, 1, 2], [0, -1, 3]])},
         "request 1: page id -1 at table position 1 is out of range"),
        ({"seq_lens": [10, 0]}, "request 1: seq_len is 0, must be at least 1"),
        ({"seq_lens": [13, 12]},
         "request 0: seq_len 13 needs 4 pages of 4 tokens but its table holds 3"),
        ({"seq_lens": [10]}, "block_tables has 2 rows but seq_lens has 1 entries"),
        ({"block_tables": np.array([0, 1, 2])}, "block_tables: expected a 2-D integer array"),
        ({"block_tables": np.ones((2, 3))}, "block_tables: expected an integer dtype"),
        ({"block_tables": np.array([[0, 1, 2**40], [0, 1, 3]])},
         "block_tables: value 1099511627776 does not fit in int32"),
        ({"seq_lens": None}, "seq_lens [batch] is required"),
        ({"num_pages": -1}, "num_pages (-1) must be >= 0"),
        ({"num_pages": 2.5}, "num_pages: expected an int, got float"),
        ({"device": "tpu"}, "device: expected 'cpu', 'cuda', 'cuda:N'"),
        ({"device": -2}, "device: CUDA ordinal -2 is negative"),
        ({"options": "prefix_blind"}, "options: expected a canopy.PlannerOptions or a dict"),
        ({"options": {"prefix_blnd": True}}, "planner options: unknown key 'prefix_blnd'"),
        ({"options": {"waves": 0}}, "'waves' must be an integer in [1, 1024], got 0"),
        ({"workspace": np.zeros(16, np.uint8)}, "workspace applies to GPU plans"),
    ],
)
def test_padded_errors(kwargs, words):
    args = {"block_tables": TABLE, "seq_lens": LENS, "device": "cpu"}
    args.update(kwargs)
    with pytest.raises(canopy.InvalidArgumentError) as info:
        canopy.plan(SPEC, **args)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "indptr, indices, lens, words",
    [
        ([0, 1, 0, 2], [0, 1], [4, 4, 4], "request 1: indptr decreases (1 -> 0)"),
        ([0, 3, 2], [0, 1], [4, 4], "request 0: indptr[1] = 3 is past the end of indices"),
        ([1, 3, 6], [0, 1, 2, 3, 4, 5], [4, 4], "indptr[0] must be 0, got 1"),
        ([0, 3, 5], [0, 1, 2, 3, 4, 5], [4, 4], "indptr[2] = 5 but indices has 6 entries"),
        ([0, 3], [0, 1, 2], [4, 4], "indptr has 2 entries, expected batch + 1 = 3"),
        ([], [], [4], "indptr is empty; expected batch + 1 = 2 entries"),
        ([0, 1, 2], [0, 7], [4, 4], None),  # fine without num_pages: inferred as 8
    ],
)
def test_csr_errors(indptr, indices, lens, words):
    def make():
        return canopy.plan(SPEC, seq_lens=lens, indptr=np.array(indptr, np.int32),
                           indices=np.array(indices, np.int32), device="cpu")

    if words is None:
        assert make().num_pages == 8
        return
    with pytest.raises(canopy.InvalidArgumentError) as info:
        make()
    assert words in str(info.value)


def test_table_forms_are_exclusive_and_required():
    with pytest.raises(canopy.InvalidArgumentError, match="not both"):
        canopy.plan(SPEC, TABLE, LENS, indptr=[0, 3, 6], indices=[0] * 6, device="cpu")
    with pytest.raises(canopy.InvalidArgumentError, match="block tables are missing"):
        canopy.plan(SPEC, seq_lens=LENS, indptr=[0, 3, 6], device="cpu")
    with pytest.raises(canopy.InvalidArgumentError, match="expected a canopy.AttentionSpec"):
        canopy.plan({"head_dim": 64}, TABLE, LENS, device="cpu")


def test_tables_built_for_another_page_size():
    tables = canopy.BlockTables.from_padded(TABLE, np.array(LENS, np.int32), 8)
    with pytest.raises(canopy.InvalidArgumentError,
                       match="built for page_size 8 but spec.page_size is 4"):
        canopy._canopy.make_plan(SPEC, tables, canopy.PlannerOptions(), -1)


def test_gpu_plan_without_a_gpu_says_so():
    if canopy.gpu_available():
        pytest.skip("a GPU is available")
    for device in (None, "cuda", "cuda:0", 0):
        with pytest.raises(canopy.NoDeviceError) as info:
            canopy.plan(SPEC, TABLE, LENS, device=device)
        assert "no GPU was found" in str(info.value)
        assert "device='cpu'" in str(info.value)
