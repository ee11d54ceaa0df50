#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md (issue 5), one `stdcli bench` run per command so that each stays well
# under 10 minutes. Usage: scripts/bench_gpu.sh [OUT_DIR]   (default: $OUT, else ./bench-out)
#
#   1.   The built-in model on the GPU at 64 and 256 frames: transformers generate vs our dense path vs StD.
#   2-3. Qwen2-VL-7B shape, random bf16 weights: dense / draft / verify step costs against their bandwidth floors
#        at 16K and 64K context, batch 1 and 8, and the projected StD-over-dense speedup (a projection: random
#        weights say nothing about acceptance). Points that do not fit in GPU memory are skipped with a note.
set -euo pipefail
out="${1:-${OUT:-bench-out}}"
mkdir -p "$out"
python -c 'import torch; print(torch.cuda.get_device_name(0)); print(torch.__version__)' | tee "$out/device.txt"

python -m stdcli bench --device cuda --frames 64,256 --gamma 4 --json "$out/builtin_cuda.json" 2> "$out/builtin_cuda.txt" \
  || echo "built-in model bench failed (are its weights in stdcli/builtin?), see $out/builtin_cuda.txt"

for context in 16384 65536; do
  python -m stdcli bench --random-init --model qwen2-vl --device cuda --context "$context" --batch-size 1,8 \
    --k 512,960 --json "$out/random_init_qwen2-vl-7b_${context}.json" 2> "$out/random_init_qwen2-vl-7b_${context}.txt"
done

