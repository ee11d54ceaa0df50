"""Micro-benchmarks behind the kernel choices of the fast path (7B shape, bf16, H200): the decode attention kernel's
split count, and the Triton skinny matmul of kernels.py against cuBLAS for the projections of a decoding step.

    python scripts/tune_kernels.py [--json out.json]

docs/bench/gpu-h200/tune_kernels.json was measured by the first version of this script (commit 593e3fb), which had
its own copy of the skinny kernel, gave the q/k/v projection its bias in both contenders, and tried 40 rows
(where the skinny matmul lost by 2-3x) instead of 16.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from stdcli.engine import kernels


def bench(fn, iters: int = 200) -> float:
    """Mean us per call of fn, replayed from a CUDA graph (as the engine runs it)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(20):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters // 20):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    report = {"attention": [], "matmul": []}
    # attention: 7B shape (28 query heads, 4 KV heads, 128 dims), one new token per sequence
    for batch, context in ((1, 16384), (1, 65536), (8, 16384), (1, 640)):
        q = torch.randn(batch, 28, 1, 128, device=dev, dtype=torch.bfloat16)
        k = torch.randn(batch, 4, context, 128, device=dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        base = torch.full((batch,), context - 1, device=dev)
        floor_us = 2 * k.numel() * 2 / 4.17e12 * 1e6
        default = kernels.split_count(context, batch, 4, 132)
        for splits in sorted({default, max(1, default // 2), max(1, default // 4), default * 2}):
            us = bench(lambda q=q, k=k, v=v, base=base, splits=splits: kernels.decode_attention(q, k, v, base, 0.088,
                                                                                           splits=splits))
            report["attention"].append({"batch": batch, "context": context, "splits": splits, "us": us,
                                        "floor_us": floor_us, "default": splits == default})
            print(f"attention b{batch} {context}: splits {splits:4d}{' (default)' if splits == default else ''} "
                  f"{us:7.1f} us, floor {floor_us:6.1f}", flush=True)
    # projections of a 7B layer: qkv, o, gate_up, down, lm_head (without bias: the skinny matmul takes none)
    for n, k in ((4608, 3584), (3584, 3584), (37888, 3584), (3584, 18944), (152064, 3584)):
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
        floor_us = w.numel() * 2 / 4.17e12 * 1e6
        for m in (1, 8, kernels.SKINNY_ROWS):
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            entry = {"n": n, "k": k, "m": m, "floor_us": floor_us, "cublas_us": bench(lambda x=x, w=w: F.linear(x, w))}
            best = None
            for config in ((32, 256, 4, 4), (64, 128, 4, 4), (16, 512, 4, 3), (32, 512, 8, 3), (64, 256, 8, 3),
                           (128, 128, 8, 4)):
                try:
                    us = bench(lambda x=x, w=w, config=config: kernels.skinny_linear(x, w, config))
                except Exception as error:  # a config that does not fit is skipped
                    print("  skip", config, str(error)[:80])
                    continue
                if best is None or us < best[0]:
                    best = (us, config)
            ref = F.linear(x.float(), w.float())
            got = kernels.skinny_linear(x, w, best[1])
            entry.update(triton_us=best[0], config=best[1], max_err=float((got.float() - ref).abs().max()))
            report["matmul"].append(entry)
            print(f"linear {n}x{k} m{m}: cuBLAS {entry['cublas_us']:7.1f} us, Triton {best[0]:7.1f} us {best[1]}, "
                  f"floor {floor_us:6.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
