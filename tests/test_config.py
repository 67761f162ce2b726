"""The run-config schema: presets, user YAML files and --set overrides, and what errors say."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from osstune.engine.plan.config import (
    PRESET_NAMES,
    ConfigError,
    dump_config,
    load_config,
    load_preset,
    preset_names,
    validate,
)

PRESETS_DIR = Path(__file__).parent.parent / "presets"


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = "model:\n  id: openai/gpt-oss-20b\n"


def error_of(*args: object) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(*args)  # type: ignore[arg-type]
    return str(e.value)


# --- presets ---------------------------------------------------------------------------------


def test_preset_names_match_the_files() -> None:
    assert preset_names() == list(PRESET_NAMES)
    assert sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")) == sorted(PRESET_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_is_valid_and_consistent(name: str) -> None:
    cfg = load_preset(name)
    assert cfg.name == name
    req = cfg.requirements
    assert req is not None, f"{name} has no requirements block"
    assert req.gpus == cfg.distributed.gpus
    assert req.source, f"{name}: requirements.source must say where the numbers come from"
    if req.gpus:
        assert 0 < req.peak_mem_gib_per_gpu <= req.min_gpu_mem_gib
        assert all(0 < peak <= req.min_gpu_mem_gib for peak in req.peak_mem_gib_by_gpus.values())
        assert cfg.model.id.startswith("openai/gpt-oss-")
    assert req.disk_gib > 0 and req.host_ram_gib > 0


def test_dump_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config("gpt-oss-20b-lora-1gpu", ["max_steps=7"])
    again = load_config(str(write(tmp_path, dump_config(cfg))))
    assert again == cfg


def test_offload_presets_keep_cpu_offload_with_fsdp() -> None:
    for name in ("gpt-oss-20b-fft-fsdp2-offload", "gpt-oss-120b-fft-fsdp2-offload"):
        d = load_preset(name).distributed
        assert d.fsdp and d.cpu_offload


# --- errors name the file and the key -------------------------------------------------------


def test_unknown_key(tmp_path: Path) -> None:
    f = write(tmp_path, MINIMAL + "training:\n  learnin_rate: 1.0e-4\n")
    assert error_of(str(f)) == f"{f}: training.learnin_rate: unknown key"


def test_unknown_top_level_section(tmp_path: Path) -> None:
    f = write(tmp_path, MINIMAL + "optimiser: adamw\n")
    assert error_of(str(f)) == f"{f}: optimiser: unknown key"


def test_wrong_type(tmp_path: Path) -> None:
    f = write(tmp_path, MINIMAL + "training:\n  sequence_len: long\n")
    assert error_of(str(f)) == (f"{f}: training.sequence_len: Input should be a valid integer, "
                                "unable to parse string as an integer (got 'long')")


def test_wrong_choice(tmp_path: Path) -> None:
    f = write(tmp_path, MINIMAL + "method: qlora\n")
    msg = error_of(str(f))
    assert msg.startswith(f"{f}: method: Input should be 'lora' or 'full'")
    assert msg.endswith("(got 'qlora')")


@pytest.mark.parametrize(("line", "key", "bound"), [
    ("training:\n  learning_rate: -1.0e-4\n", "training.learning_rate", "greater than 0"),
    ("training:\n  micro_batch_size: 0\n", "training.micro_batch_size",
     "greater than or equal to 1"),
    ("lora:\n  dropout: 1.5\n", "lora.dropout", "less than 1"),
    ("distributed:\n  gpus: -2\n", "distributed.gpus", "greater than or equal to 0"),
])
def test_impossible_values(tmp_path: Path, line: str, key: str, bound: str) -> None:
    f = write(tmp_path, MINIMAL + line)
    msg = error_of(str(f))
    assert msg.startswith(f"{f}: {key}: Input should be {bound}")
    assert "\n" not in msg


def test_missing_required_key(tmp_path: Path) -> None:
    f = write(tmp_path, "method: lora\n")
    assert error_of(str(f)) == f"{f}: model: Field required"


def test_several_errors_one_line_each(tmp_path: Path) -> None:
    f = write(tmp_path, MINIMAL + "training:\n  bogus: 1\n  seed: x\n")
    lines = error_of(str(f)).splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{f}: training.") for line in lines)


def test_cross_field_rule_is_one_line(tmp_path: Path) -> None:
    f = write(tmp_path, MINIMAL + "distributed:\n  cpu_offload: true\n")
    assert error_of(str(f)) == (
        f"{f}: distributed.cpu_offload needs distributed.fsdp: true")


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path, "model: {id: x\ntraining: [\n")
    assert error_of(str(f)) == (
        f"{f}: not valid YAML at line 2, column 9: expected ',' or '}}', but got ':'")


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    f = write(tmp_path, f"!!python/object/apply:os.system ['touch {marker}']\n")
    assert "could not determine a constructor" in error_of(str(f))
    assert not marker.exists()


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    f = write(tmp_path, "- a\n- b\n")
    assert error_of(str(f)) == f"{f}: expected a mapping at the top level, got list"
    with pytest.raises(ConfigError, match="somewhere: expected a mapping"):
        validate(None, "somewhere")


def test_missing_file_and_unknown_preset(tmp_path: Path) -> None:
    assert error_of(str(tmp_path / "nope.yaml")) == f"{tmp_path / 'nope.yaml'}: no such config file"
    assert error_of("gpt-oss-7b") == (
        "unknown preset 'gpt-oss-7b'; valid presets: " + ", ".join(PRESET_NAMES))


# --- --set overrides -------------------------------------------------------------------------


def test_set_overrides_and_shortcuts() -> None:
    cfg = load_config("tiny-cpu-demo", ["max_steps=30", "lr=1e-3", "training.warmup_steps=0",
                                        "lora.r=16", "output_dir=/tmp/osstune-x", "gpus=0",
                                        "dataset.roles={user: [human]}"])
    assert cfg.training.max_steps == 30
    assert cfg.training.learning_rate == 1e-3
    assert cfg.training.warmup_steps == 0
    assert cfg.lora.r == 16
    assert cfg.output.dir == "/tmp/osstune-x"
    assert cfg.dataset.roles == {"user": ["human"]}
    # Untouched values keep the preset's.
    assert cfg.training.sequence_len == load_preset("tiny-cpu-demo").training.sequence_len


def test_set_on_a_file(tmp_path: Path) -> None:
    f = write(tmp_path, MINIMAL)
    assert load_config(str(f), ["epochs=2"]).training.num_epochs == 2


def test_set_errors_name_the_override() -> None:
    assert error_of("tiny-cpu-demo", ["max_steps=abc"]) == (
        "preset tiny-cpu-demo (with --set max_steps=abc): training.max_steps: Input should be a "
        "valid integer, unable to parse string as an integer (got 'abc')")
    assert error_of("tiny-cpu-demo", ["training.bogus=1"]) == (
        "preset tiny-cpu-demo (with --set training.bogus=1): training.bogus: unknown key")
    assert error_of("tiny-cpu-demo", ["max_steps=0"]).endswith(
        "training.max_steps: Input should be greater than or equal to 1 (got 0)")
    assert error_of("tiny-cpu-demo", ["max_steps"]) == (
        "--set 'max_steps': expected KEY=VALUE, e.g. training.learning_rate=1e-4")
    assert error_of("tiny-cpu-demo", ["training.max_steps.x=1"]) == (
        "--set 'training.max_steps.x=1': max_steps is not a section")
    message = error_of("tiny-cpu-demo", ["lr=[1"])
    assert message == ("--set 'lr=[1': the value for lr is not valid YAML: expected ',' or ']', "
                       "but got '<stream end>'")  # one line, not PyYAML's 8-line report


def test_presets_parse_as_plain_yaml() -> None:
    for path in PRESETS_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert data["name"] == path.stem
