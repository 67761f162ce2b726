"""What the user has chosen so far, kept as a preset name plus `--set` overrides.

The effective config is always `load_config(preset, overrides)`: the same path `osstune run` takes,
so the command shown on the review screen repeats the run exactly.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from osstune.engine.plan.config import RunConfig, load_config

if TYPE_CHECKING:
    from osstune.engine.plan.estimate import DatasetFacts
    from osstune.engine.plan.hardware import HardwareProfile
    from osstune.engine.plan.recommend import Recommendation
    from osstune.engine.session.events import RunEnd


def yaml_text(value: Any) -> str:
    """The text of a `--set` value that YAML reads back as `value`."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if value and yaml.safe_load(value) == value else json.dumps(value)
    return json.dumps(value) if isinstance(value, (dict, list, bool)) else repr(value)


@dataclass
class Plan:
    profile: HardwareProfile | None = None
    recommendation: Recommendation | None = None
    preset: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)  # dotted key -> YAML text
    saved_config: str | None = None
    run_end: RunEnd | None = None
    dataset_facts: DatasetFacts | None = None  # from the Dataset screen: the time estimate

    def choose_preset(self, name: str) -> None:
        if name != self.preset:
            self.preset, self.overrides, self.saved_config = name, {}, None

    def set_override(self, key: str, text: str | None) -> None:
        """Set `key` to YAML `text`; None removes the override (back to the preset's value)."""
        self.saved_config = None
        if text is None:
            self.overrides.pop(key, None)
        else:
            self.overrides[key] = text

    def override_args(self) -> list[str]:
        return [f"{key}={text}" for key, text in self.overrides.items()]

    def config(self) -> RunConfig:
        """The effective config; raises ConfigError naming the key that is wrong."""
        if self.preset is None:
            raise ValueError("no preset chosen yet")
        return load_config(self.preset, self.override_args())

    def command(self, resume: bool = False) -> str:
        """The `osstune run` command line that repeats this plan."""
        if self.saved_config:
            args = ["osstune", "run", self.saved_config]
        else:
            args = ["osstune", "run", str(self.preset)]
            for item in self.override_args():
                args += ["--set", item]
        if resume:
            args.append("--resume")
        return shlex.join(args)
