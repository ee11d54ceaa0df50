"""The Triton kernels of a decoding step on a GPU: attention, and the parts of a decoder layer that fused.py fuses.

Attention is split-KV ("flash-decoding") over a preallocated cache with per-sequence lengths. One kernel serves
every decoding step: a dense step (1 new token), a sparse draft step (1 token, over the sparse view) and a verify
pass (gamma+1 new tokens, causal among themselves). The new tokens' keys are already in the cache at
base_len .. base_len+L-1, so "all old keys + causal among the new ones" is a per-row length: row i of sequence b
sees keys [0, base_len[b] + i]. Lengths live on the device, so the launch shapes are static and the
step can be captured in a CUDA graph.

The keys are split across many programs (a 7B model at batch 1 has only 4 KV heads: without the split, 4 programs
would read the whole cache); each program handles all query heads of its KV head group and all new tokens, and a
second small kernel merges the partial results by their log-sum-exp.

The layer kernels (add + RMSNorm, RoPE + cache write, SiLU x up, a batch-invariant matmul for the projections) have
PyTorch counterparts in fused.py, which the CPU runs and the tests compare them with; in Triton's interpreter
(TRITON_INTERPRET=1) they also run on the CPU, which is how CI tests them.
"""

from __future__ import annotations

import torch

from .quant import QuantizedWeight, linear_reference

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the engine uses PyTorch's SDPA there
    triton = None


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


def supports(device: torch.device, head_dim: int) -> bool:
    """Whether the kernels run here for this head size (their block shapes need a power of two from 16)."""
    return available(device) and head_dim >= 16 and head_dim & (head_dim - 1) == 0


