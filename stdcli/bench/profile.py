"""`stdcli bench --random-init`: a real architecture at real scale with random weights (nothing downloaded). Step
costs of dense, draft and verify steps against their bandwidth floors (settings.FLOOR, settings.STEP_TIMING), the
speedup the cost model projects from them (a projection, labelled as one), and optionally measured decoding of
synthetic prompts through the same session loop as `stdcli ask`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..engine.decoder import Decoder, Slot
from ..engine.device import free_memory_bytes, synchronize
from ..engine.linear import slot_bytes
from ..engine.options import AUTO, DEFAULT_K, MAX_AUTO_GAMMA, SPARSE_DRAFT, DecodeOptions
from ..engine.policy import GammaPolicy, expected_tokens
from ..engine.quant import weight_bytes
from ..engine.session import Engine, Request, cache_capacity, run_window
from ..engine.stats import draft_counts, gamma_counts
from ..engine.tensor_parallel import (
    TensorParallel,
    TensorParallelError,
    check_shape,
    shard_language_model,
    weight_bytes_per_rank,
)
from ..model.adapter import eos_token_ids, visual_token_ids
from ..model.loading import pick_device, pick_dtype
from ..model.registry import REGISTRY, ModelLoadError
from .common import environment, fmt, median_time, ratio, release_memory, round_or_none
from .settings import (
    ACCEPTANCE_RATES,
    DEFAULT_BATCHES,
    DEFAULT_CONTEXTS,
    DEFAULT_ITERS,
    DEFAULT_TEXT_TOKENS,
    FLOOR,
    GIB,
    PROFILE_GAMMAS,
    PROJECTION_FORMULA,
    PROJECTION_LABEL,
    SCHEMA,
    STEP_TIMING,
    WARMUP_ITERS,
    BenchError,
    Progress,
    say,
)


def _copy_and_sum_times(count: int, device: torch.device, iters: int) -> tuple[float, float]:
    """Median seconds of copying, and of summing, `count` float32 values (the buffers are freed on return)."""
    src = torch.empty(count, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return median_time(lambda: dst.copy_(src), device, iters), median_time(lambda: src.sum(), device, iters)


def measure_bandwidth(device: torch.device, nbytes: int | None = None, iters: int = 10) -> dict[str, Any]:
    """Device memory bandwidth, measured two ways on one float32 buffer of `nbytes` (default: 1 GiB on a GPU,
    capped at a quarter of free memory; 256 MiB on a CPU):

    - copy: dst.copy_(src), counted as 2 x nbytes moved (read + write), as STREAM's copy does;
    - reduction: src.sum(), nbytes read.
    The floors use the higher of the two, so a floor is never above what the device can do (the stricter floor).
    """
    if nbytes is None:
        nbytes = min(GIB, free_memory_bytes(device) // 8) if device.type == "cuda" else 256 << 20
    count = max(nbytes // 4, 1 << 16)
    copy_s, sum_s = _copy_and_sum_times(count, device, iters)
    real = count * 4
    release_memory(device)
    copy_bw, sum_bw = 2 * real / copy_s, real / sum_s
    used = "copy" if copy_bw >= sum_bw else "reduction"
    return {
        "copy_bytes_per_s": round(copy_bw),
        "reduction_bytes_per_s": round(sum_bw),
        "bytes_per_s": round(max(copy_bw, sum_bw)),
        "used": used,
        "buffer_bytes": real,
        "method": (
            "float32 buffer; copy: dst.copy_(src), 2 x bytes / time; reduction: src.sum(), bytes / time; median of "
            f"{iters} after warm-up, synchronized; floors use the higher ({used})"
        ),
    }


def resolve_family(alias: str, scale: str | None) -> tuple[str, str]:
    """(family, scale) of a --random-init model: an alias of the registry (qwen2-vl, qwen2-vl-2b, qwen2.5-vl,
    llava-ov, qwen3-vl, qwen3.5, ...) or a family name; scale defaults to the alias's (7b; 2b for qwen2-vl-2b; 8b for
    qwen3-vl; 9b for qwen3.5) or the family's default alias's."""
    from ..model.build import DEFAULT_SCALES, FAMILIES, SHAPES

    if alias in REGISTRY and REGISTRY[alias].repo_id is not None:
        family = REGISTRY[alias].family
        default = REGISTRY[alias].scale or DEFAULT_SCALES[family]
    elif alias in FAMILIES:
        family, default = alias, DEFAULT_SCALES[alias]
    else:
        names = [a for a, spec in REGISTRY.items() if spec.repo_id is not None]
        raise BenchError(f"--random-init builds a known architecture: --model {' | '.join(names)} (got {alias!r})")
    scale = scale or default
    if (family, scale) not in SHAPES:
        scales = [s for f, s in SHAPES if f == family]
        raise BenchError(f"no {scale!r} scale for {family}; available: {', '.join(scales)}")
    return family, scale


@dataclass
class _Shape:
    layers: int  # with a KV cache: a hybrid's full-attention layers only
    kv_heads: int
    q_heads: int
    head_dim: int
    elem: int
    vocab: int
    linear_layers: int = 0  # a hybrid's linear-attention layers
    linear_state_bytes: int = 0  # their recurrent state, per sequence (LinearDims.state_bytes)
    linear_slot_bytes: int = 0  # what the engine holds for it per slot (linear.slot_bytes)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * self.elem

    def step_bytes(self, weights: int, batch: int, entries: int) -> int:
        """Bytes a step must read or write: the weights, the KV `entries` each sequence attends to, and a hybrid's
        recurrent state, read and written again by every step, a draft's as a dense one's."""
        return weights + batch * (entries * self.kv_bytes_per_token + 2 * self.linear_state_bytes)


def shape_of(engine: Engine, text: Any, dtype: torch.dtype, ranks: int = 1) -> _Shape:
    """The cache shape the step floors count, from the engine's view of the model (one rank's part of it, of
    `ranks` under tensor parallelism) and its text config."""
    dims = engine.adapter.cache
    elem = torch.empty((), dtype=dtype).element_size()
    shape = _Shape(dims.layers, dims.kv_heads, text.num_attention_heads // ranks, dims.head_dim, elem,
                   text.vocab_size)
    if dims.linear is not None:
        shape.linear_layers, shape.linear_state_bytes = len(dims.linear.layers), dims.linear.state_bytes
        shape.linear_slot_bytes = slot_bytes(dims.linear)
    return shape


def _weight_bytes(model) -> tuple[int, int, int]:
    """(all parameters, bytes of all parameters, bytes a decode step reads: language model without its embedding
    table, plus the lm_head; a tied lm_head is counted once)."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    total_bytes = sum(p.numel() * p.element_size() for p in params)
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    language = getattr(model.model, "language_model", model.model)
    read = {id(p): p for p in language.parameters() if p is not embedding}
    read[id(head)] = head
    return total, total_bytes, sum(p.numel() * p.element_size() for p in read.values())


