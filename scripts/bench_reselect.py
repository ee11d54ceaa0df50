"""Does re-selecting the sparse view after every verify raise StD's acceptance at equal K? The built-in model on
held-out clips of its generated world, each question answered greedily with sparse drafts (gamma 4) twice per K: the
view ranked once by the question after prefill (static), and re-selected from the attention of every verify
(`DecodeOptions(reselect=True)`). Answers must equal the dense ones either way; the acceptance per question type is
what differs.

    python scripts/bench_reselect.py --device cpu --long 6 --k 64,128,512 --json OUT.json

Long clips (60-300 s) are sampled at the built-in model's default (200 frames, 1,600 visual tokens); short clips
have fewer visual tokens than K = 512, so there the view keeps them all and nothing can be re-selected.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import defaultdict
from pathlib import Path

from eval_builtin import EVAL_SEED_BASE, write_clip

from stdcli.ask import sample_video
from stdcli.engine.options import SPARSE_DRAFT, DecodeOptions
from stdcli.inputs import FrameOptions
from stdcli.model.loading import load_model
from stdcli.model.prompts import build_inputs
from stdcli.world import generate_clip, questions_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--long", type=int, default=6, help="held-out long clips")
    parser.add_argument("--k", default="64,128,512", help="comma-separated K values")
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--json", type=Path, help="written after every clip: a run cut short keeps its figures")
    args = parser.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # "K view qtype" -> counts
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.long):
            seed = EVAL_SEED_BASE + 500_000 + i
            path = write_clip((seed, "long", f"{tmp}/long-{seed}.mp4"))
            clip = generate_clip(seed, "long")
            video = sample_video(lm, path, FrameOptions())
            for qa in questions_for(clip, random.Random(seed)):
                inputs = build_inputs(lm, video, qa.question)
                dense = lm.engine.generate(inputs, DecodeOptions(args.max_new_tokens, gamma=0)).tokens
                for k in ks:
                    for view, reselect in (("static", False), ("reselected", True)):
                        options = DecodeOptions(args.max_new_tokens, k=k, gamma=args.gamma, calibration_steps=0,
                                                draft=SPARSE_DRAFT, reselect=reselect)
                        result = lm.engine.generate(inputs, options)
                        for key in (f"{k} {view} all", f"{k} {view} long/{qa.qtype}"):
                            c = counts[key]
                            c["answers"] += 1
                            c["identical"] += result.tokens == dense
                            c["drafted"] += result.stats.drafted
                            c["accepted"] += result.stats.accepted
            report = {"model": args.model, "device": str(lm.device), "dtype": args.dtype, "gamma": args.gamma,
                      "clips": i + 1, "visual_tokens": result.stats.visual_tokens,
                      "rows": {key: {**c, "acceptance": round(c["accepted"] / c["drafted"], 4) if c["drafted"]
                                     else None} for key, c in sorted(counts.items())}}
            if args.json:
                args.json.write_text(json.dumps(report, indent=1))
            print(f"clip {i + 1}/{args.long} done", flush=True)
    for key, row in report["rows"].items():
        print(f"K {key:32s} answers {row['answers']:4d} identical {row['identical']:4d} "
              f"acceptance {row['acceptance']}")


if __name__ == "__main__":
    main()
