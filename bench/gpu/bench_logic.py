"""The GPU benchmark's host logic, in plain Python (no torch, no numpy), so that
it is tested on machines without a GPU (test_bench_logic.py):

- block tables -> page trie -> FlashInfer cascade levels (three variants);
- floors (unique bytes, FLOPs) against the ceilings measured in the same run;
- per-workload derived numbers, geometric means, the text and markdown tables;
- Nsight Compute CSV parsing and its merge into the results JSON.

Workloads (the suite, tree strings, batch files) are not built here: the
library builds them (workloads/workload.cpp) and the C API hands over their
spec and block tables (canopy_capi.py); this file starts from those tables.

docs/benchmark.md explains the method.
"""
import csv
import io
import json
import math
import os
import statistics

# ---------------------------------------------------------------------------
# Names

CANOPY, BLIND = "canopy", "canopy-blind"
# Issue 14's planner (opt-in until validated on the GPU): the Hopper kernels
# (wgmma, where the GPU has them) with the merge fused into persistent
# launches; and the ablation of each piece against it: the v1 tensor-core
# kernels (mma.sync) alone on the same fused launches, and the Hopper
# kernels with v1's launches (one block per item, a merge kernel).
CANOPY_V2, CANOPY_V2_MMA, CANOPY_V2_UNFUSED = "canopy-v2", "canopy-v2-mma", "canopy-v2-unfused"
# The defaults planned with a tuning database (docs/tuning.md; run_bench.py
# --tuning-db): its fitted coefficients and recorded winners, against
# "canopy", whose runtime finds no database on a machine without one.
CANOPY_TUNED = "canopy-tuned"
# The built-in default coefficients (tuning database "off"): "canopy" uses
# the database Canopy finds for the GPU (shipped ones included), this the
# planner as it is without one.
CANOPY_UNTUNED = "canopy-untuned"
MMA_CONFIGS = {64: ["mma_q64_kv64_w4_s3", "mma_q128_kv32_w4_s3"],
               128: ["mma_q64_kv64_w4_s3", "mma_q128_kv32_w4_s3"],
               256: ["mma_q64_kv64_w4_s2"]}
WGMMA_CONFIGS = {64: ["wgmma_q128_kv128_w12_s2", "wgmma_q64_kv128_w8_s2"],
                 128: ["wgmma_q128_kv128_w12_s2", "wgmma_q64_kv128_w8_s2"],
                 256: ["wgmma_q64_kv64_w8_s2"]}
FI_DECODE, FI_DECODE_TC = "fi-decode", "fi-decode-tc"
CASCADE_VARIANTS = {  # method name -> how its levels are cut (cascade_cuts)
    "fi-cascade-2level": "shared",  # everything a request shares with others / its private rest
    "fi-cascade-root": "root",  # the root node (shared by its whole tree) / the rest
    "fi-cascade-depth": "depth",  # one level per node depth of the prefix tree
}
FI_CASCADE, FI_BEST = "fi-cascade", "fi-best"  # derived: best correct variant / method
# BatchAttention (persistent kernel) and xqa (TensorRT-LLM's decode kernel):
# fi_extra_methods.py; a shape they cannot take is recorded as UNSUPPORTED.
FI_BATCH_ATTENTION, FI_XQA = "fi-batch-attention", "fi-xqa"
FI_EXTRA = [FI_BATCH_ATTENTION, FI_XQA]
UNSUPPORTED = "UNSUPPORTED"
ALL_METHODS = ([CANOPY, CANOPY_V2, CANOPY_V2_MMA, CANOPY_V2_UNFUSED, CANOPY_TUNED, CANOPY_UNTUNED,
                BLIND, FI_DECODE,
                FI_DECODE_TC] + list(CASCADE_VARIANTS) + FI_EXTRA)
FI_METHODS = [FI_DECODE, FI_DECODE_TC] + list(CASCADE_VARIANTS) + FI_EXTRA
CANOPY_METHODS = [CANOPY, CANOPY_V2, CANOPY_V2_MMA, CANOPY_V2_UNFUSED, CANOPY_TUNED,
                  CANOPY_UNTUNED, BLIND]
