"""What this machine has for training: GPUs (through NVML), host RAM and CPUs, free disk.

No torch import: `osstune doctor`, `osstune presets` and the wizard call this before any engine
process exists. `probe()` never raises for a missing driver or a failing NVML query; the GPU list is
then empty (with `gpu_error` saying why) or the field that could not be read is None.

The NVML queries live in `nvml_probe`. A profile can also be read from a JSON file to plan for
another machine (`--hardware FILE`):

    {"gpus": [{"name": "NVIDIA GeForce RTX 4090", "memory_total_gib": 23.99}],
     "ram_gib": 128, "cpu_count": 32, "disk_free_gib": 2000}

Extra fields are allowed; `profile_to_dict()` writes the same format (so `osstune doctor --json`
output loads back with `load_profile`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osstune.engine.plan.units import GIB, shown


class HardwareProfileError(ValueError):
    """A hardware profile file that cannot be used; the message names the file and the field."""


@dataclass
class GpuInfo:
    index: int
    name: str
    memory_total_gib: float
    memory_free_gib: float | None = None
    memory_used_gib: float | None = None
    utilization_pct: float | None = None
    compute_capability: str | None = None
    nvlink: bool | None = None  # True: NVML reports at least one active NVLink on this GPU


@dataclass
class GpuLink:
    """Peer-to-peer reachability of a GPU pair, as NVML reports it (None: NVML did not say)."""

    gpu_a: int
    gpu_b: int
    p2p: bool | None
    nvlink: bool | None


@dataclass
class HardwareProfile:
    gpus: list[GpuInfo]
    ram_gib: float
    ram_available_gib: float | None
    cpu_count: int
    disk_free_gib: float
    hf_cache_free_gib: float | None
    driver_version: str | None
    cuda_version: str | None
    gpu_error: str | None  # why the GPU list is empty (no driver, NVML failure, hidden GPUs)
    source: str  # "probe" or the profile file's path
    output_dir: str
    gpu_links: list[GpuLink] = field(default_factory=list)
    # Models whose weights are complete in the HF cache (None: not known, e.g. an older file).
    hf_cached_models: list[str] | None = None
    # Whether the HF cache shares the output folder's filesystem (None: not known). When not,
    # a download is judged against hf_cache_free_gib, the run's writes against disk_free_gib.
    hf_cache_on_output_disk: bool | None = None


# --- local probe -----------------------------------------------------------------------------


def nearest_existing(path: str | os.PathLike[str]) -> Path:
    """The path itself if it exists, else its closest existing ancestor (where it would be made)."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_gib(path: str | os.PathLike[str]) -> float | None:
    try:
        return shutil.disk_usage(nearest_existing(path)).free / GIB
    except OSError:
        return None


