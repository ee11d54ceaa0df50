"""Answer a question about videos: sample frames, build the prompt, decode, make the record.

One video is batch size 1 of many: `answer_videos` prepares videos as the engine asks for them and hands each
record out as its answer ends. Usable without the CLI:

    from stdcli import load_model, answer_video, AskOptions
    lm = load_model("builtin")
    record = answer_video(lm, "samples/short_1.mp4", AskOptions(question="What happens?"))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .compare import compare_with_dense
from .engine import device as devices
from .engine.linear import slot_bytes
from .engine.session import Generation, Request
from .engine.stats import DecodeStats, gamma_counts
from .inputs import AskOptions, FrameOptions
from .model.loading import LoadedModel
from .model.prompts import FrameDefaults, build_inputs, frame_defaults, visual_token_count
from .records import Record
from .video import SampledVideo, sample_frames


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


def sample_video(lm: LoadedModel, video: str, frames: FrameOptions,
                 admit: Callable[[int, int, int], None] | None = None) -> SampledVideo:
    """The frames `lm` sees of `video`, sampled as its family's reference code does, with the user's overrides;
    `admit` as sample_frames takes it."""
    return sample_frames(video, **sampling_arguments(frame_defaults(lm.family), frames), admit=admit)


class TooLargeError(Exception):
    """A request that cannot fit: a prompt longer than the model's context, or more memory than there is."""


# What is surely allocated per visual token before decoding, beside the frames: Qwen's float32 pixel values are
# 4 patches x 3 x 14 x 14 x 2 frames per token (about 19 kB), and the vision tower holds a few hidden states of
# the same size; LLaVA-OneVision's are smaller per token. Not a full account: a floor that refuses what surely
# cannot fit, never what might.
BYTES_PER_VISUAL_TOKEN = 2 * 4 * 3 * 14 * 14 * 2 * 4


def text_tokens(lm: LoadedModel, options: AskOptions) -> int:
    """Tokens of the prompt without its video: the system prompt, the question and the chat template."""
    return int(build_inputs(lm, None, options.question, options.system)["input_ids"].shape[1])


def context_limit(lm: LoadedModel) -> int | None:
    limit = getattr(lm.model.config.get_text_config(), "max_position_embeddings", None)
    return int(limit) if limit else None


def check_fits(lm: LoadedModel, frames: int, height: int, width: int, text: int, options: AskOptions) -> None:
    """TooLargeError if `frames` frames of height x width with `text` tokens of text cannot be answered: a prompt
    over the model's context, or memory beyond what is available (frames, pixel values and the KV cache)."""
    visual = visual_token_count(lm, frames, height, width)
    prompt = visual + text
    limit = context_limit(lm)
    fewer = "use fewer --frames, a lower --fps or --max-frames, or a smaller --max-pixels"
    if limit is not None and prompt + options.decode.max_new_tokens > limit:
        raise TooLargeError(f"{frames} frames make a prompt of {prompt:,} tokens (with up to "
                            f"{options.decode.max_new_tokens} new ones), more than the model's context of "
                            f"{limit:,} tokens: {fewer}")
    dims = lm.engine.adapter.cache
    kv = (prompt + options.decode.max_new_tokens) * dims.kv_bytes_per_token
    if dims.linear is not None:  # a hybrid's linear-attention states, the same for any length
        kv += slot_bytes(dims.linear)
    host, device = frames * height * width * 3, visual * BYTES_PER_VISUAL_TOKEN + kv
    if lm.device.type == "cpu":
        host, device = host + device, 0
    for need, where in ((host, torch.device("cpu")), (device, lm.device)):
        free = devices.free_memory_bytes(where)
        if need > free:
            raise TooLargeError(f"{frames} frames ({prompt:,} tokens) need at least {need / GIB:.1f} GiB on {where}, "
                                f"{free / GIB:.1f} GiB available: {fewer}")


