"""`stdcli` end to end, on a tiny random Qwen2-VL checkpoint loaded by path, as a user's download would be.

Most runs are in-process (Typer's CliRunner: seconds saved per run on importing torch and transformers); a few are
real `python -m stdcli` processes, for what only a process shows: the real stdin, exit status, stray output
(tracebacks, progress bars, colour codes) and Ctrl-C.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from stdcli.cli import app
from stdcli.display import Display
from stdcli.engine.stats import DecodeStats
from stdcli.model import registry
from stdcli.model.registry import REGISTRY
from stdcli.records import EXTRA_KEYS, RECORD_KEYS, TIMING_KEYS, Record
from tests.videos import damage_frames, write_video

REPO = Path(__file__).resolve().parent.parent
QUESTION = "What happens?"
FAST = ["--max-new-tokens", "6"]  # short answers: the checkpoint is random, only the plumbing is under test
COMPARE_KEYS = {"identical", "dense_answer", "dense_tokens_per_s", "decode_speedup", "total_speedup",
                "decode_speedup_range", "runs", "note"}
ANSI = "\x1b["
# Variables that make Rich colour or draw live displays even where stderr is not a terminal.
TERMINAL_VARIABLES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE")


@pytest.fixture(autouse=True)
def plain_terminal(monkeypatch):
    for variable in TERMINAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> str:
    return str(tiny_checkpoint("qwen2-vl"))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> str:
    """One small readable video, outside any folder a test scans."""
    return write_video(tmp_path_factory.mktemp("single") / "good.mp4", frames=20)


def make_folder(root: Path, names: list[str]) -> Path:
    """Good videos at `names` (paths inside root, any container), plus a file that is not a video."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / name, frames=20)
    (root / "notes.txt").write_text("not a video, and not named like one\n")
    return root


