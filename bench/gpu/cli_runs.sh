#!/usr/bin/env bash
# The real CLI on one GPU, as a user runs it: `osstune plan` (the estimate, before) then
# `osstune run` (measured) for the 20b LoRA presets on a full-size gpt-oss-20b hub folder in the
# hub's MXFP4 layout (random weights, written here: no download), 600 synthetic chat rows
# (bench/chat_rows.py), 2 micro-batches per step, 5 steps. Also `osstune doctor` and `presets` on
# the real probe. Results under $OUT/cli_runs/: doctor.txt, presets.txt, plan-PRESET.json,
# PRESET.events.jsonl, run-PRESET.out. ~4.5 minutes on an H200.
# Run from the repo root with osstune importable: bash bench/gpu/cli_runs.sh [PRESET ...]
set -u
PY=${PYTHON:-python3}
R="${OUT:?set OUT}/cli_runs"; mkdir -p "$R"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/osstune-cli-runs.XXXXXX"); trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OS=("$PY" -m osstune.tui.cli)
"${OS[@]}" doctor > "$R/doctor.txt" 2>&1
"${OS[@]}" presets > "$R/presets.txt" 2>&1
"$PY" bench/bench_mxfp4.py --write "$WORK/hub" --model 20b > "$R/hub-write.json" || exit 1
"$PY" bench/chat_rows.py "$WORK/chat.jsonl" 600
SETS=(--set "model.id=$WORK/hub" --set model.tokenizer=builtin:gpt-oss-offline
      --set training.gradient_accumulation_steps=2 --set training.max_steps=5
      --dataset "$WORK/chat.jsonl")
PRESETS=("$@"); [ ${#PRESETS[@]} -eq 0 ] && PRESETS=(gpt-oss-20b-lora-1gpu gpt-oss-20b-lora-mxfp4)
for p in "${PRESETS[@]}"; do
  "${OS[@]}" plan "$p" "${SETS[@]}" --json --output-dir "$WORK/run-$p" > "$R/plan-$p.json"
  timeout -k 5 170 "${OS[@]}" run "$p" "${SETS[@]}" --output "$WORK/run-$p" > "$R/run-$p.out" 2>&1 < /dev/null
  echo "$p: exit $?"; tail -n 3 "$R/run-$p.out"
  cp "$WORK/run-$p/events.jsonl" "$R/$p.events.jsonl"
  rm -rf "$WORK/run-$p"
done