def check_request(lm: LoadedModel, options: AskOptions) -> None:
    """TooLargeError for a request that no video can fit: a question longer than the context alone, or an exact
    --frames count whose smallest possible frames already exceed it. Checked once, before any video is read."""
    text = text_tokens(lm, options)
    limit = context_limit(lm)
    if limit is not None and text + options.decode.max_new_tokens > limit:
        raise TooLargeError(f"the question alone is {text:,} tokens of prompt (with up to "
                            f"{options.decode.max_new_tokens} new ones), more than the model's context of "
                            f"{limit:,} tokens")
    count = options.frames.frames
    if count is not None:
        multiple = frame_defaults(lm.family).multiple_of
        smallest = QWEN_SMALLEST_FRAME if lm.family != "llava-ov" else 1
        check_fits(lm, -(-count // multiple) * multiple, smallest, smallest, text, options)


class TextStream:
    """Token ids in, newly printable text out. What it prints, joined, is exactly `decode_answer` of all the tokens
    once `finish` has been called: leading whitespace is dropped, trailing whitespace and an incomplete UTF-8
    sequence are held back until more text follows them."""

    def __init__(self, tokenizer: Any):
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


def decode_answer(tokenizer: Any, tokens: Sequence[int]) -> str:
    text: str = tokenizer.decode(tokens, skip_special_tokens=True)
    return text.strip()


GIB = 1 << 30
QWEN_SMALLEST_FRAME = 28  # pixels a side: Qwen's processor scales any frame up to its minimum pixel count anyway

# What stops the whole run, not just one video.
STOP_THE_RUN = (KeyboardInterrupt, SystemExit, BrokenPipeError)


@dataclass
class Prepared:
    """A video ready to decode: its sampled frames and the model inputs of the question about it."""

    video: str
    sampled: SampledVideo
    inputs: dict[str, Any]
    load_video_s: float
    processor_s: float
    started: float  # perf_counter when work on it began


def prepare_inputs(lm: LoadedModel, video: str, sampled: SampledVideo, options: AskOptions, started: float,
                   load_video_s: float) -> Prepared:
    """The prompt of one question about frames already sampled."""
    began = time.perf_counter()
    inputs = build_inputs(lm, sampled, options.question, options.system)
    return Prepared(video, sampled, inputs, load_video_s, time.perf_counter() - began, started)


def prepare(lm: LoadedModel, video: str, options: AskOptions, text: int | None = None) -> Prepared | Record:
    """Frames and prompt of one video, or its error record; the frames are checked to fit (check_fits) before they
    are decoded. `text`: text_tokens(lm, options), when known."""
    started = time.perf_counter()
    try:
        text = text_tokens(lm, options) if text is None else text
        sampled = sample_video(lm, video, options.frames,
                               admit=lambda count, height, width: check_fits(lm, count, height, width, text, options))
        return prepare_inputs(lm, video, sampled, options, started, time.perf_counter() - started)
    except STOP_THE_RUN:
        raise
    except Exception as error:  # one broken video must not stop a folder run: it is reported in its record
        return Record.failed(video, options.question, lm.name, options.mode, error)


def answer_record(lm: LoadedModel, item: Prepared, options: AskOptions, result: Generation) -> Record:
    """The record of a video answered: `result` the decoding of `item`."""
    stats = result.stats
    std = options.mode == "std"
    return Record(
        item.video, options.question, lm.name, options.mode,
        answer=decode_answer(lm.tokenizer, result.tokens),
        frames=len(item.sampled.frames),
        visual_tokens=stats.visual_tokens,
        prompt_tokens=stats.prompt_tokens,
        new_tokens=stats.new_tokens,
        timings={
            "load_video_s": _round(item.load_video_s),
            "prefill_s": _round(stats.prefill_s),
            "decode_s": _round(stats.decode_s),
            "total_s": _round(time.perf_counter() - item.started),
        },
        tokens_per_s=_round(stats.tokens_per_s),
        acceptance_rate=_round(stats.acceptance_rate),
        mean_accepted_length=_round(stats.mean_accepted_length),
        speedup_est=_round(stats.speedup_est),
        k=options.decode.k if std else None,
        gamma=options.decode.gamma if std else None,
        warnings=list(item.sampled.warnings),
        gammas=gamma_counts([stats.gammas]) if std else None,
        dense_share=_round(stats.dense_share) if std else None,
        finish_reason=result.finish_reason,
        drafts=dict(sorted(stats.drafts.items())) if std else None,
        stats=stats,
    )


TextCallback = Callable[[str, str, DecodeStats], None]  # (video, new text, statistics so far)


def answer_videos(
    lm: LoadedModel,
    videos: Iterable[str],
    options: AskOptions,
    batch_size: int = 1,
    on_record: Callable[[Record], None] = lambda record: None,
    *,
    on_text: TextCallback | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> None:
    """Answer every video, `batch_size` decoded together (continuous batching; every answer token for token the one
    decoded alone); each record goes to on_record as its answer ends, failures included (a video that cannot be
    read, or a decoding error, is reported in its record and the others go on). on_text streams each answer."""
    if options.compare:
        if batch_size != 1:
            raise ValueError("compare measures one video at a time: batch_size must be 1")
        for video in videos:
            on_record(_answer_and_compare(lm, video, options, on_text))
        return
    streams: dict[int, TextStream] = {}

    text = text_tokens(lm, options)

    def requests() -> Iterator[Request]:
        for video in videos:
            item = prepare(lm, video, options, text)
            if isinstance(item, Record):
                on_record(item)
            else:
                yield Request(item, item.inputs)

    def tokens(request: Request, new: list[int], stats: DecodeStats) -> None:
        if on_text is not None:
            stream = streams.setdefault(id(request), TextStream(lm.tokenizer))
            on_text(request.key.video, stream.push(new), stats)

    def done(request: Request, generation: Generation) -> None:
        stream = streams.pop(id(request), None)
        if on_text is not None and stream is not None and (rest := stream.finish()):
            on_text(request.key.video, rest, generation.stats)
        on_record(answer_record(lm, request.key, options, generation))

    def failed(request: Request, error: Exception) -> None:
        streams.pop(id(request), None)
        on_record(Record.failed(request.key.video, options.question, lm.name, options.mode, error))

    lm.engine.run(requests(), options.decode, batch_size=batch_size, eos=lm.eos_token_ids, on_tokens=tokens,
                  on_done=done, on_error=failed, warn=warn)


def answer_video(
    lm: LoadedModel,
    video: str,
    options: AskOptions,
    on_text: Callable[[str, DecodeStats], None] | None = None,
) -> Record:
    """The record of one video. Failures are reported in the record's `error`, not raised."""
    records: list[Record] = []
    stream = None if on_text is None else (lambda name, text, stats: on_text(text, stats))
    answer_videos(lm, [video], options, 1, records.append, on_text=stream)
    return records[0]


def _answer_and_compare(lm: LoadedModel, video: str, options: AskOptions, on_text: TextCallback | None) -> Record:
    """The StD record of one video, with `compare` filled in from decoding the same inputs densely."""
    item = prepare(lm, video, options)
    if isinstance(item, Record):
        return item
    stream = TextStream(lm.tokenizer)

    def tokens(new: list[int], stats: DecodeStats) -> None:
        if on_text is not None:
            on_text(video, stream.push(new), stats)

    try:
        std = lm.engine.generate(item.inputs, options.decode, eos=lm.eos_token_ids, on_tokens=tokens)
        if on_text is not None and (rest := stream.finish()):
            on_text(video, rest, std.stats)
        record = answer_record(lm, item, options, std)
        record.compare = compare_with_dense(lm, item.inputs, options.decode, std, decode_answer)
    except STOP_THE_RUN:
        raise
    except Exception as error:  # one broken video must not stop a folder run: it is reported in its record
        return Record.failed(video, options.question, lm.name, options.mode, error)
    return record


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
