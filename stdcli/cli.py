"""The `stdcli` command: thin Typer commands over the library.

Output rules, for every command: results (answers, JSON) on stdout, everything else on stderr; every error is one
line "stdcli: error: ..." and never a traceback (STDCLI_DEBUG=1 shows it); no colour or live display unless stderr
is a terminal. Exit status: 0 all answered, 1 some videos failed, 2 usage error, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from . import __version__
from .bench import settings as bench_settings
from .bench.settings import BenchError
from .display import Display
from .engine.options import AUTO, DEFAULT_GAMMA, DEFAULT_K, DRAFT_KINDS, MAX_GAMMA, DecodeOptions
from .errors import STOPS, Terminated
from .inputs import AskOptions, FrameOptions, InputError, collect_videos
from .model.registry import DEFAULT_MODEL, INFLATE_SHAPES, ModelLoadError, list_models
from .records import JsonlWriter, Record
from .resume import Ledger

if TYPE_CHECKING:
    from .engine.costs import CostMemory
    from .model.loading import LoadedModel

# The command line imports torch and transformers (seconds) only where a command needs a model: `stdcli --help`,
# `--version` and `models` never do.

BUILTIN_NOTE = (
    "The built-in model (the default) was trained only on generated videos of coloured shapes that move, "
    "appear, disappear and change colour (see samples/), and understands questions phrased as in "
    "samples/truth.jsonl; for real footage pass --model with real weights, e.g. --model qwen2-vl."
)
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_CLOSED_PIPE, EXIT_TERMINATED = 1, 2, 130, 141, 143
T = TypeVar("T")


def stopped(stop: KeyboardInterrupt, kept: str = "") -> typer.Exit:
    """The one line and the exit status of a run stopped by Ctrl-C (130) or SIGTERM (143)."""
    terminated = isinstance(stop, Terminated)
    say(("terminated" if terminated else "interrupted") + kept)
    return typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def silence_stdout() -> None:
    """The reader of stdout went away (`| head`): send what is still buffered nowhere, so that the exit is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def ends_cleanly(command: Callable[..., None]) -> Callable[..., None]:
    """A command that Ctrl-C, SIGTERM or a closed stdout ends with one line (or none) and its own exit status,
    wherever it is, start-up included: Typer and Click would turn them into a silent or a generic exit."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt as stop:
            raise stopped(stop) from None
        except BrokenPipeError:
            silence_stdout()
            raise typer.Exit(EXIT_CLOSED_PIPE) from None

    return run


def say(message: str) -> None:
    """One plain line on stderr (not Rich: it would wrap long lines at 80 columns when stderr is a file)."""
    print(f"stdcli: {' '.join(message.split())}", file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    say(f"error: {message}")
    return typer.Exit(code)


class StoppedOutsideACommand(Exception):
    """Ctrl-C or SIGTERM while Click parses or dispatches, carried past Typer (which would exit 130 silently)."""

    def __init__(self, stop: KeyboardInterrupt):
        super().__init__("stopped")
        self.stop = stop


class OneLineErrors(TyperGroup):
    """Click's usage errors (unknown option, missing argument, bad value) as one "stdcli: error:" line with exit
    status 2, instead of Typer's multi-line panel: scripts read one line, like every other stdcli error."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as stop:
            raise StoppedOutsideACommand(stop) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as stop:
            raise StoppedOutsideACommand(stop) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except StoppedOutsideACommand as error:
            sys.exit(stopped(error.stop).exit_code)
        except Exception as error:
            # Click's classes are matched by name: Typer >= 0.2x vendors its own copy of Click, older ones use click.
            kinds = {cls.__name__ for cls in type(error).__mro__}
            if "NoArgsIsHelpError" in kinds:  # the help, already printed when Typer uses Rich
                if error.format_message().strip():
                    error.show()
                sys.exit(error.exit_code)
            if "UsageError" in kinds:
                ctx = getattr(error, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                say(f"error: {error.format_message()}{hint}")
                sys.exit(error.exit_code)
            if "ClickException" in kinds:
                say(f"error: {error.format_message()}")
                sys.exit(error.exit_code)
            if "Abort" in kinds:
                say("error: aborted")
                sys.exit(EXIT_FAILED)
            raise
        # Not standalone, Click returns the exit code of a typer.Exit, or the command's return value (None).
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Ask questions about videos with a Video-LLM, decoded losslessly faster with Sparse-to-Dense (StD).",
)


