"""`stdcli bench`: measured decoding speed, and step costs against the memory-bandwidth floor.

Three benchmarks, all usable without the CLI (functions return plain dicts, the JSON written by `--json`):

`bench_model(lm, items, ...)`: a loaded model on real inputs (videos x questions). For every frame count, after a
warm-up, every input is decoded by three methods in one process, in an order that rotates from input to input and
repeat to repeat:
  - "generate": plain transformers `model.generate(**inputs, do_sample=False, max_new_tokens=N)` (what users run);
  - "dense":    our engine with gamma = 0 (`stdcli.std.generate`, the `--dense` path);
  - "std":      our engine with StD, once per (K, gamma) configuration.
Every method is timed the same way, from outside, with device synchronization (see `TIMING`):
  prefill_s = call -> the first generated token is on the host; decode_s = that moment -> the call returns.
The first token comes out of the prefill, so decode tokens/s = (new tokens - 1) / decode_s, for all three methods.
For transformers the first-token moment is the streamer's second put() (the first is the prompt): on CPU and CUDA,
generate() copies each token to the host before put() (on MPS it streams one step late, which would move one decode
step into prefill_s).
End-to-end speedups compare (prefill_s + decode_s) per new token, summed over all runs of a configuration.

`bench_batches(lm, items, batch_sizes=..., gammas=...)`: folder throughput, as `stdcli ask --batch-size B` runs a
folder. Whole passes over the inputs, timed from outside with device synchronization (video reading, prompts and
prefill included): transformers generate one input at a time, then for every batch size our engine densely (gamma 0)
and with StD at every gamma, through stdcli.batch.answer_videos. After a warm-up pass of every configuration,
`rounds` timed passes of each, the order reversed from round to round. Reports answers per minute, decoded tokens
per second, StD's acceptance, speedups over generate and over dense at the same batch size, and how many answers
equal generate's (every one that does not is listed).

`profile_random_init(alias, ...)`: the real architecture at real scale (stdcli.build.make_config(family, "7b")) with
random weights, nothing downloaded. At several context lengths and batch sizes, the KV cache of the engine is filled
with random data (no prefill), and one dense decode step, one draft step (sparse view of K + text entries) and one
verify of gamma+1 tokens are timed, each against its floor (bytes it must read / bandwidth measured in the same run).
Then the cost model of docs (../shared/std-notes.md) gives the speedup StD WOULD have at acceptance rates 0.5..0.95:
a projection, labelled as such everywhere; random weights say nothing about acceptance, so none is ever claimed.

JSON (schema "stdcli-bench/1"; keys are stable, a key that does not apply is null):

  common:  schema, kind ("model" | "batch" | "random-init"), environment{stdcli, torch, transformers, python,
           platform, device, device_name, device_memory_bytes, cuda, cpu_threads, started}, model{...}, settings{...}
  model:   model{name, family, location, dtype, device},
           settings{k, gamma (ints and/or "auto"), frames, max_new_tokens, repeat, warmup_new_tokens, questions, timing, memory_measure},
           inputs[{frames, video, question, sampled_frames, prompt_tokens, visual_tokens, load_video_s, processor_s,
                   vision_encoder_s}],
           configs[{frames, k, gamma, inputs, runs, prompt_tokens, visual_tokens, kept_tokens,
                    generate|dense|std{runs, prefill_s, decode_s, total_s, new_tokens, decoded_tokens,
                                       decode_tokens_per_s, peak_memory_bytes, peak_memory_delta_bytes}
                    (std also: draft_s, verify_s, dense_steps, cycles, drafted, accepted,
                     gammas{"gamma": cycles}, dense_share),
                    decode_speedup_vs_generate, decode_speedup_vs_dense, e2e_speedup_vs_generate,
                    e2e_speedup_vs_dense, acceptance_rate, mean_accepted_length, identical_to_dense,
                    identical_to_generate, dense_identical_to_generate, total,
                    per_input[{video, question, identical_to_dense, dense_answer}]}],
           skipped[{video, question, frames, error}]
  batch:   model{name, family, location, dtype, device},
           settings{batch_sizes, gamma (ints and/or "auto"), k, frames (one count or null), max_new_tokens, rounds,
                    questions, timing, identical},
           inputs[{video, question, generate_answer, generate_new_tokens}] (generate, first timed round),
           configs[{method ("generate" | "dense" | "std"), gamma (null | 0 | int | "auto"), batch_size, runs, answers,
                    failed, seconds, answers_per_min, decoded_tokens, decoded_tokens_per_s, drafted, accepted,
                    acceptance_rate, gammas{"gamma": cycles}, identical_to_generate, total,
                    mismatches[{round, video, question, answer, generate_answer, error}],
                    speedup_vs_generate, speedup_vs_dense}],
           skipped[{video, question, error}]
  random-init: model{alias, family, scale, dtype, device, parameters, weight_bytes, weight_bytes_read_per_step,
                     kv_bytes_per_token, layers, kv_heads, q_heads, head_dim, vocab_size},
           settings{contexts, batches, k, gamma, text_tokens, iters, warmup_iters, floor, step_timing},
           bandwidth{copy_bytes_per_s, reduction_bytes_per_s, bytes_per_s, used, buffer_bytes, method},
           points[{context, batch, skipped, memory_needed_bytes, memory_free_bytes,
                   dense_step{s, floor_s, bytes, over_floor},
                   draft_steps[{k, kept_tokens, s, floor_s, bytes, over_floor}],
                   verify_steps[{gamma, tokens, s, floor_s, bytes, over_floor, over_dense_step}]}],
           projection{label, formula, acceptance, rows[{context, batch, k, basis ("measured" | "floor"),
                      acceptance, best_gamma, speedup, by_gamma{gamma: speedup}}]}
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import inspect
import json
import logging
import math
import platform
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .ask import (
    AskOptions,
    FrameOptions,
    InputError,
    _videos_in,
    collect_videos,
    decode_answer,
    prepare,
    sampling_arguments,
)
from .batch import answer_videos
from .models import REGISTRY, ModelLoadError, _one_line, build_inputs, frame_defaults, pick_device, pick_dtype
from .std import (
    DEFAULT_GAMMA,
    DEFAULT_K,
    Decoder,
    DecodeOptions,
    DecodeStats,
    Slot,
    cache_capacity,
    cache_dims,
    eos_token_ids,
    gamma_counts,
    generate,
    policy_cycle,
    prompt_layout,
    synchronize,
    visual_token_ids,
)
from .policy import AUTO, MAX_AUTO_GAMMA, GammaPolicy, expected_tokens, memory_key
from .video import sample_frames

SCHEMA = "stdcli-bench/1"
METHODS = ("generate", "dense", "std")
DEFAULT_QUESTION = "What happens in this video?"
DEFAULT_MAX_NEW_TOKENS = 128
WARMUP_NEW_TOKENS = 16  # the warm-up runs of each method: enough to run every kernel and step kind once
DEFAULT_CONTEXTS = (16384, 65536)
DEFAULT_BATCHES = (1, 8)
PROFILE_GAMMAS = tuple(range(1, 10))  # verify widths measured for the projection (gamma 1..9)
DEFAULT_ITERS = 10  # timed iterations per step kind in the random-init profile (median reported)
WARMUP_ITERS = 2
DEFAULT_TEXT_TOKENS = 64  # non-visual prompt tokens of the profiled sparse view (all kept, besides the top-K)
ACCEPTANCE_RATES = (0.5, 0.55, 0.6, 0.65, 0.66, 0.7, 0.75, 0.8, 0.82, 0.85, 0.9, 0.95)
PROJECTION_LABEL = (
    "PROJECTION (cost model, not a measurement): speedup of StD over dense decoding that step costs measured here "
    "WOULD give at the assumed acceptance rates; random weights say nothing about acceptance"
)
PROJECTION_FORMULA = (
    "E = (1 - a^(g+1)) / (1 - a) tokens per cycle; speedup(a, g) = E * dense_step / (g * draft_step + verify(g)); "
    "best g per a among the measured gammas"
)
TIMING = (
    "wall clock around each call with device synchronization before and after; prefill_s: call -> first generated "
    "token on the host (transformers: the streamer's first put() of a generated token, which generate() makes after "
    "copying the token to the host; engine: its first on_tokens callback, after prefill synchronizes); decode_s: "
    "first token -> return; decode tokens/s = (new_tokens - 1) / decode_s for every method"
)
STEP_TIMING = (
    "Decoder.step on Slot states built over a cache filled with random KV (no prefill), fresh states before each "
    "step, median of iters after warmup_iters (StD steps of all gammas and K run round-robin); dense: DecodeStats.dense_s of Decoder(gamma=0).step(0) (the "
    "dense forward, token choice, host read-back); draft: DecodeStats.draft_s / gamma of Decoder.step(max gamma) "
    "(gamma sparse forwards, one synchronization); verify: DecodeStats.verify_s of Decoder.step(gamma) (the dense "
    "forward over gamma+1 tokens, acceptance, KV copy to the sparse view, host read-back)"
)
FLOOR = (
    "bytes a step must read / bandwidth: weights of the language model a step reads (decoder layers, final norm, "
    "lm_head; not the embedding table, of which it reads B rows, nor the vision tower) + the KV entries it attends "
    "to: dense B*(N+1), draft B*(K+text+1), verify B*(N+gamma+1) entries x kv_bytes_per_token"
)
GIB = 1 << 30


class BenchError(Exception):
    """A benchmark that cannot run as asked; str() is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


