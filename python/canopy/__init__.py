"""Canopy: prefix-aware decode attention for LLM serving.

    spec = canopy.AttentionSpec(num_qo_heads=32, num_kv_heads=8, head_dim=128, dtype="fp16")
    plan = canopy.plan(spec, block_tables, seq_lens)   # once per decode step
    for layer in range(num_layers):
        out = plan.run(q[layer], k_cache[layer], v_cache[layer])   # launches only

Tensors travel through DLPack (PyTorch, CuPy, JAX, NumPy); canopy.torch has
torch helpers. Without a GPU, canopy.plan(..., device="cpu") and plan.run on
NumPy float64 arrays run the CPU executor. docs/python.md has the details.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._errors import (
    CacheError,
    CompileError,
    DriverError,
    Error,
    InvalidArgumentError,
    IoError,
    NoDeviceError,
    NotSupportedError,
)
from ._canopy import (
    AttentionSpec,
    BlockTables,
    ErrorKind,
    PlannerOptions,
    __version__,
    default_coefficients,
    default_kernel_configs,
    device_info,
    gpu_available,
    gpu_unavailable_reason,
    kernel_source,
    prewarm,
    shipped_kernel_configs,
    tuning_search_path,
    tuning_status,
)
from ._incremental import IncrementalPlanner
from ._plan import Plan, plan

__all__ = [
    "AttentionSpec",
    "BlockTables",
    "CacheError",
    "CompileError",
    "DriverError",
    "Error",
    "ErrorKind",
    "IncrementalPlanner",
    "InvalidArgumentError",
    "IoError",
    "NoDeviceError",
    "NotSupportedError",
    "Plan",
    "PlannerOptions",
    "__version__",
    "default_coefficients",
    "default_kernel_configs",
    "device_info",
    "gpu_available",
    "gpu_unavailable_reason",
    "kernel_source",
    "plan",
    "prewarm",
    "shipped_kernel_configs",
    "tuning_search_path",
    "tuning_status",
]


def __getattr__(name: str) -> Any:
    # canopy.torch and canopy.transformers import torch (and transformers), so
    # they load on first use only.
    if name in ("torch", "transformers"):
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'canopy' has no attribute {name!r}")