def version_callback(value: bool) -> None:
    if value:
        print(f"stdcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


# --- stdcli ask -----------------------------------------------------------------------------------------------------


@app.command(help="Answer QUESTION about each VIDEO: video files, folders (searched recursively), or - for paths on "
             f"stdin; the last argument is the question.\n\n{BUILTIN_NOTE}")
@ends_cleanly
def ask(
    arguments: Annotated[list[str] | None, typer.Argument(
        metavar="VIDEO... QUESTION", help="Videos, then the question asked of every one.", show_default=False,
    )] = None,
    model: Annotated[
        str,
        typer.Option(help="Alias (see `stdcli models`), Hugging Face id, or local folder."),
    ] = DEFAULT_MODEL,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    fps: Annotated[float | None, typer.Option(help="Frames per second to sample (default: the model's).")] = None,
    frames: Annotated[int | None, typer.Option(help="Exact number of frames (exclusive with --fps).")] = None,
    min_frames: Annotated[int | None, typer.Option(help="At least this many frames.")] = None,
    max_frames: Annotated[int | None, typer.Option(help="At most this many frames.")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Downscale frames to at most this many pixels.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy (identical to ordinary greedy decoding).")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (with --temperature > 0).")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    dense: Annotated[bool, typer.Option("--dense", help="Plain dense decoding (the baseline) instead of StD.")] = False,
    k: Annotated[int, typer.Option("--k", help="StD: visual tokens kept per layer and KV head.")] = DEFAULT_K,
    gamma: Annotated[
        str,
        typer.Option(
            help=(
                f"StD: tokens drafted per cycle (1 to {MAX_GAMMA}), or auto: chosen every cycle from measured step "
                "costs and acceptance (0 = a dense step when drafting does not pay)."
            ),
        ),
    ] = DEFAULT_GAMMA,
    draft: Annotated[
        str,
        typer.Option(
            help=(
                "StD: what drafts read: sparse (the top-K view, the model's weights), int8 or int4 (the same view "
                "with quantized weights, made at the first use), or auto: chosen every cycle, as gamma is."
            ),
        ),
    ] = AUTO,
    batch_size: Annotated[
        int,
        typer.Option(
            help=(
                "Videos decoded together (continuous batching; answers identical to one at a time). Answers then "
                "print as each ends, not streamed."
            ),
        ),
    ] = 1,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Also decode densely; report measured speedup and whether answers are identical.",
        ),
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object per video instead of the answer."),
    ] = False,
    jsonl: Annotated[
        bool,
        typer.Option("--jsonl", help="Print one JSON line per video instead of the answer."),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(help="Append records to this JSONL file, flushed line by line."),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip videos already answered in --output.")] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress or statistics on stderr (errors still)."),
    ] = False,
    trust_remote_code: Annotated[
        bool,
        typer.Option("--trust-remote-code", help="Allow a checkpoint's own Python code (off by default)."),
    ] = False,
) -> None:
    # Everything that can be checked without the model is checked first: a usage error costs no model load.
    videos, question = _videos_and_question(arguments or [])
    options = _ask_options(
        question, system, fps, frames, min_frames, max_frames, max_pixels, max_new_tokens, temperature, top_p,
        seed, dense, k, gamma, draft, compare,
    )
    if json_out and jsonl:
        raise fail("--json and --jsonl are exclusive")
    if batch_size < 1:
        raise fail("--batch-size must be at least 1")
    if batch_size > 1 and compare:
        raise fail("--compare measures one video at a time: drop --batch-size")
    if resume and output is None:
        raise fail("--resume needs --output FILE.jsonl")
    if "-" in videos and sys.stdin.isatty():
        say("reading video paths from stdin, one per line (end with Ctrl-D)")
    try:
        paths = collect_videos(videos, sys.stdin)
    except InputError as error:
        raise fail(str(error)) from None
    ledger = Ledger(output, model, warn=lambda message: say(f"warning: {message}")) if resume and output else None
    todo = ledger.todo(paths, question) if ledger else paths
    if len(todo) < len(paths) and not quiet:
        say(f"resuming: {len(paths) - len(todo)} of {len(paths)} videos already answered in {output}")
    if not todo:
        raise typer.Exit(0)  # nothing left: not even the model is loaded
    writer = _open_output(output)  # before the model: a bad path should not cost a model load
    try:
        lm = _load(model, device, dtype, quiet, trust_remote_code)
        _check_request(lm, options)
    except typer.Exit:
        if writer:
            writer.close()
        raise
    # with --resume, each video is claimed just before it is read: runs resuming into one file share the work
    videos = ledger.claimed(todo, question) if ledger else todo
    failures, answered = _run(lm, videos, len(todo), options, json_out, jsonl, writer, quiet, batch_size)
    if failures and answered > 1 and not quiet:
        say(f"{failures} of {answered} videos failed (their records say why)")
    raise typer.Exit(EXIT_FAILED if failures else 0)


