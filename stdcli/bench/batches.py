"""`stdcli bench --batch-size`: folder throughput as `stdcli ask --batch-size B` runs a folder, against
transformers generate one video at a time (settings.BATCH_TIMING)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..ask import AskOptions, FrameOptions, answer_videos, decode_answer, prepare
from ..engine.device import synchronize
from ..engine.options import AUTO, DEFAULT_GAMMA, DEFAULT_K, DecodeOptions
from ..engine.stats import gamma_counts
from ..records import Record
from .common import BenchItem, MemoryMeter, check_frames, environment, fmt, model_info, ratio, round_or_none
from .decoding import run_generate
from .settings import DEFAULT_MAX_NEW_TOKENS, DEFAULT_QUESTION, SCHEMA, BenchError, Progress, say

BATCH_TIMING = (
    "wall clock of one whole pass over the inputs (videos read, prompts built, prefill, decoding), device "
    "synchronized before and after, summed over the timed rounds; answers_per_min = answers / seconds; "
    "decoded_tokens_per_s = new tokens after each answer's first / seconds; with several ranks, each pass starts on "
    "every rank at once (a barrier), lasts as long as the slowest rank's and answers every rank's share"
)
BATCH_IDENTICAL = (
    "an answer is identical when its text and its number of new tokens equal those of transformers generate on the "
    "same input in the same round; a failed answer is never identical"
)


@dataclass(frozen=True)
class BatchConfig:
    """One way to answer every input: transformers generate one at a time, or our engine at a batch size."""

    method: str  # "generate" | "dense" | "std"
    batch_size: int
    gamma: int | str | None = None  # the engine's gamma: 0 dense, a count or "auto" StD; None for generate

    @property
    def label(self) -> str:
        return f"std γ={self.gamma}" if self.method == "std" else self.method


def batch_configs(batch_sizes: Sequence[int], gammas: Sequence[int | str]) -> list[BatchConfig]:
    """transformers generate (batch 1), then at every batch size our dense path and StD with every gamma."""
    return [BatchConfig("generate", 1)] + [
        config
        for b in batch_sizes
        for config in (BatchConfig("dense", b, 0), *(BatchConfig("std", b, g) for g in gammas))
    ]


def _by_question(items: Iterable[BenchItem]) -> dict[str, list[str]]:
    """The videos of each question, in order: one answer_videos call per question (it asks one of all its videos)."""
    groups: dict[str, list[str]] = {}
    for item in items:
        groups.setdefault(item.question, []).append(item.video)
    return groups


def _generate_one_by_one(lm, videos: Sequence[str], options: AskOptions, meter: MemoryMeter) -> list[Record]:
    """Records of transformers generate, greedy, one video after another, on the frames and prompt ask builds."""
    records = []
    for video in videos:
        item = prepare(lm, video, options)
        if isinstance(item, Record):  # the video could not be read: its error record
            records.append(item)
            continue
        run = run_generate(lm, item.inputs, options.decode.max_new_tokens, meter)
        records.append(Record(video, options.question, lm.name, "generate",
                              answer=decode_answer(lm.tokenizer, run.tokens), new_tokens=run.new_tokens))
    return records


def _timed_pass(lm, groups: dict[str, list[str]], config: BatchConfig, options: AskOptions,
                meter: MemoryMeter) -> tuple[float, dict[tuple[str, str], Record]]:
    """Seconds of one pass of `config` over every input, and its records by (video, question)."""
    records: list[Record] = []
    decode = options.decode if config.method == "generate" else replace(options.decode, gamma=config.gamma)
    synchronize(lm.device)
    started = time.perf_counter()
    for question, videos in groups.items():
        asked = replace(options, question=question, decode=decode)
        if config.method == "generate":
            records += _generate_one_by_one(lm, videos, asked, meter)
        else:
            answer_videos(lm, videos, asked, config.batch_size, records.append)
    synchronize(lm.device)
    return time.perf_counter() - started, {(r.video, r.question): r for r in records}


def _same_answer(record: Record, reference: Record) -> bool:
    return record.ok and reference.ok and (record.answer, record.new_tokens) == (reference.answer, reference.new_tokens)


Pass = tuple[float, dict[tuple[str, str], Record]]


def _batch_summary(config: BatchConfig, passes: list[Pass], generate: list[Pass], keys: list[tuple[str, str]]
                   ) -> dict[str, Any]:
    """One configuration over its timed passes; `generate`: the passes of transformers generate, round by round."""
    seconds = sum(s for s, _ in passes)

    def per_s(count: float) -> float | None:
        return round_or_none(count / seconds) if seconds > 0 else None

    runs = [(r, records[key], generate[r][1][key]) for r, (_, records) in enumerate(passes) for key in keys]
    answered = [record for _, record, _ in runs if record.ok]
    std = [record.stats for record in answered if record.gammas is not None and record.stats is not None]
    drafted = sum(stats.drafted for stats in std)
    accepted = sum(stats.accepted for stats in std)
    decoded = sum(max((record.new_tokens or 0) - 1, 0) for record in answered)
    return {
        "method": config.method,
        "gamma": config.gamma,
        "batch_size": config.batch_size,
        "runs": len(runs),
        "answers": len(answered),
        "failed": len(runs) - len(answered),
        "seconds": round_or_none(seconds),
        "round_seconds": [round_or_none(s) for s, _ in passes],
        "answers_per_min": per_s(60 * len(answered)),
        "decoded_tokens": decoded,
        "decoded_tokens_per_s": per_s(decoded),
        "drafted": drafted if std else None,
        "accepted": accepted if std else None,
        "acceptance_rate": round_or_none(accepted / drafted) if drafted else None,
        "gammas": gamma_counts(stats.gammas for stats in std) if std else None,
        "identical_to_generate": sum(_same_answer(record, reference) for _, record, reference in runs),
        "total": len(runs),
        "mismatches": [
            {"round": r + 1, "video": record.video, "question": record.question, "answer": record.answer,
             "generate_answer": reference.answer, "error": record.error}
            for r, record, reference in runs if not _same_answer(record, reference)
        ],
    }


def _with_speedups(summaries: list[dict]) -> list[dict]:
    """Each configuration's answers per minute over generate's, and (StD) over our dense path's at the same batch
    size; null where the configuration is that baseline."""
    generate = next(s["answers_per_min"] for s in summaries if s["method"] == "generate")
    dense = {s["batch_size"]: s for s in summaries if s["method"] == "dense"}

    def spread(s: dict) -> list[float] | None:
        """[lowest, highest] speedup over dense at the same batch size, round by round."""
        pairs = zip(dense[s["batch_size"]]["round_seconds"], s["round_seconds"], strict=True)
        ratios = [d / x for d, x in pairs if d and x]
        return [round(min(ratios), 4), round(max(ratios), 4)] if ratios else None

    return [
        {
            **s,
            "speedup_vs_generate": None if s["method"] == "generate" else ratio(s["answers_per_min"], generate),
            "speedup_vs_dense": (ratio(s["answers_per_min"], dense[s["batch_size"]]["answers_per_min"])
                                 if s["method"] == "std" else None),
            "speedup_vs_dense_range": spread(s) if s["method"] == "std" else None,
        }
        for s in summaries
    ]


def batch_verdict(report: dict) -> str:
    """One sentence: did StD raise folder throughput over our dense path, at which batch size, above the noise."""
    where = f"{report['model']['name']} on {report['environment']['device_name'] or report['model']['device']}"
    std = [c for c in report["configs"] if c["method"] == "std" and c["speedup_vs_dense"] is not None]
    if not std:
        return f"No StD configuration was measured with {where}."
    best = max(std, key=lambda c: c["speedup_vs_dense"])
    low, high = best["speedup_vs_dense_range"] or (best["speedup_vs_dense"],) * 2
    rounds = len(best["round_seconds"])
    label = f"StD γ {best['gamma']} at batch {best['batch_size']}"
    if rounds > 1 and low > 1.0:
        return (f"StD helped: {label} answered {best['speedup_vs_dense']:.2f}x as many videos per minute as our dense "
                f"path ({low:.2f}-{high:.2f}x over {rounds} rounds) with {where}.")
    noise = (f"{low:.2f}-{high:.2f}x over {rounds} rounds" if rounds > 1
             else "one round: --repeat 3 to tell it from noise")
    return (f"StD did not raise folder throughput with {where}: the best, {label}, answered "
            f"{best['speedup_vs_dense']:.2f}x as many videos per minute as our dense path ({noise}).")


@dataclass
class Measured:
    """What one process measured: each configuration's timed passes over its inputs, and the inputs it left out."""

    passes: dict[BatchConfig, list[Pass]]
    keys: list[tuple[str, str]]  # the (video, question) of every input timed, in order
    skipped: list[dict]