Progress = Callable[[str], None] | None


def _say(progress: Progress, message: str) -> None:
    if progress is not None:
        progress(message)


# --- arguments ------------------------------------------------------------------------------------------------------


def parse_int_list(text: str | Sequence[int] | None, name: str, minimum: int = 1) -> list[int] | None:
    """"16,64, 256" -> [16, 64, 256] (order kept, duplicates dropped); None stays None. BenchError if malformed."""
    if text is None:
        return None
    parts = [str(p).strip() for p in (text.split(",") if isinstance(text, str) else text)]
    try:
        values = [int(p) for p in parts if p]
    except ValueError:
        raise BenchError(f"{name} takes comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise BenchError(f"{name} is empty")
    low = [v for v in values if v < minimum]
    if low:
        raise BenchError(f"{name} values must be at least {minimum}, got {low[0]}")
    return list(dict.fromkeys(values))


def parse_gamma_list(text: str | None) -> list[int | str] | None:
    """"auto,1,4" -> ["auto", 1, 4]: StD gammas to bench, "auto" among them or not."""
    if text is None:
        return None
    parts = [p.strip().lower() for p in text.split(",")]
    fixed = parse_int_list(",".join(p for p in parts if p != AUTO), "--gamma") if any(p != AUTO and p for p in parts) else []
    return ([AUTO] if AUTO in parts else []) + fixed


@dataclass(frozen=True)
class BenchItem:
    video: str
    question: str


def default_videos() -> list[str]:
    """The videos of samples/ (in the current folder, else beside the package: a checkout)."""
    for folder in (Path("samples"), Path(__file__).resolve().parent.parent / "samples"):
        if folder.is_dir() and (found := _videos_in(str(folder))):
            return found
    raise BenchError("no videos given and no samples/ folder with videos here: pass VIDEO files or folders")


def load_items(videos: Sequence[str] | None, questions: str | Path | None = None) -> list[BenchItem]:
    """The (video, question) pairs to benchmark.

    VIDEOS: files and folders as `stdcli ask` takes them (default: samples/). --questions FILE.jsonl: one JSON object
    per line, {"question": ...} asked of every video, or {"question": ..., "video": PATH} for that video only (a
    relative PATH is looked up beside the JSONL file first). Without a file every video gets DEFAULT_QUESTION.
    """
    try:
        paths = collect_videos(list(videos), iter(())) if videos else None
    except InputError as error:
        raise BenchError(str(error)) from None
    if questions is None:
        return [BenchItem(v, DEFAULT_QUESTION) for v in (paths or default_videos())]
    general, paired = _read_questions(Path(questions))
    items = [BenchItem(video, q) for q in general for video in (paths or default_videos())] if general else []
    items += [BenchItem(video, q) for video, q in paired]
    if not items:
        raise BenchError(f"{questions}: no questions")
    return items


def _read_questions(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise BenchError(f"cannot read --questions {path}: {error.strerror or error}") from None
    general, paired = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise BenchError(f"{path}:{number}: not a JSON object") from None
        question = entry.get("question") if isinstance(entry, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise BenchError(f'{path}:{number}: needs a non-empty "question"')
        video = entry.get("video")
        if video is None:
            general.append(question)
            continue
        beside = path.parent / str(video)
        video = str(beside) if not Path(video).is_absolute() and beside.exists() else str(video)
        if not Path(video).is_file():
            raise BenchError(f"{path}:{number}: no such video {video}")
        paired.append((video, question))
    return general, paired


# --- measuring ------------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as file:  # "5": reset the peak resident set size (Linux >= 4.0)
            file.write("5")
    except OSError:
        return False
    return True


class MemoryMeter:
    """Peak memory of one run: CUDA allocator peak on a GPU, peak resident set size on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated, reset before each run; delta = peak - allocated at start"
        elif _reset_peak_rss() and _status_kib("VmHWM") is not None:
            self.method = (
                "peak RSS of the process: VmHWM of /proc/self/status, reset through /proc/self/clear_refs before each "
                "run; delta = peak - RSS at start"
            )
            self._hwm = True
        else:
            self.method = (
                "peak RSS: ru_maxrss (process lifetime high-water mark, not reset per run); delta = peak - RSS at start"
            )
            self._hwm = False
        self._start = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return
        if self._hwm:
            _reset_peak_rss()
        self._start = _status_kib("VmRSS") or 0

    def stop(self) -> tuple[int | None, int | None]:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._hwm:
            peak = _status_kib("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return peak, (max(peak - self._start, 0) if peak is not None else None)


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
    result = generate(
        lm.model, inputs, options, eos=lm.eos_token_ids, visual_ids=lm.visual_token_ids, on_tokens=on_tokens
    )
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
    except Exception:  # noqa: BLE001 - an optional figure: a model whose entry point differs just has none
        return None
    return time.perf_counter() - started


# --- benchmark of a loaded model ------------------------------------------------------------------------------------


@dataclass
class Prepared:
    item: BenchItem
    inputs: dict
    info: dict[str, Any]


def _prepare(lm, item: BenchItem, frames: int | None, sampled_cache: dict) -> Prepared:
    key = (item.video, frames)
    started = time.perf_counter()
    if key not in sampled_cache:
        arguments = sampling_arguments(frame_defaults(lm.family), FrameOptions(frames=frames))
        sampled_cache[key] = (sample_frames(item.video, **arguments), time.perf_counter() - started)
    sampled, load_video_s = sampled_cache[key]
    started = time.perf_counter()
    inputs = build_inputs(lm, sampled, item.question)
    processor_s = time.perf_counter() - started
    prompt_tokens, visual_tokens = prompt_layout(inputs, lm.visual_token_ids)
    info = {
        "frames": frames,
        "video": item.video,
        "question": item.question,
        "sampled_frames": len(sampled.frames),
        "prompt_tokens": prompt_tokens,
        "visual_tokens": visual_tokens,
        "load_video_s": _round(load_video_s),
        "processor_s": _round(processor_s),
        "vision_encoder_s": None,
    }
    return Prepared(item, inputs, info)


def _std_options(max_new_tokens: int, k: int, gamma: int) -> DecodeOptions:
    return DecodeOptions(max_new_tokens=max_new_tokens, k=k, gamma=gamma)


def bench_model(
    lm,
    items: Sequence[BenchItem],
    *,
    ks: Sequence[int] = (DEFAULT_K,),
    gammas: Sequence[int | str] = (DEFAULT_GAMMA,),
    frames: Sequence[int | None] = (None,),
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    repeat: int = 1,
    warmup_new_tokens: int = WARMUP_NEW_TOKENS,
    progress: Progress = None,
) -> dict[str, Any]:
    """Decode every item with transformers generate, our dense path and StD (every K x gamma), per frame count.

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
    _check_frames(lm, frames)
    env = environment(lm.device)
    meter = MemoryMeter(lm.device)
    std_configs = [(k, g) for k in ks for g in gammas]
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
            except Exception as error:  # noqa: BLE001 - an unreadable video is skipped and reported, the rest run
                skipped.append({"video": item.video, "question": item.question, "frames": f, "error": _one_line(error)})
                _say(progress, f"skipped {item.video} ({label}): {_one_line(error)}")
        if not prepared:
            continue
        _say(progress, f"{label}: warm-up")
        first = prepared[0].inputs
        warm = min(max_new_tokens, warmup_new_tokens)
        run_generate(lm, first, warm, meter)
        run_engine(lm, first, DecodeOptions(max_new_tokens=warm, gamma=0), meter)
        for k, g in std_configs:
            run_engine(lm, first, _std_options(warm, k, g), meter)
        for p in prepared:
            p.info["vision_encoder_s"] = _round(time_vision_encoder(lm, p.inputs))
            inputs_out.append(p.info)
        methods: list[Any] = ["generate", "dense", *std_configs]
        runs: dict[Any, dict[tuple[int, int], Run]] = {m: {} for m in methods}
        for r in range(repeat):
            for i, p in enumerate(prepared):
                _say(progress, f"{label}: input {i + 1}/{len(prepared)}, round {r + 1}/{repeat}")
                shift = (i + r) % len(methods)
                for method in methods[shift:] + methods[:shift]:
                    if method == "generate":
                        run = run_generate(lm, p.inputs, max_new_tokens, meter)
                    elif method == "dense":
                        run = run_engine(lm, p.inputs, DecodeOptions(max_new_tokens=max_new_tokens, gamma=0), meter)
                    else:
                        run = run_engine(lm, p.inputs, _std_options(max_new_tokens, *method), meter)
                    runs[method][(i, r)] = run
        for k, g in std_configs:
            configs_out.append(_summarize(lm, f, k, g, prepared, runs["generate"], runs["dense"], runs[(k, g)]))
    return {
        "schema": SCHEMA,
        "kind": "model",
        "environment": env,
        "model": _model_info(lm),
        "settings": {
            "k": list(ks),
            "gamma": list(gammas),
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


def _check_frames(lm, frames: Iterable[int | None]) -> None:
    multiple = frame_defaults(lm.family).multiple_of
    odd = [f for f in frames if f is not None and f % multiple]
    if odd:
        raise BenchError(f"--frames values must be multiples of {multiple} for {lm.family} models, got {odd[0]}")


def _model_info(lm) -> dict[str, Any]:
    return {
        "name": lm.name,
        "family": lm.family,
        "location": lm.location,
        "dtype": str(lm.dtype).removeprefix("torch."),
        "device": str(lm.device),
    }


def _method_summary(runs: list[Run]) -> dict[str, Any]:
    n = len(runs)
    decoded = sum(r.decoded_tokens for r in runs)
    decode_s = sum(r.decode_s for r in runs)
    peaks = [r.peak_memory_bytes for r in runs if r.peak_memory_bytes is not None]
    deltas = [r.peak_memory_delta_bytes for r in runs if r.peak_memory_delta_bytes is not None]
    return {
        "runs": n,
        "prefill_s": _round(sum(r.prefill_s for r in runs) / n),
        "decode_s": _round(decode_s / n),
        "total_s": _round(sum(r.prefill_s + r.decode_s for r in runs) / n),
        "new_tokens": _round(sum(r.new_tokens for r in runs) / n),
        "decoded_tokens": decoded,
        "decode_tokens_per_s": _round(decoded / decode_s) if decode_s > 0 and decoded else None,
        "peak_memory_bytes": max(peaks) if peaks else None,
        "peak_memory_delta_bytes": max(deltas) if deltas else None,
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return _round(numerator / denominator) if numerator and denominator else None


def _e2e_per_token(runs: list[Run]) -> float | None:
    tokens = sum(r.new_tokens for r in runs)
    return sum(r.prefill_s + r.decode_s for r in runs) / tokens if tokens else None


def _summarize(lm, frames, k, gamma, prepared: list[Prepared], gen: dict, dense: dict, std: dict) -> dict[str, Any]:
    keys = sorted(std)
    gen_runs, dense_runs, std_runs = [gen[x] for x in keys], [dense[x] for x in keys], [std[x] for x in keys]
    g, d, s = _method_summary(gen_runs), _method_summary(dense_runs), _method_summary(std_runs)
    s.update(
        draft_s=_round(sum(r.stats.draft_s for r in std_runs) / len(std_runs)),
        verify_s=_round(sum(r.stats.verify_s for r in std_runs) / len(std_runs)),
        **{key: sum(getattr(r.stats, key) for r in std_runs) for key in ("dense_steps", "cycles", "drafted", "accepted")},
        gammas=gamma_counts(r.stats.gammas for r in std_runs),
    )
    s["dense_share"] = _ratio(s["dense_steps"], sum(r.decoded_tokens for r in std_runs))
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
    mean = lambda values: _round(sum(values) / len(values)) if values else None  # noqa: E731
    return {
        "frames": frames,
        "k": k,
        "gamma": gamma,
        "inputs": len(prepared),
        "runs": len(keys),
        "prompt_tokens": mean([p.info["prompt_tokens"] for p in prepared]),
        "visual_tokens": mean([p.info["visual_tokens"] for p in prepared]),
        "kept_tokens": mean([r.stats.kept_tokens for r in std_runs]),
        "generate": g,
        "dense": d,
        "std": s,
        "decode_speedup_vs_generate": _ratio(s["decode_tokens_per_s"], g["decode_tokens_per_s"]),
        "decode_speedup_vs_dense": _ratio(s["decode_tokens_per_s"], d["decode_tokens_per_s"]),
        "e2e_speedup_vs_generate": _ratio(_e2e_per_token(gen_runs), _e2e_per_token(std_runs)),
        "e2e_speedup_vs_dense": _ratio(_e2e_per_token(dense_runs), _e2e_per_token(std_runs)),
        "acceptance_rate": _round(s["accepted"] / s["drafted"]) if s["drafted"] else None,
        "mean_accepted_length": _round(committed / s["cycles"]) if s["cycles"] else None,
        "identical_to_dense": sum(std[x].tokens == dense[x].tokens for x in keys),
        "identical_to_generate": sum(std[x].tokens == gen[x].tokens for x in keys),
        "dense_identical_to_generate": sum(dense[x].tokens == gen[x].tokens for x in keys),
        "total": len(keys),
        "per_input": per_input,
    }


# --- batched folder runs -------------------------------------------------------------------------------------------


BATCH_TIMING = (
    "wall clock of one whole pass over the inputs (videos read, prompts built, prefill, decoding), device "
    "synchronized before and after, summed over the timed rounds; answers_per_min = answers / seconds; "
    "decoded_tokens_per_s = new tokens after each answer's first / seconds"
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


def _generate_one_by_one(lm, videos: Sequence[str], options: AskOptions, meter: MemoryMeter) -> list[dict]:
    """Records of transformers generate, greedy, one video after another, on the frames and prompt ask builds."""
    records = []
    for video in videos:
        item = prepare(lm, video, options)
        if isinstance(item, dict):  # the video could not be read: its error record
            records.append(item)
            continue
        run = run_generate(lm, item.inputs, options.decode.max_new_tokens, meter)
        records.append({"video": video, "question": options.question, "answer": decode_answer(lm.tokenizer, run.tokens),
                        "new_tokens": run.new_tokens, "error": None})
    return records


def _timed_pass(lm, groups: dict[str, list[str]], config: BatchConfig, options: AskOptions,
                meter: MemoryMeter) -> tuple[float, dict[tuple[str, str], dict]]:
    """Seconds of one pass of `config` over every input, and its records by (video, question)."""
    records: list[dict] = []
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
    return time.perf_counter() - started, {(r["video"], r["question"]): r for r in records}


def _drafted(record: dict) -> int:
    """Tokens drafted for one answer: every StD cycle drafts its gamma ("0": plain dense steps draft none)."""
    return sum(int(g) * n for g, n in (record["gammas"] or {}).items())


def _same_answer(record: dict, reference: dict) -> bool:
    return (record["error"] is None and reference["error"] is None
            and (record["answer"], record["new_tokens"]) == (reference["answer"], reference["new_tokens"]))


def _batch_summary(config: BatchConfig, passes: list[tuple[float, dict]], generate: list[tuple[float, dict]],
                   keys: list[tuple[str, str]]) -> dict[str, Any]:
    """One configuration over its timed passes; `generate`: the passes of transformers generate, round by round."""
    seconds = sum(s for s, _ in passes)
    per_s = lambda count: _round(count / seconds) if seconds > 0 else None  # noqa: E731
    runs = [(r, records[key], generate[r][1][key]) for r, (_, records) in enumerate(passes) for key in keys]
    answered = [record for _, record, _ in runs if record["error"] is None]
    std = [record for record in answered if record.get("gammas") is not None]
    drafted = sum(_drafted(record) for record in std)
    accepted = sum(round((record["acceptance_rate"] or 0) * _drafted(record)) for record in std)
    decoded = sum(max(record["new_tokens"] - 1, 0) for record in answered)
    return {
        "method": config.method,
        "gamma": config.gamma,
        "batch_size": config.batch_size,
        "runs": len(runs),
        "answers": len(answered),
        "failed": len(runs) - len(answered),
        "seconds": _round(seconds),
        "answers_per_min": per_s(60 * len(answered)),
        "decoded_tokens": decoded,
        "decoded_tokens_per_s": per_s(decoded),
        "drafted": drafted if std else None,
        "accepted": accepted if std else None,
        "acceptance_rate": _round(accepted / drafted) if drafted else None,
        "gammas": gamma_counts(record["gammas"] for record in std) if std else None,
        "identical_to_generate": sum(_same_answer(record, reference) for _, record, reference in runs),
        "total": len(runs),
        "mismatches": [
            {"round": r + 1, "video": record["video"], "question": record["question"], "answer": record["answer"],
             "generate_answer": reference["answer"], "error": record["error"]}
            for r, record, reference in runs if not _same_answer(record, reference)
        ],
    }


def _with_speedups(summaries: list[dict]) -> list[dict]:
    """Each configuration's answers per minute over generate's, and (StD) over our dense path's at the same batch
    size; null where the configuration is that baseline."""
    generate = next(s["answers_per_min"] for s in summaries if s["method"] == "generate")
    dense = {s["batch_size"]: s["answers_per_min"] for s in summaries if s["method"] == "dense"}
    return [
        {
            **s,
            "speedup_vs_generate": None if s["method"] == "generate" else _ratio(s["answers_per_min"], generate),
            "speedup_vs_dense": _ratio(s["answers_per_min"], dense[s["batch_size"]]) if s["method"] == "std" else None,
        }
        for s in summaries
    ]


def bench_batches(
    lm,
    items: Sequence[BenchItem],
    *,
    batch_sizes: Sequence[int] = (1, 4, 8),
    gammas: Sequence[int | str] = (DEFAULT_GAMMA,),
    k: int = DEFAULT_K,
    frames: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    rounds: int = 1,
    progress: Progress = None,
) -> dict[str, Any]:
    """Answers per minute of whole passes over the inputs, as `stdcli ask --batch-size B` runs a folder:
    transformers generate one input at a time, then our engine densely and with StD (every gamma) at every B.

    One warm-up pass of every configuration, then `rounds` timed passes of each, the configurations in reversed
    order from one round to the next. Inputs that generate cannot answer in the warm-up (an unreadable video) are
    left out of the timed passes and listed in "skipped". Every answer is compared with generate's (BATCH_IDENTICAL);
    every one that differs is listed in its configuration's "mismatches".
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
    _check_frames(lm, [frames])
    env = environment(lm.device)
    meter = MemoryMeter(lm.device)
    options = AskOptions(DEFAULT_QUESTION, frames=FrameOptions(frames=frames),
                         decode=DecodeOptions(max_new_tokens=max_new_tokens, k=k))
    configs = batch_configs(batch_sizes, gammas)
    groups = _by_question(items)
    passes: dict[BatchConfig, list[tuple[float, dict]]] = {c: [] for c in configs}
    skipped: list[dict] = []
    for r in range(rounds + 1):  # round 0 warms up
        for config in configs if r % 2 else configs[::-1]:
            _say(progress, f"{f'round {r}/{rounds}' if r else 'warm-up'}: {config.label}, batch {config.batch_size}")
            seconds, records = _timed_pass(lm, groups, config, options, meter)
            if r:
                passes[config].append((seconds, records))
            elif config.method == "generate":
                skipped = [{"video": v, "question": q, "error": rec["error"]["message"]}
                           for (v, q), rec in records.items() if rec["error"] is not None]
        if r == 0 and skipped:
            unreadable = {(s["video"], s["question"]) for s in skipped}
            items = [i for i in items if (i.video, i.question) not in unreadable]
            groups = _by_question(items)
    keys = [(i.video, i.question) for i in items]
    generate = passes[configs[0]]
    summaries = _with_speedups([_batch_summary(c, passes[c], generate, keys) for c in configs])
    first = generate[0][1]
    return {
        "schema": SCHEMA,
        "kind": "batch",
        "environment": env,
        "model": _model_info(lm),
        "settings": {
            "batch_sizes": list(batch_sizes),
            "gamma": list(gammas),
            "k": k,
            "frames": frames,
            "max_new_tokens": max_new_tokens,
            "rounds": rounds,
            "questions": len(groups),
            "timing": BATCH_TIMING,
            "identical": BATCH_IDENTICAL,
        },
        "inputs": [{"video": v, "question": q, "generate_answer": first[(v, q)]["answer"],
                    "generate_new_tokens": first[(v, q)]["new_tokens"]} for v, q in keys],
        "configs": summaries,
        "skipped": skipped,
    }


# --- random-init profile --------------------------------------------------------------------------------------------


def free_memory_bytes(device: torch.device) -> int:
    """Memory that can still be allocated on the device (CUDA: free per the driver; CPU: MemAvailable)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62  # unknown: do not refuse


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _median_time(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int = WARMUP_ITERS) -> float:
    times = []
    for i in range(warmup + iters):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_bandwidth(device: torch.device, nbytes: int | None = None, iters: int = 10) -> dict[str, Any]:
    """Device memory bandwidth, measured two ways on one float32 buffer of `nbytes` (default: 1 GiB on a GPU,
    capped at a quarter of free memory; 256 MiB on a CPU):

    - copy: dst.copy_(src), counted as 2 x nbytes moved (read + write), as STREAM's copy does;
    - reduction: src.sum(), nbytes read.
    The floors use the higher of the two, so a floor is never above what the device can do (the stricter floor).
    """
    if nbytes is None:
        nbytes = min(GIB, free_memory_bytes(device) // 8) if device.type == "cuda" else 256 << 20
    count = max(nbytes // 4, 1 << 16)
    src = torch.empty(count, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy_s = _median_time(lambda: dst.copy_(src), device, iters)
    sum_s = _median_time(lambda: src.sum(), device, iters)
    real = count * 4
    del src, dst
    _release(device)
    copy_bw, sum_bw = 2 * real / copy_s, real / sum_s
    used = "copy" if copy_bw >= sum_bw else "reduction"
    return {
        "copy_bytes_per_s": round(copy_bw),
        "reduction_bytes_per_s": round(sum_bw),
        "bytes_per_s": round(max(copy_bw, sum_bw)),
        "used": used,
        "buffer_bytes": real,
        "method": (
            "float32 buffer; copy: dst.copy_(src), 2 x bytes / time; reduction: src.sum(), bytes / time; median of "
            f"{iters} after warm-up, synchronized; floors use the higher ({used})"
        ),
    }


def resolve_family(alias: str, scale: str | None) -> tuple[str, str]:
    """(family, scale) of a --random-init model: an alias of the registry (qwen2-vl, qwen2-vl-2b, qwen2.5-vl,
    llava-ov) or a family name; scale defaults to the alias's (7b; 2b for qwen2-vl-2b)."""
    from .build import FAMILIES, SHAPES

    if alias in REGISTRY and REGISTRY[alias].repo_id is not None:
        family = REGISTRY[alias].family
        default = "2b" if alias.endswith("-2b") else "7b"
    elif alias in FAMILIES:
        family, default = alias, "7b"
    else:
        names = [a for a, spec in REGISTRY.items() if spec.repo_id is not None]
        raise BenchError(f"--random-init builds a known architecture: --model {' | '.join(names)} (got {alias!r})")
    scale = scale or default
    if (family, scale) not in SHAPES:
        scales = [s for f, s in SHAPES if f == family]
        raise BenchError(f"no {scale!r} scale for {family}; available: {', '.join(scales)}")
    return family, scale


@dataclass
class _Shape:
    layers: int
    kv_heads: int
    q_heads: int
    head_dim: int
    elem: int
    vocab: int

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * self.elem


def _weight_bytes(model) -> tuple[int, int, int]:
    """(all parameters, bytes of all parameters, bytes a decode step reads: language model without its embedding
    table, plus the lm_head; a tied lm_head is counted once)."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    total_bytes = sum(p.numel() * p.element_size() for p in params)
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    language = getattr(model.model, "language_model", model.model)
    read = {id(p): p for p in language.parameters() if p is not embedding}
    read[id(head)] = head
    return total, total_bytes, sum(p.numel() * p.element_size() for p in read.values())


def _point_memory(shape: _Shape, batch: int, context: int, kept: int, gmax: int) -> int:
    """Bytes one profile point allocates: the engine's dense and sparse caches, plus working memory of the eager
    verify pass, counted as if SDPA fell back to its math kernel (K and V expanded to the query heads, float32
    scores and probabilities, contiguous copies of the cache view), plus the logits and 512 MiB of margin."""
    e, width = shape.elem, gmax + 1
    keys = context + width
    per_entry = 2 * shape.layers * batch * shape.kv_heads * shape.head_dim * e
    caches = per_entry * (keys + kept + width)
    transient = (
        2 * batch * shape.q_heads * keys * shape.head_dim * e
        + 2 * batch * shape.kv_heads * keys * shape.head_dim * e
        + 2 * batch * shape.q_heads * width * keys * 4
        + 4 * batch * width * shape.vocab * 4
    )
    return caches + transient + (512 << 20)


def _fill_random(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.numel():
            t.normal_()


def _fresh_slots(decoder: Decoder, dense_len: int, sparse_len: int, tokens: list[int]) -> None:
    for b, token in enumerate(tokens):
        decoder.slots[b] = Slot(
            dense_len=dense_len, sparse_len=sparse_len, rope_delta=(0,) * (3 if decoder.mrope else 1), last_token=token, max_new_tokens=1 << 30
        )


def _time_steps(decoder: Decoder, plan: Sequence[tuple[int, int]], dense_len: int, tokens: list[int], iters: int,
                warmup: int) -> list[tuple[float, float]]:
    """Medians of (draft_s, verify_s or dense_s), by the engine's own clock, of Decoder.step(gamma) for each
    (gamma, sparse_len) of `plan`, from fresh slots each time. The plan runs round-robin, warmup + iters rounds, so
    a slow stretch of the machine weighs on every entry alike."""
    samples: list[list[tuple[float, float]]] = [[] for _ in plan]
    for i in range(warmup + iters):
        for j, (gamma, sparse_len) in enumerate(plan):
            _fresh_slots(decoder, dense_len, sparse_len, tokens)
            synchronize(decoder.device)
            decoder.step(gamma)
            synchronize(decoder.device)
            stats = decoder.slots[0].stats
            if i >= warmup:
                samples[j].append((stats.draft_s, stats.verify_s if gamma else stats.dense_s))
    return [(statistics.median(d for d, _ in s), statistics.median(v for _, v in s)) for s in samples]


def _step_entry(seconds: float, nbytes: int, bandwidth: float) -> dict[str, Any]:
    floor = nbytes / bandwidth
    return {
        "s": _round(seconds, 7),
        "floor_s": _round(floor, 7),
        "bytes": nbytes,
        "over_floor": _round(seconds / floor),
    }


def _profile_point(model, shape: _Shape, weights_read: int, bandwidth: float, context: int, batch: int,
                   ks: Sequence[int], gammas: Sequence[int], text_tokens: int, iters: int, warmup: int,
                   seed: int) -> dict[str, Any]:
    device = model.get_input_embeddings().weight.device
    kv = shape.kv_bytes_per_token
    kept = {k: min(k, context - text_tokens) + text_tokens for k in ks}
    gmax = max(gammas)
    point: dict[str, Any] = {"context": context, "batch": batch, "skipped": None}
    need = _point_memory(shape, batch, context, max(kept.values()), gmax)
    free = free_memory_bytes(device)
    point.update(memory_needed_bytes=need, memory_free_bytes=free)
    if need > free:
        point["skipped"] = f"needs ~{need / GIB:.1f} GiB for the caches and working memory, {free / GIB:.1f} GiB free"
        point.update(dense_step=None, draft_steps=[], verify_steps=[])
        return point
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, shape.vocab, (batch,), generator=generator).tolist()
    torch.manual_seed(seed)
    # dense: the --dense path's own decoder (gamma = 0, no sparse view)
    with Decoder(model, DecodeOptions(gamma=0), batch=batch, max_len=context + 1, sparse_cap=1) as decoder:
        _fill_random(decoder.cache.dense_k[..., :context, :], decoder.cache.dense_v[..., :context, :])
        ((_, dense_s),) = _time_steps(decoder, [(0, 0)], context, tokens, iters, warmup)
    del decoder
    _release(device)
    point["dense_step"] = _step_entry(dense_s, weights_read + batch * (context + 1) * kv, bandwidth)
    # StD: one decoder whose sparse view holds the largest K; smaller K are shorter views of it
    options = DecodeOptions(gamma=gmax, k=max(ks))
    cap = max(kept.values()) + gmax + 1
    drafts, verifies = [], []
    with Decoder(model, options, batch=batch, max_len=context + gmax + 1, sparse_cap=cap) as decoder:
        c = decoder.cache
        _fill_random(c.dense_k[..., :context, :], c.dense_v[..., :context, :], c.sparse_k, c.sparse_v)
        # every gamma at the first K (verify costs do not depend on K), the largest gamma at the other K
        plan = [(k, g) for index, k in enumerate(ks) for g in (gammas if index == 0 else [gmax])]
        timed = _time_steps(decoder, [(g, kept[k]) for k, g in plan], context, tokens, iters, warmup)
        for (k, g), (draft_s, verify_s) in zip(plan, timed):
            if g == gmax:
                entry = _step_entry(draft_s / g, weights_read + batch * (kept[k] + 1) * kv, bandwidth)
                drafts.append({"k": k, "kept_tokens": kept[k], **entry})
            if k == ks[0]:
                entry = _step_entry(verify_s, weights_read + batch * (context + g + 1) * kv, bandwidth)
                entry["over_dense_step"] = _round(verify_s / dense_s)
                verifies.append({"gamma": g, "tokens": g + 1, **entry})
    del decoder
    _release(device)
    point["draft_steps"] = drafts
    point["verify_steps"] = verifies
    return point


DECODE_LABEL = (
    "MEASURED decoding of the random-weight model (tokens/s of whole decode loops after one warm-up round, device "
    "synchronized): dense vs fixed gammas vs gamma auto. Its acceptance is a random model's on a synthetic prompt, "
    "not a prediction for real weights; what it shows is whether auto finds the best gamma (or dense) at these step "
    "costs."
)


def synthetic_prompt(model, context: int, text_tokens: int, seed: int) -> dict:
    """A prompt of `context` tokens: half the text tokens, then a "video" of the model's video placeholder tokens,
    then the other half (the question). Without pixel values the placeholders are embedded as ordinary tokens, so
    the prompt runs through the engine's own prefill, ranking and sparse view, as a real video prompt does."""
    device = model.get_input_embeddings().weight.device
    generator = torch.Generator().manual_seed(seed)
    special = min(visual_token_ids(model) + eos_token_ids(model))  # ordinary text ids lie below the special ones
    text = torch.randint(0, special, (text_tokens,), generator=generator)
    video = torch.full((context - text_tokens,), visual_token_ids(model)[-1])
    half = text_tokens // 2
    ids = torch.cat([text[:half], video, text[half:]])[None].to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _timed_decode(decoder: Decoder, prefilled: list[Slot], policy: GammaPolicy, new_tokens: int) -> tuple[float, list[Slot]]:
    """Seconds to decode `new_tokens` per slot from the prefilled states (the caches' prompt entries are never
    written by decoding, so every run starts from the same prompt), and the final slot states."""
    for b, p in enumerate(prefilled):
        decoder.slots[b] = Slot(dense_len=p.dense_len, sparse_len=p.sparse_len, rope_delta=p.rope_delta,
                                last_token=p.last_token, max_new_tokens=new_tokens, tokens=list(p.tokens))
    if not policy.wants_sparse_view():  # as in a real run: auto may decide no view (then only dense steps)
        for slot in decoder.slots:
            slot.has_view = False
    synchronize(decoder.device)
    started = time.perf_counter()
    while any(not s.done for s in decoder.slots):
        policy_cycle(decoder, policy)
    synchronize(decoder.device)
    elapsed = time.perf_counter() - started
    finished = [decoder.release(b) for b in range(len(prefilled))]
    for s in finished:
        policy.observe_answer(s.stats)
    return elapsed, finished


def _decode_point(model, context: int, batch: int, k: int, gammas: Sequence[int], text_tokens: int,
                  new_tokens: int, rounds: int, seed: int) -> dict[str, Any]:
    """Dense, every fixed gamma and auto decoding `new_tokens` per sequence for `batch` synthetic prompts of
    `context` tokens, alternating, after a warm-up round (which captures the CUDA graphs and lets auto learn)."""
    options = DecodeOptions(max_new_tokens=new_tokens, k=k, gamma=max(*gammas, MAX_AUTO_GAMMA))  # room for any
    max_len, sparse_cap = cache_capacity(context, context - text_tokens, options)
    methods: list[int | str] = [0, *gammas, AUTO]
    runs: dict[Any, list[tuple[float, list[Slot]]]] = {m: [] for m in methods}
    with Decoder(model, options, batch=batch, max_len=max_len, sparse_cap=sparse_cap, eos=()) as decoder:
        for b in range(batch):
            decoder.prefill(b, synthetic_prompt(model, context, text_tokens, seed + b))
        prefilled = [decoder.release(b) for b in range(batch)]
        key = memory_key(model, context, batch)
        for r in range(rounds + 1):  # round 0 warms up
            order = methods[r % len(methods):] + methods[: r % len(methods)]
            for method in order:
                policy = GammaPolicy.start(method, options.calibration_steps, key)
                result = _timed_decode(decoder, prefilled, policy, new_tokens)
                if method == AUTO:
                    policy.remember(key)
                if r:
                    runs[method].append(result)
    del decoder
    dense_tokens = [s.tokens for _, slots in runs[0] for s in slots]
    configs = []
    for method in methods:
        slots = [s for _, run in runs[method] for s in run]
        seconds = sum(t for t, _ in runs[method])
        decoded = sum(s.stats.decoded_tokens for s in slots)
        drafted, accepted = sum(s.stats.drafted for s in slots), sum(s.stats.accepted for s in slots)
        configs.append({
            "gamma": method,
            "seconds": _round(seconds),
            "decoded_tokens": decoded,
            "tokens_per_s": _round(decoded / seconds) if seconds else None,
            # named apart from a model's acceptance rate: this is a random model's, on a synthetic prompt
            "random_model_acceptance": _round(accepted / drafted) if drafted else None,
            "dense_share": _ratio(sum(s.stats.dense_steps for s in slots), decoded),
            "gammas": gamma_counts(s.stats.gammas for s in slots),
            "identical_to_dense": sum(s.tokens == d for s, d in zip(slots, dense_tokens)),
            "total": len(slots),
        })
    rate = {c["gamma"]: c["tokens_per_s"] for c in configs}
    best = max(gammas, key=lambda g: rate[g])
    return {
        "context": context,
        "batch": batch,
        "k": k,
        "new_tokens": new_tokens,
        "rounds": rounds,
        "configs": configs,
        "best_fixed_gamma": best,
        "auto_vs_best_fixed": _ratio(rate[AUTO], rate[best]),
        "auto_vs_dense": _ratio(rate[AUTO], rate[0]),
        "best_fixed_vs_dense": _ratio(rate[best], rate[0]),
    }


def project(dense_s: float, draft_s: float, verify_s: dict[int, float], acceptance: float) -> tuple[int, float, dict]:
    """(best gamma, its projected speedup, speedup of every gamma) by the cost model."""
    by_gamma = {g: expected_tokens(acceptance, g) * dense_s / (g * draft_s + v) for g, v in sorted(verify_s.items())}
    best = max(by_gamma, key=by_gamma.get)
    return best, by_gamma[best], by_gamma


def projection(points: list[dict], acceptance: Sequence[float] = ACCEPTANCE_RATES) -> dict[str, Any]:
    rows = []
    for point in points:
        if point["skipped"]:
            continue
        for draft in point["draft_steps"]:
            for basis, key in (("measured", "s"), ("floor", "floor_s")):
                verify = {v["gamma"]: v[key] for v in point["verify_steps"]}
                for a in acceptance:
                    best, speedup, by_gamma = project(point["dense_step"][key], draft[key], verify, a)
                    rows.append(
                        {
                            "context": point["context"],
                            "batch": point["batch"],
                            "k": draft["k"],
                            "basis": basis,
                            "acceptance": a,
                            "best_gamma": best,
                            "speedup": _round(speedup),
                            "by_gamma": {str(g): _round(s) for g, s in by_gamma.items()},
                        }
                    )
    return {"label": PROJECTION_LABEL, "formula": PROJECTION_FORMULA, "acceptance": list(acceptance), "rows": rows}


def profile_random_init(
    alias: str = "qwen2-vl",
    *,
    scale: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    batches: Sequence[int] = DEFAULT_BATCHES,
    ks: Sequence[int] = (DEFAULT_K,),
    gammas: Sequence[int] = PROFILE_GAMMAS,
    iters: int = DEFAULT_ITERS,
    warmup: int = WARMUP_ITERS,
    text_tokens: int = DEFAULT_TEXT_TOKENS,
    acceptance: Sequence[float] = ACCEPTANCE_RATES,
    bandwidth_bytes: int | None = None,
    seed: int = 0,
    decode_tokens: int = 0,
    decode_rounds: int = 2,
    progress: Progress = None,
) -> dict[str, Any]:
    """Step costs of the real architecture with random weights against their floors, and the projected speedup.
    With decode_tokens > 0, each point also decodes that many tokens per sequence densely, with every fixed gamma
    and with gamma auto, on synthetic prompts, and reports the measured speeds (DECODE_LABEL).

    Points that do not fit in the device's free memory (weights are checked before the model is built, each
    context x batch point before its caches are allocated) are skipped with a note, never attempted.
    """
    from .build import MODEL_CLASSES, build_random_model, make_config

    family, scale = resolve_family(alias, scale)
    if iters < 1 or not contexts or not batches or not ks or not gammas:
        raise BenchError("the profile needs at least one context, batch size, K, gamma and iteration")
    if min(gammas) < 1:
        raise BenchError("--gamma values must be at least 1")
    too_short = [n for n in contexts if n <= text_tokens]
    if too_short:
        raise BenchError(
            f"--context values must exceed the {text_tokens} text tokens of the prompt, got {too_short[0]}"
        )
    try:
        torch_device = pick_device(device)
        torch_dtype = pick_dtype(dtype, torch_device)
    except ModelLoadError as error:
        raise BenchError(str(error)) from None
    env = environment(torch_device)
    config = make_config(family, scale)
    with torch.device("meta"):
        skeleton = MODEL_CLASSES[family]._from_config(config, dtype=torch_dtype)
    parameters, weight_bytes, weights_read = _weight_bytes(skeleton)
    del skeleton
    free = free_memory_bytes(torch_device)
    if weight_bytes + (1 << 30) > free:
        raise BenchError(
            f"{family} {scale} in {str(torch_dtype).removeprefix('torch.')}: {weight_bytes / GIB:.1f} GiB of weights "
            f"do not fit in the {free / GIB:.1f} GiB free on {torch_device}"
        )
    _say(progress, f"building {family} {scale} with random weights on {torch_device}")
    model = build_random_model(family, config, seed=seed, dtype=torch_dtype, device=str(torch_device))
    _say(progress, "measuring the memory bandwidth")
    bandwidth = measure_bandwidth(torch_device, bandwidth_bytes)
    layers, kv_heads, head_dim, _ = cache_dims(model)
    text = config.get_text_config()
    elem = torch.empty((), dtype=torch_dtype).element_size()
    shape = _Shape(layers, kv_heads, text.num_attention_heads, head_dim, elem, text.vocab_size)
    points = []
    for context in contexts:
        for batch in batches:
            _say(progress, f"context {context}, batch {batch}")
            point = _profile_point(model, shape, weights_read, bandwidth["bytes_per_s"], context, batch, list(ks),
                                   sorted(gammas), text_tokens, iters, warmup, seed)
            if decode_tokens and not point["skipped"]:
                _say(progress, f"context {context}, batch {batch}: decoding")
                point["decode"] = _decode_point(model, context, batch, ks[0], sorted(gammas), text_tokens,
                                                decode_tokens, decode_rounds, seed)
                _release(torch_device)
            points.append(point)
    del model
    _release(torch_device)
    return {
        "schema": SCHEMA,
        "kind": "random-init",
        "environment": env,
        "model": {
            "alias": alias,
            "family": family,
            "scale": scale,
            "dtype": str(torch_dtype).removeprefix("torch."),
            "device": str(torch_device),
            "parameters": parameters,
            "weight_bytes": weight_bytes,
            "weight_bytes_read_per_step": weights_read,
            "kv_bytes_per_token": shape.kv_bytes_per_token,
            "layers": layers,
            "kv_heads": kv_heads,
            "q_heads": shape.q_heads,
            "head_dim": head_dim,
            "vocab_size": shape.vocab,
        },
        "settings": {
            "contexts": list(contexts),
            "batches": list(batches),
            "k": list(ks),
            "gamma": sorted(gammas),
            "text_tokens": text_tokens,
            "iters": iters,
            "warmup_iters": warmup,
            "floor": FLOOR,
            "step_timing": STEP_TIMING,
        },
        "bandwidth": bandwidth,
        "points": points,
        "projection": projection(points, acceptance),
        **({"decode_label": DECODE_LABEL} if decode_tokens else {}),
    }


# --- output ---------------------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    from . import __version__

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        memory = torch.cuda.get_device_properties(device).total_memory
    else:
        name, memory = _cpu_name(), None
    return {
        "stdcli": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name,
        "device_memory_bytes": memory,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_json(report: dict, path: str | Path) -> None:
    """The report as JSON to `path` ("-": stdout)."""
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    Path(path).write_text(text, encoding="utf-8")


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(value, digits)


def _fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 20):,.0f}"


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
    for column in ("frames", "K", "γ", "prompt", "prefill s gen/dense/std", "tok/s gen", "tok/s dense", "tok/s StD",
                   "×gen", "×dense", "e2e ×gen", "e2e ×dense", "accept", "acc. len", "dense %", "identical", "peak MiB"):
        speed.add_column(column, justify="right")
    for c in report["configs"]:
        g, d, s = c["generate"], c["dense"], c["std"]
        peak = s["peak_memory_bytes"] if memory_gpu else s["peak_memory_delta_bytes"]
        speed.add_row(
            "default" if c["frames"] is None else str(c["frames"]),
            str(c["k"]),
            str(c["gamma"]),
            _fmt(c["prompt_tokens"], ".0f"),
            f"{_fmt(g['prefill_s'])}/{_fmt(d['prefill_s'])}/{_fmt(s['prefill_s'])}",
            _fmt(g["decode_tokens_per_s"], ".1f"),
            _fmt(d["decode_tokens_per_s"], ".1f"),
            _fmt(s["decode_tokens_per_s"], ".1f"),
            _fmt(c["decode_speedup_vs_generate"], ".2f", "×"),
            _fmt(c["decode_speedup_vs_dense"], ".2f", "×"),
            _fmt(c["e2e_speedup_vs_generate"], ".2f", "×"),
            _fmt(c["e2e_speedup_vs_dense"], ".2f", "×"),
            _fmt(c["acceptance_rate"], ".2f"),
            _fmt(c["mean_accepted_length"], ".2f"),
            _fmt(None if s["dense_share"] is None else 100 * s["dense_share"], ".0f"),
            f"{c['identical_to_dense']}/{c['total']}",
            _mib(peak),
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
            mean = lambda key: _mean([i[key] for i in infos])  # noqa: E731
            split.add_row(
                "default" if frames is None else str(frames), str(len(infos)), _fmt(mean("sampled_frames"), ".0f"),
                _fmt(mean("visual_tokens"), ".0f"), _fmt(mean("load_video_s"), ".3f"), _fmt(mean("processor_s"), ".3f"),
                _fmt(mean("vision_encoder_s"), ".3f"),
            )
        tables.append(split)
    return tables


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def profile_tables(report: dict) -> list:
    """Rich tables of a profile_random_init report: step costs against floors, then the labelled projection."""
    from rich.table import Table

    m, bw = report["model"], report["bandwidth"]
    steps = Table(
        title=f"step costs: {m['family']} {m['scale']} shape, random weights, {m['dtype']} on "
        f"{report['environment']['device_name'] or m['device']}; bandwidth {bw['bytes_per_s'] / 1e9:,.1f} GB/s "
        f"({bw['used']})",
        caption="floor = bytes the step must read (weights + KV it attends to) / measured bandwidth",
    )
    for column in ("context", "batch", "step", "ms", "floor ms", "× floor", "× dense step"):
        steps.add_column(column, justify="right")
    for p in report["points"]:
        where = (str(p["context"]), str(p["batch"]))
        if p["skipped"]:
            steps.add_row(*where, "skipped", "-", "-", "-", p["skipped"])
            continue
        d = p["dense_step"]
        steps.add_row(*where, "dense", _fmt(d["s"] * 1e3), _fmt(d["floor_s"] * 1e3), _fmt(d["over_floor"]), "1.00")
        for x in p["draft_steps"]:
            steps.add_row(*where, f"draft K={x['k']} ({x['kept_tokens']} kept)", _fmt(x["s"] * 1e3),
                          _fmt(x["floor_s"] * 1e3), _fmt(x["over_floor"]), _fmt(x["s"] / d["s"]))
        for x in p["verify_steps"]:
            steps.add_row(*where, f"verify γ={x['gamma']} ({x['tokens']} tok)", _fmt(x["s"] * 1e3),
                          _fmt(x["floor_s"] * 1e3), _fmt(x["over_floor"]), _fmt(x["over_dense_step"]))
    proj = report["projection"]
    table = Table(title=proj["label"], caption=proj["formula"])
    for column in ("context", "batch", "K", "step costs"):
        table.add_column(column, justify="right")
    for a in proj["acceptance"]:
        table.add_column(f"a={a:g}", justify="right")
    grouped: dict = {}
    for row in proj["rows"]:
        grouped.setdefault((row["context"], row["batch"], row["k"], row["basis"]), {})[row["acceptance"]] = row
    for (context, batch, k, basis), cells in grouped.items():
        table.add_row(
            str(context), str(batch), str(k), basis,
            *(
                f"{cells[a]['speedup']:.2f}× γ{cells[a]['best_gamma']}" if a in cells else "-"
                for a in proj["acceptance"]
            ),
        )
    return [steps, table, *_decode_table(report)]


def _decode_table(report: dict) -> list:
    from rich.table import Table

    points = [p for p in report["points"] if p.get("decode")]
    if not points:
        return []
    table = Table(title=report["decode_label"], caption="tok/s per gamma (0 = dense); identical: sequences equal to "
                  "the dense ones, token for token")
    for column in ("context", "batch", "tok/s by γ", "auto γ used", "accept", "auto ×best fixed", "auto ×dense",
                   "identical"):
        table.add_column(column, justify="right")
    for p in points:
        d = p["decode"]
        by = {c["gamma"]: c for c in d["configs"]}
        auto = by[AUTO]
        table.add_row(
            str(p["context"]), str(p["batch"]),
            " ".join(f"{g}:{c['tokens_per_s']:.0f}" for g, c in by.items()),
            " ".join(f"{g}×{n}" for g, n in auto["gammas"].items()),
            _fmt(auto["random_model_acceptance"]),
            f"{_fmt(d['auto_vs_best_fixed'])} (γ{d['best_fixed_gamma']})", _fmt(d["auto_vs_dense"]),
            ", ".join(f"{g}:{c['identical_to_dense']}/{c['total']}" for g, c in by.items() if g != 0),
        )
    return [table]


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
            _fmt(c["seconds"]), _fmt(c["answers_per_min"], ".1f"),
            _fmt(c["decoded_tokens_per_s"], ".1f"), _fmt(c["speedup_vs_generate"], ".2f", "×"),
            _fmt(c["speedup_vs_dense"], ".2f", "×"), _fmt(c["acceptance_rate"], ".2f"),
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