def _videos_and_question(arguments: list[str]) -> tuple[list[str], str]:
    """The videos, then the question: the last argument (one list, since a question can be anything)."""
    usage = "stdcli ask VIDEO... QUESTION"
    if not arguments:
        raise fail(f"give the videos and the question: {usage}")
    if len(arguments) == 1:
        (only,) = arguments
        if only == "-" or Path(only).exists():
            raise fail(f"missing the question after {only}: {usage}")
        raise fail(f"missing the videos before the question: {usage}")
    return arguments[:-1], arguments[-1]


def _ask_options(question, system, fps, frames, min_frames, max_frames, max_pixels, max_new_tokens, temperature,
                 top_p, seed, dense, k, gamma, draft, compare) -> AskOptions:
    checks = [
        (fps is not None and frames is not None, "--fps and --frames are exclusive"),
        (fps is not None and not math.isfinite(fps), "--fps must be a positive number"),
        (fps is not None and fps <= 0, "--fps must be positive"),
        (frames is not None and frames < 1, "--frames must be at least 1"),
        (min_frames is not None and min_frames < 1, "--min-frames must be at least 1"),
        (max_frames is not None and max_frames < 1, "--max-frames must be at least 1"),
        (min_frames is not None and max_frames is not None and min_frames > max_frames,
         "--min-frames is above --max-frames"),
        (frames is not None and max_frames is not None and frames > max_frames,
         f"--frames {frames} is above --max-frames {max_frames}"),
        (max_pixels is not None and max_pixels < 28 * 28, "--max-pixels must be at least 784"),
        (max_new_tokens < 1, "--max-new-tokens must be at least 1"),
        (not math.isfinite(temperature) or temperature < 0, "--temperature must be a number >= 0"),
        (not 0 < top_p <= 1, "--top-p must be in (0, 1]"),
        (k < 1, "--k must be at least 1"),
        (draft != AUTO and draft not in DRAFT_KINDS, f"--draft must be one of {', '.join(DRAFT_KINDS)} or auto"),
        (dense and compare, "--compare compares StD with dense: drop --dense"),
        (not question.strip(), "the question is empty"),
    ]
    for bad, message in checks:
        if bad:
            raise fail(message)
    gamma = _parse_gamma(gamma)
    decode = DecodeOptions(
        max_new_tokens=max_new_tokens, k=k, gamma=0 if dense else gamma, temperature=temperature, top_p=top_p,
        seed=seed, draft=draft,
    )
    frame_options = FrameOptions(fps=fps, frames=frames, min_frames=min_frames, max_frames=max_frames,
                                 max_pixels=max_pixels)
    return AskOptions(question=question, system=system, frames=frame_options, decode=decode, compare=compare)


