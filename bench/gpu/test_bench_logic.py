"""CPU tests of the GPU benchmark's host logic (python3 -m pytest bench/gpu).

No GPU and no torch needed; the cascade simulation uses numpy when present.
Workloads (tree strings, the suite) come from the library through
libcanopy_bench_capi.so, as in the benchmark: the tests that need one skip,
saying so, when it is not built (ctest's BenchHarness.PythonTests builds it).
"""
import json
import math
import os
import random
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import bench_logic as L  # noqa: E402

SUITE_PATH = os.path.join(ROOT, "bench", "workloads", "suite.json")
with open(SUITE_PATH) as f:
    SUITE = json.load(f)
SUITE_NAMES = [w["name"] for w in SUITE["workloads"]]

_LIB = []


def _capi():
    """(canopy_capi module, loaded Lib); skips the test when the library is not built."""
    import canopy_capi as C
    if not _LIB:
        try:
            _LIB.append(C.Lib())
        except OSError as e:
            _LIB.append(e)
    if isinstance(_LIB[0], OSError):
        pytest.skip(f"libcanopy_bench_capi.so not built: {_LIB[0]}")
    return C, _LIB[0]


def _tables(w):
    return L.Tables(w.indptr, w.indices, w.seq_lens, w.info["page_size"], w.num_pages)


def tree_tables(tree, page_size):
    """The library's block tables of a tree string (workloads/workload.cpp)."""
    C, lib = _capi()
    w = C.Workload.from_tree(lib, tree, page_size=page_size)
    try:
        return _tables(w)
    finally:
        w.close()


def suite_tables(name):
    """(info, Tables) of a suite workload, from the library."""
    C, lib = _capi()
    w = C.Workload.from_suite(lib, name, SUITE_PATH)
    try:
        return dict(w.info), _tables(w)
    finally:
        w.close()


# ---------------------------------------------------------------------------
# Tables and trie


def test_tables_trim_and_last_page():
    t = L.Tables([0, 3, 6], [0, 1, 2, 0, 1, 3], [40, 20], 16, 4)
    assert t.pages(0) == [0, 1, 2] and t.last_page_len(0) == 8
    assert t.pages(1) == [0, 1] and t.last_page_len(1) == 4  # page 3 unused
    assert t.keys(1) == [(0, 16), (1, 4)]
    indptr, indices, last = t.flat()
    assert indptr == [0, 3, 5] and indices == [0, 1, 2, 0, 1] and last == [8, 4]


def test_tables_reject_short_rows():
    with pytest.raises(ValueError):
        L.Tables([0, 1], [0], [40], 16)


def test_tree_tables_share_full_pages_and_copy_partial_ones():
    t = tree_tables("1,2|20,4", 16)
    # root: 1 full page (0) + 4 tokens copied into each child's own page
    assert t.pages(0) == [0, 1] and t.pages(1) == [0, 2]
    assert t.seq_lens == [24, 24] and t.num_pages == 3


def test_trie_counts():
    t = tree_tables("1,4,16|64,32,8", 16)
    trie = L.PageTrie(t)
    assert trie.count[0] == 16
    assert trie.count[trie.path[0][0]] == 16  # root pages shared by all
    assert trie.count[trie.path[0][4]] == 4  # depth 5: first page of a level-1 node
    assert trie.count[trie.path[0][-1]] == 1


# ---------------------------------------------------------------------------
# Cascade levels

TREES = ["1,4,16|64,32,8", "1,4,16|40,20,5", "1,2,4,8|16,16,16,16", "2,8,32|48,33,17",
         "1,64|4096,256", "16|300", "1,4,64|2048,1024,256"]


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("variant", ["shared", "root", "depth"])
@pytest.mark.parametrize("page_size", [1, 16, 64])
def test_levels_cover_every_request(tree, variant, page_size):
    t = tree_tables(tree, page_size)
    try:
        plan = L.build_cascade_levels(t, variant)
    except L.NotRepresentable:
        assert variant == "depth" or page_size == 64
        return
    L.check_levels_cover(t, plan)
    for lv in plan["levels"]:
        assert lv["groups"] >= 1 and lv["max_group"] >= 1


