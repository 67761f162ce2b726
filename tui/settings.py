"""What the wizard remembers between sessions: the last dataset, preset and output directory, and
the preset chosen on each machine (keyed by `machine_key`: GPU models, count and memory), so a
preset picked for another machine never wins over the one recommended for this one.

Stored as a small JSON file under the user's config directory (platformdirs); a missing or
unreadable file means "nothing remembered", never an error that stops the wizard.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platformdirs import user_config_dir

if TYPE_CHECKING:
    from osstune.engine.plan.hardware import HardwareProfile

SETTINGS_FILE = "wizard.json"


def machine_key(profile: HardwareProfile) -> str:
    """What makes two machines the same for a preset: their GPUs (model, memory, count)."""
    if not profile.gpus:
        return "no GPU"
    cards: dict[str, int] = {}
    for gpu in profile.gpus:
        card = f"{gpu.name} {round(gpu.memory_total_gib)} GiB"
        cards[card] = cards.get(card, 0) + 1
    return " + ".join(f"{count}x {card}" for card, count in sorted(cards.items()))


def _valid(name: str, value: Any) -> bool:
    if name == "presets":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return isinstance(value, str)


def default_settings_path() -> Path:
    return Path(user_config_dir("osstune")) / SETTINGS_FILE


@dataclass
class Settings:
    preset: str | None = None
    dataset: str | None = None
    output_dir: str | None = None
    presets: dict[str, str] = field(default_factory=dict)  # machine_key -> preset chosen there

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        path = path or default_settings_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(data, dict):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and _valid(k, v)})

    def preset_for(self, profile: HardwareProfile) -> str | None:
        return self.presets.get(machine_key(profile))

    def save(self, path: Path | None = None) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        path = path or default_settings_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