def _fixed_gammas(gammas: list[int | str] | None) -> list[int] | None:
    if gammas and AUTO in gammas:
        raise BenchError("--random-init measures fixed gammas (auto picks among them): drop auto")
    return [int(g) for g in gammas] if gammas else None


def _one_value(values: Sequence[T], name: str) -> T:
    if len(values) > 1:
        raise BenchError(f"{name} takes one value with --batch-size (folder runs use one setting), got "
                         f"{','.join(map(str, values))}")
    return values[0]


def _parse_gamma(text: str) -> int | str:
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise fail(f"--gamma must be auto or a whole number, got {text!r}") from None
    if value < 1:
        raise fail("--gamma must be at least 1 (use --dense for plain decoding)")
    if value > MAX_GAMMA:
        raise fail(f"--gamma must be at most {MAX_GAMMA} (or auto)")
    return value


def _open_output(output: Path | None) -> JsonlWriter | None:
    if output is None:
        return None
    try:
        return JsonlWriter(output)
    except OSError as error:
        raise fail(f"cannot write --output {output}: {error.strerror or error}") from None


# transformers says, the first time each of a hybrid's linear-attention functions runs, that it falls back to its
# PyTorch version (flash-linear-attention, causal-conv1d not installed): in the middle of an answer on a terminal.
# The command line says it once, before answering, where it matters: on a CUDA GPU (their kernels run nowhere else).
KERNEL_FALLBACK = "is falling back to its reference PyTorch implementation"
LINEAR_KERNEL_PACKAGES = (("flash-linear-attention", "fla"), ("causal-conv1d", "causal_conv1d"))


def _not_a_kernel_fallback(record: logging.LogRecord) -> bool:
    return KERNEL_FALLBACK not in record.getMessage()


