"""Attention for the StD engine, plugged into transformers through its public AttentionInterface.

The model's own forward runs unchanged; only the attention of its language model is ours while the engine
drives it (`engine_attention`). Each forward the engine runs gets a `StepContext` saying which keys the new tokens
may see, passed as the keyword argument STEP_KWARG: transformers hands a model's extra keyword arguments down to
its attention functions, which is its documented way of giving a custom attention what it needs.

- prefill: plain causal attention over the prompt (or over the rest of a prompt whose shared prefix is cached
  already), plus the top-K selection scores of every layer;
- dense / sparse steps: the new tokens of sequence b sit right after `base_len[b]` cached keys (of the dense
  or of the sparse cache) and see those keys plus the new tokens before them (causal, bottom-right aligned).
  Keys are the whole preallocated buffer; on a CUDA GPU the split-KV kernel of kernels.py reads only each
  sequence's own length, elsewhere PyTorch's SDPA applies a mask.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from . import kernels

ATTENTION_NAME = "stdcli"
STEP_KWARG = "std_step"

# Keys per chunk when scoring visual tokens, and text queries per chunk: the score matrix is at most
# heads x QUERY_CHUNK x SCORE_CHUNK floats, whatever the prompt's length.
SCORE_CHUNK = 8192
QUERY_CHUNK = 256
# Text queries that rank the visual tokens: the last ones after the video (every usual question has fewer), so that
# scoring costs O(prompt length) per layer even for a question of thousands of tokens.
MAX_SCORE_QUERIES = 512


@dataclass
class StepContext:
    """What one forward pass of the engine needs from attention."""

    mode: str  # "prefill", "dense" or "sparse"
    base_len: torch.Tensor | None = None  # [B] dense/sparse modes: cached keys before the new tokens
    mask: torch.Tensor | None = None  # [B, 1, L, N] the keys each new token may see, for SDPA (no kernel)
    # prefill only: positions of the text queries that rank visual keys, and of the visual keys
    score_queries: torch.Tensor | None = None
    visual_keys: torch.Tensor | None = None
    visual_scores: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [Hkv, V]
    scoring_s: float = 0.0  # prefill: seconds spent ranking visual keys (part of what a sparse view costs)
    # prefill of a prompt that shares its first `start` tokens with others (decoder.SharedPrefix): keys and values
    # of those are cached already and the forward runs only the rest of the prompt. The prefix's own text after the
    # video ranks visual keys for every prompt that continues it: the prompt that prefills the whole prefix keeps
    # the query rows of `row_positions` (layer -> [Hq, Q, D]); those that continue it read them.
    start: int = 0
    row_positions: torch.Tensor | None = None
    query_rows: dict[int, torch.Tensor] = field(default_factory=dict)


def _clock(tensor: torch.Tensor) -> float:
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
    return time.perf_counter()


def ragged_causal_mask(base_len: torch.Tensor, length: int, num_keys: int) -> torch.Tensor:
    """[B, 1, L, N] for L new tokens stored at base_len[b] .. base_len[b]+L-1 among N keys.

    Query i of sequence b sees keys 0 .. base_len[b]+i: causal, aligned to the bottom right.
    """
    key_pos = torch.arange(num_keys, device=base_len.device)
    query_pos = base_len[:, None] + torch.arange(length, device=base_len.device)
    return (key_pos[None, None, :] <= query_pos[:, :, None])[:, None]


def masked_attention(query, key, value, mask: torch.Tensor, scaling: float) -> torch.Tensor:
    """query [B,Hq,L,D]; key/value [B,Hkv,N,D] -> [B, L, Hq, D] (the layout the model expects)."""
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling, enable_gqa=query.shape[1] != key.shape[1]
    )
    return out.transpose(1, 2)


def score_visual_keys(
    query: torch.Tensor,
    key: torch.Tensor,
    score_queries: torch.Tensor,
    visual_keys: torch.Tensor,
    scaling: float,
    chunk: int = SCORE_CHUNK,
    start: int = 0,
    cached_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean attention probability that the text queries pay to each visual key, per KV head.

    query [Hq,L,D], key [Hkv,L,D] of one prompt (after RoPE); score_queries [T] and visual_keys [V] are positions;
    the last MAX_SCORE_QUERIES of the queries rank (visual_attention says how). Returns [Hkv, V] float32.

    A prompt continued from a shared prefix: `query` holds only the tokens from position `start` on (key still
    holds every position), and `cached_rows` [Hq, Q, D] the query rows of the last Q score queries before `start`,
    kept when the prefix was prefilled: the scores are those of the whole prompt prefilled at once.
    """
    score_queries = score_queries[-MAX_SCORE_QUERIES:]
    own = score_queries[score_queries >= start]
    rows = query[:, own - start]
    cached = score_queries.numel() - own.numel()
    if cached:
        assert cached_rows is not None and cached_rows.shape[1] >= cached
        rows = torch.cat([cached_rows[:, cached_rows.shape[1] - cached :], rows], 1)
    return visual_attention(rows, score_queries, key, visual_keys, scaling, chunk)


