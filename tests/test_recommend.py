"""Preset verdicts and the recommendation for the reference machines in tests/profiles/."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from osstune.engine.plan.config import RunConfig, load_config, load_preset, preset_names
from osstune.engine.plan.hardware import GpuInfo, HardwareProfile, load_profile
from osstune.engine.plan.recommend import (
    CAPABILITY,
    TIGHT_HEADROOM,
    Recommendation,
    fmt_gib,
    judge,
    recommend,
)

PROFILES = Path(__file__).parent / "profiles"

LORA = "gpt-oss-20b-lora-1gpu"
OFFLOAD = "gpt-oss-20b-fft-fsdp2-offload"
FFT = "gpt-oss-20b-fft-fsdp2"
BIG = "gpt-oss-120b-fft-fsdp2-offload"
TINY = "tiny-cpu-demo"
PACKED = "gpt-oss-20b-lora-mxfp4"
PACKED_BIG = "gpt-oss-120b-lora-mxfp4"
NO = "does-not-fit"
P80 = {PACKED: "fits", PACKED_BIG: "fits"}  # packed-experts presets on an 80 GB card
P48 = {PACKED: "fits", PACKED_BIG: NO}

# profile -> (verdict per preset, recommended preset). Verdicts come from the estimate of each
# config (engine/plan/estimate.py). FSDP's terms are each CUDA stream's peak, fitted to the
# 8-layer offload proxy (bench/calibration/h200-fft-offload-proxy-8layers-merged.json; the
# 26.9 GiB 2-GPU point measured the code before issue 14's fixes and is superseded): 20b FFT +
# offload is estimated at ~19.6 GiB per GPU with the bf16 gradient reduce of 2-rank offload, so
# it fits (and is recommended on) two 24 GB cards; 120b FFT + offload at ~41 GiB per GPU on
# 8 GPUs (no longer the ~73 GiB of a 45 % slack fitted to the superseded points): it fits the
# 8x80 GB machine with disk for it, tight on 4x80 GB. Neither FFT preset is measured on GPUs.
EXPECTED = {
    "1xh100-80gb": ({LORA: "fits", OFFLOAD: NO, FFT: NO, BIG: NO, TINY: "fits", **P80}, LORA),
    "1xrtx-a6000-48gb": ({LORA: "fits", OFFLOAD: NO, FFT: NO, BIG: NO, TINY: "fits", **P48},
                         LORA),
    "1xh200-141gb-disk51": ({LORA: "fits", OFFLOAD: NO, FFT: NO, BIG: NO, TINY: "fits", **P48},
                            LORA),
    # one or two 24 GB cards: the packed-experts LoRA (issue 12)
    "1xrtx4090-24gb": ({LORA: NO, OFFLOAD: NO, FFT: NO, BIG: NO, TINY: "fits", **P48}, PACKED),
    "2xrtx4090-24gb": ({LORA: NO, OFFLOAD: "fits", FFT: NO, BIG: NO, TINY: "fits", **P48},
                       OFFLOAD),
    "4xa100-80gb": ({LORA: "fits", OFFLOAD: "fits", FFT: "fits", BIG: "tight", TINY: "fits",
                     **P80}, FFT),
    "8xh100-80gb-4tb": ({LORA: "fits", OFFLOAD: "fits", FFT: "fits", BIG: "fits", TINY: "fits",
                         **P80}, BIG),
    "8xh100-80gb-1tb": ({LORA: "fits", OFFLOAD: "fits", FFT: "fits", BIG: NO, TINY: "fits",
                         **P80}, FFT),
    "cpu-only": ({LORA: NO, OFFLOAD: NO, FFT: NO, BIG: NO, TINY: "fits", PACKED: NO,
                  PACKED_BIG: NO}, TINY),
}


def profile(name: str) -> HardwareProfile:
    return load_profile(PROFILES / f"{name}.json")


def by_name(rec: Recommendation) -> dict:
    return {v.name: v for v in rec.verdicts}


@pytest.fixture(scope="module")
def presets() -> list:
    return [load_preset(n) for n in preset_names()]


@pytest.fixture(scope="module")
def bf16_presets(presets: list) -> list:
    """Without the packed-experts presets (which fit 24 GB cards): the fallbacks below."""
    return [p for p in presets if p.model.experts == "bf16"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_machines(name: str, presets: list) -> None:
    verdicts, recommended = EXPECTED[name]
    rec = recommend(profile(name), presets)
    assert {v.name: v.verdict for v in rec.verdicts} == verdicts
    assert rec.recommended == recommended
    assert [v.name for v in rec.verdicts if v.recommended] == [recommended]
    for v in rec.verdicts:  # the deciding reason comes first and is a number
        assert v.verdict == "fits" or any(ch.isdigit() for ch in v.reasons[0])


def test_default_presets_are_the_shipped_ones() -> None:
    rec = recommend(profile("1xh100-80gb"))
    assert [v.name for v in rec.verdicts] == preset_names()
    assert set(CAPABILITY) == set(preset_names())


def test_reasons_say_why_in_numbers(presets: list) -> None:
    v = by_name(recommend(profile("8xh100-80gb-1tb"), presets))
    # 3 x 653 GiB checkpoints (a save writes the new one before the oldest goes) + the 218 GiB
    # export + the 61 GiB MXFP4 download
    assert v[BIG].reasons[0] == "needs ~2.2 TiB free at ./outputs; 931 GiB free"
    assert v[FFT].reasons[:3] == [
        "runs on 4 of 8 GPUs",
        "needs ~57.4 GiB on each of 4 GPUs (cards of >= 58.1 GiB); each has 79.7 GiB "
        "(28% headroom)",
        "also runs on 8 GPUs at ~37.1 GiB each (--set gpus=8)",
    ]
    v = by_name(recommend(profile("2xrtx4090-24gb"), presets))
    assert v[LORA].reasons[0] == (
        "needs ~41.4 GiB on one GPU (cards of >= 42.1 GiB); the largest has 24.0 GiB")
    assert v[OFFLOAD].reasons[:2] == ["runs on 2 of 2 GPUs", (
        "needs ~19.0 GiB on each of 2 GPUs (cards of >= 19.7 GiB); each has 24.0 GiB "
        "(21% headroom)")]
    assert v[FFT].reasons[0] == ("needs ~98.0 GiB on each of 2 GPUs (cards of >= 98.7 GiB); "
                                 "each has 24.0 GiB")
    assert "needs ~940 GiB host RAM (CPU offload); the machine has 252 GiB" in v[BIG].reasons
    v = by_name(recommend(profile("cpu-only"), presets))
    assert v[LORA].reasons[0] == "needs 1 GPU; found none"
    assert v[TINY].reasons[0] == "runs on CPU"


def test_tight_means_less_than_ten_percent_headroom(presets: list) -> None:
    v = by_name(recommend(profile("1xrtx-a6000-48gb"), presets))[LORA]
    assert v.reasons[:2] == ["runs on 1 of 1 GPU", "needs ~41.4 GiB on one GPU (cards of >= 42.1 "
                             "GiB); the largest has 48.0 GiB (14% headroom)"]
    # Exactly at the threshold: the peak on a card with 10% to spare fits.
    peak = v.requirements.peak_mem_gib_per_gpu
    card = peak / (1 - TIGHT_HEADROOM)
    needed = v.requirements.min_gpu_mem_gib
    for total, verdict in ((card, "fits"), (card - 0.1, "tight"), (needed, "tight"),
                           (needed - 0.1, NO)):
        p = dataclasses.replace(profile("1xrtx-a6000-48gb"),
                                gpus=[GpuInfo(0, "card", memory_total_gib=total)])
        assert by_name(recommend(p, presets))[LORA].verdict == verdict, total


def test_tight_disk_loses_to_a_smaller_preset_that_fits(presets: list) -> None:
    p = dataclasses.replace(profile("8xh100-80gb-4tb"), disk_free_gib=2400)
    rec = recommend(p, presets)
    v = by_name(rec)
    assert v[BIG].verdict == "tight"
    assert "needs ~2.2 TiB free at ./outputs; 2.3 TiB free (7% headroom)" in v[BIG].reasons
    assert rec.recommended == FFT
    assert rec.summary == f"{FFT} is the most capable preset that fits this machine."


def test_tight_recommended_when_nothing_fits_outright(bf16_presets: list) -> None:
    p = dataclasses.replace(profile("1xrtx-a6000-48gb"),
                            gpus=[GpuInfo(0, "a 45 GiB card", memory_total_gib=45.0)])
    rec = recommend(p, bf16_presets)
    assert rec.recommended == LORA  # tight, yet preferred over the CPU demo that fits
    assert rec.summary == (f"{LORA} fits with less than 10% headroom (tight); "
                           "no GPT-OSS preset fits outright.")


def test_too_little_ram_for_offload(presets: list) -> None:
    p = dataclasses.replace(profile("2xrtx4090-24gb"), ram_gib=125.7, gpus=[
        GpuInfo(i, "NVIDIA RTX A6000", 47.99) for i in range(2)])
    rec = recommend(p, presets)
    v = by_name(rec)[OFFLOAD]
    assert v.verdict == NO
    assert v.reasons[0] == "needs ~170 GiB host RAM (CPU offload); the machine has 126 GiB"
    assert rec.recommended == LORA


def test_no_gpt_oss_preset_fits_summary(bf16_presets: list) -> None:
    # two 24 GB cards in a 128 GB host: too little RAM for the offloaded 20b states
    rec = recommend(dataclasses.replace(profile("2xrtx4090-24gb"), ram_gib=125.7), bf16_presets)
    assert rec.recommended == TINY
    assert rec.summary.startswith(f"No GPT-OSS preset fits this machine; {TINY} runs on CPU.")
    assert (f"{LORA} needs 1 GPU with >= 42.1 GiB, ~14.2 GiB host RAM, ~13.0 GiB free disk"
            in rec.summary)
    assert f"{OFFLOAD} needs 2 GPUs with >= 19.7 GiB, ~170 GiB host RAM" in rec.summary


def test_cpu_only_summary_says_what_hardware_would_do(presets: list) -> None:
    rec = recommend(profile("cpu-only"), presets)
    assert rec.summary.startswith("No NVIDIA GPU found (NVIDIA driver not available: NVML Shared "
                                  f"Library Not Found); {TINY} runs on CPU. For GPT-OSS: "
                                  f"{PACKED} needs 1 GPU with >= ")


def test_nothing_fits_at_all(presets: list) -> None:
    p = dataclasses.replace(profile("cpu-only"), ram_gib=2.0)
    rec = recommend(p, presets)
    assert rec.recommended is None
    assert not any(v.recommended for v in rec.verdicts)
    assert by_name(rec)[TINY].reasons[0] == "needs ~3.5 GiB host RAM; the machine has 2 GiB"
    assert rec.summary.startswith("No preset fits this machine.")
    assert f"{TINY} needs ~3.5 GiB host RAM, ~0.7 GiB free disk" in rec.summary


def test_other_gpu_count_from_the_estimate(presets: list) -> None:
    # Eight 50 GiB cards: ~57 GiB at 4 GPUs does not fit; ~37 GiB at 8 GPUs fits (this engine
    # keeps bf16 weights, gradients and two AdamW states: 8 B/parameter of sharded state).
    p = dataclasses.replace(profile("1xrtx-a6000-48gb"),
                            gpus=[GpuInfo(i, "a 50 GiB card", 50.0) for i in range(8)],
                            ram_gib=503.0)
    v = by_name(recommend(p, presets))[FFT]
    assert v.verdict == "fits"
    assert v.reasons[:2] == [
        "runs on 8 of 8 GPUs (--set gpus=8; the preset's default is 4)",
        "needs ~37.1 GiB on each of 8 GPUs (cards of >= 37.8 GiB); each has 50 GiB "
        "(26% headroom)",
    ]


def test_mixed_cards_use_the_largest(presets: list) -> None:
    p = dataclasses.replace(profile("2xrtx4090-24gb"), gpus=[
        GpuInfo(0, "NVIDIA GeForce RTX 4090", 23.99), GpuInfo(1, "NVIDIA RTX A6000", 47.99)])
    v = by_name(recommend(p, presets))
    assert v[LORA].verdict == "fits"
    assert "the largest has 48.0 GiB (14% headroom)" in v[LORA].reasons[1]
    assert v[OFFLOAD].verdict == "fits"  # judged on the smaller card
    assert "the smallest of them has 24.0 GiB (21% headroom)" in v[OFFLOAD].reasons[1]


def test_busy_gpu_makes_a_probed_machine_tight(presets: list) -> None:
    busy = GpuInfo(0, "NVIDIA H100 80GB HBM3", 79.65, memory_free_gib=20.0, memory_used_gib=59.65)
    p = dataclasses.replace(profile("1xh100-80gb"), gpus=[busy], source="probe")
    v = by_name(recommend(p, presets))[LORA]
    assert v.verdict == "tight"
    assert v.reasons[0] == "GPU 0 has only 20 GiB free now (in use: 59.6 GiB)"
    # A profile file describes the machine, not its load at the time it was saved.
    p = dataclasses.replace(p, source="saved.json")
    assert by_name(recommend(p, presets))[LORA].verdict == "fits"


def test_requirements_block_is_not_what_decides(presets: list) -> None:
    # The verdict follows the config: without its requirements block a preset is judged the same.
    bare = presets[0].model_copy(update={"requirements": None, "name": "mine"})
    v = by_name(recommend(profile("1xh100-80gb"), [bare, *presets]))
    assert v["mine"].verdict == v[LORA].verdict == "fits"
    assert v["mine"].reasons == v[LORA].reasons


def test_config_that_cannot_be_estimated_is_never_recommended(presets: list) -> None:
    data = presets[0].model_dump()
    data["model"]["architecture"] = {"num_mystery_units": 3}
    odd = RunConfig.model_validate({**data, "name": "mine"})
    rec = recommend(profile("cpu-only"), [odd, *presets])
    v = by_name(rec)["mine"]
    assert v.verdict == "tight" and v.requirements is None and not v.recommended
    assert v.reasons == ["no estimate: model.architecture.num_mystery_units: unknown GPT-OSS "
                         "config key (the estimator models GPT-OSS shapes only)"]
    assert rec.recommended == TINY


def test_effective_config_is_judged_not_the_preset() -> None:
    # A 16,384-token LoRA run on a 48 GB card: the preset fits, the edited config does not.
    card = profile("1xrtx-a6000-48gb")
    assert judge(load_preset(LORA), card).verdict == "fits"
    long_rows = load_config(LORA, ["training.sequence_len=16384", "training.unchecked_layers=0"])
    v = judge(long_rows, card)
    assert v.verdict in ("tight", NO)
    assert v.requirements.peak_mem_gib_per_gpu > 45
    assert judge(load_config(LORA, ["training.sequence_len=131072"]), card).verdict == NO


def test_h200_with_51_gib_free_disk_gets_the_lora_preset() -> None:
    # issue 17: the disk need counts the download (13.8 GB), adapter checkpoints and the adapter,
    # not a merged bf16 export the LoRA run never writes.
    rec = recommend(profile("1xh200-141gb-disk51"))
    v = by_name(rec)[LORA]
    assert rec.recommended == LORA and v.verdict in ("fits", "tight")
    assert v.requirements.disk_gib < 14


def test_fmt_gib() -> None:
    assert [fmt_gib(x) for x in (1, 23.5, 23.99, 44, 79.65, 931, 2800, 3725)] == [
        "1 GiB", "23.5 GiB", "24.0 GiB", "44 GiB", "79.7 GiB", "931 GiB", "2.7 TiB", "3.6 TiB"]
