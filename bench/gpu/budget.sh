# Sourced by the bench/gpu scripts after they set BUDGET (seconds of wall clock in all):
# PY (the interpreter), START (now) and `left [MARGIN]` (seconds left of BUDGET, less MARGIN).
PY=${PYTHON:-python3}
START=$(date +%s)
left() { echo $((START + BUDGET - $(date +%s) - ${1:-0})); }
