"""What the wizard remembers between sessions: the last dataset, preset and output directory.

Stored as a small JSON file under the user's config directory (platformdirs); a missing or
unreadable file means "nothing remembered", never an error that stops the wizard.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from platformdirs import user_config_dir

SETTINGS_FILE = "wizard.json"


def default_settings_path() -> Path:
    return Path(user_config_dir("osstune")) / SETTINGS_FILE


@dataclass
class Settings:
    preset: str | None = None
    dataset: str | None = None
    output_dir: str | None = None

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
        return cls(**{k: v for k, v in data.items() if k in known and isinstance(v, str)})

    def save(self, path: Path | None = None) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        path = path or default_settings_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