def combined(parts: Sequence[Measured]) -> Measured:
    """The passes of several ranks as those of one group: round by round, each configuration's pass lasted as long
    as its slowest rank's (they start together) and answered every rank's inputs."""
    first = parts[0]
    passes = {
        config: [(max(part.passes[config][r][0] for part in parts),
                  {key: record for part in parts for key, record in part.passes[config][r][1].items()})
                 for r in range(len(first.passes[config]))]
        for config in first.passes
    }
    return Measured(passes, [key for part in parts for key in part.keys],
                    [skip for part in parts for skip in part.skipped])


def bench_batches(
    lm,
    items: Sequence[BenchItem],
    *,
    batch_sizes: Sequence[int] = (1, 4, 8),
    gammas: Sequence[int | str] = (DEFAULT_GAMMA,),
    k: int = DEFAULT_K,
    draft: str = AUTO,
    frames: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    rounds: int = 1,
    progress: Progress = None,
    align: Callable[[], None] = lambda: None,
    gather: Callable[[Measured], list[Measured] | None] = lambda measured: [measured],
) -> dict[str, Any] | None:
    """Answers per minute of whole passes over the inputs, as `stdcli ask --batch-size B` runs a folder:
    transformers generate one input at a time, then our engine densely and with StD (every gamma) at every B.

    One warm-up pass of every configuration, then `rounds` timed passes of each, the configurations in reversed
    order from one round to the next. Inputs that generate cannot answer in the warm-up (an unreadable video) are
    left out of the timed passes and listed in "skipped". Every answer is compared with generate's (BATCH_IDENTICAL);
    every one that differs is listed in its configuration's "mismatches".

    Several ranks (torchrun) each measure their share of the inputs: `align()` (a barrier) before every pass starts
    the ranks' passes together, `gather` brings every rank's measurements to rank 0, which alone gets the report of
    the group (the others None).
    """
    items = list(dict.fromkeys(items))  # an input named twice would be one record key
    if not items:
        raise BenchError("nothing to benchmark: no inputs")
    if not batch_sizes or min(batch_sizes) < 1:
        raise BenchError("--batch-size values must be at least 1")
    if not gammas or any(g != AUTO and g < 1 for g in gammas) or k < 1:
        raise BenchError("--k and --gamma values must be at least 1 (the dense path is always measured)")
    if max_new_tokens < 1 or rounds < 1:
        raise BenchError("--max-new-tokens and --repeat must be at least 1")
    check_frames(lm, [frames])
    env = environment(lm.device)
    meter = MemoryMeter(lm.device)
    options = AskOptions(DEFAULT_QUESTION, frames=FrameOptions(frames=frames),
                         decode=DecodeOptions(max_new_tokens=max_new_tokens, k=k, draft=draft))
    configs = batch_configs(batch_sizes, gammas)
    groups = _by_question(items)
    passes: dict[BatchConfig, list[Pass]] = {c: [] for c in configs}
    skipped: list[dict] = []
    for r in range(rounds + 1):  # round 0 warms up
        for config in configs if r % 2 else configs[::-1]:
            say(progress, f"{f'round {r}/{rounds}' if r else 'warm-up'}: {config.label}, batch {config.batch_size}")
            align()
            seconds, records = _timed_pass(lm, groups, config, options, meter)
            if r:
                passes[config].append((seconds, records))
            elif config.method == "generate":
                skipped = [{"video": v, "question": q, "error": rec.error["message"]}
                           for (v, q), rec in records.items() if rec.error is not None]
        if r == 0 and skipped:
            unreadable = {(s["video"], s["question"]) for s in skipped}
            items = [i for i in items if (i.video, i.question) not in unreadable]
            groups = _by_question(items)
    parts = gather(Measured(passes, [(i.video, i.question) for i in items], skipped))
    if parts is None:
        return None
    group = combined(parts)
    generate = group.passes[configs[0]]
    summaries = _with_speedups([_batch_summary(c, group.passes[c], generate, group.keys) for c in configs])
    first = generate[0][1]
    return {
        "schema": SCHEMA,
        "kind": "batch",
        "environment": env,
        "model": model_info(lm),
        "settings": {
            "batch_sizes": list(batch_sizes),
            "gamma": list(gammas),
            "k": k,
            "draft": draft,
            "frames": frames,
            "max_new_tokens": max_new_tokens,
            "rounds": rounds,
            "questions": len({question for _, question in group.keys}),
            "ranks": len(parts),
            "timing": BATCH_TIMING,
            "identical": BATCH_IDENTICAL,
        },
        "inputs": [{"video": v, "question": q, "generate_answer": first[(v, q)].answer,
                    "generate_new_tokens": first[(v, q)].new_tokens} for v, q in group.keys],
        "configs": summaries,
        "skipped": group.skipped,
    }


