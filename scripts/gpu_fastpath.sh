#!/usr/bin/env bash
# The GPU figures of the fast path and of gamma auto / batching (docs/benchmarks.md), on one CUDA GPU.
# Usage: scripts/gpu_fastpath.sh OUT_DIR [PART...]; parts (default: all, in this order):
#   tests    the kernels in bfloat16, and the engine's exactness tests on the GPU: float32, through the CUDA graphs
#            and the kernels
#   profile  Qwen2-VL-7B shape, random bf16 weights: dense / draft / verify steps against their floors,
#            16K and 64K context, batch 1 and 8, and measured decoding: dense vs fixed gammas vs auto
#   profile-batches  the same step costs and projection at batch 1, 4, 8 and 16 (no decoding)
#   kernels  where a 7B dense and StD step's GPU time goes, kernel by kernel (scripts/profile_step.py)
#   builtin  the built-in model at 64 and 256 frames: generate vs dense vs gamma 2, 4 and auto
#   batch    the built-in model, folder throughput at batch 1, 4, 8: generate vs dense vs gamma 4 and auto
# Writes OUT_DIR/device.txt (the GPU, torch and transformers versions) and, per part, its JSON and a .txt of the
# table it printed (tests: tests_cuda.txt). The 7B-shape parts need 16.6 GB for the random weights plus, per point,
# the caches and working memory (about 81 GB at batch 16 and 64K context); a point that does not fit in the free
# memory is skipped and says so. On one H200 each part took a few minutes; TIMEOUT (seconds, default 3600) only
# stops a command that hangs.
set -uo pipefail
out="${1:?usage: scripts/gpu_fastpath.sh OUT_DIR [PART...]}"
shift
parts="${*:-tests profile profile-batches kernels builtin batch}"
limit="${TIMEOUT:-3600}"
for part in $parts; do
  case "$part" in
  tests|profile|profile-batches|kernels|builtin|batch) ;;
  *) echo "unknown part: $part (parts: tests profile profile-batches kernels builtin batch)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
python -c 'import torch, transformers; print(torch.cuda.get_device_name(0), torch.__version__, transformers.__version__)' \
  | tee "$out/device.txt"
show() { grep -v "^stdcli: bench" "$1" | grep -v "CUDAGraph.cpp" | head -"${2:-40}"; }
for part in $parts; do
  case "$part" in
  tests)
    STDCLI_TEST_DEVICE=cuda timeout "$limit" python -m pytest -q -x -p no:cacheprovider tests/test_kernels.py \
      tests/test_fused.py tests/test_std.py tests/test_batch.py > "$out/tests_cuda.txt" 2>&1
    tail -12 "$out/tests_cuda.txt" ;;
  profile)
    for context in 16384 65536; do
      timeout "$limit" python -m stdcli bench --random-init --model qwen2-vl --device cuda --context "$context" \
        --batch-size 1,8 --gamma 1,2,4,6,8 --decode --max-new-tokens 128 \
        --json "$out/random_init_qwen2-vl-7b_${context}.json" 2> "$out/random_init_${context}.txt"
      show "$out/random_init_${context}.txt" 60 | grep -v "^│ *[0-9]* │ *[0-9] │ *512 │"
    done ;;
  profile-batches)
    timeout "$limit" python -m stdcli bench --random-init --model qwen2-vl --device cuda --context 16384,65536 \
      --batch-size 1,4,8,16 --gamma 1,2,4,6,8 --json "$out/random_init_qwen2-vl-7b_batches.json" \
      2> "$out/random_init_batches.txt"
    show "$out/random_init_batches.txt" 60 ;;
  kernels)
    timeout "$limit" python scripts/profile_step.py --context 16384 --json "$out/step_kernels.json" \
      2> "$out/step_kernels.txt"
    show "$out/step_kernels.txt" ;;
  builtin)
    timeout "$limit" python -m stdcli bench --device cuda --frames 64,256 --gamma auto,2,4 --max-new-tokens 96 \
      --repeat 2 --json "$out/builtin_cuda_gamma.json" 2> "$out/builtin_cuda_gamma.txt"
    show "$out/builtin_cuda_gamma.txt" ;;
  batch)
    timeout "$limit" python -m stdcli bench --device cuda --batch-size 1,4,8 --gamma auto,4 --max-new-tokens 96 \
      --repeat 2 --json "$out/builtin_cuda_batch.json" 2> "$out/builtin_cuda_batch.txt"
    show "$out/builtin_cuda_batch.txt" ;;
  esac
done