# Extra Canopy methods for sweeps: name -> planner options, from the environment
# (inherited by worker processes), e.g.
#   CANOPY_BENCH_VARIANTS='{"canopy-w8": {"candidates": ["mma_q128_kv64_w8_s3"]}}'
CANOPY_VARIANTS = json.loads(os.environ.get("CANOPY_BENCH_VARIANTS", "") or "{}")
CANOPY_METHODS += [n for n in CANOPY_VARIANTS if n not in CANOPY_METHODS]
ALL_METHODS += [n for n in CANOPY_VARIANTS if n not in ALL_METHODS]


def canopy_options(name, head_dim=128):
    """The planner options of a Canopy method (for a spec of `head_dim`)."""
    options = {"prefix_blind": name == BLIND}
    if name in (CANOPY_V2, CANOPY_V2_UNFUSED):
        options["candidates"] = MMA_CONFIGS[head_dim] + WGMMA_CONFIGS[head_dim]
    if name == CANOPY_V2_MMA:
        options["candidates"] = MMA_CONFIGS[head_dim]
    if name in (CANOPY_V2, CANOPY_V2_MMA):
        options["fuse_merge"] = True
    options.update(CANOPY_VARIANTS.get(name, {}))
    return options

DTYPE_BYTES = {"fp16": 2, "f16": 2, "bf16": 2, "fp32": 4, "f32": 4}
# Relative L2 error (over all outputs) a method must stay under, by output dtype.
THRESHOLDS = {"fp16": 5e-3, "f16": 5e-3, "bf16": 2e-2, "fp32": 1e-4, "f32": 1e-4}


def dtype_bytes(name):
    return DTYPE_BYTES[name.lower()]


def threshold(dtype):
    return THRESHOLDS[dtype.lower()]


# ---------------------------------------------------------------------------
# Block tables and the page trie


