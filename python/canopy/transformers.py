"""Canopy as the decode attention of Hugging Face transformers' continuous
batching (transformers 5.x: generate_batch, the continuous-batching manager,
`transformers serve`).

    import canopy.transformers
    canopy.transformers.register()                    # adds "paged|canopy"
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation="paged|canopy")
    outputs = model.generate_batch(prompts, generation_config)
    print(canopy.transformers.report())               # KV bytes read vs prefix-blind

What runs where (docs/engines.md):
  - Decode rows (one new token per request) run Canopy. The plan is made once
    per step, at the step's first attention layer, from the engine's host-side
    tables (each request's block list in its cache allocator and the lengths
    the scheduler gave), patched incrementally when the step only appended
    tokens, and reused by every layer. The new token's K/V is written into the
    engine's cache exactly where the engine asked (its write_index).
  - Prefill rows (several new tokens) run torch's scaled_dot_product_attention
    per request on the K/V the engine's own PagedAttentionCache.update gathers
    (the math of "paged|sdpa"; soft-capped models use an explicit float32
    softmax). A mixed step runs both parts.
  - On a CPU model, decode rows run Canopy's float64 CPU executor (tests).

Not supported, with a clear error naming it: sliding-window layers, MLA
(value head dim != query head dim), attention sinks, head dims other than
64/128/256, dtypes other than float16/bfloat16 on a GPU, a cache layout other
than transformers 5.x's, and CUDA-graph capture of the decode step (a graph
would replay a stale plan: pass continuous_batching_config() or
use_cuda_graph=False). supported(model) tells before generating.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Optional

import torch

from . import _engine
from ._canopy import AttentionSpec
from ._errors import NotSupportedError

NAME = "paged|canopy"
HEAD_DIMS = (64, 128, 256)
_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16"}

# One adapter per PagedAttentionCache (one per continuous-batching run); the
# last one used stays alive after its cache is gone, for stats() and report().
_adapters: "weakref.WeakKeyDictionary[Any, _CacheAdapter]" = weakref.WeakKeyDictionary()
_last_adapter: Optional["_CacheAdapter"] = None
_registered: dict[str, dict] = {}


def register(
    name: str = NAME,
    *,
    options: Any = None,
    full_every: int = 16,
    min_growth_tokens: int = 8,
    prewarm: bool = True,
) -> str:
    """Registers Canopy as attention implementation `name` (must start with
    "paged|": continuous batching gives paged implementations its cache) and
    returns the name for attn_implementation=. Idempotent. `options`
    (canopy.PlannerOptions or their dict form) and the incremental planner's
    settings apply to every run with this name. `prewarm`: on a GPU, the
    first run of a layer shape compiles every kernel its plans may pick
    (canopy.prewarm with all_configs=True: seconds, once per machine, kept
    in the disk cache), so that no decode step stops to compile one."""
    import transformers
    from transformers import AttentionInterface

    if not name.startswith("paged|"):
        raise ValueError(f"name must start with 'paged|' (continuous batching's paged prefix), got {name!r}")
    _check_transformers_version(transformers.__version__)
    _registered[name] = {
        "options": options,
        "replan": {"full_every": full_every, "min_growth_tokens": min_growth_tokens},
        "prewarm": prewarm,
    }
    _install_recorder()
    AttentionInterface.register(name, canopy_paged_attention)
    return name


def continuous_batching_config(**kwargs: Any) -> Any:
    """A transformers ContinuousBatchingConfig for Canopy: CUDA graphs off
    (Canopy plans each step on the host; a captured step would replay a stale
    plan) unless kwargs say otherwise. Other kwargs pass through."""
    from transformers import ContinuousBatchingConfig

    kwargs.setdefault("use_cuda_graph", False)
    return ContinuousBatchingConfig(**kwargs)


def supported(model_or_config: Any) -> tuple[bool, str]:
    """(True, "") when Canopy can run this model's attention, else (False, why)."""
    config = getattr(model_or_config, "config", model_or_config)
    try:
        _check_config(config)
    except NotSupportedError as e:
        return False, str(e)
    return True, ""


def attn_implementation(model_or_config: Any, fallback: str = "paged|sdpa") -> str:
    """NAME (registered) when supported(model_or_config), else `fallback`:
    a loader can pick the engine's own attention for models Canopy cannot run."""
    ok, _ = supported(model_or_config)
    if not ok:
        return fallback
    return register() if NAME not in _registered else NAME


