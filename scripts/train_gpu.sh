#!/usr/bin/env bash
# The built-in model's training run on one H100/H200, within one 10-minute device call.
# Usage: scripts/train_gpu.sh [OUT_DIR] (default: $OUT, else ./runs). MINUTES (default 7.5) is the training time.
# The checkpoint comes back as a tar split in 15 MB parts (the device returns at most 8 files of 16 MB):
#   cat OUT/final.tar.part-* | tar -x -C /tmp && cp /tmp/final/* stdcli/builtin/
# then evaluate it where it ships: python scripts/eval_builtin.py --json docs/model-eval.json
set -euo pipefail
out="${1:-${OUT:-runs}}"
mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
python scripts/train_builtin.py --out "$out/builtin" --minutes "${MINUTES:-7.5}" --workers 14 > "$out/train.txt" 2>&1
tar -cf "$out/final.tar" -C "$out/builtin" final
split -b 15M "$out/final.tar" "$out/final.tar.part-"
mv "$out/builtin/train.log" "$out/train.log"
rm -rf "$out/final.tar" "$out/builtin"
tail -3 "$out/train.txt"
