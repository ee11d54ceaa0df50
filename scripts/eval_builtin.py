"""Evaluate the built-in model on held-out clips of the generated world, through the real `stdcli ask` path.

    python scripts/eval_builtin.py                          # the installed built-in model, on the CPU
    python scripts/eval_builtin.py --model runs/builtin/final --device cuda --json docs/model-eval.json
    python scripts/eval_builtin.py --samples samples    # the samples' example questions (samples/truth.jsonl)
    python scripts/eval_builtin.py --device cuda --dtype bfloat16 --drafts --json OUT/drafts.json

--drafts: instead of scoring transformers' answers, decode every question with our dense path and with StD (gamma
--gamma, each draft kind, and auto), the questions of a clip as one batch (stdcli.bench.profile.decode_prompts),
and report how many answers equal the dense ones, token for token, and each draft kind's acceptance per question
type; the dense answers are scored as above. --generate adds transformers `generate` (greedy, each question alone,
batch 1) and counts how many of our dense answers equal its answers token for token (up to the end token).
--merge adds up the --drafts reports of runs over disjoint clips (e.g. four processes sharing one GPU, each with
its --start / --start-long) into one, written to --json.

Each held-out clip (seeds from 10,000,000 up: never seen in training) is written as an 8 fps 224x224 H.264 file,
then read back by `sample_video` with the model family's default sampling, prompted with `build_inputs`, and
answered greedily; answers are checked by `stdcli.world.is_correct` (exact match after normalization; "what
happens?" descriptions are parsed and compared with the ground-truth events). The questions of one clip are
decoded as one left-padded batch; greedy StD gives the same answers token for token.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from stdcli.ask import decode_answer, sample_video
from stdcli.engine.options import DEFAULT_K
from stdcli.inputs import FrameOptions
from stdcli.model.loading import load_model
from stdcli.model.prompts import build_inputs
from stdcli.world import QA, generate_clip, is_correct, questions_for, write_video
from stdcli.world.samples import SAMPLE_CLIPS

EVAL_SEED_BASE = 10_000_000
ANSWER_TOKENS = 96  # the longest answer, the same in every comparison


def write_clip(job: tuple[int, str, str]) -> str:
    seed, kind, path = job
    write_video(generate_clip(seed, kind), path, fps=8.0, size=(224, 224))
    return path


def left_padded(batch: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch from several single-prompt inputs of the same video (left padding, as generation wants)."""
    length = max(b["input_ids"].shape[1] for b in batch)
    out: dict[str, torch.Tensor] = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("mm_token_type_ids", 0)):
        if key in batch[0]:
            rows = [torch.nn.functional.pad(b[key], (length - b[key].shape[1], 0), value=fill) for b in batch]
            out[key] = torch.cat(rows)
    for key in batch[0]:
        if key not in out:
            out[key] = torch.cat([b[key] for b in batch])
    return out


