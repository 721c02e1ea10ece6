"""canopy.plan() and canopy.Plan: plan once per decode step, run once per layer."""

from __future__ import annotations

import operator
import sys
from typing import Any, Optional, Union

import numpy as np

from . import _arrays
from . import _canopy
from ._canopy import AttentionSpec, BlockTables, PlannerOptions
from ._errors import InvalidArgumentError

Device = Union[None, str, int, Any]  # Any: torch.device and friends (parsed through str())


def _device_ordinal(device: Device, tables: Any) -> int:
    """-1 for the CPU executor, else a CUDA ordinal."""
    if device is None:
        kind, index = _arrays.dlpack_device(tables)
        return index if kind == _arrays.DL_CUDA else 0
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:
            raise InvalidArgumentError(f"device: CUDA ordinal {device} is negative")
        return device
    text = str(device)
    if text == "cpu":
        return -1
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise InvalidArgumentError(
        f"device: expected 'cpu', 'cuda', 'cuda:N', an ordinal or a torch.device, got {device!r}"
    )


def _block_tables(
    spec: AttentionSpec, block_tables: Any, seq_lens: Any, indptr: Any, indices: Any, num_pages: Any
) -> BlockTables:
    """Validated BlockTables from the padded or CSR form (see plan())."""
    csr = indptr is not None or indices is not None
    if block_tables is not None and csr:
        raise InvalidArgumentError(
            "give either block_tables (padded) or indptr and indices (CSR), not both"
        )
    if block_tables is None and (indptr is None or indices is None):
        raise InvalidArgumentError(
            "block tables are missing: give block_tables [batch, max_pages] (padded) or "
            "indptr [batch + 1] and indices (CSR)"
        )
    if seq_lens is None:
        raise InvalidArgumentError("seq_lens [batch] is required")
    if num_pages is not None:
        try:
            num_pages = operator.index(num_pages)
        except TypeError:
            raise InvalidArgumentError(
                f"num_pages: expected an int, got {type(num_pages).__name__}"
            ) from None
    lens = _arrays.host_int32(seq_lens, "seq_lens", 1)
    if csr:
        return BlockTables.from_csr(
            _arrays.host_int32(indptr, "indptr", 1),
            _arrays.host_int32(indices, "indices", 1),
            lens,
            spec.page_size,
            num_pages,
        )
    return BlockTables.from_padded(
        _arrays.host_int32(block_tables, "block_tables", 2), lens, spec.page_size, num_pages
    )


def _planner_options(options: Union[None, PlannerOptions, dict]) -> PlannerOptions:
    if options is None:
        return PlannerOptions()
    if isinstance(options, dict):
        return PlannerOptions.from_dict(options)
    if not isinstance(options, PlannerOptions):
        raise InvalidArgumentError(
            f"options: expected a canopy.PlannerOptions or a dict, got {type(options).__name__}"
        )
    return options


