"""A trained Qwen2-VL embedded in a larger Qwen2-VL shape, computing the same function: the built-in model at the
true step cost of a 7B one, with a trained model's attention and logits (random weights have no acceptance).

    big = inflate(model, "7b")                         # Qwen2-VL-7B's shape: 28 layers, 3584 wide, 28 / 4 heads

How the small model's function is kept, in exact arithmetic (in float32 the answers agree as far as rounding lets
them, which the tests check on the built-in model):

- hidden: the small model's h dimensions are the first h of the big H; every other dimension of the residual stream
  stays 0, since nothing writes to it (embeddings, o / down projections and the vision merger are zero there).
  RMSNorm then divides by sqrt(h / H) times the small norm, so its weights are scaled by sqrt(h / H) and its eps by
  h / H.
- heads: small KV head j is big KV head j, small query head j * g + i (g per group) big query head j * G + i; the
  other heads are zero and their o-projection columns too.
- head dimensions and RoPE: with the same rope_theta, frequency f of a small head of d dimensions equals frequency
  r * f of a big one of D = r * d. So small dimension i (frequency i mod d/2) goes to big dimension
  r * (i mod d/2) + (D/2 if i >= d/2), M-RoPE sections are the small ones times r, and queries are scaled by
  sqrt(r) to undo the larger 1 / sqrt(D) of attention.
- MLP: the small intermediate units are the first of the big ones; the others get zero weights.
- layers: the small layers come first; the extra layers are all zero (their norms too): each adds nothing to the
  residual stream and costs what a real layer costs.
- vocabulary: rows beyond the small vocabulary repeat the LM-head row of token 0, so they tie with it and never win
  the argmax (the first maximum wins; greedy decoding only: they would change a sampled distribution).

The inflated model keeps the small model's rope_theta (the 7B checkpoints use 1e6: only the frequencies differ, not
the cost) and its vision tower, whose merger writes into the first h dimensions.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .registry import INFLATE_SHAPES as SHAPES


class InflateError(ValueError):
    pass


def _dims(text: Any) -> tuple[int, int, int, int]:
    """(hidden, query heads, KV heads, head dim) of a text config."""
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.hidden_size, text.num_attention_heads, text.num_key_value_heads, head_dim


def inflated_config(config: Any, shape: str | dict[str, int]) -> Any:
    """The small model's config with the language model of `shape` (a name of SHAPES or its fields)."""
    fields = SHAPES[shape] if isinstance(shape, str) else shape
    if config.model_type != "qwen2_vl":
        raise InflateError(f"inflation is written for Qwen2-VL models, not {config.model_type}")
    big = config.__class__.from_dict(config.to_dict())
    small_text, text = config.get_text_config(), big.get_text_config()
    for name, value in fields.items():
        setattr(text, name, value)
    text.head_dim = fields["hidden_size"] // fields["num_attention_heads"]
    if getattr(text, "layer_types", None):
        text.layer_types = [text.layer_types[0]] * text.num_hidden_layers
    h, q, kv, d = _dims(small_text)
    big_h, big_q, big_kv, big_d = _dims(text)
    problems = [
        (big_h < h, f"a hidden size of {big_h} below the model's {h}"),
        (big_d % d != 0, f"a head dimension of {big_d}, not a multiple of the model's {d}"),
        (big_kv < kv or big_q // big_kv < q // kv, "fewer KV heads or query heads per group than the model has"),
        (text.num_hidden_layers < small_text.num_hidden_layers, "fewer layers than the model has"),
        (text.intermediate_size < small_text.intermediate_size, "a narrower MLP than the model's"),
        (text.vocab_size < small_text.vocab_size, "a smaller vocabulary than the model's"),
    ]
    for bad, what in problems:
        if bad:
            raise InflateError(f"cannot inflate into {what}")
    ratio = big_d // d
    rope = dict(small_text.rope_parameters)
    rope["mrope_section"] = [ratio * s for s in rope["mrope_section"]]
    text.rope_parameters = rope
    text.rms_norm_eps = small_text.rms_norm_eps * h / big_h
    text.tie_word_embeddings = False
    big.tie_word_embeddings = False
    big.vision_config.hidden_size = big_h  # the merger's output: the language model's width
    return big


def head_dim_map(small: int, big: int) -> torch.Tensor:
    """Big head dimension of each small one, keeping each dimension's RoPE frequency (module docstring)."""
    ratio, half = big // small, small // 2
    i = torch.arange(small)
    return ratio * (i % half) + (i >= half) * (big // 2)


def _rows(heads: torch.Tensor, dims: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Flat indices of dims `dims` of heads `heads` in a [heads * head_dim] projection output."""
    return (heads[:, None] * head_dim + dims[None, :]).reshape(-1)


@torch.no_grad()
def inflate(model: Any, shape: str | dict[str, int], dtype: torch.dtype | None = None,
            device: str | torch.device | None = None) -> Any:
    """A new model of the inflated shape that computes `model`'s function (module docstring), in `dtype` on
    `device` (default: the model's)."""
    config = inflated_config(model.config, shape)
    dtype = dtype or model.dtype
    device = torch.device(device or model.device)
    with torch.device(device):
        big = model.__class__._from_config(config, dtype=dtype)
    big.eval()
    small_text, text = model.config.get_text_config(), config.get_text_config()
    h, q, kv, d = _dims(small_text)
    big_h, big_q, big_kv, big_d = _dims(text)
    group, big_group = q // kv, big_q // big_kv
    dims = head_dim_map(d, big_d).to(device)
    hidden = torch.arange(h, device=device)
    small_q_heads = torch.arange(q, device=device)
    q_rows = _rows(small_q_heads // group * big_group + small_q_heads % group, dims, big_d)
    kv_rows = _rows(torch.arange(kv, device=device), dims, big_d)
    norm_scale = math.sqrt(h / big_h)
    query_scale = math.sqrt(big_d / d)
    units = torch.arange(small_text.intermediate_size, device=device)
    vocab = small_text.vocab_size
    small = {name: p.to(device=device, dtype=torch.float32) for name, p in model.named_parameters()}
    if "lm_head.weight" not in small:  # tied: the LM head is the embedding table
        small["lm_head.weight"] = model.get_output_embeddings().weight.to(device=device, dtype=torch.float32)
    small_layers = small_text.num_hidden_layers

    def put(target: torch.Tensor, value: torch.Tensor, *index: torch.Tensor) -> None:
        """target[index] = value (index: row indices, then column indices)."""
        if len(index) == 1:
            target[index[0]] = value.to(target.dtype)
        else:
            target[index[0][:, None], index[1][None, :]] = value.to(target.dtype)

    for name, p in big.named_parameters():
        p.zero_()
        if ".visual." in f".{name}":
            if small[name].shape == p.shape:
                p.copy_(small[name])
            else:  # the merger's last linear writes the first h dimensions of the language model's input
                put(p, small[name], hidden)
            continue
        layer = _layer_index(name)
        if layer is not None and layer >= small_layers:
            continue  # an extra layer: all zero
        value = small[name]
        if name.endswith("embed_tokens.weight"):
            put(p, value, torch.arange(vocab, device=device), hidden)
        elif name == "lm_head.weight":
            put(p, value, torch.arange(vocab, device=device), hidden)
            p[vocab:] = p[0]  # ties with token 0: never the first maximum
        elif name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            put(p, value * norm_scale, hidden)
        elif name.endswith("q_proj.weight"):
            put(p, value * query_scale, q_rows, hidden)
        elif name.endswith("q_proj.bias"):
            put(p, value * query_scale, q_rows)
        elif name.endswith(("k_proj.weight", "v_proj.weight")):
            put(p, value, kv_rows, hidden)
        elif name.endswith(("k_proj.bias", "v_proj.bias")):
            put(p, value, kv_rows)
        elif name.endswith("o_proj.weight"):
            put(p, value, hidden, q_rows)
        elif name.endswith(("gate_proj.weight", "up_proj.weight")):
            put(p, value, units, hidden)
        elif name.endswith("down_proj.weight"):
            put(p, value, hidden, units)
        else:
            raise InflateError(f"no rule to inflate {name}")
    big.generation_config = model.generation_config
    return big


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    if "layers" in parts:
        return int(parts[parts.index("layers") + 1])
    return None


def inflate_loaded(lm: Any, shape: str, dtype: torch.dtype | None = None) -> Any:
    """A LoadedModel of the inflated model, in `dtype` (default the model's): the same processor and tokenizer, a
    new engine (same configuration and cost memory: the cost key names the new model apart)."""
    from dataclasses import replace

    from ..engine.session import Engine
    from .adapter import ModelAdapter

    big = inflate(lm.model, shape, dtype)
    engine = Engine(ModelAdapter.of(big, lm.tokenizer), lm.engine.config, lm.engine.memory)
    return replace(lm, name=f"{lm.name} inflated to {shape}", model=big, dtype=big.dtype, engine=engine)
