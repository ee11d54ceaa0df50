"""StD against our dense path on the built-in model inflated to Qwen2-VL-7B's shape (stdcli.model.inflate): a
trained model's acceptance at a 7B model's step cost, on a long generated clip, side by side in one run.

    python scripts/bench_inflated.py --frames 256,1920,3840,7680 --batch 1 --json OUT/inflated_b1.json
    python scripts/bench_inflated.py --frames 7680 --batch 8 --json OUT/inflated_b8.json

Per frame count, `batch` prompts (the clip's questions, one per slot, cycled) are prefilled once; then dense
decoding, every fixed gamma with every draft kind, and auto decode them, alternating, after one warm-up round
(stdcli.bench.profile.decode_prompts), each answer ending at its end token or at --max-new-tokens. Prints one line
per method: decode tokens/s, the ratio to dense, acceptance, and how many answers equal the dense ones.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from stdcli.ask import sample_video
from stdcli.bench.common import environment
from stdcli.bench.profile import decode_prompts
from stdcli.engine.options import DRAFT_KINDS
from stdcli.inputs import FrameOptions
from stdcli.model.inflate import inflate_loaded
from stdcli.model.loading import load_model, pick_dtype
from stdcli.model.prompts import build_inputs
from stdcli.world import generate_clip, questions_for, write_video

CLIP_SEED = 10_900_000  # a long clip of the held-out range, never seen in training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--frames", default="1920", help="comma-separated frame counts sampled from the clip")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--gamma", default="2,4,6")
    parser.add_argument("--draft", default=",".join(DRAFT_KINDS))
    parser.add_argument("--k", type=int, default=512)
    parser.add_argument("--minutes", type=float, default=16.0, help="length of the generated clip (8 fps)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--past-end", action="store_true",
                        help="decode every answer to --max-new-tokens, past its end token: the built-in model's "
                        "answers are 3-7 tokens, too short for a draft to show its speed")
    parser.add_argument("--clip", type=Path, help="where the generated clip is kept: written if missing, else reused")
    parser.add_argument("--json", type=Path, help="written after every frame count: a cut-short run keeps its figures")
    args = parser.parse_args()
    frame_counts = [int(f) for f in args.frames.split(",")]
    gammas = [int(g) for g in args.gamma.split(",")]
    drafts = args.draft.split(",")

    started = time.perf_counter()
    small = load_model("builtin", device=args.device, dtype="float32")
    lm = inflate_loaded(small, args.shape, pick_dtype(args.dtype, small.device))
    print(f"inflated to {args.shape} in {time.perf_counter() - started:.1f} s", flush=True)
    clip = generate_clip(CLIP_SEED, "long", duration=args.minutes * 60)
    questions = [qa.question for qa in questions_for(clip, random.Random(CLIP_SEED))]
    points: list[dict] = []
    report = {"environment": environment(lm.device), "shape": args.shape, "clip_seed": CLIP_SEED,
              "minutes": args.minutes, "batch": args.batch, "k": args.k, "questions": questions,
              "past_end": args.past_end,
              "note": "acceptance is the built-in model's (a small model of a generated world), inflated",
              "points": points}
    with tempfile.TemporaryDirectory() as tmp:
        path = args.clip or Path(tmp) / "clip.mp4"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(clip, str(path), fps=8.0, size=(224, 224))
        print(f"clip of {args.minutes} min ready at {time.perf_counter() - started:.1f} s", flush=True)
        for frames in frame_counts:
            video = sample_video(lm, str(path), FrameOptions(frames=frames))
            prompts = [build_inputs(lm, video, questions[b % len(questions)]) for b in range(args.batch)]
            point = decode_prompts(lm.engine, prompts, args.k, gammas, drafts, args.max_new_tokens, args.rounds,
                                   eos=() if args.past_end else None)
            point["frames"] = frames
            points.append(point)
            dense = next(c for c in point["configs"] if c["gamma"] == 0)["tokens_per_s"]
            print(f"{frames} frames, batch {args.batch}, prompt {max(point['prompt_tokens'])} tokens:", flush=True)
            for c in point["configs"]:
                name = "dense" if c["gamma"] == 0 else f"γ{c['gamma']} {c['draft']}"
                accept = "-" if c["acceptance"] is None else f"{c['acceptance']:.2f}"
                print(f"  {name:12s} {c['tokens_per_s']:8.1f} tok/s  ×{c['tokens_per_s'] / dense:5.2f}  "
                      f"accept {accept}  identical {c['identical_to_dense']}/{c['total']}  drafts {c['drafts']}",
                      flush=True)
            report["seconds"] = round(time.perf_counter() - started, 1)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