def plan(
    spec: AttentionSpec,
    block_tables: Any = None,
    seq_lens: Any = None,
    *,
    indptr: Any = None,
    indices: Any = None,
    num_pages: Optional[int] = None,
    device: Device = None,
    options: Union[None, PlannerOptions, dict] = None,
    workspace: Any = None,
) -> "Plan":
    """Plans one decode step: finds the shared prefixes in the block tables and
    decides every kernel launch. Call once per step (not inside CUDA-graph
    capture: a GPU plan uploads its metadata); reuse the plan for every layer.

    Give the block tables either padded or as CSR:
      block_tables: int [batch, max_pages]; row r lists request r's page ids,
        entries past its ceil(seq_lens[r] / page_size) used pages are ignored (-1 is fine).
      indptr: int [batch + 1], indices: int [indptr[-1]]: request r owns
        indices[indptr[r]:indptr[r+1]].
      seq_lens: int [batch], KV tokens per request (>= 1), including the token
        being decoded if it is already in the cache.
    Any integer dtype and any array with __dlpack__ or a list works. Device
    (CUDA) arrays are copied to the host first, which waits for the GPU work
    queued before them: pass host arrays to plan without synchronizing.

    Args:
      spec: the layer shape (AttentionSpec).
      num_pages: pages in the KV cache (page ids must be below it; run() checks
        the cache has at least this many); None: the largest used page id + 1.
      device: 'cuda', 'cuda:N', N or a torch.device: a GPU plan (kernels
        compiled and loaded, metadata uploaded); 'cpu': a host plan for the
        CPU executor; None: the tables' CUDA device, else GPU 0.
      options: PlannerOptions, or a dict of its JSON form (canopy-planner-options/1,
        e.g. {"prefix_blind": True}; PlannerOptions.from_dict); None: defaults.
      workspace: optional CUDA array (any dtype) of at least Plan.workspace_bytes
        bytes on the plan's device, kept alive by the plan; None: the plan owns one.

    Returns a Plan. Raises InvalidArgumentError for bad tables (naming the
    request and value), NoDeviceError when a GPU plan is asked for and no GPU
    was found, CompileError / DriverError from kernel preparation.
    """
    if not isinstance(spec, AttentionSpec):
        raise InvalidArgumentError(
            f"spec: expected a canopy.AttentionSpec, got {type(spec).__name__}"
        )
    tables = _block_tables(spec, block_tables, seq_lens, indptr, indices, num_pages)
    ordinal = _device_ordinal(device, indptr if indptr is not None else block_tables)
    options = _planner_options(options)
    ws = None if workspace is None else _arrays.native_arg(workspace, "workspace", writable=True)
    return Plan(_canopy.make_plan(spec, tables, options, ordinal, ws))


