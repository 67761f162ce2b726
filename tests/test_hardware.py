"""Hardware probe, through a fake NVML layer (tests/nvml_fixtures.py): GPUs, links, host, disks."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from nvml_fixtures import (
    FakeGpu,
    FakeNvml,
    FakeNVMLError,
    no_cuda_visible_devices,  # noqa: F401 (autouse)
    two_h100,
)

from osstune.engine.plan.hardware import (
    GIB,
    free_gib,
    hf_cache_dir,
    nearest_existing,
    output_dir_problem,
    probe,
)
from osstune.tui.commands.doctor import describe_links


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

