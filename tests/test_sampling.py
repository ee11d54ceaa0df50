"""Sampling is lossless too: StD with temperature > 0 (and top-p) draws from the dense model's own distribution.

The dense distribution of short answers is computed exactly, by enumerating every answer of a tiny-vocabulary model
with transformers' own forward and the sampling transform (`token_probs`, checked here against transformers' logits
warpers). Thousands of StD answers are then compared with it by a chi-square goodness-of-fit test at ALPHA; the same
test, on fewer answers, must reject verifiers that are not lossless (drafts accepted without the rejection rule, or
the target resampled instead of the residual), so it has the power to tell.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from stdcli.engine import DecodeOptions, DecodeStats, Engine, cache_capacity
from stdcli.engine.sampling import accept_greedy, accept_sampled, accepted_prefix, sample, token_probs
from stdcli.model import build

ALPHA = 0.001  # significance of every goodness-of-fit test here
MIN_EXPECTED = 5.0  # outcomes expected fewer times than this are pooled into one bin
VOCAB = 12  # text tokens 0..9 (0 ends the answer), image and video placeholders 10 and 11
EOS = 0
ANSWER_TOKENS = 3


# --- chi-square -------------------------------------------------------------------------------------------------------


def chi_square_p_value(statistic: float, df: int) -> float:
    """P(X >= statistic) for X chi-square distributed with df degrees of freedom: Q(df/2, statistic/2)."""
    half = torch.tensor([df / 2, statistic / 2], dtype=torch.float64)
    return float(torch.special.gammaincc(half[0], half[1]))


def chi_square(observed: Counter, probs: dict, total: int) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) of observed outcome counts against exact outcome probabilities.

    Outcomes expected fewer than MIN_EXPECTED times are pooled into one bin (grown with the next rarest until it is
    expected MIN_EXPECTED times). An observed outcome that the null gives no probability at all rejects it outright.
    """
    if any(not probs.get(outcome) for outcome in observed):
        return float("inf"), 0, 0.0
    ordered = sorted(probs, key=probs.get)
    pooled = [o for o in ordered if probs[o] * total < MIN_EXPECTED]
    own = ordered[len(pooled) :]
    while own and 0 < sum(probs[o] for o in pooled) * total < MIN_EXPECTED:
        pooled.append(own.pop(0))
    expected = [probs[o] * total for o in own]
    counts = [observed[o] for o in own]
    if pooled:
        expected.append(sum(probs[o] for o in pooled) * total)
        counts.append(total - sum(counts))
    statistic = sum((c - e) ** 2 / e for c, e in zip(counts, expected, strict=True))
    df = len(expected) - 1
    return statistic, df, chi_square_p_value(statistic, df)


@pytest.mark.parametrize(
    ("statistic", "df", "p_value"), [(3.841459, 1, 0.05), (23.209251, 10, 0.01), (6.0, 6, 0.42319)]
)
def test_chi_square_p_values_match_the_tables(statistic, df, p_value):
    assert chi_square_p_value(statistic, df) == pytest.approx(p_value, abs=1e-5)


def test_chi_square_pools_rare_outcomes_and_rejects_impossible_ones():
    probs = {"a": 0.5, "b": 0.49, "c": 0.006, "d": 0.004}
    statistic, df, p_value = chi_square(Counter(a=500, b=490, c=6, d=4), probs, 1000)
    assert (df, statistic, p_value) == (2, pytest.approx(0.0), pytest.approx(1.0))  # c and d share one bin
    statistic, df, _ = chi_square(Counter(a=510, b=480, c=10), probs, 1000)
    assert (df, statistic) == (2, pytest.approx(10**2 / 500 + 10**2 / 490))
    assert chi_square(Counter(a=500, b=490, c=9, z=1), probs, 1000)[2] < ALPHA  # z has probability 0


