"""GPUs through NVML: names, memory, utilization, NVLink and peer-to-peer links.

`probe_gpus()` never raises for a missing driver or a failing NVML query: the GPU list is then
empty with an error saying why, or the field that could not be read is None. No torch import.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from osstune.engine.plan.hardware import GpuInfo, GpuLink
from osstune.engine.plan.units import GIB, plural


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _visible_indices() -> set[int] | None:
    """GPU indices allowed by CUDA_VISIBLE_DEVICES when it is a plain list of integers."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not all(p.lstrip("-").isdigit() for p in parts):
        return None  # UUIDs or MIG names: NVML indices cannot be matched here, show all GPUs
    visible: set[int] = set()
    for p in parts:
        if int(p) < 0:
            break  # CUDA stops at the first invalid index
        visible.add(int(p))
    return visible


class _Nvml:
    """Calls into an NVML module (pynvml or a test fake); a failed query gives None.

    Any exception from a query counts as "NVML did not say": besides NVMLError, pynvml's ctypes
    layer raises ctypes.ArgumentError/TypeError for arguments it cannot convert.
    """

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def query(self, fn_name: str, *args: Any) -> Any:
        fn = getattr(self.nvml, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:  # a failed query must not end the probe
            return None

    def nvlink_active(self, handle: Any) -> bool | None:
        enabled = getattr(self.nvml, "NVML_FEATURE_ENABLED", 1)
        not_supported = getattr(self.nvml, "NVMLError_NotSupported", None)
        answered = False
        for link in range(getattr(self.nvml, "NVML_NVLINK_MAX_LINKS", 18)):
            try:
                state = self.nvml.nvmlDeviceGetNvLinkState(handle, link)
            except Exception as e:  # see query()
                # NotSupported on the first links: a card without NVLink. Past the last link of a
                # card with NVLink, NVML answers InvalidArgument: stop there.
                if not_supported is not None and isinstance(e, not_supported):
                    answered = True
                    continue
                break
            answered = True
            if state == enabled:
                return True
        return False if answered else None

    def p2p(self, a: Any, b: Any, caps_name: str) -> bool | None:
        caps = getattr(self.nvml, caps_name, None)
        if isinstance(caps, tuple):  # nvidia-ml-py 13 defines NVML_P2P_CAPS_INDEX_READ = 0,
            caps = caps[0] if caps else None
        if caps is None:
            return None
        status = self.query("nvmlDeviceGetP2PStatus", a, b, caps)
        if status is None:
            return None
        return status == getattr(self.nvml, "NVML_P2P_STATUS_OK", 0)


def _gpu(nv: _Nvml, index: int, handle: Any) -> GpuInfo:
    name = nv.query("nvmlDeviceGetName", handle)
    mem = nv.query("nvmlDeviceGetMemoryInfo", handle)
    util = nv.query("nvmlDeviceGetUtilizationRates", handle)
    cc = nv.query("nvmlDeviceGetCudaComputeCapability", handle)
    return GpuInfo(
        index=index,
        name=_text(name) if name is not None else f"GPU {index}",
        memory_total_gib=round(mem.total / GIB, 2) if mem is not None else 0.0,
        memory_free_gib=round(mem.free / GIB, 2) if mem is not None else None,
        memory_used_gib=round(mem.used / GIB, 2) if mem is not None else None,
        utilization_pct=float(util.gpu) if util is not None else None,
        compute_capability=f"{cc[0]}.{cc[1]}" if cc is not None else None,
        nvlink=nv.nvlink_active(handle),
    )


def _cuda_version(raw: int | None) -> str | None:
    # NVML encodes CUDA 12.8 as 12080.
    return None if raw is None else f"{raw // 1000}.{raw % 1000 // 10}"


_GpuProbe = tuple[list[GpuInfo], list[GpuLink], str | None, str | None, str | None]


def probe_gpus(nvml: Any) -> _GpuProbe:
    """(gpus, links, driver, cuda, error). Never raises for NVML trouble."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return [], [], None, None, "nvidia-ml-py (pynvml) is not installed"
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        return [], [], None, None, f"NVIDIA driver not available: {e}"
    except OSError as e:  # a broken libnvidia-ml can fail below NVML's own error handling
        return [], [], None, None, f"NVIDIA driver not available: {e}"
    try:
        nv = _Nvml(nvml)
        driver = nv.query("nvmlSystemGetDriverVersion")
        cuda = _cuda_version(nv.query("nvmlSystemGetCudaDriverVersion"))
        count = nv.query("nvmlDeviceGetCount")
        if count is None:
            return [], [], driver and _text(driver), cuda, "NVML could not count the GPUs"
        visible = _visible_indices()
        handles: dict[int, Any] = {}
        for i in range(count):
            if visible is not None and i not in visible:
                continue
            handle = nv.query("nvmlDeviceGetHandleByIndex", i)
            if handle is not None:
                handles[i] = handle
        gpus = [_gpu(nv, i, h) for i, h in handles.items()]
        links = [
            GpuLink(a, b, nv.p2p(handles[a], handles[b], "NVML_P2P_CAPS_INDEX_READ"),
                    nv.p2p(handles[a], handles[b], "NVML_P2P_CAPS_INDEX_NVLINK"))
            for a in handles for b in handles if a < b
        ]
        error = None
        if not gpus:
            if count == 0:
                error = "the NVIDIA driver reports no GPUs"
            elif visible is not None and not (visible & set(range(count))):
                hidden = os.environ["CUDA_VISIBLE_DEVICES"]
                error = f"CUDA_VISIBLE_DEVICES={hidden!r} hides all {plural(count, 'GPU')}"
            else:
                error = f"NVML found {plural(count, 'GPU')} but could not open any"
        return gpus, links, driver and _text(driver), cuda, error
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