def _point_memory(shape: _Shape, batch: int, context: int, kept: int, gmax: int) -> int:
    """Bytes one profile point allocates: the engine's dense and sparse caches, plus working memory of the eager
    verify pass, counted as if SDPA fell back to its math kernel (K and V expanded to the query heads, float32
    scores and probabilities, contiguous copies of the cache view), a hybrid's linear-attention states, plus the
    logits and 512 MiB of margin."""
    e, width = shape.elem, gmax + 1
    keys = context + width
    per_entry = 2 * shape.layers * batch * shape.kv_heads * shape.head_dim * e
    caches = per_entry * (keys + kept + width) + batch * shape.linear_slot_bytes
    transient = (
        2 * batch * shape.q_heads * keys * shape.head_dim * e
        + 2 * batch * shape.kv_heads * keys * shape.head_dim * e
        + 2 * batch * shape.q_heads * width * keys * 4
        + 4 * batch * width * shape.vocab * 4
    )
    return caches + transient + (512 << 20)


def fill_random(*tensors: torch.Tensor) -> None:
    """Random KV in cache buffers: step costs do not depend on the values, only on what is read."""
    for t in tensors:
        if t.numel():
            t.normal_()


def seed_fresh_slots(decoder: Decoder, dense_len: int, sparse_len: int, tokens: list[int]) -> None:
    """One made-up slot per token, over `dense_len` cached entries and a sparse view of `sparse_len`."""
    for b, token in enumerate(tokens):
        rows = 3 if decoder.mrope else 1
        decoder.seed(b, Slot(dense_len=dense_len, sparse_len=sparse_len, rope_delta=(0,) * rows, last_token=token,
                             max_new_tokens=1 << 30))


