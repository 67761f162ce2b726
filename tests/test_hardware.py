"""Hardware probe (through a fake NVML layer) and hardware profile files."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from osstune.engine.plan.hardware import (
    GIB,
    HardwareProfileError,
    free_gib,
    hf_cache_dir,
    load_profile,
    nearest_existing,
    output_dir_problem,
    probe,
    profile_to_dict,
)
from osstune.tui.commands.doctor import describe_links

PROFILES = Path(__file__).parent / "profiles"
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
def _no_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_probe_parses_gpus_driver_and_links(tmp_path: Path) -> None:
    nvml = two_h100()
    p = probe(str(tmp_path / "out"), nvml=nvml)
    assert [g.index for g in p.gpus] == [0, 1]
    g0, g1 = p.gpus
    assert g0.name == g1.name == "NVIDIA H100 80GB HBM3"  # bytes names are decoded
    assert g0.memory_total_gib == pytest.approx(79.65, abs=0.01)
    assert g0.memory_used_gib == pytest.approx(4.0)
    assert g0.memory_free_gib == pytest.approx(75.65, abs=0.01)
    assert g0.utilization_pct == 37.0
    assert g0.compute_capability == "9.0"
    assert g0.nvlink is True
    assert p.driver_version == "550.54.15"
    assert p.cuda_version == "12.4"
    assert p.gpu_error is None
    assert len(p.gpu_links) == 1
    assert (p.gpu_links[0].p2p, p.gpu_links[0].nvlink) == (True, True)
    assert describe_links(p.gpu_links) == "all 1 GPU pair, over NVLink"
    assert p.source == "probe"
    assert nvml.calls[0] == "nvmlInit" and nvml.calls[-1] == "nvmlShutdown"


def test_probe_host_ram_cpus_and_disk(tmp_path: Path) -> None:
    p = probe(str(tmp_path / "not" / "yet"), nvml=two_h100())
    assert p.ram_gib > 0 and p.ram_available_gib is not None and p.ram_available_gib <= p.ram_gib
    assert p.cpu_count >= 1
    # The output dir does not exist yet: free space is measured where it would be created.
    assert p.disk_free_gib == pytest.approx(shutil.disk_usage(tmp_path).free / GIB, rel=0.05)
    assert p.output_dir == str(tmp_path / "not" / "yet")


@pytest.mark.parametrize("error", [FakeNVMLError("NVML Shared Library Not Found"),
                                   FakeNVMLError("Driver Not Loaded"), OSError("bad libnvidia-ml")])
def test_no_driver_gives_empty_gpu_list_with_reason(error: Exception) -> None:
    nvml = FakeNvml([FakeGpu("x", 1000)], init_error=error)
    p = probe(nvml=nvml)
    assert p.gpus == [] and p.gpu_links == []
    assert p.gpu_error == f"NVIDIA driver not available: {error}"
    assert p.driver_version is None and p.cuda_version is None
    assert p.ram_gib > 0
    assert "nvmlShutdown" not in nvml.calls


def test_missing_pynvml_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    p = probe()
    assert p.gpus == []
    assert p.gpu_error == "nvidia-ml-py (pynvml) is not installed"


def test_failing_queries_leave_fields_empty_not_crash() -> None:
    nvml = two_h100()
    nvml.failing = {("nvmlDeviceGetMemoryInfo", 1), ("nvmlDeviceGetUtilizationRates", None),
                    ("nvmlDeviceGetCudaComputeCapability", 0), ("nvmlDeviceGetName", 1),
                    ("nvmlSystemGetDriverVersion", None), ("nvmlDeviceGetP2PStatus", None)}
    p = probe(nvml=nvml)
    g0, g1 = p.gpus
    assert g0.memory_total_gib == pytest.approx(79.65, abs=0.01) and g0.compute_capability is None
    assert g1.name == "GPU 1"
    assert g1.memory_total_gib == 0.0 and g1.memory_free_gib is None and g1.memory_used_gib is None
    assert g0.utilization_pct is None and g1.utilization_pct is None
    assert g1.compute_capability == "9.0"
    assert p.driver_version is None and p.cuda_version == "12.4"
    assert p.gpu_links[0].p2p is None
    assert describe_links(p.gpu_links) == "not reported by NVML"
    assert nvml.calls[-1] == "nvmlShutdown"


def test_pcie_cards_without_nvlink_or_p2p() -> None:
    nvml = FakeNvml([FakeGpu("NVIDIA GeForce RTX 4090", 24564, cc=(8, 9)),
                     FakeGpu("NVIDIA GeForce RTX 4090", 24564, cc=(8, 9))], p2p_ok=False)
    p = probe(nvml=nvml)
    assert [g.nvlink for g in p.gpus] == [False, False]
    assert p.gpus[0].memory_total_gib == pytest.approx(23.99, abs=0.01)
    assert p.gpus[0].compute_capability == "8.9"
    assert (p.gpu_links[0].p2p, p.gpu_links[0].nvlink) == (False, False)
    assert describe_links(p.gpu_links) == "no P2P between GPUs 0-1"


def test_nvlink_state_error_other_than_not_supported_is_unknown() -> None:
    nvml = two_h100()
    nvml.failing = {("nvmlDeviceGetNvLinkState", 0)}
    p = probe(nvml=nvml)
    assert p.gpus[0].nvlink is None and p.gpus[1].nvlink is True


def test_non_nvml_exceptions_never_crash_the_probe() -> None:
    class BrokenTypes(FakeNvml):
        def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
            raise TypeError("Don't know how to convert parameter 2")

        def nvmlDeviceGetUtilizationRates(self, h: int) -> object:
            raise OSError("ctypes call failed")

    p = probe(nvml=BrokenTypes(two_h100().gpus))
    assert len(p.gpus) == 2 and p.gpus[0].nvlink is None and p.gpus[0].utilization_pct is None

    class BrokenShape(FakeNvml):
        def nvmlDeviceGetMemoryInfo(self, h: int) -> object:
            return object()  # no .total: fails in our parsing, not in NVML

    p = probe(nvml=BrokenShape(two_h100().gpus))
    assert p.gpus == [] and p.ram_gib > 0
    assert p.gpu_error == (
        "NVML probe failed: AttributeError: 'object' object has no attribute 'total'")


def test_count_failure_and_zero_gpus() -> None:
    nvml = two_h100()
    nvml.failing = {("nvmlDeviceGetCount", None)}
    p = probe(nvml=nvml)
    assert p.gpus == [] and p.gpu_error == "NVML could not count the GPUs"
    assert p.driver_version == "550.54.15"
    p = probe(nvml=FakeNvml([]))
    assert p.gpus == [] and p.gpu_error == "the NVIDIA driver reports no GPUs"


def test_unopenable_gpu_is_skipped() -> None:
    nvml = two_h100()
    nvml.failing = {("nvmlDeviceGetHandleByIndex", 0)}
    assert [g.index for g in probe(nvml=nvml).gpus] == [1]
    nvml.failing = {("nvmlDeviceGetHandleByIndex", None)}
    assert probe(nvml=nvml).gpu_error == "NVML found 2 GPUs but could not open any"


def test_cuda_visible_devices_filters_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    p = probe(nvml=two_h100())
    assert [g.index for g in p.gpus] == [1] and p.gpu_links == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    p = probe(nvml=two_h100())
    assert p.gpus == [] and p.gpu_error == "CUDA_VISIBLE_DEVICES='' hides all 2 GPUs"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8c1a2b3c")  # UUIDs: not matched, all shown
    assert len(probe(nvml=two_h100()).gpus) == 2


def test_hf_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_cache_dir() == tmp_path / "hub"
    assert probe(nvml=FakeNvml([])).hf_cache_free_gib == pytest.approx(
        shutil.disk_usage(tmp_path).free / GIB, rel=0.05)


def test_output_dir_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert nearest_existing(tmp_path / "a" / "b") == tmp_path
    assert free_gib(tmp_path / "a" / "b") == pytest.approx(free_gib(tmp_path), rel=0.05)
    assert output_dir_problem(tmp_path / "a" / "b") is None
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert output_dir_problem(afile) == f"output directory {afile} exists and is not a directory"
    assert output_dir_problem(afile / "run") == (
        f"output directory {afile / 'run'} cannot be created: {afile} is not a directory")
    # Permission bits do not stop root, so the check itself is faked here.
    monkeypatch.setattr("osstune.engine.plan.hardware.os.access", lambda path, mode: False)
    assert output_dir_problem(tmp_path / "new") == (
        f"output directory {tmp_path / 'new'} is not writable (nearest existing parent "
        f"{tmp_path}): permission denied")


# --- profile files ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.json")), ids=lambda p: p.stem)
def test_bundled_profiles_load(path: Path) -> None:
    p = load_profile(path)
    assert p.source == str(path)
    assert p.ram_gib > 0 and p.disk_free_gib > 0 and p.cpu_count >= 1
    assert all(g.memory_total_gib > 0 for g in p.gpus)
    assert (p.gpu_error is None) == bool(p.gpus)


def test_issue_example_format_loads(tmp_path: Path) -> None:
    f = tmp_path / "rig.json"
    f.write_text('{"gpus": [{"name": "NVIDIA GeForce RTX 4090", "memory_total_gib": 23.99}], '
                 '"ram_gib": 128, "cpu_count": 32, "disk_free_gib": 2000, "owner": "lab"}')
    p = load_profile(f)
    assert p.gpus[0].name == "NVIDIA GeForce RTX 4090" and p.gpus[0].index == 0
    assert p.gpus[0].memory_total_gib == 23.99
    assert (p.ram_gib, p.cpu_count, p.disk_free_gib) == (128, 32, 2000)
    assert p.output_dir == "./outputs" and p.ram_available_gib is None


def test_probe_json_loads_back_as_a_profile(tmp_path: Path) -> None:
    probed = probe(str(tmp_path), nvml=two_h100())
    f = tmp_path / "me.json"
    f.write_text(json.dumps(profile_to_dict(probed)))
    loaded = load_profile(f)
    assert loaded.gpus == probed.gpus
    assert loaded.gpu_links == probed.gpu_links and loaded.gpu_links  # doctor shows them again
    assert (loaded.ram_gib, loaded.cpu_count, loaded.disk_free_gib, loaded.driver_version) == (
        probed.ram_gib, probed.cpu_count, probed.disk_free_gib, probed.driver_version)
    assert loaded.source == str(f) and loaded.output_dir == str(tmp_path)


GOOD = {"gpus": [{"name": "A", "memory_total_gib": 80}], "ram_gib": 64, "cpu_count": 8,
        "disk_free_gib": 500}


@pytest.mark.parametrize(("change", "message"), [
    ({"gpus": None}, "gpus: missing (a list, [] for a machine without GPUs)"),
    ({"gpus": {"name": "A"}}, "gpus: expected a list, got {'name': 'A'}"),
    ({"gpus": ["A100"]}, "gpus[0]: expected an object, got 'A100'"),
    ({"gpus": [{"name": "A"}]}, "gpus[0].memory_total_gib: missing (a number is required)"),
    ({"gpu_links": [{"gpu_a": 0}]}, "gpu_links[0].gpu_a, gpu_b: both GPU indices are required"),
    ({"gpu_links": [{"gpu_a": 0, "gpu_b": 1, "p2p": "yes"}]},
     "gpu_links[0].p2p: expected bool, got 'yes'"),
    ({"gpus": [{"memory_total_gib": "80GB"}]},
     "gpus[0].memory_total_gib: expected a number, got '80GB'"),
    ({"gpus": [{"memory_total_gib": 80}, {"memory_total_gib": 0}]},
     "gpus[1].memory_total_gib: must be greater than 0, got 0"),
    ({"gpus": [{"memory_total_gib": True}]},
     "gpus[0].memory_total_gib: expected a number, got True"),
    ({"gpus": [{"memory_total_gib": 80, "name": 4090}]}, "gpus[0].name: expected str, got 4090"),
    ({"gpus": [{"memory_total_gib": 80, "nvlink": "yes"}]},
     "gpus[0].nvlink: expected bool, got 'yes'"),
    ({"ram_gib": None}, "ram_gib: missing (a number is required)"),
    ({"ram_gib": -4}, "ram_gib: must be greater than 0, got -4"),
    ({"disk_free_gib": "2TB"}, "disk_free_gib: expected a number, got '2TB'"),
    ({"disk_free_gib": float("nan")}, "disk_free_gib: must be a finite number, got nan"),
    ({"gpus": [{"memory_total_gib": float("inf")}]},
     "gpus[0].memory_total_gib: must be a finite number, got inf"),
    ({"ram_gib": float("-inf")}, "ram_gib: must be a finite number, got -inf"),
    ({"cpu_count": None}, "cpu_count: missing"),
    ({"cpu_count": 2.5}, "cpu_count: expected a whole number >= 1, got 2.5"),
    ({"output_dir": 3}, "output_dir: expected str, got 3"),
    # JSON written by Python may hold NaN / Infinity: never "fits ... nan GiB"
    ({"ram_gib": float("nan")}, "ram_gib: must be a finite number, got nan"),
    ({"disk_free_gib": float("inf")}, "disk_free_gib: must be a finite number, got inf"),
    ({"gpus": [{"memory_total_gib": float("nan")}]},
     "gpus[0].memory_total_gib: must be a finite number, got nan"),
    ({"gpus": [{"memory_total_gib": 80, "memory_free_gib": float("-inf")}]},
     "gpus[0].memory_free_gib: must be a finite number, got -inf"),
    ({"gpus": [{"memory_total_gib": 80, "memory_used_gib": -1}]},
     "gpus[0].memory_used_gib: must be 0 or more, got -1"),
    ({"hf_cache_free_gib": -0.5}, "hf_cache_free_gib: must be 0 or more, got -0.5"),
])
def test_bad_profile_names_file_and_field(tmp_path: Path, change: dict, message: str) -> None:
    data = {**GOOD, **change}
    data = {k: v for k, v in data.items() if v is not None}
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(data))
    with pytest.raises(HardwareProfileError) as e:
        load_profile(f)
    assert str(e.value) == f"{f}: {message}"


def test_unreadable_or_malformed_profile(tmp_path: Path) -> None:
    with pytest.raises(HardwareProfileError, match=r"missing\.json: cannot read: No such file"):
        load_profile(tmp_path / "missing.json")
    f = tmp_path / "broken.json"
    f.write_text('{"gpus": [\n  {"name": "A",}\n]}')
    with pytest.raises(HardwareProfileError) as e:
        load_profile(f)
    assert str(e.value).startswith(f"{f}: not valid JSON (line 2, column")
    f.write_text("[1, 2]")
    with pytest.raises(HardwareProfileError, match="expected a JSON object at the top level"):
        load_profile(f)
    f.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(HardwareProfileError, match="not a text file"):
        load_profile(f)
    with pytest.raises(HardwareProfileError, match="cannot read"):
        load_profile(tmp_path)  # a directory
    f.write_text("[" * 100_000)
    with pytest.raises(HardwareProfileError, match="nested too deeply"):
        load_profile(f)


# --- the real pynvml wrappers over a fake libnvidia-ml ----------------------------------------
# pynvml passes ctypes arguments to the C library; a fake library made of ctypes callbacks with
# the C signatures checks those conversions too (nvidia-ml-py 13's NVML_P2P_CAPS_INDEX_READ is a
# tuple, which only fails there).


def fake_libnvidia_ml(gpus: list[FakeGpu]) -> SimpleNamespace:
    import ctypes as C

    import pynvml

    ok, invalid = 0, pynvml.NVML_ERROR_INVALID_ARGUMENT
    base = 0x1000  # fake device handles: base + index

    def c_func(*argtypes: Any) -> Any:
        def wrap(fn: Any) -> Any:
            return C.CFUNCTYPE(C.c_int, *argtypes)(fn)
        return wrap

    def put(ptr: int, ctype: Any, value: Any) -> None:
        C.cast(ptr, C.POINTER(ctype))[0] = value

    def put_text(buf: int, size: int, text: str | bytes) -> None:
        raw = (text.encode() if isinstance(text, str) else text)[: size - 1] + b"\0"
        C.memmove(buf, raw, len(raw))

    def gpu(handle: int) -> FakeGpu:
        return gpus[handle - base]

    def memory(h: int, p: int) -> int:
        g = gpu(h)
        mem = C.cast(p, C.POINTER(pynvml.c_nvmlMemory_t)).contents
        mem.total, mem.used = g.total_mib * MIB, g.used_mib * MIB
        mem.free = mem.total - mem.used
        return ok

    def utilization(h: int, p: int) -> int:
        util = C.cast(p, C.POINTER(pynvml.c_nvmlUtilization_t)).contents
        util.gpu, util.memory = gpu(h).util, 0
        return ok

    def capability(h: int, major: int, minor: int) -> int:
        put(major, C.c_int, gpu(h).cc[0])
        put(minor, C.c_int, gpu(h).cc[1])
        return ok

    def nvlink_state(h: int, link: int, p: int) -> int:
        g = gpu(h)
        if g.nvlinks is None:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        if link >= g.total_links:
            return invalid
        put(p, C.c_uint, int(link < g.nvlinks))
        return ok

    def p2p(a: int, b: int, caps: int, p: int) -> int:
        put(p, C.c_uint, pynvml.NVML_P2P_STATUS_OK)
        return ok

    def handle(i: int, p: int) -> int:
        if i >= len(gpus):
            return invalid
        put(p, C.c_void_p, base + i)
        return ok

    v, u = C.c_void_p, C.c_uint
    funcs = {
        "nvmlInitWithFlags": c_func(u)(lambda flags: ok),
        "nvmlInit_v2": c_func()(lambda: ok),
        "nvmlShutdown": c_func()(lambda: ok),
        "nvmlSystemGetDriverVersion": c_func(v, u)(lambda b, n: put_text(b, n, "580.95.05") or ok),
        "nvmlSystemGetCudaDriverVersion": c_func(v)(lambda p: put(p, C.c_int, 13000) or ok),
        "nvmlSystemGetCudaDriverVersion_v2": c_func(v)(lambda p: put(p, C.c_int, 13000) or ok),
        "nvmlDeviceGetCount_v2": c_func(v)(lambda p: put(p, C.c_uint, len(gpus)) or ok),
        "nvmlDeviceGetHandleByIndex_v2": c_func(u, v)(handle),
        "nvmlDeviceGetName": c_func(v, v, u)(lambda h, b, n: put_text(b, n, gpu(h).name) or ok),
        "nvmlDeviceGetMemoryInfo": c_func(v, v)(memory),
        "nvmlDeviceGetUtilizationRates": c_func(v, v)(utilization),
        "nvmlDeviceGetCudaComputeCapability": c_func(v, v, v)(capability),
        "nvmlDeviceGetNvLinkState": c_func(v, u, v)(nvlink_state),
        "nvmlDeviceGetP2PStatus": c_func(v, v, u, v)(p2p),
    }
    return SimpleNamespace(**funcs)


def test_real_pynvml_over_a_fake_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    gpus = [FakeGpu("NVIDIA H200", 143771, used_mib=512, util=3, nvlinks=18),
            FakeGpu("NVIDIA H200", 143771, nvlinks=18)]
    monkeypatch.setattr(pynvml, "nvmlLib", fake_libnvidia_ml(gpus))
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    p = probe(nvml=pynvml)
    assert p.gpu_error is None
    assert [(g.index, g.name, g.compute_capability, g.nvlink) for g in p.gpus] == [
        (0, "NVIDIA H200", "9.0", True), (1, "NVIDIA H200", "9.0", True)]
    assert p.gpus[0].memory_total_gib == pytest.approx(140.4, abs=0.01)
    assert p.gpus[0].memory_used_gib == 0.5 and p.gpus[0].utilization_pct == 3.0
    assert (p.driver_version, p.cuda_version) == ("580.95.05", "13.0")
    assert [(link.p2p, link.nvlink) for link in p.gpu_links] == [(True, True)]
