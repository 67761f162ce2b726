"""Issue 17: the disk need counts the model download only when the weights are not in the Hugging
Face cache. The cache is found where huggingface_hub looks (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE,
HF_HOME, XDG_CACHE_HOME, ~/.cache), the snapshot is the one `refs/main` names, and a partial or
truncated snapshot counts as not cached; `osstune plan`/`doctor` on this machine say so."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osstune.engine.plan.config import load_preset
from osstune.engine.plan.estimate import estimate
from osstune.engine.plan.hardware import hf_cache_dir, probe
from osstune.engine.plan.storage import cached_models, weights_cached
from osstune.tui.cli import app
from tests.engine_fixtures import HUB_20B_GIB

MODEL = "openai/gpt-oss-20b"
DOWNLOAD = "model download (not in the HF cache)"
SHARDS = {"model-00000-of-00002.safetensors": b"a" * 300,
          "model-00001-of-00002.safetensors": b"b" * 200}
HF_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in HF_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def put_blob(repo: Path, data: bytes, *, incomplete: bool = False) -> Path:
    """A blob as huggingface_hub stores it (named by its hash; `.incomplete` while downloading)."""
    blob = repo / "blobs" / (hashlib.sha256(data).hexdigest() + (".incomplete" if incomplete
                                                                   else ""))
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return blob


def put_snapshot(hub: Path, revision: str, shards: dict[str, bytes], *, main: bool = True,
                 missing: tuple[str, ...] = (), total_size: int | None = None) -> Path:
    """A snapshot folder of symlinks into blobs/, like `snapshot_download` leaves it. A file in
    `missing` is still downloading: its blob is `.incomplete` and the snapshot has no link yet."""
    repo = hub / f"models--{MODEL.replace('/', '--')}"
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    index = {"metadata": {"total_size": total_size if total_size is not None
                          else sum(len(d) for d in shards.values())},
             "weight_map": {f"layer.{i}": name for i, name in enumerate(shards)}}
    files = {"config.json": b"{}", "model.safetensors.index.json": json.dumps(index).encode(),
             **shards}
    for name, data in files.items():
        blob = put_blob(repo, data, incomplete=name in missing)
        if name not in missing:
            (snap / name).symlink_to(os.path.relpath(blob, snap))
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
    return snap


@pytest.mark.parametrize("env,expected", [
    ({}, "home/.cache/huggingface/hub"),
    ({"XDG_CACHE_HOME": "{tmp}/xdg"}, "xdg/huggingface/hub"),
    ({"XDG_CACHE_HOME": "{tmp}/xdg", "HF_HOME": "{tmp}/hf"}, "hf/hub"),
    ({"HF_HOME": "{tmp}/hf", "HUGGINGFACE_HUB_CACHE": "{tmp}/legacy"}, "legacy"),
    ({"HUGGINGFACE_HUB_CACHE": "{tmp}/legacy", "HF_HUB_CACHE": "{tmp}/hub"}, "hub"),
    ({"HF_HUB_CACHE": "$CACHE_ROOT/hub", "CACHE_ROOT": "{tmp}/vars"}, "vars/hub"),
])
def test_the_cache_is_where_huggingface_hub_puts_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    assert hf_cache_dir() == tmp_path / expected


def test_a_complete_snapshot_is_cached_and_agrees_with_huggingface_hub(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import try_to_load_from_cache

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    snap = put_snapshot(hub, "c0ffee", SHARDS)
    found = try_to_load_from_cache(MODEL, "model.safetensors.index.json", cache_dir=hub)
    assert found is not None and Path(found).parent == snap  # the layout is the hub's own
    assert weights_cached(MODEL) and cached_models() == [MODEL]
    lora = load_preset("gpt-oss-20b-lora-1gpu")
    assert DOWNLOAD not in estimate(lora, probe(str(tmp_path), nvml=None)).disk_terms


@pytest.mark.parametrize("case", ["shard still downloading", "shard missing", "shard truncated",
                                  "empty shard", "no refs, only a partial snapshot"])
def test_a_partial_snapshot_is_not_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          case: str) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    name = next(iter(SHARDS))
    if case == "shard still downloading":
        put_snapshot(hub, "c0ffee", SHARDS, missing=(name,))
    elif case == "shard missing":
        (put_snapshot(hub, "c0ffee", SHARDS) / name).unlink()
    elif case == "shard truncated":  # a copy cut short: smaller than the index says
        put_snapshot(hub, "c0ffee", SHARDS, total_size=10_000)
    elif case == "empty shard":
        put_snapshot(hub, "c0ffee", {**SHARDS, name: b""}, total_size=0)
    else:
        put_snapshot(hub, "c0ffee", SHARDS, missing=(name,), main=False)
    assert not weights_cached(MODEL) and cached_models() == []
    lora = load_preset("gpt-oss-20b-lora-1gpu")
    terms = estimate(lora, probe(str(tmp_path), nvml=None)).disk_terms
    assert terms[DOWNLOAD] == pytest.approx(HUB_20B_GIB, abs=0.01)


def test_refs_main_decides_between_snapshots(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    put_snapshot(hub, "old0001", SHARDS)
    newer = put_snapshot(hub, "new0002", SHARDS, missing=(next(iter(SHARDS)),))
    os.utime(newer, (newer.stat().st_mtime + 60,) * 2)  # newest on disk, and incomplete
    assert not weights_cached(MODEL)  # refs/main names the new, partial one: a load downloads
    (hub / f"models--{MODEL.replace('/', '--')}" / "refs" / "main").write_text("old0001\n")
    assert weights_cached(MODEL)  # main still names the complete one


def test_plan_and_doctor_on_this_machine_look_the_cache_up(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    runner = CliRunner()
    out = str(tmp_path / "out")

    def plan() -> dict:
        result = runner.invoke(app, ["plan", "gpt-oss-20b-lora-1gpu", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    assert plan()["disk_terms"][DOWNLOAD] == pytest.approx(HUB_20B_GIB, abs=0.01)
    doctor = runner.invoke(app, ["doctor", "--output-dir", out])
    assert "none (a run downloads its weights)" in doctor.output
    snap = put_snapshot(hub, "c0ffee", SHARDS)
    assert DOWNLOAD not in plan()["disk_terms"] and plan()["disk_gib"] < 1
    doctor = runner.invoke(app, ["doctor", "--json", "--output-dir", out])
    assert json.loads(doctor.output)["hf_cached_models"] == [MODEL]
    (snap / next(iter(SHARDS))).unlink()  # a shard gone: the weights are downloaded again
    assert plan()["disk_terms"][DOWNLOAD] == pytest.approx(HUB_20B_GIB, abs=0.01)


def test_the_loader_does_not_use_a_partial_snapshot(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """The per-rank and MXFP4 loaders read the snapshot themselves: a whole one is used as it
    is, a partial one is fetched again when the hub answers and refused in one line when not
    (before, the loader started on it and stopped at the first missing shard)."""
    import huggingface_hub

    from osstune.engine.data import tokenizer
    from osstune.engine.trainer.model import ModelError
    from osstune.engine.trainer.mxfp4 import weights_folder

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    fetched: list[str] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda model_id, **kw: (
        fetched.append("local" if kw.get("local_files_only") else "hub")
        or str(cached_snapshot_of(hub))))
    whole = put_snapshot(hub, "c0ffee", SHARDS)
    assert weights_folder(MODEL) == whole and fetched == ["local"]

    (whole / next(iter(SHARDS))).unlink()  # one shard gone
    fetched.clear()
    monkeypatch.setattr(tokenizer, "hub_reachable", lambda: True)
    weights_folder(MODEL)
    assert fetched == ["hub"]
    monkeypatch.setattr(tokenizer, "hub_reachable", lambda: False)
    with pytest.raises(ModelError, match=f"^model {MODEL}: weights are not all in the local "
                       "cache and the hub is unreachable$"):
        weights_folder(MODEL)


def cached_snapshot_of(hub: Path) -> Path:
    return next((hub / f"models--{MODEL.replace('/', '--')}" / "snapshots").iterdir())
