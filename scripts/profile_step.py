"""Where one decoding step's GPU time goes: kernels of a graphed dense step, a cycle of 4 drafts and a verify, and
draft steps alone of each draft kind, of the Qwen2-VL-7B shape with random bf16 weights, by the PyTorch profiler.
Tells launch-bound from bandwidth-bound: the wall time of a step against the sum of its kernels' times.

    python scripts/profile_step.py --context 16384 --steps 20 [--drafts sparse,int8,int4,int4-rows] [--json out.json]

int4-rows is the int4 draft in our own layout and Triton kernel, where tinygemm's is the default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from stdcli.bench.profile import fill_random, seed_fresh_slots
from stdcli.engine import DecodeOptions, Decoder, Engine, EngineConfig
from stdcli.engine.device import synchronize
from stdcli.engine.quant import quantized_text_model
from stdcli.model.build import build_random_model, make_config

DRAFT_GAMMA = 4


def kernels_of(decoder: Decoder, gamma: int, steps: int, context: int, sparse_len: int,
               draft: str | None = None) -> tuple[list, float]:
    """[(kernel name, calls per step, GPU us per step)] and the wall ms per step, over `steps` steps: cycles of
    `gamma` drafts and a verify, or with `draft` the gamma draft steps of that kind alone (per draft step)."""

    def run(count: int) -> None:  # `count` steps from the same context, then wait for the GPU
        for _ in range(count):
            seed_fresh_slots(decoder, context, sparse_len, [1])
            if draft is None:
                decoder.step(gamma)
            else:  # the drafting half of Decoder.step, nothing else
                decoder._draft(decoder._slot_tensors(), gamma, draft)
        synchronize(decoder.device)

    cycles = steps
    if draft is not None:
        steps *= gamma  # the figures are per draft step

    run(3)  # capture and warm up
    started = time.perf_counter()
    run(cycles)
    wall_ms = (time.perf_counter() - started) * 1e3 / steps
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run(cycles)
    per_kernel: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = per_kernel[event.name[:90]]
            entry[0] += 1
            entry[1] += event.device_time
    rows = sorted(((name, n / steps, us / steps) for name, (n, us) in per_kernel.items()), key=lambda r: -r[2])
    return rows, wall_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="torch.compile each step shape before capture")
    parser.add_argument("--drafts", default="", help="comma-separated: sparse, int8, int4, int4-rows")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = make_config("qwen2-vl", "7b")
    model = build_random_model("qwen2-vl", config, dtype=torch.bfloat16, device="cuda")
    report = {}
    engine = Engine.of(model, EngineConfig(compile=args.compile))
    runs: list[tuple[str, int, str | None]] = [("dense step", 0, None), ("draft 4 + verify 5", DRAFT_GAMMA, None)]
    runs += [(f"{kind} draft step", DRAFT_GAMMA, kind) for kind in args.drafts.split(",") if kind]
    for label, gamma, kind in runs:
        options = DecodeOptions(gamma=gamma, k=512)
        if kind == "int4-rows":
            drafts = {kind: quantized_text_model(engine.fused(), 4, int4pack=False)}
        else:
            drafts = engine.draft_models([kind or "sparse"])
        with Decoder(engine.adapter, options, max_len=args.context + 16, sparse_cap=640, config=engine.config,
                     fused=engine.fused(), drafts=drafts) as decoder:
            c = decoder.storage
            fill_random(c.dense_k, c.dense_v, c.sparse_k, c.sparse_v)
            rows, wall_ms = kernels_of(decoder, gamma, args.steps, args.context, 576, kind)
        del drafts
        total = sum(us for _, _, us in rows)
        calls = sum(n for _, n, _ in rows)
        print(f"{label}: {wall_ms:.2f} ms per step, {calls:.0f} kernels, {total / 1e3:.2f} ms of kernel time",
              file=sys.stderr)
        for name, n, us in rows[:14]:
            print(f"  {us:8.1f} us  {n:5.0f}x  {name}", file=sys.stderr)
        report[label] = {"wall_ms": wall_ms, "kernels": calls, "kernel_ms": total / 1e3,
                         "top": [{"name": name, "calls": n, "us": us} for name, n, us in rows[:30]]}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