class Plan:
    """One decode step's plan, reused by every layer of the step.

    Made by canopy.plan(). A GPU plan holds its kernels and device metadata
    (and its workspace); keep it alive while work launched from it (or a CUDA
    graph captured from it) may still run.
    """

    __slots__ = ("_impl",)

    def __init__(self, impl: _canopy.Plan) -> None:
        self._impl = impl

    @property
    def spec(self) -> AttentionSpec:
        return self._impl.spec

    @property
    def batch_size(self) -> int:
        return self._impl.batch_size

    @property
    def num_pages(self) -> int:
        """Pages the KV cache must have at least (k_cache.shape[0])."""
        return self._impl.num_pages

    @property
    def device(self) -> str:
        """'cuda:N' for a GPU plan, 'cpu' for a host plan."""
        return self._impl.device

    @property
    def arch(self) -> str:
        """The GPU target its kernels are for (a CPU plan: the cost model's)."""
        return self._impl.arch

    @property
    def block_tables(self) -> BlockTables:
        """The validated tables (CSR) the plan was made from."""
        return self._impl.block_tables

    @property
    def workspace_bytes(self) -> int:
        return self._impl.workspace_bytes

    @property
    def predicted_us(self) -> float:
        """The cost model's estimate of one layer's run()."""
        return self._impl.predicted_us

    @property
    def tree_depth(self) -> int:
        return self._impl.tree_depth

    @property
    def num_items(self) -> int:
        """Work items (thread blocks) of partial attention."""
        return self._impl.num_items

    @property
    def num_launches(self) -> int:
        return self._impl.num_launches

    @property
    def configs(self) -> list[str]:
        """The partial-attention kernel configs the plan launches (see kernel_source)."""
        return self._impl.configs

    @property
    def kernel_specs(self) -> list[str]:
        """Every kernel the plan launches, spelled as KernelSpec names (cache keys)."""
        return self._impl.kernel_specs

    def describe(self) -> str:
        """The plan as text: device, tree, items, launches and merges."""
        return self._impl.describe()

    def to_json(self, indent: int = 2) -> str:
        """The plan in canopy-plan JSON (what `canopy-inspect plan --json` prints)."""
        return self._impl.to_json(indent)

    def check(self) -> None:
        """Re-checks the plan: consistent, and covering every (request, head, token)
        of its tables exactly once. Raises InvalidArgumentError otherwise."""
        self._impl.check()

    def run(
        self,
        q: Any,
        k_cache: Any,
        v_cache: Any,
        out: Any = None,
        lse: Any = None,
        stream: Any = None,
    ) -> Any:
        """Decode attention of one layer.

        Tensors (C-contiguous; shapes from the spec and the plan):
          q        [batch, num_qo_heads, head_dim]
          k_cache  [pages >= num_pages, page_size, num_kv_heads, head_dim] (NHD)
                   [pages >= num_pages, num_kv_heads, page_size, head_dim] (HND)
          v_cache  like k_cache
          out      [batch, num_qo_heads, head_dim]; None: allocated
          lse      [batch, num_qo_heads], natural log; required iff spec.with_lse
                   (None: allocated)

        CUDA arrays (on the plan's device) run the GPU kernels: q, k_cache,
        v_cache in spec.q_dtype / spec.kv_dtype, out in spec.o_dtype, lse
        float32. Launches only (no allocation, no synchronization), on `stream`:
        a CUDA stream handle (int), or an object with .cuda_stream (torch) or
        .ptr (CuPy); None: torch.cuda.current_stream() for torch tensors, CuPy's
        current stream for CuPy arrays, else the legacy default stream. Outputs
        are allocated only for torch tensors (with torch: canopy.torch). Inside
        torch.cuda.graph capture this is recorded into the graph; replaying it
        needs this plan alive.

        Host arrays (NumPy, CPU tensors) run the CPU executor, which executes
        this same plan in float64: every array float64 (lse too).

        Returns out, or (out, lse) when spec.with_lse.
        """
        on_gpu = not _arrays.is_host(_arrays.dlpack_device(q))
        with_lse = self._impl.spec.with_lse
        if out is None or (with_lse and lse is None):
            new_out, new_lse = self._allocate(q, on_gpu)
            out = new_out if out is None else out
            lse = new_lse if lse is None else lse
        args = (
            _arrays.native_arg(q, "q"),
            _arrays.native_arg(k_cache, "k_cache"),
            _arrays.native_arg(v_cache, "v_cache"),
            _arrays.native_arg(out, "out", writable=True),
            None if lse is None else _arrays.native_arg(lse, "lse", writable=True),
        )
        if on_gpu:
            self._impl.run_gpu(*args, _stream_handle(stream, q))
        else:
            if stream is not None:
                raise InvalidArgumentError("stream applies to CUDA arrays; q is a host array")
            self._impl.run_cpu(*args)
        return (out, lse) if with_lse else out

    def _allocate(self, q: Any, on_gpu: bool) -> tuple[Any, Any]:
        spec = self._impl.spec
        if _arrays.is_torch(q):
            from . import torch as canopy_torch

            return canopy_torch.empty_outputs(self, q)
        if on_gpu:
            raise InvalidArgumentError(
                f"out{' and lse' if spec.with_lse else ''} must be given for CUDA arrays "
                f"from {_arrays.framework(q)} (Canopy allocates outputs with torch only)"
            )
        shape = (self._impl.batch_size, spec.num_qo_heads, spec.head_dim)
        lse = np.empty(shape[:2], dtype=np.float64) if spec.with_lse else None
        return np.empty(shape, dtype=np.float64), lse

    def __repr__(self) -> str:
        return (
            f"canopy.Plan(device={self.device!r}, batch_size={self.batch_size}, "
            f"num_pages={self.num_pages}, items={self.num_items}, "
            f"launches={self.num_launches}, tree_depth={self.tree_depth})"
        )


def _stream_handle(stream: Any, q: Any) -> int:
    """A CUstream value for the native run."""
    if stream is None:
        kind = _arrays.framework(q)
        if kind == "torch":
            from . import torch as canopy_torch

            return canopy_torch.current_stream(q.device)
        if kind == "cupy":
            return int(sys.modules["cupy"].cuda.get_current_stream().ptr)
        return 0
    if isinstance(stream, int) and not isinstance(stream, bool):
        handle = stream
    elif hasattr(stream, "cuda_stream"):
        handle = stream.cuda_stream
    elif hasattr(stream, "ptr"):
        handle = stream.ptr
    else:
        raise InvalidArgumentError(
            "stream: expected a CUDA stream handle (int), a torch.cuda.Stream or an object "
            f"with .ptr, got {type(stream).__name__}"
        )
    handle = int(handle)
    if handle < 0:
        raise InvalidArgumentError(f"stream: handle {handle} is negative")
    return handle
