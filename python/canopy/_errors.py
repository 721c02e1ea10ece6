"""Canopy's exceptions: one class per C++ canopy::ErrorKind.

The native module raises these with the C++ message unchanged (it names the
request, field or tensor and the bad value); checks made in Python raise the
same classes.
"""

from __future__ import annotations

from ._canopy import ErrorKind


class Error(RuntimeError):
    """Base of every error Canopy raises.

    Attributes:
        kind: the C++ canopy::ErrorKind (a canopy.ErrorKind member).
        message: the message, exactly as the C++ library wrote it.
    """

    kind: ErrorKind

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(Error, ValueError):
    """Bad spec, block tables or tensors: the caller's input is wrong."""

    kind = ErrorKind.INVALID_ARGUMENT


class NotSupportedError(Error):
    """Valid input this build or device cannot run (e.g. head_dim 96)."""

    kind = ErrorKind.NOT_SUPPORTED


class CompileError(Error):
    """NVRTC rejected generated source (the message carries the log and options)."""

    kind = ErrorKind.COMPILE


class DriverError(Error):
    """A CUDA driver call failed (the message carries cuGetErrorName/String)."""

    kind = ErrorKind.DRIVER


class NoDeviceError(Error):
    """No libcuda.so.1, no driver, or no GPU: GPU work is unavailable."""

    kind = ErrorKind.NO_DEVICE


class CacheError(Error):
    """The cubin cache could not be used."""

    kind = ErrorKind.CACHE


class IoError(Error):
    """A file could not be read or written."""

    kind = ErrorKind.IO


ERROR_CLASSES: dict[ErrorKind, type[Error]] = {
    cls.kind: cls
    for cls in (
        InvalidArgumentError,
        NotSupportedError,
        CompileError,
        DriverError,
        NoDeviceError,
        CacheError,
        IoError,
    )
}
