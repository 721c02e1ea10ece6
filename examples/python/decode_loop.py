#!/usr/bin/env python3
"""A minimal PyTorch decode loop on Canopy, shaped like a serving engine's
attention backend (docs/python.md):

  * a paged KV cache per layer; requests that share a prompt point at the same
    full pages of it (as a prefix cache does) and own the rest;
  * every step each request appends one token's K/V, then the metadata builder
    plans the step once (`canopy.plan`) and every layer's forward runs it
    (`plan.run`);
  * every layer's output is checked against
    torch.nn.functional.scaled_dot_product_attention on the gathered KV; the
    script exits 1 on a mismatch.

    python3 examples/python/decode_loop.py                 # GPU, fp16
    python3 examples/python/decode_loop.py --dtype bf16 --layout HND
    python3 examples/python/decode_loop.py --device cpu    # CPU executor, float64
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import canopy

# ---------------------------------------------------------------------------
# The engine side: a paged KV cache and its requests.


class PagedKVCache:
    """K and V caches per layer, [num_pages, page_size, kv_heads, head_dim] (NHD)
    or [num_pages, kv_heads, page_size, head_dim] (HND), and a free list."""

    def __init__(self, layers, num_pages, page_size, kv_heads, head_dim, layout, dtype, device):
        shape = ((num_pages, page_size, kv_heads, head_dim) if layout == "NHD"
                 else (num_pages, kv_heads, page_size, head_dim))
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.layout, self.page_size, self.num_pages = layout, page_size, num_pages
        self.free = list(range(num_pages - 1, -1, -1))

    def allocate(self) -> int:
        if not self.free:
            raise RuntimeError("KV cache is full")
        return self.free.pop()

    def write(self, layer, page, slot, k, v):
        """Stores one token's k, v [kv_heads, head_dim] at (page, slot)."""
        if self.layout == "NHD":
            self.k[layer][page, slot] = k
            self.v[layer][page, slot] = v
        else:
            self.k[layer][page, :, slot] = k
            self.v[layer][page, :, slot] = v

    def gather(self, layer, pages, length):
        """[length, kv_heads, head_dim] K and V of one request, in token order."""
        idx = torch.tensor(pages, device=self.k[layer].device)
        out = []
        for cache in (self.k[layer], self.v[layer]):
            blocks = cache[idx]
            if self.layout == "HND":
                blocks = blocks.transpose(1, 2)
            out.append(blocks.reshape(-1, blocks.shape[2], blocks.shape[3])[:length])
        return out


@dataclass
class Request:
    pages: list = field(default_factory=list)
    length: int = 0


def append_token(cache, req, kv_per_layer):
    """Appends one token (its k, v per layer) to `req`, taking a new page when
    the last one is full."""
    slot = req.length % cache.page_size
    if slot == 0:
        req.pages.append(cache.allocate())
    for layer, (k, v) in enumerate(kv_per_layer):
        cache.write(layer, req.pages[-1], slot, k, v)
    req.length += 1


def start_requests(cache, args, make_kv):
    """`prompts` prompts of `prompt_len` tokens, each shared by `per_prompt`
    requests: the prompt's full pages are written once and shared; its partial
    last page is copied into each request's own page (copy-on-write)."""
    requests = []
    full = args.prompt_len // cache.page_size
    for _ in range(args.prompts):
        prompt_kv = [make_kv() for _ in range(args.prompt_len)]
        shared = []
        for page in range(full):
            shared.append(cache.allocate())
            for slot in range(cache.page_size):
                for layer, (k, v) in enumerate(prompt_kv[page * cache.page_size + slot]):
                    cache.write(layer, shared[-1], slot, k, v)
        for _ in range(args.per_prompt):
            req = Request(pages=list(shared), length=full * cache.page_size)
            for t in range(full * cache.page_size, args.prompt_len):
                append_token(cache, req, prompt_kv[t])
            # Requests joined at different times: each has generated some tokens already.
            for _ in range(int(torch.randint(0, args.max_generated + 1, ()))):
                append_token(cache, req, make_kv())
            requests.append(req)
    return requests


def block_table(requests):
    """Padded [batch, max_pages] int32 (-1 past each request's pages) and
    seq_lens [batch], on the host as engines keep them for planning."""
    width = max(len(r.pages) for r in requests)
    table = torch.full((len(requests), width), -1, dtype=torch.int32)
    for i, r in enumerate(requests):
        table[i, : len(r.pages)] = torch.tensor(r.pages, dtype=torch.int32)
    return table, torch.tensor([r.length for r in requests], dtype=torch.int32)


# ---------------------------------------------------------------------------
# The attention backend: what a vLLM- or SGLang-style engine would call.