def test_level_counts_by_variant():
    t = tree_tables("1,4,16|64,32,8", 16)
    assert L.build_cascade_levels(t, "shared")["num_levels"] == 2
    assert L.build_cascade_levels(t, "root")["num_levels"] == 2
    assert L.build_cascade_levels(t, "depth")["num_levels"] == 3
    flat = tree_tables("16|300", 16)
    for v in ("shared", "root", "depth"):
        assert L.build_cascade_levels(flat, v)["num_levels"] == 1


def test_shared_level_groups_are_deepest_shared_nodes():
    t = tree_tables("1,4,16|64,32,8", 16)
    plan = L.build_cascade_levels(t, "shared")
    top, bottom = plan["levels"]
    assert top["groups"] == 4 and top["max_group"] == 4  # root+branch per group of 4
    assert top["kv_indptr"][1] == 6  # 4 root pages + 2 branch pages
    assert bottom["groups"] == 16
    root = L.build_cascade_levels(t, "root")["levels"][0]
    assert root["groups"] == 1 and root["kv_indptr"] == [0, 4]


def test_mixed_sharing_gets_one_private_page_up():
    # request 0 and 1 share pages 0,1; request 2 shares nothing (pages 5,6,7)
    t = L.Tables([0, 3, 6, 9], [0, 1, 2, 0, 1, 3, 5, 6, 7], [40, 40, 33], 16)
    plan = L.build_cascade_levels(t, "shared")
    L.check_levels_cover(t, plan)
    assert plan["num_levels"] == 2
    top = plan["levels"][0]
    assert top["groups"] == 2  # {0,1} on pages 0,1; {2} on its first page
    assert sorted(top["kv_last_page_len"]) == [16, 16]


def test_identical_requests_and_requests_ending_inside_others():
    t = L.Tables([0, 2, 4, 7], [0, 1, 0, 1, 0, 1, 2], [32, 32, 40], 16)
    for v in ("shared", "root", "depth"):
        plan = L.build_cascade_levels(t, v)
        L.check_levels_cover(t, plan)


def test_single_page_requests_cannot_take_two_levels():
    t = L.Tables([0, 1, 2], [0, 0], [5, 5], 16)
    with pytest.raises(L.NotRepresentable):
        L.build_cascade_levels(t, "shared")


def test_sorted_order_makes_groups_contiguous():
    t = tree_tables("1,4,16|64,32,8", 16)
    rng = random.Random(3)
    perm = list(range(t.batch))
    rng.shuffle(perm)  # interleave the branches in request order
    indptr, indices, seq = [0], [], []
    for r in perm:
        indices += t.pages(r)
        indptr.append(len(indices))
        seq.append(t.seq_lens[r])
    shuffled = L.Tables(indptr, indices, seq, 16, t.num_pages)
    for v in ("shared", "root", "depth"):
        plan = L.build_cascade_levels(shuffled, v)
        L.check_levels_cover(shuffled, plan)
        assert plan["levels"][0]["groups"] == (4 if v == "shared" else 1)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_every_suite_workload_has_a_two_level_cascade(name):
    info, t = suite_tables(name)
    plan = L.build_cascade_levels(t, "shared")
    L.check_levels_cover(t, plan)
    assert all(lv["groups"] >= 1 for lv in plan["levels"])


