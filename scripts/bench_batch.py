"""Answers per minute of a folder run with several videos decoded together (stdcli ask --batch-size), one process.

    python scripts/bench_batch.py [FOLDER] --batch-sizes 1,3,6 --rounds 2 --device cpu --json out.json

Configurations: transformers `generate`, one video at a time (what users run today), and for each batch size our
engine dense and StD with gamma 4 and auto. After one warm-up pass, `rounds` passes over the folder's videos,
alternating the configurations; reports answers per minute, decoded tokens per second (decoded tokens over the
wall time of the passes, video reading and prefill included), StD's acceptance rate, and whether every
configuration gave every video the same answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stdcli.ask import AskOptions, collect_videos, decode_answer, prepare  # noqa: E402
from stdcli.batch import answer_videos  # noqa: E402
from stdcli.models import load_model  # noqa: E402
from stdcli.std import DecodeOptions, synchronize  # noqa: E402


def one_by_one_generate(lm, videos: list[str], options: AskOptions, max_new_tokens: int) -> list[dict]:
    """transformers generate, greedy, one video after another (frames and prompt exactly as ask builds them)."""
    records = []
    for video in videos:
        item = prepare(lm, video, options)
        if isinstance(item, dict):
            records.append(item)
            continue
        out = lm.model.generate(**item.inputs, do_sample=False, max_new_tokens=max_new_tokens)
        tokens = out[0, item.inputs["input_ids"].shape[1]:].tolist()
        records.append({"video": video, "answer": decode_answer(lm.tokenizer, tokens), "new_tokens": len(tokens)})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default="samples")
    parser.add_argument("--question", default="What happens?")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    lm = load_model(args.model, device=args.device)
    videos = collect_videos([args.folder], sys.stdin)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    gammas = {"dense": 0, "std-4": 4, "std-auto": "auto"}
    configs = [("generate", 1)] + [(mode, b) for b in sizes for mode in gammas]
    answers: dict = {}
    results = {c: {"seconds": 0.0, "answers": 0, "tokens": 0, "drafted": 0.0, "accepted": 0.0} for c in configs}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for mode, b in configs if round_ % 2 else configs[::-1]:
            synchronize(lm.device)
            started = time.perf_counter()
            if mode == "generate":
                records = one_by_one_generate(lm, videos, AskOptions(args.question), args.max_new_tokens)
            else:
                options = AskOptions(args.question, decode=DecodeOptions(args.max_new_tokens, gamma=gammas[mode]))
                records = []
                answer_videos(lm, videos, options, b, records.append)
            synchronize(lm.device)
            elapsed = time.perf_counter() - started
            for r in records:
                answers.setdefault(r["video"], set()).add(r["answer"])
            if round_:
                totals = results[(mode, b)]
                totals["seconds"] += elapsed
                totals["answers"] += len(records)
                totals["tokens"] += sum(max(r["new_tokens"] - 1, 0) for r in records if r["new_tokens"])
                for r in records:  # drafted: sum of gamma x cycles; accepted: the record's rate of those
                    if r.get("acceptance_rate") is not None:
                        drafted = sum(int(g) * n for g, n in r["gammas"].items())
                        totals["drafted"] += drafted
                        totals["accepted"] += r["acceptance_rate"] * drafted
    table = []
    for (mode, b), r in results.items():
        table.append({"mode": mode, "batch": b, "answers_per_min": round(60 * r["answers"] / r["seconds"], 1),
                      "decoded_tokens_per_s": round(r["tokens"] / r["seconds"], 1), "seconds": round(r["seconds"], 2),
                      "acceptance_rate": round(r["accepted"] / r["drafted"], 3) if r["drafted"] else None})
        print(f"{mode:8s} batch {b}: {table[-1]['answers_per_min']:7.1f} answers/min, "
              f"{table[-1]['decoded_tokens_per_s']:7.1f} decoded tokens/s, acceptance {table[-1]['acceptance_rate']}",
              file=sys.stderr)
    identical = all(len(a) == 1 for a in answers.values())
    print(f"every configuration gave the same answer for every video: {identical}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "device": str(lm.device), "videos": len(videos),
                                         "rounds": args.rounds, "results": table, "identical": identical}, indent=1))


if __name__ == "__main__":
    main()
