#!/usr/bin/env bash
# The built-in model's training run on one CUDA GPU (the shipped model: 8.5 minutes on one H200), optionally followed
# by an evaluation on held-out clips.
# Usage: scripts/train_gpu.sh OUT_DIR [train_builtin.py arguments...]
#   MINUTES (default 8.5): training time; WORKERS (default 14, for 16 CPU cores): data workers;
#   EVAL="SHORT LONG [START START_LONG]" (optional): then evaluate the model on that many held-out short and long
#   clips, from clip START and START_LONG (default 0: a subset of the full evaluation; "50 15 150 60" is a
#   validation set apart from it); EVAL_SECONDS (optional) stops the evaluation after that many seconds.
# Writes OUT_DIR/run/: final/ (the checkpoint, float16 safetensors), train.log (JSON lines), train.txt (the run's
# output), device.txt, state.pt (the resumable state, optimizer moments too: pass --resume to continue an
# interrupted run into the same OUT_DIR) and, with EVAL, eval.txt and OUT_DIR/eval.json. To ship the model:
#   cp OUT_DIR/run/final/* stdcli/builtin/
# then evaluate it where it ships: python scripts/eval_builtin.py --json docs/model-eval.json
set -euo pipefail
out="${1:?usage: scripts/train_gpu.sh OUT_DIR [train_builtin.py arguments...]}"
shift
run="$out/run"
mkdir -p "$run"
nvidia-smi --query-gpu=name --format=csv,noheader > "$run/device.txt"
python scripts/train_builtin.py --out "$run" --minutes "${MINUTES:-8.5}" --workers "${WORKERS:-14}" "$@" 2>&1 \
    | tee -a "$run/train.txt"
if [ -n "${EVAL:-}" ]; then
    read -r short long start start_long <<< "$EVAL"
    # a timeout of 0 (the default) sets no limit
    timeout "${EVAL_SECONDS:-0}" python scripts/eval_builtin.py --model "$run/final" --device cuda --short "$short" \
        --long "$long" --start "${start:-0}" --start-long "${start_long:-0}" --workers 4 --json "$out/eval.json" \
        > "$run/eval.txt" 2>&1 || echo "evaluation stopped: $?"
    grep -v "^\[" "$run/eval.txt" | tail -20
fi