def _time_steps(decoder: Decoder, plan: Sequence[tuple[int, int, str]], dense_len: int, tokens: list[int],
                iters: int, warmup: int) -> list[tuple[float, float]]:
    """Medians of (draft_s, verify_s or dense_s), by the engine's own clock, of Decoder.step(gamma, draft) for each
    (gamma, sparse_len, draft) of `plan`, from fresh slots each time. The plan runs round-robin, warmup + iters
    rounds, so a slow stretch of the machine weighs on every entry alike."""
    samples: list[list[tuple[float, float]]] = [[] for _ in plan]
    for i in range(warmup + iters):
        for j, (gamma, sparse_len, draft) in enumerate(plan):
            seed_fresh_slots(decoder, dense_len, sparse_len, tokens)
            synchronize(decoder.device)
            decoder.step(gamma, draft)
            synchronize(decoder.device)
            stats = decoder.release(0).stats
            if i >= warmup:
                samples[j].append((stats.draft_s, stats.verify_s if gamma else stats.dense_s))
    return [(statistics.median(d for d, _ in s), statistics.median(v for _, v in s)) for s in samples]


def _step_entry(seconds: float, nbytes: int, bandwidth: float) -> dict[str, Any]:
    floor = nbytes / bandwidth
    return {
        "s": round_or_none(seconds, 7),
        "floor_s": round_or_none(floor, 7),
        "bytes": nbytes,
        "over_floor": round_or_none(seconds / floor),
    }


def _profile_point(engine: Engine, shape: _Shape, weights_read: int, bandwidth: float, context: int, batch: int,
                   ks: Sequence[int], gammas: Sequence[int], drafts: Sequence[str], text_tokens: int, iters: int,
                   warmup: int, seed: int) -> dict[str, Any]:
    device = engine.device
    kept = {k: min(k, context - text_tokens) + text_tokens for k in ks}
    gmax = max(gammas)
    point: dict[str, Any] = {"context": context, "batch": batch, "skipped": None}
    need = _point_memory(shape, batch, context, max(kept.values()), gmax)
    free = free_memory_bytes(device)
    if engine.parallel is not None:  # every rank measures the point, or none does
        free = engine.parallel.agreed_min(free)
    point.update(memory_needed_bytes=need, memory_free_bytes=free)
    if need > free:
        point["skipped"] = f"needs ~{need / GIB:.1f} GiB for the caches and working memory, {free / GIB:.1f} GiB free"
        point.update(dense_step=None, draft_steps=[], verify_steps=[])
        return point
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, shape.vocab, (batch,), generator=generator).tolist()
    torch.manual_seed(seed)
    # dense: the --dense path's own decoder (gamma = 0, no sparse view)
    with engine.new_decoder(DecodeOptions(gamma=0), batch, context + 1, 1) as decoder:
        fill_random(decoder.storage.dense_k[..., :context, :], decoder.storage.dense_v[..., :context, :])
        ((_, dense_s),) = _time_steps(decoder, [(0, 0, SPARSE_DRAFT)], context, tokens, iters, warmup)
    del decoder
    release_memory(device)
    point["dense_step"] = _step_entry(dense_s, shape.step_bytes(weights_read, batch, context + 1), bandwidth)
    # StD: one decoder whose sparse view holds the largest K; smaller K are shorter views of it
    options = DecodeOptions(gamma=gmax, k=max(ks))
    cap = max(kept.values()) + gmax + 1
    draft_steps, verifies = [], []
    with engine.new_decoder(options, batch, context + gmax + 1, cap, kinds=drafts) as decoder:
        c = decoder.storage
        fill_random(c.dense_k[..., :context, :], c.dense_v[..., :context, :], c.sparse_k, c.sparse_v)
        read = {kind: weights_read if kind == SPARSE_DRAFT else weight_bytes(decoder.drafts[kind]) for kind in drafts}
        # every gamma at the first K and kind (verify costs depend on neither), the largest gamma at the others
        plan = [(k, g, kind) for index, (k, kind) in enumerate((k, kind) for k in ks for kind in drafts)
                for g in (gammas if index == 0 else [gmax])]
        timed = _time_steps(decoder, [(g, kept[k], kind) for k, g, kind in plan], context, tokens, iters, warmup)
        for (k, g, kind), (draft_s, verify_s) in zip(plan, timed, strict=True):
            if g == gmax:
                entry = _step_entry(draft_s / g, shape.step_bytes(read[kind], batch, kept[k] + 1), bandwidth)
                entry["over_dense_step"] = round_or_none(draft_s / g / dense_s)
                draft_steps.append({"k": k, "draft": kind, "kept_tokens": kept[k], **entry})
            if k == ks[0] and kind == drafts[0]:
                entry = _step_entry(verify_s, shape.step_bytes(weights_read, batch, context + g + 1), bandwidth)
                entry["over_dense_step"] = round_or_none(verify_s / dense_s)
                verifies.append({"gamma": g, "tokens": g + 1, **entry})
    del decoder
    release_memory(device)
    point["draft_steps"] = draft_steps
    point["verify_steps"] = verifies
    return point