class Tables:
    """Block tables as Canopy's BlockTables hold them (CSR over requests).

    Request r's first ceil(seq_lens[r] / page_size) pages are used; the rest of
    its row is ignored, as Canopy and FlashInfer's last_page_len imply.
    """

    def __init__(self, indptr, indices, seq_lens, page_size, num_pages=None):
        self.indptr, self.indices, self.seq_lens = list(indptr), list(indices), list(seq_lens)
        self.page_size = int(page_size)
        self.num_pages = num_pages if num_pages is not None else (max(self.indices, default=-1) + 1)
        self.batch = len(self.seq_lens)
        if len(self.indptr) != self.batch + 1 or self.indptr[0] != 0:
            raise ValueError(f"indptr has {len(self.indptr)} entries for {self.batch} requests")
        for r in range(self.batch):
            n, have = self.num_used(r), self.indptr[r + 1] - self.indptr[r]
            if self.seq_lens[r] < 1 or have < n:
                raise ValueError(f"request {r}: seq_len {self.seq_lens[r]} needs {n} pages, "
                                 f"its block table has {have}")

    def num_used(self, r):
        return -(-self.seq_lens[r] // self.page_size)

    def pages(self, r):
        """The page ids request r uses, in order."""
        b = self.indptr[r]
        return self.indices[b:b + self.num_used(r)]

    def last_page_len(self, r):
        return self.seq_lens[r] - (self.num_used(r) - 1) * self.page_size

    def keys(self, r):
        """(page, tokens used in it) per used page: two requests share a page's
        KV only if they use the same tokens of it."""
        pages, p = self.pages(r), self.page_size
        last = self.last_page_len(r)
        return [(pg, p if i + 1 < len(pages) else last) for i, pg in enumerate(pages)]

    def flat(self):
        """Trimmed CSR (only used pages) and last-page lengths, as FlashInfer wants."""
        indptr, indices, last = [0], [], []
        for r in range(self.batch):
            indices.extend(self.pages(r))
            indptr.append(len(indices))
            last.append(self.last_page_len(r))
        return indptr, indices, last


class PageTrie:
    """A trie over requests' (page, used tokens) sequences. Node 0 is the root
    (depth 0, no page); path[r][d - 1] is request r's node at depth d pages."""

    def __init__(self, tables):
        self.tables = tables
        self.children = [{}]
        self.count = [0]  # requests whose path passes through (or ends at) the node
        self.depth = [0]
        self.path = []
        for r in range(tables.batch):
            node, path = 0, []
            self.count[0] += 1
            for key in tables.keys(r):
                nxt = self.children[node].get(key)
                if nxt is None:
                    nxt = len(self.count)
                    self.children[node][key] = nxt
                    self.children.append({})
                    self.count.append(0)
                    self.depth.append(self.depth[node] + 1)
                self.count[nxt] += 1
                node = nxt
                path.append(node)
            self.path.append(path)

    def node_at(self, r, depth):
        return 0 if depth == 0 else self.path[r][depth - 1]


def sorted_order(tables):
    """Requests sorted by their page sequence: every trie node's requests are
    then contiguous, as the cascade's query groups must be."""
    keys = [tables.keys(r) for r in range(tables.batch)]
    return sorted(range(tables.batch), key=lambda r: (keys[r], r))


class NotRepresentable(ValueError):
    """The variant cannot cover every request with non-empty segments."""


def _natural_ends(trie, r, variant):
    """Where request r's segments end (page depths, last == its page count),
    before clamping, for one cascade variant."""
    path, n = trie.path[r], len(trie.path[r])
    counts = [trie.count[node] for node in path]
    if variant == "shared":  # deepest node shared with another request
        k = max((d + 1 for d in range(n) if counts[d] >= 2), default=0)
        return [k, n] if 0 < k < n else ([n] if k == 0 else [n, n])
    if variant == "root":  # the first radix node: the chain before anyone branches off or ends
        if counts[0] < 2:
            return [n]
        k = 1
        while k < n and counts[k] == counts[0]:
            k += 1
        return [k, n] if k < n else [n, n]
    if variant == "depth":  # one segment per radix node (the set of requests changes)
        ends = [d + 1 for d in range(n - 1) if counts[d] != counts[d + 1]]
        return ends + [n]
    raise ValueError(f"unknown cascade variant '{variant}'")


def cascade_cuts(tables, trie, variant):
    """Per request, the page depths where its level segments end (strictly
    increasing, last == its page count); all requests get the same number of
    levels. Raises NotRepresentable when a request has too few pages."""
    natural = [_natural_ends(trie, r, variant) for r in range(tables.batch)]
    levels = max(len(e) for e in natural) if natural else 1
    cuts = []
    for r, ends in enumerate(natural):
        n = len(trie.path[r])
        if levels == 1:
            cuts.append([n])
            continue
        if n < levels:
            raise NotRepresentable(f"request {r} has {n} page(s), fewer than the {levels} levels")
        if variant in ("shared", "root"):
            k = ends[0] if len(ends) == 2 else 0
            k = min(max(k, 1), n - 1)  # nothing shared: one private page up; all shared: one down
            cuts.append([k, n])
            continue
        inner = sorted(set(e for e in ends[:-1] if 0 < e < n))
        cand = n - 1  # too few segments: split the private tail (then earlier ones) page-wise
        while len(inner) < levels - 1:
            while cand in inner:
                cand -= 1
            inner.append(cand)
            inner.sort()
        cuts.append(inner + [n])
    return cuts


def build_cascade_levels(tables, variant, trie=None):
    """FlashInfer MultiLevelCascadeAttentionWrapper inputs for one variant.

    Returns {"order": sorted request ids (query i of the sorted batch is request
    order[i]), "num_levels", "levels": [{"qo_indptr", "kv_indptr", "kv_indices",
    "kv_last_page_len", "groups", "max_group"}...]} with every level covering
    every query in contiguous, non-empty groups of identical KV.
    """
    trie = trie or PageTrie(tables)
    cuts = cascade_cuts(tables, trie, variant)
    order = sorted_order(tables)
    num_levels = len(cuts[0]) if cuts else 1
    levels = []
    for lvl in range(num_levels):
        qo, kv_indptr, kv_indices, last, seen = [0], [0], [], [], set()
        prev_key, max_group = None, 0
        for i, r in enumerate(order):
            begin = 0 if lvl == 0 else cuts[r][lvl - 1]
            end = cuts[r][lvl]
            if end <= begin:
                raise AssertionError(f"empty segment: request {r} level {lvl}")
            key = (begin, trie.node_at(r, end))
            if key != prev_key:  # a new group
                if key in seen:
                    raise AssertionError(f"level {lvl}: group {key} is not contiguous")
                seen.add(key)
                if prev_key is not None:
                    qo.append(i)
                seg = tables.keys(r)[begin:end]
                kv_indices.extend(pg for pg, _ in seg)
                kv_indptr.append(len(kv_indices))
                used = seg[-1][1]
                if not 1 <= used <= tables.page_size:
                    raise AssertionError(f"last page length {used}")
                last.append(used)
                prev_key = key
        qo.append(len(order))
        for g in range(len(qo) - 1):
            max_group = max(max_group, qo[g + 1] - qo[g])
        levels.append({"qo_indptr": qo, "kv_indptr": kv_indptr, "kv_indices": kv_indices,
                       "kv_last_page_len": last, "groups": len(last), "max_group": max_group})
    return {"order": order, "num_levels": num_levels, "levels": levels, "variant": variant}


def check_levels_cover(tables, plan):
    """Every request's pages are exactly the concatenation of its level
    segments (raises AssertionError otherwise). For tests and self-checks."""
    order = plan["order"]
    segs = {r: [] for r in order}
    for lv in plan["levels"]:
        qo, ip, idx, last = lv["qo_indptr"], lv["kv_indptr"], lv["kv_indices"], lv["kv_last_page_len"]
        assert qo[0] == 0 and qo[-1] == len(order), "level does not cover every query"
        assert len(qo) == len(ip) == len(last) + 1
        for g in range(len(qo) - 1):
            assert qo[g + 1] > qo[g], "empty query group"
            assert ip[g + 1] > ip[g], "empty KV group"
            for i in range(qo[g], qo[g + 1]):
                segs[order[i]].append((idx[ip[g]:ip[g + 1]], last[g]))
    p = tables.page_size
    for r in order:
        pages, tokens = [], 0
        for s, (pg, lst) in enumerate(segs[r]):
            pages.extend(pg)
            tokens += (len(pg) - 1) * p + lst
            if s + 1 < len(segs[r]):
                assert lst == p, f"request {r}: a non-final segment ends in a partial page"
        assert pages == tables.pages(r), f"request {r}: levels give pages {pages}"
        assert tokens == tables.seq_lens[r], f"request {r}: levels give {tokens} tokens"


# ---------------------------------------------------------------------------
# Floors


def workload_bytes(tables, spec):
    """Bytes and FLOPs of one decode step.

    unique_kv: each distinct page's used tokens (the most any request uses) x
    H_kv x D x 2 (K and V) x dtype bytes; total_kv: the same per request, as a
    prefix-blind kernel reads it; q and out once each; flops = 4 x sum over
    requests of seq_len x H_qo x D (QK^T and PV, 2 FLOPs per multiply-add).
    """
    hkv, hqo, d = spec["num_kv_heads"], spec["num_qo_heads"], spec["head_dim"]
    kvb = dtype_bytes(spec["kv_dtype"])
    per_token = hkv * d * 2 * kvb
    used = {}
    for r in range(tables.batch):
        for pg, u in tables.keys(r):
            used[pg] = max(used.get(pg, 0), u)
    unique_kv = sum(used.values()) * per_token
    total_kv = sum(tables.seq_lens) * per_token
    q_bytes = tables.batch * hqo * d * dtype_bytes(spec["q_dtype"])
    out_bytes = tables.batch * hqo * d * dtype_bytes(spec["o_dtype"])
    flops = 4 * sum(tables.seq_lens) * hqo * d
    return {"unique_kv_bytes": unique_kv, "total_kv_bytes": total_kv, "q_bytes": q_bytes,
            "out_bytes": out_bytes, "unique_bytes": unique_kv + q_bytes + out_bytes,
            "total_bytes": total_kv + q_bytes + out_bytes, "flops": flops,
            "distinct_pages": len(used), "sharing": unique_kv < total_kv}


def floor_us(unique_bytes, flops, read_bytes_per_s, matrix_flops_per_s):
    """(floor in us, "memory" | "math"): the larger of the two times."""
    t_mem = unique_bytes / read_bytes_per_s * 1e6 if read_bytes_per_s else float("nan")
    t_math = flops / matrix_flops_per_s * 1e6 if matrix_flops_per_s else float("nan")
    if math.isnan(t_mem) and math.isnan(t_math):
        return float("nan"), "unknown"
    if math.isnan(t_math) or (not math.isnan(t_mem) and t_mem >= t_math):
        return t_mem, "memory"
    return t_math, "math"


# ---------------------------------------------------------------------------
# Results: derived numbers and summaries


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def passed(m):
    return bool(m) and m.get("status") == "PASS" and _finite(m.get("median_us"))


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def graph_us(m):
    """A passing method's graph-replay time, unless its replayed output failed."""
    if not passed(m) or m.get("graph_status") == "FAIL" or not _finite(m.get("graph_us")):
        return None
    return m["graph_us"]


def derive_row(row):
    """Fills in per-method fraction of floor and effective bandwidth, the best
    cascade variant (fi-cascade), FlashInfer's best method (fi-best), and
    Canopy's speedup over it. Idempotent."""
    methods = row.setdefault("methods", {})
    floor, ub = row.get("floor_us"), row.get("bytes", {}).get("unique_bytes")
    for m in methods.values():
        t = m.get("median_us")
        if _finite(t) and _finite(floor):
            m["frac_floor"] = floor / t
        if _finite(t) and ub:
            m["eff_tbs"] = ub / (t * 1e-6) / 1e12
        if graph_us(m) and _finite(floor):
            m["graph_frac_floor"] = floor / m["graph_us"]

    def best(names):
        ok = [(methods[n]["median_us"], n) for n in names if passed(methods.get(n))]
        return min(ok) if ok else None

    b = best(CASCADE_VARIANTS)
    row[FI_CASCADE] = ({"method": b[1], "variant": b[1].replace("fi-cascade-", ""),
                        "median_us": b[0], "levels": methods[b[1]].get("levels")} if b else None)
    b = best(FI_METHODS)
    row[FI_BEST] = {"method": b[1], "median_us": b[0]} if b else None
    for key in (FI_CASCADE, FI_BEST):
        if row[key] and _finite(floor):
            row[key]["frac_floor"] = floor / row[key]["median_us"]
    c = methods.get(CANOPY)
    row["speedup_vs_fi_best"] = (row[FI_BEST]["median_us"] / c["median_us"]
                                 if passed(c) and row[FI_BEST] else None)
    c_graph = graph_us(c) if c else None
    row["graph_speedup_vs_fi_best"] = (row[FI_BEST]["median_us"] / c_graph
                                       if c_graph and row[FI_BEST] else None)
    return row


def summarize(rows):
    """Geometric means of fraction of floor per method (passing runs only), over
    all workloads and over those with sharing; and of Canopy's speedup."""
    for row in rows:
        derive_row(row)
    names = ALL_METHODS + [FI_CASCADE, FI_BEST]
    out = {"workloads": len(rows),
           "sharing_workloads": sum(1 for r in rows if r.get("bytes", {}).get("sharing"))}
    for scope, keep in (("all", lambda r: True),
                        ("sharing", lambda r: r.get("bytes", {}).get("sharing"))):
        sel = [r for r in rows if keep(r)]
        per = {}
        for n in names:
            fr = [_frac(r, n) for r in sel]
            fr = [x for x in fr if x is not None]
            per[n] = {"geomean_frac_floor": geomean(fr), "n": len(fr)}
        gfr = [r["methods"][CANOPY].get("graph_frac_floor") for r in sel
               if graph_us(r.get("methods", {}).get(CANOPY))]
        per["canopy-graph"] = {"geomean_frac_floor": geomean(gfr),
                               "n": len([x for x in gfr if x])}
        sp = [r.get("speedup_vs_fi_best") for r in sel]
        out[scope] = {"methods": per,
                      "geomean_speedup_vs_fi_best": geomean(sp),
                      "n_speedup": len([x for x in sp if x]),
                      "geomean_graph_speedup_vs_fi_best":
                          geomean([r.get("graph_speedup_vs_fi_best") for r in sel])}
    return out


def _frac(row, name):
    if name in (FI_CASCADE, FI_BEST):
        v = row.get(name)
        return v.get("frac_floor") if v else None
    m = row.get("methods", {}).get(name)
    return m.get("frac_floor") if passed(m) else None


# ---------------------------------------------------------------------------
# Tables


def _cell(m, with_frac=True):
    if not m:
        return "-"
    st = m.get("status")
    if st == "FAIL":
        return "FAIL"
    if st == UNSUPPORTED:
        return "n/a"
    if st not in ("PASS",):
        return "ERR" if st == "ERROR" else (st or "-")
    t = m.get("median_us")
    if not _finite(t):
        return "-"
    f = m.get("frac_floor")
    return f"{t:.1f} ({f:.3f})" if with_frac and f is not None else f"{t:.1f}"


def _fmt(x, spec=".1f"):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


TABLE_COLUMNS = ["workload", "floor us", "canopy", "graph", "v2", "v2-mma", "v2-unfused", "blind",
                 "fi-decode", "fi-decode-tc", "fi-cascade", "fi-batch-attn", "fi-xqa", "fi-best",
                 "vs fi"]


def table_rows(rows):
    """One list of cell strings per workload (TABLE_COLUMNS)."""
    out = []
    for r in rows:
        derive_row(r)
        m = r.get("methods", {})
        c = m.get(CANOPY, {})
        graph = ("FAIL" if c.get("graph_status") == "FAIL" else
                 _fmt(graph_us(c)) if graph_us(c) else "-")
        casc = r.get(FI_CASCADE)
        casc_cell = (f"{casc['median_us']:.1f} ({casc['frac_floor']:.3f}) "
                     f"{casc['variant']}/{casc.get('levels') or '?'}L" if casc else
                     ("FAIL" if any(m.get(n, {}).get("status") == "FAIL" for n in CASCADE_VARIANTS)
                      else "-"))
        best = r.get(FI_BEST)
        best_cell = (f"{best['median_us']:.1f} ({best['frac_floor']:.3f})"
                     if best and best.get("frac_floor") is not None else
                     f"{best['median_us']:.1f}" if best else "-")
        sp = r.get("speedup_vs_fi_best")
        floor = r.get("floor_us")
        floor_cell = (f"{floor:.1f}{'m' if r.get('floor_kind') == 'math' else ''}"
                      if _finite(floor) else "-")
        out.append([r.get("workload", "?"), floor_cell, _cell(c), graph, _cell(m.get(CANOPY_V2)),
                    _cell(m.get(CANOPY_V2_MMA)), _cell(m.get(CANOPY_V2_UNFUSED)),
                    _cell(m.get(BLIND)),
                    _cell(m.get(FI_DECODE)), _cell(m.get(FI_DECODE_TC)), casc_cell,
                    _cell(m.get(FI_BATCH_ATTENTION)), _cell(m.get(FI_XQA)), best_cell,
                    f"{sp:.2f}x" if sp else "-"])
    return out


def summary_lines(summary):
    lines = []
    for scope in ("all", "sharing"):
        s = summary.get(scope)
        if not s:
            continue
        n = summary["workloads"] if scope == "all" else summary["sharing_workloads"]
        parts = []
        for name in [CANOPY, "canopy-graph", CANOPY_TUNED, CANOPY_UNTUNED, CANOPY_V2, CANOPY_V2_MMA,
                     CANOPY_V2_UNFUSED, BLIND, FI_DECODE,
                     FI_DECODE_TC, FI_CASCADE, FI_BATCH_ATTENTION, FI_XQA, FI_BEST]:
            g = s["methods"].get(name, {})
            if g.get("geomean_frac_floor"):
                parts.append(f"{name} {g['geomean_frac_floor']:.3f} (n={g['n']})")
        sp = s.get("geomean_speedup_vs_fi_best")
        gsp = s.get("geomean_graph_speedup_vs_fi_best")
        lines.append(f"geomean fraction of floor, {scope} ({n} workloads): " + ", ".join(parts))
        lines.append(f"geomean canopy speedup over fi-best, {scope}: "
                     f"{_fmt(sp, '.2f')}x (n={s.get('n_speedup', 0)}), graph replay "
                     f"{_fmt(gsp, '.2f')}x")
    return lines


def text_table(rows, summary=None):
    body = [TABLE_COLUMNS] + table_rows(rows)
    widths = [max(len(str(line[i])) for line in body) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths))) for line in body]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("cells: median us (fraction of floor); floor 'm' = math-bound; graph = Canopy "
                 "CUDA-graph replay us; v2 = the Hopper kernels with the merge fused into "
                 "persistent launches (issue 14); v2-mma = the same launches on the mma.sync "
                 "kernels alone; v2-unfused = the Hopper kernels with v1's launches; vs fi = "
                 "fi-best us / canopy us; FAIL = wrong output, "
                 "ERR = did not run (see JSON), n/a = a shape the method cannot take "
                 "(JSON note)")
    if summary:
        lines += summary_lines(summary)
    return "\n".join(lines)


