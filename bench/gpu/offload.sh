#!/usr/bin/env bash
# Offload proxy on one GPU, time-boxed to 120 s of wall clock in total (issue 14).
#
#   bash bench/gpu/offload.sh                 # on the GPU machine, from the repo root; $OUT set
#   OFFLOAD_DRY_RUN=1 bash bench/gpu/offload.sh   # on a CPU: tiny model, same steps and files
#
# gpt-oss-20b shapes cut to $LAYERS decoder layers, one rank, FSDP2 + CPU offload, random bf16
# weights, 8 x 2048-token rows per optimizer step, GPU capped to 23.5 GiB (a 24 GB card).
# Parts; each writes its JSON under $OUT/offload/ as soon as it ends (part 1 is short and
# checks the setting part 2 depends on):
#   1. pin.json     pinned host allocation rate: cudaHostAlloc vs host-register on 8 threads
#   2. after.json   this tree's engine, 3 steps (1 warm-up + 2 steady): peak reserved/allocated,
#                   step times, step 1 part by part (pinning, compile), reserved per CUDA stream,
#                   host RSS, grad clip folded into the CPU AdamW (optim.clip_gradients)
#   3. before.json  the same run as main ran it (fp32 gradient reduce, no host-register
#                   pinning: bench_offload.py --main-mode), 2 steps, with whatever time is left
set -u
# The engine's own allocator settings are what is measured: none inherited from the caller.
unset PYTORCH_CUDA_ALLOC_CONF PYTORCH_ALLOC_CONF
BUDGET=${OFFLOAD_BUDGET_S:-120}
LAYERS=${OFFLOAD_LAYERS:-4}
source "$(dirname "$0")/budget.sh"   # PY, START, left
DEST="${OUT:-/tmp/offload-out}/offload"
WORK=$(mktemp -d /tmp/offload-work.XXXXXX)
mkdir -p "$DEST"
TINY=()
if [ "${OFFLOAD_DRY_RUN:-0}" = "1" ]; then
  TINY=(--tiny)
  LAYERS=2
fi
common=(--layers "$LAYERS" --cap-gib 23.5 --conversations 160 --kill-grace-s 3 ${TINY[@]+"${TINY[@]}"})

# 1. pinning rate (two short processes); also checks that this torch takes the engine's
#    host-register setting: if it refuses it, part 2 runs with expandable segments only (user-set)
echo "offload: part 1 (pinning rate)"
timeout -k 2 14 "$PY" bench/pin_rate.py --gib 2 --count 1 --out "$DEST/pin.json" >/dev/null \
  2>"$WORK/pin.err" || echo "offload: part 1 incomplete"
if "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))
sys.exit(0 if "error" in d.get("host_register_8_threads", {}) else 1)' "$DEST/pin.json" \
  2>/dev/null; then
  echo "offload: host-register pinning refused by this torch; after runs without it"
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
fi

# 2. after: ~75 s expected at 4 layers (startup ~25 s, step 1 with pinning/compile, 2 x ~2 s)
T2=$(( $(left) - 12 ))
echo "offload: part 2 (after, $LAYERS layers, 3 steps, ${T2} s box)"
timeout -k 5 $((T2 + 8)) "$PY" bench/bench_offload.py "${common[@]}" --timeout-s "$T2" \
  --work "$WORK/after" --variant "after=.:3" --out "$DEST/after.json" >/dev/null \
  2>"$WORK/after.err" || { echo "offload: part 2 failed"; tail -5 "$WORK/after.err"; }
cp "$WORK/after/after/events.jsonl" "$DEST/after.events.jsonl" 2>/dev/null  # a calibration point
unset PYTORCH_CUDA_ALLOC_CONF

# 3. before: whatever is left (its step 1 alone gives main's peak memory)
T3=$(( $(left) - 6 ))
if [ "$T3" -ge 25 ]; then
  echo "offload: part 3 (before = main's behaviour, $LAYERS layers, 2 steps, ${T3} s box)"
  timeout -k 3 $((T3 + 4)) "$PY" bench/bench_offload.py "${common[@]}" --main-mode \
    --timeout-s "$T3" --work "$WORK/before" --variant "before=.:2" --out "$DEST/before.json" \
    >/dev/null 2>"$WORK/before.err" || echo "offload: part 3 failed or cut"
  cp "$WORK/before/before/events.jsonl" "$DEST/before.events.jsonl" 2>/dev/null
else
  echo "offload: part 3 skipped (${T3} s left)"
fi

"$PY" bench/gpu/offload_summary.py "$DEST" "$LAYERS" || true
rm -rf "$WORK"
echo "offload: done in $(( $(date +%s) - START )) s"
