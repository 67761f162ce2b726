"""Reading dataset rows: local JSON / JSONL / Parquet, hub ids (`datasets`), the builtin sample.

Local JSON lines are parsed one by one, so a malformed line is a skipped row rather than a failed
load, and nested values keep their exact shape (Arrow would give every struct the union of all
rows' keys). Each source also gives a fingerprint for the preprocessing cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

DATASET_BUILTIN_SAMPLE = "builtin:osstune-sample"
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


class DatasetError(ValueError):
    """A dataset that cannot be used at all; one line naming the input and what is wrong."""


@dataclass
class BadRow:
    """A row that could not even be parsed (e.g. a JSONL line that is not JSON)."""

    error: str


@dataclass
class Source:
    name: str
    fingerprint: str
    rows: list[dict[str, Any] | BadRow]
    columns: list[str]
    # Where each row came from ("line 7", "part-2.jsonl line 7"), when the reader knows.
    locations: list[str] | None = None


def builtin_sample_path() -> Path:
    return Path(str(resources.files("osstune.engine.data") / "samples" / "osstune-sample.jsonl"))


def _file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.name).encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _json_type(value: Any) -> str:
    names = {list: "array", dict: "object", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def parse_json(text: str) -> Any:
    """`json.loads`, lenient about raw control characters inside strings (a raw CR or TAB in a
    value is common in exported data); nesting too deep for Python raises ValueError."""
    try:
        return json.loads(text, strict=False)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    """(line number, row) for every non-blank line. Lines end at LF only: a raw CR (or U+2028)
    inside a line is part of it, so row and line numbers stay those of `wc -l` and editors."""
    with path.open("r", encoding="utf-8", errors="replace", newline="\n") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = parse_json(line)
            except ValueError as e:
                yield lineno, BadRow(f"not valid JSON: {e}")
                continue
            yield lineno, value if isinstance(value, dict) else BadRow(
                f"a JSON {_json_type(value)}, not an object")


def _read_json(path: Path) -> list[tuple[str, dict[str, Any] | BadRow]]:
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text") from None
    except ValueError as e:
        # Many `.json` files are really JSON lines.
        lines = list(_read_jsonl(path))
        if lines and not all(isinstance(r, BadRow) for _n, r in lines):
            return [(f"line {n}", r) for n, r in lines]
        raise DatasetError(f"{path}: not valid JSON: {e}") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]  # {"data": [...]} or one row
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of rows, got a JSON {_json_type(data)}")
    return [(f"item {i}", r if isinstance(r, dict) else BadRow(
        f"a JSON {_json_type(r)}, not an object")) for i, r in enumerate(data, 1)]


def _read_parquet(paths: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    for p in paths:
        try:
            table = pq.read_table(p)
        except Exception as e:  # pyarrow raises several kinds for a corrupt file
            raise DatasetError(f"{p}: unreadable Parquet file: {e}") from None
        columns = columns or table.column_names
        rows.extend(table.to_pylist())
    return rows, columns


def _columns(rows: list[dict[str, Any] | BadRow]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows[:100]:
        if isinstance(r, dict):
            seen.update(dict.fromkeys(r))
    return list(seen)


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)
        if not files:
            raise DatasetError(f"{path}: folder has no .jsonl, .json or .parquet files")
        kinds = {p.suffix == ".parquet" for p in files}
        if len(kinds) > 1:
            raise DatasetError(f"{path}: folder mixes Parquet and JSON files; point at one kind")
        return files
    if not path.is_file():  # /dev/zero, a FIFO: reading one would never end
        raise DatasetError(f"{path}: not a regular file (a device, pipe or socket is no dataset)")
    return [path]


def read_local(path: Path) -> Source:
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    files = _local_files(path)
    try:
        fingerprint = _file_digest(files)
    except OSError as e:
        raise DatasetError(f"{e.filename or path}: cannot read: {e.strerror or e}") from None
    if files[0].suffix == ".parquet":
        rows, columns = _read_parquet(files)
        return Source(str(path), fingerprint, rows, columns)
    rows_all: list[dict[str, Any] | BadRow] = []
    locations: list[str] = []
    for f in files:
        try:
            found = (_read_json(f) if f.suffix == ".json"
                     else [(f"line {n}", r) for n, r in _read_jsonl(f)])
        except OSError as e:
            raise DatasetError(f"{f}: cannot read: {e.strerror or e}") from None
        prefix = f"{f.relative_to(path)} " if f != path else ""
        rows_all.extend(r for _where, r in found)
        locations.extend(prefix + where for where, _r in found)
    return Source(str(path), fingerprint, rows_all, _columns(rows_all), locations)


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(LOCAL_SUFFIXES) or "\\" in name


def read_hub(name: str, split: str) -> Source:
    from osstune.engine.data.tokenizer import hub_offline, hub_reachable

    try:
        import datasets
    except ImportError:
        raise DatasetError(f"{name}: reading hub datasets needs the `datasets` package") from None
    offline = hub_offline() or not hub_reachable()
    try:
        if offline:
            datasets.config.HF_HUB_OFFLINE = True
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        if offline:
            raise DatasetError(f"{name}: hub dataset not in the local cache and the hub is "
                               "unreachable (offline); give a local file") from None
        raise DatasetError(f"{name}: cannot load from the hub: {str(e).splitlines()[0]}") from None
    rows = ds.to_list()
    return Source(name, f"hub:{name}:{split}:{ds._fingerprint}", rows, list(ds.column_names))


def dataset_problem(path: str) -> str | None:
    """Why `path` cannot be a dataset, from cheap checks only (no rows are read): an unknown
    builtin, a missing local file or folder, a folder without data files, an empty file. The CLI
    asks this before it starts an engine; the full read still reports everything else."""
    if path == DATASET_BUILTIN_SAMPLE:
        return None
    local = Path(path).expanduser()
    if not (path.startswith("builtin:") or local.exists() or _looks_local(path)):
        return None  # a hub id
    try:
        if path.startswith("builtin:"):
            read_source(path)
        files = _local_files(local) if local.exists() else None
    except DatasetError as e:
        return str(e)
    if files is None:
        return f"{path}: no such file or folder"
    if all(f.stat().st_size == 0 for f in files):
        return f"{path}: no rows (the dataset is empty)"
    return None


def read_source(path: str, split: str = "train") -> Source:
    """Rows of a local file/folder, a hub id, or `builtin:osstune-sample`."""
    if path == DATASET_BUILTIN_SAMPLE:
        return read_local(builtin_sample_path())
    if path.startswith("builtin:"):
        raise DatasetError(f"{path}: unknown builtin dataset (available: {DATASET_BUILTIN_SAMPLE})")
    local = Path(path).expanduser()
    if local.exists() or _looks_local(path):
        return read_local(local)
    return read_hub(path, split)