def markdown(results):
    """The full report for docs/performance.md: device, ceilings, the main
    table, per-method details, summaries and (if merged) DRAM bytes."""
    env, ceil = results.get("env", {}), results.get("ceilings", {})
    rows = results.get("workloads", [])
    summary = results.get("summary") or summarize(rows)
    out = ["## Device and versions", ""]
    for k in ("device", "driver", "torch", "cuda", "flashinfer", "canopy_capi", "date",
              "command"):
        if env.get(k) is not None:
            out.append(f"- {k}: {env[k]}")
    if ceil:
        out.append(f"- streaming read: {_fmt(ceil.get('read_bw_tbs'), '.2f')} TB/s "
                   f"({ceil.get('read_bw_method', '?')}); bf16 matrix rate: "
                   f"{_fmt(ceil.get('matrix_tflops'), '.0f')} TFLOP/s "
                   f"({ceil.get('matrix_method', '?')})")
    out += ["", "## Time per workload (median us, fraction of floor)", ""]
    out.append("| " + " | ".join(TABLE_COLUMNS) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(TABLE_COLUMNS) - 1)) + "|")
    for cells in table_rows(rows):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out += ["", *[f"{line}  " for line in summary_lines(summary)], ""]
    out += ["## Every method", "",
            "| workload | method | status | median us | of floor | TB/s | host us | launches "
            "| rel-L2 | graph us | DRAM / unique | note |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        for name in ALL_METHODS:
            m = r.get("methods", {}).get(name)
            if not m:
                continue
            note = m.get("error") or m.get("note") or ""
            if m.get("levels"):
                note = f"{m['levels']} levels " + note
            note = note.replace("|", "/").replace("\n", " ")[:120]
            launches = m.get("launches")
            if launches is None:
                launches = m.get("launches_profiled")
            out.append("| " + " | ".join([
                r.get("workload", "?"), name, m.get("status", "-"), _fmt(m.get("median_us")),
                _fmt(m.get("frac_floor"), ".3f"), _fmt(m.get("eff_tbs"), ".2f"),
                _fmt(m.get("host_us")), str(launches if launches is not None else "-"),
                _fmt(m.get("rel_l2"), ".1e"), _fmt(m.get("graph_us")),
                _fmt(m.get("dram_ratio"), ".2f"), note]) + " |")
    ncu_rows = [r for r in rows if any(m.get("dram_bytes") for m in r.get("methods", {}).values())]
    if ncu_rows:
        out += ["", "## DRAM bytes read (Nsight Compute, dram__bytes_read.sum)", "",
                "| workload | unique MB | canopy MB | canopy / unique | blind MB | blind / canopy |",
                "|---|---:|---:|---:|---:|---:|"]
        for r in ncu_rows:
            c, b = r["methods"].get(CANOPY, {}), r["methods"].get(BLIND, {})
            ub = r.get("bytes", {}).get("unique_bytes")
            out.append("| " + " | ".join([
                r["workload"], _fmt(ub / 1e6 if ub else None),
                _fmt(c.get("dram_bytes", 0) / 1e6 if c.get("dram_bytes") else None),
                _fmt(c.get("dram_ratio"), ".2f"),
                _fmt(b.get("dram_bytes", 0) / 1e6 if b.get("dram_bytes") else None),
                _fmt(c.get("dram_reduction_vs_blind"), ".2f")]) + " |")
    errors = results.get("errors") or []
    if errors:
        out += ["", "## Errors", ""] + [f"- {e}" for e in errors[:50]]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Nsight Compute


def _to_bytes(value, unit):
    try:
        v = float(str(value).replace(",", ""))
    except ValueError:
        return float("nan")  # "n/a" and the like
    u = (unit or "byte").strip().lower()
    scale = {"byte": 1, "bytes": 1, "b": 1, "kbyte": 1e3, "kb": 1e3, "mbyte": 1e6, "mb": 1e6,
             "gbyte": 1e9, "gb": 1e9, "tbyte": 1e12, "kibyte": 1024, "mibyte": 1024**2,
             "gibyte": 1024**3}
    if u not in scale:
        raise ValueError(f"unknown unit '{unit}'")
    return v * scale[u]


def parse_ncu_csv(text, metric="dram__bytes_read.sum"):
    """Kernels of an `ncu --csv` report, in launch (ID) order:
    [{"id", "name", "bytes"}]. Lines that are not CSV (==PROF== ...) are skipped."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("==")]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith('"ID"')), None)
    if start is None:
        raise ValueError("no ncu CSV header (a line starting with \"ID\") found")
    reader = csv.DictReader(io.StringIO("\n".join(lines[start:])))
    kernels = {}
    for row in reader:
        if row.get("Metric Name") != metric:
            continue
        try:
            kid = int(row["ID"])
        except (TypeError, ValueError):
            continue
        kernels[kid] = {"id": kid, "name": row.get("Kernel Name", ""),
                        "bytes": _to_bytes(row.get("Metric Value", "nan"), row.get("Metric Unit"))}
    return [kernels[k] for k in sorted(kernels)]


def assign_ncu(manifest, kernels):
    """Splits ncu's kernels over the manifest's entries, in order.

    Each entry ({"workload", "method", "kernels": expected count or None,
    "marker": substring of the marker kernel's name or None}) was profiled as
    one range: the marker kernel (if any), then the method's kernels. Returns
    one dict per entry with dram_bytes, kernel names and problems found (count
    mismatch, Canopy kernels whose names do not start with canopy_).
    """
    results, i = [], 0
    markers = [e.get("marker") for e in manifest if e.get("marker")]
    marker = markers[0] if markers else None
    for j, e in enumerate(manifest):
        problems, names, total = [], [], 0.0
        if marker:
            if i >= len(kernels) or marker not in kernels[i]["name"]:
                problems.append(f"expected the marker kernel at position {i}")
                # resynchronise on the next marker
                while i < len(kernels) and marker not in kernels[i]["name"]:
                    i += 1
            i += 1 if i < len(kernels) else 0
            seg = []
            while i < len(kernels) and marker not in kernels[i]["name"]:
                seg.append(kernels[i])
                i += 1
        else:
            n = e.get("kernels")
            if n is None:
                raise ValueError(f"manifest entry {j} has neither a kernel count nor a marker")
            seg = kernels[i:i + n]
            i += n
        names = [k["name"] for k in seg]
        total = sum(k["bytes"] for k in seg)
        if any(math.isnan(k["bytes"]) for k in seg):
            problems.append("some kernels have no value")
            total = sum(k["bytes"] for k in seg if not math.isnan(k["bytes"]))
        if e.get("kernels") is not None and len(seg) != e["kernels"]:
            problems.append(f"{len(seg)} kernels profiled, plan says {e['kernels']}")
        if e.get("method") in CANOPY_METHODS:
            bad = [n for n in names if not n.startswith("canopy_")]
            if bad:
                problems.append(f"kernels not named canopy_*: {bad[:3]}")
        results.append({"workload": e["workload"], "method": e["method"], "dram_bytes": total,
                        "kernels": len(seg), "names": names, "problems": problems})
    if i < len(kernels):
        results.append({"workload": None, "method": None, "dram_bytes": 0.0,
                        "kernels": len(kernels) - i, "names": [],
                        "problems": [f"{len(kernels) - i} kernels left over after the manifest"]})
    return results


def merge_ncu(results, assigned):
    """Adds dram_bytes, dram_ratio (to unique bytes) and, for Canopy,
    dram_reduction_vs_blind (blind bytes / canopy bytes) to the results JSON."""
    by_name = {r.get("workload"): r for r in results.get("workloads", [])}
    problems = []
    for a in assigned:
        if a["problems"]:
            problems.append(f"{a['workload']}/{a['method']}: " + "; ".join(a["problems"]))
        row = by_name.get(a["workload"])
        if row is None:
            if a["workload"] is not None:
                problems.append(f"{a['workload']}: not in the results JSON")
            continue
        m = row.setdefault("methods", {}).setdefault(a["method"], {"status": "NCU-ONLY"})
        m["dram_bytes"] = a["dram_bytes"]
        m["dram_kernels"] = a["kernels"]
        if a["problems"]:
            m["dram_problems"] = a["problems"]
        ub = row.get("bytes", {}).get("unique_bytes")
        if ub:
            m["dram_ratio"] = a["dram_bytes"] / ub
    for row in results.get("workloads", []):
        c, b = row.get("methods", {}).get(CANOPY), row.get("methods", {}).get(BLIND)
        if c and b and c.get("dram_bytes") and b.get("dram_bytes"):
            c["dram_reduction_vs_blind"] = b["dram_bytes"] / c["dram_bytes"]
    results.setdefault("ncu", {})["problems"] = problems
    return results
