"""Answers per minute of a folder run with several videos decoded together (stdcli ask --batch-size), one process.

    python scripts/bench_batch.py [FOLDER] --batch-sizes 1,3,6 --rounds 2 --device cpu --json out.json

For each batch size and mode (dense; StD with gamma auto), after one warm-up pass, `rounds` passes over the
folder's videos, alternating the configurations; reports answers per minute and decode tokens/s (decoded tokens
over the wall time of the passes, video reading included), and whether every answer equals the batch-1 answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stdcli.ask import AskOptions, collect_videos  # noqa: E402
from stdcli.batch import answer_videos  # noqa: E402
from stdcli.models import load_model  # noqa: E402
from stdcli.std import DecodeOptions, synchronize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default="samples")
    parser.add_argument("--question", default="What happens?")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", default="1,3,6")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    lm = load_model(args.model, device=args.device)
    videos = collect_videos([args.folder], sys.stdin)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    configs = [(mode, b) for b in sizes for mode in ("dense", "auto")]
    answers: dict = {}
    results = {c: {"seconds": 0.0, "answers": 0, "tokens": 0} for c in configs}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for mode, b in configs if round_ % 2 else configs[::-1]:
            options = AskOptions(args.question, decode=DecodeOptions(args.max_new_tokens, gamma=0 if mode == "dense" else "auto"))
            records = []
            synchronize(lm.device)
            started = time.perf_counter()
            answer_videos(lm, videos, options, b, records.append)
            synchronize(lm.device)
            elapsed = time.perf_counter() - started
            for r in records:
                answers.setdefault(r["video"], set()).add(r["answer"])
            if round_:
                results[(mode, b)]["seconds"] += elapsed
                results[(mode, b)]["answers"] += len(records)
                results[(mode, b)]["tokens"] += sum(max(r["new_tokens"] - 1, 0) for r in records if r["new_tokens"])
    table = []
    for (mode, b), r in results.items():
        table.append({"mode": mode, "batch": b, "answers_per_min": round(60 * r["answers"] / r["seconds"], 1),
                      "decoded_tokens_per_s": round(r["tokens"] / r["seconds"], 1), "seconds": round(r["seconds"], 2)})
        print(f"{mode:5s} batch {b}: {table[-1]['answers_per_min']:7.1f} answers/min, "
              f"{table[-1]['decoded_tokens_per_s']:7.1f} decoded tokens/s", file=sys.stderr)
    identical = all(len(a) == 1 for a in answers.values())
    print(f"every configuration gave the same answer for every video: {identical}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "device": str(lm.device), "videos": len(videos),
                                         "rounds": args.rounds, "results": table, "identical": identical}, indent=1))


if __name__ == "__main__":
    main()
