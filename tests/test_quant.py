"""The quantized drafts' weights (engine/quant.py): the quantizer's error bounds and format, the dequantizing GPU
kernel against dequantize-then-matmul, and the quantized copy of a fused model. That drafting with them keeps every
answer is tested with the other draft kinds, in test_std.py and test_sampling.py."""

from __future__ import annotations

import pytest
import torch

from stdcli.engine import kernels, quant
from stdcli.engine.fused import fused_text_model
from stdcli.model import build

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# on a GPU the kernel runs in the model's dtype; Triton's CPU interpreter is checked in float32
KERNEL_DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
triton_missing = pytest.mark.skipif(kernels.triton is None, reason="needs Triton (a GPU, or its CPU interpreter)")


@pytest.mark.parametrize("bits", quant.BITS)
def test_round_trip_error_is_at_most_half_a_step(bits):
    torch.manual_seed(bits)
    weight = torch.randn(96, 512) * torch.rand(96, 1) * 3  # rows of different scales
    weight[5, :128] = 0.0  # an all-zero group: scale 0, dequantized exactly
    q = quant.quantize(weight, bits)
    back = quant.dequantize(q)
    step = q.scales.repeat_interleave(quant.GROUP, dim=1)  # each weight's quantization step
    assert back.shape == weight.shape and back.dtype == weight.dtype
    assert ((back - weight).abs() <= step / 2 + 1e-6).all()
    assert torch.equal(back[5, :128], torch.zeros(128))
    # the largest weight of each group is represented exactly (up to float rounding): the scale is set by it
    top = weight.view(96, -1, quant.GROUP).abs().amax(-1)
    torch.testing.assert_close(back.view(96, -1, quant.GROUP).abs().amax(-1), top)


@pytest.mark.parametrize("bits", quant.BITS)
def test_levels_and_packing(bits):
    weight = torch.randn(8, 256, dtype=torch.bfloat16)
    q = quant.quantize(weight, bits)
    levels = quant.unpack(q)
    top = 2 ** (bits - 1) - 1
    assert levels.dtype == torch.int8 and levels.shape == (8, 256)
    assert levels.min() >= -top and levels.max() <= top
    # int4 packs two columns a byte: the bytes are a quarter of the bf16 weights', plus a float32 scale per group
    assert q.packed.numel() * q.packed.element_size() == 8 * 256 * bits // 8
    assert q.nbytes == 8 * 256 * bits // 8 + 8 * 256 // quant.GROUP * 4
    assert q.dtype == torch.bfloat16 and quant.dequantize(q).dtype == torch.bfloat16


def test_groups_shrink_to_divide_narrow_inputs():
    q = quant.quantize(torch.randn(4, 96), 8)  # 96 = 3 x 32: groups of 32
    assert q.scales.shape == (4, 3)
    with pytest.raises(ValueError, match="no group of 32"):
        quant.quantize(torch.randn(4, 48), 4)
    with pytest.raises(ValueError, match="bits"):
        quant.quantize(torch.randn(4, 128), 3)


@triton_missing
@pytest.mark.parametrize("bits", quant.BITS)
@pytest.mark.parametrize("rows", [1, 5, 16, 40])
@pytest.mark.parametrize("with_bias", [False, True])
def test_quant_linear_kernel_matches_dequantize_then_matmul(bits, rows, with_bias):
    torch.manual_seed(rows + bits)
    weight = torch.randn(200, 384, device=DEVICE, dtype=KERNEL_DTYPE)
    q = quant.quantize(weight, bits)
    bias = torch.randn(200, device=DEVICE, dtype=KERNEL_DTYPE) if with_bias else None
    x = torch.randn(rows, 384, device=DEVICE, dtype=KERNEL_DTYPE) / 384**0.5
    want = quant.linear_reference(x.float(), quant.quantize(weight.float(), bits),
                                  None if bias is None else bias.float())
    got = kernels.quant_linear(x, q, bias)
    assert got.dtype == KERNEL_DTYPE and got.shape == (rows, 200)
    tolerance = 1e-4 if KERNEL_DTYPE == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want, atol=tolerance, rtol=tolerance)


@triton_missing
@pytest.mark.parametrize("bits", quant.BITS)
@pytest.mark.parametrize("config", kernels.QUANT_CANDIDATES + kernels.GEMV_CANDIDATES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_every_quant_configuration_computes_the_same_product(bits, config, with_bias):
    """On a GPU the engine runs whichever candidate is fastest there: each that runs must be right, narrow inputs
    included (K = 384: a block of K larger than the input, and groups of a step past it)."""
    torch.manual_seed(bits)
    weight = torch.randn(100, 384, device=DEVICE, dtype=KERNEL_DTYPE)
    x = torch.randn(3, 384, device=DEVICE, dtype=KERNEL_DTYPE) / 384**0.5
    bias = torch.randn(100, device=DEVICE, dtype=KERNEL_DTYPE) if with_bias else None
    want = quant.linear_reference(x.float(), quant.quantize(weight.float(), bits),
                                  None if bias is None else bias.float())
    try:
        got = kernels.quant_linear(x, quant.quantize(weight, bits), bias, config)
    except kernels.triton.runtime.errors.OutOfResources:
        pytest.skip("needs more shared memory than this GPU has (the engine does not time it either)")
    tolerance = 1e-4 if KERNEL_DTYPE == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want, atol=tolerance, rtol=tolerance)