# --- the sampling transform -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9), (1.5, 0.5), (0.3, 0.05), (2.0, 0.999)])
def test_token_probs_is_transformers_sampling_distribution(temperature, top_p):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 40, generator=generator) * 3
    logits[:8] = torch.randint(0, 4, (8, 40), generator=generator).float()  # ties
    warped = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_p < 1:
        warped = TopPLogitsWarper(top_p)(None, warped)
    expected = torch.softmax(warped, dim=-1)
    probs = token_probs(logits, temperature, top_p)
    assert torch.equal(probs > 0, expected > 0)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-7)


# --- acceptance rules -------------------------------------------------------------------------------------------------


def test_accept_greedy_keeps_the_prefix_that_dense_greedy_would_choose():
    dense_choice = torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6], [2, 7, 1, 8]])  # [B, g+1] argmax of the verify pass
    logits = torch.nn.functional.one_hot(dense_choice, 10).float() * 5 + torch.rand(3, 4, 10)
    drafts = torch.tensor([[3, 1, 4], [5, 0, 2], [0, 7, 1]])
    accepted, next_token = accept_greedy(drafts, logits)
    # all three accepted (bonus token follows), first mismatch at 1 (correction), mismatch right away
    assert accepted.tolist() == [3, 1, 0]
    assert next_token.tolist() == [1, 9, 2]