DECODE_LABEL = (
    "MEASURED decoding of the random-weight model (tokens/s of whole decode loops after one warm-up round, device "
    "synchronized): dense vs fixed gammas vs gamma auto. Its acceptance is a random model's on a synthetic prompt, "
    "not a prediction for real weights; what it shows is whether auto finds the best gamma (or dense) at these step "
    "costs."
)


def synthetic_prompt(model, context: int, text_tokens: int, seed: int) -> dict:
    """A prompt of `context` tokens: half the text tokens, then a "video" of the model's video placeholder tokens,
    then the other half (the question). Without pixel values the placeholders are embedded as ordinary tokens, so
    the prompt runs through the engine's own prefill, ranking and sparse view, as a real video prompt does."""
    device = model.get_input_embeddings().weight.device
    generator = torch.Generator().manual_seed(seed)
    special = min(visual_token_ids(model) + eos_token_ids(model))  # ordinary text ids lie below the special ones
    text = torch.randint(0, special, (text_tokens,), generator=generator)
    video = torch.full((context - text_tokens,), visual_token_ids(model)[-1])
    half = text_tokens // 2
    ids = torch.cat([text[:half], video, text[half:]])[None].to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _timed_decode(decoder: Decoder, prefilled: list[Slot], policy: GammaPolicy, new_tokens: int
                  ) -> tuple[float, list[Slot]]:
    """Seconds to decode `new_tokens` per slot from the prefilled states through the session loop (the caches'
    prompt entries are never written by decoding, so every run starts from the same prompt), and the final states
    (as the loop hands them out)."""
    requests = [Request(b, prefilled=Slot(dense_len=p.dense_len, sparse_len=p.sparse_len, rope_delta=p.rope_delta,
                                          last_token=p.last_token, max_new_tokens=new_tokens, tokens=list(p.tokens)))
                for b, p in enumerate(prefilled)]
    finished: dict[int, Slot] = {}
    synchronize(decoder.device)
    started = time.perf_counter()
    run_window(decoder, policy, requests,
               on_done=lambda request, generation: finished.__setitem__(request.key, request.prefilled))
    synchronize(decoder.device)
    return time.perf_counter() - started, [finished[b] for b in range(len(prefilled))]


def _decode_point(engine: Engine, context: int, batch: int, k: int, gammas: Sequence[int], drafts: Sequence[str],
                  text_tokens: int, new_tokens: int, rounds: int, seed: int, warmup: bool = True) -> dict[str, Any]:
    """decode_prompts on `batch` synthetic prompts of `context` tokens, decoding past any end token."""
    prompts = [synthetic_prompt(engine.model, context, text_tokens, seed + b) for b in range(batch)]
    point = decode_prompts(engine, prompts, k, gammas, drafts, new_tokens, rounds, eos=(),
                           acceptance_key="random_model_acceptance", warmup=warmup)
    return {"context": context, **point}


