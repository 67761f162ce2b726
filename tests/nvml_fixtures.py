"""A fake NVML layer for the hardware probe's tests: a pynvml stand-in (FakeNvml) and a fake
libnvidia-ml made of ctypes callbacks under the real pynvml wrappers (fake_libnvidia_ml)."""

from __future__ import annotations

import ctypes as C
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

MIB = 1024**2


class FakeNVMLError(Exception):
    pass


class FakeNotSupported(FakeNVMLError):
    pass


class FakeInvalidArgument(FakeNVMLError):
    pass


@dataclass
class FakeGpu:
    name: str | bytes
    total_mib: int
    used_mib: int = 0
    util: int = 0
    cc: tuple[int, int] = (9, 0)
    nvlinks: int | None = None  # active links; None: the card has no NVLink (NotSupported)
    total_links: int = 18


@dataclass
class FakeNvml:
    """The parts of pynvml that osstune.engine.plan.hardware calls, with injectable failures."""

    gpus: list[FakeGpu]
    driver: str | bytes = "550.54.15"
    cuda: int = 12040
    init_error: Exception | None = None
    failing: set[tuple[str, int | None]] = field(default_factory=set)  # (function, gpu index)
    p2p_ok: bool = True
    calls: list[str] = field(default_factory=list)

    NVMLError = FakeNVMLError
    NVMLError_NotSupported = FakeNotSupported
    NVML_FEATURE_ENABLED = 1
    NVML_NVLINK_MAX_LINKS = 18
    NVML_P2P_CAPS_INDEX_READ = (0,)  # sic: nvidia-ml-py 13 has a trailing comma there
    NVML_P2P_CAPS_INDEX_NVLINK = 3
    NVML_P2P_STATUS_OK = 0

    def _check(self, fn: str, index: int | None = None) -> None:
        self.calls.append(fn)
        if (fn, index) in self.failing or (fn, None) in self.failing:
            raise FakeNVMLError(f"{fn} failed")

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._check("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        self._check("nvmlDeviceGetHandleByIndex", i)
        return i

    def nvmlDeviceGetName(self, h: int) -> str | bytes:
        self._check("nvmlDeviceGetName", h)
        return self.gpus[h].name

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        self._check("nvmlDeviceGetMemoryInfo", h)
        g = self.gpus[h]
        return SimpleNamespace(total=g.total_mib * MIB, used=g.used_mib * MIB,
                               free=(g.total_mib - g.used_mib) * MIB)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        self._check("nvmlDeviceGetUtilizationRates", h)
        return SimpleNamespace(gpu=self.gpus[h].util, memory=0)

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        self._check("nvmlDeviceGetCudaComputeCapability", h)
        return self.gpus[h].cc

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        self._check("nvmlDeviceGetNvLinkState", h)
        g = self.gpus[h]
        if g.nvlinks is None:
            raise FakeNotSupported("Not Supported")
        if link >= g.total_links:
            raise FakeInvalidArgument("Invalid Argument")
        return 1 if link < g.nvlinks else 0

    def nvmlDeviceGetP2PStatus(self, a: int, b: int, caps: int) -> int:
        self._check("nvmlDeviceGetP2PStatus", a)
        if not isinstance(caps, int):  # what ctypes does with the tuple
            raise TypeError("Don't know how to convert parameter 3")
        if caps == self.NVML_P2P_CAPS_INDEX_NVLINK:
            both = self.gpus[a].nvlinks and self.gpus[b].nvlinks
            return 0 if both else 4
        return 0 if self.p2p_ok else 2


def two_h100() -> FakeNvml:
    return FakeNvml([FakeGpu("NVIDIA H100 80GB HBM3", 81559, used_mib=4096, util=37, nvlinks=18),
                     FakeGpu(b"NVIDIA H100 80GB HBM3", 81559, nvlinks=18)])



@pytest.fixture(autouse=True)
def no_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)



# --- the real pynvml wrappers over a fake libnvidia-ml ----------------------------------------
# pynvml passes ctypes arguments to the C library; a fake library made of ctypes callbacks with
# the C signatures checks those conversions too (nvidia-ml-py 13's NVML_P2P_CAPS_INDEX_READ is a
# tuple, which only fails there).

BASE_HANDLE = 0x1000  # fake device handles: BASE_HANDLE + index


