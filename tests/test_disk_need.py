"""Issue 17 through the CLI: the disk a run needs is what it downloads and writes. A 1x H200 with
40-80 GiB free is offered the 20b LoRA preset by `presets`, `plan` and `doctor`, with or without
the weights cached; the download is judged against the HF cache's disk and the run's writes
against the output folder's when they are two filesystems; the merge commands check their own
need (MXFP4 where merge-lora keeps packed experts packed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osstune.engine.plan import hardware
from osstune.engine.plan.config import load_preset
from osstune.engine.plan.hardware import load_profile, same_disk
from osstune.engine.plan.preflight import PreflightError, preflight
from osstune.engine.plan.storage import merge_terms
from osstune.tui.cli import app
from tests.engine_fixtures import HUB_20B_GIB

PROFILES = Path(__file__).parent / "profiles"
H200 = PROFILES / "1xh200-141gb-disk51.json"
LORA = "gpt-oss-20b-lora-1gpu"
DOWNLOAD = HUB_20B_GIB


@pytest.fixture(autouse=True)
def _no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached on this machine


def h200_file(tmp_path: Path, free: float, cached: bool) -> Path:
    data = json.loads(H200.read_text())
    data["disk_free_gib"] = free
    if cached:
        data["hf_cached_models"] = ["openai/gpt-oss-20b"]
    path = tmp_path / f"h200-{free}-{cached}.json"
    path.write_text(json.dumps(data))
    return path


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("cached", [False, True], ids=["not-cached", "cached"])
@pytest.mark.parametrize("free", [40, 51.1, 60, 80])
def test_h200_is_offered_the_20b_lora_preset_by_presets_plan_and_doctor(
        tmp_path: Path, free: float, cached: bool) -> None:
    profile = str(h200_file(tmp_path, free, cached))
    rows = json.loads(cli("presets", "--hardware", profile, "--json"))
    assert [p["name"] for p in rows if p["recommended"]] == [LORA]
    assert next(p for p in rows if p["name"] == LORA)["verdict"] in ("fits", "tight")
    plan = json.loads(cli("plan", LORA, "--hardware", profile, "--json"))
    assert plan["verdict"] in ("fits", "tight")
    download = plan["disk_terms"].get("model download (not in the HF cache)", 0)
    assert download == (0 if cached else pytest.approx(DOWNLOAD, abs=0.01))
    assert "export (safetensors)" not in plan["disk_terms"]  # a LoRA run writes its adapter
    assert plan["disk_gib"] == pytest.approx(download + 0.22, abs=0.05)
    assert f"Recommended       {LORA} (fits;" in cli("doctor", "--hardware", profile)
    assert json.loads(cli("doctor", "--hardware", profile, "--json"))[
        "recommended_preset"] == LORA


def test_h200_with_barely_the_download_free_is_tight_and_still_offered(tmp_path: Path) -> None:
    profile = str(h200_file(tmp_path, 13.5, cached=False))
    rows = json.loads(cli("presets", "--hardware", profile, "--json"))
    assert [p["name"] for p in rows if p["recommended"]] == [LORA]
    assert next(p for p in rows if p["name"] == LORA)["verdict"] == "tight"
    assert f"Recommended       {LORA} (tight;" in cli("doctor", "--hardware", profile)


def test_doctor_says_when_nothing_fits(tmp_path: Path) -> None:
    data = json.loads(H200.read_text()) | {"disk_free_gib": 0.01}
    path = tmp_path / "full.json"
    path.write_text(json.dumps(data))
    assert "Recommended       none fits (osstune presets says why)" in cli(
        "doctor", "--hardware", str(path))
    assert json.loads(cli("doctor", "--hardware", str(path), "--json"))[
        "recommended_preset"] is None


def test_same_disk(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert same_disk(tmp_path / "a", tmp_path / "not" / "made" / "yet")  # nearest parent
    assert not same_disk(tmp_path, "/proc")  # procfs is a filesystem of its own


class Disks:
    """Free space per filesystem: the HF cache's and the output folder's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cache: float, out: float,
                 shared: bool) -> None:
        self.cache_dir = hardware.hf_cache_dir()
        monkeypatch.setattr(hardware, "same_disk", lambda a, b: shared)
        monkeypatch.setattr(hardware, "free_gib", lambda path: cache if Path(path)
                            == self.cache_dir else out)


def h200_profile(tmp_path: Path):  # noqa: ANN201
    return load_profile(h200_file(tmp_path, 51.1, cached=False))