def decode_prompts(engine: Engine, prompts: Sequence[dict], k: int, gammas: Sequence[int], drafts: Sequence[str],
                   new_tokens: int, rounds: int, eos: Sequence[int] | None = None,
                   acceptance_key: str = "acceptance", warmup: bool = True) -> dict[str, Any]:
    """Dense, every fixed gamma with every draft kind, and auto (gamma and kind) decoding up to `new_tokens` per
    sequence for the prompts (one batch), alternating, after a warm-up round (which captures the CUDA graphs and
    lets auto learn). The prompts are prefilled once: every run decodes from the same caches (decoding never writes
    a prompt's entries). `eos`: the end tokens (default the model's; () decodes every sequence to `new_tokens`).
    `acceptance_key` names the acceptance rate (a random model's is named apart from a trained one's); warmup=False
    leaves the warm-up round out (where only tokens and acceptance count, not speed)."""
    batch = len(prompts)
    layouts = [engine.adapter.layout(p) for p in prompts]
    options = DecodeOptions(max_new_tokens=new_tokens, k=k, gamma=max(*gammas, MAX_AUTO_GAMMA))  # room for any
    needs = [cache_capacity(*layout, options) for layout in layouts]
    max_len, sparse_cap = max(n[0] for n in needs), max(n[1] for n in needs)
    auto_kinds = engine.draft_kinds(replace(options, draft=AUTO))
    methods: list[tuple[int | str, str]] = [(0, SPARSE_DRAFT), *((g, d) for d in drafts for g in gammas),
                                            (AUTO, AUTO)]
    runs: dict[Any, list[tuple[float, list[Slot]]]] = {m: [] for m in methods}
    kinds = list(dict.fromkeys([*drafts, *auto_kinds]))
    with engine.new_decoder(options, batch, max_len, sparse_cap, eos=eos, kinds=kinds) as decoder:
        for b, prompt in enumerate(prompts):
            decoder.prefill(b, prompt)
        prefilled = [decoder.release(b) for b in range(batch)]
        key = engine.cost_key(max(prompt for prompt, _ in layouts), batch)
        for r in range(0 if warmup else 1, rounds + 1):  # round 0 warms up
            order = methods[r % len(methods):] + methods[: r % len(methods)]
            for gamma, draft in order:
                policy = engine.start_policy(replace(options, gamma=gamma, draft=draft), key)
                result = _timed_decode(decoder, prefilled, policy, new_tokens)
                engine.finish_policy(key, policy)
                if r:
                    runs[gamma, draft].append(result)
    del decoder
    dense_tokens = [s.tokens for _, slots in runs[0, SPARSE_DRAFT] for s in slots]
    configs = []
    for gamma, draft in methods:
        slots = [s for _, run in runs[gamma, draft] for s in run]
        seconds = sum(t for t, _ in runs[gamma, draft])
        decoded = sum(s.stats.decoded_tokens for s in slots)
        drafted, accepted = sum(s.stats.drafted for s in slots), sum(s.stats.accepted for s in slots)
        configs.append({
            "gamma": gamma,
            "draft": None if gamma == 0 else draft,
            "seconds": round_or_none(seconds),
            "decoded_tokens": decoded,
            "tokens_per_s": round_or_none(decoded / seconds) if seconds else None,
            acceptance_key: round_or_none(accepted / drafted) if drafted else None,
            "dense_share": ratio(sum(s.stats.dense_steps for s in slots), decoded),
            "gammas": gamma_counts(s.stats.gammas for s in slots),
            "drafts": draft_counts(s.stats.drafts for s in slots),
            "identical_to_dense": sum(s.tokens == d for s, d in zip(slots, dense_tokens, strict=True)),
            "total": len(slots),
            # run by run, slot by slot: what each sequence drafted and kept (the dense runs: their tokens)
            "sequences": [{"identical": s.tokens == d, "drafted": s.stats.drafted, "accepted": s.stats.accepted,
                           **({"tokens": s.tokens} if gamma == 0 else {})}
                          for s, d in zip(slots, dense_tokens, strict=True)],
        })
    rate = {(c["gamma"], c["draft"]): c["tokens_per_s"] for c in configs}
    fixed = [(g, d) for g, d in methods[1:-1]]
    best = max(fixed, key=lambda m: rate[m])
    dense_rate, auto_rate = rate[0, None], rate[AUTO, AUTO]
    return {
        "batch": batch,
        "prompt_tokens": [prompt for prompt, _ in layouts],
        "k": k,
        "new_tokens": new_tokens,
        "rounds": rounds,
        "configs": configs,
        "best_fixed_gamma": best[0],
        "best_fixed_draft": best[1],
        "auto_vs_best_fixed": ratio(auto_rate, rate[best]),
        "auto_vs_dense": ratio(auto_rate, dense_rate),
        "best_fixed_vs_dense": ratio(rate[best], dense_rate),
    }


def project(dense_s: float, draft_s: float, verify_s: dict[int, float], acceptance: float) -> tuple[int, float, dict]:
    """(best gamma, its projected speedup, speedup of every gamma) by the cost model."""
    by_gamma = {g: expected_tokens(acceptance, g) * dense_s / (g * draft_s + v) for g, v in sorted(verify_s.items())}
    best = max(by_gamma, key=by_gamma.get)
    return best, by_gamma[best], by_gamma


