#!/usr/bin/env bash
# The GPU figures of the fast path, bf16 exactness and the draft kinds (docs/benchmarks.md), on one CUDA GPU.
# Usage: scripts/gpu_fastpath.sh OUT_DIR [PART...]; parts (default: all, in this order):
#   kernel-tests  the kernels (bf16 batch invariance included), the quantized matmul, the fused step, and StD against
#                 our dense path in bf16 on random 7B-shape weights (tests/test_bf16.py)
#   tests         the engine's exactness tests on the GPU too: float32, through the CUDA graphs and the kernels
#   drafts-eval   the built-in model in bf16 over the held-out evaluation: answers of StD (each draft kind, and
#                 auto) against our dense path, and each kind's acceptance per question type
#   tune          the matmul configurations per weight shape, the quantized matmul, attention splits
#   invariance    Qwen2-VL-7B shape, random bf16 weights: step costs, and measured decoding at 16K and 64K, batch
#                 1, 4, 8 and 16, gamma 1 to 8: how many sequences equal our dense path's
#   drafts        the same shape at 16K and 64K, batch 1 and 8: each draft kind's step cost, decoding with each
#   inflated      the built-in model inflated to the 7B shape, on a 16-minute generated clip: 256 to 7,680 frames at
#                 batch 1, and 7,680 frames (about 64K tokens) at batch 8
#   builtin       the built-in model at 64 and 1,920 frames: generate vs dense vs StD, each draft kind
# Writes OUT_DIR/device.txt (the GPU, torch and transformers versions) and, per part, its JSON and a .txt of what
# it printed. TIMEOUT (seconds, default 3600) stops a command that runs longer; what it printed is kept.
set -uo pipefail
out="${1:?usage: scripts/gpu_fastpath.sh OUT_DIR [PART...]}"
shift
all="kernel-tests tests drafts-eval tune invariance drafts inflated builtin"
parts="${*:-$all}"
limit="${TIMEOUT:-3600}"
for part in $parts; do
  case " $all " in
  *" $part "*) ;;
  *) echo "unknown part: $part (parts: $all)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
python -c 'import torch, transformers; print(torch.cuda.get_device_name(0), torch.__version__, transformers.__version__)' \
  | tee "$out/device.txt"
show() { grep -v "^stdcli: bench" "$1" | grep -v "CUDAGraph.cpp" | tail -"${2:-40}"; }
random_init() {  # NAME, then the options of `stdcli bench --random-init`
  local name="$1"
  shift
  timeout "$limit" python -m stdcli bench --random-init --model qwen2-vl --device cuda --json "$out/$name.json" "$@" \
    2> "$out/$name.txt"
  show "$out/$name.txt" 30
}
for part in $parts; do
  case "$part" in
  kernel-tests)
    STDCLI_TEST_DEVICE=cuda timeout "$limit" python -m pytest -q -s -p no:cacheprovider -p no:randomly \
      tests/test_kernels.py tests/test_quant.py tests/test_fused.py tests/test_bf16.py > "$out/kernel_tests.txt" 2>&1
    grep -E "batch [0-9]|passed|failed|Error" "$out/kernel_tests.txt" | tail -12 ;;
  tests)
    STDCLI_TEST_DEVICE=cuda timeout "$limit" python -m pytest -q -x -p no:cacheprovider -p no:randomly \
      tests/test_std.py tests/test_batch.py > "$out/tests_cuda.txt" 2>&1
    tail -5 "$out/tests_cuda.txt" ;;
  drafts-eval)
    timeout "$limit" python scripts/eval_builtin.py --device cuda --dtype bfloat16 --drafts --workers 12 \
      --json "$out/drafts_eval.json" > "$out/drafts_eval.txt" 2>&1
    grep -v "^  " "$out/drafts_eval.txt" | tail -8 ;;
  tune)
    timeout "$limit" python scripts/tune_kernels.py --json "$out/tune_kernels.json" > "$out/tune_kernels.txt" 2>&1
    tail -40 "$out/tune_kernels.txt" ;;
  invariance)
    for context in 16384 65536; do
      random_init "invariance_${context}" --context "$context" --batch-size 1,4,8,16 --gamma 1,2,3,4,5,6,7,8 \
        --draft sparse --decode --max-new-tokens 128
    done ;;
  drafts)
    random_init drafts_7b --context 16384,65536 --batch-size 1,8 --gamma 2,4,6 --draft sparse,int8,int4 ;;
  inflated)
    timeout "$limit" python scripts/bench_inflated.py --frames 256,1920,3840,7680 --batch 1 \
      --json "$out/inflated_b1.json" > "$out/inflated_b1.txt" 2>&1
    tail -30 "$out/inflated_b1.txt"
    timeout "$limit" python scripts/bench_inflated.py --frames 7680 --batch 8 --json "$out/inflated_b8.json" \
      > "$out/inflated_b8.txt" 2>&1
    tail -14 "$out/inflated_b8.txt" ;;
  builtin)
    timeout "$limit" python -m stdcli bench --device cuda --frames 64,1920 --gamma auto,4 --draft auto,sparse,int4 \
      --max-new-tokens 96 --repeat 2 --json "$out/builtin_cuda_drafts.json" 2> "$out/builtin_cuda_drafts.txt"
    show "$out/builtin_cuda_drafts.txt" ;;
  esac
done
