"""Batched folder runs: every answer is the one decoded alone, whatever finishes when; memory lowers the batch."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from stdcli.ask import answer_video, answer_videos, decode_answer, sampling_arguments
from stdcli.cli import app
from stdcli.engine import DecodeOptions, session
from stdcli.inputs import AskOptions, FrameOptions
from stdcli.model.loading import load_model
from stdcli.model.prompts import build_inputs, frame_defaults
from stdcli.video import sample_frames
from tests.videos import write_video

FRAMES = (2, 9, 4, 12, 6, 3, 10)  # prompts of different lengths, in no order


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("batch")
    return [write_video(folder / f"v{i}.mp4", frames=n, width=56, height=56, rate=4) for i, n in enumerate(FRAMES)]


@pytest.fixture(scope="module", params=["qwen2-vl", "llava-ov", "qwen3-vl"])
def lm(request, tiny_checkpoint, test_device):
    return load_model(str(tiny_checkpoint(request.param)), device=test_device, dtype="float32")


def alone(lm, video: str, options: AskOptions) -> list[int]:
    """transformers' greedy decoding of one video: the reference."""
    sampled = sample_frames(video, **sampling_arguments(frame_defaults(lm.family), options.frames))
    inputs = build_inputs(lm, sampled, options.question)
    out = lm.model.generate(**inputs, do_sample=False, max_new_tokens=options.decode.max_new_tokens,
                            eos_token_id=list(lm.eos_token_ids))
    tokens = out[0, inputs["input_ids"].shape[1]:].tolist()
    return tokens[: next((i + 1 for i, t in enumerate(tokens) if t in lm.eos_token_ids), len(tokens))]


@pytest.mark.parametrize("gamma", [0, 3, "auto"])
def test_batched_answers_equal_answers_decoded_alone(lm, videos, tmp_path, gamma):
    # A token the model emits mid-answer for some videos becomes the end token: answers end at different cycles.
    options = AskOptions("What happens?", frames=FrameOptions(frames=4 if lm.family == "llava-ov" else None),
                         decode=DecodeOptions(max_new_tokens=14, k=5, gamma=gamma))
    first = alone(lm, videos[1], options)
    for position in range(2, len(first) - 1):
        ended = dataclasses.replace(lm, eos_token_ids=(first[position],))
        expected = {v: alone(ended, v, options) for v in videos}
        if len({len(t) for t in expected.values()}) > 1:
            break
    # the tiny random LLaVA-OneVision gives every video the same answer, so its answers all end together
    assert lm.family == "llava-ov" or len({len(t) for t in expected.values()}) > 1
    lm = ended
    broken = str(tmp_path / "broken.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    records = []
    answer_videos(lm, [*videos[:3], broken, *videos[3:]], options, 3, records.append)
    by_video = {r.video: r for r in records}
    assert len(records) == len(videos) + 1 and by_video[broken].error["type"] == "VideoError"
    for video, tokens in expected.items():
        record = by_video[video]
        assert record.error is None
        assert (record.answer, record.new_tokens) == (decode_answer(lm.tokenizer, tokens), len(tokens)), video
    # records come out as answers end, not in the order given
    assert [r.video for r in records if r.error is None] != videos


def test_the_first_answers_end_before_later_videos_are_read(lm, videos):
    """Videos are read as slots need them: the first records go out (to --output, at once) while later videos are
    still unread, so an interrupted batched run keeps every answer that ended."""
    options = AskOptions("What happens?", frames=FrameOptions(frames=4 if lm.family == "llava-ov" else None),
                         decode=DecodeOptions(max_new_tokens=6, gamma=2))
    read: list[str] = []

    def paths():
        for video in videos:
            read.append(video)
            yield video

    read_at_record: list[int] = []
    answer_videos(lm, paths(), options, 2, lambda record: read_at_record.append(len(read)))
    assert len(read_at_record) == len(videos)
    assert read_at_record[0] <= 3, read_at_record  # the first two videos, perhaps a third: not all seven


def test_a_longer_prompt_than_the_window_was_sized_for_waits_for_a_new_window(lm, videos, make_video):
    """Requests are admitted to a window's decoder only while they fit its caches; a longer one starts the next
    window, and every answer is still the one decoded alone."""
    options = AskOptions("What happens?", frames=FrameOptions(frames=4 if lm.family == "llava-ov" else None),
                         decode=DecodeOptions(max_new_tokens=6, k=3, gamma=3))
    order = [videos[0], videos[5], videos[3], videos[1], videos[2]]  # short first: later ones do not all fit
    alone_answers = {v: answer_video(lm, v, options).answer for v in order}
    records = []
    answer_videos(lm, order, options, 2, records.append)
    assert {r.video: r.answer for r in records} == alone_answers


def test_batch_is_lowered_when_the_caches_do_not_fit(lm, videos, monkeypatch):
    options = AskOptions("What happens?", frames=FrameOptions(frames=4),
                         decode=DecodeOptions(max_new_tokens=6, gamma=2))
    one = [answer_video(lm, v, options).answer for v in videos[:4]]
    lm.engine.release()  # on a GPU, a decoder kept for reuse would count as memory to give back

    monkeypatch.setattr(lm.engine, "cache_bytes", lambda size, max_len, sparse_cap: size * 1000)
    monkeypatch.setattr(session, "free_memory_bytes", lambda device: 2 * 1000 / session.MEMORY_SHARE)  # room for 2
    warnings, records = [], []
    answer_videos(lm, videos[:4], options, 4, records.append, warn=warnings.append)
    assert warnings and "batch lowered from 4 to 2" in warnings[0]
    assert sorted(r.answer for r in records) == sorted(one)


def test_cli_batch_size_writes_every_record_and_resumes(tiny_checkpoint, videos, tmp_path):
    model = str(tiny_checkpoint("qwen2-vl"))
    out = tmp_path / "runs.jsonl"
    run = lambda *extra: CliRunner().invoke(  # noqa: E731
        app, ["ask", *videos[:4], "What happens?", "--model", model, "--max-new-tokens", "5", "--batch-size", "3",
              "--output", str(out), "--jsonl", *extra])
    result = run()
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["video"] for r in printed) == sorted(videos[:4])
    assert [json.loads(line) for line in out.read_text().splitlines()] == printed
    again = run("--resume")
    assert again.exit_code == 0 and again.stdout == ""
    for bad, message in ((["--batch-size", "0"], "--batch-size must be at least 1"),
                         (["--batch-size", "2", "--compare"], "drop --batch-size")):
        result = CliRunner().invoke(app, ["ask", videos[0], "What happens?", "--model", model, *bad])
        assert result.exit_code == 2 and message in result.stderr
    assert torch.get_default_dtype() == torch.float32
