"""Micro-benchmarks behind the kernel choices of the fast path (7B shape, bf16, one CUDA GPU):

- the batch-invariant matmul of kernels.py (`linear`) against cuBLAS for each projection of a decoding step, over
  block configurations; one configuration per weight shape serves every row count (that is what makes it
  batch-invariant), so the best is the one with the least time summed over 1, 8 and 16 rows;
- the dequantizing int8 / int4 matmul (`quant_linear`), tiles and GEMV, over its candidate configurations (the
  engine times them itself at first use), against PyTorch's own weight-only kernels where this build has them
  (tinygemm's `_weight_int4pack_mm`, `_weight_int8pack_mm`, the kernels torchao and gpt-fast call);
- the decode attention kernel at its default split of the keys and at others.

    python scripts/tune_kernels.py [--json out.json] [--only quant]

It ends by printing the LINEAR_CONFIGS table for kernels.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from stdcli.engine import kernels, quant

# (N, K) of the 7B language model's projections: qkv, o, gate_up, down, lm_head
SHAPES = ((4608, 3584), (3584, 3584), (37888, 3584), (3584, 18944), (152064, 3584))
ROWS = (1, 8, 16)  # one token at batch 1; a verify of 8 or a step at batch 16 (more rows are more tiles)
LINEAR_CANDIDATES = ((32, 256, 4, 4), (64, 128, 4, 4), (16, 512, 4, 3), (32, 512, 8, 3), (64, 256, 8, 3),
                     (128, 128, 8, 4), (32, 128, 4, 5), (16, 256, 4, 4))
BANDWIDTH = 4.17e12  # bytes/s of a plain copy on the H200 (docs/benchmarks.md): the floors below


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


def timed_or_none(fn) -> float | None:
    try:
        return bench(fn)
    except Exception as error:  # a configuration that does not fit the GPU's shared memory is skipped
        print("  skip:", str(error).splitlines()[0][:100], flush=True)
        return None


def tune_linear(dev: torch.device) -> tuple[list[dict], dict]:
    entries, best_configs = [], {}
    for n, k in SHAPES:
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
        xs = {m: torch.randn(m, k, device=dev, dtype=torch.bfloat16) for m in ROWS}
        floor_us = w.numel() * 2 / BANDWIDTH * 1e6
        cublas = {m: bench(lambda x=x, w=w: F.linear(x, w)) for m, x in xs.items()}
        results = {}
        for config in LINEAR_CANDIDATES:
            times = {m: timed_or_none(lambda x=x, w=w, config=config: kernels.linear(x, w, None, config))
                     for m, x in xs.items()}
            if all(t is not None for t in times.values()):
                results[config] = times
        best = min(results, key=lambda c: sum(results[c].values()))
        best_configs[(n, k)] = best
        for config, times in results.items():
            entries.append({"n": n, "k": k, "config": config, "us": times, "cublas_us": cublas, "floor_us": floor_us,
                            "best": config == best})
        print(f"linear {n}x{k}: best {best} " + " ".join(
            f"m{m} {results[best][m]:.1f} us (cuBLAS {cublas[m]:.1f})" for m in ROWS) + f", floor {floor_us:.1f} us",
            flush=True)
    return entries, best_configs


def library_kernel(bits: int, n: int, k: int, m: int, dev: torch.device):
    """PyTorch's weight-only kernel for this shape (random contents: timing only), or None where it has none."""
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    aten = torch.ops.aten
    try:
        if bits == 4:
            packed = aten._convert_weight_to_int4pack(torch.randint(0, 256, (n, k // 2), device=dev,
                                                                    dtype=torch.uint8), 8)
            scales_and_zeros = torch.randn(k // quant.GROUP, n, 2, device=dev, dtype=torch.bfloat16)

            def fn():
                return aten._weight_int4pack_mm(x, packed, quant.GROUP, scales_and_zeros)
        else:
            weight = torch.randint(-127, 128, (n, k), device=dev, dtype=torch.int8)
            scales = torch.rand(n, device=dev, dtype=torch.bfloat16)

            def fn():
                return aten._weight_int8pack_mm(x, weight, scales)
        fn()
        return fn
    except Exception as error:  # not in this build, or not for this shape
        print(f"  no PyTorch int{bits} kernel here: {str(error).splitlines()[0][:100]}", flush=True)
        return None


def tune_quant(dev: torch.device) -> list[dict]:
    entries = []
    for bits in quant.BITS:
        for n, k in SHAPES:
            q = quant.quantize(torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02, bits)
            floor_us = q.nbytes / BANDWIDTH * 1e6
            for m in (1, 2, 8):
                x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
                mine = []
                for config in kernels.quant_candidates(m):
                    us = timed_or_none(lambda x=x, q=q, config=config: kernels.quant_linear(x, q, None, config))
                    if us is not None:
                        mine.append({"bits": bits, "n": n, "k": k, "m": m, "config": config, "us": us,
                                     "floor_us": floor_us})
                library = library_kernel(bits, n, k, m, dev)
                library_us = timed_or_none(library) if library is not None else None
                for entry in mine:
                    entry["pytorch_us"] = library_us
                entries += mine
                best = {kind: min((e for e in mine if e["config"][0] == kind), key=lambda e: e["us"], default=None)
                        for kind in ("tile", "gemv")}
                found = ", ".join(f"{kind} {e['config'][1:]}: {e['us']:.1f} us" for kind, e in best.items() if e)
                print(f"int{bits} {n}x{k} m{m}: {found}; floor {floor_us:.1f} us, "
                      f"PyTorch's {'-' if library_us is None else f'{library_us:.1f} us'}", flush=True)
    return entries


def tune_attention(dev: torch.device) -> list[dict]:
    entries = []
    for batch, context in ((1, 16384), (1, 65536), (8, 16384), (16, 65536)):
        q = torch.randn(batch, 28, 1, 128, device=dev, dtype=torch.bfloat16)
        k = torch.randn(batch, 4, context, 128, device=dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        base = torch.full((batch,), context - 1, device=dev)
        floor_us = 2 * k.numel() * 2 / BANDWIDTH * 1e6
        default = -(-context // kernels.keys_per_split(context))
        for splits in sorted({default, max(1, default // 2), max(1, default // 4), default * 2}):
            us = bench(lambda q=q, k=k, v=v, base=base, splits=splits: kernels.decode_attention(
                q, k, v, base, 0.088, splits=splits))
            entries.append({"batch": batch, "context": context, "splits": splits, "us": us, "floor_us": floor_us,
                            "default": splits == default})
            print(f"attention b{batch} {context}: splits {splits:4d}{' (default)' if splits == default else ''} "
                  f"{us:8.1f} us, floor {floor_us:7.1f}", flush=True)
        del k, v
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=("linear", "quant", "attention"), help="one of the three")
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    report: dict = {"device": torch.cuda.get_device_name(dev)}
    if args.only in (None, "quant"):
        report["quant"] = tune_quant(dev)
    if args.only in (None, "attention"):
        report["attention"] = tune_attention(dev)
    if args.only in (None, "linear"):
        report["linear"], best = tune_linear(dev)
        print("LINEAR_CONFIGS = {")
        for (n, k), config in best.items():
            print(f"    ({n}, {k}): {config},")
        print("}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
