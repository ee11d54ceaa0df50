"""Our fused decoding forward (fused.py): step by step against transformers' forward of the same model, and its
weight concatenation must leave the model unchanged. Its kernels are tested in test_kernels.py."""

from __future__ import annotations

import pytest
import torch

from stdcli.engine import DecodeOptions, Engine, EngineConfig, cache_capacity, fused
from stdcli.model import build
from stdcli.model.loading import load_model
from stdcli.model.prompts import build_inputs


@pytest.fixture(scope="module")
def fresh_lm(tiny_checkpoint, test_device):
    """A newly loaded tiny checkpoint per call (fusing re-points its weights, so tests do not share one)."""
    return lambda family: load_model(str(tiny_checkpoint(family)), device=test_device, dtype="float32")


# Families whose language model decode_forward reproduces (Qwen3-VL's decodes through transformers' forward).
# Qwen3-VL and Qwen3.5 decode through transformers' forward
FUSED_FAMILIES = [family for family in build.FAMILIES if family != "qwen3.5"]


@pytest.mark.parametrize("family", FUSED_FAMILIES)
def test_fusing_keeps_the_weights_and_shares_their_memory(family, fresh_lm):
    lm = fresh_lm(family)
    assert fused.unsupported_reason(lm.model) is None
    before = {name: p.clone() for name, p in lm.model.named_parameters()}
    text = lm.engine.fused()
    assert lm.engine.fused() is text  # built once per model
    after = dict(lm.model.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    attn = fused.language_model(lm.model).layers[0].self_attn
    layer = text.layers[0]
    assert attn.k_proj.weight.data_ptr() == layer.qkv_weight[attn.q_proj.weight.shape[0]:].data_ptr()
    if attn.v_proj.bias is None:  # Qwen3-VL: no q/k/v bias, an RMSNorm per query and key head instead
        assert layer.qkv_bias is None and layer.q_norm is attn.q_norm.weight and layer.k_norm is attn.k_norm.weight
    else:
        assert attn.v_proj.bias.data_ptr() == layer.qkv_bias[-attn.v_proj.bias.shape[0]:].data_ptr()
        assert layer.q_norm is None and layer.k_norm is None


def test_a_moved_model_is_fused_again(fresh_lm):
    lm = fresh_lm("qwen2-vl")
    first = lm.engine.fused()
    lm.model.to(torch.float64)  # new storage for every parameter, as a move to another device gives
    again = lm.engine.fused()
    assert again is not first and again.layers[0].qkv_weight.dtype == torch.float64
    attn = fused.language_model(lm.model).layers[0].self_attn
    assert attn.q_proj.weight.data_ptr() == again.layers[0].qkv_weight.data_ptr()


def test_unsupported_architectures_are_named(fresh_lm):
    lm = fresh_lm("qwen2-vl")
    fused.language_model(lm.model).config.hidden_act = "gelu"
    assert fused.unsupported_reason(lm.model) == "activation 'gelu'"
    assert fused.fused_text_model(lm.model) is None
    assert lm.engine.new_decoder(DecodeOptions(), 1, 8, 8).fused is None  # transformers' forward then


def test_a_hybrid_decodes_through_transformers_forward(fresh_lm):
    """Qwen3.5's linear-attention layers are not ones decode_forward reproduces: the engine says so and uses
    transformers' forward."""
    lm = fresh_lm("qwen3.5")
    assert fused.unsupported_reason(lm.model) == "linear-attention layers"
    assert lm.engine.fused() is None and lm.engine.new_decoder(DecodeOptions(), 1, 8, 8).fused is None


@pytest.mark.parametrize("family", FUSED_FAMILIES)
@pytest.mark.parametrize("mode,length", [("dense", 1), ("dense", 4), ("sparse", 1)])
def test_fused_step_matches_transformers_forward(family, mode, length, fresh_lm, make_video):
    lm = fresh_lm(family)
    inputs = build_inputs(lm, make_video(4), "what happens?")
    options = DecodeOptions(8, k=3, gamma=4, calibration_steps=0)
    max_len, sparse_cap = cache_capacity(*lm.engine.adapter.layout(inputs), options)
    logits = {}
    for use_fused in (False, True):
        engine = Engine(lm.engine.adapter, EngineConfig(fused=use_fused))
        with engine.new_decoder(options, 1, max_len, sparse_cap) as decoder:
            assert (decoder.fused is not None) == use_fused
            decoder.prefill(0, inputs)
            on_device = decoder._slot_tensors()
            tokens = torch.arange(3, 3 + length, device=decoder.device)[None]
            base = on_device.dense_len if mode == "dense" else on_device.sparse_len
            with torch.inference_mode():
                positions = decoder._positions(on_device, length)
                logits[use_fused] = decoder._model_step(mode, "sparse", tokens, positions, base)
            written = decoder.storage.step_buffers(0, mode)[0][0, :, int(base[0]):int(base[0]) + length].clone()
        logits[use_fused, "written"] = written
    torch.testing.assert_close(logits[True], logits[False], atol=1e-5, rtol=1e-5)
    # the new keys, rotated, where the step put them
    torch.testing.assert_close(logits[True, "written"], logits[False, "written"], atol=1e-5, rtol=1e-5)
