"""canopy.IncrementalPlanner and the engine-side step planner (canopy._engine)
on the CPU executor: tables from engine page lists, KV bytes against
prefix-blind reads, incremental plans that match fresh ones."""

import numpy as np
import pytest

import canopy
import reference
from canopy import _engine
from reference import kv_shape


def test_step_csr_takes_the_used_pages_only():
    # Engines allocate ahead: a request's list may hold more pages than it uses.
    indptr, indices, lens = _engine.step_csr([[4, 5, 6], [4, 7]], [9, 5], page_size=4)
    assert indptr.tolist() == [0, 3, 5]
    assert indices.tolist() == [4, 5, 6, 4, 7]
    assert lens.tolist() == [9, 5] and lens.dtype == np.int32


@pytest.mark.parametrize(
    "pages, lens, message",
    [
        ([[1]], [5], "request 0 has 1 pages but 5 tokens need 2"),
        ([[1], [2]], [3, 0], "request 1 has seq_len 0"),
        ([[1]], [3, 4], "1 page lists but seq_lens has shape (2,)"),
    ],
)
def test_step_csr_names_the_bad_request(pages, lens, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _engine.step_csr(pages, lens, page_size=4)


def test_kv_tokens_read_counts_shared_pages_once():
    # Two requests share pages 0 and 1 (8 tokens) and own a partial tail each.
    indptr, indices, lens = _engine.step_csr([[0, 1, 2], [0, 1, 3]], [10, 11], page_size=4)
    unique, blind = _engine.kv_tokens_read(indptr, indices, lens, 4)
    assert blind == 21
    assert unique == 8 + 2 + 3
    # A shared partial page is read up to its furthest slot.
    indptr, indices, lens = _engine.step_csr([[0, 1], [0, 1]], [6, 7], page_size=4)
    assert _engine.kv_tokens_read(indptr, indices, lens, 4) == (7, 13)
    # Nothing shared: both counts agree.
    indptr, indices, lens = _engine.step_csr([[0], [1, 2]], [3, 5], page_size=4)
    assert _engine.kv_tokens_read(indptr, indices, lens, 4) == (8, 8)


def decode_loop(spec, steps, rng):
    """A shared prompt of 3 pages, 4 requests decoding one token per step;
    request 1 finishes at step 2 and request 4 joins at step 3."""
    ps = spec.page_size
    prompt = [0, 1, 2]
    next_page = [3]
    tables, lens = {}, {}
    for r in range(4):
        tables[r] = prompt + [next_page[0]]
        next_page[0] += 1
        lens[r] = 3 * ps + 1 + r
    for step in range(steps):
        if step == 2:
            del tables[1], lens[1]
        if step == 3:
            tables[4] = prompt + [next_page[0]]
            next_page[0] += 1
            lens[4] = 3 * ps + 2
        for r in tables:  # one more token; a new page when the last is full
            lens[r] += 1
            if -(-lens[r] // ps) > len(tables[r]):
                tables[r].append(next_page[0])
                next_page[0] += 1
        order = sorted(tables)
        yield [tables[r] for r in order], [lens[r] for r in order]


def test_incremental_planner_patches_decode_steps_and_matches_the_reference():
    spec = canopy.AttentionSpec(num_qo_heads=8, num_kv_heads=2, head_dim=64, page_size=4)
    rng = np.random.default_rng(3)
    num_pages = 64
    k = rng.standard_normal(kv_shape(spec, num_pages))
    v = rng.standard_normal(kv_shape(spec, num_pages))
    planner = canopy.IncrementalPlanner(spec, device="cpu")
    outcomes = []
    for pages, lens in decode_loop(spec, 8, rng):
        indptr, indices, seq_lens = _engine.step_csr(pages, lens, spec.page_size)
        plan = planner.plan(seq_lens=seq_lens, indptr=indptr, indices=indices, num_pages=num_pages)
        outcomes.append(planner.last_outcome)
        q = rng.standard_normal((len(lens), 8, 64))
        out = plan.run(q, k, v)
        ref, _ = reference.attention(spec, pages, lens, q, k, v)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10)
        plan.check()
    # Arrivals and departures plan from scratch; plain decode steps patch.
    assert outcomes[0] == "full"
    assert outcomes[2] == "full" and outcomes[3] == "full"
    assert "patched" in outcomes
    assert planner.full_plans + planner.patched_plans == len(outcomes)
    assert planner.last_reason == "" or planner.last_outcome == "full"


def test_incremental_planner_rejects_bad_settings():
    spec = canopy.AttentionSpec(num_qo_heads=8, num_kv_heads=2, head_dim=64, page_size=4)
    with pytest.raises(canopy.InvalidArgumentError, match="full_every must be >= 1"):
        canopy.IncrementalPlanner(spec, device="cpu", full_every=0)
    with pytest.raises(canopy.InvalidArgumentError, match="min_growth_tokens"):
        canopy.IncrementalPlanner(spec, device="cpu", min_growth_tokens=-1)
    with pytest.raises(canopy.InvalidArgumentError, match="spec: expected"):
        canopy.IncrementalPlanner("spec", device="cpu")
    planner = canopy.IncrementalPlanner(spec, device="cpu")
    tables = canopy.BlockTables.from_padded(np.array([[0]], np.int32), np.array([3], np.int32), 8, 4)
    with pytest.raises(canopy.InvalidArgumentError, match="page_size 8"):
        planner._impl.plan(tables)  # tables checked for another page size


def test_step_planner_counts_steps_and_bytes():
    spec = canopy.AttentionSpec(num_qo_heads=8, num_kv_heads=2, head_dim=64, page_size=4)
    rng = np.random.default_rng(5)
    steps = _engine.StepPlanner(spec, num_pages=64, device="cpu")
    for pages, lens in decode_loop(spec, 5, rng):
        step = steps.plan_step(pages, lens)
        assert step.batch_size == len(lens)
        assert step.kv_tokens < step.blind_kv_tokens  # the prompt's 12 tokens are shared
        for _ in range(3):  # three layers
            steps.account_run(step, element_bytes=2)
    s = steps.stats.as_dict()
    assert s["steps"] == 5 and s["layer_runs"] == 15
    assert s["full_plans"] + s["patched_plans"] + s["unchanged_plans"] == 5
    per_token = 2 * 2 * 64 * 2
    assert s["blind_kv_bytes"] == 3 * steps.stats.blind_kv_tokens * per_token
    assert 0 < s["kv_read_fraction"] < 1
