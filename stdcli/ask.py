"""Answer questions about videos: sample frames, build the prompts, decode, make the records.

One video is batch size 1 of many: `answer_videos` prepares videos as the engine asks for them and hands each
record out as its answer ends. Several questions about one video share its frames, its processed pixels and the
prefill of the prompt up to the question (`prepare_questions`). Usable without the CLI:

    from stdcli import load_model, answer_video, answer_questions, AskOptions
    lm = load_model("builtin")
    record = answer_video(lm, "samples/short_1.mp4", AskOptions(question="What happens?"))
    records = answer_questions(lm, "samples/short_1.mp4", ["What happens?", "How many squares?"], AskOptions())
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .compare import compare_with_dense
from .engine import device as devices
from .engine.decoder import SharedPrefix
from .engine.linear import slot_bytes
from .engine.session import Generation, Request
from .engine.stats import DecodeStats, gamma_counts
from .errors import STOPS
from .inputs import AskOptions, FrameOptions, VideoQuestions
from .model.loading import LoadedModel
from .model.prompts import (
    FrameDefaults,
    build_inputs,
    chat_text,
    frame_defaults,
    shared_prefix_length,
    visual_token_count,
    with_question,
)
from .prefetch import Prefetch, Reserve
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


def text_tokens(lm: LoadedModel, question: str, system: str | None = None) -> int:
    """Tokens of the prompt without its video: the system prompt, the question and the chat template (what
    build_inputs makes of it, counted on the host: a prefetch thread counts them too)."""
    text = chat_text(lm, question, system, with_video=False)
    return int(lm.processor(text=[text], return_tensors="pt")["input_ids"].shape[1])


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


def check_request(lm: LoadedModel, options: AskOptions, questions: Sequence[str] | None = None) -> None:
    """TooLargeError for a request that no video can fit: a question (options.question, or each of `questions`)
    longer than the context alone, or an exact --frames count whose smallest possible frames already exceed it.
    Checked once, before any video is read."""
    limit = context_limit(lm)
    for question in questions or [options.question]:
        text = text_tokens(lm, question, options.system)
        if limit is not None and text + options.decode.max_new_tokens > limit:
            quoted = f" {question!r}" if questions and len(questions) > 1 else ""
            raise TooLargeError(f"the question{quoted} alone is {text:,} tokens of prompt (with up to "
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
    """A question about a video, ready to decode: the video's sampled frames and the model inputs of the question.
    `prefix`: the first tokens of the prompt, shared with the other questions about the video (None: asked alone).
    A video's later questions reuse its frames and its processed pixels: their load_video_s is 0, their processor_s
    the time their own prompt took, and their work starts when they are handed to the engine."""

    video: str
    question: str
    sampled: SampledVideo
    inputs: dict[str, Any]
    load_video_s: float
    processor_s: float
    started: float  # perf_counter when work on it began
    prefix: SharedPrefix | None = None


def prepare_inputs(lm: LoadedModel, video: str, sampled: SampledVideo, options: AskOptions, started: float,
                   load_video_s: float) -> Prepared:
    """The prompt of one question about frames already sampled."""
    began = time.perf_counter()
    inputs = build_inputs(lm, sampled, options.question, options.system)
    return Prepared(video, options.question, sampled, inputs, load_video_s, time.perf_counter() - began, started)


@dataclass
class Loaded:
    """A video's frames, sampled and not yet turned into model inputs, and the questions to ask of them."""

    item: VideoQuestions
    sampled: SampledVideo
    load_video_s: float
    admitted: tuple[int, int, int] | None  # frames, height and width as check_fits saw them before decoding


@dataclass
class Unreadable:
    """A video that could not be loaded: each of its questions gets a record of the error."""

    item: VideoQuestions
    error: Exception


def load(lm: LoadedModel, item: VideoQuestions, options: AskOptions, texts: Sequence[int],
         reserve: Reserve | None = None) -> Loaded | Unreadable:
    """The frames of one video; they are checked to fit (check_fits, for its shortest question) before they are
    decoded, then `reserve` (a prefetch's) is told their bytes. `texts`: text_tokens of each of its questions."""
    started = time.perf_counter()
    reserved = 0
    admitted: tuple[int, int, int] | None = None

    def admit(count: int, height: int, width: int) -> None:
        nonlocal reserved, admitted
        check_fits(lm, count, height, width, min(texts), options)
        admitted = (count, height, width)
        if reserve is not None:
            reserved = count * height * width * 3
            reserve(reserved)

    try:
        sampled = sample_video(lm, item.video, options.frames, admit=admit)
    except STOP_THE_RUN:
        raise
    except Exception as error:  # one broken video must not stop a folder run: it is reported in its records
        STOPS.raise_if_stopped(error)
        return Unreadable(item, error)
    if reserve is not None and sampled.frames.nbytes > reserved:
        # the header's size was not the frames' (a stream that states none, or whose first frame differs): the
        # rest is reserved now that it is known
        reserve(sampled.frames.nbytes - reserved)
    return Loaded(item, sampled, time.perf_counter() - started, admitted)