def projection(points: list[dict], acceptance: Sequence[float] = ACCEPTANCE_RATES) -> dict[str, Any]:
    rows = []
    for point in points:
        if point["skipped"]:
            continue
        for draft in point["draft_steps"]:
            for basis, key in (("measured", "s"), ("floor", "floor_s")):
                verify = {v["gamma"]: v[key] for v in point["verify_steps"]}
                for a in acceptance:
                    best, speedup, by_gamma = project(point["dense_step"][key], draft[key], verify, a)
                    rows.append(
                        {
                            "context": point["context"],
                            "batch": point["batch"],
                            "k": draft["k"],
                            "draft": draft["draft"],
                            "basis": basis,
                            "acceptance": a,
                            "best_gamma": best,
                            "speedup": round_or_none(speedup),
                            "by_gamma": {str(g): round_or_none(s) for g, s in by_gamma.items()},
                        }
                    )
    return {"label": PROJECTION_LABEL, "formula": PROJECTION_FORMULA, "acceptance": list(acceptance), "rows": rows}


def profile_random_init(
    alias: str = "qwen2-vl",
    *,
    scale: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    batches: Sequence[int] = DEFAULT_BATCHES,
    ks: Sequence[int] = (DEFAULT_K,),
    gammas: Sequence[int] = PROFILE_GAMMAS,
    drafts: Sequence[str] = (SPARSE_DRAFT,),
    iters: int = DEFAULT_ITERS,
    warmup: int = WARMUP_ITERS,
    text_tokens: int = DEFAULT_TEXT_TOKENS,
    acceptance: Sequence[float] = ACCEPTANCE_RATES,
    bandwidth_bytes: int | None = None,
    seed: int = 0,
    decode_tokens: int = 0,
    decode_rounds: int = 2,
    progress: Progress = None,
    tensor_parallel: TensorParallel | None = None,
) -> dict[str, Any]:
    """Step costs of the real architecture with random weights against their floors (a draft step of each draft
    kind), and the projected speedup. With decode_tokens > 0, each point also decodes that many tokens per sequence
    densely, with every fixed gamma and draft kind, and with auto, on synthetic prompts, and reports the measured
    speeds (DECODE_LABEL). "auto" among `drafts` stands for the kinds auto chooses among here.

    Points that do not fit in the device's free memory (weights are checked before the model is built, each
    context x batch point before its caches are allocated) are skipped with a note, never attempted.
    `tensor_parallel`: this rank's group; the language model is split over it (engine/tensor_parallel.py), every
    rank measures its own steps (the report's are the leader's) and the floors count what one rank reads.
    """
    from ..model.build import MODEL_CLASSES, build_random_model, make_config

    family, scale = resolve_family(alias, scale)
    kinds = [kind for kind in drafts if kind != AUTO]
    if iters < 1 or not contexts or not batches or not ks or not gammas:
        raise BenchError("the profile needs at least one context, batch size, K, gamma and iteration")
    if min(gammas) < 1:
        raise BenchError("--gamma values must be at least 1")
    too_short = [n for n in contexts if n <= text_tokens]
    if too_short:
        raise BenchError(
            f"--context values must exceed the {text_tokens} text tokens of the prompt, got {too_short[0]}"
        )
    try:
        torch_device = pick_device(device) if tensor_parallel is None else tensor_parallel.device
        torch_dtype = pick_dtype(dtype, torch_device)
    except ModelLoadError as error:
        raise BenchError(str(error)) from None
    env = environment(torch_device)
    config = make_config(family, scale)
    ranks = tensor_parallel.size if tensor_parallel is not None else 1
    try:
        check_shape(config.get_text_config(), ranks)
    except TensorParallelError as error:
        raise BenchError(str(error)) from None
    with torch.device("meta"):
        skeleton = MODEL_CLASSES[family]._from_config(config, dtype=torch_dtype)
    parameters, weight_bytes, _ = _weight_bytes(skeleton)
    held = weight_bytes_per_rank(skeleton, ranks)
    del skeleton
    free = free_memory_bytes(torch_device)
    if held + (1 << 30) > free:
        split = f", {held / GIB:.1f} GiB on each of {ranks} ranks," if ranks > 1 else ""
        raise BenchError(
            f"{family} {scale} in {str(torch_dtype).removeprefix('torch.')}: {weight_bytes / GIB:.1f} GiB of weights"
            f"{split} do not fit in the {free / GIB:.1f} GiB free on {torch_device}"
        )
    say(progress, f"building {family} {scale} with random weights on {torch_device}")
    shard = None if tensor_parallel is None else (lambda model: shard_language_model(model, tensor_parallel))
    model = build_random_model(family, config, seed=seed, dtype=torch_dtype, device=str(torch_device), shard=shard)
    _, _, weights_read = _weight_bytes(model)  # what one rank's step reads
    engine = Engine.of(model, parallel=tensor_parallel)
    try:
        kinds = list(dict.fromkeys([*kinds, *(engine.draft_kinds(DecodeOptions()) if AUTO in drafts else [])]))
        for kind in kinds:  # a quantized kind the model cannot run is refused here
            engine.draft_kinds(DecodeOptions(draft=kind))
    except ValueError as error:
        raise BenchError(str(error)) from None
    say(progress, "measuring the memory bandwidth")
    bandwidth = measure_bandwidth(torch_device, bandwidth_bytes)
    shape = shape_of(engine, config.get_text_config(), torch_dtype, ranks)
    points = []
    for context in contexts:
        for batch in batches:
            say(progress, f"context {context}, batch {batch}")
            point = _profile_point(engine, shape, weights_read, bandwidth["bytes_per_s"], context, batch, list(ks),
                                   sorted(gammas), kinds, text_tokens, iters, warmup, seed)
            if decode_tokens and not point["skipped"]:
                say(progress, f"context {context}, batch {batch}: decoding")
                point["decode"] = _decode_point(engine, context, batch, ks[0], sorted(gammas), kinds, text_tokens,
                                                decode_tokens, decode_rounds, seed)
                release_memory(torch_device)
            points.append(point)
    del model, engine
    release_memory(torch_device)
    return {
        "schema": SCHEMA,
        "kind": "random-init",
        "environment": env,
        "model": {
            "alias": alias,
            "family": family,
            "scale": scale,
            "dtype": str(torch_dtype).removeprefix("torch."),
            "device": str(torch_device),
            "parameters": parameters,
            "weight_bytes": weight_bytes,
            "weight_bytes_read_per_step": weights_read,
            "kv_bytes_per_token": shape.kv_bytes_per_token,
            "layers": shape.layers,
            "linear_layers": shape.linear_layers,
            "linear_state_bytes": shape.linear_state_bytes,
            "kv_heads": shape.kv_heads,
            "q_heads": shape.q_heads,
            "head_dim": shape.head_dim,
            "vocab_size": shape.vocab,
            "tensor_parallel": ranks,
            "weight_bytes_per_rank": held,
        },
        "settings": {
            "contexts": list(contexts),
            "batches": list(batches),
            "k": list(ks),
            "gamma": sorted(gammas),
            "draft": kinds,
            "text_tokens": text_tokens,
            "iters": iters,
            "warmup_iters": warmup,
            "floor": FLOOR,
            "step_timing": STEP_TIMING,
        },
        "bandwidth": bandwidth,
        "points": points,
        "projection": projection(points, acceptance),
        **({"decode_label": DECODE_LABEL} if decode_tokens else {}),
    }



