"""Short human summary of bench/gpu/offload.sh's JSON files: `python offload_summary.py DIR LAYERS`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_line(name: str, data: dict[str, Any] | None) -> list[str]:
    if not data or not data.get("results"):
        return [f"{name}: no result"]
    r = data["results"][0]
    lines = [f"{name}: exit {r.get('exit_code')}, {r.get('layers')} layers, "
             f"step times {r.get('step_s')} s (steady {r.get('steady_step_s')}), "
             f"peak reserved {r.get('peak_device_mem_reserved_gib')} GiB "
             f"(allocated {r.get('peak_mem_allocated_gib')}), host RSS "
             f"{r.get('peak_host_rss_gib')} GiB"]
    if r.get("first_step_parts"):
        lines.append(f"  step 1 parts {r['first_step_parts']}; steady parts "
                     f"{r.get('steady_step_parts')}")
    if "pin_memory_s" in r:
        lines.append(f"  pin_memory {r['pin_memory_s']} s for {r['pin_memory_gib']} GiB; "
                     f"host allocator {r.get('host_memory_stats', '-')}")
    if isinstance(r.get("memory"), dict):
        lines.append(f"  per stream {r['memory'].get('streams')}; retries "
                     f"{r['memory'].get('num_alloc_retries')}")
    if r.get("compile_times"):
        lines.append("  compile: " + " | ".join(str(r["compile_times"]).splitlines()[-4:]))
    return lines


def main() -> int:
    folder, layers = Path(sys.argv[1]), sys.argv[2]
    print(f"offload summary ({layers}-layer one-rank proxy, 8 x 2048 tokens per step, "
          "cap 23.5 GiB)")
    out = run_line("after", _load(folder / "after.json"))
    pin = _load(folder / "pin.json")
    out.append(f"pinning: {pin}" if pin else "pinning: no result")
    out += run_line("before (main)", _load(folder / "before.json"))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
