"""How tall the row tiles of the batch-invariant kernels should be: the matmul and the attention of a decoding step
timed at the Qwen2-VL-7B shape (random bf16 weights) for 1 row up to a verify's rows, by tile height and kernel
configuration, on one CUDA GPU.

    python scripts/tune_tiles.py --json docs/bench/gpu-h200/tune_tiles.json

A dense step computes one row per batch slot; a verify of gamma + 1 tokens computes (gamma + 1) x as many, and the
kernels must give every row the same bits either way, so one tile height serves both (kernels.LINEAR_ROWS,
kernels.ATTENTION_ROWS). Each time is the mean of 20 calls replayed in one CUDA graph, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stdcli.engine import kernels

# the 7B shape's projections (N, K): q/k/v, o, gate/up, down, LM head
SHAPES = ((4608, 3584), (3584, 3584), (37888, 3584), (3584, 18944), (152064, 3584))
LINEAR_CANDIDATES = ((32, 256, 4, 4), (64, 128, 4, 4), (64, 256, 4, 3), (128, 128, 4, 3), (128, 64, 4, 4),
                     (64, 128, 8, 4), (128, 128, 8, 3), (256, 64, 8, 3), (32, 128, 4, 5), (64, 64, 4, 6))
ROW_COUNTS = (1, 8, 40, 64)  # dense steps at batch 1 and 8; verifies of 5 and 8 tokens at batch 8
# (tile rows, warps, pipeline stages) of the attention
ATTENTION_CANDIDATES = ((16, 4, 2), (16, 2, 2), (16, 1, 2), (16, 2, 3), (32, 4, 2), (32, 2, 2), (64, 4, 2),
                        (64, 4, 3), (64, 8, 2))
VERIFY_LENGTHS = (1, 3, 5, 9)


def graphed_us(fn, iters: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(iters):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / iters


def tune_attention(dev: str) -> dict[str, dict[int, float]]:
    results = {}
    for batch, context in ((1, 16384), (8, 65536)):
        key = torch.randn(batch, 4, context + 16, 128, device=dev, dtype=torch.bfloat16)
        value = torch.randn_like(key)
        base = torch.full((batch,), context - 9, device=dev, dtype=torch.int32)
        for rows, warps, stages in ATTENTION_CANDIDATES:
            kernels.ATTENTION_ROWS, kernels.ATTENTION_WARPS, kernels.ATTENTION_STAGES = rows, warps, stages
            times = {}
            for length in VERIFY_LENGTHS:
                query = torch.randn(batch, 28, length, 128, device=dev, dtype=torch.bfloat16)
                times[length] = round(graphed_us(
                    lambda q=query, k=key, v=value, b=base: kernels.decode_attention(q, k, v, b, 128**-0.5)), 1)
            label = f"attention {batch} x {context}, rows {rows}, warps {warps}, stages {stages}"
            results[label] = times
            print(f"{label}: us by verify length {times}", flush=True)
    return results


def tune_linear(dev: str) -> dict[str, dict[int, float]]:
    results = {}
    for tile in (64, 16):
        kernels.LINEAR_ROWS = tile
        for n, k in SHAPES:
            weight = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
            for config in LINEAR_CANDIDATES if tile == 64 else LINEAR_CANDIDATES[:1]:
                times = {}
                for m in ROW_COUNTS:
                    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
                    times[m] = round(graphed_us(lambda x=x, w=weight, c=config: kernels.linear(x, w, None, c)), 1)
                label = f"linear {n}x{k}, rows {tile}, config {config}"
                results[label] = times
                print(f"{label}: us by rows {times}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    report = {"device": torch.cuda.get_device_name(0), "attention": tune_attention("cuda"),
              "linear": tune_linear("cuda")}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
