"""Several questions about one video: the video is read, encoded and prefilled once, each question continues from
the cached prefix, and every answer is token for token the one of asking that question alone.

Library cases run every family the tests build (float32, tiny random checkpoints, short answers); command-line
cases run the tiny Qwen2-VL, as tests/test_cli.py does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stdcli import AskOptions, VideoQuestions, answer_questions, answer_videos
from stdcli.ask import decode_answer, sample_video
from stdcli.cli import app
from stdcli.engine import DecodeOptions, SharedPrefix
from stdcli.inputs import FrameOptions
from stdcli.model import build
from stdcli.model.loading import load_model
from stdcli.model.prompts import build_inputs, shared_prefix_length, with_question
from stdcli.records import TIMING_KEYS
from tests.videos import write_video

QUESTIONS = ("What happens?", "How many red circles are there? Answer briefly, please.", "¿Qué pasa? 视频 🎥")
TOKENS = 8
FRAMES = FrameOptions(frames=4)  # every family: a few visual tokens, more than K


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("questions")
    return [write_video(folder / f"clip{i}.mp4", frames=n, width=64, height=48, rate=4) for i, n in enumerate((12, 8))]


@pytest.fixture(scope="module")
def lms(tiny_checkpoint, test_device):
    loaded: dict = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = load_model(str(tiny_checkpoint(family)), device=test_device, dtype="float32")
        return loaded[family]

    return get


def options_for(gamma: int | str, question: str = QUESTIONS[0]) -> AskOptions:
    return AskOptions(question, frames=FRAMES, decode=DecodeOptions(max_new_tokens=TOKENS, k=3, gamma=gamma))


REFERENCES: dict[tuple[str, str, str], list[int]] = {}


def alone(lm, video: str, question: str) -> list[int]:
    """transformers' greedy decoding of the question asked alone: the reference every answer must equal."""
    key = (lm.family, video, question)
    if key not in REFERENCES:
        inputs = build_inputs(lm, sample_video(lm, video, FRAMES), question)
        out = lm.model.generate(**inputs, do_sample=False, max_new_tokens=TOKENS, eos_token_id=list(lm.eos_token_ids))
        tokens = out[0, inputs["input_ids"].shape[1]:].tolist()
        REFERENCES[key] = tokens[: next((i + 1 for i, t in enumerate(tokens) if t in lm.eos_token_ids), len(tokens))]
    return REFERENCES[key]


@contextmanager
def vision_calls(lm) -> Iterator[list[int]]:
    """A list that grows by one each time the model's vision tower runs, inside the block."""
    tower = getattr(lm.model.model, "visual", None) or lm.model.model.vision_tower
    calls: list[int] = []
    hook = tower.register_forward_hook(lambda *args: calls.append(1))
    try:
        yield calls
    finally:
        hook.remove()


# --- the prompts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", build.FAMILIES)
def test_each_prompt_is_what_the_processor_makes_of_its_question(family, lms, clips):
    """The processor runs on the frames once; every question's prompt is that prompt up to the question, then its
    own tokens: exactly what the processor makes of the question, pixels shared, not copied."""
    lm = lms(family)
    sampled = sample_video(lm, clips[0], FRAMES)
    for system in (None, "Answer in one word."):
        base = build_inputs(lm, sampled, "", system)
        length = shared_prefix_length(lm, base, "", system)
        assert 0 < length < base["input_ids"].shape[1]
        for question in QUESTIONS:
            expected = build_inputs(lm, sampled, question, system)
            got = with_question(lm, base, length, question, system)
            assert list(got) == list(expected)
            for key, value in expected.items():
                assert torch.equal(got[key], value), (key, question)
            assert got["pixel_values_videos"] is base["pixel_values_videos"]
    with pytest.raises(ValueError, match="placeholder"):
        with_question(lm, base, length, f"What is {lm.processor.video_token}?")


# --- the engine ------------------------------------------------------------------------------------------------


