"""ctypes binding of libcanopy_bench_capi.so (bench/gpu/canopy_capi.h).

Pure standard library: usable without torch (prewarm, plan inspection) and
with it (run_bench.py passes torch's device pointers and stream handles).
Every failing call raises CanopyError with the library's message and status.
"""
import ctypes
import json
import os

ABI_VERSION = 1

STATUS_NAMES = {
    0: "ok", 1: "invalid_argument", 2: "not_supported", 3: "compile", 4: "driver",
    5: "no_device", 6: "cache", 7: "io", 8: "other",
}

# What the build step plans for when there is no GPU: the benchmark's device.
H200 = {"name": "H200 (described)", "arch": 90, "num_sms": 132, "max_smem_per_block": 227 * 1024}


class CanopyError(RuntimeError):
    def __init__(self, status, message):
        super().__init__(f"[{STATUS_NAMES.get(status, status)}] {message}")
        self.status = status
        self.kind = STATUS_NAMES.get(status, str(status))


def default_library_path():
    """$CANOPY_BENCH_CAPI, else the usual build folders of this checkout."""
    env = os.environ.get("CANOPY_BENCH_CAPI")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for rel in ("build-gpu-bench/lib/libcanopy_bench_capi.so",
                "build/bench/gpu/libcanopy_bench_capi.so"):
        path = os.path.join(root, rel)
        if os.path.exists(path):
            return path
    return "libcanopy_bench_capi.so"  # let the loader search


_VP = ctypes.c_void_p
_SIGNATURES = {
    "canopy_bench_abi_version": [],
    "canopy_bench_last_error": [],
    "canopy_bench_gpu_available": [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_char_p)],
    "canopy_bench_runtime_create": [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                                    ctypes.POINTER(_VP)],
    "canopy_bench_runtime_destroy": [_VP],
    "canopy_bench_runtime_info": [_VP, ctypes.POINTER(ctypes.c_char_p)],
    "canopy_bench_suite_names": [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)],
    "canopy_bench_workload_from_suite": [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_VP)],
    "canopy_bench_workload_from_tree": [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                        ctypes.c_int, ctypes.POINTER(_VP)],
    "canopy_bench_workload_from_batch": [ctypes.c_char_p, ctypes.POINTER(_VP)],
    "canopy_bench_workload_destroy": [_VP],
    "canopy_bench_workload_info": [_VP, ctypes.POINTER(ctypes.c_char_p)],
    "canopy_bench_workload_sizes": [_VP, ctypes.POINTER(ctypes.c_int64),
                                    ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64)],
    "canopy_bench_workload_tables": [_VP, ctypes.POINTER(ctypes.c_int32),
                                     ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32)],
    "canopy_bench_plan_create": [_VP, _VP, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_VP)],
    "canopy_bench_plan_destroy": [_VP],
    "canopy_bench_plan_info": [_VP, ctypes.POINTER(ctypes.c_char_p)],
    "canopy_bench_plan_json": [_VP, ctypes.POINTER(ctypes.c_char_p)],
    "canopy_bench_plan_launches": [_VP, ctypes.POINTER(ctypes.c_int)],
    "canopy_bench_run": [_VP, _VP, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
                         ctypes.c_uint64, ctypes.c_uint64, _VP],
    "canopy_bench_prewarm_create": [ctypes.c_char_p, ctypes.POINTER(_VP)],
    "canopy_bench_prewarm_add": [_VP, _VP],
    "canopy_bench_prewarm_compile": [_VP, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)],
    "canopy_bench_prewarm_destroy": [_VP],
}


def _b(s):
    return None if s is None else s.encode()


