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

On a CUDA GPU in bfloat16 an int4 copy is kept in another layout instead, PyTorch's own int4 weight-only kernel's
("tinygemm", `torch.ops.aten._weight_int4pack_mm`, the kernel torchao and gpt-fast use): its levels in tiles laid
out for the tensor cores, one bfloat16 scale and zero per group. It is about twice as fast as our Triton kernel at
one row and as fast at eight (scripts/tune_kernels.py), and needs nothing installed beyond PyTorch. It holds the
same levels (offset by 8, unsigned) and the same scales rounded to bfloat16, zero points 0, in the same bytes.
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
ROWS, INT4PACK = "rows", "int4pack"  # layouts: ours (the module docstring), tinygemm's
INT4PACK_TILES = (8, 4, 2)  # tinygemm's inner K tiles (of 16 columns), the largest that divides the width


@dataclass(frozen=True)
class QuantizedWeight:
    """A projection's weight [N, K], quantized (see the module docstring)."""

    bits: int
    # ROWS: int8 [N, K] (8 bits) or uint8 [N, K / 2] (4 bits, two columns per byte); INT4PACK: tinygemm's int32 tiles
    packed: torch.Tensor
    # ROWS: float32 [N, K / group]; INT4PACK: bfloat16 [K / group, N, 2], each group's scale and zero
    scales: torch.Tensor
    shape: tuple[int, int]
    dtype: torch.dtype  # of the weight it stands for, and of the products
    layout: str = ROWS

    @property
    def group(self) -> int:
        groups = self.scales.shape[0] if self.layout == INT4PACK else self.scales.shape[1]
        return self.shape[1] // groups

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
    """The integer levels [N, K] (int8) of a quantized weight in our layout."""
    if weight.layout != ROWS:
        raise ValueError(f"a weight in the {weight.layout} layout is read by its kernel only")
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


def int4pack_inputs(weight: QuantizedWeight) -> tuple[torch.Tensor, torch.Tensor]:
    """What tinygemm's packing takes for an int4 weight in our layout: uint8 [N, K / 2] of the levels plus 8 (the
    even column in the high nibble), and bfloat16 [K / group, N, 2] of each group's scale and a zero of 0, so that
    (level + 8 - 8) * scale + 0 is the weight."""
    unsigned = (unpack(weight) + 8).to(torch.uint8)
    nibbles = (unsigned[:, 0::2] << 4) | unsigned[:, 1::2]
    scales = weight.scales.t()
    return nibbles.contiguous(), torch.stack([scales, torch.zeros_like(scales)], -1).to(torch.bfloat16).contiguous()


def to_int4pack(weight: QuantizedWeight) -> QuantizedWeight:
    """An int4 weight (our layout, on a CUDA GPU) in tinygemm's, or as it is where tinygemm cannot take its shape
    (output rows not a multiple of 8; every width of a group of 32 or more is whole tiles of 32)."""
    rows, columns = weight.shape
    tiles = [t for t in INT4PACK_TILES if columns % (16 * t) == 0]
    if weight.bits != 4 or rows % 8 or not tiles:
        return weight
    nibbles, scales_and_zeros = int4pack_inputs(weight)
    packed = torch.ops.aten._convert_weight_to_int4pack(nibbles, tiles[0])
    return QuantizedWeight(4, packed, scales_and_zeros, weight.shape, weight.dtype, INT4PACK)


def int4pack_linear(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K] (bfloat16) @ the weight in tinygemm's layout, .T (+ bias)."""
    out = torch.ops.aten._weight_int4pack_mm(x.contiguous(), weight.packed, weight.group, weight.scales)
    return out if bias is None else out.add_(bias)


_int4pack_devices: dict[torch.device, bool] = {}


def int4pack_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether tinygemm runs here: a CUDA GPU, bfloat16 (the only dtype it takes), and this PyTorch build's kernel
    for this GPU (tried once on a small weight)."""
    if device.type != "cuda" or dtype != torch.bfloat16:
        return False
    if device not in _int4pack_devices:
        try:
            weight = to_int4pack(quantize(torch.ones(8, 128, device=device, dtype=dtype), 4))
            int4pack_linear(torch.ones(1, 128, device=device, dtype=dtype), weight)
            _int4pack_devices[device] = weight.layout == INT4PACK
        except (RuntimeError, NotImplementedError):  # a build without the kernel, or a GPU it was not built for
            _int4pack_devices[device] = False
    return _int4pack_devices[device]


def quantized_text_model(fused: FusedTextModel, bits: int, group: int = GROUP,
                         int4pack: bool | None = None) -> FusedTextModel:
    """`fused` (the model's own weights) with every projection and the LM head quantized; embeddings, norms and
    rotary shared with it. int4pack: int4 weights in tinygemm's layout (default: where it runs)."""
    if int4pack is None:
        int4pack = bits == 4 and int4pack_available(fused.embed.device, fused.embed.dtype)

    def q(weight: torch.Tensor | QuantizedWeight) -> QuantizedWeight:
        if isinstance(weight, QuantizedWeight):
            raise ValueError("the model to quantize is quantized already")
        quantized = quantize(weight, bits, group)
        return to_int4pack(quantized) if int4pack else quantized

    layers = [replace(layer, qkv_weight=q(layer.qkv_weight), o_weight=q(layer.o_weight),
                      gate_up_weight=q(layer.gate_up_weight), down_weight=q(layer.down_weight))
              for layer in fused.layers]
    return replace(fused, layers=layers, lm_head=q(fused.lm_head))


def bf16_bytes(model: FusedTextModel) -> int:
    """Bytes of the projections and LM head in 16 bits (what a bfloat16 step reads, whatever the model's dtype)."""
    weights = [w for layer in model.layers
               for w in (layer.qkv_weight, layer.o_weight, layer.gate_up_weight, layer.down_weight)] + [model.lm_head]
    return sum(2 * (w.shape[0] * w.shape[1]) for w in weights)


def weight_bytes(model: FusedTextModel) -> int:
    """Bytes of the projections and LM head a decoding step of `model` reads (quantized or not)."""

    def size(weight: torch.Tensor | QuantizedWeight) -> int:
        return weight.nbytes if isinstance(weight, QuantizedWeight) else weight.numel() * weight.element_size()

    per_layer = (size(layer.qkv_weight) + size(layer.o_weight) + size(layer.gate_up_weight) + size(layer.down_weight)
                 for layer in model.layers)
    return sum(per_layer) + size(model.lm_head)
