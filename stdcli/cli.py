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
from .distributed import DistributedError, World
from .engine.options import AUTO, DEFAULT_GAMMA, DEFAULT_K, DRAFT_KINDS, MAX_GAMMA, DecodeOptions
from .errors import STOPS, Terminated
from .inputs import (
    NO_SUCH_PATH,
    AskOptions,
    FrameOptions,
    InputError,
    VideoQuestions,
    collect_videos,
    parse_size,
    plan_questions,
    read_questions,
)
from .model.registry import DEFAULT_MODEL, INFLATE_SHAPES, ModelLoadError, list_models
from .records import JsonlWriter, Record
from .resume import Ledger

if TYPE_CHECKING:
    from .bench.common import BenchItem
    from .engine.costs import CostMemory
    from .engine.tensor_parallel import TensorParallel
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
TP_HELP = ("Tensor parallel: split the language model over N GPUs, one process each, started by torchrun: "
           "torchrun --nproc-per-node N -m stdcli {command} --tp N ...")


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


class Voice:
    """Which lines `say` writes. One process, or rank 0 of several: every line. The other ranks (docs/distributed.md):
    errors only, and none before the start of the run: what a rank can find wrong before it, every rank finds alike
    in the same command line, and rank 0 says it."""

    def __init__(self) -> None:
        self.rank = 0
        self.started = False

    def hear(self, world: World) -> None:
        """A command begins as this rank of `world`."""
        self.rank, self.started = world.rank, False

    def listen(self) -> None:
        """An invocation begins: as the rank the environment says (a command checks it, and says what is wrong)."""
        try:
            self.hear(World.from_env())
        except DistributedError:
            self.hear(World())

    def allows(self, message: str) -> bool:
        return self.rank == 0 or (self.started and message.startswith("error:"))


VOICE = Voice()


def say(message: str) -> None:
    """One plain line on stderr (not Rich: it would wrap long lines at 80 columns when stderr is a file)."""
    if VOICE.allows(message):
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
        VOICE.listen()
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
             "stdin; the last argument is the question. With -q (repeatable) or --questions, every argument is a "
             "video, and each video is read, encoded and prefilled once for all its questions (answers identical "
             f"to asking them one at a time).\n\n{BUILTIN_NOTE}")