class Lib:
    """The loaded library; one per process is enough."""

    def __init__(self, path=None):
        self.path = path or default_library_path()
        self.dll = ctypes.CDLL(self.path)
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(self.dll, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_char_p if name == "canopy_bench_last_error" else ctypes.c_int
        abi = self.dll.canopy_bench_abi_version()
        if abi != ABI_VERSION:
            raise CanopyError(8, f"{self.path}: C API version {abi}, this binding speaks {ABI_VERSION}")

    def call(self, name, *args):
        status = getattr(self.dll, name)(*args)
        if status != 0:
            msg = self.dll.canopy_bench_last_error() or b""
            raise CanopyError(status, msg.decode(errors="replace"))

    def _json(self, name, *args):
        out = ctypes.c_char_p()
        self.call(name, *args, ctypes.byref(out))
        return json.loads(out.value.decode())

    # -- device -------------------------------------------------------------
    def gpu_available(self):
        avail, why = ctypes.c_int(), ctypes.c_char_p()
        self.call("canopy_bench_gpu_available", ctypes.byref(avail), ctypes.byref(why))
        return bool(avail.value), (why.value or b"").decode(errors="replace")

    def suite_names(self, suite_path=None):
        return self._json("canopy_bench_suite_names", _b(suite_path))


class Runtime:
    def __init__(self, lib, device=0, cache_dir=None, tuning_db=None):
        self.lib, self.handle = lib, _VP()
        lib.call("canopy_bench_runtime_create", device, _b(cache_dir), _b(tuning_db),
                 ctypes.byref(self.handle))

    def info(self):
        return self.lib._json("canopy_bench_runtime_info", self.handle)

    def close(self):
        if self.handle:
            self.lib.call("canopy_bench_runtime_destroy", self.handle)
            self.handle = _VP()


class Workload:
    """A workload's spec (info) and block tables (indptr, indices, seq_lens as lists)."""

    def __init__(self, lib, handle):
        self.lib, self.handle = lib, handle
        self.info = lib._json("canopy_bench_workload_info", handle)
        b, n, p = ctypes.c_int64(), ctypes.c_int64(), ctypes.c_int64()
        lib.call("canopy_bench_workload_sizes", handle, ctypes.byref(b), ctypes.byref(n),
                 ctypes.byref(p))
        indptr = (ctypes.c_int32 * (b.value + 1))()
        indices = (ctypes.c_int32 * max(n.value, 1))()
        seq_lens = (ctypes.c_int32 * max(b.value, 1))()
        lib.call("canopy_bench_workload_tables", handle, indptr, indices, seq_lens)
        self.indptr = list(indptr)
        self.indices = list(indices)[: n.value]
        self.seq_lens = list(seq_lens)[: b.value]
        self.num_pages = p.value

    @classmethod
    def from_suite(cls, lib, name, suite_path=None):
        h = _VP()
        lib.call("canopy_bench_workload_from_suite", _b(name), _b(suite_path), ctypes.byref(h))
        return cls(lib, h)

    @classmethod
    def from_tree(cls, lib, tree, model=None, dtype=None, page_size=0):
        h = _VP()
        lib.call("canopy_bench_workload_from_tree", _b(tree), _b(model), _b(dtype), page_size,
                 ctypes.byref(h))
        return cls(lib, h)

    @classmethod
    def from_batch(cls, lib, path):
        h = _VP()
        lib.call("canopy_bench_workload_from_batch", _b(path), ctypes.byref(h))
        return cls(lib, h)

    def close(self):
        if self.handle:
            self.lib.call("canopy_bench_workload_destroy", self.handle)
            self.handle = _VP()


class Plan:
    """runtime None: a host plan for `device` (default: the H200 description)."""

    def __init__(self, lib, workload, options=None, runtime=None, device=None):
        self.lib, self.handle, self.runtime = lib, _VP(), runtime
        if runtime is None and device is None:
            device = H200
        lib.call("canopy_bench_plan_create", runtime.handle if runtime else None, workload.handle,
                 _b(json.dumps(options or {})), _b(json.dumps(device) if device else None),
                 ctypes.byref(self.handle))

    def info(self):
        return self.lib._json("canopy_bench_plan_info", self.handle)

    def to_json(self):
        return self.lib._json("canopy_bench_plan_json", self.handle)

    def launches(self):
        n = ctypes.c_int()
        self.lib.call("canopy_bench_plan_launches", self.handle, ctypes.byref(n))
        return n.value

    def run(self, q, k, v, out, lse=0, stream=0):
        """Device pointers as ints; stream a CUstream as int (0: legacy stream)."""
        if self.runtime is None:
            raise CanopyError(1, "a host plan (made without a runtime) cannot run")
        self.lib.call("canopy_bench_run", self.runtime.handle, self.handle, q, k, v, out, lse,
                      _VP(stream) if stream else None)

    def close(self):
        if self.handle:
            self.lib.call("canopy_bench_plan_destroy", self.handle)
            self.handle = _VP()


class Prewarm:
    def __init__(self, lib, cache_dir=None):
        self.lib, self.handle = lib, _VP()
        lib.call("canopy_bench_prewarm_create", _b(cache_dir), ctypes.byref(self.handle))

    def add(self, plan):
        self.lib.call("canopy_bench_prewarm_add", self.handle, plan.handle)

    def compile(self, threads=0):
        """Returns the summary dict; raises CanopyError (summary in .summary) on failures."""
        out = ctypes.c_char_p()
        status = self.lib.dll.canopy_bench_prewarm_compile(self.handle, threads, ctypes.byref(out))
        summary = json.loads(out.value.decode()) if out.value else {}
        if status != 0:
            err = CanopyError(status, (self.lib.dll.canopy_bench_last_error() or b"").decode())
            err.summary = summary
            raise err
        return summary

    def close(self):
        if self.handle:
            self.lib.call("canopy_bench_prewarm_destroy", self.handle)
            self.handle = _VP()
