"""Hardware profile files: the bundled ones, the issue's format, probe output, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nvml_fixtures import no_cuda_visible_devices, two_h100  # noqa: F401 (autouse)

from osstune.engine.plan.hardware import HardwareProfileError, load_profile, probe, profile_to_dict

PROFILES = Path(__file__).parent / "profiles"



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

