#!/usr/bin/env bash
# pack_len 2048 vs auto: the LoRA recipe's real-data throughput on short chat data (synthetic
# conversations of ~250-1500 tokens), gpt-oss-20b shapes (all 24 layers, random init), the real
# engine, same GPU, one run after the other. Budget: 80 s wall. Results: $OUT/packlen/*.json
# (pack2048.json, packauto.json as each run ends, then summary.json). See bench/bench_packlen.py.
# CPU check of the whole flow: OUT=/tmp/o bash bench/gpu/packlen.sh --dry-run
set -u
OUT="${OUT:-/tmp/osstune-packlen-out}"
mkdir -p "$OUT/packlen"
PY="${PYTHON:-python3}"
BUDGET="${PACKLEN_BUDGET_S:-72}"
timeout -k 1 78 "$PY" bench/bench_packlen.py --out "$OUT/packlen" --budget-s "$BUDGET" \
    --work "${TMPDIR:-/tmp}/osstune-packlen" "$@"
rc=$?
echo "packlen: exit $rc; results in $OUT/packlen:"
ls "$OUT/packlen" 2>/dev/null
exit $rc
