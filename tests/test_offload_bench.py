"""The offload bench harness: step 1 split against the steady steps, the GPU script's summary, and
bench/gpu/offload.sh itself on CPU (tiny model, time-boxed: the timeout path kills the worker and
keeps what was measured)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_fixtures import REPO, engine_env


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_step_is_split_part_by_part():
    bench = _module("bench_offload", REPO / "bench" / "bench_offload.py")
    result = {"step_s": [70.0, 5.0, 5.2], "forward_backward_s": [60.0, 2.0, 2.2],
              "optimizer_s": [6.0, 1.3, 1.3], "clip_s": [1.0, 0.7, 0.7]}
    parts = bench.first_step(result)
    assert parts["first_step_parts"] == {"forward_backward_s": 60.0, "optimizer_s": 6.0,
                                         "clip_s": 1.0, "rest_s": 3.0}
    assert parts["steady_step_parts"] == {"forward_backward_s": 2.1, "optimizer_s": 1.3,
                                          "clip_s": 0.7}
    assert bench.first_step({"step_s": [70.0]}) == {}  # no timers: nothing made up


def test_summary_names_what_is_missing(tmp_path, capsys):
    summary = _module("offload_summary", REPO / "bench" / "gpu" / "offload_summary.py")
    after = {"results": [{"exit_code": 0, "layers": 4, "step_s": [30.0, 2.0, 2.1],
                          "steady_step_s": 2.05, "peak_device_mem_reserved_gib": 15.2,
                          "peak_mem_allocated_gib": 12.0, "peak_host_rss_gib": 40.1,
                          "memory": {"streams": {"7": {"reserved_gib": 3.0}},
                                     "num_alloc_retries": 0}}]}
    (tmp_path / "after.json").write_text(json.dumps(after))
    sys.argv = ["offload_summary.py", str(tmp_path), "4"]
    assert summary.main() == 0
    out = capsys.readouterr().out
    assert "after: exit 0, 4 layers" in out and "peak reserved 15.2 GiB" in out
    assert "per stream {'7': {'reserved_gib': 3.0}}" in out
    assert "pinning: no result" in out and "before (main): no result" in out


@pytest.mark.slow
def test_gpu_script_dry_run_keeps_partial_results(tmp_path):
    """A 40 s box on CPU: part 1 finds no CUDA (recorded), part 2's tiny run is cut by its own
    time box (its worker killed, the JSON written), part 3 has no time left."""
    env = {**engine_env(), "OFFLOAD_DRY_RUN": "1", "OFFLOAD_BUDGET_S": "40",
           "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "bench/gpu/offload.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "offload: part 3 skipped" in proc.stdout
    pin = json.loads((tmp_path / "offload" / "pin.json").read_text())
    assert "error" in pin["cudaHostAlloc"]
    after = json.loads((tmp_path / "offload" / "after.json").read_text())["results"][0]
    assert after["variant"] == "after" and after["layers"] == 2
    assert after["exit_code"] in ("timeout", 0)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "offload_worker.py" not in ps  # the worker was killed, not left holding memory