def score_samples(folder: Path, answer) -> None:
    """The example questions of the samples (folder/truth.jsonl), answered and checked like the held-out clips."""
    right = total = 0
    clips = {file: (seed, kind, duration) for file, seed, kind, duration in SAMPLE_CLIPS}
    for line in (folder / "truth.jsonl").read_text(encoding="utf-8").splitlines():
        truth = json.loads(line)
        clip = generate_clip(*clips[truth["file"]])  # a fixed duration draws another clip than the seed's own
        qas = [QA(q["question"], q["answer"], q["type"]) for q in truth["questions"]]
        for qa, said in zip(qas, answer(str(folder / truth["file"]), qas), strict=True):
            ok = is_correct(qa, said, clip)
            right, total = right + ok, total + 1
            print(f"{'right' if ok else 'WRONG'}  {truth['file']}: {qa.question} -> {said}  (truth: {qa.answer})")
    print(f"{right} of {total} sample questions answered correctly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--short", type=int, default=150, help="held-out short clips")
    parser.add_argument("--long", type=int, default=60, help="held-out long clips (60-300 s, one key event)")
    parser.add_argument("--start", type=int, default=0,
                        help="index of the first clip of each kind: --start 150 --short 50 --start-long 60 --long 15 "
                             "is a validation set apart from the default evaluation's clips")
    parser.add_argument("--start-long", type=int, default=0, help="index of the first long clip")
    parser.add_argument("--workers", type=int, default=4, help="processes writing the clips")
    parser.add_argument("--samples", type=Path, help="instead, answer the example questions of samples/truth.jsonl")
    parser.add_argument("--json", type=Path, help="write the figures (and every answer) here")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--drafts", action="store_true", help="compare StD's draft kinds with our dense path")
    parser.add_argument("--gamma", type=int, default=4, help="--drafts: the fixed gamma of every draft kind")
    parser.add_argument("--generate", action="store_true",
                        help="--drafts: also compare our dense answers with transformers generate's, each alone")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="REPORT", help="add up these --drafts reports")
    args = parser.parse_args()
    if args.merge:
        report = merge_reports([json.loads(path.read_text()) for path in args.merge])
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        print_drafts_report(report)
        return
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    pad_id = lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def answer(path: str, qas: list[QA]) -> list[str]:
        """Greedy answers to the questions, each asked alone about the video, as one left-padded batch."""
        video = sample_video(lm, path, FrameOptions())
        batch = left_padded([build_inputs(lm, video, qa.question) for qa in qas], pad_id)
        with torch.inference_mode():
            out = lm.model.generate(**batch, max_new_tokens=ANSWER_TOKENS, do_sample=False, pad_token_id=pad_id)
        return [decode_answer(lm.tokenizer, [t for t in row if t != pad_id])
                for row in out[:, batch["input_ids"].shape[1] :].tolist()]

    if args.samples:
        score_samples(args.samples, answer)
        return
    if args.drafts:
        compare_drafts(lm, args)
        return
    correct: dict[tuple[str, str], list[bool]] = defaultdict(list)
    answers = []
    started = time.perf_counter()
    for seed, kind, clip, path, qas in held_out_questions(args):
        for qa, said in zip(qas, answer(path, qas), strict=True):
            ok = is_correct(qa, said, clip)
            correct[(kind, qa.qtype)].append(ok)
            answers.append({"seed": seed, "kind": kind, "qtype": qa.qtype, "question": qa.question,
                            "truth": qa.answer, "answer": said, "correct": ok})
    table = {f"{kind}/{qtype}": {"n": len(v), "accuracy": round(sum(v) / len(v), 4)}
             for (kind, qtype), v in sorted(correct.items())}
    short_answers = [ok for (kind, qtype), v in correct.items() if kind == "short" and qtype != "describe" for ok in v]
    long_answers = [ok for (kind, _), v in correct.items() if kind == "long" for ok in v]
    summary = {
        "short_answers_accuracy": round(sum(short_answers) / max(1, len(short_answers)), 4),
        "describe_accuracy": table.get("short/describe", {}).get("accuracy"),
        "long_clips_accuracy": round(sum(long_answers) / max(1, len(long_answers)), 4),
        "long_describe_accuracy": table.get("long/describe", {}).get("accuracy"),
        "questions": len(answers),
        "seconds": round(time.perf_counter() - started, 1),
        "model": args.model,
        "device": str(lm.device),
    }
    for key, value in table.items():
        print(f"{key:24s} n={value['n']:5d} accuracy={value['accuracy']:.3f}")
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "per_type": table, "answers": answers}, indent=1))


def held_out_clips(args) -> list[tuple[int, str]]:
    jobs = [(EVAL_SEED_BASE + i, "short") for i in range(args.start, args.start + args.short)]
    return jobs + [(EVAL_SEED_BASE + 500_000 + i, "long") for i in range(args.start_long, args.start_long + args.long)]


def held_out_questions(args):
    """(seed, kind, clip, path, questions) of each held-out clip, its video written by the worker processes (ahead
    of the one answered) into a folder that lasts until the last is answered."""
    jobs = held_out_clips(args)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.workers) as pool:
        paths = pool.map(write_clip, [(seed, kind, f"{tmp}/{kind}-{seed}.mp4") for seed, kind in jobs])
        for (seed, kind), path in zip(jobs, paths, strict=True):
            clip = generate_clip(seed, kind)
            yield seed, kind, clip, path, questions_for(clip, random.Random(seed))