def test_download_needs_room_in_the_hf_cache_not_in_the_output_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, out = load_preset(LORA), tmp_path / "out"
    Disks(monkeypatch, cache=100, out=1, shared=False)  # the adapter's 0.2 GiB fit in 1 GiB
    assert preflight(cfg, out, resume=False, force=False, profile=h200_profile(tmp_path)) == []
    disks = Disks(monkeypatch, cache=5, out=100, shared=False)
    with pytest.raises(PreflightError) as refused:
        preflight(cfg, out, resume=False, force=False, profile=h200_profile(tmp_path))
    message = str(refused.value)
    assert message.startswith(f"disk: 5 GiB free at {disks.cache_dir}, this config needs "
                              "~12.8 GiB (model download (not in the HF cache) 12.8 GiB)")
    assert str(out) not in message
    Disks(monkeypatch, cache=10, out=10, shared=True)  # one disk: the sum is judged
    with pytest.raises(PreflightError, match=r"^disk: 10 GiB free at .*/out, this config needs "
                                             r"~13.0 GiB \(model download"):
        preflight(cfg, out, resume=False, force=False, profile=h200_profile(tmp_path))
    forced = preflight(cfg, out, resume=False, force=True, profile=h200_profile(tmp_path))
    assert len(forced) == 1 and forced[0].startswith("disk: 10 GiB free")


def test_merge_terms_are_what_each_merge_writes() -> None:
    bf16 = merge_terms(load_preset(LORA), "lora")
    assert bf16["merged model (safetensors)"] == pytest.approx(38.99 + 0.03, rel=0.01)
    assert bf16["base model download (not in the HF cache)"] == pytest.approx(DOWNLOAD, abs=0.01)
    packed = load_preset("gpt-oss-20b-lora-mxfp4")
    assert merge_terms(packed, "lora")["merged model (MXFP4 safetensors)"] == pytest.approx(
        DOWNLOAD + 0.03, abs=0.01)  # packed experts stay packed: the hub checkpoint's size
    assert merge_terms(packed, "lora", "bf16")["merged model (safetensors)"] == pytest.approx(
        38.99 + 0.03, rel=0.01)
    fft = merge_terms(load_preset("gpt-oss-20b-fft-fsdp2"), "sharded")
    assert list(fft) == ["merged model (safetensors)"]  # its own checkpoint, no download


@pytest.mark.parametrize("command,preset,needed", [
    (["merge-lora"], LORA, "~51.8 GiB (merged model (safetensors) 39.0 GiB, base model download"),
    (["merge-lora", "--dtype", "bf16"], "gpt-oss-20b-lora-mxfp4", "~51.8 GiB"),
    (["merge-lora"], "gpt-oss-20b-lora-mxfp4", "~25.7 GiB (merged model (MXFP4 safetensors) "
                                               "12.8 GiB, base model download"),
    (["merge-sharded-fsdp-weights"], "gpt-oss-20b-fft-fsdp2",
     "~39.0 GiB (merged model (safetensors) 39.0 GiB)"),
])
def test_merge_commands_refuse_a_disk_too_small_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], preset: str,
        needed: str) -> None:
    Disks(monkeypatch, cache=20, out=20, shared=True)
    result = CliRunner().invoke(app, [*command, preset])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("osstune: error: disk: 20 GiB free at ")
    assert f"merging needs {needed}" in result.output


def test_merge_lora_download_is_judged_on_the_cache_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from osstune.tui.commands.merge import _check_disk

    cfg = load_preset("gpt-oss-20b-lora-mxfp4")
    Disks(monkeypatch, cache=20, out=20, shared=False)  # 12.8 download | 12.8 merged: each fits
    _check_disk(cfg, "lora", Path(cfg.output.dir))
    Disks(monkeypatch, cache=5, out=100, shared=False)
    result = CliRunner().invoke(app, ["merge-lora", "gpt-oss-20b-lora-mxfp4"])
    assert result.exit_code == 1
    assert "merging needs ~12.8 GiB (base model download (not in the HF cache) 12.8 GiB)" \
        in result.output


def verdict_of(profile, preset: str = LORA):  # noqa: ANN001, ANN201
    from osstune.engine.plan.recommend import recommend

    rec = recommend(profile)
    return rec, next(v for v in rec.verdicts if v.name == preset)