def _quiet_loading_bars(quiet: bool) -> None:
    """No "Loading weights" bar from transformers, ever (on a terminal a transient status says what loads, and
    leaves nothing behind), nor its kernel fallback notes (see KERNEL_FALLBACK); the hub's download bars only where
    there is no live display."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    kernels = transformers_logging.get_logger("transformers.integrations.hub_kernels")
    if _not_a_kernel_fallback not in kernels.filters:
        kernels.addFilter(_not_a_kernel_fallback)
    if not Display.live_possible(quiet):
        disable_progress_bars()


def _note_linear_kernels(lm: LoadedModel) -> None:
    """One line where a hybrid's linear-attention layers will run transformers' slow PyTorch versions on a GPU."""
    if lm.device.type != "cuda" or lm.engine.adapter.cache.linear is None:
        return
    missing = [name for name, module in LINEAR_KERNEL_PACKAGES if importlib.util.find_spec(module) is None]
    if missing:
        say(f"warning: {' and '.join(missing)} not installed: the linear-attention layers of {lm.name} run "
            "transformers' PyTorch versions (correct, much slower)")


def _cost_memory() -> CostMemory:
    """What gamma auto remembered in earlier runs (the file of costs.default_path); saved again as the run ends."""
    from .engine.costs import CostMemory, default_path

    return CostMemory.load(default_path())


def _load(model: str, device: str, dtype: str, quiet: bool, trust_remote_code: bool = False) -> LoadedModel:
    """The model, with the cost memory of earlier runs; a model that cannot be loaded is a usage error."""
    from rich.console import Console

    from .model.loading import load_model

    _quiet_loading_bars(quiet)
    status = Console(stderr=True).status(f"loading {model}") if Display.live_possible(quiet) else nullcontext()
    try:
        with status:
            lm = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                            cost_memory=_cost_memory())
    except ModelLoadError as error:
        raise fail(str(error)) from None
    _note_linear_kernels(lm)
    return lm


def _load_for_bench(model: str, device: str, dtype: str, quiet: bool, inflate: str | None) -> LoadedModel:
    """The model to bench, or (--inflate) the inflated model: built from the model loaded in float32, in the dtype
    asked for."""
    if inflate is None:
        return _load(model, device, dtype, quiet)
    from rich.console import Console

    from .model.inflate import InflateError, inflate_loaded
    from .model.loading import pick_dtype

    small = _load(model, device, "float32", quiet)
    status = Console(stderr=True).status(f"inflating {model} to {inflate}") if Display.live_possible(quiet) \
        else nullcontext()
    try:
        with status:
            return inflate_loaded(small, inflate, pick_dtype(dtype, small.device))
    except (InflateError, ModelLoadError) as error:
        raise fail(str(error)) from None


def _check_request(lm: LoadedModel, options: AskOptions) -> None:
    """A request no video can fit (a question over the context, --frames beyond it) is a usage error, found before
    any video is read."""
    from .ask import TooLargeError, check_request

    try:
        check_request(lm, options)
    except TooLargeError as error:
        raise fail(str(error)) from None


def _run(lm: LoadedModel, paths: Iterable[str], total: int, options: AskOptions, json_out: bool, jsonl: bool,
         writer: JsonlWriter | None, quiet: bool, batch_size: int = 1) -> tuple[int, int]:
    """Answer every path (in order; with a batch, in the order answers end); returns (failed, records) counts.
    Ctrl-C keeps every finished record."""
    from .ask import answer_videos

    failures = records = 0
    streaming = batch_size == 1  # several answers decoded together would interleave: they print whole, as they end
    current: str | None = None
    try:
        with Display(total, quiet=quiet, stream_answers=not (json_out or jsonl)) as display:

            def started(video: str) -> None:
                nonlocal current
                if current is None:
                    display.video_started(video, options.mode)
                    current = video

            def text(video: str, delta: str, stats: Any) -> None:
                started(video)
                display.text(delta, stats)

            def finished(record: Record) -> None:
                nonlocal failures, records, current
                started(record.video)
                if not streaming and record.answer:
                    display.text(record.answer, None)
                if writer:
                    writer.write(record)
                failures += not record.ok
                records += 1
                printed = record.to_json(pretty=True) if json_out else record.to_json() if jsonl else None
                display.video_finished(record, printed)
                current = None

            answer_videos(lm, paths, options, batch_size, finished, on_text=text if streaming else None, warn=say)
    except KeyboardInterrupt as stop:
        raise stopped(stop, "; finished records are kept") from None
    finally:
        if writer:
            writer.close()
        lm.engine.memory.save()
    return failures, records


# --- stdcli models --------------------------------------------------------------------------------------------------


@app.command(help="List model aliases, where each resolves, and whether it is available offline.")
def models(json_out: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False) -> None:
    rows = list_models()
    if json_out:
        import json

        print(json.dumps([row.__dict__ for row in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("alias")
    table.add_column("resolves to", overflow="fold")  # hub ids and paths whole, never cut with an ellipsis
    for name in ("family", "offline", "note"):
        table.add_column(name)
    for row in rows:
        table.add_row(row.name, row.location, row.family or "-", "yes" if row.available else "no", row.detail)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a file or a pipe: no 80-column wrapping or truncated hub ids
    console.print(table)


# --- stdcli bench ---------------------------------------------------------------------------------------------------


@app.command(
    help="Measure decoding speed on the same inputs, in one process: transformers generate vs our dense path vs StD "
    "(tokens/s, speedups, acceptance, identical answers, peak memory); a table on stderr, --json FILE for all of "
    "it. With --random-init: step costs of a real-size architecture with random weights against their bandwidth "
    "floors, and the speedup the cost model projects (labelled as a projection; no acceptance is ever claimed). "
    "With --batch-size (no --random-init): folder throughput as `stdcli ask --batch-size` runs it, answers/min of "
    "generate one at a time vs our dense path and StD at each batch size."
)
@ends_cleanly
def bench(
    videos: Annotated[
        list[str] | None,
        typer.Argument(metavar="VIDEO", help="Video files or folders (default: samples/).", show_default=False),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Alias, Hugging Face id or folder (default: the built-in model; with --random-init: qwen2-vl).",
            show_default=False,
        ),
    ] = None,
    questions: Annotated[
        Path | None,
        typer.Option(help='JSONL: {"question": ...} asked of every video, or {"question": ..., "video": PATH}.'),
    ] = None,
    k: Annotated[
        str,
        typer.Option("--k", help="StD: visual tokens kept per layer and KV head, comma-separated list."),
    ] = str(DEFAULT_K),
    gamma: Annotated[
        str | None,
        typer.Option(
            help=(
                f"StD: drafts per cycle (1 to {MAX_GAMMA}), comma-separated list, auto among them or not (default "
                f"{DEFAULT_GAMMA}; with --random-init 1..9)."
            ),
            show_default=False,
        ),
    ] = None,
    draft: Annotated[
        str,
        typer.Option(help="StD: draft kinds, comma-separated list of sparse, int8, int4 and auto."),
    ] = AUTO,
    frames: Annotated[
        str | None,
        typer.Option(help="Frame counts, comma-separated list (default: the model's own sampling)."),
    ] = None,
    max_new_tokens: Annotated[
        int,
        typer.Option(help="Longest answer, in tokens."),
    ] = bench_settings.DEFAULT_MAX_NEW_TOKENS,
    repeat: Annotated[
        int | None,
        typer.Option(
            help=(
                "Rounds over the inputs (default 1; with --batch-size: timed passes after one warm-up); with "
                "--random-init: timed iterations per step (default 10)."
            ),
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    json_file: Annotated[
        str | None,
        typer.Option("--json", metavar="FILE", help="Write the results as JSON to FILE (- for stdout)."),
    ] = None,
    random_init: Annotated[
        bool,
        typer.Option(
            "--random-init",
            help="Profile the real architecture of --model at real scale with random weights (nothing downloaded).",
        ),
    ] = False,
    decode: Annotated[
        bool,
        typer.Option(
            "--decode",
            help=(
                "--random-init: also decode --max-new-tokens tokens per sequence densely, with each --gamma and "
                "with auto, on synthetic prompts, and compare their measured speeds."
            ),
        ),
    ] = False,
    scale: Annotated[
        str | None,
        typer.Option(
            help="--random-init: the --model alias's size (7b; 2b for qwen2-vl-2b, qwen3-vl-2b; 8b for qwen3-vl; 9b "
            "for qwen3.5), or tiny.",
            show_default=False,
        ),
    ] = None,
    inflate: Annotated[
        str | None,
        typer.Option(
            help=(
                "Embed the model (Qwen2-VL, e.g. the built-in one) in a larger shape computing the same function: "
                "7b measures a trained model at the step cost of Qwen2-VL-7B."
            ),
            show_default=False,
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(help="--random-init: context lengths in tokens (default 16384,65536).", show_default=False),
    ] = None,
    batch_size: Annotated[
        str | None,
        typer.Option(
            help=(
                "Batch sizes, comma-separated list: videos decoded together (folder throughput; one --k and one "
                "--frames value at most); with --random-init: profiled batch sizes (default 1,8)."
            ),
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress on stderr (the tables and errors still)."),
    ] = False,
) -> None:
    from rich.console import Console

    progress = None if quiet else (lambda message: say(f"bench: {message}"))
    lm = None
    try:
        ks = bench_settings.parse_int_list(k, "--k") or [DEFAULT_K]
        gammas = bench_settings.parse_gamma_list(gamma)
        drafts = bench_settings.parse_draft_list(draft)
        if repeat is not None and repeat < 1:
            raise BenchError("--repeat must be at least 1")
        if max_new_tokens < 1:
            raise BenchError("--max-new-tokens must be at least 1")
        if random_init:
            from .bench.profile import profile_random_init, profile_tables, profile_verdict

            if videos or questions or frames or inflate:
                raise BenchError("--random-init profiles decode steps: it takes no videos, --questions, --frames or "
                                 "--inflate")
            report = profile_random_init(
                model or "qwen2-vl",
                scale=scale,
                device=device,
                dtype=dtype,
                contexts=bench_settings.parse_int_list(context, "--context") or bench_settings.DEFAULT_CONTEXTS,
                batches=bench_settings.parse_int_list(batch_size, "--batch-size") or bench_settings.DEFAULT_BATCHES,
                ks=ks,
                gammas=_fixed_gammas(gammas) or bench_settings.PROFILE_GAMMAS,
                drafts=drafts,
                iters=repeat or bench_settings.DEFAULT_ITERS,
                decode_tokens=max_new_tokens if decode else 0,
                progress=progress,
            )
            tables, verdict = profile_tables(report), profile_verdict(report)
        else:
            from .bench.common import load_items

            if scale or context or decode:
                raise BenchError("--scale, --context and --decode go with --random-init")
            if inflate is not None and inflate not in INFLATE_SHAPES:
                raise BenchError(f"--inflate takes {' or '.join(INFLATE_SHAPES)}, got {inflate!r}")
            frame_counts: list[int | None] = list(bench_settings.parse_int_list(frames, "--frames") or [None])
            batch_sizes = bench_settings.parse_int_list(batch_size, "--batch-size")
            items = load_items(videos, questions)
            if batch_sizes:
                from .bench.batches import batch_tables, batch_verdict, bench_batches

                one_k, one_frames = _one_value(ks, "--k"), _one_value(frame_counts, "--frames")  # before the load
                one_draft = _one_value(drafts, "--draft")
                lm = _load_for_bench(model or DEFAULT_MODEL, device, dtype, quiet, inflate)
                report = bench_batches(
                    lm, items, batch_sizes=batch_sizes, gammas=gammas or [DEFAULT_GAMMA], k=one_k, draft=one_draft,
                    frames=one_frames,
                    max_new_tokens=max_new_tokens, rounds=repeat or 1, progress=progress,
                )
                tables, verdict = batch_tables(report), batch_verdict(report)
            else:
                from .bench.decoding import bench_model, model_tables, model_verdict

                lm = _load_for_bench(model or DEFAULT_MODEL, device, dtype, quiet, inflate)
                report = bench_model(
                    lm, items, ks=ks, gammas=gammas or [DEFAULT_GAMMA], drafts=drafts, frames=frame_counts,
                    max_new_tokens=max_new_tokens, repeat=repeat or 1, progress=progress,
                )
                tables, verdict = model_tables(report), model_verdict(report)
    except BenchError as error:
        raise fail(str(error)) from None
    finally:
        if lm is not None:
            lm.engine.memory.save()
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=200)  # a file or a pipe: no 80-column wrapping
    for table in tables:
        console.print(table)
    say(verdict)
    if json_file:
        try:
            from .bench.common import write_json

            write_json(report, json_file)
        except OSError as error:
            raise fail(f"cannot write --json {json_file}: {error.strerror or error}", EXIT_FAILED) from None
    failed = report.get("skipped") or []
    if failed:
        say(f"{len(failed)} input(s) could not be read and were skipped (see 'skipped' in the JSON)")
    failed_answers = sum(c.get("failed", 0) for c in report.get("configs", []))  # batch runs: answers that failed
    if failed_answers:
        say(f"{failed_answers} answer(s) failed (see 'mismatches' in the JSON)")
    raise typer.Exit(EXIT_FAILED if failed or failed_answers else 0)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"stdcli: warning: {str(message).splitlines()[0] if str(message) else category.__name__}\n"


def main() -> None:
    """Console entry point: unexpected errors become one line (STDCLI_DEBUG=1 shows the traceback), and so do
    Python warnings (e.g. decoding without CUDA graphs)."""
    if not os.environ.get("STDCLI_DEBUG"):
        warnings.formatwarning = _one_line_warning
    try:
        app()
    except KeyboardInterrupt as stop:  # while the command line itself is being built
        sys.exit(stopped(stop).exit_code)
    except Exception as error:  # the last line of defence against tracebacks
        if os.environ.get("STDCLI_DEBUG"):
            raise
        if STOPS.first is not None:  # the stop a library turned into an error of its own
            sys.exit(stopped(STOPS.first).exit_code)
        say(f"error: {type(error).__name__}: {error}")
        sys.exit(EXIT_FAILED)