def test_cascade_simulation_equals_attention():
    """Attention per level group plus the log-sum-exp merge, un-permuted,
    equals direct attention: the levels mean what FlashInfer computes."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    for tree, page in (("1,4,16|40,20,5", 16), ("2,8,32|48,33,17", 4), ("1,2,4,8|3,5,7,9", 2)):
        t = tree_tables(tree, page)
        d = 8
        k = rng.uniform(-1, 1, (t.num_pages, page, d))
        v = rng.uniform(-1, 1, (t.num_pages, page, d))
        q = rng.uniform(-2, 2, (t.batch, d))

        def attend(qrow, pages, ntok):
            kk = k[pages].reshape(-1, d)[:ntok]
            vv = v[pages].reshape(-1, d)[:ntok]
            s = kk @ qrow / math.sqrt(d)
            m = s.max()
            p = np.exp(s - m)
            return p @ vv / p.sum(), m + math.log(p.sum())

        ref = np.stack([attend(q[r], t.pages(r), t.seq_lens[r])[0] for r in range(t.batch)])
        for variant in ("shared", "root", "depth"):
            try:
                plan = L.build_cascade_levels(t, variant)
            except L.NotRepresentable:
                continue
            order = plan["order"]
            qs = q[order]
            o_acc, lse_acc = None, None
            for lv in plan["levels"]:
                o = np.zeros_like(qs)
                lse = np.zeros(len(order))
                qo, ip, idx, last = (lv["qo_indptr"], lv["kv_indptr"], lv["kv_indices"],
                                     lv["kv_last_page_len"])
                for g in range(len(qo) - 1):
                    pages = idx[ip[g]:ip[g + 1]]
                    ntok = (len(pages) - 1) * page + last[g]
                    for i in range(qo[g], qo[g + 1]):
                        o[i], lse[i] = attend(qs[i], pages, ntok)
                if o_acc is None:
                    o_acc, lse_acc = o, lse
                else:
                    m = np.maximum(lse_acc, lse)
                    wa, wb = np.exp(lse_acc - m), np.exp(lse - m)
                    o_acc = (o_acc * wa[:, None] + o * wb[:, None]) / (wa + wb)[:, None]
                    lse_acc = m + np.log(wa + wb)
            out = np.empty_like(o_acc)
            out[order] = o_acc
            err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
            assert err < 1e-12, (tree, variant, err)


# ---------------------------------------------------------------------------
# Floors


def test_workload_bytes_and_floor():
    info, t = suite_tables("sys-4k-x64")  # 1,64|4096,256, llama3-8b, fp16, page 16
    b = L.workload_bytes(t, info)
    per_token = 8 * 128 * 2 * 2
    assert b["unique_kv_bytes"] == (4096 + 64 * 256) * per_token
    assert b["total_kv_bytes"] == 64 * (4096 + 256) * per_token
    assert b["q_bytes"] == b["out_bytes"] == 64 * 32 * 128 * 2
    assert b["flops"] == 4 * 64 * 4352 * 32 * 128
    assert b["sharing"]
    fl, kind = L.floor_us(b["unique_bytes"], b["flops"], 4.5e12, 790e12)
    assert kind == "memory" and abs(fl - b["unique_bytes"] / 4.5e6) < 1e-9
    info, t = suite_tables("sys-32k-x256")
    b = L.workload_bytes(t, info)
    assert L.floor_us(b["unique_bytes"], b["flops"], 4.5e12, 790e12)[1] == "math"
    info, t = suite_tables("flat-64x4k")
    assert not L.workload_bytes(t, info)["sharing"]


def test_partial_shared_pages_count_their_most_used_tokens():
    t = L.Tables([0, 2, 4], [0, 1, 0, 1], [20, 24], 16)
    spec = {"num_qo_heads": 1, "num_kv_heads": 1, "head_dim": 4, "q_dtype": "fp16",
            "kv_dtype": "fp16", "o_dtype": "fp16"}
    b = L.workload_bytes(t, spec)
    assert b["unique_kv_bytes"] == (16 + 8) * 4 * 2 * 2


# ---------------------------------------------------------------------------
# Rows, summaries, tables


def fake_row(name, floor, times, statuses=None, sharing=True):
    statuses = statuses or {}
    methods = {m: {"status": statuses.get(m, "PASS"), "median_us": t, "host_us": 5.0,
                   "launches": 3, "rel_l2": 1e-4} for m, t in times.items()}
    return {"workload": name, "floor_us": floor, "floor_kind": "memory",
            "bytes": {"unique_bytes": floor * 4.5e6, "sharing": sharing}, "methods": methods}


def test_derive_row_picks_best_correct_cascade_and_fi_best():
    row = fake_row("w", 10.0, {"canopy": 20.0, "canopy-blind": 40.0, "fi-decode": 100.0,
                               "fi-decode-tc": 60.0, "fi-cascade-2level": 30.0,
                               "fi-cascade-root": 25.0, "fi-cascade-depth": 50.0},
                   {"fi-cascade-root": "FAIL"})
    row["methods"]["fi-cascade-2level"]["levels"] = 2
    L.derive_row(row)
    assert row["fi-cascade"]["method"] == "fi-cascade-2level"
    assert row["fi-cascade"]["variant"] == "2level" and row["fi-cascade"]["levels"] == 2
    assert row["fi-best"]["method"] == "fi-cascade-2level"
    assert row["speedup_vs_fi_best"] == pytest.approx(1.5)
    assert row["methods"]["canopy"]["frac_floor"] == pytest.approx(0.5)
    assert row["methods"]["canopy"]["eff_tbs"] == pytest.approx(10.0 * 4.5e6 / 20e-6 / 1e12)


def test_summary_geomeans():
    rows = [fake_row("a", 10.0, {"canopy": 20.0, "fi-decode": 40.0}),
            fake_row("b", 10.0, {"canopy": 80.0, "fi-decode": 40.0}, sharing=False),
            fake_row("c", 10.0, {"canopy": 5.0, "fi-decode": 10.0}, {"canopy": "FAIL"})]
    s = L.summarize(rows)
    assert s["all"]["methods"]["canopy"]["geomean_frac_floor"] == pytest.approx(0.25)
    assert s["all"]["methods"]["canopy"]["n"] == 2
    assert s["sharing"]["methods"]["canopy"]["geomean_frac_floor"] == pytest.approx(0.5)
    assert s["all"]["geomean_speedup_vs_fi_best"] == pytest.approx(1.0)
    assert s["sharing_workloads"] == 2


def test_text_and_markdown_tables():
    rows = [fake_row("sys-4k-x64", 18.9, {"canopy": 630.0, "canopy-blind": 700.0,
                                         "fi-cascade-2level": 69.2}),
            fake_row("broken", 5.0, {"canopy": 1.0}, {"canopy": "FAIL"})]
    rows[0]["methods"]["canopy"]["graph_us"] = 600.0
    rows[1]["methods"]["fi-decode"] = {"status": "ERROR", "error": "Unsupported group_size"}
    s = L.summarize(rows)
    txt = L.text_table(rows, s)
    assert "sys-4k-x64" in txt and "630.0 (0.030)" in txt and "FAIL" in txt and "ERR" in txt
    assert "geomean fraction of floor" in txt
    md = L.markdown({"env": {"device": "NVIDIA H200"}, "ceilings": {"read_bw_tbs": 4.5},
                     "workloads": rows, "summary": s})
    assert md.count("| sys-4k-x64 |") >= 2 and "Unsupported group_size" in md
    assert "NVIDIA H200" in md


# ---------------------------------------------------------------------------
# Nsight Compute

NCU_CSV = '''==PROF== Connected to process 123
==PROF== Profiling "spin_kernel": 0%....50%....100% - 1 pass
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","123","python3","h","at::cuda::spin_kernel(long)","1","7","(1, 1, 1)","(1, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","byte","128"
"1","123","python3","h","canopy_partial_hd128_a","1","7","(128, 1, 1)","(640, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","Mbyte","1.5"
"2","123","python3","h","canopy_merge_hd128","1","7","(128, 1, 1)","(64, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","byte","1,000"
"3","123","python3","h","at::cuda::spin_kernel(long)","1","7","(1, 1, 1)","(1, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","byte","64"
"4","123","python3","h","canopy_partial_hd128_b","1","7","(128, 1, 1)","(640, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","byte","3000000"
"5","123","python3","h","canopy_merge_hd128","1","7","(128, 1, 1)","(64, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","byte","2000"
'''


def test_parse_ncu_csv_units_and_order():
    k = L.parse_ncu_csv(NCU_CSV)
    assert [x["id"] for x in k] == [0, 1, 2, 3, 4, 5]
    assert k[1]["bytes"] == 1.5e6 and k[2]["bytes"] == 1000


def test_assign_and_merge_ncu():
    kernels = L.parse_ncu_csv(NCU_CSV)
    manifest = [{"workload": "w", "method": "canopy", "kernels": 2, "marker": "spin_kernel"},
                {"workload": "w", "method": "canopy-blind", "kernels": 2, "marker": "spin_kernel"}]
    a = L.assign_ncu(manifest, kernels)
    assert a[0]["dram_bytes"] == 1.5e6 + 1000 and not a[0]["problems"]
    assert a[1]["dram_bytes"] == 3e6 + 2000
    results = {"workloads": [fake_row("w", 1.0, {"canopy": 2.0, "canopy-blind": 3.0})]}
    results["workloads"][0]["bytes"]["unique_bytes"] = 1e6
    L.merge_ncu(results, a)
    c = results["workloads"][0]["methods"]["canopy"]
    assert c["dram_ratio"] == pytest.approx(1.501)
    assert c["dram_reduction_vs_blind"] == pytest.approx(3002000 / 1501000)
    # without markers, by counts; a wrong count and a foreign kernel are reported
    no_marker = [x for x in kernels if "spin" not in x["name"]]
    a = L.assign_ncu([{"workload": "w", "method": "canopy", "kernels": 3}], no_marker)
    assert "not named canopy_" not in " ".join(a[0]["problems"])
    assert a[-1]["problems"]  # one kernel left over
    bad = [dict(no_marker[0], name="other_kernel")] + no_marker[1:2]
    a = L.assign_ncu([{"workload": "w", "method": "canopy", "kernels": 2}], bad)
    assert any("canopy_" in p for p in a[0]["problems"])


# ---------------------------------------------------------------------------
# The C API, when built: workloads and plans as the library makes them


def test_tree_string_errors_come_from_the_library():
    C, lib = _capi()
    for bad, words in (("1,4", "tree string"), ("2,3|8,8", "not a multiple"),
                       ("1,x|8,8", "'x' is not a positive integer")):
        with pytest.raises(C.CanopyError) as e:
            C.Workload.from_tree(lib, bad)
        assert e.value.kind == "invalid_argument" and words in str(e.value), str(e.value)


def test_capi_suite_workloads_follow_the_suite():
    C, lib = _capi()
    d = SUITE["defaults"]
    for entry in SUITE["workloads"]:
        w = C.Workload.from_suite(lib, entry["name"], SUITE_PATH)
        model = SUITE["models"][entry.get("model", d["model"])]
        for key in ("num_qo_heads", "num_kv_heads", "head_dim"):
            assert w.info[key] == model[key], (entry["name"], key)
        assert w.info["kv_dtype"] == entry.get("dtype", d["dtype"])
        assert w.info["page_size"] == entry.get("page_size", d["page_size"])
        assert w.info["tree"] == entry["tree"] and w.info["name"] == entry["name"]
        leaves = int(entry["tree"].split("|")[0].split(",")[-1])
        t = _tables(w)  # checks every request's table holds its pages
        assert t.batch == w.info["batch_size"] == leaves
        assert t.num_pages == max(t.indices) + 1 == w.info["num_pages"]
        w.close()


def test_capi_plans_without_gpu():
    C, lib = _capi()
    w = C.Workload.from_suite(lib, "two-level-3", SUITE_PATH)
    p = C.Plan(lib, w)
    info = p.info()
    assert info["kernel_launches"] == p.launches() >= 2 and not info["prepared"]
    assert all(k.startswith("canopy_") for k in info["kernels"])
    with pytest.raises(C.CanopyError) as e:
        C.Plan(lib, w, {"no_such_option": 1})
    assert "planner options: unknown key 'no_such_option'" in str(e.value)
    with pytest.raises(C.CanopyError) as e:
        C.Plan(lib, w, {"waves": 0})
    assert "'waves' must be an integer in [1, 1024], got 0" in str(e.value)
    # The options JSON goes to the library as it is: every key, info echoes all.
    blind = C.Plan(lib, w, {"prefix_blind": True, "candidates": ["mma_q64_kv64_w4_s3"]})
    assert blind.info()["options"]["prefix_blind"] and blind.info()["options"]["waves"] == 8
    assert blind.info()["configs"] == ["mma_q64_kv64_w4_s3"] and blind.info()["tree_depth"] == 1
    blind.close()
    # The options' coefficients replace the H200 description's, and a device
    # description applies on top of them (here: the arch only).
    coefficients = {"format": "canopy-coefficients/1", "name": "test-gpu", "num_sms": 20,
                    "arch": "sm_90", "hbm_bytes_per_us": 3.0e6, "l2_bytes_per_us": 7.0e6,
                    "tensor_flops_per_us": 6.0e8, "launch_overhead_us": 3.0,
                    "merge_bytes_per_us": 2.5e6, "max_smem_per_block": 232448,
                    "kernels": {"mma": {"item_overhead_us": 1.0, "flops_per_us": 0,
                                        "bandwidth_fraction": 1.0}}}
    small = C.Plan(lib, w, {"coefficients": coefficients}, device={"arch": 80})
    assert small.info()["num_sms"] == 20 and str(small.info()["arch"]) == "80"
    assert small.info()["options"]["coefficients"]["name"] == "test-gpu"
    small.close()
    with pytest.raises(C.CanopyError) as e:
        C.Plan(lib, w, {"coefficients": dict(coefficients, num_sms=0)})
    assert "'coefficients': coefficients JSON: num_sms must be > 0" in str(e.value)
    with pytest.raises(C.CanopyError) as e:
        C.Runtime(lib)
    assert e.value.kind == "no_device" or lib.gpu_available()[0]


def test_capi_every_host_entry_point(tmp_path):
    C, lib = _capi()
    avail, why = lib.gpu_available()
    assert isinstance(avail, bool) and why
    names = lib.suite_names(SUITE_PATH)
    assert names == SUITE_NAMES
    w = C.Workload.from_tree(lib, "1,4|64,16", "small-d64", "bf16", 8)
    assert w.info["head_dim"] == 64 and w.info["kv_dtype"] == "bf16" and w.info["page_size"] == 8
    assert len(w.indptr) == 5 and len(w.seq_lens) == 4
    batch = tmp_path / "b.json"
    batch.write_text(json.dumps({"num_qo_heads": 8, "num_kv_heads": 2, "head_dim": 128,
                                 "dtype": "fp16", "page_size": 16, "kv_layout": "HND",
                                 "requests": [{"pages": [0, 1], "seq_len": 20},
                                              {"pages": [0, 2], "seq_len": 30}]}))
    b = C.Workload.from_batch(lib, str(batch))
    assert b.info["kv_layout"].lower() == "hnd" and b.indices == [0, 1, 0, 2]
    with pytest.raises(C.CanopyError):
        C.Workload.from_batch(lib, str(tmp_path / "missing.json"))
    with pytest.raises(C.CanopyError):
        C.Workload.from_tree(lib, "1,4|8,8", "no-such-model")
    p = C.Plan(lib, b, {"prefix_blind": True, "waves": 2}, device={"arch": 80, "num_sms": 108})
    info = p.info()
    assert str(info["arch"]) == "80" and info["num_sms"] == 108 and info["options"]["waves"] == 2
    assert "items" in p.to_json()
    with pytest.raises(C.CanopyError):
        p.run(1, 2, 3, 4)  # a host plan cannot run
    pw = C.Prewarm(lib, str(tmp_path / "cache"))
    pw.add(p)
    s = pw.compile(2)
    assert s["failures"] == 0 and s["kernels"] == len(info["kernels"]) >= 1
    assert s["compiled"] + s["disk_hits"] == s["kernels"]
    again = C.Prewarm(lib, str(tmp_path / "cache"))
    again.add(p)
    assert again.compile(1)["compiled"] == 0  # all from disk now
    for h in (p, pw, again, w, b):
        h.close()


def test_selftest_cpu_end_to_end(tmp_path):
    """The whole harness (supervisor, worker, methods, JSON, table) on the CPU
    with CPU stand-ins (selftest_cpu.py); needs torch, skipped without it."""
    pytest.importorskip("torch")
    _capi()  # the selftest builds its workloads through the C API
    import subprocess
    out = tmp_path / "run.json"
    r = subprocess.run([sys.executable, os.path.join(HERE, "selftest_cpu.py"), "--tree",
                        "2,8|40,17", "--iters", "30", "--warmup", "1", "--no-launch-count",
                        "--tuning-db", "stand-in.json", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    methods = res["workloads"][0]["methods"]
    assert set(methods) == set(L.ALL_METHODS)  # canopy-tuned too: a database was given
    assert all(m["status"] == "PASS" for m in methods.values()), methods
    assert res["workloads"][0]["fi-best"] and "vs fi" in r.stdout


def test_tuned_method_needs_a_database():
    import run_bench as R
    assert L.CANOPY_TUNED not in R.parse_args([]).methods.split(",")
    assert L.CANOPY_TUNED in R.parse_args(["--tuning-db", "db.json"]).methods.split(",")
    with pytest.raises(SystemExit):
        R.parse_args(["--methods", "canopy,canopy-tuned"])


def test_failed_graph_replay_is_not_reported_as_a_time():
    row = fake_row("w", 10.0, {"canopy": 20.0, "fi-decode": 40.0})
    row["methods"]["canopy"].update(graph_us=15.0, graph_status="FAIL")
    L.derive_row(row)
    assert row["graph_speedup_vs_fi_best"] is None and "graph_frac_floor" not in row["methods"]["canopy"]
    assert L.table_rows([row])[0][3] == "FAIL"


# ---- tuning_decisions.py: the database's pick against the best alternative ----


def _decision_report():
    batch = lambda name, cls, alts, builtin: {  # noqa: E731
        "workload": name, "shape_class": cls, "alternatives": alts, "builtin_defaults_us": builtin}
    return {
        "format": "canopy-tune-decisions/1", "device": "test GPU", "synthetic": False,
        "min_gain": 0.03,
        # canopy-tune's winners (its rule: tools/tune_winners.hpp); c4 has none.
        "winners": {"c1": {"alternative": "wgmma", "default_us": 100.0, "measured_us": 90.0},
                    "c2": {"alternative": "defaults", "default_us": 100.0, "measured_us": 100.0},
                    "c3": {"alternative": "waves-2", "default_us": 100.0, "measured_us": 92.5}},
        "batches": [
            batch("a", "c1", {"defaults": 100.0, "wgmma": 90.0, "no-split": 95.0}, 110.0),
            batch("b", "c2", {"defaults": 100.0, "no-split": 98.0}, 100.0),
            batch("c", "c3", {"defaults": 100.0, "waves-2": 80.0, "fused": 10.0}, 100.0),
            batch("d", "c3", {"defaults": 100.0, "waves-2": 105.0}, 90.0),
            batch("e", "c4", {"defaults": 50.0, "builtin-defaults": 40.0}, 40.0),
        ],
    }


def test_tuning_decisions_use_canopy_tunes_recorded_winners():
    import tuning_decisions as D

    report = _decision_report()
    assert D.picks(report) == {"c1": "wgmma", "c2": "defaults", "c3": "waves-2"}
    # A report without the winners' names (canopy-tune before 3bf9841) is refused.
    old = _decision_report()
    del old["winners"]["c1"]["alternative"]
    with pytest.raises(ValueError, match="rerun canopy-tune"):
        D.picks(old)
    rows = {r["workload"]: r for r in D.rows(report)}
    assert rows["a"]["pick_us"] == 90.0 and rows["a"]["pick_over_best"] == 1.0
    assert rows["a"]["pick_over_builtin"] == pytest.approx(90 / 110)
    assert rows["b"]["pick"] == "defaults" and rows["b"]["pick_over_best"] == pytest.approx(100 / 98)
    assert rows["d"]["pick"] == "waves-2" and rows["d"]["best"] == "defaults"
    text = D.markdown(report, {"workloads": [
        {"workload": "a", "methods": {"canopy": {"median_us": 91.0},
                                      "canopy-untuned": {"median_us": 109.0}}}]})
    assert rows["e"]["pick"] == "defaults" and rows["e"]["best"] == "builtin-defaults"
    assert "pick within 5% of the best on 3 of 5" in text
    assert "| 91.0 | 109.0 |" in text and "with / without the database" in text
