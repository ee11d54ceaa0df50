"""`stdcli bench` on a loaded model and real inputs (videos x questions): transformers generate, our dense path and
StD decode every input in one process, timed the same way (settings.TIMING), after a warm-up."""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..ask import AskOptions, FrameOptions, decode_answer, prepare_inputs, sample_video
from ..engine.device import synchronize
from ..engine.options import AUTO, DEFAULT_GAMMA, DEFAULT_K, DecodeOptions
from ..engine.stats import DENSE_ONLY, DecodeStats, draft_counts, gamma_counts
from ..errors import one_line
from .common import (
    BenchItem,
    MemoryMeter,
    check_frames,
    environment,
    fmt,
    mean_of,
    mib,
    model_info,
    ratio,
    round_or_none,
)
from .settings import (
    DEFAULT_MAX_NEW_TOKENS,
    SCHEMA,
    TIMING,
    WARMUP_NEW_TOKENS,
    BenchError,
    Progress,
    say,
)


@dataclass
class Run:
    """One method decoding one input once."""

    method: str
    tokens: list[int]
    prefill_s: float
    decode_s: float
    peak_memory_bytes: int | None = None
    peak_memory_delta_bytes: int | None = None
    stats: DecodeStats = field(default_factory=DecodeStats)  # our engine's own (empty for transformers generate)

    @property
    def new_tokens(self) -> int:
        return len(self.tokens)

    @property
    def decoded_tokens(self) -> int:  # the first token comes out of the prefill
        return max(len(self.tokens) - 1, 0)


def _first_token_streamer():
    from transformers.generation.streamers import BaseStreamer

    class FirstTokenClock(BaseStreamer):
        """generate() puts the prompt first, then each new token after copying it to the host (a synchronization)."""

        def __init__(self):
            self.puts = 0
            self.first: float | None = None

        def put(self, value) -> None:
            self.puts += 1
            if self.puts == 2:
                self.first = time.perf_counter()

        def end(self) -> None:
            pass

    return FirstTokenClock()