def visual_attention(
    rows: torch.Tensor,
    positions: torch.Tensor,
    key: torch.Tensor,
    visual_keys: torch.Tensor,
    scaling: float,
    chunk: int = SCORE_CHUNK,
) -> torch.Tensor:
    """Mean attention probability that query rows [Hq, T, D] at `positions` [T] pay to each visual key of key
    [Hkv, N, D], per KV head (the query heads of a GQA group summed): [Hkv, V] float32.

    Probabilities are the causal softmax over all keys up to each row's position, computed a block of rows and a
    chunk of keys at a time (log-sum-exp first, then the visual columns), so the full rows x keys matrix of a long
    video or a long question never exists at once.
    """
    num_kv = key.shape[0]
    group = rows.shape[0] // num_kv
    # keys past the last row are masked for every row: not read
    keys = key[:, : max(int(positions.max()), int(visual_keys.max())) + 1].float()
    scores = torch.zeros(num_kv, visual_keys.numel(), device=rows.device)
    for first in range(0, positions.numel(), QUERY_CHUNK):
        at = positions[first : first + QUERY_CHUNK]
        q = rows[:, first : first + QUERY_CHUNK].float() * scaling  # [Hq, T, D]
        lse = torch.full(q.shape[:2], float("-inf"), device=q.device)
        for start in range(0, keys.shape[1], chunk):
            block = _causal_logits(q, keys, at, start, min(start + chunk, keys.shape[1]), group)
            lse = torch.logaddexp(lse, torch.logsumexp(block, dim=-1))
        for start in range(0, visual_keys.numel(), chunk):
            cols = visual_keys[start : start + chunk]
            kv = keys[:, cols].repeat_interleave(group, dim=0)  # [Hq, C, D]
            logits = torch.einsum("htd,hcd->htc", q, kv)
            logits = logits.masked_fill(cols[None, None, :] > at[None, :, None], float("-inf"))
            probs = torch.exp(logits - lse[..., None])  # [Hq, T, C]
            scores[:, start : start + chunk] += probs.sum(1).view(num_kv, group, -1).sum(1)
    return scores / positions.numel()


def _causal_logits(
    q: torch.Tensor, keys: torch.Tensor, query_pos: torch.Tensor, start: int, end: int, group: int
) -> torch.Tensor:
    kv = keys[:, start:end].repeat_interleave(group, dim=0)
    logits = torch.einsum("htd,hcd->htc", q, kv)
    key_pos = torch.arange(start, end, device=q.device)
    return logits.masked_fill(key_pos[None, None, :] > query_pos[None, :, None], float("-inf"))


