#!/usr/bin/env bash
# The built-in model's training run on one H100/H200, within one 10-minute device call (with EVAL, train for
# less: MINUTES=7).
# Usage: scripts/train_gpu.sh OUT_DIR [train_builtin.py arguments...]
#   MINUTES (default 8.5): training time; WORKERS (default 14): data workers;
#   EVAL="SHORT LONG [START START_LONG]" (optional): then evaluate the model on that many held-out short and long
#   clips, from clip START and START_LONG (default 0: a subset of the full evaluation; "50 15 150 60" is a
#   validation set apart from it), at most EVAL_SECONDS (default 100) of it.
# The checkpoint and logs come back as one tar split in 15 MB parts (the device returns at most 8 files of 16 MB):
#   cat OUT/run.tar.part-* | tar -x -C /tmp && cp /tmp/run/final/* stdcli/builtin/
# then evaluate it where it ships: python scripts/eval_builtin.py --json docs/model-eval.json
set -euo pipefail
out="$1"
shift
run="$out/run"
mkdir -p "$run"
nvidia-smi --query-gpu=name --format=csv,noheader > "$run/device.txt"
python scripts/train_builtin.py --out "$run" --minutes "${MINUTES:-8.5}" --workers "${WORKERS:-14}" "$@" > "$run/train.txt" 2>&1
rm -f "$run/state.pt"  # the resumable state: optimizer moments too, not wanted back
tar -cf "$out/run.tar" -C "$out" run
split -b 15M "$out/run.tar" "$out/run.tar.part-"
rm -f "$out/run.tar"
tail -2 "$run/train.txt"
if [ -n "${EVAL:-}" ]; then
    read -r short long start start_long <<< "$EVAL"
    timeout "${EVAL_SECONDS:-100}" python scripts/eval_builtin.py --model "$run/final" --device cuda --short "$short" \
        --long "$long" --start "${start:-0}" --start-long "${start_long:-0}" --workers 4 --json "$out/eval.json" \
        > "$run/eval.txt" 2>&1 || echo "evaluation stopped: $?"
    grep -v "^\[" "$run/eval.txt" | tail -20
fi
rm -rf "$run"