class CanopyMetadataBuilder:
    """Once per decode step, before the layers run: plans the batch."""

    def __init__(self, spec: canopy.AttentionSpec, num_pages: int, device: str):
        self.spec, self.num_pages, self.device = spec, num_pages, device

    def build(self, block_tables: torch.Tensor, seq_lens: torch.Tensor) -> canopy.Plan:
        # Host tables: planning needs no GPU synchronization.
        return canopy.plan(self.spec, block_tables, seq_lens, num_pages=self.num_pages,
                           device=self.device)


class CanopyAttention:
    """One layer's attention; the plan comes from the step's metadata."""

    def forward(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                plan: canopy.Plan) -> torch.Tensor:
        # q [batch, qo_heads, head_dim] -> out like q; launches on the current stream.
        return plan.run(q, k_cache, v_cache)


# ---------------------------------------------------------------------------
# The check: SDPA over each request's gathered KV.


def sdpa_reference(q, cache, layer, requests, group):
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    outs = []
    for i, r in enumerate(requests):
        k, v = cache.gather(layer, r.pages, r.length)  # [len, kv_heads, dim]
        k = k.to(dtype).repeat_interleave(group, dim=1).transpose(0, 1)  # [qo_heads, len, dim]
        v = v.to(dtype).repeat_interleave(group, dim=1).transpose(0, 1)
        qi = q[i].to(dtype).unsqueeze(1)  # [qo_heads, 1, dim]
        outs.append(F.scaled_dot_product_attention(qi, k, v).squeeze(1))
    return torch.stack(outs)


def rel_l2(got, want):
    got, want = got.double(), want.double()
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (CPU executor)")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    ap.add_argument("--layout", default="NHD", choices=["NHD", "HND"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--qo-heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--per-prompt", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=300)
    ap.add_argument("--max-generated", type=int, default=40,
                    help="tokens each request has generated before the first step, at most")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    on_gpu = args.device != "cpu"
    if on_gpu and not canopy.gpu_available():
        print(f"no GPU: {canopy.gpu_unavailable_reason()}; try --device cpu", file=sys.stderr)
        return 2
    device = args.device if on_gpu else "cpu"
    # The CPU executor computes in float64; the GPU kernels in the spec's dtype.
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype] if on_gpu else torch.float64
    tolerance = {"fp16": 2e-3, "bf16": 1e-2}[args.dtype] if on_gpu else 1e-9
    torch.manual_seed(args.seed)

    spec = canopy.AttentionSpec(num_qo_heads=args.qo_heads, num_kv_heads=args.kv_heads,
                                head_dim=args.head_dim, dtype=args.dtype, kv_layout=args.layout,
                                page_size=args.page_size)
    batch = args.prompts * args.per_prompt
    pages_per_request = -(-(args.prompt_len + args.max_generated + args.steps) // args.page_size)
    num_pages = batch * pages_per_request + 8
    cache = PagedKVCache(args.layers, num_pages, args.page_size, args.kv_heads, args.head_dim,
                         args.layout, dtype, device)

    def make_kv():  # one token's (k, v) per layer: what the model's projections would give
        return [(torch.randn(args.kv_heads, args.head_dim, device=device).to(dtype),
                 torch.randn(args.kv_heads, args.head_dim, device=device).to(dtype))
                for _ in range(args.layers)]

    requests = start_requests(cache, args, make_kv)
    builder = CanopyMetadataBuilder(spec, num_pages, device)
    attention = CanopyAttention()
    group = args.qo_heads // args.kv_heads
    print(f"canopy {canopy.__version__}: {batch} requests in {args.prompts} prompt groups, "
          f"{args.layers} layers, {spec}")

    worst = 0.0
    for step in range(args.steps):
        for req in requests:  # the new token's K/V goes into the cache first
            append_token(cache, req, make_kv())
        table, seq_lens = block_table(requests)
        plan = builder.build(table, seq_lens)  # once per step
        for layer in range(args.layers):
            q = torch.randn(batch, args.qo_heads, args.head_dim, device=device).to(dtype)
            out = attention.forward(q, cache.k[layer], cache.v[layer], plan)
            err = rel_l2(out, sdpa_reference(q, cache, layer, requests, group))
            worst = max(worst, err)
            if not err < tolerance:
                print(f"MISMATCH step {step} layer {layer}: rel-L2 {err:.3e} >= {tolerance:.0e}")
                print(plan.describe())
                return 1
        shared = sum(len(r.pages) for r in requests) - len(set(p for r in requests
                                                                for p in r.pages))
        print(f"step {step}: lengths {int(seq_lens.min())}..{int(seq_lens.max())}, "
              f"{shared} page references shared, tree depth {plan.tree_depth}, "
              f"{plan.num_items} items in {plan.num_launches} launches")
    print(f"OK: {args.steps} steps x {args.layers} layers match SDPA "
          f"(worst rel-L2 {worst:.2e} < {tolerance:.0e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