def _c_func(*argtypes: Any) -> Any:
    def wrap(fn: Any) -> Any:
        return C.CFUNCTYPE(C.c_int, *argtypes)(fn)
    return wrap


def _put(ptr: int, ctype: Any, value: Any) -> int:
    C.cast(ptr, C.POINTER(ctype))[0] = value
    return 0


def _put_text(buf: int, size: int, text: str | bytes) -> int:
    raw = (text.encode() if isinstance(text, str) else text)[: size - 1] + b"\0"
    C.memmove(buf, raw, len(raw))
    return 0


class _FakeLib:
    """The device queries, answering from FakeGpu records; each returns an NVML status."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        import pynvml

        self.gpus, self.nvml = gpus, pynvml

    def gpu(self, handle: int) -> FakeGpu:
        return self.gpus[handle - BASE_HANDLE]

    def handle(self, i: int, p: int) -> int:
        if i >= len(self.gpus):
            return self.nvml.NVML_ERROR_INVALID_ARGUMENT
        return _put(p, C.c_void_p, BASE_HANDLE + i)

    def memory(self, h: int, p: int) -> int:
        g = self.gpu(h)
        mem = C.cast(p, C.POINTER(self.nvml.c_nvmlMemory_t)).contents
        mem.total, mem.used = g.total_mib * MIB, g.used_mib * MIB
        mem.free = mem.total - mem.used
        return 0

    def utilization(self, h: int, p: int) -> int:
        util = C.cast(p, C.POINTER(self.nvml.c_nvmlUtilization_t)).contents
        util.gpu, util.memory = self.gpu(h).util, 0
        return 0

    def capability(self, h: int, major: int, minor: int) -> int:
        _put(major, C.c_int, self.gpu(h).cc[0])
        return _put(minor, C.c_int, self.gpu(h).cc[1])

    def nvlink_state(self, h: int, link: int, p: int) -> int:
        g = self.gpu(h)
        if g.nvlinks is None:
            return self.nvml.NVML_ERROR_NOT_SUPPORTED
        if link >= g.total_links:
            return self.nvml.NVML_ERROR_INVALID_ARGUMENT
        return _put(p, C.c_uint, int(link < g.nvlinks))

    def p2p(self, a: int, b: int, caps: int, p: int) -> int:
        return _put(p, C.c_uint, self.nvml.NVML_P2P_STATUS_OK)

    def name(self, h: int, buf: int, size: int) -> int:
        return _put_text(buf, size, self.gpu(h).name)


def fake_libnvidia_ml(gpus: list[FakeGpu]) -> SimpleNamespace:
    """A stand-in for pynvml.nvmlLib: the C entry points the probe reaches, as ctypes callbacks."""
    lib = _FakeLib(gpus)
    v, u = C.c_void_p, C.c_uint
    funcs = {
        "nvmlInitWithFlags": _c_func(u)(lambda flags: 0),
        "nvmlInit_v2": _c_func()(lambda: 0),
        "nvmlShutdown": _c_func()(lambda: 0),
        "nvmlSystemGetDriverVersion": _c_func(v, u)(lambda b, n: _put_text(b, n, "580.95.05")),
        "nvmlSystemGetCudaDriverVersion": _c_func(v)(lambda p: _put(p, C.c_int, 13000)),
        "nvmlSystemGetCudaDriverVersion_v2": _c_func(v)(lambda p: _put(p, C.c_int, 13000)),
        "nvmlDeviceGetCount_v2": _c_func(v)(lambda p: _put(p, C.c_uint, len(gpus))),
        "nvmlDeviceGetHandleByIndex_v2": _c_func(u, v)(lib.handle),
        "nvmlDeviceGetName": _c_func(v, v, u)(lib.name),
        "nvmlDeviceGetMemoryInfo": _c_func(v, v)(lib.memory),
        "nvmlDeviceGetUtilizationRates": _c_func(v, v)(lib.utilization),
        "nvmlDeviceGetCudaComputeCapability": _c_func(v, v, v)(lib.capability),
        "nvmlDeviceGetNvLinkState": _c_func(v, u, v)(lib.nvlink_state),
        "nvmlDeviceGetP2PStatus": _c_func(v, v, u, v)(lib.p2p),
    }
    return SimpleNamespace(**funcs)