def ask(*args: str, model: str, input: str | None = None):
    # FAST first: an option a test passes again overrides it (Click keeps the last value)
    result = CliRunner().invoke(app, ["ask", *FAST, "--model", model, *args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def lines(text: str) -> list[str]:
    return text.splitlines()


def records_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in lines(stdout)]


def check_record(record: dict, video: str, mode: str = "std") -> None:
    """The record contract (README, "Records"; plus the documented extra keys): exact keys and types."""
    assert list(record) == [*RECORD_KEYS, *EXTRA_KEYS]
    assert set(record["timings"]) == set(TIMING_KEYS)
    assert (record["video"], record["question"], record["mode"]) == (video, QUESTION, mode)
    assert isinstance(record["model"], str)
    if record["error"] is not None:
        assert set(record["error"]) == {"type", "message"}
        assert isinstance(record["error"]["type"], str) and record["error"]["type"]
        assert isinstance(record["error"]["message"], str) and "\n" not in record["error"]["message"]
        # nothing that did not happen is reported
        always = ("video", "question", "model", "mode", "timings", "error")
        assert all(record[key] is None for key in RECORD_KEYS if key not in always)
        assert all(value is None for value in record["timings"].values())
        return
    assert isinstance(record["answer"], str)
    for key in ("frames", "visual_tokens", "prompt_tokens", "new_tokens"):
        assert isinstance(record[key], int) and record[key] > 0, key
    assert 0 < record["visual_tokens"] < record["prompt_tokens"]
    assert 1 <= record["new_tokens"] <= 6
    assert all(isinstance(v, float) and v >= 0 for v in record["timings"].values())
    assert record["timings"]["total_s"] >= record["timings"]["prefill_s"]
    assert isinstance(record["warnings"], list)
    if mode == "std":
        assert isinstance(record["k"], int) and (record["gamma"] == "auto" or isinstance(record["gamma"], int))
        assert record["acceptance_rate"] is None or 0 <= record["acceptance_rate"] <= 1
        steps = sum(record["gammas"].values())  # cycles and dense steps: each commits at least one token
        assert (steps == 0) == (record["new_tokens"] == 1) and steps <= record["new_tokens"] - 1
        assert all(int(g) >= 0 and n > 0 for g, n in record["gammas"].items())
        assert record["dense_share"] is None if record["new_tokens"] == 1 else 0 <= record["dense_share"] <= 1
    else:
        assert record["k"] is None and record["gamma"] is None
        assert record["gammas"] is None and record["dense_share"] is None
        assert record["acceptance_rate"] is None and record["mean_accepted_length"] is None
    for key in ("tokens_per_s", "acceptance_rate", "mean_accepted_length", "speedup_est"):
        assert record[key] is None or isinstance(record[key], float), key


# --- what stdout carries -----------------------------------------------------------------------------------------


def test_single_file_streams_its_answer_to_stdout_and_statistics_to_stderr(model, good, tmp_path):
    log = tmp_path / "log.jsonl"
    result = ask(good, QUESTION, "--output", str(log), model=model)
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    check_record(record, good)
    # stdout is the answer and nothing else: exactly what the record says, streamed piece by piece
    assert result.stdout == record["answer"] + "\n"
    (stats,) = lines(result.stderr)
    assert stats.startswith(f"{good}: {record['new_tokens']} tokens, {record['frames']} frames")
    assert ANSI not in result.stdout + result.stderr


def test_folder_is_searched_recursively_in_sorted_order(model, tmp_path):
    folder = make_folder(tmp_path, ["b.mp4", "a/z.mkv", "a/c.m4v", "d.MOV"])
    result = ask(str(folder), QUESTION, "--jsonl", model=model)
    assert result.exit_code == 0, result.output
    records = records_of(result.stdout)
    expected = [str(folder / name) for name in ("a/c.m4v", "a/z.mkv", "b.mp4", "d.MOV")]
    assert [r["video"] for r in records] == expected
    for record, video in zip(records, expected, strict=True):
        check_record(record, video)
        assert record["error"] is None
    assert len(lines(result.stderr)) == len(expected)  # one statistics line per video
    assert ANSI not in result.stdout + result.stderr


def test_streamed_answers_of_several_videos_have_headers(model, tmp_path):
    folder = make_folder(tmp_path, ["a.mp4", "b.mp4"])
    log = tmp_path / "log.jsonl"
    result = ask(str(folder), QUESTION, "--output", str(log), "--quiet", model=model)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert result.stdout == "".join(f"==> {r['video']} <==\n{r['answer']}\n" for r in records)
    assert result.stderr == ""  # --quiet: no statistics


def test_json_prints_one_object_per_video(model, tmp_path):
    folder = make_folder(tmp_path, ["a.mp4", "b.mp4"])
    result = ask(str(folder), QUESTION, "--json", model=model)
    assert result.exit_code == 0, result.output
    decoder, text, objects, position = json.JSONDecoder(), result.stdout, [], 0
    while rest := text[position:].lstrip():
        obj, position = decoder.raw_decode(text, len(text) - len(rest))
        objects.append(obj)
    assert [o["video"] for o in objects] == [str(folder / "a.mp4"), str(folder / "b.mp4")]
    for obj in objects:
        check_record(obj, obj["video"])
    assert "\n  \"video\"" in text  # indented for people, unlike --jsonl


def test_stdin_lists_paths(model, good, tmp_path):
    folder = make_folder(tmp_path / "folder", ["x.mp4", "y/z.mp4"])
    missing = str(tmp_path / "gone.mp4")
    stdin = f"{good}\n\n  {missing}  \n{folder}\r\n"  # blank lines and stray spaces are ignored, folders searched
    result = ask("-", QUESTION, "--jsonl", model=model, input=stdin)
    assert result.exit_code == 1, result.output  # the missing file is a failed video, not a usage error
    records = records_of(result.stdout)
    assert [r["video"] for r in records] == [good, missing, str(folder / "x.mp4"), str(folder / "y/z.mp4")]
    for record in records:
        check_record(record, record["video"])
    assert [r["error"] is None for r in records] == [True, False, True, True]
    assert records[1]["error"]["type"] == "VideoError" and "no such file" in records[1]["error"]["message"]


def test_answers_are_the_same_through_every_output(model, good):
    """Streaming, --json and --jsonl are views of one decoding: greedy answers agree. A fixed gamma makes the
    schedule of drafts deterministic (gamma auto chooses from measured times, so its counts may differ between
    runs); then everything but the measured times agrees."""
    streamed = ask(good, QUESTION, "--gamma", "2", model=model).stdout
    (as_line,) = records_of(ask(good, QUESTION, "--gamma", "2", "--jsonl", model=model).stdout)
    as_object = json.loads(ask(good, QUESTION, "--gamma", "2", "--json", model=model).stdout)
    assert streamed == as_line["answer"] + "\n"
    measured = ("timings", "tokens_per_s", "speedup_est")
    assert as_object == {**as_line, **{key: as_object[key] for key in measured}}
    auto = records_of(ask(good, QUESTION, "--jsonl", model=model).stdout)[0]
    assert auto["answer"] == as_line["answer"]


# --- --output and --resume ---------------------------------------------------------------------------------------


def test_output_appends_and_resume_answers_only_what_is_missing(model, tmp_path):
    folder = make_folder(tmp_path / "videos", ["a.mp4", "b.mp4"])
    log = tmp_path / "out" / "log.jsonl"  # its folder is made
    first = ask(str(folder), QUESTION, "--output", str(log), "--jsonl", model=model)
    assert first.exit_code == 0, first.output
    written = log.read_text()
    assert written == first.stdout  # the same records, one flushed line each
    assert [r["video"] for r in records_of(written)] == [str(folder / "a.mp4"), str(folder / "b.mp4")]

    again = ask(str(folder), QUESTION, "--output", str(log), "--resume", "--jsonl", model=model)
    assert again.exit_code == 0, again.output
    assert again.stdout == ""
    assert lines(again.stderr) == [f"stdcli: resuming: 2 of 2 videos already answered in {log}"]
    assert log.read_text() == written

    write_video(folder / "c.mp4", frames=20)
    (folder / "broken.mp4").write_bytes(b"\x00\x01garbage" * 64)
    # "./" and the like do not hide an answered video from --resume
    dotted = [os.path.join(folder, ".", "a.mp4"), str(folder)]
    third = ask(*dotted, QUESTION, "--output", str(log), "--resume", "--jsonl", model=model)
    assert third.exit_code == 1, third.output
    new = records_of(third.stdout)
    assert [r["video"] for r in new] == [str(folder / "broken.mp4"), str(folder / "c.mp4")]
    assert "resuming: 3 of 5 videos already answered" in third.stderr  # a.mp4 named twice
    assert records_of(log.read_text()) == records_of(written) + new

    # a failed video is not "answered": --resume tries it again, and only it
    fourth = ask(str(folder), QUESTION, "--output", str(log), "--resume", "--jsonl", model=model)
    assert [r["video"] for r in records_of(fourth.stdout)] == [str(folder / "broken.mp4")]
    assert fourth.exit_code == 1

    # without --resume, --output appends: nothing already there is lost
    fifth = ask(str(folder / "a.mp4"), QUESTION, "--output", str(log), model=model)
    assert fifth.exit_code == 0
    assert len(log.read_text().splitlines()) == len(records_of(written) + new) + 2


def test_resume_matches_question_and_model(model, good, tmp_path):
    log = tmp_path / "log.jsonl"
    assert ask(good, QUESTION, "--output", str(log), model=model).exit_code == 0
    other = ask(good, "What colour is it?", "--output", str(log), "--resume", model=model)
    assert other.exit_code == 0 and other.stdout.strip() and "resuming" not in other.stderr
    assert len(log.read_text().splitlines()) == 2


def test_resume_survives_a_cut_off_last_line(model, good, tmp_path):
    log = tmp_path / "log.jsonl"
    assert ask(good, QUESTION, "--output", str(log), model=model).exit_code == 0
    with log.open("a") as f:
        f.write('{"video": "half a rec')  # a run killed mid-write
    result = ask(good, QUESTION, "--output", str(log), "--resume", "--jsonl", model=model)
    assert result.exit_code == 0 and result.stdout == ""
    result = ask(good, "Another question?", "--output", str(log), "--resume", model=model)
    assert result.exit_code == 0
    kept = log.read_text().splitlines()
    assert len(kept) == 3 and kept[1] == '{"video": "half a rec'  # the next record starts on its own line
    assert json.loads(kept[2])["question"] == "Another question?"


def test_resume_knows_a_video_by_its_file_and_a_question_by_its_words(model, tmp_path, monkeypatch):
    """The same video named another way (absolute, ./ from inside its folder) and the same question with other
    surrounding whitespace are answered already; the record keeps the path and question as given."""
    folder = make_folder(tmp_path / "videos", ["a.mp4", "b.mp4"])
    log = tmp_path / "log.jsonl"
    monkeypatch.chdir(tmp_path)
    first = ask("videos", QUESTION, "--output", str(log), "--jsonl", model=model)
    assert first.exit_code == 0 and [r["video"] for r in records_of(first.stdout)] == ["videos/a.mp4", "videos/b.mp4"]
    again = ask(str(folder / "a.mp4"), f"  {QUESTION} ", "--output", str(log), "--resume", model=model)
    assert again.exit_code == 0 and again.stdout == "", again.stdout
    monkeypatch.chdir(folder)
    inside = ask("./b.mp4", QUESTION + "\n", "--output", str(log), "--resume", model=model)
    assert inside.exit_code == 0 and inside.stdout == ""
    assert "resuming: 1 of 1 videos already answered" in inside.stderr


def test_resume_warns_about_lines_it_cannot_read(model, good, tmp_path):
    log = tmp_path / "log.jsonl"
    assert ask(good, QUESTION, "--output", str(log), model=model).exit_code == 0
    with log.open("a") as f:
        f.write("not json at all\n[1, 2]\n")
    result = ask(good, QUESTION, "--output", str(log), "--resume", model=model)
    assert result.exit_code == 0 and result.stdout == ""
    warnings = [line for line in lines(result.stderr) if "warning" in line]
    assert warnings == [f"stdcli: warning: {log}: lines 2-3 are not records and were ignored"], result.stderr


def test_concurrent_resume_runs_share_the_work(model, tmp_path):
    """Two --resume runs over one output file at once: each video is answered once, by one of them."""
    folder = make_folder(tmp_path / "videos", [f"v{i}.mp4" for i in range(6)])
    log = tmp_path / "log.jsonl"
    arguments = ["ask", str(folder), QUESTION, "--model", model, "--output", str(log), "--resume", "--quiet",
                 "--max-new-tokens", "24"]
    runs = [run_process(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    videos = [json.loads(line)["video"] for line in log.read_text().splitlines()]
    assert sorted(videos) == sorted(str(folder / f"v{i}.mp4") for i in range(6))  # once each


# --- failures ----------------------------------------------------------------------------------------------------


def test_broken_files_among_good_ones(model, tmp_path):
    folder = make_folder(tmp_path, ["a.mp4", "d.mp4"])
    (folder / "b_garbage.mp4").write_bytes(os.urandom(4096))
    (folder / "c_empty.mkv").write_bytes(b"")
    result = ask(str(folder), QUESTION, "--jsonl", "--quiet", model=model)
    assert result.exit_code == 1
    records = records_of(result.stdout)
    assert [Path(r["video"]).name for r in records] == ["a.mp4", "b_garbage.mp4", "c_empty.mkv", "d.mp4"]
    for record in records:
        check_record(record, record["video"])
    assert [r["error"] is None for r in records] == [True, False, False, True]
    assert records[1]["error"]["type"] == "VideoError"
    assert records[2]["error"] == {"type": "VideoError", "message": f"{folder / 'c_empty.mkv'}: empty file (0 bytes)"}
    # --quiet: stderr is exactly one line per failed video, naming it once
    errors = lines(result.stderr)
    assert len(errors) == 2
    assert errors[0].startswith(f"stdcli: error: {folder / 'b_garbage.mp4'}: ") and errors[0].count("b_garbage") == 1
    assert errors[1] == f"stdcli: error: {folder / 'c_empty.mkv'}: empty file (0 bytes)"


def test_a_damaged_stretch_is_a_warning_not_a_failure(model, tmp_path):
    path = write_video(tmp_path / "damaged.avi", frames=60, codec="mjpeg", pix_fmt="yuvj420p")
    damage_frames(path, 25, 29)
    result = ask(path, QUESTION, "--frames", "30", "--jsonl", model=model)
    assert result.exit_code == 0, result.output
    (record,) = records_of(result.stdout)
    check_record(record, path)
    (warning,) = record["warnings"]
    assert "could not be decoded, skipped" in warning
    assert f"stdcli: warning: {path}: {warning}" in lines(result.stderr)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{missing}/", QUESTION], "no such file or folder"),
        (["{good}", "{missing}", QUESTION], "no such file or folder"),
        (["{empty}", QUESTION], "folder holds no videos"),
        (["{good}", QUESTION, "--fps", "1", "--frames", "4"], "--fps and --frames are exclusive"),
        (["{good}", QUESTION, "--fps", "0"], "--fps must be positive"),
        (["{good}", QUESTION, "--fps", "nan"], "--fps must be a positive number"),
        (["{good}", QUESTION, "--fps", "inf"], "--fps must be a positive number"),
        (["{good}", QUESTION, "--temperature", "nan"], "--temperature must be a number >= 0"),
        (["{good}", QUESTION, "--temperature", "inf"], "--temperature must be a number >= 0"),
        (["{good}", QUESTION, "--top-p", "nan"], "--top-p must be in (0, 1]"),
        (["{good}", QUESTION, "--frames", "100", "--max-frames", "50"], "--frames 100 is above --max-frames 50"),
        (["{good}", QUESTION, "--frames", "100000"], "more than the model's context of 32,768 tokens"),
        (["{good}", "many words " * 20000], "the question alone is"),
        (["{good}"], "missing the question"),
        ([], "give the videos and the question"),
        (["{good}", QUESTION, "--device", "tpu"], "unknown device 'tpu'"),
        (["{good}", QUESTION, "--dtype", "int8"], "unknown dtype 'int8'"),
        (["{good}", QUESTION, "--json", "--jsonl"], "--json and --jsonl are exclusive"),
        (["{good}", QUESTION, "--resume"], "--resume needs --output"),
        (["{good}", QUESTION, "--dense", "--compare"], "drop --dense"),
        (["{good}", "  "], "the question is empty"),
        (["{good}", QUESTION, "--bogus"], "No such option: --bogus"),
        (["{good}", QUESTION, "--k", "many"], "Invalid value for '--k'"),
        (["{good}", QUESTION, "--gamma", "0"], "--gamma must be at least 1 (use --dense"),
        (["{good}", QUESTION, "--gamma", "fast"], "--gamma must be auto or a whole number"),
        (["{good}", QUESTION, "--gamma", "16"], "--gamma must be at most 15"),
        (["{good}", QUESTION, "--output", "{empty}"], "cannot write --output"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(model, good, tmp_path, arguments, message):
    (tmp_path / "empty").mkdir()
    values = {"good": good, "missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty")}
    result = ask(*[a.format(**values) for a in arguments], model=model)
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = lines(result.stderr)
    assert line.startswith("stdcli: error: ") and message in line


@pytest.mark.parametrize(
    "name, message",
    [
        ("nobody-here/no-such-model", "not in the local Hugging Face cache and the hub cannot be reached"),
        ("no-such-alias", "is not an alias"),
        ("./no/such/folder", "no such folder"),
    ],
)
def test_unknown_models_are_one_line_usage_errors(good, name, message):
    result = ask(good, QUESTION, model=name)  # conftest sets HF_HUB_OFFLINE: no network is tried
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = lines(result.stderr)
    assert line.startswith("stdcli: error: ") and message in line


def test_the_default_model_says_when_its_weights_are_missing(good, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_DIR", tmp_path / "nothing")  # an install without the package data
    result = CliRunner().invoke(app, ["ask", good, QUESTION])
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = lines(result.stderr)
    assert "built-in model's weights are not in this install yet" in line and "--model" in line


def test_the_builtin_model_answers_a_sample_offline():
    """README's main command: the default model, from the package, on a sample clip; StD equals dense."""
    sample = str(REPO / "samples" / "short_2.mp4")
    result = CliRunner().invoke(app, ["ask", sample, "What happens?", "--jsonl", "--compare"])
    assert result.exit_code == 0, result.output
    (record,) = records_of(result.stdout)
    assert record["model"] == "builtin" and record["error"] is None
    assert record["answer"].startswith("The ") and record["answer"].endswith(".")
    assert record["compare"]["identical"] is True
    assert record["finish_reason"] == "stop"  # it ended its answer itself


def test_records_say_when_an_answer_was_cut_off(model, good):
    (cut,) = records_of(ask(good, QUESTION, "--jsonl", "--max-new-tokens", "3", model=model).stdout)
    assert cut["new_tokens"] == 3 and cut["finish_reason"] == "length"
    (failed,) = records_of(ask("-", QUESTION, "--jsonl", model=model, input=good + ".missing\n").stdout)
    assert failed["error"] is not None and failed["finish_reason"] is None


# --- decoding modes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", ["9", "15"])
def test_any_gamma_up_to_the_limit_decodes(model, good, gamma):
    """Drafts longer than gamma auto's longest (8) work as well, up to the stated limit (15)."""
    (dense,) = records_of(ask(good, QUESTION, "--jsonl", "--dense", "--max-new-tokens", "24", model=model).stdout)
    result = ask(good, QUESTION, "--jsonl", "--gamma", gamma, "--max-new-tokens", "24", model=model)
    assert result.exit_code == 0, result.output
    (record,) = records_of(result.stdout)
    assert record["error"] is None and record["answer"] == dense["answer"]
    assert record["gammas"].get(gamma, 0) > 0  # it really drafted that many


def test_dense_mode_and_compare_agree_with_std(model, good):
    (std,) = records_of(ask(good, QUESTION, "--jsonl", "--k", "2", "--gamma", "4", model=model).stdout)
    (dense,) = records_of(ask(good, QUESTION, "--jsonl", "--dense", model=model).stdout)
    check_record(dense, good, mode="dense")
    check_record(std, good, mode="std")
    assert (std["k"], std["gamma"]) == (2, 4)
    assert std["k"] < std["visual_tokens"]  # the draft really reads a sparse cache
    assert dense["compare"] is None and dense["speedup_est"] is None
    assert dense["answer"] == std["answer"]  # greedy StD is lossless

    result = ask(good, QUESTION, "--jsonl", "--k", "2", "--gamma", "4", "--compare", model=model)
    assert result.exit_code == 0, result.output
    (record,) = records_of(result.stdout)
    check_record(record, good)
    compare = record["compare"]
    assert set(compare) == COMPARE_KEYS
    assert compare["identical"] is True and compare["dense_answer"] == record["answer"] == dense["answer"]
    assert isinstance(compare["dense_tokens_per_s"], float)
    # measured after a warm-up, over several runs of each: a ratio above their spread, or no ratio and a note
    assert compare["runs"] >= 3
    low, high = compare["decode_speedup_range"]
    assert low <= high
    if low <= 1.0 <= high:
        assert compare["decode_speedup"] is None and "no measurable difference" in compare["note"]
    else:
        assert low <= compare["decode_speedup"] <= high and compare["note"] is None
    assert "answers identical" in result.stderr


def test_qwen3_vl_answers_with_std_by_default(tiny_checkpoint, good):
    """A Qwen3-VL checkpoint loaded by path answers like the other families: StD by default, the same answer as
    --dense, its prompt holding the frames' timestamps beside the visual tokens."""
    qwen3 = str(tiny_checkpoint("qwen3-vl"))
    result = ask(good, QUESTION, "--jsonl", "--k", "2", "--gamma", "3", model=qwen3)
    assert result.exit_code == 0, result.output
    (std,) = records_of(result.stdout)
    check_record(std, good, mode="std")
    (dense,) = records_of(ask(good, QUESTION, "--jsonl", "--dense", model=qwen3).stdout)
    assert dense["answer"] == std["answer"] and dense["mode"] == "dense"
    temporal = std["frames"] // 2
    # 64x64 frames: 4 video tokens per temporal patch, each after "<t seconds><|vision_start|>", before vision end
    assert std["visual_tokens"] == 4 * temporal and std["prompt_tokens"] > std["visual_tokens"] + 3 * temporal
    (default,) = records_of(ask(good, QUESTION, "--jsonl", model=qwen3).stdout)
    assert default["mode"] == "std" and default["answer"] == std["answer"]


def test_qwen35_hybrid_answers_by_path(tiny_checkpoint, good):
    """A Qwen3.5 (hybrid) checkpoint loaded by path answers with StD, its prompt Qwen3-VL's plus the empty thought,
    and the answer is whole on stderr's terminal: no note from transformers about its PyTorch kernels in between."""
    from stdcli.cli import KERNEL_FALLBACK

    result = ask(good, QUESTION, "--jsonl", "--k", "2", "--gamma", "3", model=str(tiny_checkpoint("qwen3.5")))
    assert result.exit_code == 0, result.output
    (record,) = records_of(result.stdout)
    check_record(record, good, mode="std")
    assert record["visual_tokens"] == 4 * (record["frames"] // 2) and record["gammas"].get("3", 0) > 0
    assert KERNEL_FALLBACK not in result.stderr


def test_no_speedup_is_shown_where_no_draft_ran(model, good):
    """gamma 4 with an answer shorter than its calibration steps: StD took dense steps only, and says so."""
    result = ask(good, QUESTION, "--jsonl", "--gamma", "4", "--max-new-tokens", "3", "--compare", model=model)
    (record,) = records_of(result.stdout)
    assert record["gammas"] == {"0": 2} and record["speedup_est"] is None
    compare = record["compare"]
    assert compare["decode_speedup"] is None and compare["total_speedup"] is None and compare["runs"] == 0
    assert compare["note"] == "dense steps only: drafting does not pay here"
    (line,) = lines(result.stderr)
    assert "dense steps only: drafting does not pay here" in line and "speedup" not in line


def test_an_estimate_needs_enough_decoding_to_time():
    from stdcli.engine.stats import MIN_ESTIMATE_DECODE_S

    stats = DecodeStats(new_tokens=11, cycles=2, dense_steps=2, dense_step_s=0.01, draft_s=0.03, verify_s=0.02,
                        dense_s=0.02)
    assert stats.decode_s < MIN_ESTIMATE_DECODE_S and stats.speedup_est is None
    stats.draft_s = MIN_ESTIMATE_DECODE_S
    assert stats.speedup_est == pytest.approx(10 * 0.01 / stats.decode_s)
    assert DecodeStats(new_tokens=11, dense_steps=10, dense_step_s=0.1, dense_s=1.0).speedup_est is None  # no draft


def test_live_display_on_a_terminal_keeps_stdout_plain():
    """stderr a terminal, stdout a pipe: the live panel draws on stderr, stdout still gets the bare answers."""
    stdout, stderr = io.StringIO(), io.StringIO()
    console = Console(file=stderr, force_terminal=True, color_system="standard", width=100)
    record = Record("a.mp4", QUESTION, "m", "std", answer="Hello world", frames=4, visual_tokens=8, prompt_tokens=20,
                    new_tokens=2, warnings=[], timings=dict.fromkeys(TIMING_KEYS, 0.5))
    with Display(2, stdout=stdout, console=console) as display:
        assert display.live_enabled and not display.answer_in_panel
        display.video_started("a.mp4", "std")
        display.text("Hello", DecodeStats(new_tokens=1))
        display.text(" world", DecodeStats(new_tokens=2))
        display.video_finished(record, None)
    assert stdout.getvalue() == "==> a.mp4 <==\nHello world\n"
    assert ANSI in stderr.getvalue() and "a.mp4: 2 tokens, 4 frames" in stderr.getvalue()


# --- stdcli models, --version ------------------------------------------------------------------------------------


def test_models_lists_every_alias():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for alias, spec in REGISTRY.items():
        assert alias in result.stdout
        assert spec.repo_id is None or spec.repo_id in result.stdout  # whole, not cut with an ellipsis
    rows = json.loads(CliRunner().invoke(app, ["models", "--json"]).stdout)
    assert [row["name"] for row in rows] == list(REGISTRY)
    aliases = {s.repo_id for s in REGISTRY.values() if s.repo_id}
    assert {row["location"] for row in rows if row["kind"] == "alias"} == aliases
    assert all(row["available"] is False for row in rows if row["kind"] == "alias")  # offline, empty cache
    assert ANSI not in result.stdout


def test_version():
    import stdcli

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"stdcli {stdcli.__version__}\n"


# --- real processes ----------------------------------------------------------------------------------------------


def process_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TERMINAL_VARIABLES and k != "STDCLI_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_process_reads_stdin_and_keeps_stdout_clean(model, tmp_path):
    """`python -m stdcli` as a pipeline stage: paths on stdin, answers streamed on stdout, records in a file."""
    folder = make_folder(tmp_path, ["a.mp4", "b.mkv"])
    (folder / "broken.mp4").write_bytes(b"\x00garbage" * 100)
    paths = [str(folder / "a.mp4"), str(folder / "broken.mp4"), str(folder / "b.mkv")]
    log = tmp_path / "log.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "stdcli", "ask", "-", QUESTION, "--model", model, "--output", str(log), *FAST],
        input="\n".join(paths) + "\n", capture_output=True, text=True, env=process_env(), timeout=300,
    )
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["video"] for r in records] == paths
    assert done.stdout == "".join(f"==> {r['video']} <==\n" + ("" if r["error"] else r["answer"] + "\n")
                                  for r in records)
    err = lines(done.stderr)
    assert len([line for line in err if ": error: " in line]) == 1
    assert err[-1] == "stdcli: 1 of 3 videos failed (their records say why)"
    assert len(err) == 4  # one line per video and the summary: no progress bars ("Loading weights"), no warnings
    assert "Traceback" not in done.stderr
    assert ANSI not in done.stdout + done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
@pytest.mark.parametrize("batch", ["1", "3"])
def test_ctrl_c_keeps_finished_records(model, good, tmp_path, batch):
    log = tmp_path / "log.jsonl"
    many = 300  # far more than can be answered before the signal comes
    (tmp_path / "paths.txt").write_text(f"{good}\n" * many)
    # files, not pipes: a full pipe would block the child where nobody reads it
    with ((tmp_path / "paths.txt").open() as stdin, (tmp_path / "out").open("w") as out,
          (tmp_path / "err").open("w") as err):
        child = subprocess.Popen(
            [sys.executable, "-m", "stdcli", "ask", "-", QUESTION, "--model", model, "--output", str(log), "--jsonl",
             "--max-new-tokens", "24", "--batch-size", batch],
            stdin=stdin, stdout=out, stderr=err, env=process_env(),
            # as from a terminal: a runner started in the background (nohup, `&`) passes SIGINT on as ignored
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 240
            while not (log.exists() and log.read_text().count("\n") >= 1):
                assert child.poll() is None and time.monotonic() < deadline, (tmp_path / "err").read_text()
                time.sleep(0.05)
            child.send_signal(signal.SIGINT)
            assert child.wait(timeout=60) == 130, (tmp_path / "err").read_text()
        finally:
            if child.poll() is None:
                child.kill()
    stderr = (tmp_path / "err").read_text()
    assert "stdcli: interrupted; finished records are kept" in stderr and "Traceback" not in stderr
    kept = log.read_text()
    records = [json.loads(line) for line in kept.splitlines()]  # every record is whole
    assert kept.endswith("\n") and 1 <= len(records) < many
    assert all(r["error"] is None for r in records)
    # stdout has the same records, but perhaps the last: the signal may come between writing the file and stdout
    printed = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert printed in (records, records[:-1])


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory) -> str:
    """The tiny checkpoint with a context of 128 tokens: a few frames of video fill it."""
    from stdcli.model.build import save_tiny_checkpoint

    folder = tmp_path_factory.mktemp("short_context")
    return str(save_tiny_checkpoint("qwen2-vl", folder, text_config={"max_position_embeddings": 128}))


def test_a_video_over_the_context_or_the_memory_is_refused_before_decoding(short_context_model, tmp_path,
                                                                          monkeypatch):
    """What cannot fit is refused with a clear record before its frames are decoded; the other videos go on."""
    from stdcli import ask as ask_module

    short, long = write_video(tmp_path / "short.mp4", frames=8, rate=4), write_video(tmp_path / "long.mp4",
                                                                                     frames=160, rate=4)
    decoded = []
    real = ask_module.sample_frames
    monkeypatch.setattr(ask_module, "sample_frames", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    result = ask(short, long, QUESTION, "--jsonl", "--fps", "4", model=short_context_model)
    assert result.exit_code == 1, result.output
    ok, refused = records_of(result.stdout)
    assert ok["error"] is None and ok["prompt_tokens"] <= 128
    assert refused["error"]["type"] == "TooLargeError"
    assert "more than the model's context of 128 tokens" in refused["error"]["message"]
    assert "fewer --frames" in refused["error"]["message"]

    from stdcli.engine import device

    monkeypatch.setattr(device, "free_memory_bytes", lambda where: 10_000)  # 10 kB: not even the frames fit
    (small,) = records_of(ask(short, QUESTION, "--jsonl", model=short_context_model).stdout)
    assert small["error"]["type"] == "TooLargeError" and "GiB available" in small["error"]["message"]


def test_pipes_and_devices_are_not_called_empty_files(model, tmp_path):
    fifo = tmp_path / "video.fifo"
    os.mkfifo(fifo)
    for path, what in ((str(fifo), "a pipe (FIFO)"), ("/dev/zero", "a device")):
        (record,) = records_of(ask("-", QUESTION, "--jsonl", model=model, input=path + "\n").stdout)
        assert record["error"]["message"] == f"{path}: is {what}, not a video file", record["error"]


def run_process(arguments: list[str], **options):
    return subprocess.Popen([sys.executable, "-m", "stdcli", *arguments], env=process_env(), text=True, **options)


def test_a_closed_stdout_ends_the_run_quietly(model, tmp_path):
    """`stdcli ask ... | head -1`: when the reader goes away, stdcli stops without a message or a traceback, with
    the exit status a shell gives a process that SIGPIPE ended (141); what was finished is in --output."""
    folder = make_folder(tmp_path / "videos", ["a.mp4", "b.mp4", "c.mp4"])
    log = tmp_path / "log.jsonl"
    child = run_process(["ask", str(folder), QUESTION, "--model", model, "--jsonl", "--output", str(log), *FAST],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = child.stdout.readline()
    child.stdout.close()  # as head -1 does
    assert json.loads(first)["video"] == str(folder / "a.mp4")
    assert child.wait(timeout=120) == 141
    stderr = child.stderr.read()
    assert "Traceback" not in stderr and "error" not in stderr, stderr
    assert json.loads(log.read_text().splitlines()[0]) == json.loads(first)


@pytest.mark.parametrize("signal_number, code, said", [(signal.SIGTERM, 143, "terminated"),
                                                      (signal.SIGINT, 130, "interrupted")])
def test_a_signal_during_start_up_is_one_line(model, good, signal_number, code, said):
    """Ctrl-C or SIGTERM while Python and torch are still loading: one line, no traceback."""
    child = run_process(["ask", good, QUESTION, "--model", model], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.8)
    child.send_signal(signal_number)
    out, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines() == [f"stdcli: {said}"], err


def test_sigterm_keeps_finished_records(model, good, tmp_path):
    log = tmp_path / "log.jsonl"
    child = run_process(["ask", "-", QUESTION, "--model", model, "--output", str(log), "--max-new-tokens", "24"],
                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    child.stdin.write(f"{good}\n" * 300)
    child.stdin.close()
    deadline = time.monotonic() + 240
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 143
    assert "stdcli: terminated; finished records are kept" in child.stderr.read()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert 1 <= len(records) < 300 and all(r["error"] is None for r in records)


def test_python_warnings_print_as_one_line():
    from stdcli.cli import _one_line_warning

    text = _one_line_warning(RuntimeWarning("decoding without CUDA graphs (slower): X\nsecond line"), RuntimeWarning,
                             "/a/b.py", 3)
    assert text == "stdcli: warning: decoding without CUDA graphs (slower): X\n"
