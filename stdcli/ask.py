"""Answer a question about one video: sample frames, build the prompt, decode, make the record.

Usable without the CLI:

    from stdcli import load_model, answer_video, AskOptions
    lm = load_model("builtin")
    record = answer_video(lm, "samples/short_1.mp4", AskOptions(question="What happens?"))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .models import FrameDefaults, LoadedModel, build_inputs, frame_defaults
from .records import empty_record, error_record
from .std import DecodeOptions, DecodeStats, Generation, gamma_counts, generate
from .video import VIDEO_EXTENSIONS, sample_frames


@dataclass
class FrameOptions:
    """Frame sampling asked for on the command line; None means the model family's default."""

    fps: float | None = None
    frames: int | None = None  # exact count, exclusive with fps
    min_frames: int | None = None
    max_frames: int | None = None
    max_pixels: int | None = None


@dataclass
class AskOptions:
    question: str
    system: str | None = None
    frames: FrameOptions = field(default_factory=FrameOptions)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    compare: bool = False  # also decode densely and report the measured speedup

    @property
    def mode(self) -> str:
        return "dense" if self.decode.gamma == 0 else "std"


def sampling_arguments(defaults: FrameDefaults, options: FrameOptions) -> dict[str, Any]:
    """Keyword arguments of `sample_frames` for a model family and the user's overrides."""
    exact = options.frames if options.frames is not None else (None if options.fps is not None else defaults.num_frames)
    return {
        "fps": None if exact is not None else (options.fps if options.fps is not None else defaults.fps),
        "num_frames": exact,
        "min_frames": options.min_frames if options.min_frames is not None else defaults.min_frames,
        "max_frames": options.max_frames if options.max_frames is not None else defaults.max_frames,
        "multiple_of": defaults.multiple_of,
        "max_pixels": options.max_pixels if options.max_pixels is not None else defaults.max_pixels,
    }


class TextStream:
    """Token ids in, newly printable text out. What it prints, joined, is exactly `decode_answer` of all the tokens
    once `finish` has been called: leading whitespace is dropped, trailing whitespace and an incomplete UTF-8
    sequence are held back until more text follows them."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.printed = 0

    def push(self, tokens: Sequence[int]) -> str:
        self.tokens.extend(tokens)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).lstrip()
        if text.endswith("\ufffd"):
            return ""
        return self._emit(text.rstrip())

    def finish(self) -> str:
        """The rest of the answer (held back text that turned out to be final)."""
        return self._emit(decode_answer(self.tokenizer, self.tokens))

    def _emit(self, text: str) -> str:
        delta = text[self.printed :]
        self.printed = max(self.printed, len(text))
        return delta


def decode_answer(tokenizer, tokens: Sequence[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


def answer_video(
    lm: LoadedModel,
    video: str,
    options: AskOptions,
    on_text: Callable[[str, DecodeStats], None] | None = None,
) -> dict[str, Any]:
    """The record of one video (see records.py). Failures are reported in the record's `error`, not raised."""
    item = prepare(lm, video, options)
    if isinstance(item, dict):
        return item
    try:
        stream = TextStream(lm.tokenizer)
        callback = (lambda tokens, stats: on_text(stream.push(tokens), stats)) if on_text else None
        result = _decode(lm, item.inputs, options.decode, callback)
        if on_text and (rest := stream.finish()):
            on_text(rest, result.stats)
        compare = _compare(lm, item.inputs, options.decode, result) if options.compare and options.mode == "std" else None
    except STOP_THE_RUN:
        raise
    except Exception as error:  # one broken video must not stop a folder run: it is reported in its record
        return error_record(video, options.question, lm.name, options.mode, error)
    return answer_record(lm, item, options, result, compare)


# What stops the whole run, not just one video.
STOP_THE_RUN = (KeyboardInterrupt, SystemExit, BrokenPipeError)


@dataclass
class Prepared:
    """A video ready to decode: its sampled frames and the model inputs of the question about it."""

    video: str
    sampled: Any  # video.SampledVideo
    inputs: dict
    load_video_s: float
    started: float  # perf_counter when work on it began