def same_disk(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths (or their nearest existing parents) are on one filesystem; True when
    that cannot be told (their needs are then added up, the cautious answer)."""
    try:
        return os.stat(nearest_existing(a)).st_dev == os.stat(nearest_existing(b)).st_dev
    except OSError:
        return True


def hf_cache_dir() -> Path:
    """Where huggingface_hub downloads models, as it decides: HF_HUB_CACHE, else the older
    HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME (~/.cache)/huggingface/hub."""
    def env(name: str) -> str | None:
        value = os.environ.get(name)
        return os.path.expandvars(value) if value else None

    hub = env("HF_HUB_CACHE") or env("HUGGINGFACE_HUB_CACHE")
    if hub:
        return Path(hub).expanduser()
    home = env("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = env("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def output_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why training could not write to `path` (None when it can be created and written)."""
    target = Path(path).expanduser().absolute()
    existing = nearest_existing(target)
    if existing == target and not target.is_dir():
        return f"output directory {path} exists and is not a directory"
    if not existing.is_dir():
        return f"output directory {path} cannot be created: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == target else f" (nearest existing parent {existing})"
        return f"output directory {path} is not writable{where}: permission denied"
    return None


def probe(output_dir: str = "./outputs", nvml: Any = None) -> HardwareProfile:
    """This machine, now. `nvml` replaces the pynvml module (tests pass a fake)."""
    import psutil

    from osstune.engine.plan.nvml_probe import probe_gpus
    from osstune.engine.plan.storage import cached_models

    try:
        gpus, links, driver, cuda, gpu_error = probe_gpus(nvml)
    except Exception as e:  # doctor reports a broken NVML, never crashes
        gpus, links, driver, cuda = [], [], None, None
        gpu_error = f"NVML probe failed: {type(e).__name__}: {e}"
    mem = psutil.virtual_memory()
    disk = free_gib(output_dir)
    return HardwareProfile(
        gpus=gpus,
        ram_gib=round(mem.total / GIB, 2),
        ram_available_gib=round(mem.available / GIB, 2),
        cpu_count=_cpu_count(),
        disk_free_gib=round(disk, 2) if disk is not None else 0.0,
        hf_cache_free_gib=_round(free_gib(hf_cache_dir())),
        driver_version=driver,
        cuda_version=cuda,
        gpu_error=gpu_error,
        source="probe",
        output_dir=str(output_dir),
        gpu_links=links,
        hf_cached_models=cached_models(),
        hf_cache_on_output_disk=same_disk(output_dir, hf_cache_dir()),
    )


def _cpu_count() -> int:
    # The CPUs this process may run on (containers and taskset limit them), not the host's total.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- profile files ---------------------------------------------------------------------------


def profile_to_dict(p: HardwareProfile) -> dict[str, Any]:
    return asdict(p)


# No machine has more (1 EiB of memory or disk): a larger figure is a typo, not a machine.
MOST_GIB = float(1 << 30)
MOST_CPUS = 1 << 20


def _number(data: dict[str, Any], key: str, where: str, *, required: bool, positive: bool = False,
            most: float = MOST_GIB) -> float | None:
    if key not in data or data[key] is None:
        if required:
            raise HardwareProfileError(f"{where}{key}: missing (a number is required)")
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HardwareProfileError(f"{where}{key}: expected a number, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):  # JSON accepts NaN and Infinity
        raise HardwareProfileError(f"{where}{key}: must be a finite number, got {shown(value)}")
    if value < 0 or (positive and value == 0):
        bound = "greater than 0" if positive else "0 or more"
        raise HardwareProfileError(f"{where}{key}: must be {bound}, got {shown(value)}")
    if value > most:
        raise HardwareProfileError(f"{where}{key}: must be at most {most:.0f}, got "
                                   f"{shown(value)}")
    return float(value)


def _optional(data: dict[str, Any], key: str, where: str, kind: type) -> Any:
    value = data.get(key)
    if value is None:
        return None
    is_bool = isinstance(value, bool)
    if not isinstance(value, kind) or (is_bool and kind is not bool):
        raise HardwareProfileError(f"{where}{key}: expected {kind.__name__}, got {shown(value)}")
    return value


def _gpu_from_dict(item: Any, i: int, where: str) -> GpuInfo:
    at = f"{where}gpus[{i}]"
    if not isinstance(item, dict):
        raise HardwareProfileError(f"{at}: expected an object, got {shown(item)}")
    at += "."
    index = _optional(item, "index", at, int)
    name = _optional(item, "name", at, str)
    return GpuInfo(
        index=i if index is None else index,
        name=name or f"GPU {i}",
        memory_total_gib=_number(item, "memory_total_gib", at, required=True, positive=True) or 0.0,
        memory_free_gib=_number(item, "memory_free_gib", at, required=False),
        memory_used_gib=_number(item, "memory_used_gib", at, required=False),
        utilization_pct=_number(item, "utilization_pct", at, required=False, most=100),
        compute_capability=_optional(item, "compute_capability", at, str),
        nvlink=_optional(item, "nvlink", at, bool),
    )


def _links_from_dict(data: dict[str, Any], where: str) -> list[GpuLink]:
    links = data.get("gpu_links") or []
    if not isinstance(links, list):
        raise HardwareProfileError(f"{where}gpu_links: expected a list, got {shown(links)}")
    out = []
    for i, item in enumerate(links):
        at = f"{where}gpu_links[{i}]"
        if not isinstance(item, dict):
            raise HardwareProfileError(f"{at}: expected an object, got {shown(item)}")
        at += "."
        ends = [_optional(item, key, at, int) for key in ("gpu_a", "gpu_b")]
        if None in ends:
            raise HardwareProfileError(f"{at}gpu_a, gpu_b: both GPU indices are required")
        out.append(GpuLink(ends[0], ends[1], _optional(item, "p2p", at, bool),
                           _optional(item, "nvlink", at, bool)))
    return out


def profile_from_dict(data: Any, source: str) -> HardwareProfile:
    where = f"{source}: "
    if not isinstance(data, dict):
        raise HardwareProfileError(f"{where}expected a JSON object at the top level")
    gpus = data.get("gpus")
    if gpus is None:
        raise HardwareProfileError(f"{where}gpus: missing (a list, [] for a machine without GPUs)")
    if not isinstance(gpus, list):
        raise HardwareProfileError(f"{where}gpus: expected a list, got {shown(gpus)}")
    cpu_count = data.get("cpu_count")
    if isinstance(cpu_count, bool) or not isinstance(cpu_count, int) or cpu_count < 1:
        problem = ("missing" if cpu_count is None else
                   f"expected a whole number >= 1, got {shown(cpu_count)}")
        raise HardwareProfileError(f"{where}cpu_count: {problem}")
    if cpu_count > MOST_CPUS:
        problem = f"must be at most {MOST_CPUS}, got {shown(cpu_count)}"
        raise HardwareProfileError(f"{where}cpu_count: {problem}")
    output_dir = _optional(data, "output_dir", where, str)
    gpu_list = [_gpu_from_dict(item, i, where) for i, item in enumerate(gpus)]
    return HardwareProfile(
        gpus=gpu_list,
        ram_gib=_number(data, "ram_gib", where, required=True, positive=True) or 0.0,
        ram_available_gib=_number(data, "ram_available_gib", where, required=False),
        cpu_count=cpu_count,
        disk_free_gib=_number(data, "disk_free_gib", where, required=True) or 0.0,
        hf_cache_free_gib=_number(data, "hf_cache_free_gib", where, required=False),
        driver_version=_optional(data, "driver_version", where, str),
        cuda_version=_optional(data, "cuda_version", where, str),
        gpu_error=_optional(data, "gpu_error", where, str)
        or (None if gpu_list else "the profile lists no GPUs"),
        source=source,
        output_dir=output_dir or "./outputs",
        gpu_links=_links_from_dict(data, where),
        hf_cached_models=_names(data, "hf_cached_models", where),
        hf_cache_on_output_disk=_optional(data, "hf_cache_on_output_disk", where, bool),
    )


def _names(data: dict[str, Any], key: str, where: str) -> list[str] | None:
    value = data.get(key)
    if value is not None and not (isinstance(value, list)
                                  and all(isinstance(v, str) for v in value)):
        raise HardwareProfileError(f"{where}{key}: expected a list of model ids, got "
                                   f"{shown(value)}")
    return value


def load_profile(path: str | os.PathLike[str]) -> HardwareProfile:
    """Read a hardware profile JSON file; HardwareProfileError names the file and the field."""
    if Path(path).exists() and not (Path(path).is_file() or Path(path).is_dir()):
        # a device or a FIFO: reading it would never end (a folder fails to open below)
        raise HardwareProfileError(f"{path}: cannot read: not a regular file (expected JSON)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise HardwareProfileError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise HardwareProfileError(f"{path}: not a text file (expected JSON)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise HardwareProfileError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise HardwareProfileError(f"{path}: not a hardware profile (nested too deeply)") from None
    except ValueError as e:  # a number of more than 4300 digits
        raise HardwareProfileError(f"{path}: not a hardware profile ({str(e).split(':')[0]})"
                                   ) from None
    return profile_from_dict(data, str(path))