def prepare_loaded(lm: LoadedModel, loaded: Loaded | Unreadable, options: AskOptions, texts: Sequence[int]
                   ) -> Iterator[Prepared | Record]:
    """Each question about a loaded video ready to decode, or its error record, in order, each made when it is
    wanted. Several questions: the processor runs on the frames once, and every question's prompt is that prompt up
    to the question (their SharedPrefix) followed by its own (with_question), what the processor would make of it.
    A video that could not be read gives one error record per question. The first question's total time counts
    from now less the loading time: a video loaded ahead does not count the time it waited, ready, for its turn."""
    item = loaded.item
    if isinstance(loaded, Unreadable):
        for question in item.questions:
            yield Record.failed(item.video, question, lm.name, options.mode, loaded.error)
        return
    started = time.perf_counter() - loaded.load_video_s
    base: dict[str, Any] | None = None  # several questions: the prompt of an empty question, cut at `prefix`
    prefix: SharedPrefix | None = None
    try:
        if len(item.questions) > 1:
            base = build_inputs(lm, loaded.sampled, "", options.system)
            prefix = SharedPrefix(shared_prefix_length(lm, base, "", options.system), uses=len(item.questions))
    except STOP_THE_RUN:
        raise
    except Exception as error:  # one broken video must not stop a folder run: it is reported in its records
        STOPS.raise_if_stopped(error)
        for question in item.questions:
            yield Record.failed(item.video, question, lm.name, options.mode, error)
        return
    shared_s = time.perf_counter() - started - loaded.load_video_s
    first = True  # the first question answered pays for reading the video and running the processor on it
    for index, question in enumerate(item.questions):
        began = time.perf_counter()
        try:
            if loaded.admitted and texts[index] > min(texts):  # admitted for the shortest question: this one may
                check_fits(lm, *loaded.admitted, texts[index], options)  # not fit
            if base is None:
                inputs = build_inputs(lm, loaded.sampled, question, options.system)
            else:
                assert prefix is not None
                inputs = with_question(lm, base, prefix.length, question, options.system)
        except STOP_THE_RUN:
            raise
        except Exception as error:  # a question that cannot be asked of this video: the others go on
            STOPS.raise_if_stopped(error)
            if prefix is not None:
                prefix.drop()
            yield Record.failed(item.video, question, lm.name, options.mode, error)
            continue
        own_s = time.perf_counter() - began
        if first:
            yield Prepared(item.video, question, loaded.sampled, inputs, loaded.load_video_s, shared_s + own_s,
                           started, prefix)
        else:
            yield Prepared(item.video, question, loaded.sampled, inputs, 0.0, own_s, began, prefix)
        first = False


def prepare_questions(lm: LoadedModel, video: str, questions: Sequence[str], options: AskOptions,
                      texts: Sequence[int] | None = None) -> Iterator[Prepared | Record]:
    """prepare_loaded of `video`, loaded now. `texts`: text_tokens of each question, when known."""
    texts = texts or [text_tokens(lm, question, options.system) for question in questions]
    return prepare_loaded(lm, load(lm, VideoQuestions(video, tuple(questions)), options, texts), options, texts)


def prepare(lm: LoadedModel, video: str, options: AskOptions, text: int | None = None) -> Prepared | Record:
    """Frames and prompt of one video, or its error record; the frames are checked to fit (check_fits) before they
    are decoded. `text`: text_tokens of the question, when known."""
    return next(prepare_questions(lm, video, (options.question,), options, None if text is None else [text]))