def draws(probs: torch.Tensor, rows: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` draws from each position's distribution probs [g, V] -> (tokens [rows, g], probs [rows, g, V])."""
    expanded = probs.expand(rows, *probs.shape)
    return sample(expanded, generator), expanded


def test_accept_sampled_accepts_everything_when_draft_equals_target():
    generator = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(3, 6, generator=generator), -1)
    drafts, q = draws(p[:2], 2000, generator)
    accepted, next_token = accept_sampled(drafts, q, p.expand(2000, 3, 6), generator)
    assert accepted.eq(2).all()
    _, _, p_value = chi_square(Counter(next_token.tolist()), dict(enumerate(p[2].tolist())), 2000)
    assert p_value > ALPHA  # the bonus token comes from the target's last position


def test_accept_sampled_rejects_drafts_the_target_rules_out():
    generator = torch.Generator().manual_seed(2)
    target = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]]).expand(500, 2, 4)
    drafts = torch.full((500, 1), 3)  # probability 0 under the target
    accepted, next_token = accept_sampled(drafts, torch.full((500, 1, 4), 0.25), target, generator)
    assert accepted.eq(0).all() and set(next_token.tolist()) <= {1, 2}


def test_accept_sampled_commits_tokens_distributed_as_the_target():
    """Speculative sampling's guarantee, on 200k independent rows with draft and target far apart.

    With gamma = 2: the first committed token follows p0, the second (when the first was an accepted draft) p1, the
    bonus token after two accepted drafts p2; and the first draft is accepted with probability sum(min(p0, q0)).
    """
    generator = torch.Generator().manual_seed(3)
    rows, vocab = 200_000, 6
    target = torch.softmax(torch.randn(3, vocab, generator=generator) * 1.5, -1)
    draft = torch.softmax(torch.randn(2, vocab, generator=generator) * 1.5, -1)
    drafts, q = draws(draft, rows, generator)
    accepted, next_token = accept_sampled(drafts, q, target.expand(rows, 3, vocab), generator)
    committed = torch.cat([drafts, torch.zeros_like(drafts[:, :1])], 1)
    committed[torch.arange(rows), accepted] = next_token
    for position, rows_in in ((0, accepted >= 0), (1, accepted >= 1), (2, accepted == 2)):
        tokens = committed[rows_in, position]
        _, _, p_value = chi_square(Counter(tokens.tolist()), dict(enumerate(target[position].tolist())), len(tokens))
        assert p_value > ALPHA, f"position {position}: p = {p_value}"
    rate, expected = (accepted >= 1).double().mean().item(), torch.minimum(target[0], draft[0]).sum().item()
    assert abs(rate - expected) < 5 * (expected * (1 - expected) / rows) ** 0.5
    assert 0.2 < expected < 0.9  # both outcomes are common: the test above sees both branches


# --- StD against the exact dense distribution -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    """(model, inputs): a LLaVA-OneVision with a 12-token vocabulary, and a prompt of text around 3 random frames."""
    tokenizer = build.make_tokenizer("llava-ov")  # only for the processor, which expands the video placeholder
    processor = build.make_processor("llava-ov", tokenizer, size=56)
    config = build.make_config(
        "llava-ov",
        tokenizer=tokenizer,
        vocab_size=VOCAB,
        image_token_index=VOCAB - 2,
        video_token_index=VOCAB - 1,
        text_config={"eos_token_id": EOS, "bos_token_id": 1, "hidden_size": 32, "intermediate_size": 64},
    )
    model = build.build_random_model("llava-ov", config, seed=4)
    frames = np.random.default_rng(4).integers(0, 256, (3, 56, 56, 3), dtype=np.uint8)
    video = processor(text=["<video>"], videos=[frames], return_tensors="pt")
    visual = int((video["input_ids"] == tokenizer.convert_tokens_to_ids("<video>")).sum())
    ids = torch.tensor([[2, 3, 4, 5] + [VOCAB - 1] * visual + [6, 7, 8, 9, 2, 5]])
    pixels = video["pixel_values_videos"]
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values_videos": pixels}


def vocabulary_config(family: str, text: dict, **extra):
    """(tokenizer, config) of a tiny `family` model over the test's 12-token vocabulary: video tokens at the top,
    vision start 3 and end 4; `text` adds to its text config."""
    tokenizer = build.make_tokenizer(family)  # only for the processor
    config = build.make_config(
        family,
        tokenizer=tokenizer,
        vocab_size=VOCAB,
        image_token_id=VOCAB - 2,
        video_token_id=VOCAB - 1,
        vision_start_token_id=3,
        vision_end_token_id=4,
        text_config={"eos_token_id": EOS, "bos_token_id": 1, "hidden_size": 32, "intermediate_size": 64, **text},
        **extra,
    )
    return tokenizer, config


@pytest.fixture(scope="module")
def tiny_qwen3():
    """(model, inputs): a Qwen3-VL with the same 12-token vocabulary, decoded through our fused forward (its q/k
    RMSNorm per head), and 3 random frames as Qwen3-VL lays them out: each temporal patch of 2x2 video
    tokens between vision start (3) and end (4) tokens, after a timestamp (token 5)."""
    tokenizer, config = vocabulary_config("qwen3-vl", {"head_dim": 8, "rope_parameters": {"mrope_section": [2, 1, 1]}},
                                          vision_config={"out_hidden_size": 32})
    processor = build.make_processor("qwen3-vl", tokenizer, min_pixels=64 * 64, max_pixels=64 * 64)
    model = build.build_random_model("qwen3-vl", config, seed=4)
    frames = np.random.default_rng(4).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    video = processor.video_processor(videos=[frames], do_sample_frames=False, do_resize=False,
                                      cap_pixels_per_frame=False, return_tensors="pt")
    patch = [5, 3] + [VOCAB - 1] * 4 + [4]
    ids = torch.tensor([[2, 6, 7] + patch + patch + [8, 9, 2, 5]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": (ids == VOCAB - 1) * 2,
              "pixel_values_videos": video["pixel_values_videos"], "video_grid_thw": video["video_grid_thw"]}
    assert video["video_grid_thw"].tolist() == [[2, 4, 4]]
    return model, inputs


@pytest.fixture(scope="module")
def tiny_qwen35():
    """(model, inputs): a Qwen3.5 (hybrid: linear-attention and full-attention layers) with the same 12-token
    vocabulary, and a prompt around 8 video placeholders without pixels (embedded as tokens: the vision tower is not
    what this test is about), which the sparse view ranks and keeps K of like any video's."""
    _, config = vocabulary_config("qwen3.5", {})
    model = build.build_random_model("qwen3.5", config, seed=4)
    ids = torch.tensor([[2, 6, 7, 3] + [VOCAB - 1] * 8 + [4, 8, 9, 2, 5]])
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def dense_distribution(model, inputs: dict, temperature: float, top_p: float) -> dict[tuple[int, ...], float]:
    """Exact probability of every answer of up to ANSWER_TOKENS tokens (stopping at EOS), from transformers' forward.

    Answers of each length are scored in one batched forward over the cached prompt (repeated once per answer), or,
    for a prompt without pixels, over the prompt and answer.
    """
    with torch.no_grad():
        prompt = model(**inputs, use_cache=True)
        answers = {(): 1.0}
        next_probs = {(): token_probs(prompt.logits[0, -1], temperature, top_p).double()}
        final = {}
        for length in range(1, ANSWER_TOKENS + 1):
            grown = {}
            for prefix, mass in answers.items():
                for token, p in enumerate(next_probs[prefix].tolist()):
                    if p > 0:
                        (final if token == EOS or length == ANSWER_TOKENS else grown)[prefix + (token,)] = mass * p
            if not grown:
                break
            prefixes = list(grown)
            if "pixel_values_videos" in inputs:
                cache = copy.deepcopy(prompt.past_key_values)
                cache.batch_repeat_interleave(len(prefixes))
                logits = model(input_ids=torch.tensor(prefixes), past_key_values=cache, use_cache=True).logits[:, -1]
            else:  # no vision tower to run again: the whole prompt once per answer (a hybrid's cache cannot repeat)
                ids = torch.cat([inputs["input_ids"].expand(len(prefixes), -1), torch.tensor(prefixes)], 1)
                logits = model(input_ids=ids).logits[:, -1]
            probs = token_probs(logits, temperature, top_p).double()
            answers, next_probs = grown, dict(zip(prefixes, probs, strict=True))
    assert sum(final.values()) == pytest.approx(1.0)
    return final


def std_answers(model, inputs: dict, options: DecodeOptions, count: int, batch: int = 250):
    """`count` StD answers, decoded `batch` at a time by one Decoder (a different seed per batch); and their stats."""
    engine = Engine.of(model)
    assert engine.adapter.visual_ids == (VOCAB - 2, VOCAB - 1)
    max_len, sparse_cap = cache_capacity(*engine.adapter.layout(inputs), options)
    answers, totals = Counter(), DecodeStats()
    for start in range(0, count, batch):
        size = min(batch, count - start)
        seeded = replace(options, seed=options.seed + start)
        with engine.new_decoder(seeded, size, max_len, sparse_cap, eos=[EOS]) as decoder:
            for slot in range(size):
                decoder.prefill(slot, inputs)
            while not all(state.done for state in decoder.slots):
                decoder.step(draft=options.draft)
            for slot in range(size):
                state = decoder.release(slot)
                answers[tuple(state.tokens)] += 1
                totals.drafted += state.stats.drafted
                totals.accepted += state.stats.accepted
    return answers, totals


def accept_every_draft(drafts, draft_probs, target_probs, generator):
    """A broken verifier: keeps every draft (no rejection rule), then samples the bonus token from the target."""
    gamma = drafts.shape[1]
    return torch.full(drafts.shape[:1], gamma), sample(target_probs[:, gamma], generator)


def resample_from_target(drafts, draft_probs, target_probs, generator):
    """A subtly broken verifier: the right rejection rule, but after a rejection it samples the target itself
    instead of the residual max(0, p - q), so tokens the drafter favours are rejected and then drawn again."""
    p_draft = target_probs[:, :-1].gather(-1, drafts[..., None]).squeeze(-1)
    q_draft = draft_probs.gather(-1, drafts[..., None]).squeeze(-1)
    u = torch.rand(p_draft.shape, generator=generator, device=p_draft.device)
    accepted = accepted_prefix(u * q_draft < p_draft)
    return accepted, sample(target_probs[torch.arange(drafts.shape[0]), accepted], generator)


SETTINGS = {  # name: (options, answers drawn)
    "t1": (DecodeOptions(ANSWER_TOKENS, k=1, gamma=2, temperature=1.0, seed=0, calibration_steps=0, draft="sparse"),
           2000),
    "t0.8-top_p0.85": (
        DecodeOptions(ANSWER_TOKENS, k=2, gamma=1, temperature=0.8, top_p=0.85, seed=10**6, calibration_steps=0,
                      draft="int4"),  # the quantized draft's own distribution, corrected by the same rule
        1500,
    ),
}


def assert_samples_follow_dense(model, inputs: dict, options: DecodeOptions, count: int, name: str) -> None:
    """`count` StD answers of `inputs` follow the dense model's own distribution (a chi-square test), with drafts
    both accepted and rejected often enough to have exercised the rule both ways."""
    exact = dense_distribution(model, inputs, options.temperature, options.top_p)
    answers, stats = std_answers(model, inputs, options, count)
    statistic, df, p_value = chi_square(answers, exact, count)
    print(f"{name}: chi2 {statistic:.1f}, df {df}, p {p_value:.3g}; {stats.accepted} of {stats.drafted} accepted")
    assert p_value > ALPHA, f"StD answers do not follow the dense distribution: chi2 {statistic:.1f}, df {df}"
    assert stats.accepted > count / 10 and stats.drafted - stats.accepted > count / 10
    assert df >= 20  # enough outcomes compared to mean something


@pytest.mark.parametrize("setting", SETTINGS)
def test_std_samples_the_dense_distribution(setting, tiny):
    model, inputs = tiny
    options, count = SETTINGS[setting]
    assert_samples_follow_dense(model, inputs, options, count, setting)


def test_std_samples_the_dense_distribution_on_qwen3_vl(tiny_qwen3):
    """The same test on Qwen3-VL: q/k RMSNorm per head, interleaved M-RoPE positions, timestamps among the video's
    tokens. (Sampling through transformers' forward is the hybrid's test below.)"""
    model, inputs = tiny_qwen3
    options, count = SETTINGS["t1"]
    assert Engine.of(model).fused() is not None
    assert_samples_follow_dense(model, inputs, options, count, "qwen3-vl t1")


def test_std_samples_the_dense_distribution_on_a_hybrid(tiny_qwen35, one_thread):
    """The same test on Qwen3.5: the linear-attention layers' state of every slot rolls back to its own accepted
    tokens (250 slots per decoder, each accepting its own number of drafts)."""
    model, inputs = tiny_qwen35
    options, _ = SETTINGS["t1"]
    count = 800
    assert Engine.of(model).adapter.cache.linear is not None
    assert_samples_follow_dense(model, inputs, options, count, "qwen3.5 t1")


@pytest.mark.parametrize("broken", [accept_every_draft, resample_from_target], ids=lambda f: f.__name__)
def test_broken_verifiers_are_caught(broken, tiny, monkeypatch):
    """Negative controls: the same test, on half as many answers, rejects verifiers that are not lossless."""
    model, inputs = tiny
    options, _ = SETTINGS["t1"]
    monkeypatch.setattr("stdcli.engine.decoder.accept_sampled", broken)
    answers, _ = std_answers(model, inputs, options, 1000)
    statistic, df, p_value = chi_square(answers, dense_distribution(model, inputs, 1.0, 1.0), 1000)
    print(f"{broken.__name__}: chi2 {statistic:.1f}, df {df}, p {p_value:.3g}")
    assert p_value < ALPHA


def test_generate_sampling_is_reproducible_per_seed(tiny):
    model, inputs = tiny
    options = replace(SETTINGS["t1"][0], max_new_tokens=8)
    engine = Engine.of(model)
    runs = [engine.generate(inputs, replace(options, seed=seed), eos=[]).tokens for seed in (5, 5, 6, 7, 8)]
    assert runs[0] == runs[1] and len({tuple(r) for r in runs}) > 2
