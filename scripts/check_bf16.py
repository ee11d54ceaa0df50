"""StD against our dense path, token for token, in bfloat16 on a model of a real shape with random weights (the
hardest case: near-ties everywhere), at each context x batch point: dense, every gamma with every draft kind, and
auto decode the same synthetic prompts past any end token. One run per method and no warm-up round: only the
tokens count here (the speeds are `stdcli bench --random-init --decode`'s). The JSON is rewritten after every
point, so a run cut short keeps what it checked.

    python scripts/check_bf16.py --points 16384x8,16384x16,65536x4,65536x8,65536x16 --json OUT/bf16_7b.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from stdcli.bench.common import environment, release_memory
from stdcli.bench.profile import _decode_point
from stdcli.bench.settings import DEFAULT_TEXT_TOKENS
from stdcli.engine.options import DEFAULT_K
from stdcli.engine.session import Engine
from stdcli.model.build import build_random_model, make_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2-vl")
    parser.add_argument("--scale", default="7b")
    parser.add_argument("--points", default="16384x1,16384x8,65536x1,65536x8", help="CONTEXTxBATCH, comma-separated")
    parser.add_argument("--gamma", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--draft", default="sparse", help="draft kinds, comma-separated")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    points = [tuple(int(n) for n in p.split("x")) for p in args.points.split(",")]
    gammas = [int(g) for g in args.gamma.split(",")]

    model = build_random_model(args.model, make_config(args.model, args.scale), seed=0, dtype=torch.bfloat16,
                               device=args.device)
    engine = Engine.of(model)
    report = {"model": f"{args.model} {args.scale}, random weights, bfloat16", "environment": environment(model.device),
              "k": args.k, "new_tokens": args.new_tokens, "points": []}
    for context, batch in points:
        started = time.perf_counter()
        point = _decode_point(engine, context, batch, args.k, gammas, args.draft.split(","), DEFAULT_TEXT_TOKENS,
                              args.new_tokens, rounds=1, seed=batch, warmup=False)
        release_memory(model.device)
        seconds = time.perf_counter() - started
        identical = {"dense" if c["gamma"] == 0 else f"{c['gamma']}/{c['draft']}":
                     f"{c['identical_to_dense']}/{c['total']}" for c in point["configs"]}
        differing = {method: counts for (method, counts), c in zip(identical.items(), point["configs"], strict=True)
                     if c["identical_to_dense"] != c["total"]}
        report["points"].append({"context": context, "batch": batch, "identical": identical,
                                 "differing": differing, "seconds": round(seconds, 1)})
        print(f"{context} x {batch}: {len(identical) - 1} StD methods, differing {differing or 'none'} "
              f"({seconds:.0f} s)", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
