"""Our own decoding forward for the Qwen2-family language models (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision's Qwen2)
and Qwen3-VL's text model.

A decoding step of transformers' forward is ~47 kernels per layer (a 7B step: 1,326), most of them tiny element-wise
ones; the step then takes twice what reading the weights needs. Here a step is a plain function over the model's own
weights (gpt-fast style), per layer:

    add + RMSNorm -> one QKV matmul -> RoPE and cache write -> attention -> o_proj
    add + RMSNorm -> one gate/up matmul -> SiLU * up -> down_proj

Qwen3-VL adds an RMSNorm per query and key head before RoPE (its interleaved M-RoPE is the model's own rotary
module's cos/sin, as for the others), and has no q/k/v bias.

On a CUDA GPU the element-wise parts are Triton kernels (kernels.py), and in 16-bit the projections too: a
batch-invariant matmul, so that a verify pass computes every token's row bit for bit as a dense step would (and
StD's answers in bfloat16 are our dense path's); elsewhere the same functions in PyTorch, so the CPU suite tests
this forward against `model.generate`. Only decoding steps use it; the prompt (with the vision tower) still runs
through transformers' forward.

The q/k/v and gate/up projections are concatenated once: their weights are re-pointed to views of the concatenated
tensor (same values, no second copy), so transformers' forward and `generate` keep working on the same memory. The
parameters are new objects then: code that holds the old ones (an optimizer built before) should decode with
`EngineConfig(fused=False)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from . import kernels
from .attention import StepContext, step_attention
from .cache import store_step_entries
from .quant import INT4PACK, QuantizedWeight, int4pack_linear, linear_reference

# Decoder layers whose forward is exactly the one written out in `decode_forward`.
SUPPORTED_LAYERS = ("Qwen2DecoderLayer", "Qwen2VLDecoderLayer", "Qwen2_5_VLDecoderLayer",
                    "Qwen3VLTextDecoderLayer")


Weight = torch.Tensor | QuantizedWeight  # a projection's weight: the model's own, or a draft's quantized copy


@dataclass
class FusedLayer:
    input_norm: torch.Tensor
    post_attention_norm: torch.Tensor
    qkv_weight: Weight  # [(Hq + 2 Hkv) * D, hidden]
    qkv_bias: torch.Tensor | None
    o_weight: Weight
    gate_up_weight: Weight  # [2 * intermediate, hidden]
    down_weight: Weight
    q_norm: torch.Tensor | None = None  # [D]: Qwen3-VL's RMSNorm of each query head, before RoPE
    k_norm: torch.Tensor | None = None  # and of each key head


@dataclass
class FusedTextModel:
    embed: torch.Tensor
    layers: list[FusedLayer]
    norm: torch.Tensor
    lm_head: Weight
    rotary: nn.Module  # the model's own rotary embedding: cos/sin exactly as its forward computes them
    eps: float
    q_heads: int  # this rank's, under tensor parallelism (tensor_parallel.py)
    kv_heads: int
    head_dim: int
    # Tensor parallelism: the sum over the ranks of the o and down projections' partial outputs (None: one rank)
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def scaling(self) -> float:
        return self.head_dim**-0.5


def language_model(model: Any) -> Any:
    return getattr(getattr(model, "model", None), "language_model", None)


def unsupported_reason(model: Any) -> str | None:
    """Why `decode_forward` cannot stand in for this model's language model (None: it can)."""
    lm = language_model(model)
    if lm is None or not hasattr(lm, "layers") or not hasattr(lm, "rotary_emb"):
        return "no language_model with layers and rotary_emb"
    config = lm.config
    if getattr(config, "hidden_act", None) != "silu":
        return f"activation {getattr(config, 'hidden_act', None)!r}"
    kinds = set(getattr(config, "layer_types", None) or ())
    if "linear_attention" in kinds:
        return "linear-attention layers"
    if kinds - {"full_attention"}:
        return "sliding-window layers"
    head = getattr(model, "lm_head", None)
    if type(head) is not nn.Linear or head.bias is not None:
        return "lm_head"
    parameters = [*lm.parameters(), head.weight]
    if len({(p.device, p.dtype) for p in parameters}) != 1 or parameters[0].device.type == "meta":
        return "weights spread over devices or dtypes (offloaded, quantized or mixed)"
    for layer in lm.layers:
        if type(layer).__name__ not in SUPPORTED_LAYERS:
            return f"layer {type(layer).__name__}"
        attn, mlp = layer.self_attn, layer.mlp
        linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(m) is not nn.Linear for m in linears):
            return "projections that are not plain nn.Linear (quantized?)"
        if len({attn.q_proj.bias is None, attn.k_proj.bias is None, attn.v_proj.bias is None}) != 1:
            return "q/k/v projections with and without bias"
        if any(m.bias is not None for m in (attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)):
            return "biased o/gate/up/down projections"
        if len({hasattr(attn, "q_norm"), hasattr(attn, "k_norm")}) != 1:
            return "a norm of the query heads or of the key heads alone"
    return None