def prepare(lm: LoadedModel, video: str, options: AskOptions) -> Prepared | dict[str, Any]:
    """Frames and prompt of one video, or its error record."""
    started = time.perf_counter()
    try:
        sampled = sample_frames(video, **sampling_arguments(frame_defaults(lm.family), options.frames))
        load_video_s = time.perf_counter() - started
        inputs = build_inputs(lm, sampled, options.question, options.system)
    except STOP_THE_RUN:
        raise
    except Exception as error:  # one broken video must not stop a folder run: it is reported in its record
        return error_record(video, options.question, lm.name, options.mode, error)
    return Prepared(video, sampled, inputs, load_video_s, started)


def answer_record(
    lm: LoadedModel, item: Prepared, options: AskOptions, result: Generation, compare: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The record of a video answered: `result` the decoding of `item`."""
    record = empty_record(item.video, options.question, lm.name, options.mode)
    stats = result.stats
    sampled = item.sampled
    record.update(
        answer=decode_answer(lm.tokenizer, result.tokens),
        frames=len(sampled.frames),
        visual_tokens=stats.visual_tokens,
        prompt_tokens=stats.prompt_tokens,
        new_tokens=stats.new_tokens,
        tokens_per_s=_round(stats.tokens_per_s),
        acceptance_rate=_round(stats.acceptance_rate),
        mean_accepted_length=_round(stats.mean_accepted_length),
        speedup_est=_round(stats.speedup_est),
        k=options.decode.k if options.mode == "std" else None,
        gamma=options.decode.gamma if options.mode == "std" else None,
        compare=compare,
        warnings=list(sampled.warnings),
        gammas=gamma_counts([stats.gammas]) if options.mode == "std" else None,
        dense_share=_round(stats.dense_share) if options.mode == "std" else None,
    )
    record["timings"] = {
        "load_video_s": _round(item.load_video_s),
        "prefill_s": _round(stats.prefill_s),
        "decode_s": _round(stats.decode_s),
        "total_s": _round(time.perf_counter() - item.started),
    }
    return record


def _decode(lm: LoadedModel, inputs: dict, options: DecodeOptions, on_tokens=None) -> Generation:
    return generate(
        lm.model, inputs, options, eos=lm.eos_token_ids, visual_ids=lm.visual_token_ids, on_tokens=on_tokens
    )


def _compare(lm: LoadedModel, inputs: dict, options: DecodeOptions, std: Generation) -> dict[str, Any]:
    """Decode the same inputs densely, in the same process, after the StD run (so any warm-up favours dense)."""
    dense = _decode(lm, inputs, replace(options, gamma=0))
    per_token = lambda s: s.decode_s / s.decoded_tokens if s.decoded_tokens else None  # noqa: E731
    dense_tok, std_tok = per_token(dense.stats), per_token(std.stats)
    total = lambda s: s.prefill_s + s.decode_s  # noqa: E731
    return {
        "identical": dense.tokens == std.tokens,
        "dense_answer": decode_answer(lm.tokenizer, dense.tokens),
        "dense_tokens_per_s": _round(dense.stats.tokens_per_s),
        "decode_speedup": _round(dense_tok / std_tok) if dense_tok and std_tok else None,
        "total_speedup": _round(total(dense.stats) / total(std.stats)),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


class InputError(Exception):
    """Bad command-line input (exit status 2)."""


def collect_videos(arguments: Sequence[str], stdin: Iterable[str]) -> list[str]:
    """Video paths from files, folders (recursively, sorted) and '-' (one path per line on stdin), in order.

    A path named on the command line must exist (else an input error: a typo stops the run before the model loads);
    a path read from stdin is data, kept even if missing, and its record says why. A file is kept whatever it holds:
    its record says if it is not a video. A folder named on the command line must hold videos.
    """
    videos: list[str] = []
    for argument in arguments:
        if argument == "-":
            for line in stdin:
                path = line.strip()
                if path:
                    videos.extend(_videos_in(path) if Path(path).is_dir() else [path])
        elif Path(argument).is_dir():
            found = _videos_in(argument)
            if not found:
                raise InputError(f"{argument}: folder holds no videos ({' '.join(VIDEO_EXTENSIONS)})")
            videos.extend(found)
        elif Path(argument).exists():
            videos.append(argument)
        else:
            raise InputError(f"{argument}: no such file or folder")
    if not videos:
        raise InputError("no videos given (files, folders, or '-' to read paths from stdin)")
    return videos


def _videos_in(folder: str) -> list[str]:
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
