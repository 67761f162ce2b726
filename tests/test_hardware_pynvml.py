"""The real pynvml wrappers over a fake libnvidia-ml (tests/nvml_fixtures.py): the ctypes
conversions pynvml makes reach the C signatures."""

from __future__ import annotations

import pytest
from nvml_fixtures import FakeGpu, fake_libnvidia_ml, no_cuda_visible_devices  # noqa: F401

from osstune.engine.plan.hardware import probe


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