def stats(cache: Any = None) -> dict:
    """The counters of the last run (or of `cache`, a PagedAttentionCache):
    decode steps, full/patched plans, planning time, KV bytes Canopy's runs
    read against prefix-blind attention, fallback rows."""
    adapter = _adapters.get(cache) if cache is not None else _last()
    if adapter is None:
        return {}
    return adapter.stats()


def report(cache: Any = None) -> str:
    """stats() as a few readable lines."""
    s = stats(cache)
    if not s:
        return "canopy.transformers: no run yet"
    frac = s["kv_read_fraction"]
    lines = [
        f"canopy.transformers: {s['steps']} decode steps planned "
        f"({s['full_plans']} full, {s['patched_plans']} patched, {s['unchanged_plans']} unchanged), "
        f"mean {s['mean_plan_us'] or 0:.0f} us planning per step (slowest "
        f"{1e6 * s['max_plan_seconds']:.0f} us); kernels prewarmed in {s['prewarm_seconds']:.1f} s",
        f"  KV read by Canopy's decode attention: {s['kv_bytes'] / 2**30:.3f} GiB; "
        f"prefix-blind attention would read {s['blind_kv_bytes'] / 2**30:.3f} GiB"
        + (f" ({frac:.3f} of it)" if frac is not None else ""),
        f"  rows: {s['decode_rows']} decode (Canopy), {s['prefill_rows']} prefill "
        f"(torch SDPA, {s['prefill_tokens']} tokens); {s['mixed_steps']} mixed steps",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ internals


def _last() -> Optional["_CacheAdapter"]:
    return _last_adapter


def _check_transformers_version(version: str) -> None:
    major = int(version.split(".")[0])
    if major < 5:
        raise NotSupportedError(
            f"canopy.transformers needs transformers 5.x (continuous batching with "
            f"PagedAttentionCache); found {version}"
        )


def _install_recorder() -> None:
    """Records, on the host, which requests each step prepares and their
    lengths: PagedAttentionCache.extend_read_and_write_indices is called once
    per request of a batch, in batch order, with (request_id, past_length,
    query_length). Only caches of a Canopy-registered model record."""
    from transformers.generation.continuous_batching.cache import PagedAttentionCache
    from transformers.generation.continuous_batching.input_outputs import ContinuousBatchingIOs

    original = PagedAttentionCache.extend_read_and_write_indices
    if getattr(original, "_canopy_recorder", False):
        return
    for cls, method in ((PagedAttentionCache, "extend_read_and_write_indices"),
                        (PagedAttentionCache, "update"),
                        (ContinuousBatchingIOs, "prepare_batch_tensors")):
        if not hasattr(cls, method):
            raise NotSupportedError(
                f"this transformers' {cls.__name__} has no {method}(): its continuous "
                "batching changed; canopy.transformers supports transformers 5.x as of 5.17"
            )

    def recording(self, request_id, past_length, query_length, read_index, write_index):
        if self.config._attn_implementation in _registered:
            records = self.__dict__.setdefault("_canopy_records", [])
            records.append((request_id, int(past_length), int(query_length)))
        return original(self, request_id, past_length, query_length, read_index, write_index)

    recording._canopy_recorder = True  # type: ignore[attr-defined]
    recording.__doc__ = original.__doc__
    PagedAttentionCache.extend_read_and_write_indices = recording

    # A batch prepared but never run (an error between the two) must not leak
    # its records into the next: every preparation starts a fresh list.
    prepare = ContinuousBatchingIOs.prepare_batch_tensors

    def fresh_records(self, *args, **kwargs):
        self.cache.__dict__.pop("_canopy_records", None)
        return prepare(self, *args, **kwargs)

    fresh_records.__doc__ = prepare.__doc__
    ContinuousBatchingIOs.prepare_batch_tensors = fresh_records


def _check_config(config: Any) -> None:
    """Raises NotSupportedError naming what Canopy cannot run."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None) or []
    if getattr(text, "sliding_window", None) and (
        not layer_types or any(t != "full_attention" for t in layer_types)
    ):
        raise NotSupportedError(
            f"sliding-window attention (sliding_window={text.sliding_window}) is not supported "
            "by canopy.transformers: use the engine's own attention (e.g. paged|sdpa)"
        )
    if any(t not in ("full_attention",) for t in layer_types):
        raise NotSupportedError(
            f"layer types {sorted(set(layer_types))}: canopy.transformers runs full attention only"
        )
    if getattr(text, "kv_lora_rank", None) or getattr(text, "q_lora_rank", None):
        raise NotSupportedError("MLA (kv_lora_rank) is not supported by canopy.transformers")
    heads = getattr(text, "num_attention_heads", None)
    hidden = getattr(text, "hidden_size", None)
    head_dim = getattr(text, "head_dim", None) or (hidden // heads if heads and hidden else None)
    if head_dim is not None and head_dim not in HEAD_DIMS:
        raise NotSupportedError(
            f"head_dim {head_dim} is not supported (Canopy's kernels: {list(HEAD_DIMS)})"
        )


class _CacheAdapter:
    """Canopy for one PagedAttentionCache: the step's plan, shared by layers."""

    def __init__(self, cache: Any, module: Any, query: torch.Tensor, key: torch.Tensor,
                 value: torch.Tensor, scaling: float, settings: dict) -> None:
        config = module.config
        _check_config(config)
        if cache.num_groups != 1 or cache.num_sliding_attention_groups:
            raise NotSupportedError(
                f"the cache has {cache.num_groups} layer groups ({cache.num_sliding_attention_groups} "
                "sliding): canopy.transformers runs models whose layers are all full attention"
            )
        if hasattr(module, "sinks"):
            raise NotSupportedError("attention sinks are not supported by canopy.transformers")
        num_qo_heads, head_dim = query.shape[1], query.shape[-1]
        num_kv_heads = key.shape[1]
        if value.shape[-1] != head_dim:
            raise NotSupportedError(
                f"value head dim {value.shape[-1]} != query head dim {head_dim} (MLA-style "
                "attention) is not supported by canopy.transformers"
            )
        if head_dim not in HEAD_DIMS:
            raise NotSupportedError(f"head_dim {head_dim} is not supported (Canopy: {list(HEAD_DIMS)})")
        expected = ((cache.num_blocks + 2) * cache.block_size, num_kv_heads, head_dim)
        for t in (cache.key_cache[0], cache.value_cache[0]):
            if tuple(t.shape) != expected or not t.is_contiguous():
                raise NotSupportedError(
                    f"transformers' cache tensor has shape {tuple(t.shape)} (contiguous: "
                    f"{t.is_contiguous()}), not [(num_blocks + 2) * block_size, kv_heads, head_dim] "
                    f"= {expected}: this transformers' cache layout is not the one "
                    "canopy.transformers reads (5.x as of 5.17)"
                )
        self.on_gpu = query.is_cuda
        if self.on_gpu and query.dtype not in _DTYPES:
            raise NotSupportedError(
                f"dtype {query.dtype} on a GPU: Canopy's kernels run float16 and bfloat16"
            )
        cap = float(getattr(config.get_text_config(), "attn_logit_softcapping", None) or 0.0)
        self.soft_cap = cap
        self.spec = AttentionSpec(
            num_qo_heads=num_qo_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            dtype=_DTYPES.get(query.dtype, "fp16"),
            kv_layout="NHD",
            page_size=cache.block_size,
            sm_scale=float(scaling),
            logits_soft_cap=cap,
        )
        self.scaling = float(scaling)
        self.planner = _engine.StepPlanner(
            self.spec,
            num_pages=cache.num_blocks + 2,
            device=query.device if self.on_gpu else "cpu",
            options=settings["options"],
            replan=settings["replan"],
        )
        self.allocator = cache.group_cache_managers[0]
        self.block_size = cache.block_size
        self.step: Optional[_Step] = None
        self.counters = {"decode_rows": 0, "prefill_rows": 0, "prefill_tokens": 0, "mixed_steps": 0,
                         "prewarm_seconds": 0.0}
        if self.on_gpu and settings.get("prewarm", True):
            self.counters["prewarm_seconds"] = _prewarm(self.spec, query.device)

    def stats(self) -> dict:
        d = self.planner.stats.as_dict()
        d.update(self.counters)
        return d

    def new_step(self, records: list) -> "_Step":
        step = _Step(records)
        decode = [i for i, (_, past, q) in enumerate(records) if q == 1 and past > 0]
        step.decode_rows = decode
        if decode:
            pages, lens = [], []
            table = self.allocator.block_table
            for i in decode:
                rid, past, _ = records[i]
                pages.append(table[rid])
                lens.append(past + 1)
            step.decode = self.planner.plan_step(pages, lens)
        self.counters["decode_rows"] += len(decode)
        self.counters["prefill_rows"] += len(records) - len(decode)
        self.counters["prefill_tokens"] += sum(q for _, _, q in records) - len(decode)
        if decode and len(decode) < len(records):
            self.counters["mixed_steps"] += 1
        self.step = step
        return step


class _Step:
    """One step's requests (batch order) and, when it has decode rows, their plan."""

    def __init__(self, records: list) -> None:
        self.records = records
        q_lens = [q for _, _, q in records]
        self.q_starts = [0]
        for n in q_lens:
            self.q_starts.append(self.q_starts[-1] + n)
        self.decode_rows: list[int] = []
        self.decode: Optional[_engine.DecodeStep] = None
        # Contiguous runs of decode rows as (first row, end row) in batch order.
        self._runs: Optional[list[tuple[int, int]]] = None

    def decode_runs(self) -> list[tuple[int, int]]:
        if self._runs is None:
            runs: list[tuple[int, int]] = []
            for r in self.decode_rows:
                if runs and runs[-1][1] == r:
                    runs[-1] = (runs[-1][0], r + 1)
                else:
                    runs.append((r, r + 1))
            self._runs = runs
        return self._runs


_prewarmed: set = set()


def _prewarm(spec: AttentionSpec, device: torch.device) -> float:
    """Compiles (or finds in the disk cache) every kernel a plan of `spec` may
    launch on `device`, once per process; returns the seconds it took. A
    kernel compiled in the middle of a decode step would stall that step (and
    every request in it) for about a second."""
    import time

    from . import prewarm

    ordinal = device.index if device.index is not None else torch.cuda.current_device()
    key = (str(spec), ordinal)
    if key in _prewarmed:
        return 0.0
    t0 = time.perf_counter()
    result = prewarm([spec], device=ordinal, all_configs=True)
    _prewarmed.add(key)
    if result["failures"]:
        raise RuntimeError(f"canopy.transformers: prewarming kernels failed: {result['first_error']}")
    return time.perf_counter() - t0


def _adapter_for(cache: Any, module: Any, query, key, value, scaling) -> _CacheAdapter:
    global _last_adapter
    adapter = _adapters.get(cache)
    if adapter is None:
        settings = _registered.get(module.config._attn_implementation)
        if settings is None:
            raise NotSupportedError(
                f"attn_implementation {module.config._attn_implementation!r} is not registered "
                "through canopy.transformers.register()"
            )
        adapter = _CacheAdapter(cache, module, query, key, value, scaling, settings)
        _adapters[cache] = adapter
    _last_adapter = adapter
    return adapter


@torch.compiler.disable
def canopy_paged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [1, num_qo_heads, total_q, head_dim]
    key: torch.Tensor,  # [1, num_kv_heads, total_q, head_dim]: the new tokens
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],  # None: continuous batching builds none for us
    scaling: Optional[float] = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The AttentionInterface function: returns ([1, total_q, heads, dim], None)."""
    cache = kwargs.get("cache")
    if cache is None:
        raise ValueError(
            f"{NAME} runs inside continuous batching only (generate_batch or the continuous-"
            "batching manager): it was called without a paged attention cache"
        )
    if query.is_cuda and torch.cuda.is_current_stream_capturing():
        raise NotSupportedError(
            "canopy.transformers cannot run inside CUDA-graph capture: Canopy plans each decode "
            "step on the host, and a replayed graph would reuse a stale plan. Generate with "
            "canopy.transformers.continuous_batching_config() (use_cuda_graph=False)"
        )
    if scaling is None:
        scaling = getattr(module, "scaling", 1.0 / math.sqrt(query.shape[-1]))
    adapter = _adapter_for(cache, module, query, key, value, scaling)
    records = cache.__dict__.get("_canopy_records")
    if records:  # the engine prepared a new batch since the last layer: a new step
        cache._canopy_records = []
        step = adapter.new_step(records)
    else:
        step = adapter.step
    total_q = query.shape[2]
    if step is None or step.q_starts[-1] != total_q:
        raise RuntimeError(
            f"canopy.transformers: this step has {total_q} query tokens but the engine prepared "
            f"{None if step is None else step.q_starts[-1]} (padded inputs come from CUDA graphs "
            "or torch.compile, which canopy.transformers does not support: use "
            "canopy.transformers.continuous_batching_config())"
        )
    if float(scaling) != adapter.scaling:
        raise NotSupportedError(
            f"layer {module.layer_idx} scales by {scaling}, layer 0 by {adapter.scaling}: "
            "canopy.transformers plans one scale for all layers"
        )

    group, layer_in_group = cache.layer_index_to_group_indices[module.layer_idx]
    k_cache = cache.key_cache[layer_in_group]
    v_cache = cache.value_cache[layer_in_group]
    new_k = key[0].transpose(0, 1)  # [total_q, kv_heads, dim]
    new_v = value[0].transpose(0, 1)
    q_rows = query[0].transpose(0, 1)  # [total_q, heads, dim]
    out = torch.empty(q_rows.shape, dtype=q_rows.dtype, device=q_rows.device)

    prefill = len(step.decode_rows) < len(step.records)
    if prefill:
        # The engine's own write and gather (its read_index covers every request).
        keys, values = cache.update(key, value, module.layer_idx, kwargs["read_index"],
                                    kwargs["write_index"])
        _prefill_rows(step, adapter, q_rows, keys, values, out, kwargs["read_index"][group])
    else:
        # Decode only: write the new tokens where the engine asked; nothing is gathered.
        write = kwargs["write_index"][group]
        k_cache.index_copy_(0, write, new_k)
        v_cache.index_copy_(0, write, new_v)
    if step.decode is not None:
        _decode_rows(step, adapter, q_rows, k_cache, v_cache, out)
    return out.unsqueeze(0), None


def _decode_rows(step: _Step, adapter: _CacheAdapter, q_rows, k_cache, v_cache, out) -> None:
    runs = step.decode_runs()
    if len(runs) == 1 and runs[0] == (0, len(step.records)):
        q = q_rows  # every row decodes: query rows are request rows
    else:
        q = torch.cat([q_rows[step.q_starts[a] : step.q_starts[b]] for a, b in runs])
    shape = (k_cache.shape[0] // adapter.block_size, adapter.block_size) + tuple(k_cache.shape[1:])
    plan = step.decode.plan
    if adapter.on_gpu:
        result = plan.run(q.contiguous(), k_cache.view(shape), v_cache.view(shape))
    else:  # the CPU executor: float64 NumPy arrays
        result = torch.from_numpy(
            plan.run(
                q.detach().to(torch.float64).contiguous().numpy(),
                k_cache.detach().to(torch.float64).view(shape).numpy(),
                v_cache.detach().to(torch.float64).view(shape).numpy(),
            )
        ).to(q_rows.dtype)
    adapter.planner.account_run(step.decode, k_cache.element_size())
    done = 0
    for a, b in runs:
        n = step.q_starts[b] - step.q_starts[a]
        out[step.q_starts[a] : step.q_starts[b]] = result[done : done + n]
        done += n


def _prefill_rows(step: _Step, adapter: _CacheAdapter, q_rows, keys, values, out, read_index) -> None:
    """Rows with several new tokens: causal attention per request over the K/V
    the engine gathered ([past + new tokens] per request, in batch order)."""
    gathered = read_index.numel() > 0  # else keys/values are the new tokens only
    decode = set(step.decode_rows)
    k_start = 0
    for r, (_, past, q_len) in enumerate(step.records):
        kv_len = past + q_len if gathered else q_len
        k0, k_start = k_start, k_start + kv_len
        if r in decode:
            continue
        q0 = step.q_starts[r]
        q = q_rows[q0 : q0 + q_len].transpose(0, 1)  # [heads, q, dim]
        k = keys[k0 : k0 + kv_len].transpose(0, 1)  # [kv_heads, kv, dim]
        v = values[k0 : k0 + kv_len].transpose(0, 1)
        offset = kv_len - q_len  # query j sits at position offset + j
        out[q0 : q0 + q_len] = _causal_attention(q, k, v, offset, adapter).transpose(0, 1)


def _causal_attention(q, k, v, offset: int, adapter: _CacheAdapter):
    group = q.shape[0] // k.shape[0]
    if adapter.soft_cap == 0.0:
        mask = None
        if offset:
            pos = torch.arange(k.shape[1], device=q.device)
            mask = pos[None, :] <= (offset + torch.arange(q.shape[1], device=q.device))[:, None]
        return torch.nn.functional.scaled_dot_product_attention(
            q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), attn_mask=mask,
            is_causal=mask is None, scale=adapter.scaling, enable_gqa=group > 1,
        )[0]
    # Soft cap: scale, cap, causal mask, softmax in float32.
    kk = k.repeat_interleave(group, dim=0).float()
    vv = v.repeat_interleave(group, dim=0).float()
    s = torch.matmul(q.float(), kk.transpose(1, 2)) * adapter.scaling
    s = adapter.soft_cap * torch.tanh(s / adapter.soft_cap)
    pos = torch.arange(k.shape[1], device=q.device)
    allowed = pos[None, :] <= (offset + torch.arange(q.shape[1], device=q.device))[:, None]
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), vv).to(q.dtype)