@ends_cleanly
def ask(
    arguments: Annotated[list[str] | None, typer.Argument(
        metavar="VIDEO... [QUESTION]", show_default=False,
        help="Videos, then the question asked of every one (no question here with -q or --questions).",
    )] = None,
    question: Annotated[list[str] | None, typer.Option(
        "--question", "-q", help="A question asked of every video; repeat it for several.", show_default=False,
    )] = None,
    questions: Annotated[Path | None, typer.Option(
        metavar="FILE.jsonl",
        help='Questions, one JSON object per line: {"question": ...} asked of every video, or {"video": PATH, '
        '"question": ...} of that video (a relative PATH is looked up beside the file first).',
        show_default=False,
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
    prefetch: Annotated[
        bool | None,
        typer.Option(
            help="With several videos: load the next ones in the background while the current ones decode "
            "(default: on with a GPU; off on the CPU, where loading competes with the model for the cores).",
            show_default=False,
        ),
    ] = None,
    prefetch_memory: Annotated[
        str | None,
        typer.Option(
            metavar="SIZE",
            help="Most memory the frames loaded ahead may take, e.g. 2G or 512M (default: a quarter of the "
            "available memory, at most 4G); a video larger than this still loads, alone.",
            show_default=False,
        ),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Also decode densely; report measured speedup and whether answers are identical.",
        ),
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print each answer's record, an indented JSON object, instead of its text."),
    ] = False,
    jsonl: Annotated[
        bool,
        typer.Option("--jsonl", help="Print each answer's record, one JSON line, instead of its text."),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(help="Append records to this JSONL file, flushed line by line (needed under torchrun)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip the questions about each video already answered in --output."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", help="No progress or statistics on stderr (errors still)."),
    ] = False,
    trust_remote_code: Annotated[
        bool,
        typer.Option("--trust-remote-code", help="Allow a checkpoint's own Python code (off by default)."),
    ] = False,
    tp: Annotated[int, typer.Option("--tp", help=TP_HELP.format(command="ask"))] = 1,
) -> None:
    world = _world()
    # Everything that can be checked without the model is checked first: a usage error costs no model load.
    videos, asked = _videos_and_question(arguments or [], question or [], questions)
    entries = _read_questions(questions)
    every = [*asked, *(q for _, q in entries)]
    if not all(text.strip() for text in every):
        raise fail("the question is empty")
    options = _ask_options(
        every[0], system, fps, frames, min_frames, max_frames, max_pixels, max_new_tokens, temperature, top_p,
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
    if prefetch_memory is not None and prefetch is False:
        raise fail("--prefetch-memory and --no-prefetch are exclusive")
    if tp > 1 and resume:
        raise fail("--resume is not supported with --tp: every rank must decode the same videos")
    if tp > 1 and "-" in videos:
        raise fail("--tp reads videos from the command line, not from stdin (-): every rank reads the same list")
    try:
        budget = parse_size(prefetch_memory) if prefetch_memory is not None else None
    except InputError as error:
        raise fail(f"--prefetch-memory: {error}") from None
    flagged = bool(question or questions)
    if world.several and tp == 1:  # data parallel; under --tp the ranks of torchrun are one model's
        if output is None:
            raise fail(f"{world.size} ranks write their records to one file: give --output FILE.jsonl")
        if json_out or jsonl:
            raise fail("under several ranks the records go to --output only: drop --json/--jsonl")
        raise typer.Exit(_ask_as_rank(world, videos, asked, entries, flagged, options, output, resume, model, device,
                                      dtype, quiet, trust_remote_code, batch_size))
    todo, ledger, several = _todo(videos, asked, entries, flagged, output, resume, model, quiet)
    left = _answers(todo)
    if not todo:
        raise typer.Exit(0)  # nothing left: not even the model is loaded
    parallel = _tensor_parallel(tp, device)
    if parallel is not None and not parallel.leader:
        _follow(_load(model, device, dtype, True, trust_remote_code, parallel), todo, options, batch_size)
        raise typer.Exit(0)
    writer = _open_output(output)  # before the model: a bad path should not cost a model load
    try:
        lm = _load(model, device, dtype, quiet, trust_remote_code, parallel)
        _check_request(lm, options, todo)
    except typer.Exit:
        if writer:
            writer.close()
        raise
    # with --resume, each video's questions are claimed just before it is read: runs resuming into one file share
    # the work
    work = ledger.claimed(todo) if ledger else todo
    # one video has nothing to overlap with; --compare times decoding, which loading beside it would disturb; on
    # the CPU the model's threads take every core (measured: a folder run 3-6% slower with loading ahead)
    wanted = prefetch if prefetch is not None else (budget is not None or lm.device.type == "cuda")
    ahead = wanted and len(todo) > 1 and not compare and parallel is None
    failures, answered = _run(lm, work, left, options, json_out, jsonl, writer, quiet, batch_size, several,
                              _prefetch_budget(budget) if ahead else None)
    if failures and answered > 1 and not quiet:
        say(f"{failures} of {answered} {'answers' if several else 'videos'} failed (their records say why)")
    raise typer.Exit(EXIT_FAILED if failures else 0)


def _world() -> World:
    """This process's place among torchrun's ranks; `say` speaks as that rank from now on."""
    try:
        world = World.from_env()
    except DistributedError as error:
        raise fail(str(error)) from None
    VOICE.hear(world)
    return world


def _todo(videos: list[str], asked: list[str], entries: list[tuple[str | None, str]], flagged: bool,
          output: Path | None, resume: bool, model: str, quiet: bool
          ) -> tuple[list[VideoQuestions], Ledger | None, bool]:
    """The videos and their questions to answer (those --output does not answer yet, with --resume), the ledger
    of --resume, and whether the run asks more than one question (each answer is then labelled with its question
    and counted as an answer; with one question, as a video). `flagged`: the questions came with -q or
    --questions, so every argument is a video."""
    if "-" in videos and sys.stdin.isatty():
        say("reading video paths from stdin, one per line (end with Ctrl-D)")
    try:
        paths = collect_videos(videos, sys.stdin) if videos or not entries else []
        items = plan_questions(paths, asked, entries)
    except InputError as error:
        missing = str(error).endswith(NO_SUCH_PATH) and flagged
        raise fail(f"{error} (with -q or --questions, every argument is a video)" if missing else str(error)) from None
    if not items:
        raise fail("no videos given (files, folders, or '-' to read paths from stdin)")
    several = _asks_several(items)
    ledger = Ledger(output, model, warn=lambda message: say(f"warning: {message}")) if resume and output else None
    todo = ledger.todo(items) if ledger else items
    total, left = _answers(items), _answers(todo)
    if left < total and not quiet:
        say(f"resuming: {total - left} of {total} {'questions' if several else 'videos'} already answered in "
            f"{output}")
    return todo, ledger, several


def _ask_as_rank(world: World, videos: list[str], asked: list[str], entries: list[tuple[str | None, str]],
                 flagged: bool, options: AskOptions, output: Path, resume: bool, model: str, device: str, dtype: str,
                 quiet: bool, trust_remote_code: bool, batch_size: int) -> int:
    """`stdcli ask` as one rank of several (stdcli/distributed.py): its share of the videos, its records appended
    to `output` as they end, then the finish line; returns its exit status."""
    from .distributed import STALE_S, estimated_work, rank_device, start
    from .model.registry import resolve_model

    try:
        device = rank_device(world, device)
    except DistributedError as error:
        raise fail(str(error)) from None
    family = resolve_model(model).family  # before the model loads: the family's sampling rules, for the estimates

    def plan_videos() -> list[VideoQuestions] | int:
        try:
            todo = _todo(videos, asked, entries, flagged, output, resume, model, quiet)[0]
            _writer(output).close()  # a bad --output is said once, here, rather than by every rank
            return todo
        except typer.Exit as stop:
            return stop.exit_code

    try:
        plan, finish = start(world, device, plan_videos,
                             lambda item: len(item.questions) * estimated_work(item.video, family, options.frames))
    except DistributedError as error:
        raise fail(str(error)) from None
    VOICE.started = True
    if plan.code is not None:
        return plan.code
    mine = plan.shares[world.rank]
    every = [item for share in plan.shares for item in share]
    total, several = _answers(every), _asks_several(every)
    if not total:
        return 0  # --resume found every video answered: no rank loads the model, none waits for another
    if not quiet:
        unit = "answers" if several else "videos"
        say(f"{world.size} ranks share {total} {unit} (rank 0: {_answers(mine)}); each "
            f"record goes to {output} as it ends")
    failures = records = 0
    if mine:
        writer = _writer(output)
        try:
            lm = _load(model, device, dtype, quiet or world.rank > 0, trust_remote_code)
            _check_request(lm, options, mine)
        except typer.Exit:
            writer.close()
            raise
        failures, records = _run(lm, mine, _answers(mine), options, False, False, writer,
                                 quiet or world.rank > 0, batch_size, several, print_answers=False)
    finished = finish.cross(records, failures)
    if finished is None:
        say("warning: the rendezvous store went away: how the other ranks ended is not known; --resume answers "
            "what has no record")
    elif finished.lost:
        say(f"warning: {finished.lost} of {finished.size} ranks did not finish (no sign of life for {STALE_S:.0f} s): "
            "their videos without a record are answered by running again with --resume")
    if finished is not None and (finished.failed or not quiet):
        failed = f", {finished.failed} of them failed (their records say why)" if finished.failed else ""
        say(f"{finished.records} records from {finished.ranks} ranks in {output}{failed}")
    return EXIT_FAILED if failures else 0


def _tensor_parallel(tp: int, device: str) -> TensorParallel | None:
    """This rank's group for --tp N (None for 1); a launch that cannot serve it is a usage error."""
    if tp == 1:
        return None
    from .engine.tensor_parallel import TensorParallelError, check_launch, start
    from .model.loading import pick_device

    try:
        check_launch(tp)
        where = pick_device(device)
    except (TensorParallelError, ModelLoadError) as error:
        raise _fail_once(str(error)) from None
    if where.index is not None:
        raise _fail_once(f"--tp puts each rank on GPU LOCAL_RANK: use --device cuda or auto, not {device}")
    return start(tp, where.type)


def _fail_once(message: str) -> typer.Exit:
    """fail(), said by the first rank of a torchrun launch only: the others end with the same status, silently."""
    if os.environ.get("RANK", "0") != "0":
        return typer.Exit(EXIT_USAGE)
    return fail(message)


def _follow(lm: LoadedModel, items: list[VideoQuestions], options: AskOptions, batch_size: int) -> None:
    """A rank other than the leader under --tp: the leader's decoding step for step, nothing said or written (the
    leader reports, errors included)."""
    from .ask import answer_videos

    _check_request(lm, options, items, said=False)
    answer_videos(lm, items, options, batch_size)


def _videos_and_question(arguments: list[str], asked: list[str], questions: Path | None) -> tuple[list[str], list[str]]:
    """The videos, and the questions asked of every one: with -q or --questions every argument is a video,
    otherwise the question is the last argument (one list, since a question can be anything)."""
    if asked or questions is not None:
        return arguments, asked
    usage = "stdcli ask VIDEO... QUESTION (or VIDEO... -q QUESTION...)"
    if not arguments:
        raise fail(f"give the videos and the question: {usage}")
    if len(arguments) == 1:
        (only,) = arguments
        if only == "-" or Path(only).exists():
            raise fail(f"missing the question after {only}: {usage}")
        raise fail(f"missing the videos before the question: {usage}")
    return arguments[:-1], [arguments[-1]]


def _read_questions(path: Path | None) -> list[tuple[str | None, str]]:
    if path is None:
        return []
    try:
        entries = read_questions(path)
    except InputError as error:
        raise fail(str(error)) from None
    if not entries:
        raise fail(f"--questions {path} holds no questions")
    return entries


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
    return None if output is None else _writer(output)


def _writer(output: Path) -> JsonlWriter:
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


def _load(model: str, device: str, dtype: str, quiet: bool, trust_remote_code: bool = False,
          parallel: TensorParallel | None = None) -> LoadedModel:
    """The model, with the cost memory of earlier runs (the leader's, under --tp); a model that cannot be loaded is
    a usage error."""
    from rich.console import Console

    from .engine.costs import CostMemory
    from .model.loading import load_model

    _quiet_loading_bars(quiet)
    status = Console(stderr=True).status(f"loading {model}") if Display.live_possible(quiet) else nullcontext()
    try:
        with status:
            memory = _cost_memory() if parallel is None or parallel.leader else CostMemory()
            lm = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                            cost_memory=memory, tensor_parallel=parallel)
    except ModelLoadError as error:
        raise _fail_once(str(error)) from None
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


def _bench_as_rank(world: World, items: list[BenchItem], model: str, device: str, dtype: str, quiet: bool,
                   inflate: str | None, settings: dict[str, Any]) -> tuple[LoadedModel, dict[str, Any] | None]:
    """`stdcli bench --batch-size` as one rank of several: the model on this rank's device, its share of the inputs
    (split by work, as `stdcli ask` splits a folder) measured in step with the other ranks; the group's report on
    rank 0, None on the others."""
    from .bench.batches import bench_batches
    from .distributed import estimated_work, process_group, rank_device, split

    if len(items) < world.size:
        raise BenchError(f"{world.size} ranks need at least {world.size} inputs, got {len(items)}")
    try:
        device = rank_device(world, device)
    except DistributedError as error:
        raise BenchError(str(error)) from None
    VOICE.started = True  # from here a rank's errors may be its own (a model that does not fit its GPU)
    lm = _load_for_bench(model, device, dtype, quiet or world.rank > 0, inflate)
    frames = FrameOptions(frames=settings["frames"])
    mine = split(items, [estimated_work(item.video, lm.family, frames) for item in items], world.size)[world.rank]
    try:
        with process_group(world, device) as group:
            return lm, bench_batches(lm, mine, **settings, align=group.barrier, gather=group.gather)
    except DistributedError as error:
        raise BenchError(str(error)) from None


def _check_request(lm: LoadedModel, options: AskOptions, items: list[VideoQuestions], said: bool = True) -> None:
    """A request no video can fit (a question over the context, --frames beyond it) is a usage error, found before
    any video is read. said=False: the exit status alone (a rank whose leader says it)."""
    from .ask import TooLargeError, check_request

    try:
        check_request(lm, options, sorted({q for item in items for q in item.questions}))
    except TooLargeError as error:
        raise (fail(str(error)) if said else typer.Exit(EXIT_USAGE)) from None


def _answers(items: list[VideoQuestions]) -> int:
    """The answers the items ask for: one per question of each video."""
    return sum(len(item.questions) for item in items)


def _asks_several(items: list[VideoQuestions]) -> bool:
    """Whether more than one question is asked: each answer is then labelled with its question, and counted as an
    answer (with one question, as a video)."""
    return len({q.strip() for item in items for q in item.questions}) > 1


def _prefetch_budget(asked: int | None) -> int:
    """--prefetch-memory, or the default: a share of the host memory available now."""
    if asked is not None:
        return asked
    import torch

    from .engine.device import free_memory_bytes
    from .prefetch import default_budget

    return default_budget(free_memory_bytes(torch.device("cpu")))


def _run(lm: LoadedModel, items: Iterable[VideoQuestions], total: int, options: AskOptions, json_out: bool,
         jsonl: bool, writer: JsonlWriter | None, quiet: bool, batch_size: int = 1, several: bool = False,
         prefetch: int | None = None, print_answers: bool = True) -> tuple[int, int]:
    """Answer every question about every video (in order; with a batch, in the order answers end); returns (failed,
    records) counts. `several`: the run asks more than one question, and each answer is labelled with its own.
    `prefetch`: bytes of frames loaded ahead (answer_videos). Ctrl-C keeps every finished record.
    print_answers=False: nothing on stdout (the records go to `writer`)."""
    from .ask import answer_videos

    failures = records = 0
    streaming = batch_size == 1  # several answers decoded together would interleave: they print whole, as they end
    current: str | None = None
    try:
        with Display(total, quiet=quiet, stream_answers=print_answers and not (json_out or jsonl),
                     unit="answers" if several else "videos") as display:

            def started(video: str, question: str) -> None:
                nonlocal current
                if current is None:
                    current = f"{video} [{question}]" if several else video
                    display.video_started(current, options.mode)

            def text(video: str, delta: str, stats: Any) -> None:
                display.text(delta, stats)

            def finished(record: Record) -> None:
                nonlocal failures, records, current
                started(record.video, record.question)
                if not streaming and record.answer:
                    display.text(record.answer, None)
                if writer:
                    writer.write(record)
                failures += not record.ok
                records += 1
                printed = record.to_json(pretty=True) if json_out else record.to_json() if jsonl else None
                display.video_finished(record, printed)
                current = None

            answer_videos(lm, items, options, batch_size, finished, on_text=text if streaming else None,
                          on_start=started, warn=say, prefetch=prefetch)
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
            "for qwen3.5), or tiny; 72b for qwen2-vl (over several GPUs: --tp).",
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
    tp: Annotated[int, typer.Option("--tp", help="--random-init: " + TP_HELP.format(command="bench"))] = 1,
) -> None:
    from rich.console import Console

    if tp != 1 and not random_init:
        raise _fail_once("--tp goes with --random-init (the benchmarks on videos run on one device)")
    world = _world()
    grouped = world.several and tp == 1  # data parallel; under --tp the ranks of torchrun are one model's
    parallel = _tensor_parallel(tp, device)
    leader = parallel is None or parallel.leader
    progress = None if quiet or not leader else (lambda message: say(f"bench: {message}"))
    lm = None
    try:
        if grouped and (random_init or not batch_size):
            raise BenchError(f"under {world.size} ranks `stdcli bench` measures the folder throughput of the group: "
                             "give --batch-size (without --random-init)")
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
                tensor_parallel=parallel,
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
                settings = {"batch_sizes": batch_sizes, "gammas": gammas or [DEFAULT_GAMMA], "k": one_k,
                            "draft": one_draft, "frames": one_frames, "max_new_tokens": max_new_tokens,
                            "rounds": repeat or 1, "progress": progress}
                if grouped:
                    lm, group_report = _bench_as_rank(world, items, model or DEFAULT_MODEL, device, dtype, quiet,
                                                      inflate, settings)
                    if group_report is None:  # another rank's measurements: rank 0 reports them
                        raise typer.Exit(0)
                    report = group_report
                else:
                    lm = _load_for_bench(model or DEFAULT_MODEL, device, dtype, quiet, inflate)
                    report = bench_batches(lm, items, **settings)
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
        raise (fail(str(error)) if leader else typer.Exit(EXIT_USAGE)) from None
    finally:
        if lm is not None:
            lm.engine.memory.save()
    if not leader:  # the leader reports its own measurements
        raise typer.Exit(0)
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
