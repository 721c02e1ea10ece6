"""canopy.IncrementalPlanner: one planner per decode loop, patching the last
plan when a step only appended tokens (docs/planner.md, section 5)."""

from __future__ import annotations

from typing import Any, Optional, Union

from . import _canopy
from ._canopy import AttentionSpec, PlannerOptions
from ._errors import InvalidArgumentError
from ._plan import Device, Plan, _block_tables, _device_ordinal, _planner_options


class IncrementalPlanner:
    """Plans decode step after decode step for one AttentionSpec.

        planner = canopy.IncrementalPlanner(spec, device="cuda")
        for step in decode_loop:
            plan = planner.plan(block_tables, seq_lens)   # patched when only grown
            for layer in range(num_layers):
                out = plan.run(q[layer], k_cache[layer], v_cache[layer])

    A step whose requests are the last step's, each with the same used pages
    and perhaps more tokens (and new pages at its end), patches the last plan
    in O(requests + grown items) instead of planning from scratch; anything
    else (arrivals, departures, changed pages, a shared page that grows)
    plans from scratch and gives exactly canopy.plan()'s plan. Either way the
    result is a canopy.Plan covering every (request, head, token) once.

    Args:
      spec: the layer shape.
      device: 'cuda', 'cuda:N', N or a torch.device (GPU plans), 'cpu' (CPU
        executor), None: GPU 0.
      options: PlannerOptions or their dict form; None: the defaults.
      full_every: plan from scratch at least every this many steps.
      max_growth, min_growth_tokens: plan from scratch once a grown request's
        tokens exceed its tokens at the last full plan by this fraction or by
        this many tokens, whichever allows more.
      append_only_tables: the caller promises a request's used pages never
        change while it stays in the batch (except the last, partly filled
        one); a step then compares only each request's first and last page.
    """

    __slots__ = ("_impl", "_spec")

    def __init__(
        self,
        spec: AttentionSpec,
        *,
        device: Device = None,
        options: Union[None, PlannerOptions, dict] = None,
        full_every: int = 16,
        max_growth: float = 0.25,
        min_growth_tokens: int = 8,
        append_only_tables: bool = False,
    ) -> None:
        if not isinstance(spec, AttentionSpec):
            raise InvalidArgumentError(
                f"spec: expected a canopy.AttentionSpec, got {type(spec).__name__}"
            )
        self._spec = spec
        self._impl = _canopy.make_incremental_planner(
            spec,
            _planner_options(options),
            _device_ordinal(device, []),
            int(full_every),
            float(max_growth),
            int(min_growth_tokens),
            bool(append_only_tables),
        )

    def plan(
        self,
        block_tables: Any = None,
        seq_lens: Any = None,
        *,
        indptr: Any = None,
        indices: Any = None,
        num_pages: Optional[int] = None,
    ) -> Plan:
        """This step's plan; the tables as canopy.plan() takes them."""
        tables = _block_tables(self._spec, block_tables, seq_lens, indptr, indices, num_pages)
        return Plan(self._impl.plan(tables))

    @property
    def spec(self) -> AttentionSpec:
        return self._spec

    @property
    def last_outcome(self) -> str:
        """How the last plan() made its plan: 'full', 'patched' or 'unchanged'."""
        return self._impl.last_outcome

    @property
    def last_reason(self) -> str:
        """Why the last plan() planned from scratch ('' when it did not)."""
        return self._impl.last_reason

    @property
    def full_plans(self) -> int:
        return self._impl.full_plans

    @property
    def patched_plans(self) -> int:
        return self._impl.patched_plans

    def __repr__(self) -> str:
        return (
            f"canopy.IncrementalPlanner(full_plans={self.full_plans}, "
            f"patched_plans={self.patched_plans}, last_outcome={self.last_outcome!r})"
        )
