"""Micro-benchmarks behind the kernel choices of the fast path (7B shape, bf16, H200): the decode attention kernel's
split count and block sizes, and a Triton skinny matmul against cuBLAS for the projections of a decoding step.

    python scripts/tune_kernels.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stdcli import kernels  # noqa: E402


def bench(fn, iters: int = 200) -> float:
    """Median-free mean us per call of fn, replayed from a CUDA graph (as the engine runs it)."""
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


@triton.jit
def _skinny_kernel(X, W, B, OUT, M, N, K, stride_xm, stride_om, HAS_BIAS: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(X + rows[:, None] * stride_xm + ks[None, :], mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
        w = tl.load(W + cols[:, None] * K + ks[None, :], mask=(cols[:, None] < N) & (ks[None, :] < K), other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)
    if HAS_BIAS:
        acc += tl.load(B + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(OUT + rows[:, None] * stride_om + cols[None, :], acc.to(OUT.dtype.element_ty),
             mask=(rows[:, None] < M) & (cols[None, :] < N))


def skinny(x, w, b, block_n, block_k, warps, stages):
    m, k = x.shape
    n = w.shape[0]
    out = torch.empty(m, n, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, 16))
    _skinny_kernel[grid](x, w, b if b is not None else w, out, m, n, k, x.stride(0), out.stride(0),
                         HAS_BIAS=b is not None, BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=block_k,
                         num_warps=warps, num_stages=stages)
    return out


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
            us = bench(lambda: kernels.decode_attention(q, k, v, base, 0.088, splits=splits))
            report["attention"].append({"batch": batch, "context": context, "splits": splits, "us": us,
                                        "floor_us": floor_us, "default": splits == default})
            print(f"attention b{batch} {context}: splits {splits:4d}{' (default)' if splits == default else ''} "
                  f"{us:7.1f} us, floor {floor_us:6.1f}", flush=True)
    # projections of a 7B layer: qkv, o, gate_up, down, lm_head
    for n, k, bias in ((4608, 3584, True), (3584, 3584, False), (37888, 3584, False), (3584, 18944, False),
                       (152064, 3584, False)):
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
        b = torch.randn(n, device=dev, dtype=torch.bfloat16) if bias else None
        floor_us = w.numel() * 2 / 4.17e12 * 1e6
        for m in (1, 8, 40):
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            entry = {"n": n, "k": k, "m": m, "floor_us": floor_us, "cublas_us": bench(lambda: F.linear(x, w, b))}
            best = None
            for block_n, block_k, warps, stages in ((32, 256, 4, 4), (64, 128, 4, 4), (16, 512, 4, 3), (32, 512, 8, 3),
                                                    (64, 256, 8, 3), (128, 128, 8, 4)):
                try:
                    us = bench(lambda: skinny(x, w, b, block_n, block_k, warps, stages))
                except Exception as error:  # noqa: BLE001 - a config that does not fit is skipped
                    print("  skip", block_n, block_k, warps, stages, str(error)[:80])
                    continue
                if best is None or us < best[0]:
                    best = (us, (block_n, block_k, warps, stages))
            ref = F.linear(x.float(), w.float(), None if b is None else b.float())
            got = skinny(x, w, b, *best[1])
            entry.update(triton_us=best[0], config=best[1], max_err=float((got.float() - ref).abs().max()))
            report["matmul"].append(entry)
            print(f"linear {n}x{k} m{m}: cuBLAS {entry['cublas_us']:7.1f} us, Triton {best[0]:7.1f} us {best[1]}, "
                  f"floor {floor_us:6.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