def compare_drafts(lm, args) -> None:
    """--drafts (module docstring)."""
    from stdcli.bench.profile import decode_prompts
    from stdcli.engine.options import DRAFT_KINDS

    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # method -> counts
    by_type: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))  # (method, qtype) ->
    correct: dict[str, list[bool]] = defaultdict(list)
    started = time.perf_counter()
    for clips, (_, kind, clip, path, qas) in enumerate(held_out_questions(args), 1):
        video = sample_video(lm, path, FrameOptions())
        prompts = [build_inputs(lm, video, qa.question) for qa in qas]
        point = decode_prompts(lm.engine, prompts, k=DEFAULT_K, gammas=[args.gamma], drafts=DRAFT_KINDS,
                               new_tokens=ANSWER_TOKENS, rounds=1, warmup=False)
        for config in point["configs"]:
            method = "dense" if config["gamma"] == 0 else f"{config['gamma']}/{config['draft']}"
            for qa, prompt, sequence in zip(qas, prompts, config["sequences"], strict=True):
                qtype = f"{kind}/{qa.qtype}"
                for counts in (totals[method], by_type[method, qtype]):
                    counts["answers"] += 1
                    counts["identical"] += sequence["identical"]
                    counts["drafted"] += sequence["drafted"]
                    counts["accepted"] += sequence["accepted"]
                if config["gamma"] == 0:
                    said = decode_answer(lm.tokenizer, sequence["tokens"])
                    if args.generate:
                        same = until_end(lm, sequence["tokens"]) == until_end(lm, generate_alone(lm, prompt))
                        for counts in (totals["generate"], by_type["generate", qtype]):
                            counts["answers"] += 1
                            counts["identical"] += same
                    correct[qtype].append(is_correct(qa, said, clip))
        report = drafts_report(lm, args, totals, by_type, correct, time.perf_counter() - started)
        report["clips"] = clips
        if args.json:  # after every clip: a run cut short keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
    print_drafts_report(report)


def print_drafts_report(report: dict) -> None:
    for method, c in report["methods"].items():
        print(f"{method:12s} identical {c['identical']}/{c['answers']}  acceptance {c['acceptance']}")
    for name, c in report["per_type"].items():
        print(f"  {name:34s} n={c['answers']:4d} identical {c['identical']:4d} acceptance {c['acceptance']}")
    print(json.dumps({"questions": report["questions"], "clips": report["clips"],
                      "dense_accuracy": report["dense_accuracy"], "seconds": report["seconds"]}))


def generate_alone(lm, prompt: dict) -> list[int]:
    """transformers' greedy answer to one prompt, batch 1, as many new tokens as the drafts comparison decodes."""
    eos = list(lm.eos_token_ids)
    with torch.inference_mode():
        out = lm.model.generate(**prompt, do_sample=False, max_new_tokens=ANSWER_TOKENS, eos_token_id=eos,
                                pad_token_id=eos[0])
    return out[0, prompt["input_ids"].shape[1]:].tolist()


def until_end(lm, tokens: list[int]) -> list[int]:
    """The tokens up to the first end token, left out (one path may stop at it, the other keep it)."""
    ends = [i for i, t in enumerate(tokens) if t in lm.eos_token_ids]
    return tokens[: ends[0]] if ends else tokens


def merge_reports(reports: list[dict]) -> dict:
    """One --drafts report of runs over disjoint clips: counts added, rates recomputed."""
    def added(tables: list[dict]) -> dict:
        sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for table in tables:
            for name, counts in table.items():
                for key, value in counts.items():
                    if key != "acceptance":
                        sums[name][key] += value
        return {name: {**c, "acceptance": acceptance(c)} for name, c in sorted(sums.items())}

    per_type = added([r["per_type"] for r in reports])
    right = defaultdict(float)
    for r in reports:
        for qtype, accuracy in r["dense_accuracy"].items():
            right[qtype] += accuracy * r["per_type"][f"dense {qtype}"]["answers"]
    return {
        **{key: reports[0][key] for key in ("model", "device", "dtype", "gamma")},
        "questions": sum(r["questions"] for r in reports), "clips": sum(r["clips"] for r in reports),
        "methods": added([r["methods"] for r in reports]), "per_type": per_type,
        "dense_accuracy": {q: round(n / per_type[f"dense {q}"]["answers"], 4) for q, n in sorted(right.items())},
        "seconds": max(r["seconds"] for r in reports),  # the runs were side by side
    }


def acceptance(counts: dict) -> float | None:
    """Accepted / drafted of a method's counts; None where nothing was drafted (or, for generate, counted)."""
    return round(counts["accepted"] / counts["drafted"], 4) if counts.get("drafted") else None


def drafts_report(lm, args, totals: dict, by_type: dict, correct: dict, seconds: float) -> dict:
    return {
        "model": args.model, "device": str(lm.device), "dtype": str(lm.dtype), "gamma": args.gamma,
        "questions": sum(len(v) for v in correct.values()),
        "methods": {method: {**c, "acceptance": acceptance(c)} for method, c in totals.items()},
        "per_type": {f"{method} {qtype}": {**c, "acceptance": acceptance(c)}
                     for (method, qtype), c in sorted(by_type.items())},
        "dense_accuracy": {qtype: round(sum(v) / len(v), 4) for qtype, v in sorted(correct.items())},
        "seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    main()
