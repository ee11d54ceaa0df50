"""The GPU fast path: the split-KV decode kernel against PyTorch's SDPA, and CUDA graph capture and replay.

These need a CUDA GPU and are skipped elsewhere; run them there with
`STDCLI_TEST_DEVICE=cuda python -m pytest tests/test_kernels.py tests/test_std.py tests/test_batch.py`, which also
runs the engine's exactness tests through the graphs and the kernel.
"""

from __future__ import annotations

import pytest
import torch

from stdcli import kernels
from stdcli.attention import masked_attention, ragged_causal_mask, step_context
from stdcli.graphs import CapturedStep

cuda = pytest.mark.skipif(not kernels.available(torch.device("cuda")) or not torch.cuda.is_available(),
                          reason="needs a CUDA GPU and Triton")


@cuda
def test_step_context_uses_the_kernel_only_where_it_can_run():
    base = torch.tensor([3, 0], device="cuda")
    assert step_context("dense", base, 1, 10, head_dim=128).mask is None
    assert step_context("dense", base, 1, 10, head_dim=80).mask is not None  # not a power of two
    assert step_context("dense", base, 1, 10, head_dim=8).mask is not None


def test_step_context_uses_a_mask_without_the_kernel():
    base = torch.tensor([3, 0, 7])
    ctx = step_context("dense", base, 2, 10, head_dim=64)
    assert ctx.mask is not None and ctx.mask.shape == (3, 1, 2, 10)
    assert torch.equal(ctx.mask, ragged_causal_mask(base, 2, 10))
    # row i of sequence b sees keys 0 .. base[b] + i
    assert ctx.mask[0, 0, 1].tolist() == [True] * 5 + [False] * 5
    assert ctx.mask[1, 0, 0].tolist() == [True] + [False] * 9


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,q_heads,kv_heads,length,keys", [(1, 28, 4, 1, 16384), (3, 4, 2, 5, 700),
                                                                 (8, 8, 8, 9, 2000), (2, 4, 1, 1, 33)])
def test_decode_kernel_matches_sdpa(dtype, batch, q_heads, kv_heads, length, keys):
    torch.manual_seed(0)
    device = torch.device("cuda")
    head_dim = 128 if q_heads == 28 else 64
    query = torch.randn(batch, q_heads, length, head_dim, device=device, dtype=dtype)
    key = torch.randn(batch, kv_heads, keys, head_dim, device=device, dtype=dtype)
    value = torch.randn_like(key)
    base = torch.randint(0, keys - length + 1, (batch,), device=device)
    base[0] = keys - length  # one sequence uses the whole buffer
    got = kernels.decode_attention(query, key, value, base, head_dim**-0.5)
    want = masked_attention(query, key, value, ragged_causal_mask(base, length, keys), head_dim**-0.5)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)


@cuda
def test_captured_step_replays_with_new_inputs():
    device = torch.device("cuda")
    weight = torch.randn(16, 16, device=device)
    store = torch.zeros(4, 16, device=device)

    def step(x: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        store[row] = x @ weight  # a side effect at a position given by a device tensor, like a cache write
        return store.sum(0)

    captured = CapturedStep(step, torch.cuda.graph_pool_handle())
    x0, x1 = torch.randn(1, 16, device=device), torch.randn(1, 16, device=device)
    first = captured(x0, torch.tensor([0], device=device)).clone()
    assert captured.failed is None and captured.graph is not None
    torch.testing.assert_close(first, (x0 @ weight)[0])
    second = captured(x1, torch.tensor([2], device=device))
    torch.testing.assert_close(second, (x0 @ weight + x1 @ weight)[0])
    torch.testing.assert_close(store[2], (x1 @ weight)[0])


def test_a_decoder_is_reused_only_when_it_fits(tiny_checkpoint):
    from stdcli.models import load_model
    from stdcli.std import Decoder, DecodeOptions

    lm = load_model(str(tiny_checkpoint("qwen2-vl")), device="cpu", dtype="float32")
    decoder = Decoder(lm.model, DecodeOptions(gamma=4), batch=2, max_len=100, sparse_cap=40)
    assert decoder.fits(DecodeOptions(gamma=4), 2, 100, 40)
    assert decoder.fits(DecodeOptions(gamma=0), 2, 60, 400)  # dense decoding needs no sparse view
    assert not decoder.fits(DecodeOptions(gamma=4), 1, 100, 40)
    assert not decoder.fits(DecodeOptions(gamma=4), 2, 101, 40)
    assert not decoder.fits(DecodeOptions(gamma=4), 2, 100, 41)
    dense_only = Decoder(lm.model, DecodeOptions(gamma=0), batch=1, max_len=100, sparse_cap=40)
    assert not dense_only.fits(DecodeOptions(gamma=2), 1, 50, 20)


@cuda
def test_graphs_are_captured_once_and_reused_across_answers(tiny_checkpoint, make_video):
    from stdcli.models import build_inputs, load_model
    from stdcli.std import DecodeOptions, generate, kept_decoder

    lm = load_model(str(tiny_checkpoint("qwen2-vl")), device="cuda", dtype="float32")
    decoders = []
    for seed in range(3):
        inputs = build_inputs(lm, make_video(num_frames=4, seed=seed), "What happens?")
        want = lm.model.generate(**inputs, do_sample=False, max_new_tokens=20)[0, inputs["input_ids"].shape[1]:]
        assert generate(lm.model, inputs, DecodeOptions(20, k=4, gamma=3)).tokens == want.tolist()
        decoders.append(kept_decoder(lm.model))
        assert decoders[-1].graph_failure is None
        assert set(decoders[-1].graphs) == {("dense", 1), ("sparse", 1), ("dense", 4)}
    assert decoders[0] is decoders[1] is decoders[2]