def answer_record(lm: LoadedModel, item: Prepared, options: AskOptions, result: Generation) -> Record:
    """The record of a question answered: `result` the decoding of `item`."""
    stats = result.stats
    std = options.mode == "std"
    return Record(
        item.video, item.question, lm.name, options.mode,
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
            "processor_s": _round(item.processor_s),
            "first_token_s": _round(stats.first_token_s),
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
StartCallback = Callable[[str, str], None]  # (video, question) as an answer's first text comes


def answer_videos(
    lm: LoadedModel,
    videos: Iterable[str | VideoQuestions],
    options: AskOptions,
    batch_size: int = 1,
    on_record: Callable[[Record], None] = lambda record: None,
    *,
    on_text: TextCallback | None = None,
    on_start: StartCallback | None = None,
    warn: Callable[[str], None] = lambda message: None,
    prefetch: int | None = None,
) -> None:
    """Answer every video: a path is asked options.question, a VideoQuestions each of its questions (the video read,
    encoded and prefilled once for all of them; every answer token for token the one asked alone). `batch_size`
    answers are decoded together (continuous batching; every answer token for token the one decoded alone); each
    record goes to on_record as its answer ends, failures included (a video that cannot be read, or a decoding
    error, is reported in its records and the others go on). on_text streams each answer, after on_start.
    `prefetch`: bytes of frames that may be loaded ahead, in a background thread, while the engine decodes (see
    stdcli.prefetch; the answers are the same); None: each video is loaded when the engine asks for it."""
    items = (v if isinstance(v, VideoQuestions) else VideoQuestions(v, (options.question,)) for v in videos)
    if options.compare:
        if batch_size != 1:
            raise ValueError("compare measures one video at a time: batch_size must be 1")
        for item in items:
            for prepared in prepare_questions(lm, item.video, item.questions, options):
                on_record(_answer_and_compare(lm, prepared, options, on_text, on_start))
        return
    streams: dict[int, TextStream] = {}
    texts: dict[str, int] = {}  # text tokens of each question

    def text_of(question: str) -> int:
        if question not in texts:
            texts[question] = text_tokens(lm, question, options.system)
        return texts[question]

    def load_item(item: VideoQuestions, reserve: Reserve | None = None) -> Loaded | Unreadable:
        return load(lm, item, options, [text_of(question) for question in item.questions], reserve)

    loading: Iterator[Loaded | Unreadable]
    loading = (load_item(item) for item in items) if prefetch is None else Prefetch(items, load_item, prefetch)

    def requests() -> Iterator[Request]:
        for loaded in loading:
            # the prompts are built here, not in the prefetch thread: on a GPU the processor runs there, and all
            # CUDA work (the engine's graph captures included) stays on the one decoding thread
            counts = [text_of(question) for question in loaded.item.questions]
            for prepared in prepare_loaded(lm, loaded, options, counts):
                if isinstance(prepared, Record):
                    on_record(prepared)
                else:
                    yield Request(prepared, prepared.inputs, prefix=prepared.prefix, started=prepared.started)

    def tokens(request: Request, new: list[int], stats: DecodeStats) -> None:
        if on_text is not None:
            if id(request) not in streams and on_start is not None:
                on_start(request.key.video, request.key.question)
            stream = streams.setdefault(id(request), TextStream(lm.tokenizer))
            on_text(request.key.video, stream.push(new), stats)

    def done(request: Request, generation: Generation) -> None:
        stream = streams.pop(id(request), None)
        if on_text is not None and stream is not None and (rest := stream.finish()):
            on_text(request.key.video, rest, generation.stats)
        on_record(answer_record(lm, request.key, options, generation))

    def failed(request: Request, error: Exception) -> None:
        streams.pop(id(request), None)
        on_record(Record.failed(request.key.video, request.key.question, lm.name, options.mode, error))

    try:
        lm.engine.run(requests(), options.decode, batch_size=batch_size, eos=lm.eos_token_ids, on_tokens=tokens,
                      on_done=done, on_error=failed, warn=warn)
    finally:  # stopped (Ctrl-C) or done: no prefetch thread outlives the run
        if isinstance(loading, Prefetch):
            loading.close()


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


def answer_questions(
    lm: LoadedModel,
    video: str,
    questions: Sequence[str],
    options: AskOptions,
    on_text: Callable[[str, str, DecodeStats], None] | None = None,
) -> list[Record]:
    """The records of several questions about one video, in order (options.question is not asked): the video is
    read, encoded and prefilled once, and each question continues from that prefix; every answer is token for
    token the one of asking it alone. on_text(question, new text, stats) streams each answer. Failures are
    reported in the records' `error`, not raised."""
    records: list[Record] = []
    asked: list[str] = []
    stream = None if on_text is None else (lambda name, text, stats: on_text(asked[-1], text, stats))
    answer_videos(lm, [VideoQuestions(video, tuple(questions))], options, 1, records.append, on_text=stream,
                  on_start=lambda name, question: asked.append(question))
    return records


def _answer_and_compare(lm: LoadedModel, item: Prepared | Record, options: AskOptions, on_text: TextCallback | None,
                        on_start: StartCallback | None) -> Record:
    """The StD record of one question about a video, with `compare` filled in from decoding the same inputs
    densely."""
    if isinstance(item, Record):
        return item
    if item.prefix is not None:
        item.prefix.drop()  # compare decodes each prompt whole, as it would be asked alone
    stream = TextStream(lm.tokenizer)
    if on_start is not None and on_text is not None:
        on_start(item.video, item.question)

    def tokens(new: list[int], stats: DecodeStats) -> None:
        if on_text is not None:
            on_text(item.video, stream.push(new), stats)

    try:
        std = lm.engine.generate(item.inputs, options.decode, eos=lm.eos_token_ids, on_tokens=tokens,
                                 started=item.started)
        if on_text is not None and (rest := stream.finish()):
            on_text(item.video, rest, std.stats)
        record = answer_record(lm, item, options, std)
        record.compare = compare_with_dense(lm, item.inputs, options.decode, std, decode_answer)
    except STOP_THE_RUN:
        raise
    except Exception as error:  # one broken video must not stop a folder run: it is reported in its record
        STOPS.raise_if_stopped(error)
        return Record.failed(item.video, item.question, lm.name, options.mode, error)
    return record


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
