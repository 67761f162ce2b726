"""The CLI starts fast: `--help`, `doctor` and `presets` never import torch or textual.

Each command runs in a fresh interpreter (sys.modules is per process), which then reports the
heavy modules it imported.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PROFILE = Path(__file__).parent / "profiles" / "2xrtx4090-24gb.json"
HEAVY = ("torch", "textual", "transformers", "datasets", "peft", "accelerate")
# CPU seconds: ~0.4 each here; importing torch alone takes ~2.5-3 s of CPU.
MAX_START_S = 2.5

RUN_CLI = """
import json, sys
heavy = {heavy!r}
sys.argv = ["osstune", *{args!r}]
from osstune.tui.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
print("\\n" + json.dumps({{"exit": code, "loaded": loaded}}))
"""


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(*args: str) -> tuple[dict, float]:
    """The command's report and the CPU seconds its process used (wall time on a shared,
    loaded machine measures the neighbours; a torch import costs seconds of CPU either way)."""
    start = _children_cpu_s()
    proc = subprocess.run([sys.executable, "-c", RUN_CLI.format(heavy=HEAVY, args=list(args))],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    elapsed = _children_cpu_s() - start
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), elapsed


@pytest.mark.parametrize("args", [
    ("--help",),
    ("doctor",),
    ("doctor", "--json"),
    ("presets",),
    ("presets", "--hardware", str(PROFILE), "--json"),
], ids=" ".join)
def test_cli_imports_no_heavy_modules_and_starts_fast(args: tuple[str, ...]) -> None:
    report, elapsed = run_cli(*args)
    assert report["exit"] in (0, None)
    assert report["loaded"] == []
    assert elapsed < MAX_START_S, f"osstune {' '.join(args)} took {elapsed:.2f} s of CPU"
