"""Float64 NumPy reference for the tests: plain softmax attention over each
request's KV, gathered page by page from its block table. Knows nothing about
trees or plans."""

from __future__ import annotations

import numpy as np


def gather_kv(cache: np.ndarray, pages, seq_len: int, layout: str) -> np.ndarray:
    """[seq_len, num_kv_heads, head_dim]: the request's tokens in order."""
    blocks = cache[np.asarray(pages, dtype=np.int64)]
    if layout == "HND":  # [n, heads, page, dim] -> [n, page, heads, dim]
        blocks = blocks.transpose(0, 2, 1, 3)
    return blocks.reshape(-1, blocks.shape[2], blocks.shape[3])[:seq_len]


def attention(spec, page_lists, seq_lens, q, k_cache, v_cache):
    """(out [batch, H_qo, D], lse [batch, H_qo]) in float64.

    spec: canopy.AttentionSpec; page_lists[r]: request r's page ids (at least
    the used ones); q [batch, H_qo, D]; caches as the spec's layout says.
    """
    q = np.asarray(q, dtype=np.float64)
    k_cache = np.asarray(k_cache, dtype=np.float64)
    v_cache = np.asarray(v_cache, dtype=np.float64)
    batch, heads, dim = q.shape
    group = spec.num_qo_heads // spec.num_kv_heads
    scale = spec.sm_scale if spec.sm_scale > 0 else 1.0 / np.sqrt(dim)
    out = np.empty((batch, heads, dim))
    lse = np.empty((batch, heads))
    for r in range(batch):
        k = gather_kv(k_cache, page_lists[r], int(seq_lens[r]), spec.kv_layout)
        v = gather_kv(v_cache, page_lists[r], int(seq_lens[r]), spec.kv_layout)
        for h in range(heads):
            kv_head = h // group
            s = k[:, kv_head, :] @ q[r, h] * scale
            if spec.logits_soft_cap > 0:
                cap = spec.logits_soft_cap
                s = cap * np.tanh(s / cap)
            m = s.max()
            p = np.exp(s - m)
            total = p.sum()
            out[r, h] = p @ v[:, kv_head, :] / total
            lse[r, h] = m + np.log(total)
    return out, lse


def shared_prefix_batch(rng: np.random.Generator, page_size: int, prompts: int = 2,
                        per_prompt: int = 3, prompt_pages: int = 3, max_extra: int = 40):
    """Requests in groups sharing a prompt's pages (as a prefix cache does),
    each with its own tail pages. Returns (page_lists, seq_lens, num_pages)."""
    page_lists, seq_lens = [], []
    next_page = 0
    for _ in range(prompts):
        prompt = list(range(next_page, next_page + prompt_pages))
        next_page += prompt_pages
        for _ in range(per_prompt):
            extra = int(rng.integers(1, max_extra + 1))
            tail_pages = -(-extra // page_size)
            tail = list(range(next_page, next_page + tail_pages))
            next_page += tail_pages
            page_lists.append(prompt + tail)
            seq_lens.append(prompt_pages * page_size + extra)
    # Shuffle page ids so tables are not the identity layout.
    perm = rng.permutation(next_page)
    page_lists = [[int(perm[p]) for p in pages] for pages in page_lists]
    return page_lists, seq_lens, next_page


def padded(page_lists, fill: int = -1) -> np.ndarray:
    width = max(len(p) for p in page_lists)
    table = np.full((len(page_lists), width), fill, dtype=np.int32)
    for r, pages in enumerate(page_lists):
        table[r, : len(pages)] = pages
    return table


def csr(page_lists):
    indptr = np.zeros(len(page_lists) + 1, dtype=np.int32)
    indptr[1:] = np.cumsum([len(p) for p in page_lists])
    indices = np.array([p for pages in page_lists for p in pages], dtype=np.int32)
    return indptr, indices


def kv_shape(spec, num_pages: int):
    if spec.kv_layout == "NHD":
        return (num_pages, spec.page_size, spec.num_kv_heads, spec.head_dim)
    return (num_pages, spec.num_kv_heads, spec.page_size, spec.head_dim)