def engine_attention_forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                             **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The function registered as `stdcli` in transformers' AttentionInterface."""
    ctx: StepContext | None = kwargs.get(STEP_KWARG)
    if ctx is None:  # a forward that the engine does not drive: behave exactly like sdpa
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    scaling = module.scaling if scaling is None else scaling
    if ctx.mode == "prefill":
        group = query.shape[1] != key.shape[1]
        layer = module.layer_idx
        if ctx.start:  # the rest of a prompt after a cached prefix: key and value hold the prefix too
            mask = ragged_causal_mask(torch.tensor([ctx.start], device=query.device), query.shape[2], key.shape[2])
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=group)
        else:
            out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=group)
            if ctx.row_positions is not None:
                ctx.query_rows[layer] = query[0][:, ctx.row_positions]
        queries, keys = ctx.score_queries, ctx.visual_keys
        if queries is not None and keys is not None and keys.numel() and queries.numel():
            started = _clock(query)
            ctx.visual_scores[layer] = score_visual_keys(query[0], key[0], queries, keys, scaling, start=ctx.start,
                                                         cached_rows=ctx.query_rows.get(layer))
            ctx.scoring_s += _clock(query) - started
        return out.transpose(1, 2), None
    return step_attention(query, key, value, ctx, scaling), None


def step_attention(query, key, value, ctx: StepContext, scaling: float) -> torch.Tensor:
    """Attention of a dense or sparse step: query [B,Hq,L,D] over whole cache buffers key/value [B,Hkv,N,D]
    -> [B, L, Hq, D]; the decode kernel where the context has no mask, else SDPA with it."""
    if ctx.mask is None:
        assert ctx.base_len is not None  # dense and sparse steps have one
        return kernels.decode_attention(query, key, value, ctx.base_len, scaling)
    return masked_attention(query, key, value, ctx.mask, scaling)


def step_context(mode: str, base_len: torch.Tensor, length: int, num_keys: int, head_dim: int) -> StepContext:
    """The context of a dense or sparse step of `length` new tokens over a buffer of `num_keys` keys: the decode
    kernel where it runs (kernels.supports), else a mask for SDPA."""
    if kernels.supports(base_len.device, head_dim):
        return StepContext(mode, base_len=base_len)
    return StepContext(mode, base_len=base_len, mask=ragged_causal_mask(base_len, length, num_keys))


AttentionInterface.register(ATTENTION_NAME, engine_attention_forward)

# The name must contain "flash": transformers then hands vision attention the packed sequence boundaries
# (cu_seq_lens_q) in one call, instead of looping over them in Python with one SDPA call each.
PACKED_VISION_ATTENTION = "stdcli_flash_packed"


def packed_attention_forward(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                             cu_seq_lens_q=None, **kwargs):
    """Non-causal attention within each packed sequence of query/key/value [1, H, N, D].

    Vision towers pack every frame (Qwen2-VL) or window (Qwen2.5-VL) of a video into one sequence. Runs of
    equal-length pieces are attended as one batch, so a 600-frame video costs a few SDPA calls, not 300.
    """
    lengths = (cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).tolist()
    outputs, start, i = [], 0, 0
    while i < len(lengths):
        j = i
        while j < len(lengths) and lengths[j] == lengths[i]:
            j += 1
        length, count = lengths[i], j - i
        piece = slice(start, start + length * count)
        q, k, v = (t[0, :, piece].unflatten(1, (count, length)).transpose(0, 1) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, scale=scaling)  # [count, H, length, D]
        outputs.append(out.transpose(0, 1).flatten(1, 2))
        start, i = start + length * count, j
    return torch.cat(outputs, 1).transpose(0, 1).unsqueeze(0), None


AttentionInterface.register(PACKED_VISION_ATTENTION, packed_attention_forward)


def use_packed_vision_attention(model) -> bool:
    """Switch a Qwen-VL vision tower to packed attention (same results, far fewer kernel calls)."""
    vision = getattr(model.config, "vision_config", None)
    if vision is None or getattr(vision, "model_type", "") not in ("qwen2_vl_vision", "qwen2_5_vl_vision"):
        return False
    model.set_attn_implementation({"vision_config": PACKED_VISION_ATTENTION})
    return True


def _text_attention(model) -> str:
    return model.config.get_text_config()._attn_implementation


@contextmanager
def engine_attention(model):
    """Route the language model's attention through the engine for the duration of the block.

    Only the text sub-model is switched: the vision tower keeps its own attention, and outside the block the
    model (and `model.generate`) is exactly as loaded.
    """
    previous = _text_attention(model)
    if previous == ATTENTION_NAME:
        yield
        return
    model.set_attn_implementation({"text_config": ATTENTION_NAME})
    try:
        yield
    finally:
        model.set_attn_implementation({"text_config": previous})