VERDICT_ACCEPTANCE = 0.8  # the acceptance the one-line summary projects at: StD's published Qwen2-VL-7B range


def profile_verdict(report: dict) -> str:
    """One sentence: what the step costs measured here mean for StD (a projection, said to be one), and what
    decoding measured, where it ran."""
    m = report["model"]
    rows = [r for r in report["projection"]["rows"]
            if r["basis"] == "measured" and r["acceptance"] == VERDICT_ACCEPTANCE]
    if not rows:
        return f"No point of {m['family']} {m['scale']} could be measured (see 'skipped' in the points)."
    best, worst = max(rows, key=lambda r: r["speedup"]), min(rows, key=lambda r: r["speedup"])
    text = (f"Projected, not measured: at acceptance {VERDICT_ACCEPTANCE}, StD would decode {m['family']} "
            f"{m['scale']} {best['speedup']:.2f}x as fast as our dense path at {best['batch']} x {best['context']} "
            f"(γ {best['best_gamma']}) and {worst['speedup']:.2f}x at {worst['batch']} x {worst['context']}, from "
            "the step costs measured here")
    decoded = [p for p in report["points"] if p.get("decode")]
    if decoded:
        autos = ", ".join(f"{p['decode']['auto_vs_dense']:.2f}x at {p['batch']} x {p['context']}" for p in decoded)
        text += f"; measured, gamma auto decoded at {autos} of our dense path (random weights: no real acceptance)"
    return text + "."


