"""On-disk cache of prepared examples, keyed by dataset fingerprint + tokenizer + settings.

Examples are stored flat in one `.npz` (token arrays concatenated, offsets per example) with the
statistics beside them as JSON; writes go to a temporary name and are renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from osstune.engine.data.harmony import Example
from osstune.engine.data.tokenizer import cache_root

CACHE_VERSION = "2"  # 2: 1-based row numbers, rows_empty_answer
ROLE_CODES = ("system", "developer", "user", "assistant", "tool")


def cache_dir() -> Path:
    return cache_root() / "datasets"


def _path(key: str) -> Path:
    return cache_dir() / f"v{CACHE_VERSION}-{key}.npz"


def save_cached(key: str, examples: list[Example], stats: dict[str, Any]) -> None:
    lengths = np.fromiter((len(e) for e in examples), dtype=np.int64, count=len(examples))
    flat_ids = [t for e in examples for t in e.input_ids]
    flat_labels = [t for e in examples for t in e.labels]
    flat_msg = [t for e in examples for t in e.message_index]
    codes = {r: i for i, r in enumerate(ROLE_CODES)}
    flat_roles = [codes[r] for e in examples for r in e.role]
    arrays = {
        "lengths": lengths,
        "rows": np.array([e.row for e in examples], dtype=np.int64),
        "turns": np.array([-1 if e.turn is None else e.turn for e in examples], dtype=np.int64),
        "input_ids": np.array(flat_ids, dtype=np.int32),
        "labels": np.array(flat_labels, dtype=np.int32),
        "message_index": np.array(flat_msg, dtype=np.int32),
        "roles": np.array(flat_roles, dtype=np.int8),
        "stats": np.frombuffer(json.dumps(stats).encode(), dtype=np.uint8),
    }
    target = _path(key)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, target)
    except OSError:
        pass  # a cache that cannot be written only costs time next run


def load_cached(key: str) -> tuple[list[Example], dict[str, Any]] | None:
    path = _path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            lengths = data["lengths"].tolist()
            rows = data["rows"].tolist()
            turns = data["turns"].tolist()
            ids = data["input_ids"].tolist()
            labels = data["labels"].tolist()
            msg = data["message_index"].tolist()
            roles = [ROLE_CODES[c] for c in data["roles"].tolist()]
            stats = json.loads(bytes(data["stats"]).decode())
    except (OSError, ValueError, KeyError):
        return None
    examples = []
    at = 0
    for n, row, turn in zip(lengths, rows, turns, strict=False):
        examples.append(Example(row, ids[at:at + n], labels[at:at + n], msg[at:at + n],
                                roles[at:at + n], None if turn < 0 else turn))
        at += n
    return examples, stats