def batch_tables(report: dict) -> list:
    """Rich tables of a bench_batches report: throughput per configuration, then every answer that differs from
    transformers generate's (none: no second table)."""
    from rich.table import Table

    settings = report["settings"]
    speed = Table(
        title=f"stdcli bench --batch-size: {report['model']['name']} on "
        f"{report['environment']['device_name'] or report['model']['device']} ({report['model']['dtype']}), "
        f"{len(report['inputs'])} input(s), max {settings['max_new_tokens']} new tokens, K {settings['k']}, "
        f"{settings['rounds']} round(s) after a warm-up",
        caption="Whole passes over the inputs, wall clock (video reading, prompts and prefill included). "
        "decoded tok/s: new tokens after each answer's first. ×gen: answers/min over transformers generate one at a "
        "time; ×dense: over our dense path at the same batch size. identical: answers equal to generate's (text and "
        "token count).",
    )
    for column in ("method", "γ", "batch", "answers", "failed", "s", "answers/min", "decoded tok/s", "×gen",
                   "×dense", "accept", "identical"):
        speed.add_column(column, justify="right")
    for c in report["configs"]:
        speed.add_row(
            c["method"], _gamma_cell(c), str(c["batch_size"]), str(c["answers"]), str(c["failed"]),
            fmt(c["seconds"]), fmt(c["answers_per_min"], ".1f"),
            fmt(c["decoded_tokens_per_s"], ".1f"), fmt(c["speedup_vs_generate"], ".2f", "×"),
            fmt(c["speedup_vs_dense"], ".2f", "×"), fmt(c["acceptance_rate"], ".2f"),
            f"{c['identical_to_generate']}/{c['total']}",
        )
    differing = [(c, m) for c in report["configs"] for m in c["mismatches"]]
    if not differing:
        return [speed]
    mismatches = Table(title="answers that differ from transformers generate's (or failed)")
    for column in ("method", "γ", "batch", "round", "video", "question", "answer", "generate's answer"):
        mismatches.add_column(column, overflow="fold")
    for c, m in differing:
        answer = m["answer"] if m["error"] is None else f"error: {m['error']['message']}"
        mismatches.add_row(c["method"], _gamma_cell(c), str(c["batch_size"]), str(m["round"]), m["video"],
                           m["question"], answer, m["generate_answer"] or "-")
    return [speed, mismatches]


def _gamma_cell(config: dict) -> str:
    return str(config["gamma"]) if config["method"] == "std" else "-"