# a hybrid (Qwen3.5) has no prefix cache to continue from: each of its questions is prefilled whole
@pytest.mark.parametrize("family", [family for family in build.FAMILIES if family != "qwen3.5"])
def test_a_question_continued_from_the_prefix_has_the_sparse_view_of_asking_it_alone(family, lms, clips):
    """StD ranks the visual tokens for each question from the cached keys with that question's queries (and, where
    the prefix holds text after the video, as Qwen3-VL's frame times, with that text's queries kept from the first
    prefill): the sparse view and the first token are those of the question prefilled alone."""
    lm = lms(family)
    sampled = sample_video(lm, clips[0], FRAMES)
    base = build_inputs(lm, sampled, "")
    prefix = SharedPrefix(shared_prefix_length(lm, base, ""), uses=len(QUESTIONS))
    prompts = [with_question(lm, base, prefix.length, q) for q in QUESTIONS]
    options = DecodeOptions(max_new_tokens=TOKENS, k=3, gamma=2)
    with lm.engine.new_decoder(options, len(QUESTIONS), 256, 128) as shared, \
            lm.engine.new_decoder(options, 1, 256, 128) as single:
        for slot, prompt in enumerate(prompts):
            first = shared.prefill(slot, prompt, prefix=prefix)
            assert (prefix.keys is not None) == (slot < len(QUESTIONS) - 1)  # freed after its last use
            if slot:
                single.release(0)
            assert single.prefill(0, prompt) == first
            state, reference = shared.slots[slot], single.slots[0]
            assert state is not None and reference is not None
            assert (state.dense_len, state.sparse_len, state.rope_delta) == \
                (reference.dense_len, reference.sparse_len, reference.rope_delta)
            assert state.sparse_len < state.dense_len  # K keeps fewer visual tokens than there are
            for cache in ("sparse_k", "sparse_v", "dense_k", "dense_v"):
                length = state.sparse_len if cache.startswith("sparse") else state.dense_len
                got = getattr(shared.storage, cache)[:, slot, :, :length]
                want = getattr(single.storage, cache)[:, 0, :, :length]
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"{cache}, question {slot}")


@pytest.mark.parametrize("gamma", [3, 0])
@pytest.mark.parametrize("family", build.FAMILIES)
def test_questions_asked_together_answer_as_asked_alone(family, gamma, lms, clips):
    lm = lms(family)
    with vision_calls(lm) as calls:
        records = answer_questions(lm, clips[0], QUESTIONS, options_for(gamma))
    # one video, encoded once; a hybrid prefills (and so encodes) each question whole: its recurrent state is not a
    # prefix cache to copy
    assert len(calls) == (len(QUESTIONS) if family == "qwen3.5" else 1)
    assert [r.question for r in records] == list(QUESTIONS)
    for record in records:
        expected = alone(lm, clips[0], record.question)
        assert record.error is None, record.error
        assert (record.answer, record.new_tokens) == (decode_answer(lm.tokenizer, expected), len(expected))
        assert record.mode == ("dense" if gamma == 0 else "std")
        assert list(record.timings) == list(TIMING_KEYS)
        assert 0 < record.timings["first_token_s"] <= record.timings["total_s"]
    first, *later = records
    assert first.timings["load_video_s"] > 0 and all(r.timings["load_video_s"] == 0 for r in later)
    assert len({r.visual_tokens for r in records}) == 1 and len({r.frames for r in records}) == 1


def test_questions_decoded_together_in_a_batch_share_their_video(lms, clips, tmp_path):
    """With a batch, one video's questions decode side by side in the slots, each from the prefix prefilled once
    (Qwen3-VL: with the queries of the frame times kept from the first); a video that cannot be read gives one
    failed record per question, and the others go on."""
    lm = lms("qwen3-vl")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    records = []
    items = [VideoQuestions(clips[0], QUESTIONS), VideoQuestions(str(broken), QUESTIONS[:2]),
             VideoQuestions(clips[1], QUESTIONS[1:])]
    with vision_calls(lm) as calls:
        answer_videos(lm, items, options_for("auto"), 3, records.append)
    assert len(calls) == 2
    failed = [r for r in records if r.error is not None]
    assert [(r.video, r.question, r.error["type"]) for r in failed] == [(str(broken), q, "VideoError")
                                                                        for q in QUESTIONS[:2]]
    answered = {(r.video, r.question): r for r in records if r.error is None}
    assert sorted(answered) == sorted((i.video, q) for i in (items[0], items[2]) for q in i.questions)
    for (video, question), record in answered.items():
        expected = alone(lm, video, question)
        assert (record.answer, record.new_tokens) == (decode_answer(lm.tokenizer, expected), len(expected))


