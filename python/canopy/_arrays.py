"""Array plumbing: block tables to host int32, tensors to DLPack for the
native module, without importing any framework."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ._errors import InvalidArgumentError

DL_CPU = 1
DL_CUDA = 2
DL_CUDA_HOST = 3

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def framework(x: Any) -> str:
    """'torch', 'numpy', 'cupy', 'jax', 'jaxlib', ... (the array type's top-level module)."""
    return type(x).__module__.split(".")[0]


def is_torch(x: Any) -> bool:
    return framework(x) == "torch"


def dlpack_device(x: Any) -> tuple[int, int]:
    """(DLPack device type, id) of an array; objects without __dlpack_device__ are host data."""
    f = getattr(x, "__dlpack_device__", None)
    if f is None:
        return (DL_CPU, 0)
    kind, index = f()
    return int(kind), int(index)


def is_host(device: tuple[int, int]) -> bool:
    return device[0] in (DL_CPU, DL_CUDA_HOST)


def _to_host(x: Any, name: str) -> np.ndarray:
    """Copies a device array to a NumPy array. This waits for the producer's
    pending work on the array (torch: the current stream), i.e. it synchronizes."""
    kind = framework(x)
    try:
        if kind == "torch":
            return x.detach().cpu().numpy()
        if kind == "cupy":
            return x.get()
        try:
            return np.from_dlpack(x, device="cpu")  # NumPy >= 2.1: the producer copies
        except (TypeError, ValueError, BufferError, RuntimeError, NotImplementedError):
            return np.asarray(x)  # JAX and others that convert themselves
    except Exception as e:  # noqa: BLE001 - any framework failure becomes one clear error
        raise InvalidArgumentError(
            f"{name} is on {dlpack_device(x)} and could not be copied to the host ({e}); "
            "pass a host array (NumPy, CPU tensor)"
        ) from e


def host_int32(x: Any, name: str, ndim: int) -> np.ndarray:
    """`x` as a C-contiguous NumPy int32 array of `ndim` dims (device arrays are
    copied to the host; other integer dtypes are converted when every value fits)."""
    if x is None:
        raise InvalidArgumentError(f"{name} is required")
    if not is_host(dlpack_device(x)):
        arr = _to_host(x, name)
    elif hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        if is_torch(x):
            x = x.detach()
        arr = np.from_dlpack(x)
    else:
        arr = np.asarray(x)
    if arr.ndim != ndim:
        raise InvalidArgumentError(
            f"{name}: expected a {ndim}-D integer array, got shape {list(arr.shape)}"
        )
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int32)
    if arr.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{name}: expected an integer dtype (int32), got {arr.dtype}")
    if arr.dtype != np.int32:
        low, high = int(arr.min()), int(arr.max())
        if low < _INT32_MIN or high > _INT32_MAX:
            bad = low if low < _INT32_MIN else high
            raise InvalidArgumentError(f"{name}: value {bad} does not fit in int32")
        arr = arr.astype(np.int32)
    return np.ascontiguousarray(arr)


def native_arg(x: Any, name: str, writable: bool = False) -> Any:
    """What the native module takes for a tensor: host arrays as they are,
    device arrays as a DLPack capsule made with stream=-1 (no synchronization:
    the caller's stream orders the work, see Plan.run)."""
    if not hasattr(x, "__dlpack__"):
        raise InvalidArgumentError(
            f"{name}: expected an array with __dlpack__ (NumPy, PyTorch, CuPy, JAX), "
            f"got {type(x).__name__}"
        )
    if writable and isinstance(x, np.ndarray) and not x.flags.writeable:
        raise InvalidArgumentError(f"{name} is read-only; run() writes it")
    if is_torch(x):
        x = x.detach()
    device = dlpack_device(x)
    if device[0] != DL_CUDA:
        return x
    if is_torch(x):
        torch = sys.modules["torch"]
        if x.device.index != torch.cuda.current_device():
            with torch.cuda.device(x.device):  # torch exports from the current device only
                return x.__dlpack__(stream=-1)
    try:
        return x.__dlpack__(stream=-1)
    except TypeError:  # producers that predate the stream argument
        return x.__dlpack__()
