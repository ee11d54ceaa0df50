"""StD decoding is lossless: greedy StD (and its dense path) gives token for token what `model.generate` gives.

Randomized cases over every family, float32 on the CPU: tiny random checkpoints, random videos of one to a
dozen frames (or none), random questions, K from 1 to beyond the visual token count, gamma 0..8 and auto, EOS
landing inside a draft, max_new_tokens ending inside one; and random gamma schedules mixing dense steps and cycles.
Most cases decode through our fused forward (fused.py), a tenth through transformers' own; Qwen3-VL, which fused.py
does not reproduce, decodes every case through transformers' forward. Each family runs its cases in one test that
lists every failing case with its parameters, then checks from the aggregate statistics that drafts were both
accepted and rejected: with only one of the two, agreement would prove nothing about verification.

Qwen3.5, a hybrid whose linear-attention layers carry a recurrent state that rejected drafts must not move, has
tests of its own below (many short cases against references computed once per prompt), with a negative control: a
rollback that keeps the verify's state is caught.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
import torch

from stdcli.engine import DecodeOptions, DecodeStats, Engine, EngineConfig, Request, cache_capacity
from stdcli.engine.options import DRAFT_KINDS, SPARSE_DRAFT
from stdcli.engine.policy import MAX_AUTO_GAMMA, Cycle, GammaPolicy
from stdcli.model import build
from stdcli.model.adapter import eos_token_ids, prompt_positions, visual_token_ids
from stdcli.model.loading import load_model
from stdcli.model.prompts import build_inputs
from tests.conftest import single_thread

CASES_PER_FAMILY = 175
HYBRID = "qwen3.5"
ATTENTION_FAMILIES = [family for family in build.FAMILIES if family != HYBRID]  # every layer with a KV cache
HYBRID_CASES = 120
HYBRID_LIMIT = 12  # tokens of the hybrid's references: each case's limit and end token cut them
WORDS = (
    "what happens in the video who moves first how many red circles are there describe the motion of each shape "
    "is the square above triangle when does light turn green why did ball stop near corner answer briefly please "
    "¿qué pasa? 视频 🎥 naïve café"
).split()


@pytest.fixture(scope="session")
def lms(tiny_checkpoint, test_device):
    """lms(family) -> the family's tiny checkpoint, loaded in float32 (on the CPU unless STDCLI_TEST_DEVICE says
    otherwise), once per session."""
    loaded = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = load_model(str(tiny_checkpoint(family)), device=test_device, dtype="float32")
        return loaded[family]

    return get


def reference(model, inputs: dict, max_new_tokens: int, eos: int | None = None) -> list[int]:
    """transformers' own greedy decoding; `eos` replaces the generation config's end tokens."""
    stop = {} if eos is None else {"eos_token_id": eos}
    out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, **stop)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


UNFUSED: dict[int, Engine] = {}


def std(lm, inputs: dict, options: DecodeOptions, eos=None, fused: bool = True):
    """The engine's generate (through our fused forward, or transformers' forward), also checking that the
    streamed tokens add up to the result."""
    engine = lm.engine if fused else UNFUSED.setdefault(id(lm), Engine(lm.engine.adapter, EngineConfig(fused=False)))
    streamed = []
    result = engine.generate(inputs, options, eos=eos, on_tokens=lambda new, stats: streamed.extend(new))
    assert streamed == result.tokens
    return result


def draft_was_cut(stats) -> bool:
    """Whether the last cycle produced more tokens than were kept (EOS or the token limit inside its drafts)."""
    produced = stats.accepted + stats.cycles
    kept = stats.new_tokens - 1 - stats.dense_steps  # the first token comes from prefill
    return produced > kept


def run_case(lm, make_video, seed: int) -> list[tuple[dict, list[int], list[int], DecodeStats]]:
    """One random case: [(parameters, reference tokens, StD tokens, StD stats)] for each end-token setting tried."""
    rng = random.Random(seed)
    kind = seed % 10  # fixes what each tenth of the cases covers; everything else is random
    frames = 0 if kind == 1 else 1 if kind == 2 else rng.randint(2, 12)
    question = " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))
    system = rng.choice([None, None, " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))])
    video = None
    if frames:
        video = make_video(frames, rng.randint(28, 100), rng.randint(28, 100), rng.choice([1.0, 2.0, 4.0]), seed)
    inputs = build_inputs(lm, video, question, system)
    _, visual = lm.engine.adapter.layout(inputs)
    k = max(1, rng.choice([1, rng.randint(1, max(visual, 1)), visual, visual + rng.randint(1, 40)]))
    gamma = 0 if kind == 0 else "auto" if kind == 7 else rng.randint(1, 8)
    calibration = rng.randint(1, 3) if kind == 3 else 0
    with_eos = kind in (4, 5, 6)
    fused = kind != 8  # a tenth of the cases decode through transformers' forward instead of ours (fused.py)
    max_new_tokens = rng.randint(8 if with_eos else 1, 24)
    params = {"seed": seed, "frames": frames, "visual": visual, "prompt": inputs["input_ids"].shape[1], "k": k,
              "gamma": gamma, "calibration": calibration, "max_new_tokens": max_new_tokens, "fused": fused}
    # every draft kind drafts every case it can (quantized drafts need the fused forward)
    kinds = DRAFT_KINDS if fused and gamma != 0 and lm.engine.fused() is not None else (SPARSE_DRAFT,)
    options = [DecodeOptions(max_new_tokens, k, gamma, calibration_steps=calibration, draft=kind) for kind in kinds]
    # StD runs before the reference of its own prompt, so it cannot lean on model state that generate() leaves
    results = [std(lm, inputs, o, fused=fused) for o in options]
    expected = reference(lm.model, inputs, max_new_tokens)
    runs = [({**params, "draft": o.draft}, expected, r.tokens, r.stats) for o, r in zip(options, results, strict=True)]
    if with_eos and len(expected) >= 3:
        # a token the reference emits mid-answer becomes the only end token: the answer stops at its first occurrence
        eos = expected[rng.randrange(1, len(expected) - 1)]
        with_end = reference(lm.model, inputs, max_new_tokens, eos=eos)
        for o in options:
            result = std(lm, inputs, o, eos=[eos], fused=fused)
            runs.append(({**params, "draft": o.draft, "eos": eos}, with_end, result.tokens, result.stats))
    return runs


@pytest.mark.parametrize("family", ATTENTION_FAMILIES)
def test_greedy_std_matches_generate(family, lms, make_video):
    lm = lms(family)
    failures, seen, totals = [], Counter(), Counter()
    # quantized drafts need our fused forward, which Qwen3-VL does not have
    cases_drafted: dict[str, set[int]] = {kind: set() for kind in (DRAFT_KINDS if lm.engine.fused() else ["sparse"])}
    for seed in range(CASES_PER_FAMILY):
        for params, expected, got, stats in run_case(lm, make_video, seed):
            if got != expected:
                failures.append(f"{params}\n    generate: {expected}\n    std:      {got}")
            totals.update(runs=1, drafted=stats.drafted, accepted=stats.accepted, cycles=stats.cycles)
            if stats.cycles:
                cases_drafted[params["draft"]].add(params["seed"])
            seen.update(
                dense=params["gamma"] == 0,
                auto=params["gamma"] == "auto",
                transformers_forward=not params["fused"],
                text_only=params["frames"] == 0,
                one_frame=params["frames"] == 1,
                k_is_1=params["k"] == 1 and params["visual"] > 1,
                k_above_visual=params["k"] > params["visual"] > 0,
                calibrated=params["calibration"] > 0 and stats.dense_steps > 0 and stats.cycles > 0,
                eos_inside_draft="eos" in params and got[-1:] == [params["eos"]] and draft_was_cut(stats),
                limit_inside_draft=len(got) == params["max_new_tokens"] and draft_was_cut(stats),
            )
    assert not failures, f"{len(failures)} {family} runs differ from generate():\n" + "\n".join(failures)
    rejected = totals["drafted"] - totals["accepted"]
    print(f"{family}: {dict(totals)}, rejected {rejected}; runs covering {dict(seen)}")
    assert totals["accepted"] >= 100 and rejected >= 100, dict(totals)
    drafted = {kind: len(seeds) for kind, seeds in cases_drafted.items()}
    print(f"{family}: cases in which each draft kind drafted: {drafted}")
    assert min(drafted.values()) >= 100, f"cases in which each draft kind drafted: {drafted}"
    for what in ("dense", "auto", "transformers_forward", "text_only", "one_frame", "k_is_1", "k_above_visual",
                 "calibrated",
                 "eos_inside_draft", "limit_inside_draft"):
        assert seen[what] >= 2, f"too few {family} runs with {what}: {dict(seen)}"


@pytest.mark.parametrize("family", build.FAMILIES)
@pytest.mark.parametrize("gamma", [0, 3])
def test_video_at_the_end_of_the_prompt(family, gamma, lms, make_video, one_thread):
    """No text after the video ranks its tokens: the sparse view keeps the first K, and output stays exact."""
    lm = lms(family)
    inputs = build_inputs(lm, make_video(num_frames=4, seed=7), "Describe it.")
    is_visual = torch.isin(inputs["input_ids"][0], torch.tensor(visual_token_ids(lm.model), device=lm.device))
    end = int(is_visual.nonzero().max()) + 1
    per_token = ("input_ids", "attention_mask", "mm_token_type_ids")
    inputs = {key: value[:, :end] if key in per_token else value for key, value in inputs.items()}
    expected = reference(lm.model, inputs, 12)
    result = std(lm, inputs, DecodeOptions(12, k=2, gamma=gamma, calibration_steps=0))
    assert result.tokens == expected
    assert result.stats.kept_tokens == (2 + end - int(is_visual.sum()) if gamma else 0)


def test_batched_slots_decode_independently(lms, make_video):
    """Slots of different prompts and token limits, prefilled at different times, each decode their own answer."""
    lm = lms("qwen2-vl")
    prompts = [
        build_inputs(lm, make_video(num_frames=n, seed=n), q) for n, q in ((6, "What moves?"), (2, "Colors?"))
    ] + [build_inputs(lm, None, "Only text here, no video at all.")]  # after a video prompt in the same slot
    limits = [10, 6, 3]
    options = DecodeOptions(max_new_tokens=max(limits), k=3, gamma=4, calibration_steps=0)
    needs = [cache_capacity(*lm.engine.adapter.layout(inputs), options) for inputs in prompts]
    max_len, sparse_cap = (max(n[i] for n in needs) for i in (0, 1))
    outputs, prompt_of = {}, {}
    with lm.engine.new_decoder(options, 2, max_len, sparse_cap) as decoder:
        assert decoder.prefill(0, prompts[0], max_new_tokens=0) == [] and decoder.release(0).done
        waiting = list(enumerate(prompts))
        while waiting or any(decoder.slots):
            for slot in range(2):  # refill a free slot while the other is mid-answer
                if decoder.slots[slot] is None and waiting:
                    prompt_of[slot], inputs = waiting.pop(0)
                    decoder.prefill(slot, inputs, max_new_tokens=limits[prompt_of[slot]])
            decoder.step()
            for slot, state in enumerate(decoder.slots):
                if state is not None and state.done:
                    outputs[prompt_of[slot]] = decoder.release(slot).tokens
    for i, inputs in enumerate(prompts):
        assert outputs[i] == reference(lm.model, inputs, limits[i]), f"prompt {i}"


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl", "qwen3.5"])
@pytest.mark.parametrize("gamma", [0, 3])
def test_long_video_positions_continue_like_generate(family, gamma, lms, make_video, one_thread):
    """A video longer (in temporal positions) than the text after it: M-RoPE's largest position is then the
    video's, not the last prompt token's, and decoding must continue from the latter, as generate does. (Qwen3-VL
    and Qwen3.5 give each temporal patch its own start position, so their video never outgrows the text: 60
    timestamped patches then, decoded as exactly.)"""
    lm = lms(family)
    inputs = build_inputs(lm, make_video(num_frames=120, height=28, width=28, seed=3), "What happens?")
    positions = prompt_positions(lm.model, inputs)
    if family in build.QWEN3_VISION:
        assert int(positions.max()) == int(positions[0, 0, -1])
    else:
        assert int(positions.max()) > int(positions[0, 0, -1])  # the case this test is about
    expected = reference(lm.model, inputs, 16)
    assert std(lm, inputs, DecodeOptions(16, k=8, gamma=gamma, calibration_steps=0)).tokens == expected


@pytest.mark.parametrize("family", build.FAMILIES)
def test_any_gamma_schedule_is_lossless(family, lms, make_video, monkeypatch, one_thread):
    """gamma auto may switch between dense steps and cycles of any length at any point: whatever the schedule,
    the tokens are generate()'s. The policy is replaced by a random schedule so every switch really happens (on
    these tiny CPU models the real policy mostly, and rightly, picks dense steps)."""
    lm = lms(family)
    rng = random.Random(family)
    monkeypatch.setattr(GammaPolicy, "choose",
                        lambda self: Cycle("sparse", rng.choice([0, 0, 0, 1, 2, 3, 5, MAX_AUTO_GAMMA])))
    monkeypatch.setattr(GammaPolicy, "wants_sparse_view", lambda self: True)
    failures, switches = [], 0
    for case in range(12):
        video = make_video(rng.randint(2, 8), 56, 56, 2.0, case) if case % 4 else None
        inputs = build_inputs(lm, video, " ".join(rng.choices(WORDS, k=5)))
        limit = rng.randint(10, 30)
        result = std(lm, inputs, DecodeOptions(limit, k=rng.randint(1, 12), gamma="auto"))
        if result.tokens != reference(lm.model, inputs, limit):
            failures.append(case)
        switches += result.stats.dense_steps > 0 and result.stats.cycles > 0
    assert not failures, f"{family}: cases {failures} differ from generate()"
    assert switches >= 8


def test_qwen3_sparse_view_keeps_every_timestamp(lms, make_video):
    """Qwen3-VL's per-frame timestamps and vision start/end tokens are text of the prompt: the sparse view keeps them
    all, beside the top-K video tokens, and drafting over it stays exact."""
    lm = lms("qwen3-vl")
    inputs = build_inputs(lm, make_video(num_frames=8, seed=11), "What happens first, and when?")
    ids = inputs["input_ids"][0]
    is_visual = torch.isin(ids, torch.tensor(visual_token_ids(lm.model)))
    text_positions = (~is_visual).nonzero()[:, 0]
    prompt = lm.tokenizer.decode(ids)
    assert prompt.count(" seconds>") == prompt.count("<|vision_start|>") == 4  # 8 frames: 4 temporal patches
    options = DecodeOptions(10, k=3, gamma=3, calibration_steps=0)
    max_len, sparse_cap = cache_capacity(*lm.engine.adapter.layout(inputs), options)
    with lm.engine.new_decoder(options, 1, max_len, sparse_cap) as decoder:
        decoder.prefill(0, inputs)
        state, cache = decoder.slots[0], decoder.storage
        assert state.stats.kept_tokens == state.sparse_len == 3 + text_positions.numel()
        # after the K visual entries of each head, the sparse view holds the dense KV of every text token, in order
        kept_text = cache.sparse_k[:, 0, :, 3 : state.sparse_len]
        assert torch.equal(kept_text, cache.dense_k[:, 0, :, text_positions])
        while not state.done:
            decoder.step()
        assert state.tokens == reference(lm.model, inputs, 10)


def test_a_slot_without_sparse_view_takes_dense_steps_only(lms, make_video):
    """gamma auto skips the sparse view when drafting will not pay: the answer is the same, drafting is refused."""
    lm = lms("qwen2-vl")
    inputs = build_inputs(lm, make_video(num_frames=4, seed=5), "What moves?")
    options = DecodeOptions(8, k=4, gamma="auto")
    max_len, sparse_cap = cache_capacity(*lm.engine.adapter.layout(inputs), options)
    with lm.engine.new_decoder(options, 1, max_len, sparse_cap) as decoder:
        decoder.prefill(0, inputs, sparse_view=False)
        assert decoder.slots[0].stats.kept_tokens == 0
        with pytest.raises(ValueError, match="only take dense steps"):
            decoder.step(2)
        while not decoder.slots[0].done:
            decoder.step(0)
        assert decoder.slots[0].tokens == reference(lm.model, inputs, 8)


@pytest.mark.parametrize("family", build.FAMILIES)
def test_special_token_ids_come_from_the_model(family, lms):
    lm = lms(family)
    ids = build.special_token_ids(family, lm.tokenizer)
    placeholders = ("<image>", "<video>") if family == "llava-ov" else ("<|image_pad|>", "<|video_pad|>")
    assert visual_token_ids(lm.model) == tuple(ids[p] for p in placeholders)
    assert eos_token_ids(lm.model) == (ids["<|im_end|>"], ids["<|endoftext|>"])


def test_eos_falls_back_to_the_tokenizer(lms, monkeypatch):
    lm = lms("qwen2-vl")
    monkeypatch.setattr(lm.model.generation_config, "eos_token_id", None)
    assert eos_token_ids(lm.model, lm.tokenizer) == (lm.tokenizer.eos_token_id,)
    assert eos_token_ids(lm.model) == ()


# --- a hybrid: linear-attention layers whose recurrent state rejected drafts must not move ---------------------------


@pytest.fixture(scope="module")
def hybrid_prompts(lms, make_video):
    """[(inputs, reference, end token, reference stopping at that token)] for 8 prompts of the tiny Qwen3.5 (none, one
    or several frames, with and without a system prompt): generate's answers of HYBRID_LIMIT tokens, which the cases'
    limits cut (greedy decoding's first n tokens are its answer of n tokens)."""
    lm = lms(HYBRID)
    rng = random.Random(HYBRID)
    prompts = []
    with single_thread():
        for index, frames in enumerate((0, 1, 4, 8, 12, 16, 20, 24)):
            video = make_video(frames, rng.randint(28, 100), rng.randint(28, 100), 2.0, index) if frames else None
            system = " ".join(rng.choices(WORDS, k=4)) if index % 3 == 1 else None
            inputs = build_inputs(lm, video, " ".join(rng.choices(WORDS, k=rng.randint(1, 10))), system)
            expected = reference(lm.model, inputs, HYBRID_LIMIT)
            eos = expected[rng.randrange(2, len(expected) - 2)] if len(expected) > 5 else None
            ended = reference(lm.model, inputs, HYBRID_LIMIT, eos=eos) if eos is not None else None
            prompts.append((inputs, expected, eos, ended))
    return prompts


def run_hybrid_cases(lm, prompts, count: int, seed: int = 0) -> tuple[list[str], Counter, Counter]:
    """`count` random cases over `prompts`: (failures, totals of the stats, what the cases covered)."""
    failures, totals, seen = [], Counter(), Counter()
    rng = random.Random(seed)
    for case in range(count):
        index = rng.randrange(len(prompts))
        inputs, expected, eos, with_end = prompts[index]
        _, visual = lm.engine.adapter.layout(inputs)
        # mostly small K: the linear layers draft with their whole state, so only a small view makes drafts differ
        k = max(1, rng.choice([1, 1, 2, 3, rng.randint(1, max(visual, 1)), visual, visual + rng.randint(1, 20)]))
        gamma = rng.choice([0, "auto", *range(1, 9), *range(1, 9)])
        calibration = rng.choice([0, 0, 0, 1, 2])
        limit = rng.randint(1, HYBRID_LIMIT)
        ends = eos is not None and rng.random() < 0.4
        want = (with_end if ends else expected)[:limit]
        result = std(lm, inputs, DecodeOptions(limit, k, gamma, calibration_steps=calibration),
                     eos=[eos] if ends else None)
        params = {"case": case, "prompt": index, "k": k, "gamma": gamma, "limit": limit, "eos": eos if ends else None}
        if result.tokens != want:
            failures.append(f"{params}\n    generate: {want}\n    std:      {result.tokens}")
        stats = result.stats
        totals.update(drafted=stats.drafted, accepted=stats.accepted, cycles=stats.cycles)
        seen.update(dense=gamma == 0, auto=gamma == "auto", text_only="pixel_values_videos" not in inputs,
                    k_is_1=k == 1 and visual > 1, k_above_visual=k > visual > 0,
                    eos_inside_draft=ends and result.tokens[-1:] == [eos] and draft_was_cut(stats),
                    limit_inside_draft=len(result.tokens) == limit and draft_was_cut(stats))
    return failures, totals, seen


def test_hybrid_greedy_std_matches_generate(lms, hybrid_prompts, one_thread):
    """Qwen3.5's tiny checkpoint (linear and full attention), float32: StD's greedy tokens are generate()'s over
    K from 1 to beyond the visual tokens, gamma 0 to 8 and auto, end tokens and token limits inside a draft."""
    lm = lms(HYBRID)
    assert lm.engine.fused() is None and lm.engine.adapter.cache.linear is not None
    failures, totals, seen = run_hybrid_cases(lm, hybrid_prompts, HYBRID_CASES)
    assert not failures, f"{len(failures)} {HYBRID} cases differ from generate():\n" + "\n".join(failures)
    rejected = totals["drafted"] - totals["accepted"]
    print(f"{HYBRID}: {dict(totals)}, rejected {rejected}; cases covering {dict(seen)}")
    assert totals["accepted"] >= 100 and rejected >= 100, dict(totals)  # both kinds of rollback were taken
    for what in ("dense", "auto", "text_only", "k_is_1", "k_above_visual", "eos_inside_draft", "limit_inside_draft"):
        assert seen[what] >= 2, f"too few {HYBRID} cases with {what}: {dict(seen)}"


def test_hybrid_cases_catch_a_state_that_is_not_rolled_back(lms, hybrid_prompts, monkeypatch, one_thread):
    """Negative control: with the verify's final state kept as if every draft had been accepted (no rollback of the
    delta-rule state), the same cases do differ from generate()."""
    from stdcli.engine.linear import LinearStates

    commit = LinearStates.commit
    monkeypatch.setattr(LinearStates, "commit", lambda self, kept, width, every: commit(self, kept, width, True))
    failures, totals, _ = run_hybrid_cases(lms(HYBRID), hybrid_prompts, 12, seed=1)
    assert totals["drafted"] > totals["accepted"] and len(failures) >= 2


def test_hybrid_rollback_leaves_the_dense_state(lms, hybrid_prompts, one_thread):
    """After StD's cycles (rejections among them), each linear layer's committed state is the one dense decoding
    reaches after the same tokens: the convolution's inputs and the delta rule's matrix."""
    lm = lms(HYBRID)
    inputs = hybrid_prompts[4][0]
    states = {}
    for gamma in (4, 0):
        options = DecodeOptions(40, k=2, gamma=gamma, calibration_steps=0)
        max_len, sparse_cap = cache_capacity(*lm.engine.adapter.layout(inputs), options)
        with lm.engine.new_decoder(options, 1, max_len, sparse_cap, eos=[]) as decoder:
            decoder.prefill(0, inputs)
            state = decoder.slots[0]
            target = states["std"][0] if gamma == 0 else 30
            linear = decoder.storage.linear
            while state.dense_len - inputs["input_ids"].shape[1] < target:
                before = linear.recurrent.clone()
                decoder.step()
            states["std" if gamma else "dense"] = (state.dense_len - inputs["input_ids"].shape[1], state.tokens,
                                                   linear.conv.clone(), linear.recurrent.clone(), state.stats, before)
    (_, std_tokens, std_conv, std_state, stats, _), (_, dense_tokens, dense_conv, dense_state, _, one_short) = (
        states["std"], states["dense"])
    assert stats.drafted > stats.accepted > 0  # drafts were rejected: rollbacks happened
    assert std_tokens == dense_tokens[: len(std_tokens)]
    # equal up to float32 rounding (a verify computes its tokens' projections together); a state one token off
    # differs by far more
    torch.testing.assert_close(std_conv, dense_conv, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(std_state, dense_state, rtol=1e-4, atol=1e-4)
    assert (one_short - dense_state).abs().max() > 1e-2


def test_hybrid_slots_keep_their_own_state(lms, hybrid_prompts, one_thread):
    """Six answers through three slots refilled as answers end (each slot accepting its own number of drafts per
    cycle), and a prefilled slot put back twice (seed): every answer is generate()'s."""
    lm = lms(HYBRID)
    requests = [Request(i, inputs, max_new_tokens=6 + i) for i, (inputs, *_) in enumerate(hybrid_prompts[:6])]
    answers = {}
    lm.engine.run(requests, DecodeOptions(HYBRID_LIMIT, k=3, gamma=3, calibration_steps=0), batch_size=3,
                  on_done=lambda request, generation: answers.__setitem__(request.key, generation.tokens))
    assert answers == {i: hybrid_prompts[i][1][: 6 + i] for i in range(6)}
    inputs, expected = hybrid_prompts[2][:2]
    options = DecodeOptions(HYBRID_LIMIT, k=3, gamma=2, calibration_steps=0)
    max_len, sparse_cap = cache_capacity(*lm.engine.adapter.layout(inputs), options)
    with lm.engine.new_decoder(options, 2, max_len, sparse_cap) as decoder:
        decoder.prefill(1, inputs)
        prefilled = decoder.release(1)
        for _ in range(2):
            decoder.seed(1, replace(prefilled, tokens=list(prefilled.tokens), stats=DecodeStats()))
            while not decoder.slots[1].done:
                decoder.step()
            assert decoder.release(1).tokens == expected