def test_a_question_too_long_for_the_context_fails_alone(lms, clips, monkeypatch):
    """The video is admitted for its shortest question; a question whose prompt would not fit the context gets a
    record that says so (as it would asked alone), and the others are answered."""
    from stdcli import ask

    lm = lms("qwen2-vl")
    long = " ".join(["Which shape moves first, and where does it go?"] * 4)
    fits = build_inputs(lm, sample_video(lm, clips[0], FRAMES), QUESTIONS[1])["input_ids"].shape[1] + TOKENS
    monkeypatch.setattr(ask, "context_limit", lambda lm: fits)
    records = answer_questions(lm, clips[0], [QUESTIONS[0], long, QUESTIONS[1]], options_for(2))
    assert [r.error["type"] if r.error else None for r in records] == [None, "TooLargeError", None]
    assert "more than the model's context" in records[1].error["message"]
    for record in (records[0], records[2]):
        assert record.answer == decode_answer(lm.tokenizer, alone(lm, clips[0], record.question))


# --- the command line ------------------------------------------------------------------------------------------


def cli(*args: str, model: str):
    result = CliRunner().invoke(app, ["ask", "--max-new-tokens", str(TOKENS), "--frames", "4", "--model", model,
                                      *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def records_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> str:
    return str(tiny_checkpoint("qwen2-vl"))


def answer_alone(lms, video: str, question: str) -> str:
    """The answer of asking the command line's model (the tiny Qwen2-VL) the question alone."""
    lm = lms("qwen2-vl")
    return decode_answer(lm.tokenizer, alone(lm, video, question))


def test_cli_asks_every_question_of_every_video_in_order(model, lms, clips, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    first, second = QUESTIONS[:2]
    result = cli(clips[0], str(broken), clips[1], "-q", first, "--question", second, "--gamma", "2", "--jsonl",
                 model=model)
    assert result.exit_code == 1, result.output  # the broken video failed; the others were answered
    records = records_of(result.stdout)
    assert [(r["video"], r["question"]) for r in records] == [(v, q) for v in (clips[0], str(broken), clips[1])
                                                              for q in (first, second)]
    assert [r["error"] is None for r in records] == [True, True, False, False, True, True]
    for record in records:
        assert list(record["timings"]) == list(TIMING_KEYS)
        if record["error"] is None:
            assert record["answer"] == answer_alone(lms, record["video"], record["question"])
    assert records[1]["timings"]["load_video_s"] == 0 and records[0]["timings"]["load_video_s"] > 0
    stats = [line for line in result.stderr.splitlines() if "tokens," in line]
    assert stats[0].startswith(f"{clips[0]} [{first}]: ") and "first token " in stats[0]
    (error,) = [line for line in result.stderr.splitlines() if line.startswith(f"stdcli: error: {broken} [{second}]: ")]
    assert str(broken) not in error.split("]: ", 1)[1]  # the path is said once
    assert result.stderr.splitlines()[-1] == "stdcli: 2 of 6 answers failed (their records say why)"


def test_cli_dense_questions_and_a_questions_file(model, lms, clips, tmp_path):
    """--questions: a line without "video" is asked of every video, one with it of that video only (looked up beside
    the file; a video only the file names is answered too); -q questions come first, each question once."""
    Path(tmp_path / "near.mp4").write_bytes(Path(clips[1]).read_bytes())
    questions = tmp_path / "questions.jsonl"
    lines = [{"question": QUESTIONS[1]}, {"video": "near.mp4", "question": QUESTIONS[2]},
             {"video": clips[0], "question": QUESTIONS[2]}, {"question": QUESTIONS[0]}]
    questions.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = cli(clips[0], "-q", QUESTIONS[0], "--questions", str(questions), "--dense", "--jsonl", model=model)
    assert result.exit_code == 0, result.output
    records = records_of(result.stdout)
    near = str(tmp_path / "near.mp4")
    assert [(r["video"], r["question"]) for r in records] == [(v, q) for v in (clips[0], near) for q in QUESTIONS]
    assert {r["mode"] for r in records} == {"dense"}
    for record in records:
        assert record["answer"] == answer_alone(lms, record["video"], record["question"])


def test_cli_resumes_each_question_of_each_video(model, lms, clips, tmp_path):
    log = tmp_path / "log.jsonl"
    # a record of an older stdcli (no video_path, no processor_s or first_token_s) counts as answered
    old = {"video": clips[0], "question": QUESTIONS[0], "model": model, "answer": "x", "error": None,
           "timings": {"load_video_s": 0.1, "prefill_s": 0.1, "decode_s": 0.1, "total_s": 0.3}}
    log.write_text(json.dumps(old) + "\n")
    asked = ["-q", QUESTIONS[0], "-q", QUESTIONS[1]]
    result = cli(*clips, *asked, "--output", str(log), "--resume", "--jsonl", model=model)
    assert result.exit_code == 0, result.output
    assert [(r["video"], r["question"]) for r in records_of(result.stdout)] == [
        (clips[0], QUESTIONS[1]), (clips[1], QUESTIONS[0]), (clips[1], QUESTIONS[1])]
    assert f"stdcli: resuming: 1 of 4 questions already answered in {log}" in result.stderr
    again = cli(*clips, *asked, "-q", QUESTIONS[2], "--output", str(log), "--resume", "--jsonl", model=model)
    assert again.exit_code == 0, again.output
    new = records_of(again.stdout)
    assert [(r["video"], r["question"]) for r in new] == [(clips[0], QUESTIONS[2]), (clips[1], QUESTIONS[2])]
    for record in [*records_of(result.stdout), *new]:
        assert record["answer"] == answer_alone(lms, record["video"], record["question"])
    assert cli(*clips, *asked, "--output", str(log), "--resume", model=model).stdout == ""


QUESTIONS_FILE = ["{clip}", "--questions", "{file}"]


@pytest.mark.parametrize("arguments, content, message", [
    (["{clip}", "What?", "-q", "Why?"], None,
     "What?: no such file or folder (with -q or --questions, every argument is a video)"),
    (["{clip}", "-q", " "], None, "the question is empty"),
    (["{clip}", "-q"], None, "Option '-q' requires an argument"),
    (["{clip}", "--questions", "{missing}"], None, "cannot read --questions {missing}"),
    (QUESTIONS_FILE, "", "--questions {file} holds no questions"),
    (QUESTIONS_FILE, "not json", "{file}:1: not a JSON object"),
    (QUESTIONS_FILE, '["a list"]', "{file}:1: not a JSON object"),
    (QUESTIONS_FILE, '{"video": "{clip}"}', '{file}:1: needs a non-empty "question"'),
    (QUESTIONS_FILE, '{"question": "Why?"}\n{"question": ""}', '{file}:2: needs a non-empty "question"'),
    (QUESTIONS_FILE, '{"question": "Why?", "video": 3}', '{file}:1: "video" must be the path of a video file'),
    (QUESTIONS_FILE, '{"question": "Why?", "video": "gone.mp4"}', "{file}:1: no such video gone.mp4"),
    (["--questions", "{file}"], '{"question": "Why?"}', "no videos given"),
    (QUESTIONS_FILE, '{"question": "Why?", "video": "{other}"}', "{clip}: no question is asked of it"),
])
def test_cli_question_usage_errors_are_one_line_and_exit_2(model, clips, tmp_path, arguments, content, message):
    names = {"clip": clips[0], "other": clips[1], "missing": str(tmp_path / "none.jsonl"),
             "file": str(tmp_path / "questions.jsonl")}
    if content is not None:
        Path(names["file"]).write_text(content.replace("{clip}", clips[0]).replace("{other}", clips[1]))
    result = cli(*(a.format(**names) for a in arguments), model=model)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("stdcli: error: ") and message.format(**names) in line, line


def test_quiet_has_no_short_option_any_more(model, clips):
    """-q asks a question; --quiet is long only."""
    result = cli(clips[0], "-q", QUESTIONS[0], "--quiet", model=model)
    assert result.exit_code == 0 and result.stderr == "" and result.stdout.strip()
