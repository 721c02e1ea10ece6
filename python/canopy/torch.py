"""canopy.torch: PyTorch conveniences (imported only when used; the core
package never imports torch).

plan.run() already uses these for torch tensors; call them directly to
allocate outputs ahead of time (e.g. before CUDA-graph capture).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def dtype(name: str) -> torch.dtype:
    """The torch dtype of a Canopy dtype name ('fp16', 'bf16', 'fp32')."""
    return _DTYPES[name]


def current_stream(device: Any = None) -> int:
    """torch.cuda.current_stream(device) as a CUstream handle."""
    return int(torch.cuda.current_stream(device).cuda_stream)


def empty_outputs(plan: Any, q: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Uninitialized (out, lse) for plan.run(q, ...) on q's device.

    CUDA: out [batch, num_qo_heads, head_dim] in spec.o_dtype, lse
    [batch, num_qo_heads] float32 (None without spec.with_lse). CPU (the CPU
    executor): both float64.
    """
    spec = plan.spec
    shape = (plan.batch_size, spec.num_qo_heads, spec.head_dim)
    if q.is_cuda:
        out = torch.empty(shape, dtype=dtype(spec.o_dtype), device=q.device)
        lse_dtype = torch.float32
    else:
        out = torch.empty(shape, dtype=torch.float64, device=q.device)
        lse_dtype = torch.float64
    lse = torch.empty(shape[:2], dtype=lse_dtype, device=q.device) if spec.with_lse else None
    return out, lse


def run(
    plan: Any,
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    out: Optional[torch.Tensor] = None,
    lse: Optional[torch.Tensor] = None,
) -> Any:
    """plan.run() on torch.cuda.current_stream(q.device), allocating missing
    outputs with torch (capturable in torch.cuda.graph)."""
    stream = current_stream(q.device) if q.is_cuda else None
    return plan.run(q, k_cache, v_cache, out=out, lse=lse, stream=stream)
