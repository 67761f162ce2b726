#!/usr/bin/env bash
# Held-out points for the estimator (issue 13): configs it was NOT fitted to, 240 s wall in all.
# Each part is one bench/bench_train.py call (its own worker process per length, random weights,
# LoRA r8 on q/k/v/o, 1 GPU capped at 79.1 GiB like an 80 GB card), written to $OUT/a13/ when
# the part ends; parts most important first:
#   1. 120b.json        gpt-oss-120b shapes, packed MXFP4 experts, 8192 tokens (fitted: 2048 only)
#   2. packed20b.json   gpt-oss-20b packed, 32,768 tokens (fitted: 2048-16,384, capped at 23.5)
#   3. chunked-unchecked.json gpt-oss-20b bf16, uncompiled, 6 layers unchecked on 20,480-token
#                       rows, past moe_chunk_tokens 16,384: the estimator's open gap
#                       (bench/calibration/h200-cli-lora-1gpu-auto20480.json: +31 % memory)
# Each result carries its engine `--set` items: `python bench/calibration_points.py FILE` turns it
# into bench/calibration/*.json points and prints the estimate's error on each (before fitting).
#   bash bench/gpu/a13.sh                                   # GPU machine, repo root, $OUT set
#   A13_DRY_RUN=1 OUT=/tmp/o bash bench/gpu/a13.sh          # CPU: tiny model, same steps/files
set -u
BUDGET=${A13_BUDGET_S:-240}
R="${OUT:-/tmp/a13-out}/a13"
mkdir -p "$R"
source "$(dirname "$0")/budget.sh"   # PY, START, left
TINY=()
SEQ120=8192; SEQ20=32768; SEQBF=20480; PACKED=packed-lean-eager; BF16=lever-chunked+unchecked6
if [ "${A13_DRY_RUN:-0}" = "1" ]; then  # CPU: flex attention has no CPU backward, eager runs
  TINY=(--tiny); SEQ120=64; SEQ20=128; SEQBF=64; PACKED=eager; BF16=eager
fi
LOGS=$(mktemp -d /tmp/a13-logs.XXXXXX)   # logs and scratch points stay off $OUT (3 files there)
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/osstune-bench-inductor}
# part NAME BOX_S ARGS...: one bench_train call boxed to BOX_S (or what is left), min 45 s
part() {
  local name=$1 box=$2; shift 2
  local have=$(( $(left) - 3 ))
  [ "$box" -gt "$have" ] && box=$have
  if [ "$box" -lt 45 ]; then echo "a13: $name skipped ($box s left)"; return; fi
  echo "a13: $name (${box} s box)"
  timeout -k 3 "$box" "$PY" bench/bench_train.py "${TINY[@]}" --levers '' --search '' \
    --budget-s $((box - 4)) --out "$R/$name.json" "$@" \
    > "$LOGS/$name.log" 2>&1 || { echo "a13: $name exit $?"; tail -n 6 "$LOGS/$name.log"; }
  grep -E '^(packed|lever|eager)' "$LOGS/$name.log" | sed 's/^/a13:   /' || true
}

part 120b 85 --model 120b --compare "$PACKED" --seqs "$SEQ120"
part packed20b 80 --compare "$PACKED" --seqs "$SEQ20"
part chunked-unchecked 70 --compare "$BF16" --seqs "$SEQBF"

# Summary: each point against the estimate (torch-free; scratch dir: nothing is committed here)
for f in "$R"/120b.json "$R"/packed20b.json "$R"/chunked-unchecked.json; do
  [ -f "$f" ] || continue
  "$PY" bench/calibration_points.py "$f" --out "$LOGS/points" 2>&1 | sed 's/^/a13: /' || true
done
echo "a13: done in $(( $(date +%s) - START )) s; results in $R"
