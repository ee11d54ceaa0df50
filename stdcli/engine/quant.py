"""Quantized copies of a model's language-model weights, for drafting only.

A draft that reads every weight costs nearly a dense step where the weights dominate what a step reads (a 7B model
at batch 1: 15 GB of weights, under 1 GB of KV). The same model with its projections quantized, int8 or int4
weight-only, group-wise, reads a half or about a quarter of those bytes. Drafts only propose tokens: the dense
model in its own dtype verifies every one, so greedy answers do not change, and the sampling rule keeps the
distribution (the draft's probabilities are those of the quantized model, which is all the rule needs).

Format: for each output row, groups of GROUP consecutive input columns share one scale (symmetric, no zero
point): q = round(w / scale) in [-2^(bits-1) + 1, 2^(bits-1) - 1], scale = max|w| / (2^(bits-1) - 1) over the
group. int8 keeps one byte per weight; int4 packs two per byte, the even column in the low nibble. Scales are
float32, one per GROUP weights (1/64 of the bf16 bytes at GROUP 128): an int8 copy adds 52% of the projections'
bf16 bytes to memory, an int4 copy 27%. The embedding table stays as it is (a step reads B of its rows) and so do
the norms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .fused import FusedTextModel

GROUP = 128
MIN_GROUP = 32  # smaller groups: their float32 scales would weigh a quarter of the int4 bytes they serve
BITS = (4, 8)


@dataclass(frozen=True)
class QuantizedWeight:
    """A projection's weight [N, K], quantized (see the module docstring)."""

    bits: int
    packed: torch.Tensor  # int8 [N, K] (8 bits) or uint8 [N, K / 2] (4 bits, two columns per byte)
    scales: torch.Tensor  # float32 [N, K / GROUP]
    shape: tuple[int, int]
    dtype: torch.dtype  # of the weight it stands for, and of the products

    @property
    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scales.numel() * self.scales.element_size()


def quantize(weight: torch.Tensor, bits: int, group: int = GROUP) -> QuantizedWeight:
    """Quantize weight [N, K] group-wise, symmetric; groups of `group` columns, or of the largest power of two that
    divides K where `group` does not (small test models), at least MIN_GROUP."""
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits}")
    rows, columns = weight.shape
    group = math.gcd(columns, group)
    if group < MIN_GROUP:
        raise ValueError(f"the input width {columns} has no group of {MIN_GROUP} columns or more")
    grouped = weight.detach().float().view(rows, columns // group, group)
    top = 2 ** (bits - 1) - 1
    scales = grouped.abs().amax(-1) / top
    levels = torch.where(scales[..., None] > 0, grouped / scales.clamp(min=1e-30)[..., None], 0.0)
    q = levels.round().clamp_(-top, top).to(torch.int8).view(rows, columns)
    if bits == 4:
        nibbles = (q & 0xF).to(torch.uint8)  # two's complement in 4 bits
        q = nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)
    return QuantizedWeight(bits, q.contiguous(), scales.contiguous(), (rows, columns), weight.dtype)


def unpack(weight: QuantizedWeight) -> torch.Tensor:
    """The integer levels [N, K] (int8) of a quantized weight."""
    if weight.bits == 8:
        return weight.packed
    low = (weight.packed & 0xF).to(torch.int8)
    high = (weight.packed >> 4).to(torch.int8)
    levels = torch.stack([low, high], -1).view(weight.shape)
    return torch.where(levels > 7, levels - 16, levels)


def dequantize(weight: QuantizedWeight) -> torch.Tensor:
    """The weight [N, K] the quantized one stands for, in its dtype."""
    rows, columns = weight.shape
    levels = unpack(weight).float().view(rows, -1, columns // weight.scales.shape[1])
    return (levels * weight.scales[..., None]).view(rows, columns).to(weight.dtype)


def linear_reference(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ dequantize(weight).T (+ bias): the CPU's path, and what the GPU kernels are tested against."""
    return torch.nn.functional.linear(x, dequantize(weight), bias)


def quantized_text_model(fused: FusedTextModel, bits: int, group: int = GROUP) -> FusedTextModel:
    """`fused` (the model's own weights) with every projection and the LM head quantized; embeddings, norms and
    rotary shared with it."""

    def q(weight: torch.Tensor | QuantizedWeight) -> QuantizedWeight:
        if isinstance(weight, QuantizedWeight):
            raise ValueError("the model to quantize is quantized already")
        return quantize(weight, bits, group)

    layers = [replace(layer, qkv_weight=q(layer.qkv_weight), o_weight=q(layer.o_weight),
                      gate_up_weight=q(layer.gate_up_weight), down_weight=q(layer.down_weight))
              for layer in fused.layers]
    return replace(fused, layers=layers, lm_head=q(fused.lm_head))


def weight_bytes(model: FusedTextModel) -> int:
    """Bytes of the projections and LM head a decoding step of `model` reads (quantized or not)."""

    def size(weight: torch.Tensor | QuantizedWeight) -> int:
        return weight.nbytes if isinstance(weight, QuantizedWeight) else weight.numel() * weight.element_size()

    per_layer = (size(layer.qkv_weight) + size(layer.o_weight) + size(layer.gate_up_weight) + size(layer.down_weight)
                 for layer in model.layers)
    return sum(per_layer) + size(model.lm_head)
