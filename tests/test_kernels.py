"""The GPU fast path: the Triton kernels against their PyTorch counterparts, and CUDA graph capture and replay.

The kernels also run without a GPU, in Triton's interpreter (conftest.py turns it on), except in bfloat16. The rest
needs a CUDA GPU and is skipped elsewhere; run it there with
`STDCLI_TEST_DEVICE=cuda python -m pytest tests/test_kernels.py tests/test_fused.py tests/test_std.py
tests/test_batch.py`, which also runs the engine's exactness tests through the graphs and the kernels.
"""

from __future__ import annotations

import pytest
import torch

from stdcli.engine import fused, kernels
from stdcli.engine.attention import masked_attention, ragged_causal_mask, step_context
from stdcli.engine.graphs import CapturedStep

triton_missing = pytest.mark.skipif(kernels.triton is None, reason="needs Triton (a GPU, or its CPU interpreter)")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Triton's interpreter converts to bfloat16 by truncating, not rounding: 16-bit results are checked on a GPU only.
DTYPES = [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    DEVICE == "cpu", reason="Triton's interpreter truncates to bfloat16; checked on a GPU"))]


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to the order of a sum: float32 to 1e-5, 16-bit to one rounding step."""
    tolerance = 1e-5 if got.dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.float(), want.float(), atol=tolerance, rtol=tolerance)


cuda = pytest.mark.skipif(not kernels.available(torch.device("cuda")) or not torch.cuda.is_available(),
                          reason="needs a CUDA GPU and Triton")


def reference_scores(query, key, queries, visual, scaling):
    """score_visual_keys by the definition: the full causal softmax of every query over all keys, in float64."""
    q, k = query.double() * scaling, key.double()
    group = q.shape[0] // k.shape[0]
    logits = torch.einsum("htd,hnd->htn", q[:, queries], k.repeat_interleave(group, dim=0))
    logits = logits.masked_fill(torch.arange(k.shape[1])[None, None, :] > queries[None, :, None], float("-inf"))
    probs = logits.softmax(-1)[:, :, visual]  # [Hq, T, V]
    return probs.mean(1).view(k.shape[0], group, -1).sum(1)


@pytest.mark.parametrize("text, visual_at, expected_queries", [(40, 10, 40), (700, 50, 512), (300, 5, 300)])
def test_visual_scores_use_at_most_the_last_512_text_queries(text, visual_at, expected_queries):
    """Scoring is linear in the prompt's length and bounded in memory: the text after the video ranks the visual
    tokens by its last MAX_SCORE_QUERIES tokens (all of them in any usual question), a block of queries and of
    keys at a time."""
    from stdcli.engine.attention import MAX_SCORE_QUERIES, score_visual_keys

    assert MAX_SCORE_QUERIES == 512
    torch.manual_seed(text)
    length = visual_at + 64 + text
    query, key = torch.randn(4, length, 16), torch.randn(2, length, 16)
    visual = torch.arange(visual_at, visual_at + 64)
    queries = torch.arange(visual_at + 64, length)
    got = score_visual_keys(query, key, queries, visual, 0.25, chunk=100)
    want = reference_scores(query, key, queries[-expected_queries:], visual, 0.25)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)


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


@triton_missing
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_delta", [False, True])
def test_add_rms_norm_kernel(dtype, with_delta):
    torch.manual_seed(0)
    hidden = torch.randn(5, 200, device=DEVICE, dtype=dtype)
    delta = torch.randn_like(hidden) if with_delta else None
    weight = torch.randn(200, device=DEVICE, dtype=dtype)
    hidden_ref = hidden.clone()
    want = fused.add_rms_norm(hidden_ref, delta, weight, 1e-6)
    got = kernels.add_rms_norm(hidden, delta, weight, 1e-6)
    assert torch.equal(hidden, hidden_ref)  # the residual add, in place, rounded alike
    close(got, want)


@triton_missing
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_rope_to_cache_kernel(dtype, with_bias):
    """With a bias (a projection that added none, tinygemm's), as if the bias had been added to qkv first."""
    torch.manual_seed(0)
    batch, length, q_heads, kv_heads, head_dim, slots = 2, 3, 4, 2, 32, 12
    qkv = torch.randn(batch * length, (q_heads + 2 * kv_heads) * head_dim, device=DEVICE, dtype=dtype)
    bias = torch.randn(qkv.shape[1], device=DEVICE, dtype=dtype) if with_bias else None
    angles = torch.rand(batch, length, head_dim // 2, device=DEVICE) * 6
    cos, sin = (torch.cat([f(angles)] * 2, -1).to(dtype) for f in (torch.cos, torch.sin))
    write_pos = torch.tensor([[4, 5, 6], [0, 1, 2]], device=DEVICE)
    caches = [torch.zeros(batch, kv_heads, slots, head_dim, device=DEVICE, dtype=dtype) for _ in range(4)]
    biased = qkv if bias is None else qkv + bias
    want = fused.rope_to_cache(biased, cos, sin, caches[0], caches[1], write_pos, q_heads, kv_heads)
    got = kernels.rope_to_cache(qkv, cos, sin, caches[2], caches[3], write_pos, q_heads, kv_heads, bias)
    assert got.shape == (batch, q_heads, length, head_dim)
    close(got, want)
    close(caches[2], caches[0])
    assert torch.equal(caches[3], caches[1])  # values are copied (with their bias), not rotated
    assert caches[2][0, :, :4].abs().sum() == 0  # nothing written outside write_pos


@triton_missing
@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_kernel(dtype):
    torch.manual_seed(0)
    gate_up = torch.randn(3, 2 * 1500, device=DEVICE, dtype=dtype) * 4
    close(kernels.silu_mul(gate_up), fused.silu_mul(gate_up))


ENGINE_DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32  # as the engine uses them on a GPU
ROW_COUNTS = (*range(1, 17), 40, 72, 144)  # gamma + 1 verify tokens (up to 9) times up to 16 slots
VERIFY_LENGTHS = (1, 2, 5, 9, 16)


@triton_missing
@pytest.mark.parametrize("rows", [1, 5, 16, 40, 144])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_kernel(rows, with_bias):
    torch.manual_seed(rows)
    weight = torch.randn(1000, 300, device=DEVICE, dtype=ENGINE_DTYPE)
    bias = torch.randn(1000, device=DEVICE, dtype=ENGINE_DTYPE) if with_bias else None
    x = torch.randn(rows, 300, device=DEVICE, dtype=ENGINE_DTYPE) / 300**0.5  # outputs of about unit size
    want = torch.nn.functional.linear(x.float(), weight.float(), None if bias is None else bias.float())
    close(kernels.linear(x, weight, bias), want.to(ENGINE_DTYPE))


# Triton's interpreter computes tl.dot with numpy's matmul, whose result for one row can depend on the row's place
# in the tile (OpenBLAS picks its micro-kernel path by position on some CPUs): batch invariance is a property of the
# compiled kernels, so it is checked on a GPU only. The CPU engine does not run these kernels.
@cuda
def test_linear_rows_do_not_depend_on_the_rows_beside_them():
    """Batch invariance: every row of a product of 1 to 144 rows (gamma + 1 verify tokens times 16 slots) is bit
    for bit the row computed alone, whatever the other rows hold."""
    torch.manual_seed(1)
    weight = torch.randn(512, 256, device=DEVICE, dtype=ENGINE_DTYPE)
    bias = torch.randn(512, device=DEVICE, dtype=ENGINE_DTYPE)
    x = torch.randn(max(ROW_COUNTS), 256, device=DEVICE, dtype=ENGINE_DTYPE)
    alone = torch.cat([kernels.linear(x[i : i + 1], weight, bias) for i in range(max(ROW_COUNTS))])
    for rows in ROW_COUNTS:
        assert torch.equal(kernels.linear(x[:rows], weight, bias), alone[:rows]), rows


@cuda
@pytest.mark.parametrize("group", [2, 7])
def test_attention_rows_do_not_depend_on_the_rows_beside_them(group):
    """Batch invariance: row i of a verify of L tokens (base + i keys visible) is bit for bit a dense step of that
    token alone (one row over base + i keys), for L = 1 .. 16; and a sequence decoded among others of a batch is
    bit for bit the sequence decoded alone."""
    torch.manual_seed(group)
    kv_heads, keys, head_dim, scaling = 2, 700, 32, 32**-0.5
    key, value = torch.randn(2, 3, kv_heads, keys, head_dim, device=DEVICE, dtype=ENGINE_DTYPE)
    base = torch.tensor([keys - 300, 17, keys - 50], device=DEVICE)
    for length in VERIFY_LENGTHS:
        query = torch.randn(3, kv_heads * group, length, head_dim, device=DEVICE, dtype=ENGINE_DTYPE)
        together = kernels.decode_attention(query, key, value, base, scaling)  # [B, L, Hq, D]
        for i in range(length):
            step = kernels.decode_attention(query[:, :, i : i + 1], key, value, base + i, scaling)
            assert torch.equal(together[:, i : i + 1], step), (length, i)
        for b in range(3):
            alone = kernels.decode_attention(query[b : b + 1], key[b : b + 1], value[b : b + 1], base[b : b + 1],
                                             scaling)
            assert torch.equal(together[b : b + 1], alone), (length, b)


@triton_missing
# query rows per KV head (group times length): 10 and 4 (part of a tile), 63 (one tile of 64), 128 (two tiles)
@pytest.mark.parametrize("batch,q_heads,kv_heads,length,keys", [(3, 4, 2, 5, 300), (2, 4, 1, 1, 33),
                                                                (2, 14, 2, 9, 200), (1, 8, 1, 16, 100)])
def test_decode_attention_kernel(batch, q_heads, kv_heads, length, keys):
    torch.manual_seed(0)
    query = torch.randn(batch, q_heads, length, 32, device=DEVICE)
    key, value = torch.randn(2, batch, kv_heads, keys, 32, device=DEVICE)
    base = torch.randint(0, keys - length + 1, (batch,), device=DEVICE)
    got = kernels.decode_attention(query, key, value, base, 32**-0.5, splits=3)
    close(got, masked_attention(query, key, value, ragged_causal_mask(base, length, keys), 32**-0.5))


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
    from stdcli.engine import DecodeOptions
    from stdcli.model.loading import load_model

    lm = load_model(str(tiny_checkpoint("qwen2-vl")), device="cpu", dtype="float32")
    decoder = lm.engine.new_decoder(DecodeOptions(gamma=4), 2, 100, 40)
    assert decoder.fits(DecodeOptions(gamma=4), 2, 100, 40)
    assert decoder.fits(DecodeOptions(gamma=0), 2, 60, 400)  # dense decoding needs no sparse view
    assert not decoder.fits(DecodeOptions(gamma=4), 1, 100, 40)
    assert not decoder.fits(DecodeOptions(gamma=4), 2, 101, 40)
    assert not decoder.fits(DecodeOptions(gamma=4), 2, 100, 41)
    dense_only = lm.engine.new_decoder(DecodeOptions(gamma=0), 1, 100, 40)
    assert not dense_only.fits(DecodeOptions(gamma=2), 1, 50, 20)


@cuda
def test_graphs_are_captured_once_and_reused_across_answers(tiny_checkpoint, make_video):
    from stdcli.engine import DecodeOptions
    from stdcli.model.loading import load_model
    from stdcli.model.prompts import build_inputs

    lm = load_model(str(tiny_checkpoint("qwen2-vl")), device="cuda", dtype="float32")
    decoders = []
    for seed in range(3):
        inputs = build_inputs(lm, make_video(num_frames=4, seed=seed), "What happens?")
        want = lm.model.generate(**inputs, do_sample=False, max_new_tokens=20)[0, inputs["input_ids"].shape[1]:]
        assert lm.engine.generate(inputs, DecodeOptions(20, k=4, gamma=3, draft="sparse")).tokens == want.tolist()
        decoders.append(lm.engine.kept_decoder)
        assert decoders[-1].graph_failure is None
        assert set(decoders[-1].graphs.steps) == {("dense", "", 1), ("sparse", "sparse", 1), ("dense", "", 4)}
    assert decoders[0] is decoders[1] is decoders[2]
