"""The built-in model inflated into a larger Qwen2-VL shape (model/inflate.py) computes the same function: its
greedy answers are the built-in model's. Checked on the CPU in float32 at a reduced inflation ("test": twice as
wide, twice the head dimension, more layers, MLP units and vocabulary); the "7b" shape is the same code at a larger
size, measured on a GPU by `stdcli bench --model builtin --inflate 7b`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stdcli.ask import sample_video
from stdcli.cli import app
from stdcli.engine import DecodeOptions
from stdcli.inputs import FrameOptions
from stdcli.model import inflate as inflation
from stdcli.model.loading import load_model
from stdcli.model.prompts import build_inputs

SAMPLES = tuple(str(Path(__file__).parent.parent / "samples" / name) for name in ("short_1.mp4", "long_1.mp4"))
QUESTIONS = ("What happens in this video?", "How many red circles are there?")


@pytest.fixture(scope="module")
def builtin_and_inflated():
    lm = load_model("builtin", device="cpu", dtype="float32")
    return lm, inflation.inflate_loaded(lm, "test")


def test_rope_frequencies_are_kept():
    """Each small head dimension lands where the big head has the same rotary frequency (same rope_theta)."""
    small, big, theta = 64, 128, 10000.0
    small_freq = theta ** (-(torch.arange(small) % (small // 2)) * 2 / small)
    big_freq = theta ** (-(torch.arange(big) % (big // 2)) * 2 / big)
    mapped = inflation.head_dim_map(small, big)
    assert len(set(mapped.tolist())) == small  # one to one
    torch.testing.assert_close(big_freq[mapped], small_freq)
    assert ((mapped >= big // 2) == (torch.arange(small) >= small // 2)).all()  # rotate_half pairs kept


def test_the_inflated_model_answers_as_the_builtin_model(builtin_and_inflated):
    lm, big = builtin_and_inflated
    text = big.model.config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (512, 10, 1000)
    assert big.model.config.tie_word_embeddings is False
    for path in SAMPLES:
        video = sample_video(lm, path, FrameOptions())
        for question in QUESTIONS:
            inputs = build_inputs(lm, video, question)
            prompt = inputs["input_ids"].shape[1]
            with torch.inference_mode():
                small_logits = lm.model(**inputs).logits[0, -1]
                big_logits = big.model(**inputs).logits[0, -1]
                want = lm.model.generate(**inputs, do_sample=False, max_new_tokens=48)[0, prompt:].tolist()
            torch.testing.assert_close(big_logits[: small_logits.shape[0]], small_logits, atol=1e-4, rtol=1e-4)
            # the extra vocabulary ties with token 0 and never wins the argmax
            assert (big_logits[small_logits.shape[0]:] == big_logits[0]).all()
            got = big.engine.generate(inputs, DecodeOptions(48, k=64, gamma=3, draft="int4")).tokens
            assert got == want, (path, question)


def test_shapes_it_cannot_inflate_into_are_refused(builtin_and_inflated):
    lm, _ = builtin_and_inflated
    narrow = dict(inflation.SHAPES["test"], hidden_size=128, num_attention_heads=1)
    with pytest.raises(inflation.InflateError, match="hidden size of 128"):
        inflation.inflated_config(lm.model.config, narrow)
    fewer_layers = dict(inflation.SHAPES["test"], num_hidden_layers=4)
    with pytest.raises(inflation.InflateError, match="fewer layers"):
        inflation.inflated_config(lm.model.config, fewer_layers)


def test_bench_inflate_is_checked_before_loading():
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--inflate", "3b", "--device", "cpu"])
    assert result.exit_code == 2 and "--inflate takes 7b or test" in result.stderr
    result = runner.invoke(app, ["bench", "--random-init", "--inflate", "7b"])
    assert result.exit_code == 2 and "--inflate" in result.stderr