if triton is not None:

    @triton.jit
    def _split_kernel(
        Q, K, V, BASE, PART_O, PART_LSE,
        stride_qb, stride_qh, stride_ql,
        stride_kb, stride_kh, stride_kn,
        stride_vb, stride_vh, stride_vn,
        stride_ob, stride_oh, stride_os, stride_om,
        stride_lb, stride_lh, stride_ls,
        scaling, keys_per_split,
        GROUP: tl.constexpr, LEN: tl.constexpr, HEAD_DIM: tl.constexpr, ROW_TILES: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    ):
        # row tiles of one split are neighbours in launch order: they read the same keys, which L2 then serves
        split = tl.program_id(0) // ROW_TILES
        rows = (tl.program_id(0) % ROW_TILES) * BLOCK_M + tl.arange(0, BLOCK_M)  # row = g * LEN + i: query head g
        # of the group, new token i
        b = tl.program_id(1)
        kv_head = tl.program_id(2)
        base = tl.load(BASE + b)
        row_valid = rows < GROUP * LEN
        g = rows // LEN
        i = rows % LEN
        dims = tl.arange(0, HEAD_DIM)
        q_ptr = Q + b * stride_qb + (kv_head * GROUP + g)[:, None] * stride_qh + i[:, None] * stride_ql + dims[None, :]
        q = tl.load(q_ptr, mask=row_valid[:, None], other=0.0)
        row_last = base + i  # last key this row may see
        start = split * keys_per_split
        end = tl.minimum(start + keys_per_split, base + LEN)
        m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        norm = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        k_base = K + b * stride_kb + kv_head * stride_kh
        v_base = V + b * stride_vb + kv_head * stride_vh
        for n0 in range(start, end, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_valid = cols < end
            k = tl.load(k_base + cols[:, None] * stride_kn + dims[None, :], mask=col_valid[:, None], other=0.0)
            s = (tl.dot(q, tl.trans(k), input_precision=PRECISION) * scaling).to(tl.float32)  # fp32 even when
            # scaling arrives as a float64 scalar (under torch.compile)
            visible = col_valid[None, :] & (cols[None, :] <= row_last[:, None])
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m - m_safe)
            norm = norm * alpha + tl.sum(p, axis=1)
            v = tl.load(v_base + cols[:, None] * stride_vn + dims[None, :], mask=col_valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION).to(tl.float32)
            m = m_new
        lse = tl.where(norm > 0, m + tl.log(tl.maximum(norm, 1e-30)), float("-inf"))
        out = acc / tl.where(norm > 0, norm, 1.0)[:, None]
        o_ptr = (PART_O + b * stride_ob + kv_head * stride_oh + split * stride_os + rows[:, None] * stride_om
                 + dims[None, :])
        tl.store(o_ptr, out, mask=row_valid[:, None])
        tl.store(PART_LSE + b * stride_lb + kv_head * stride_lh + split * stride_ls + rows, lse, mask=row_valid)

    @triton.jit
    def _merge_kernel(
        PART_O, PART_LSE, OUT,
        stride_ob, stride_oh, stride_os, stride_om,
        stride_lb, stride_lh, stride_ls,
        stride_outb, stride_outl, stride_outh,
        SPLITS: tl.constexpr, GROUP: tl.constexpr, LEN: tl.constexpr, HEAD_DIM: tl.constexpr,
        BLOCK_S: tl.constexpr,
    ):
        row = tl.program_id(0)
        b = tl.program_id(1)
        kv_head = tl.program_id(2)
        splits = tl.arange(0, BLOCK_S)
        split_valid = splits < SPLITS
        lse = tl.load(
            PART_LSE + b * stride_lb + kv_head * stride_lh + splits * stride_ls + row,
            mask=split_valid, other=float("-inf"),
        )
        top = tl.max(lse, axis=0)
        weight = tl.where(split_valid & (lse > float("-inf")), tl.exp(lse - top), 0.0)
        weight = weight / tl.sum(weight, axis=0)
        dims = tl.arange(0, HEAD_DIM)
        parts = tl.load(
            PART_O + b * stride_ob + kv_head * stride_oh + splits[:, None] * stride_os + row * stride_om
            + dims[None, :],
            mask=split_valid[:, None], other=0.0,
        )
        out = tl.sum(parts * weight[:, None], axis=0)
        g = row // LEN
        i = row % LEN
        tl.store(OUT + b * stride_outb + i * stride_outl + (kv_head * GROUP + g) * stride_outh + dims, out)

    # The element-wise parts of a decoder layer, one kernel each instead of the several that the layers' PyTorch code
    # launches (a 7B dense step was ~960 small kernels). Each rounds to the model dtype where PyTorch's ops do, so
    # results match the model's own forward up to the order of the norm's sum.

    @triton.jit
    def _add_rms_norm_kernel(HIDDEN, DELTA, WEIGHT, OUT, width, eps, HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        valid = cols < width
        h = tl.load(HIDDEN + row * width + cols, mask=valid, other=0.0)
        if HAS_DELTA:  # the residual add: rounded as `residual + out` is, and kept for the next one
            d = tl.load(DELTA + row * width + cols, mask=valid, other=0.0)
            h = (h.to(tl.float32) + d.to(tl.float32)).to(HIDDEN.dtype.element_ty)
            tl.store(HIDDEN + row * width + cols, h, mask=valid)
        x = h.to(tl.float32)
        variance = tl.sum(x * x, axis=0) / width
        normed = (x * tl.math.rsqrt(variance + eps)).to(HIDDEN.dtype.element_ty)
        w = tl.load(WEIGHT + cols, mask=valid, other=0.0)
        out = w.to(tl.float32) * normed.to(tl.float32)
        tl.store(OUT + row * width + cols, out.to(OUT.dtype.element_ty), mask=valid)

    @triton.jit
    def _rope_to_cache_kernel(
        QKV, BIAS, COS, SIN, Q_OUT, K_CACHE, V_CACHE, WRITE_POS,
        stride_qkv, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
        LEN: tl.constexpr, Q_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
        HAS_BIAS: tl.constexpr,
    ):
        row = tl.program_id(0)  # token: b * LEN + i
        head = tl.program_id(1)  # query heads, then KV heads
        half: tl.constexpr = HEAD_DIM // 2
        dims = tl.arange(0, half)
        dtype = QKV.dtype.element_ty
        c1 = tl.load(COS + row * HEAD_DIM + dims).to(tl.float32)
        c2 = tl.load(COS + row * HEAD_DIM + half + dims).to(tl.float32)
        s1 = tl.load(SIN + row * HEAD_DIM + dims).to(tl.float32)
        s2 = tl.load(SIN + row * HEAD_DIM + half + dims).to(tl.float32)
        src = QKV + row * stride_qkv + head * HEAD_DIM
        x1 = tl.load(src + dims).to(tl.float32)
        x2 = tl.load(src + half + dims).to(tl.float32)
        if HAS_BIAS:  # the projection's bias, rounded with it as a matmul with a bias rounds its output
            x1 = (x1 + tl.load(BIAS + head * HEAD_DIM + dims).to(tl.float32)).to(dtype).to(tl.float32)
            x2 = (x2 + tl.load(BIAS + head * HEAD_DIM + half + dims).to(tl.float32)).to(dtype).to(tl.float32)
        # x * cos + rotate_half(x) * sin, each product rounded to the model dtype as PyTorch's ops do
        o1 = ((x1 * c1).to(dtype).to(tl.float32) + (-x2 * s1).to(dtype).to(tl.float32)).to(dtype)
        o2 = ((x2 * c2).to(dtype).to(tl.float32) + (x1 * s2).to(dtype).to(tl.float32)).to(dtype)
        if head < Q_HEADS:
            dst = Q_OUT + (row * Q_HEADS + head) * HEAD_DIM
            tl.store(dst + dims, o1)
            tl.store(dst + half + dims, o2)
        else:
            kv_head = head - Q_HEADS
            b = row // LEN
            pos = tl.load(WRITE_POS + row)
            k_dst = K_CACHE + b * stride_kb + kv_head * stride_kh + pos * stride_kn
            tl.store(k_dst + dims, o1.to(K_CACHE.dtype.element_ty))
            tl.store(k_dst + half + dims, o2.to(K_CACHE.dtype.element_ty))
            v_head = Q_HEADS + KV_HEADS + kv_head
            v_src = QKV + row * stride_qkv + v_head * HEAD_DIM
            v_dst = V_CACHE + b * stride_vb + kv_head * stride_vh + pos * stride_vn
            v1 = tl.load(v_src + dims)
            v2 = tl.load(v_src + half + dims)
            if HAS_BIAS:
                v1 = (v1.to(tl.float32) + tl.load(BIAS + v_head * HEAD_DIM + dims).to(tl.float32)).to(dtype)
                v2 = (v2.to(tl.float32) + tl.load(BIAS + v_head * HEAD_DIM + half + dims).to(tl.float32)).to(dtype)
            tl.store(v_dst + dims, v1.to(V_CACHE.dtype.element_ty))
            tl.store(v_dst + half + dims, v2.to(V_CACHE.dtype.element_ty))

    @triton.jit
    def _silu_mul_kernel(GATE_UP, OUT, width, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        valid = cols < width
        gate = tl.load(GATE_UP + row * 2 * width + cols, mask=valid, other=0.0)
        up = tl.load(GATE_UP + row * 2 * width + width + cols, mask=valid, other=0.0)
        g = gate.to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(gate.dtype)  # silu, rounded before the product as act_fn(x) * up is
        tl.store(OUT + row * width + cols, (act.to(tl.float32) * up.to(tl.float32)).to(gate.dtype), mask=valid)

    @triton.jit
    def _linear_kernel(X, W, BIAS, OUT, rows, width, depth, stride_x, stride_w, stride_out,
                       HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # the row tiles of one column tile are neighbours in launch order: they read the same weights, which L2
        # then serves
        row_ids = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, depth, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(X + row_ids[:, None] * stride_x + ks[None, :],
                        mask=(row_ids[:, None] < rows) & (ks[None, :] < depth), other=0.0)
            w = tl.load(W + cols[:, None] * stride_w + ks[None, :],
                        mask=(cols[:, None] < width) & (ks[None, :] < depth), other=0.0)
            acc = tl.dot(x, tl.trans(w), acc)
        if HAS_BIAS:
            acc += tl.load(BIAS + cols, mask=cols < width, other=0.0).to(tl.float32)[None, :]
        tl.store(OUT + row_ids[:, None] * stride_out + cols[None, :], acc.to(OUT.dtype.element_ty),
                 mask=(row_ids[:, None] < rows) & (cols[None, :] < width))


    @triton.jit
    def _quant_linear_kernel(X, Q, S, BIAS, OUT, rows, width, depth, stride_x, stride_q, stride_s, stride_out,
                             BITS: tl.constexpr, HAS_BIAS: tl.constexpr, GROUP: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # Dequantize a [BLOCK_N, BLOCK_K] tile of the weight in registers (levels times their group's scale, rounded
        # to the activations' dtype as `dequantize` does), then one dot: wide K steps keep enough bytes in flight
        # per program, which a step of one group at a time did not.
        row_ids = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        row_valid, col_valid = row_ids < rows, cols < width
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, depth, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_valid = ks < depth
            x = tl.load(X + row_ids[:, None] * stride_x + ks[None, :], mask=row_valid[:, None] & k_valid[None, :],
                        other=0.0)
            if BITS == 8:
                levels = tl.load(Q + cols[:, None] * stride_q + ks[None, :],
                                 mask=col_valid[:, None] & k_valid[None, :], other=0)
            else:  # two columns per byte: the even one in the low nibble
                pairs = k0 // 2 + tl.arange(0, BLOCK_K // 2)
                packed = tl.load(Q + cols[:, None] * stride_q + pairs[None, :],
                                 mask=col_valid[:, None] & (pairs[None, :] < depth // 2), other=0)
                low = (packed & 0xF).to(tl.int8)
                high = (packed >> 4).to(tl.int8)
                levels = tl.interleave(tl.where(low > 7, low - 16, low), tl.where(high > 7, high - 16, high))
            # one scale per group of the tile, broadcast over its GROUP columns (not gathered per weight: that
            # would load four bytes of scale per byte of weight)
            groups = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
            scales = tl.load(S + cols[:, None] * stride_s + groups[None, :],
                             mask=col_valid[:, None] & (groups[None, :] < depth // GROUP), other=0.0)
            levels = tl.reshape(levels.to(tl.float32), (BLOCK_N, BLOCK_K // GROUP, GROUP))
            w = tl.reshape(levels * scales[:, :, None], (BLOCK_N, BLOCK_K)).to(x.dtype)
            acc = tl.dot(x, tl.trans(w), acc)
        if HAS_BIAS:
            acc += tl.load(BIAS + cols, mask=col_valid, other=0.0).to(tl.float32)[None, :]
        tl.store(OUT + row_ids[:, None] * stride_out + cols[None, :], acc.to(OUT.dtype.element_ty),
                 mask=row_valid[:, None] & col_valid[None, :])

    @triton.jit
    def _quant_gemv_kernel(X, Q, S, BIAS, OUT, width, depth, stride_x, stride_q, stride_s, stride_out,
                           BITS: tl.constexpr, HAS_BIAS: tl.constexpr, GROUP: tl.constexpr,
                           BLOCK_N: tl.constexpr, GROUPS: tl.constexpr):
        # One row of x on the CUDA cores: a tile padded to 16 rows for the tensor cores would spend most of its
        # work on the padding, and the dequantized tile's trip through shared memory to the dot made one row cost
        # twice tinygemm's. The weight is read as int32 words (8 int4 or 4 int8 levels each, column 8w + j or
        # 4w + j in level j) and each level becomes a float without a conversion instruction: its offset-binary
        # bits under the exponent of 2^23 are the float 2^23 + level + offset. Each group's sum of level * x is
        # scaled once.
        PER_WORD: tl.constexpr = 32 // BITS
        WORDS: tl.constexpr = GROUP // PER_WORD  # of one group
        MASK: tl.constexpr = (1 << BITS) - 1
        # the sign bit of every level, to flip two's complement into offset binary (as an int32)
        SIGNS: tl.constexpr = -0x77777778 if BITS == 4 else -0x7F7F7F80
        BIASED: tl.constexpr = 8388608.0 + (1 << (BITS - 1))
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_valid = cols < width
        num_groups = depth // GROUP
        acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for g0 in range(0, num_groups, GROUPS):
            groups = g0 + tl.arange(0, GROUPS)
            group_valid = groups < num_groups
            words = groups[:, None] * WORDS + tl.arange(0, WORDS)[None, :]  # [GROUPS, WORDS]
            packed = tl.load(Q + cols[:, None, None] * stride_q + words[None, :, :],
                             mask=col_valid[:, None, None] & group_valid[None, :, None], other=0) ^ SIGNS
            sums = tl.zeros([BLOCK_N, GROUPS, WORDS], dtype=tl.float32)
            for j in tl.static_range(PER_WORD):
                x = tl.load(X + row * stride_x + words * PER_WORD + j, mask=group_valid[:, None], other=0.0)
                level = (((packed >> (j * BITS)) & MASK) | 0x4B000000).to(tl.float32, bitcast=True) - BIASED
                sums += level * x.to(tl.float32)[None, :, :]
            scales = tl.load(S + cols[:, None] * stride_s + groups[None, :],
                             mask=col_valid[:, None] & group_valid[None, :], other=0.0)
            acc += tl.sum(tl.sum(sums, axis=2) * scales, axis=1)
        if HAS_BIAS:
            acc += tl.load(BIAS + cols, mask=col_valid, other=0.0).to(tl.float32)
        tl.store(OUT + row * stride_out + cols, acc.to(OUT.dtype.element_ty), mask=col_valid)


# Batch invariance of the projections: one row's product must not depend on how many rows are computed with it.
# cuBLAS picks its kernel (and split of the reduction) by the number of rows, so a verify of gamma + 1 tokens
# would not compute what gamma + 1 dense steps compute; this kernel fixes everything that shapes a row's reduction
# (tiles of LINEAR_ROWS rows, the block sizes, the order of the reduction over K) for a given weight, whatever
# the number of rows. Its configuration depends on the weight's shape alone (linear_config).
# Tiles of 64 rows: on Hopper a tile that tall runs on the asynchronous warpgroup MMA, so a verify of up to 64 rows
# (gamma + 1 tokens times the batch) costs about what one row does; tiles of 16 rows, on the synchronous MMA,
# cost one more weight-sized pass per 16 rows (measured at the 7B shape: a verify of 40 rows at batch 8 took 1.7
# dense steps with them). One row alone costs within a few percent of what it did in a 16-row tile.
LINEAR_ROWS = 64
# (block of N, block of K, warps, pipeline stages) by weight shape (N, K), for shapes measured apart; the others
# take linear_config's, measured at the 7B shape (scripts/tune_tiles.py): wide outputs (q/k/v, gate/up, the LM
# head) run best in blocks of 64 columns, the narrow ones (o, down) in blocks of 32, which make more programs.
LINEAR_CONFIGS: dict[tuple[int, int], tuple[int, int, int, int]] = {}
WIDE_LINEAR_CONFIG, NARROW_LINEAR_CONFIG = (64, 256, 4, 3), (32, 256, 4, 4)


def use_linear_kernel(x: torch.Tensor) -> bool:
    """Whether decoding steps project with `linear`: 16-bit on a CUDA GPU (float32 keeps cuBLAS, whose float32
    results agree with transformers' forward to the last bits that matter, as the exactness tests check)."""
    return x.dtype in (torch.bfloat16, torch.float16) and available(x.device)


def linear_config(width: int, depth: int) -> tuple[int, int, int, int]:
    return LINEAR_CONFIGS.get((width, depth), WIDE_LINEAR_CONFIG if width >= 4096 else NARROW_LINEAR_CONFIG)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """x [M, K] @ weight [N, K].T (+ bias [N]), fp32 accumulation, batch-invariant (see LINEAR_ROWS). config:
    (block of N, block of K, warps, pipeline stages); by default linear_config of the weight's shape."""
    rows, depth = x.shape
    width = weight.shape[0]
    out = torch.empty(rows, width, device=x.device, dtype=x.dtype)
    block_n, block_k, warps, stages = config or linear_config(width, depth)
    _linear_kernel[(triton.cdiv(rows, LINEAR_ROWS), triton.cdiv(width, block_n))](
        x, weight, x if bias is None else bias, out, rows, width, depth, x.stride(0), weight.stride(0),
        out.stride(0), HAS_BIAS=bias is not None, BLOCK_M=LINEAR_ROWS, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=warps, num_stages=stages,
    )
    return out


# The quantized matmul serves drafts only, which need not be batch-invariant (the dense verify decides every
# token) and have one row per batch slot. Two kernels: tiles of QUANT_ROWS rows on the tensor cores, and for up to
# GEMV_ROWS rows one program per row on the CUDA cores (_quant_gemv_kernel). A configuration is (kernel, block of N,
# block of K, warps, pipeline stages); the engine runs the fastest of QUANT_CANDIDATES (GEMV_CANDIDATES too where
# the rows allow), timed on the GPU the first time each weight shape and row count is seen (the first step of a
# shape runs for real before any CUDA graph captures it), so that it suits whatever GPU it runs on.
QuantConfig = tuple[str, int, int, int, int]
QUANT_ROWS = 16
GEMV_ROWS = 4
QUANT_CANDIDATES: tuple[QuantConfig, ...] = (
    ("tile", 32, 256, 4, 4), ("tile", 16, 512, 4, 3), ("tile", 64, 256, 4, 3), ("tile", 32, 512, 8, 3),
    ("tile", 64, 512, 8, 3))
GEMV_CANDIDATES: tuple[QuantConfig, ...] = (
    ("gemv", 8, 512, 2, 1), ("gemv", 16, 512, 4, 1), ("gemv", 32, 256, 4, 1), ("gemv", 16, 1024, 4, 1),
    ("gemv", 64, 256, 8, 1))
_quant_configs: dict[tuple, QuantConfig | None] = {}


def quant_candidates(rows: int) -> tuple[QuantConfig, ...]:
    return QUANT_CANDIDATES + GEMV_CANDIDATES if rows <= GEMV_ROWS else QUANT_CANDIDATES


def _launch_quant_linear(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None, out: torch.Tensor,
                         config: QuantConfig) -> None:
    rows, depth = x.shape
    width = weight.shape[0]
    kernel, block_n, block_k, warps, stages = config
    if kernel == "gemv":  # a GEMV configuration's stages field is unused: its launch keeps Triton's default
        words = weight.packed.view(torch.int32)  # a view: rows of whole words, as every width is whole groups
        _quant_gemv_kernel[(rows, triton.cdiv(width, block_n))](
            x, words, weight.scales, x if bias is None else bias, out, width, depth, x.stride(0), words.stride(0),
            weight.scales.stride(0), out.stride(0), BITS=weight.bits, HAS_BIAS=bias is not None,
            GROUP=weight.group, BLOCK_N=block_n, GROUPS=max(1, block_k // weight.group), num_warps=warps,
        )
        return
    _quant_linear_kernel[(triton.cdiv(rows, QUANT_ROWS), triton.cdiv(width, block_n))](
        x, weight.packed, weight.scales, x if bias is None else bias, out, rows, width, depth, x.stride(0),
        weight.packed.stride(0), weight.scales.stride(0), out.stride(0), BITS=weight.bits,
        HAS_BIAS=bias is not None, GROUP=weight.group, BLOCK_M=QUANT_ROWS, BLOCK_N=block_n,
        BLOCK_K=block_k, num_warps=warps, num_stages=stages,
    )


def _fastest_quant_config(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None,
                          out: torch.Tensor) -> QuantConfig | None:
    """The quickest candidate for this call's shapes, remembered; the first where nothing can be timed (Triton's
    interpreter, or inside a CUDA graph capture); None if none runs on this GPU."""
    rows = x.shape[0]
    # the tile kernel costs the same for every row count of a tile; the GEMV one grows with each row
    row_class = rows if rows <= GEMV_ROWS else QUANT_ROWS * triton.cdiv(rows, QUANT_ROWS)
    key = (weight.bits, *weight.shape, row_class, bias is not None, x.dtype)
    if key in _quant_configs:
        return _quant_configs[key]
    candidates = quant_candidates(rows)
    if x.device.type != "cuda" or torch.cuda.is_current_stream_capturing():
        return candidates[0]
    times = {}
    for config in candidates:
        try:
            for _ in range(2):  # compiles, then warms the caches
                _launch_quant_linear(x, weight, bias, out, config)
        except Exception:  # more shared memory than this GPU has, or a compiler that refuses it
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            _launch_quant_linear(x, weight, bias, out, config)
        end.record()
        end.synchronize()
        times[config] = start.elapsed_time(end)
    _quant_configs[key] = min(times, key=times.__getitem__) if times else None
    return _quant_configs[key]


def quant_linear(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None = None,
                 config: QuantConfig | None = None) -> torch.Tensor:
    """x [M, K] @ dequantize(weight).T (+ bias) for an int8 or int4 weight in our layout (quant.py), dequantized on
    the fly: the weight is read in its quantized bytes only. config: a QuantConfig (a GEMV one for up to GEMV_ROWS
    rows); by default the fastest measured here. Where no candidate runs, the weight is dequantized first (correct,
    and slower than a dense step: gamma auto then drafts with another kind)."""
    out = torch.empty(x.shape[0], weight.shape[0], device=x.device, dtype=x.dtype)
    config = config or _fastest_quant_config(x, weight, bias, out)
    if config is None:
        return linear_reference(x, weight, bias)
    _launch_quant_linear(x, weight, bias, out, config)
    return out


def add_rms_norm(hidden: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm(hidden + delta) * weight for hidden [M, W] (contiguous); hidden becomes hidden + delta in place."""
    rows, width = hidden.shape
    out = torch.empty(rows, width, device=hidden.device, dtype=torch.promote_types(hidden.dtype, weight.dtype))
    _add_rms_norm_kernel[(rows,)](
        hidden, hidden if delta is None else delta, weight, out, width, eps,
        HAS_DELTA=delta is not None, BLOCK=triton.next_power_of_2(width), num_warps=8,
    )
    return out


def rope_to_cache(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    write_pos: torch.Tensor, q_heads: int, kv_heads: int, bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate the queries and keys of qkv [B*L, (Hq + 2 Hkv) * D] (+ bias [(Hq + 2 Hkv) * D], for a projection
    that adds none) by cos/sin [B, L, D]; store keys and values in the layer's cache keys/values [B, Hkv, N, D] at
    write_pos [B, L]. Returns the queries [B, Hq, L, D]."""
    batch, length, head_dim = cos.shape
    query = torch.empty(batch, length, q_heads, head_dim, device=qkv.device, dtype=qkv.dtype)
    _rope_to_cache_kernel[(batch * length, q_heads + kv_heads)](
        qkv, qkv if bias is None else bias, cos.contiguous(), sin.contiguous(), query, keys, values,
        write_pos.contiguous(), qkv.stride(0), keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0),
        values.stride(1), values.stride(2), LEN=length, Q_HEADS=q_heads, KV_HEADS=kv_heads, HEAD_DIM=head_dim,
        HAS_BIAS=bias is not None, num_warps=1,
    )
    return query.transpose(1, 2)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up [M, 2I] (the fused gate and up projections) -> [M, I]."""
    rows, width = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty(rows, width, device=gate_up.device, dtype=gate_up.dtype)
    block = min(1024, triton.next_power_of_2(width))
    _silu_mul_kernel[(rows, triton.cdiv(width, block))](gate_up, out, width, BLOCK=block, num_warps=4)
    return out


# Batch invariance: the attention of one query row must not depend on how many rows (verify tokens, query heads)
# or sequences are computed with it, so that a verify of gamma + 1 tokens writes and reads bit for bit what gamma
# + 1 dense steps would. Everything that shapes a row's reduction is fixed: rows go in tiles of ATTENTION_ROWS,
# keys in blocks of ATTENTION_KEYS, and the keys are split at multiples of keys_per_split(), which depends on the
# buffer's length alone (dense steps and verifies read the same buffer).
# Tiles of 64 rows hold a whole verify (a 7B model's 7 query heads per KV head times up to 9 tokens) and run on
# Hopper's warpgroup MMA: a verify of 5 tokens at batch 8 and 64K context costs 1.07 of a dense step's attention
# (tiles of 16 rows: 1.7), and a dense step's about what it did (scripts/tune_tiles.py). Three pipeline stages
# keep the dense step's loads in flight.
ATTENTION_ROWS, ATTENTION_KEYS = 64, 64
ATTENTION_WARPS, ATTENTION_STAGES = 4, 3
TARGET_SPLITS = 64  # a 16K buffer in 64 splits of 256 keys: 256 programs at batch 1 for a 7B model's 4 KV heads


def keys_per_split(num_keys: int) -> int:
    """Keys each program reduces: about TARGET_SPLITS splits, a whole number of key blocks, at least two."""
    wanted = -(-num_keys // TARGET_SPLITS)
    return max(2 * ATTENTION_KEYS, -(-wanted // ATTENTION_KEYS) * ATTENTION_KEYS)


def decode_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, base_len: torch.Tensor, scaling: float,
    splits: int | None = None,
) -> torch.Tensor:
    """query [B,Hq,L,D]; key/value [B,Hkv,N,D] (the whole preallocated buffer); base_len [B] int32.

    Returns [B, L, Hq, D]: row i of sequence b attends to keys 0 .. base_len[b]+i. `splits` overrides the split
    of the keys (for tuning; results then depend on it).
    """
    batch, q_heads, length, head_dim = query.shape
    kv_heads, num_keys = key.shape[1], key.shape[2]
    group = q_heads // kv_heads
    per_split = keys_per_split(num_keys) if splits is None else -(-num_keys // splits)
    splits = -(-num_keys // per_split)
    rows = group * length
    row_tiles = -(-rows // ATTENTION_ROWS)
    part_o = torch.empty(batch, kv_heads, splits, row_tiles * ATTENTION_ROWS, head_dim, device=query.device,
                         dtype=torch.float32)
    part_lse = torch.empty(batch, kv_heads, splits, row_tiles * ATTENTION_ROWS, device=query.device,
                           dtype=torch.float32)
    _split_kernel[(splits * row_tiles, batch, kv_heads)](
        query, key, value, base_len, part_o, part_lse,
        query.stride(0), query.stride(1), query.stride(2),
        key.stride(0), key.stride(1), key.stride(2),
        value.stride(0), value.stride(1), value.stride(2),
        part_o.stride(0), part_o.stride(1), part_o.stride(2), part_o.stride(3),
        part_lse.stride(0), part_lse.stride(1), part_lse.stride(2),
        scaling, per_split,
        GROUP=group, LEN=length, HEAD_DIM=head_dim, ROW_TILES=row_tiles, BLOCK_M=ATTENTION_ROWS,
        BLOCK_N=ATTENTION_KEYS,
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32",  # float32 stays exact; tf32 is unused for 16-bit
        num_warps=ATTENTION_WARPS, num_stages=ATTENTION_STAGES,
    )
    out = torch.empty(batch, length, q_heads, head_dim, device=query.device, dtype=query.dtype)
    _merge_kernel[(rows, batch, kv_heads)](
        part_o, part_lse, out,
        part_o.stride(0), part_o.stride(1), part_o.stride(2), part_o.stride(3),
        part_lse.stride(0), part_lse.stride(1), part_lse.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        SPLITS=splits, GROUP=group, LEN=length, HEAD_DIM=head_dim, BLOCK_S=triton.next_power_of_2(splits),
        num_warps=2,
    )
    return out