def _concatenate_rows(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for several projections of the same input; each projection's own parameters become
    views of it, so no memory is duplicated."""
    with torch.inference_mode(False), torch.no_grad():
        weight = torch.cat([m.weight.detach() for m in linears])
        bias = None if linears[0].bias is None else torch.cat([m.bias.detach() for m in linears])
        start = 0
        for m in linears:
            end = start + m.weight.shape[0]
            m.weight = nn.Parameter(weight[start:end], requires_grad=m.weight.requires_grad)
            if bias is not None:
                m.bias = nn.Parameter(bias[start:end], requires_grad=m.bias.requires_grad)
            start = end
    return weight, bias


def fused_text_model(model: Any, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                     ) -> FusedTextModel | None:
    """The model's language model as `decode_forward` takes it, or None when its architecture is not one
    `decode_forward` reproduces (then the engine uses transformers' forward). Build it once per model and keep it
    (the Engine does): building it again concatenates the weights again. A model split by tensor parallelism gives
    its local weights and `reduce`, the sum over its ranks."""
    if unsupported_reason(model) is not None:
        return None
    lm = language_model(model)
    layers = []
    for layer in lm.layers:
        attn, mlp = layer.self_attn, layer.mlp
        qkv_weight, qkv_bias = _concatenate_rows(attn.q_proj, attn.k_proj, attn.v_proj)
        gate_up_weight, _ = _concatenate_rows(mlp.gate_proj, mlp.up_proj)
        layers.append(FusedLayer(
            input_norm=layer.input_layernorm.weight, post_attention_norm=layer.post_attention_layernorm.weight,
            qkv_weight=qkv_weight, qkv_bias=qkv_bias, o_weight=attn.o_proj.weight,
            gate_up_weight=gate_up_weight, down_weight=mlp.down_proj.weight,
            q_norm=attn.q_norm.weight if hasattr(attn, "q_norm") else None,
            k_norm=attn.k_norm.weight if hasattr(attn, "k_norm") else None,
        ))
    config = lm.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attn = lm.layers[0].self_attn  # heads counted from the weights: a tensor-parallel rank holds only some
    return FusedTextModel(
        embed=lm.embed_tokens.weight, layers=layers, norm=lm.norm.weight, lm_head=model.lm_head.weight,
        rotary=lm.rotary_emb, eps=config.rms_norm_eps, q_heads=attn.q_proj.out_features // head_dim,
        kv_heads=attn.k_proj.out_features // head_dim, head_dim=head_dim, reduce=reduce,
    )


def still_shared(model: Any, fused: FusedTextModel) -> bool:
    """Whether the model's weights are still the views `fused` was built on: moving or casting the model
    (`model.to(...)`) gives its parameters new storage, and the fused weights must then be built again."""
    attn = language_model(model).layers[0].self_attn
    qkv = fused.layers[0].qkv_weight
    return isinstance(qkv, torch.Tensor) and attn.q_proj.weight.data_ptr() == qkv.data_ptr()


# ---- the element-wise parts in PyTorch: the CPU path, and the reference the kernels are tested against ----------

def add_rms_norm(hidden: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm(hidden + delta) * weight, as the models' RMSNorm computes it; hidden becomes hidden + delta."""
    if delta is not None:
        hidden.add_(delta)
    x = hidden.float()
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(hidden.dtype)


def rope_to_cache(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    write_pos: torch.Tensor, q_heads: int, kv_heads: int,
) -> torch.Tensor:
    """Rotate queries and keys; store keys and values in the cache at write_pos [B, L]; queries [B, Hq, L, D]."""
    batch, length, head_dim = cos.shape
    heads = qkv.view(batch, length, q_heads + 2 * kv_heads, head_dim).transpose(1, 2)
    query, key, value = heads.split((q_heads, kv_heads, kv_heads), dim=1)
    query, key = apply_rotary_pos_emb(query, key, cos, sin)  # the models' own function
    store_step_entries(keys, values, key, value, write_pos)
    return query


def norm_qk_heads(qkv: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor, q_heads: int, kv_heads: int,
                  eps: float) -> torch.Tensor:
    """qkv [M, (Hq + 2 Hkv) * D] with each query head RMS-normed by q_norm and each key head by k_norm (Qwen3-VL),
    the values as they are. Row by row in PyTorch on every device."""
    heads = qkv.view(qkv.shape[0], q_heads + 2 * kv_heads, -1)
    query, key, value = heads.split((q_heads, kv_heads, kv_heads), dim=1)
    normed = (add_rms_norm(query.contiguous(), None, q_norm, eps), add_rms_norm(key.contiguous(), None, k_norm, eps))
    return torch.cat([*normed, value], dim=1).view_as(qkv)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def decode_forward(
    fused: FusedTextModel,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    buffers: list[tuple[torch.Tensor, torch.Tensor]],
    write_pos: torch.Tensor,
    ctx: StepContext,
) -> torch.Tensor:
    """Logits [B, L, V] of L new tokens per sequence: their keys and values go to each layer's cache buffers
    [B, Hkv, N, D] at write_pos [B, L]; attention reads those buffers as `ctx` says. positions: what the model's
    forward takes as position_ids ([3, B, L] for M-RoPE)."""
    on_gpu = kernels.supports(tokens.device, fused.head_dim)
    norm_fn = kernels.add_rms_norm if on_gpu else add_rms_norm
    rope_fn = kernels.rope_to_cache if on_gpu else rope_to_cache
    silu_mul_fn = kernels.silu_mul if on_gpu else silu_mul
    batch, length = tokens.shape
    hidden = F.embedding(tokens, fused.embed)
    cos, sin = fused.rotary(hidden, positions)
    hidden = hidden.view(batch * length, -1)
    delta = None
    for layer, (keys, values) in zip(fused.layers, buffers, strict=True):
        x = norm_fn(hidden, delta, layer.input_norm, fused.eps)
        # tinygemm adds no bias: the RoPE kernel adds it as it reads the product, one kernel fewer than an add
        bias_in_rope = on_gpu and isinstance(layer.qkv_weight, QuantizedWeight) and layer.qkv_weight.layout == INT4PACK
        qkv = project(x, layer.qkv_weight, None if bias_in_rope else layer.qkv_bias)
        if layer.q_norm is not None and layer.k_norm is not None:
            qkv = norm_qk_heads(qkv, layer.q_norm, layer.k_norm, fused.q_heads, fused.kv_heads, fused.eps)
        if bias_in_rope:
            query = kernels.rope_to_cache(qkv, cos, sin, keys, values, write_pos, fused.q_heads, fused.kv_heads,
                                          layer.qkv_bias)
        else:
            query = rope_fn(qkv, cos, sin, keys, values, write_pos, fused.q_heads, fused.kv_heads)
        attended = step_attention(query, keys, values, ctx, fused.scaling)  # [B, L, Hq, D]
        delta = project(attended.reshape(batch * length, -1), layer.o_weight)
        if fused.reduce is not None:
            delta = fused.reduce(delta)
        x = norm_fn(hidden, delta, layer.post_attention_norm, fused.eps)
        delta = project(silu_mul_fn(project(x, layer.gate_up_weight)), layer.down_weight)
        if fused.reduce is not None:
            delta = fused.reduce(delta)
    x = norm_fn(hidden, delta, fused.norm, fused.eps)
    return project(x, fused.lm_head).view(batch, length, -1)


def project(x: torch.Tensor, weight: Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias): on a CUDA GPU in 16-bit the batch-invariant kernel of kernels.py, so that a verify of
    gamma + 1 tokens computes each token's row as a dense step does; elsewhere F.linear. A quantized weight (a
    draft's) is multiplied by the dequantizing kernel on a GPU (tinygemm's for its layout), dequantized first
    elsewhere."""
    if isinstance(weight, QuantizedWeight):
        if weight.layout == INT4PACK:
            return int4pack_linear(x, weight, bias)
        if kernels.available(x.device):
            return kernels.quant_linear(x, weight, bias)
        return linear_reference(x, weight, bias)
    return kernels.linear(x, weight, bias) if kernels.use_linear_kernel(x) else F.linear(x, weight, bias)