@triton_missing
def test_a_gpu_where_no_configuration_runs_dequantizes_first(monkeypatch):
    weight = torch.randn(64, 256, device=DEVICE, dtype=KERNEL_DTYPE)
    q = quant.quantize(weight, 4)
    x = torch.randn(2, 256, device=DEVICE, dtype=KERNEL_DTYPE)
    key = (4, 64, 256, 2, False, KERNEL_DTYPE)  # 2 rows: a row count of its own, for the GEMV kernel
    monkeypatch.setitem(kernels._quant_configs, key, None)  # what the timing found: no candidate compiled
    monkeypatch.setattr(kernels, "_launch_quant_linear", None)  # and none is launched
    assert torch.equal(kernels.quant_linear(x, q), quant.linear_reference(x, q))


def test_int4pack_inputs_hold_the_same_levels_and_scales():
    """What tinygemm is given: (unsigned level - 8) * scale + zero, with the even column in the high nibble, is the
    weight our layout stands for, its scales rounded to bfloat16."""
    torch.manual_seed(0)
    q = quant.quantize(torch.randn(16, 256), 4)
    nibbles, scales_and_zeros = quant.int4pack_inputs(q)
    assert nibbles.dtype == torch.uint8 and nibbles.shape == (16, 128)
    assert scales_and_zeros.dtype == torch.bfloat16 and scales_and_zeros.shape == (2, 16, 2)
    unsigned = torch.stack([nibbles >> 4, nibbles & 0xF], -1).view(16, 256).float()
    scale = scales_and_zeros[..., 0].float().t().repeat_interleave(quant.GROUP, dim=1)
    zero = scales_and_zeros[..., 1].float().t().repeat_interleave(quant.GROUP, dim=1)
    rounded = quant.QuantizedWeight(4, q.packed, q.scales.bfloat16().float(), q.shape, q.dtype)
    torch.testing.assert_close((unsigned - 8) * scale + zero, quant.dequantize(rounded), atol=0, rtol=0)


def test_int4pack_needs_a_cuda_gpu_in_bfloat16_and_rows_by_eight():
    assert not quant.int4pack_available(torch.device("cpu"), torch.bfloat16)
    if torch.cuda.is_available():
        assert not quant.int4pack_available(torch.device("cuda"), torch.float16)
    odd = quant.quantize(torch.randn(12, 128), 4)  # 12 output rows: not a multiple of 8
    assert quant.to_int4pack(odd) is odd
    with pytest.raises(ValueError, match="layout"):
        quant.unpack(quant.QuantizedWeight(4, odd.packed, odd.scales, odd.shape, odd.dtype, quant.INT4PACK))


int4pack_missing = pytest.mark.skipif(
    not (torch.cuda.is_available() and quant.int4pack_available(torch.device("cuda"), torch.bfloat16)),
    reason="needs tinygemm: a CUDA GPU and a PyTorch build with its int4 kernel")


@int4pack_missing
@pytest.mark.parametrize("rows", [1, 5, 16, 40])
@pytest.mark.parametrize("with_bias", [False, True])
def test_int4pack_kernel_matches_dequantize_then_matmul(rows, with_bias):
    torch.manual_seed(rows)
    weight = torch.randn(200, 384, device="cuda", dtype=torch.bfloat16)
    q = quant.quantize(weight, 4)
    packed = quant.to_int4pack(q)
    assert packed.layout == quant.INT4PACK and packed.group == q.group == quant.GROUP
    bias = torch.randn(200, device="cuda", dtype=torch.bfloat16) if with_bias else None
    x = torch.randn(rows, 384, device="cuda", dtype=torch.bfloat16) / 384**0.5
    rounded = quant.QuantizedWeight(4, q.packed, q.scales.bfloat16().float(), q.shape, torch.float32)
    want = quant.linear_reference(x.float(), rounded, None if bias is None else bias.float())
    got = quant.int4pack_linear(x, packed, bias)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 200)
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)


def test_quantized_model_shares_what_it_does_not_quantize():
    config = build.make_config("qwen2-vl", "tiny")
    model = build.build_random_model("qwen2-vl", config, seed=0)
    fused = fused_text_model(model)
    int4 = quant.quantized_text_model(fused, 4)
    assert int4.embed is fused.embed and int4.norm is fused.norm and int4.rotary is fused.rotary
    layer, original = int4.layers[0], fused.layers[0]
    assert layer.input_norm is original.input_norm and layer.qkv_bias is original.qkv_bias
    assert all(isinstance(w, quant.QuantizedWeight)
               for w in (layer.qkv_weight, layer.o_weight, layer.gate_up_weight, layer.down_weight, int4.lm_head))
    # what a step reads: about a quarter of the float32 model's projection bytes at 4 bits, an eighth here
    ratio = quant.weight_bytes(int4) / quant.weight_bytes(fused)
    assert 0.12 < ratio < 0.16, ratio
    with pytest.raises(ValueError, match="quantized already"):
        quant.quantized_text_model(int4, 8)


def test_auto_tries_quantized_drafts_only_on_models_large_enough(monkeypatch):
    """A small model's step is bound by launches, not bytes: auto drafts with the sparse view alone there."""
    from stdcli.engine import Engine, session
    from stdcli.engine.options import AUTO, AUTO_DRAFTS, DecodeOptions

    model = build.build_random_model("qwen2-vl", build.make_config("qwen2-vl", "tiny"), seed=0)
    engine = Engine.of(model)
    fused = engine.fused()
    assert fused is not None
    assert quant.bf16_bytes(fused) * 2 == quant.weight_bytes(fused)  # float32 here
    monkeypatch.setattr(kernels, "available", lambda device: True)  # as on a GPU
    options = DecodeOptions(gamma=AUTO)
    assert engine.draft_kinds(options) == ("sparse",)
    monkeypatch.setattr(session, "AUTO_QUANT_MIN_BYTES", quant.bf16_bytes(fused))
    assert engine.draft_kinds(options) == AUTO_DRAFTS
    assert engine.draft_kinds(DecodeOptions(gamma=AUTO, draft="int4")) == ("int4",)  # asked for: always
