"""What the engine needs to know about a model family, read off a loaded transformers model once.

`ModelAdapter.of(model)` answers: which token ids are visual placeholders, which end an answer, whether positions
are Qwen's 3-D M-RoPE (and how a prompt's positions are computed), and the shape of the KV cache (and, for a hybrid
such as Qwen3.5, of the recurrent state its linear-attention layers carry instead). A new family that the engine
can decode needs its answers here (and, for the fused forward, a layer type in engine/fused.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

# What Qwen-VL position functions read from the processor's output, beside input_ids.
ROPE_INDEX_INPUTS = ("mm_token_type_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")


def visual_token_ids(model: Any) -> tuple[int, ...]:
    """Placeholder ids of image and video tokens, from the model config (Qwen: *_token_id, LLaVA-OV: *_token_index)."""
    config = model.config
    names = ("image_token_id", "video_token_id", "image_token_index", "video_token_index")
    return tuple(sorted({value for n in names if isinstance(value := getattr(config, n, None), int)}))


def eos_token_ids(model: Any, tokenizer: Any = None) -> tuple[int, ...]:
    """Token ids that end an answer: the generation config's eos ids, else the tokenizer's eos (when given)."""
    eos = model.generation_config.eos_token_id
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, (list, tuple)) else [eos]
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


def uses_mrope(model: Any) -> bool:
    """Qwen-VL models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) rotate with 3-D (temporal, height, width) positions and keep a
    per-prompt offset."""
    return hasattr(model.model, "rope_deltas")


def prompt_positions(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """M-RoPE positions [3, 1, L] of a prompt, as the model's forward computes them.

    The model's own `rope_deltas` are not the offset generation continues from: after a long video it is taken
    from the video's largest temporal position, while the text after the video continues from a smaller one, and
    `generate` extends every row of the prompt's own positions by one per token. Offsets are taken from the
    prompt's last position instead, row by row, as `generate` does.

    Every family's `get_rope_index(input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw, ...,
    attention_mask)` takes the processor's outputs by name (Qwen2.5-VL also second_per_grid_ts; Qwen3-VL's takes
    the rest as **kwargs and splits each video into its temporal patches, one per timestamp). Qwen3-VL's `generate`
    prepends a fourth row, plain text positions, which only its causal mask reads: the engine's attention masks by
    cache lengths, so the three M-RoPE rows are all it needs, and the same code serves every family.
    """
    input_ids = inputs["input_ids"]
    if "mm_token_type_ids" not in inputs:  # text only, from a bare tokenizer
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand(3, 1, -1)
    kwargs = {key: inputs[key] for key in ROPE_INDEX_INPUTS if key in inputs}
    positions: torch.Tensor = model.model.get_rope_index(input_ids, **kwargs)[0]
    return positions


LINEAR_ATTENTION = "linear_attention"  # transformers' layer type of a Gated DeltaNet layer (Qwen3.5)


@dataclass(frozen=True)
class LinearDims:
    """The recurrent state of a hybrid's linear-attention (Gated DeltaNet) layers, per sequence: a causal
    convolution's last `conv_kernel` inputs ([conv_dim, conv_kernel], the model's dtype) and the delta rule's state
    ([value_heads, key_dim, value_dim], float32, as transformers keeps it)."""

    layers: tuple[int, ...]  # the model's indices of its linear-attention layers
    conv_dim: int  # the convolution's channels: queries, keys and values of every head
    conv_kernel: int
    value_heads: int
    key_dim: int
    value_dim: int
    hidden_size: int  # of a layer's input
    dtype: torch.dtype

    @property
    def state_bytes(self) -> int:
        """Bytes of one sequence's state, all linear layers together."""
        conv = self.conv_dim * self.conv_kernel * self.dtype.itemsize
        return len(self.layers) * (conv + self.value_heads * self.key_dim * self.value_dim * 4)


@dataclass(frozen=True)
class CacheDims:
    """The KV cache: its layers are the model's attention layers (`attention_layers`, the model's indices: every
    layer, or a hybrid's full-attention ones); `linear`: a hybrid's linear-attention state, None for others."""

    attention_layers: tuple[int, ...]
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    linear: LinearDims | None = None

    @property
    def layers(self) -> int:
        return len(self.attention_layers)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * self.dtype.itemsize


def cache_dims(model: Any) -> CacheDims:
    text = model.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    dtype = model.get_input_embeddings().weight.dtype
    kinds = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
    linear_layers = tuple(i for i, kind in enumerate(kinds) if kind == LINEAR_ATTENTION)
    linear = None
    if linear_layers:
        key_dim, value_dim = text.linear_key_head_dim, text.linear_value_head_dim
        conv_dim = 2 * text.linear_num_key_heads * key_dim + text.linear_num_value_heads * value_dim
        linear = LinearDims(linear_layers, conv_dim, text.linear_conv_kernel_dim, text.linear_num_value_heads,
                            key_dim, value_dim, text.hidden_size, dtype)
    attention = tuple(i for i in range(len(kinds)) if i not in linear_layers)
    return CacheDims(attention, text.num_key_value_heads, head_dim, dtype, linear)


@dataclass(frozen=True)
class ModelAdapter:
    model: Any  # a transformers PreTrainedModel
    visual_ids: tuple[int, ...]
    eos_ids: tuple[int, ...]
    tp_size: int = 1  # ranks the language model is split over (engine/tensor_parallel.py): each caches its KV heads

    @classmethod
    def of(cls, model: Any, tokenizer: Any = None, tp_size: int = 1) -> ModelAdapter:
        return cls(model, visual_token_ids(model), eos_token_ids(model, tokenizer), tp_size)

    @property
    def mrope(self) -> bool:
        return uses_mrope(self.model)

    @property
    def cache(self) -> CacheDims:
        """This rank's cache, read anew each time: a model cast after loading (model.to(dtype)) caches in its new
        dtype."""
        dims = cache_dims(self.model)
        return replace(dims, kv_heads=dims.kv_heads // self.tp_size)

    @property
    def device(self) -> torch.device:
        device: torch.device = self.model.get_input_embeddings().weight.device
        return device

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = self.model.get_input_embeddings().weight.dtype
        return dtype

    @property
    def name(self) -> str | None:
        return getattr(self.model, "name_or_path", None) or None

    def positions(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return prompt_positions(self.model, inputs)

    def layout(self, inputs: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(prompt tokens, visual tokens) of a single prompt."""
        ids = inputs["input_ids"][0]
        return ids.numel(), int(torch.isin(ids, torch.tensor(self.visual_ids, device=ids.device)).sum())
