"""Run configuration: presets, user YAML files and `--set` overrides, read and validated against
the one schema (engine/plan/schema.py, whose names are re-exported here).

No torch import here: the CLI and the wizard validate configs before any engine process starts.
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from osstune.engine.plan.schema import (  # noqa: F401 - the schema, re-exported
    RUN_WIDE_DATASET_KEYS,
    ConfigError,
    DatasetConfig,
    DatasetEntry,
    DistributedConfig,
    LoraConfig,
    ModelConfig,
    OutputConfig,
    Requirements,
    RunConfig,
    TrainingConfig,
)
from osstune.engine.plan.units import shown

PRESET_NAMES = (
    "gpt-oss-20b-lora-1gpu",
    "gpt-oss-20b-lora-mxfp4",
    "gpt-oss-120b-lora-mxfp4",
    "gpt-oss-20b-fft-fsdp2-offload",
    "gpt-oss-20b-fft-fsdp2",
    "gpt-oss-120b-fft-fsdp2-offload",
    "tiny-cpu-demo",
)


def preset_names() -> list[str]:
    """Presets shipped as package data, in the order of PRESET_NAMES then any extra files."""
    found = sorted(p.name[: -len(".yaml")] for p in resources.files("osstune.presets").iterdir()
                   if p.name.endswith(".yaml"))
    ordered = [n for n in PRESET_NAMES if n in found]
    return ordered + [n for n in found if n not in ordered]


def preset_text(name: str) -> str:
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())}")
    return (resources.files("osstune.presets") / f"{name}.yaml").read_text(encoding="utf-8")


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        # A cross-field rule (a model-level check, no location) names its own keys.
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            # A whole section as "input" (model-level checks) would flood the one-line error.
            if e.get("input") is not None and e["type"] != "missing" and e["loc"] and not \
                    isinstance(e["input"], (dict, list)):
                msg += f" (got {shown(e['input'])})"
        lines.append(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`training.learning_rate=1e-4` -> (["training", "learning_rate"], 1e-4); values are YAML."""
    key, sep, raw = item.partition("=")
    item_text = shown(item)
    if not sep or not key.strip():
        raise ConfigError(f"--set {item_text}: expected KEY=VALUE, e.g. "
                          "training.learning_rate=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:  # PyYAML's report spans lines: keep its first problem only
        raise ConfigError(f"--set {item_text}: the value for {key.strip()} is not valid YAML"
                          f"{_yaml_where(e, with_mark=False)}") from None
    except RecursionError:
        raise ConfigError(f"--set {item_text}: the value for {key.strip()} is nested too "
                          "deeply") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise ConfigError(f"--set {item_text}: the value for {key.strip()} is "
                          f"{_too_long(e)}") from None
    return key.strip().split("."), value


# The largest whole number a config may hold (int64): larger ones overflow every estimate.
MOST_INT = (1 << 63) - 1


def _too_long(e: ValueError) -> str:
    return f"not a usable number ({str(e).split(':')[0]})"


def _unusable_number(data: Any) -> tuple[str, str] | None:
    """(dotted key, problem) of the first number in `data` no run can use: a whole number
    beyond MOST_INT, NaN or infinity (YAML reads `.nan` and `.inf`)."""
    todo: list[tuple[str, Any]] = [("", data)]
    while todo:
        key, node = todo.pop()
        if isinstance(node, dict):
            todo.extend((f"{key}.{k}" if key else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            todo.extend((f"{key}[{i}]", v) for i, v in enumerate(node))
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > MOST_INT:
            return key or "(top level)", f"a whole number too large (at most {MOST_INT})"
        elif isinstance(node, float) and not math.isfinite(node):
            return key or "(top level)", f"must be a finite number, got {node}"
    return None


# Short keys that users reach for: `--set max_steps=30` means training.max_steps.
SHORTCUTS = {
    "max_steps": "training.max_steps",
    "learning_rate": "training.learning_rate",
    "lr": "training.learning_rate",
    "epochs": "training.num_epochs",
    "num_epochs": "training.num_epochs",
    "sequence_len": "training.sequence_len",
    "pack_len": "training.pack_len",
    "micro_batch_size": "training.micro_batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "seed": "training.seed",
    "output_dir": "output.dir",
    "save_steps": "output.save_steps",
    "gpus": "distributed.gpus",
}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        if len(path) == 1 and path[0] in SHORTCUTS:
            path = SHORTCUTS[path[0]].split(".")
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {shown(item)}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


def validate(data: Any, source: str) -> RunConfig:
    if not isinstance(data, dict):
        got = type(data).__name__
        raise ConfigError(f"{source}: expected a mapping at the top level, got {got}")
    if (unusable := _unusable_number(data)) is not None:
        raise ConfigError(f"{source}: {unusable[0]}: {unusable[1]}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def read_yaml(path: Path) -> Any:
    if path.exists() and not path.is_file():  # a device or FIFO would be read forever
        raise ConfigError(f"{path}: not a regular file (expected a YAML run config)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML{_yaml_where(e)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a run config (nested too deeply)") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not a run config: {_too_long(e)}") from None


def _yaml_where(e: yaml.YAMLError, with_mark: bool = True) -> str:
    """' at line 3, column 9: expected ...' - one line instead of PyYAML's multi-line report."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is None or not with_mark:
        return f": {problem}"
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_config(preset_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    """A preset name or a YAML file, then `--set` overrides; errors name the file and key."""
    path = Path(preset_or_path)
    if preset_or_path.endswith((".yaml", ".yml")) or path.is_file():
        if not path.exists():
            raise ConfigError(f"{path}: no such config file")
        data, source = read_yaml(path), str(path)
    else:
        data, source = yaml.safe_load(preset_text(preset_or_path)), f"preset {preset_or_path}"
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        data = apply_overrides(data, overrides)
        source += " (with --set " + ", ".join(shown(o)[1:-1] for o in overrides) + ")"
    return validate(data, source)


def load_preset(name: str) -> RunConfig:
    return load_config(name)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=False), sort_keys=False)