@contextlib.contextmanager
def _quiet_transformers():
    """No "generation flags are not valid" chatter from generate() while timing it."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def run_generate(lm, inputs: dict, max_new_tokens: int, meter: MemoryMeter) -> Run:
    """Plain transformers greedy decoding, timed (see TIMING)."""
    streamer = _first_token_streamer()
    eos = list(lm.eos_token_ids)
    prompt = inputs["input_ids"].shape[1]
    with _quiet_transformers(), torch.inference_mode():
        synchronize(lm.device)
        meter.start()
        started = time.perf_counter()
        out = lm.model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            streamer=streamer,
            eos_token_id=eos or None,
            pad_token_id=eos[0] if eos else None,
        )
        synchronize(lm.device)
        ended = time.perf_counter()
    peak, delta = meter.stop()
    first = streamer.first if streamer.first is not None else ended
    tokens = out[0, prompt:].tolist()
    return Run("generate", tokens, first - started, ended - first, peak, delta)


def run_engine(lm, inputs: dict, options: DecodeOptions, meter: MemoryMeter) -> Run:
    """Our engine (dense when options.gamma == 0, else StD), timed exactly like run_generate."""
    first: list[float] = []

    def on_tokens(tokens, stats) -> None:
        if not first:
            first.append(time.perf_counter())

    synchronize(lm.device)
    meter.start()
    started = time.perf_counter()
    result = lm.engine.generate(inputs, options, eos=lm.eos_token_ids, on_tokens=on_tokens)
    synchronize(lm.device)
    ended = time.perf_counter()
    peak, delta = meter.stop()
    start_decode = first[0] if first else ended
    return Run(
        "dense" if options.gamma == 0 else "std",
        list(result.tokens),
        start_decode - started,
        ended - start_decode,
        peak,
        delta,
        stats=result.stats,
    )


def time_vision_encoder(lm, inputs: dict) -> float | None:
    """Seconds of the vision tower alone on these inputs (None where the model has no such entry point)."""
    encode = getattr(getattr(lm.model, "model", None), "get_video_features", None)
    if encode is None or "pixel_values_videos" not in inputs:
        return None
    accepted = inspect.signature(encode).parameters
    arguments = {k: inputs[k] for k in ("pixel_values_videos", "video_grid_thw") if k in inputs and k in accepted}
    try:
        with torch.inference_mode():
            synchronize(lm.device)
            started = time.perf_counter()
            encode(**arguments)
            synchronize(lm.device)
    except Exception:  # an optional figure: a model whose entry point differs just has none
        return None
    return time.perf_counter() - started


@dataclass
class Prepared:
    item: BenchItem
    inputs: dict
    info: dict[str, Any]


def _prepare(lm, item: BenchItem, frames: int | None, sampled_cache: dict) -> Prepared:
    """The product's own preparation (ask.prepare_inputs) of one input; the frames of a video are sampled once per
    frame count and shared by its questions."""
    key = (item.video, frames)
    if key not in sampled_cache:
        started = time.perf_counter()
        sampled_cache[key] = (sample_video(lm, item.video, FrameOptions(frames=frames)), time.perf_counter() - started)
    sampled, load_video_s = sampled_cache[key]
    prepared = prepare_inputs(lm, item.video, sampled, AskOptions(item.question), time.perf_counter(), load_video_s)
    prompt_tokens, visual_tokens = lm.engine.adapter.layout(prepared.inputs)
    info = {
        "frames": frames,
        "video": item.video,
        "question": item.question,
        "sampled_frames": len(sampled.frames),
        "prompt_tokens": prompt_tokens,
        "visual_tokens": visual_tokens,
        "load_video_s": round_or_none(load_video_s),
        "processor_s": round_or_none(prepared.processor_s),
        "vision_encoder_s": None,
    }
    return Prepared(item, prepared.inputs, info)


def _std_options(max_new_tokens: int, k: int, gamma: int | str, draft: str) -> DecodeOptions:
    return DecodeOptions(max_new_tokens=max_new_tokens, k=k, gamma=gamma, draft=draft)


def bench_model(
    lm,
    items: Sequence[BenchItem],
    *,
    ks: Sequence[int] = (DEFAULT_K,),
    gammas: Sequence[int | str] = (DEFAULT_GAMMA,),
    drafts: Sequence[str] = (AUTO,),
    frames: Sequence[int | None] = (None,),
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    repeat: int = 1,
    warmup_new_tokens: int = WARMUP_NEW_TOKENS,
    progress: Progress = None,
) -> dict[str, Any]:
    """Decode every item with transformers generate, our dense path and StD (every K x gamma x draft kind), per frame
    count.

    Per frame count: one warm-up run of every method (and StD configuration) on the first input, then `repeat`
    rounds over the inputs; in each round every input runs every method once, in an order rotated by one position
    from input to input and round to round. The two baselines do not depend on K or gamma: they run once per input
    and round, and every StD configuration of that frame count is compared with those runs.
    """
    if not items:
        raise BenchError("nothing to benchmark: no inputs")
    if any(g != AUTO and g < 1 for g in gammas) or any(k < 1 for k in ks):
        raise BenchError("--k and --gamma values must be at least 1 (the dense path is always measured)")
    if max_new_tokens < 1 or repeat < 1:
        raise BenchError("--max-new-tokens and --repeat must be at least 1")
    check_frames(lm, frames)
    env = environment(lm.device)
    meter = MemoryMeter(lm.device)
    std_configs = [(k, g, d) for k in ks for g in gammas for d in drafts]
    sampled_cache: dict = {}
    inputs_out: list[dict] = []
    configs_out: list[dict] = []
    skipped: list[dict] = []
    for f in frames:
        label = f"frames={f if f is not None else 'default'}"
        prepared: list[Prepared] = []
        for item in items:
            try:
                prepared.append(_prepare(lm, item, f, sampled_cache))
            except Exception as error:  # an unreadable video is skipped and reported, the rest run
                skipped.append({"video": item.video, "question": item.question, "frames": f,
                                "error": one_line(error, 300)})
                say(progress, f"skipped {item.video} ({label}): {one_line(error, 300)}")
        if not prepared:
            continue
        say(progress, f"{label}: warm-up")
        first = prepared[0].inputs
        warm = min(max_new_tokens, warmup_new_tokens)
        run_generate(lm, first, warm, meter)
        run_engine(lm, first, DecodeOptions(max_new_tokens=warm, gamma=0), meter)
        for k, g, d in std_configs:
            run_engine(lm, first, _std_options(warm, k, g, d), meter)
        for p in prepared:
            p.info["vision_encoder_s"] = round_or_none(time_vision_encoder(lm, p.inputs))
            inputs_out.append(p.info)
        methods: list[Any] = ["generate", "dense", *std_configs]
        runs: dict[Any, dict[tuple[int, int], Run]] = {m: {} for m in methods}
        for r in range(repeat):
            for i, p in enumerate(prepared):
                say(progress, f"{label}: input {i + 1}/{len(prepared)}, round {r + 1}/{repeat}")
                shift = (i + r) % len(methods)
                for method in methods[shift:] + methods[:shift]:
                    if method == "generate":
                        run = run_generate(lm, p.inputs, max_new_tokens, meter)
                    elif method == "dense":
                        run = run_engine(lm, p.inputs, DecodeOptions(max_new_tokens=max_new_tokens, gamma=0), meter)
                    else:
                        run = run_engine(lm, p.inputs, _std_options(max_new_tokens, *method), meter)
                    runs[method][(i, r)] = run
        for k, g, d in std_configs:
            configs_out.append(_summarize(lm, f, (k, g, d), prepared, runs["generate"], runs["dense"], runs[(k, g, d)]))
    return {
        "schema": SCHEMA,
        "kind": "model",
        "environment": env,
        "model": model_info(lm),
        "settings": {
            "k": list(ks),
            "gamma": list(gammas),
            "draft": list(drafts),
            "frames": list(frames),
            "max_new_tokens": max_new_tokens,
            "repeat": repeat,
            "warmup_new_tokens": min(max_new_tokens, warmup_new_tokens),
            "questions": len({item.question for item in items}),
            "timing": TIMING,
            "memory_measure": meter.method,
        },
        "inputs": inputs_out,
        "configs": configs_out,
        "skipped": skipped,
    }


def _method_summary(runs: list[Run]) -> dict[str, Any]:
    n = len(runs)
    decoded = sum(r.decoded_tokens for r in runs)
    decode_s = sum(r.decode_s for r in runs)
    peaks = [r.peak_memory_bytes for r in runs if r.peak_memory_bytes is not None]
    deltas = [r.peak_memory_delta_bytes for r in runs if r.peak_memory_delta_bytes is not None]
    return {
        "runs": n,
        "prefill_s": round_or_none(sum(r.prefill_s for r in runs) / n),
        "decode_s": round_or_none(decode_s / n),
        "total_s": round_or_none(sum(r.prefill_s + r.decode_s for r in runs) / n),
        "new_tokens": round_or_none(sum(r.new_tokens for r in runs) / n),
        "decoded_tokens": decoded,
        "decode_tokens_per_s": round_or_none(decoded / decode_s) if decode_s > 0 and decoded else None,
        "peak_memory_bytes": max(peaks) if peaks else None,
        "peak_memory_delta_bytes": max(deltas) if deltas else None,
    }




def _e2e_per_token(runs: list[Run]) -> float | None:
    tokens = sum(r.new_tokens for r in runs)
    return sum(r.prefill_s + r.decode_s for r in runs) / tokens if tokens else None


def _summarize(lm, frames, config: tuple[int, int | str, str], prepared: list[Prepared], gen: dict, dense: dict,
               std: dict) -> dict[str, Any]:
    k, gamma, draft = config
    keys = sorted(std)
    gen_runs, dense_runs, std_runs = [gen[x] for x in keys], [dense[x] for x in keys], [std[x] for x in keys]
    g, d, s = _method_summary(gen_runs), _method_summary(dense_runs), _method_summary(std_runs)
    s.update(
        draft_s=round_or_none(sum(r.stats.draft_s for r in std_runs) / len(std_runs)),
        verify_s=round_or_none(sum(r.stats.verify_s for r in std_runs) / len(std_runs)),
        **{key: sum(getattr(r.stats, key) for r in std_runs)
           for key in ("dense_steps", "cycles", "drafted", "accepted")},
        gammas=gamma_counts(r.stats.gammas for r in std_runs),
        drafts=draft_counts(r.stats.drafts for r in std_runs),
    )
    s["dense_share"] = ratio(s["dense_steps"], sum(r.decoded_tokens for r in std_runs))
    committed = sum(r.decoded_tokens - r.stats.dense_steps for r in std_runs)
    per_input = []
    for i, p in enumerate(prepared):
        mine = [x for x in keys if x[0] == i]
        per_input.append(
            {
                "video": p.item.video,
                "question": p.item.question,
                "identical_to_dense": sum(std[x].tokens == dense[x].tokens for x in mine),
                "dense_answer": decode_answer(lm.tokenizer, dense[mine[0]].tokens) if mine else None,
            }
        )
    mean = lambda values: round_or_none(sum(values) / len(values)) if values else None  # noqa: E731
    return {
        "frames": frames,
        "k": k,
        "gamma": gamma,
        "draft": draft,
        "inputs": len(prepared),
        "runs": len(keys),
        "prompt_tokens": mean([p.info["prompt_tokens"] for p in prepared]),
        "visual_tokens": mean([p.info["visual_tokens"] for p in prepared]),
        "kept_tokens": mean([r.stats.kept_tokens for r in std_runs]),
        "generate": g,
        "dense": d,
        "std": s,
        "decode_speedup_vs_generate": ratio(s["decode_tokens_per_s"], g["decode_tokens_per_s"]),
        "decode_speedup_vs_dense": ratio(s["decode_tokens_per_s"], d["decode_tokens_per_s"]),
        "decode_speedup_vs_dense_range": ratio_range([dense[x] for x in keys], std_runs),
        "e2e_speedup_vs_generate": ratio(_e2e_per_token(gen_runs), _e2e_per_token(std_runs)),
        "e2e_speedup_vs_dense": ratio(_e2e_per_token(dense_runs), _e2e_per_token(std_runs)),
        "acceptance_rate": round_or_none(s["accepted"] / s["drafted"]) if s["drafted"] else None,
        "mean_accepted_length": round_or_none(committed / s["cycles"]) if s["cycles"] else None,
        "identical_to_dense": sum(std[x].tokens == dense[x].tokens for x in keys),
        "identical_to_generate": sum(std[x].tokens == gen[x].tokens for x in keys),
        "dense_identical_to_generate": sum(dense[x].tokens == gen[x].tokens for x in keys),
        "total": len(keys),
        "per_input": per_input,
    }



def _per_token(run: Run) -> float | None:
    return run.decode_s / run.decoded_tokens if run.decoded_tokens and run.decode_s > 0 else None


def ratio_range(baseline: list[Run], runs: list[Run]) -> list[float] | None:
    """[lowest, highest] of the per-run decode speedups (run by run, baseline over `runs`): the spread a speedup
    must rise above to be more than noise."""
    ratios = [b / r for b, r in ((_per_token(x), _per_token(y)) for x, y in zip(baseline, runs, strict=True))
              if b is not None and r is not None]
    return [round(min(ratios), 4), round(max(ratios), 4)] if ratios else None


def _label(config: dict) -> str:
    frames = "default frames" if config["frames"] is None else f"{config['frames']} frames"
    return f"γ {config['gamma']}, {config['draft']} draft, K {config['k']}, {frames}"


def model_verdict(report: dict) -> str:
    """One sentence a newcomer understands: did StD help, by how much, on what (and was it above the noise)."""
    where = f"{report['model']['name']} on {report['environment']['device_name'] or report['model']['device']}"
    configs = [c for c in report["configs"] if c["decode_speedup_vs_dense"] is not None]
    if not configs:
        return f"Nothing was measured on {where}."
    best = max(configs, key=lambda c: c["decode_speedup_vs_dense"])
    speedup, spread, runs = best["decode_speedup_vs_dense"], best["decode_speedup_vs_dense_range"], best["runs"]
    noise = f"{spread[0]:.2f}-{spread[1]:.2f}x over {runs} runs" if spread else "not timed"
    if spread and runs > 1 and spread[0] > 1.0:
        return (f"StD helped: {_label(best)} decoded {speedup:.2f}x as fast as our dense path ({noise}) with "
                f"{where}.")
    why = ""
    if all(c["std"]["dense_share"] == 1.0 for c in configs):
        why = f"; it took {DENSE_ONLY}"
    elif runs == 1:
        why = "; one run cannot tell this from noise (--repeat 3)"
    return (f"StD did not help with {where}: the best setting ({_label(best)}) decoded at {speedup:.2f}x our dense "
            f"path ({noise}){why}.")


def model_tables(report: dict) -> list:
    """Rich tables of a bench_model report: speed per configuration, then where the time of one answer goes."""
    from rich.table import Table

    memory_gpu = report["model"]["device"].startswith("cuda")
    speed = Table(
        title=f"stdcli bench: {report['model']['name']} on "
        f"{report['environment']['device_name'] or report['model']['device']}"
        f" ({report['model']['dtype']}), max {report['settings']['max_new_tokens']} new tokens, "
        f"{report['settings']['repeat']} round(s)",
        caption="tok/s: decode tokens after the first, per second. xgen / xdense: StD decode speedup over transformers "
        "generate / our dense path; e2e: same with prefill, per new token. dense %: tokens from plain dense steps "
        "(calibration; with γ auto, whenever drafting does not pay). peak MiB: "
        + ("CUDA allocator peak" if memory_gpu else "peak RSS growth (VmHWM)")
        + " of the StD runs.",
    )
    for column in ("frames", "K", "γ", "draft", "prompt", "prefill s gen/dense/std", "tok/s gen", "tok/s dense",
                   "tok/s StD", "×gen", "×dense", "e2e ×gen", "e2e ×dense", "accept", "acc. len", "dense %",
                   "identical", "peak MiB"):
        speed.add_column(column, justify="right")
    for c in report["configs"]:
        g, d, s = c["generate"], c["dense"], c["std"]
        peak = s["peak_memory_bytes"] if memory_gpu else s["peak_memory_delta_bytes"]
        speed.add_row(
            "default" if c["frames"] is None else str(c["frames"]),
            str(c["k"]),
            str(c["gamma"]),
            _draft_cell(c["draft"], s["drafts"]),
            fmt(c["prompt_tokens"], ".0f"),
            f"{fmt(g['prefill_s'])}/{fmt(d['prefill_s'])}/{fmt(s['prefill_s'])}",
            fmt(g["decode_tokens_per_s"], ".1f"),
            fmt(d["decode_tokens_per_s"], ".1f"),
            fmt(s["decode_tokens_per_s"], ".1f"),
            fmt(c["decode_speedup_vs_generate"], ".2f", "×"),
            fmt(c["decode_speedup_vs_dense"], ".2f", "×"),
            fmt(c["e2e_speedup_vs_generate"], ".2f", "×"),
            fmt(c["e2e_speedup_vs_dense"], ".2f", "×"),
            fmt(c["acceptance_rate"], ".2f"),
            fmt(c["mean_accepted_length"], ".2f"),
            fmt(None if s["dense_share"] is None else 100 * s["dense_share"], ".0f"),
            f"{c['identical_to_dense']}/{c['total']}",
            mib(peak),
        )
    tables = [speed]
    if report["inputs"]:
        split = Table(
            title="where the time of one answer goes before decoding (means over inputs; the prefill times above "
            "include the vision encoder)"
        )
        for column in ("frames", "inputs", "frames sampled", "visual tok", "load video s", "processor s",
                       "vision encoder s"):
            split.add_column(column, justify="right")
        by_frames: dict = {}
        for info in report["inputs"]:
            by_frames.setdefault(info["frames"], []).append(info)
        for frames, infos in by_frames.items():
            means = {key: mean_of([i[key] for i in infos]) for key in
                     ("sampled_frames", "visual_tokens", "load_video_s", "processor_s", "vision_encoder_s")}
            split.add_row(
                "default" if frames is None else str(frames), str(len(infos)), fmt(means["sampled_frames"], ".0f"),
                fmt(means["visual_tokens"], ".0f"), fmt(means["load_video_s"], ".3f"),
                fmt(means["processor_s"], ".3f"), fmt(means["vision_encoder_s"], ".3f"),
            )
        tables.append(split)
    return tables


def _draft_cell(asked: str, ran: dict[str, int]) -> str:
    """The draft kind asked for; for auto, the kinds that ran and their cycles."""
    if asked != AUTO:
        return asked
    return "auto " + (" ".join(f"{kind}×{n}" for kind, n in ran.items()) if ran else "(none ran)")
