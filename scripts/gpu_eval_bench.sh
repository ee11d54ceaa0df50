#!/usr/bin/env bash
# The built-in model on one H100/H200, in one device call: its evaluation on held-out seeds (docs/model.md) and
# gamma auto against fixed gammas and dense (docs/benchmarks.md, issue 7).
# Usage: scripts/gpu_eval_bench.sh [OUT_DIR] (default: $OUT, else ./gpu-out)
set -euo pipefail
out="${1:-${OUT:-gpu-out}}"
mkdir -p "$out"
python scripts/eval_builtin.py --device cuda --workers 12 --json "$out/model-eval.json" > "$out/model-eval.txt" 2>&1 \
  || tail -5 "$out/model-eval.txt"
python -m stdcli bench --device cuda --frames 64,256 --gamma auto,2,4 --max-new-tokens 96 \
  --json "$out/builtin_cuda_gamma.json" 2> "$out/builtin_cuda_gamma.txt" || tail -5 "$out/builtin_cuda_gamma.txt"
tail -22 "$out/model-eval.txt"; grep -v "^stdcli: bench" "$out/builtin_cuda_gamma.txt" | head -16
