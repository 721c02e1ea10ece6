"""The engine side of a decode step, shared by engine adapters
(canopy.transformers today; vLLM and SGLang backends map onto the same calls,
docs/engines.md): requests' page lists and lengths, read from the engine's
host-side tables, become one plan per step, reused by every layer; and the KV
bytes the step reads are counted against what prefix-blind attention reads.

Host only: nothing here touches a GPU array, so planning never waits for the
GPU's queued work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ._canopy import AttentionSpec
from ._incremental import IncrementalPlanner
from ._plan import Device, Plan


def step_csr(
    pages: Sequence[Sequence[int]], seq_lens: Sequence[int], page_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, seq_lens) int32 CSR tables of a step: request r reads
    its first ceil(seq_lens[r] / page_size) pages of pages[r] (an engine's
    list may hold more, allocated ahead)."""
    lens = np.asarray(seq_lens, dtype=np.int64)
    if lens.ndim != 1 or len(lens) != len(pages):
        raise ValueError(f"{len(pages)} page lists but seq_lens has shape {lens.shape}")
    if len(lens) and lens.min() < 1:
        r = int(np.argmin(lens))
        raise ValueError(f"request {r} has seq_len {int(lens[r])}; every request needs >= 1 token")
    used = (lens + page_size - 1) // page_size
    indptr = np.zeros(len(lens) + 1, dtype=np.int32)
    np.cumsum(used, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    for r, (row, n) in enumerate(zip(pages, used.tolist())):
        if len(row) < n:
            raise ValueError(
                f"request {r} has {len(row)} pages but {int(lens[r])} tokens need {n} "
                f"of {page_size} tokens"
            )
        indices[indptr[r] : indptr[r + 1]] = row[:n]
    return indptr, indices, lens.astype(np.int32)


def kv_tokens_read(
    indptr: np.ndarray, indices: np.ndarray, seq_lens: np.ndarray, page_size: int
) -> tuple[int, int]:
    """(tokens a prefix-aware step reads, tokens prefix-blind attention reads),
    per KV head and layer. Prefix-blind reads every request's tokens; a
    prefix-aware step reads each used (page, slot) once, however many
    requests share it."""
    blind = int(seq_lens.sum())
    if len(indices) == 0:
        return 0, blind
    # Tokens used in each (request, page): full pages but each request's last.
    per_entry = np.full(len(indices), page_size, dtype=np.int64)
    last = indptr[1:] - 1
    tail = seq_lens.astype(np.int64) - (indptr[1:] - indptr[:-1] - 1) * page_size
    per_entry[last] = tail
    # A page read by several requests is read once, up to its furthest slot.
    order = np.argsort(indices, kind="stable")
    sorted_pages = indices[order]
    starts = np.flatnonzero(np.r_[True, sorted_pages[1:] != sorted_pages[:-1]])
    unique = int(np.maximum.reduceat(per_entry[order], starts).sum())
    return unique, blind


@dataclass
class StepStats:
    """What the steps planned so far did (canopy.transformers reports these)."""

    steps: int = 0  # decode steps planned
    full_plans: int = 0
    patched_plans: int = 0
    unchanged_plans: int = 0
    plan_seconds: float = 0.0  # host time in plan_step (tables and planning)
    max_plan_seconds: float = 0.0  # the slowest step's (a kernel compiled in it shows here)
    kv_tokens: int = 0  # tokens read per KV head and layer, summed over steps
    blind_kv_tokens: int = 0  # what prefix-blind attention would read
    layer_runs: int = 0  # plan.run calls (layers x steps)
    kv_bytes: int = 0  # KV bytes the runs read: tokens x heads x dim x 2 (K, V) x element size
    blind_kv_bytes: int = 0
    last_reason: str = ""  # why the last full plan was made

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["kv_read_fraction"] = self.kv_bytes / self.blind_kv_bytes if self.blind_kv_bytes else None
        d["mean_plan_us"] = 1e6 * self.plan_seconds / self.steps if self.steps else None
        return d


@dataclass
class DecodeStep:
    """One step's plan and the KV tokens it reads (per KV head and layer)."""

    plan: Plan
    batch_size: int
    kv_tokens: int
    blind_kv_tokens: int
    outcome: str  # 'full', 'patched' or 'unchanged'


@dataclass
class StepPlanner:
    """Plans an engine's decode steps: plan_step() once per step from the
    requests' page lists (host data), then account_run() per layer run.

    num_pages: pages in the engine's KV cache (checked by every run).
    """

    spec: AttentionSpec
    num_pages: int
    device: Device = None
    options: Any = None
    replan: dict = field(default_factory=dict)  # IncrementalPlanner keyword arguments
    stats: StepStats = field(default_factory=StepStats)
    _planner: Optional[IncrementalPlanner] = None

    def __post_init__(self) -> None:
        self._planner = IncrementalPlanner(
            self.spec, device=self.device, options=self.options, **self.replan
        )

    def plan_step(self, pages: Sequence[Sequence[int]], seq_lens: Sequence[int]) -> DecodeStep:
        t0 = time.perf_counter()
        indptr, indices, lens = step_csr(pages, seq_lens, self.spec.page_size)
        plan = self._planner.plan(
            seq_lens=lens, indptr=indptr, indices=indices, num_pages=self.num_pages
        )
        unique, blind = kv_tokens_read(indptr, indices, lens, self.spec.page_size)
        s = self.stats
        took = time.perf_counter() - t0
        s.plan_seconds += took
        s.max_plan_seconds = max(s.max_plan_seconds, took)
        s.steps += 1
        outcome = self._planner.last_outcome
        if outcome == "full":
            s.full_plans += 1
            s.last_reason = self._planner.last_reason
        elif outcome == "patched":
            s.patched_plans += 1
        else:
            s.unchanged_plans += 1
        s.kv_tokens += unique
        s.blind_kv_tokens += blind
        return DecodeStep(plan, len(lens), unique, blind, outcome)

    def account_run(self, step: DecodeStep, element_bytes: int) -> None:
        """Counts one layer's run of `step` (KV bytes read, K and V)."""
        per_token = 2 * self.spec.num_kv_heads * self.spec.head_dim * element_bytes
        self.stats.layer_runs += 1
        self.stats.kv_bytes += step.kv_tokens * per_token
        self.stats.blind_kv_bytes += step.blind_kv_tokens * per_token
