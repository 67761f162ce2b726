#!/usr/bin/env bash
# The real CLI on one GPU, as a user runs it: `osstune plan` (the estimate, before) then
# `osstune run` (measured) for the 20b LoRA presets on a full-size gpt-oss-20b hub folder in the
# hub's MXFP4 layout (random weights, written here: no download), 600 synthetic chat rows
# (bench/chat_rows.py), 2 micro-batches per step, 5 steps. Also `osstune doctor` and `presets` on
# the real probe. Results under $OUT/cli_runs/: doctor.txt, presets.txt, plan-PRESET.json,
# PRESET.events.jsonl, run-PRESET.out. ~4.5 minutes on an H200.
# Run from the repo root with osstune importable: bash bench/gpu/cli_runs.sh [RUN ...]
# RUN = PRESET[+KEY=VALUE...]: more --set overrides for that run, e.g.
#   gpt-oss-20b-lora-1gpu+training.pack_len=8192+training.unchecked_layers=0
# Each run's files are named after RUN ('+' and '=' become '_').
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
for spec in "${PRESETS[@]}"; do
  IFS=+ read -r -a parts <<< "$spec"
  p=${parts[0]}; label=$(echo "$spec" | tr '+=' '__'); more=()
  for kv in "${parts[@]:1}"; do more+=(--set "$kv"); done
  "${OS[@]}" plan "$p" "${SETS[@]}" "${more[@]}" --json --output-dir "$WORK/run" \
    > "$R/plan-$label.json"
  timeout -k 5 "${RUN_TIMEOUT_S:-170}" "${OS[@]}" run "$p" "${SETS[@]}" "${more[@]}" \
    --output "$WORK/run" > "$R/run-$label.out" 2>&1 < /dev/null
  echo "$label: exit $?"; tail -n 3 "$R/run-$label.out"
  cp "$WORK/run/events.jsonl" "$R/$label.events.jsonl"
  rm -rf "$WORK/run"
done
