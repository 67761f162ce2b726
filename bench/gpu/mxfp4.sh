#!/usr/bin/env bash
# Packed MXFP4 experts on one GPU (issue 12), 120 s wall in all, parts most important first:
#   a  20b LoRA packed vs bf16 at 8192 tokens, same run (packed capped at 23.5 GiB)
#   b  the longest row packed under the 23.5 GiB cap (16,384, then 32,768 when time is left)
#   c  packed vs bf16 at 2048 tokens, same run
#   d  packed == bf16 numerics on the GPU (2-layer 20b-shaped twins: loss and LoRA grads)
#   e  a full-size 20b hub-layout folder (random bytes, local disk) through the engine's loader:
#      seconds and peak host RSS (target: folder size + 4 GiB)
# Results: $OUT/mxfp4/{bf16,a-8192,b-longest,c-2048,d-numerics,e-load}.json, each written as
# soon as its part is done (bench/mxfp4_parts.py says what each holds); e-write.out: the folder's
# size and write time. The folder is written (nice 19) while a-d run; the load starts when c is
# written, beside d and the 32,768 row (whose speed is not a target).
# Run from the repo root: bash bench/gpu/mxfp4.sh
# Check it without a GPU: MXFP4_TINY=1 MXFP4_BUDGET_S=900 OUT=/tmp/o bash bench/gpu/mxfp4.sh
set -u
BUDGET=${MXFP4_BUDGET_S:-120}
R="${OUT:?set OUT}/mxfp4"
mkdir -p "$R"
source "$(dirname "$0")/budget.sh"   # PY, START, left
at() { echo $((START + $1 * BUDGET / 120)); }   # a point of the 120 s plan, scaled
until_at() { local s=$(( $(at "$1") - $(date +%s) )); [ "$s" -lt 1 ] && s=1; echo "$s"; }

if [ -n "${MXFP4_TINY:-}" ]; then
  TINY=(--tiny); MODEL=tiny; SEQS=(--seqs 128,32); PACKED_SEQS=(--seq-a 128 --longest 256,512 --seq-c 32 --seq-d 16)
  LOAD=(--device cpu --seq 16)
else
  TINY=(); MODEL=20b; SEQS=(--seqs 8192,2048); PACKED_SEQS=(); LOAD=(--seq 1024 --attn eager)
fi
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/osstune-bench-inductor}
HUB=$(mktemp -d "${TMPDIR:-/tmp}/osstune-mxfp4-hub.XXXXXX")
WRITER=
PACKED=
cleanup() {
  for pid in $WRITER $PACKED; do kill "$pid" 2>/dev/null; done
  rm -rf "$HUB"
}
trap cleanup EXIT

# e (first half, CPU + disk, in the background at the lowest priority while a-d run on the GPU):
# the 20b folder, ~13 GiB of random bytes
nice -n 19 timeout "$(until_at 95)" "$PY" bench/bench_mxfp4.py --write "$HUB/hub" --model $MODEL \
  > "$R/e-write.out" 2> "$R/e-write.log" &
WRITER=$!

# a, c (bf16 side): one bf16 model, 8192 then 2048 tokens
timeout "$(until_at 50)" "$PY" bench/mxfp4_parts.py lengths "${TINY[@]}" \
  "${SEQS[@]}" --out "$R/bf16.json" --deadline "$(at 48)" --min-left-s $((14 * BUDGET / 120)) \
  2> "$R/bf16.log" || echo "bf16 part: exit $? (see $R/bf16.log)"

# a, b, c, d (packed side): one packed model; the numerics; 32,768 last
timeout "$(until_at 117)" "$PY" bench/mxfp4_parts.py packed "${TINY[@]}" \
  "${PACKED_SEQS[@]}" --bf16 "$R/bf16.json" --outdir "$R" --deadline "$(at 115)" \
  --min-left-s $((16 * BUDGET / 120)) 2> "$R/packed.log" &
PACKED=$!

# e (second half): once the timed parts are done (c written; d and the 32,768 row measure no
# speed), load the folder through the engine's loader in its own process, one LoRA step
while kill -0 "$PACKED" 2>/dev/null && [ ! -s "$R/c-2048.json" ]; do sleep 0.5; done
wait "$WRITER"; WROTE=$?; WRITER=
if [ "$WROTE" -ne 0 ]; then
  echo "e: writing the folder did not finish (exit $WROTE)"
  echo "{\"error\": \"writing the 20b folder: exit $WROTE\"}" > "$R/e-load.json"
elif [ "$(left 3)" -lt 10 ]; then
  echo "{\"error\": \"skipped: $(left) s left\"}" > "$R/e-load.json"
else
  timeout "$(left 3)" "$PY" bench/bench_mxfp4.py --load "$HUB/hub" --steps 1 "${LOAD[@]}" \
    > "$R/e-load.out" 2> "$R/e-load.log" || echo "e: load exit $? (see $R/e-load.log)"
  grep '^{' "$R/e-load.out" 2>/dev/null | tail -n 1 > "$R/e-load.json"  # full, or the load alone
  [ -s "$R/e-load.json" ] || echo '{"error": "no result (see e-load.log)"}' > "$R/e-load.json"
fi
wait "$PACKED" || echo "packed part: exit $? (see $R/packed.log)"
cat "$R/e-write.out" 2>/dev/null
"$PY" bench/mxfp4_parts.py summary --outdir "$R"
echo "mxfp4: $(( $(date +%s) - START )) s"
