"""The `stdcli` command: thin Typer commands over the library."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .ask import AskOptions, FrameOptions, InputError, answer_video, collect_videos
from .display import Display
from .models import DEFAULT_MODEL, ModelLoadError, list_models, load_model
from .records import JsonlWriter, answered_keys, record_key, to_json
from .std import DEFAULT_GAMMA, DEFAULT_K, DecodeOptions

BUILTIN_NOTE = (
    "The built-in model (the default) was trained only on generated videos of coloured shapes that move, "
    "appear, disappear and change colour (see samples/); for real footage pass --model with real weights, "
    "e.g. --model qwen2-vl."
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Ask questions about videos with a Video-LLM, decoded losslessly faster with Sparse-to-Dense (StD).",
)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"stdcli: error: {message}", markup=False, highlight=False)
    return typer.Exit(code)


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


@app.command(help=f"Answer QUESTION about each VIDEO (files, folders, or - for paths on stdin).\n\n{BUILTIN_NOTE}")
def ask(
    videos: Annotated[list[str], typer.Argument(help="Video files, folders (searched recursively), or - (stdin).")],
    question: Annotated[str, typer.Argument(help="The question, asked of every video.")],
    model: Annotated[str, typer.Option(help="Alias (see `stdcli models`), Hugging Face id, or local folder.")] = DEFAULT_MODEL,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    fps: Annotated[Optional[float], typer.Option(help="Frames per second to sample (default: the model's).")] = None,
    frames: Annotated[Optional[int], typer.Option(help="Exact number of frames (exclusive with --fps).")] = None,
    min_frames: Annotated[Optional[int], typer.Option(help="At least this many frames.")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="At most this many frames.")] = None,
    max_pixels: Annotated[Optional[int], typer.Option(help="Downscale frames to at most this many pixels.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy (identical to ordinary greedy decoding).")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (with --temperature > 0).")] = 1.0,
    seed: Annotated[Optional[int], typer.Option(help="Seed for sampling.")] = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt.")] = None,
    dense: Annotated[bool, typer.Option("--dense", help="Plain dense decoding (the baseline) instead of StD.")] = False,
    k: Annotated[int, typer.Option("--k", help="StD: visual tokens kept per layer and KV head.")] = DEFAULT_K,
    gamma: Annotated[int, typer.Option(help="StD: tokens drafted per cycle.")] = DEFAULT_GAMMA,
    compare: Annotated[bool, typer.Option("--compare", help="Also decode densely; report measured speedup and whether answers are identical.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per video instead of the answer.")] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Print one JSON line per video instead of the answer.")] = False,
    output: Annotated[Optional[Path], typer.Option(help="Append records to this JSONL file, flushed line by line.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip videos already answered in --output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or statistics on stderr (errors still).")] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow a checkpoint's own Python code (off by default).")] = False,
) -> None:
    options = _ask_options(
        question, system, fps, frames, min_frames, max_frames, max_pixels, max_new_tokens, temperature, top_p,
        seed, dense, k, gamma, compare,
    )
    if json_out and jsonl:
        raise fail("--json and --jsonl are exclusive")
    if resume and output is None:
        raise fail("--resume needs --output FILE.jsonl")
    try:
        paths = collect_videos(videos, sys.stdin)
    except InputError as error:
        raise fail(str(error))
    try:
        lm = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    except ModelLoadError as error:
        raise fail(str(error))
    done = answered_keys(output) if resume and output else set()
    todo = [p for p in paths if (p, question, lm.name) not in done]
    if len(todo) < len(paths) and not quiet:
        err.print(f"resuming: {len(paths) - len(todo)} of {len(paths)} videos already answered in {output}", markup=False)
    failures = _run(lm, todo, options, json_out, jsonl, output, quiet)
    raise typer.Exit(1 if failures else 0)


def _ask_options(question, system, fps, frames, min_frames, max_frames, max_pixels, max_new_tokens, temperature,
                 top_p, seed, dense, k, gamma, compare) -> AskOptions:
    checks = [
        (fps is not None and frames is not None, "--fps and --frames are exclusive"),
        (fps is not None and fps <= 0, "--fps must be positive"),
        (frames is not None and frames < 1, "--frames must be at least 1"),
        (min_frames is not None and min_frames < 1, "--min-frames must be at least 1"),
        (max_frames is not None and max_frames < 1, "--max-frames must be at least 1"),
        (min_frames is not None and max_frames is not None and min_frames > max_frames, "--min-frames is above --max-frames"),
        (max_pixels is not None and max_pixels < 28 * 28, "--max-pixels must be at least 784"),
        (max_new_tokens < 1, "--max-new-tokens must be at least 1"),
        (temperature < 0, "--temperature must be >= 0"),
        (not 0 < top_p <= 1, "--top-p must be in (0, 1]"),
        (k < 1, "--k must be at least 1"),
        (gamma < 1, "--gamma must be at least 1 (use --dense for plain decoding)"),
        (dense and compare, "--compare compares StD with dense: drop --dense"),
        (not question.strip(), "the question is empty"),
    ]
    for bad, message in checks:
        if bad:
            raise fail(message)
    decode = DecodeOptions(
        max_new_tokens=max_new_tokens, k=k, gamma=0 if dense else gamma, temperature=temperature, top_p=top_p, seed=seed
    )
    frame_options = FrameOptions(fps=fps, frames=frames, min_frames=min_frames, max_frames=max_frames, max_pixels=max_pixels)
    return AskOptions(question=question, system=system, frames=frame_options, decode=decode, compare=compare)


def _run(lm, paths: list[str], options: AskOptions, json_out: bool, jsonl: bool, output: Path | None, quiet: bool) -> int:
    """Answer every path in order; returns the number of failures. Ctrl-C keeps every finished record."""
    writer = JsonlWriter(output) if output else None
    failures = 0
    try:
        with Display(len(paths), quiet=quiet, stream_answers=not (json_out or jsonl)) as display:
            for path in paths:
                display.video_started(path, options.mode)
                record = answer_video(lm, path, options, on_text=display.text)
                if writer:
                    writer.write(record)
                failures += record["error"] is not None
                printed = to_json(record, pretty=True) if json_out else to_json(record) if jsonl else None
                display.video_finished(record, printed)
    except KeyboardInterrupt:
        err.print("stdcli: interrupted; finished records are kept", markup=False)
        raise typer.Exit(130)
    finally:
        if writer:
            writer.close()
    return failures


@app.command(help="List model aliases, where each resolves, and whether it is available offline.")
def models(json_out: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False) -> None:
    rows = list_models()
    if json_out:
        import json

        print(json.dumps([row.__dict__ for row in rows], indent=2))
        return
    table = Table("alias", "resolves to", "family", "offline", "note")
    for row in rows:
        table.add_row(row.name, row.location, row.family or "-", "yes" if row.available else "no", row.detail)
    Console().print(table)


def main() -> None:
    """Console entry point: unexpected errors become one line (STDCLI_DEBUG=1 shows the traceback)."""
    try:
        app()
    except Exception as error:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("STDCLI_DEBUG"):
            raise
        err.print(f"stdcli: error: {type(error).__name__}: {' '.join(str(error).split())}", markup=False, highlight=False)
        sys.exit(1)
