"""Three small datasets in three layouts (OpenAI messages, ShareGPT, Axolotl-mapped columns)."""

from __future__ import annotations

import json
from pathlib import Path

QUESTIONS = [f"What is {a} plus {b}?" for a in range(1, 7) for b in range(1, 3)]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def three_layouts(tmp: Path) -> dict[str, Path]:
    """12 conversations each; a file per layout."""
    messages = [{"messages": [{"role": "user", "content": q},
                              {"role": "assistant", "content": f"It is {i + 2}."}]}
                for i, q in enumerate(QUESTIONS)]
    sharegpt = [{"conversations": [{"from": "human", "value": q},
                                   {"from": "gpt", "value": f"The sum is {i + 2}."}]}
                for i, q in enumerate(QUESTIONS)]
    mapped = [{"dialog": [{"speaker": "customer", "text": q},
                          {"speaker": "agent", "text": f"Answer: {i + 2}"}]}
              for i, q in enumerate(QUESTIONS)]
    return {"messages": _write(tmp / "messages.jsonl", messages),
            "sharegpt": _write(tmp / "sharegpt.jsonl", sharegpt),
            "mapped": _write(tmp / "mapped.jsonl", mapped)}


def mixed_datasets(files: dict[str, Path]) -> list[dict]:
    """`datasets:` entries for the three files; the mapped one weighs 2, ShareGPT 0.5."""
    return [
        {"path": str(files["messages"])},
        {"path": str(files["sharegpt"]), "format": "sharegpt", "weight": 0.5},
        {"path": str(files["mapped"]), "field_messages": "dialog",
         "message_property_mappings": {"role": "speaker", "content": "text"},
         "roles": {"user": ["customer"], "assistant": ["agent"]}, "weight": 2},
    ]