@pytest.mark.parametrize("cache_free,on_output,verdict", [
    (100, False, "fits"),  # 12.8 GiB download in the cache, 0.2 GiB of adapters at the output
    (5, False, "does-not-fit"),  # the cache's disk cannot take the download
    (100, True, "does-not-fit"),  # one disk of 1 GiB: download + adapters do not fit
    (100, None, "does-not-fit"),  # not known: the cautious sum
])
def test_a_profile_with_the_hf_cache_on_another_disk_judges_each_disk(
        tmp_path: Path, cache_free: float, on_output: bool | None, verdict: str) -> None:
    data = json.loads(H200.read_text()) | {"disk_free_gib": 1.0, "hf_cache_free_gib": cache_free,
                                           "hf_cache_on_output_disk": on_output}
    path = tmp_path / "apart.json"
    path.write_text(json.dumps(data))
    rec, lora = verdict_of(load_profile(path))
    assert lora.verdict == verdict, lora.reasons
    if on_output is False:
        assert any(r.startswith("needs ~12.8 GiB free in the HF cache (the model download); "
                                f"{cache_free} GiB free") for r in lora.reasons), lora.reasons
        assert any(r.startswith("needs ~0.2 GiB free at ./outputs; 1 GiB free")
                   for r in lora.reasons), lora.reasons
    else:
        assert any(r.startswith("needs ~13.0 GiB free at ./outputs; 1 GiB free")
                   for r in lora.reasons), lora.reasons
    if verdict == "fits":
        assert rec.recommended in (LORA, "gpt-oss-20b-lora-mxfp4")


def test_probe_and_doctor_json_record_whether_the_cache_shares_the_output_disk(
        tmp_path: Path) -> None:
    profile = hardware.probe(str(tmp_path / "out"), nvml=None)
    assert profile.hf_cache_on_output_disk is True  # both under tmp_path here
    saved = json.loads(cli("doctor", "--json", "--output-dir", str(tmp_path / "out")))
    assert saved["hf_cache_on_output_disk"] is True
    path = tmp_path / "me.json"
    path.write_text(json.dumps(saved | {"hf_cache_on_output_disk": "no"}))
    result = CliRunner().invoke(app, ["presets", "--hardware", str(path)])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "hf_cache_on_output_disk" in result.output


def test_a_resume_counts_only_the_checkpoints_not_yet_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from osstune.engine.plan.preflight import machine_problems

    cfg = load_preset("gpt-oss-20b-fft-fsdp2")  # keep_last 2: 3 x 116.9 GiB at a save's peak
    out = tmp_path / "fft"
    for step in (100, 200):
        (out / "checkpoints" / f"step-{step:06d}").mkdir(parents=True)
        (out / "checkpoints" / f"step-{step:06d}" / "COMPLETE").write_text("ok")
    profile = load_profile(PROFILES / "4xa100-80gb.json")
    Disks(monkeypatch, cache=200, out=200, shared=True)
    fresh = machine_problems(cfg, profile, out)
    assert any(p.startswith("disk: 200 GiB free at ") and "checkpoints (3 x weights + AdamW) "
               "351 GiB" in p for p in fresh), fresh
    resumed = machine_problems(cfg, profile, out, resume=True)  # 1 more + export + download
    assert not any(p.startswith("disk:") for p in resumed), resumed
    assert preflight(cfg, out, resume=True, force=False, profile=profile) == []
    Disks(monkeypatch, cache=100, out=100, shared=True)
    with pytest.raises(PreflightError, match=r"checkpoints \(1 more x weights \+ AdamW\) 117 GiB"):
        preflight(cfg, out, resume=True, force=False, profile=profile)


def test_the_verdict_and_the_suggestions_split_the_disk_need_alike(tmp_path: Path) -> None:
    """One rule (recommend.disk_needs) for the verdict and for `plan`'s suggestions: the
    download is judged in the HF cache only when the profile says the cache is on another disk
    *and* how much is free there; otherwise it counts at the output folder."""
    from osstune.engine.plan.estimate import estimate
    from osstune.engine.plan.recommend import disk_needs

    cfg = load_preset(LORA)
    profile = load_profile(h200_file(tmp_path, 51.1, cached=False))
    est = estimate(cfg, profile)
    assert disk_needs(est, profile) == (0.0, est.disk_gib)
    profile.hf_cache_on_output_disk = False  # apart, but its free space unknown: counted here
    assert disk_needs(est, profile) == (0.0, est.disk_gib)
    profile.hf_cache_free_gib = 100.0
    in_cache, at_output = disk_needs(est, profile)
    assert in_cache == pytest.approx(HUB_20B_GIB, abs=0.01)
    assert at_output == pytest.approx(est.disk_gib - in_cache)