def profile_tables(report: dict) -> list:
    """Rich tables of a profile_random_init report: step costs against floors, then the labelled projection."""
    from rich.table import Table

    m, bw = report["model"], report["bandwidth"]
    steps = Table(
        title=f"step costs: {m['family']} {m['scale']} shape, random weights, {m['dtype']} on "
        f"{report['environment']['device_name'] or m['device']}; bandwidth {bw['bytes_per_s'] / 1e9:,.1f} GB/s "
        f"({bw['used']})",
        caption="floor = bytes the step must read (weights + KV it attends to) / measured bandwidth",
    )
    for column in ("context", "batch", "step", "ms", "floor ms", "× floor", "× dense step"):
        steps.add_column(column, justify="right")
    for p in report["points"]:
        where = (str(p["context"]), str(p["batch"]))
        if p["skipped"]:
            steps.add_row(*where, "skipped", "-", "-", "-", p["skipped"])
            continue
        d = p["dense_step"]
        steps.add_row(*where, "dense", fmt(d["s"] * 1e3), fmt(d["floor_s"] * 1e3), fmt(d["over_floor"]), "1.00")
        for x in p["draft_steps"]:
            steps.add_row(*where, f"{x['draft']} draft K={x['k']} ({x['kept_tokens']} kept)", fmt(x["s"] * 1e3),
                          fmt(x["floor_s"] * 1e3), fmt(x["over_floor"]), fmt(x["over_dense_step"]))
        for x in p["verify_steps"]:
            steps.add_row(*where, f"verify γ={x['gamma']} ({x['tokens']} tok)", fmt(x["s"] * 1e3),
                          fmt(x["floor_s"] * 1e3), fmt(x["over_floor"]), fmt(x["over_dense_step"]))
    proj = report["projection"]
    table = Table(title=proj["label"], caption=proj["formula"])
    for column in ("context", "batch", "K", "draft", "step costs"):
        table.add_column(column, justify="right")
    for a in proj["acceptance"]:
        table.add_column(f"a={a:g}", justify="right")
    grouped: dict = {}
    for row in proj["rows"]:
        where = (row["context"], row["batch"], row["k"], row["draft"], row["basis"])
        grouped.setdefault(where, {})[row["acceptance"]] = row
    for (context, batch, k, draft, basis), cells in grouped.items():
        table.add_row(
            str(context), str(batch), str(k), draft, basis,
            *(
                f"{cells[a]['speedup']:.2f}× γ{cells[a]['best_gamma']}" if a in cells else "-"
                for a in proj["acceptance"]
            ),
        )
    return [steps, table, *_decode_table(report)]


def _decode_table(report: dict) -> list:
    from rich.table import Table

    points = [p for p in report["points"] if p.get("decode")]
    if not points:
        return []
    table = Table(title=report["decode_label"], caption="tok/s per γ and draft kind (0 = dense); identical: "
                  "sequences equal to the dense ones, token for token")
    for column in ("context", "batch", "tok/s by γ:draft", "auto used", "accept", "auto ×best fixed", "auto ×dense",
                   "identical"):
        table.add_column(column, justify="right")
    for p in points:
        d = p["decode"]
        auto = next(c for c in d["configs"] if c["gamma"] == AUTO)
        used = [f"γ{g}×{n}" for g, n in auto["gammas"].items()] + [f"{k}×{n}" for k, n in auto["drafts"].items()]
        table.add_row(
            str(p["context"]), str(p["batch"]),
            " ".join(f"{_method(c)}:{c['tokens_per_s']:.0f}" for c in d["configs"]),
            " ".join(used),
            fmt(auto["random_model_acceptance"]),
            f"{fmt(d['auto_vs_best_fixed'])} (γ{d['best_fixed_gamma']} {d['best_fixed_draft']})",
            fmt(d["auto_vs_dense"]),
            ", ".join(f"{_method(c)}:{c['identical_to_dense']}/{c['total']}" for c in d["configs"] if c["gamma"] != 0),
        )
    return [table]


def _method(config: dict) -> str:
    """dense, auto, or gamma/kind: "4/int4"."""
    gamma = config["gamma"]
    return "dense" if gamma == 0 else "auto" if gamma == AUTO else f"{gamma}/{config['draft']}"
