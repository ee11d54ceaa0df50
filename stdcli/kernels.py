"""GPU attention for decoding: split-KV ("flash-decoding") over a preallocated cache with per-sequence lengths.

One kernel serves every decoding step: a dense step (1 new token), a sparse draft step (1 token, over the sparse
view) and a verify pass (gamma+1 new tokens, causal among themselves). The new tokens' keys are already in the
cache at base_len .. base_len+L-1, so "all old keys + causal among the new ones" is a per-row length: row i of
sequence b sees keys [0, base_len[b] + i]. Lengths live on the device, so the launch shapes are static and the
step can be captured in a CUDA graph.

The keys are split across many programs (a 7B model at batch 1 has only 4 KV heads: without the split, 4 programs
would read the whole cache); each program handles all query heads of its KV head group and all new tokens, and a
second small kernel merges the partial results by their log-sum-exp.
"""

from __future__ import annotations

import functools

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the engine uses PyTorch's SDPA there
    triton = None


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


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
        GROUP: tl.constexpr, LEN: tl.constexpr, HEAD_DIM: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    ):
        split = tl.program_id(0)
        b = tl.program_id(1)
        kv_head = tl.program_id(2)
        base = tl.load(BASE + b)
        rows = tl.arange(0, BLOCK_M)  # row = g * LEN + i: query head g of the group, new token i
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
        l = tl.zeros([BLOCK_M], dtype=tl.float32)
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
            l = l * alpha + tl.sum(p, axis=1)
            v = tl.load(v_base + cols[:, None] * stride_vn + dims[None, :], mask=col_valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION).to(tl.float32)
            m = m_new
        lse = tl.where(l > 0, m + tl.log(tl.maximum(l, 1e-30)), float("-inf"))
        out = acc / tl.where(l > 0, l, 1.0)[:, None]
        o_ptr = PART_O + b * stride_ob + kv_head * stride_oh + split * stride_os + rows[:, None] * stride_om + dims[None, :]
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
            PART_O + b * stride_ob + kv_head * stride_oh + splits[:, None] * stride_os + row * stride_om + dims[None, :],
            mask=split_valid[:, None], other=0.0,
        )
        out = tl.sum(parts * weight[:, None], axis=0)
        g = row // LEN
        i = row % LEN
        tl.store(OUT + b * stride_outb + i * stride_outl + (kv_head * GROUP + g) * stride_outh + dims, out)


@functools.cache
def _sm_count(device_index: int | None) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def split_count(num_keys: int, batch: int, kv_heads: int, sm_count: int, min_keys: int = 256) -> int:
    """Enough programs to fill the GPU a few times over, each reading at least `min_keys` keys."""
    wanted = max(1, (4 * sm_count) // max(1, batch * kv_heads))
    return max(1, min(wanted, -(-num_keys // min_keys)))


def decode_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, base_len: torch.Tensor, scaling: float,
    splits: int | None = None,
) -> torch.Tensor:
    """query [B,Hq,L,D]; key/value [B,Hkv,N,D] (the whole preallocated buffer); base_len [B] int32.

    Returns [B, L, Hq, D]: row i of sequence b attends to keys 0 .. base_len[b]+i.
    """
    batch, q_heads, length, head_dim = query.shape
    kv_heads, num_keys = key.shape[1], key.shape[2]
    group = q_heads // kv_heads
    if splits is None:
        splits = split_count(num_keys, batch, kv_heads, _sm_count(query.device.index))
    keys_per_split = -(-num_keys // splits)
    rows = group * length
    block_m = max(16, triton.next_power_of_2(rows))
    part_o = torch.empty(batch, kv_heads, splits, rows, head_dim, device=query.device, dtype=torch.float32)
    part_lse = torch.empty(batch, kv_heads, splits, rows, device=query.device, dtype=torch.float32)
    block_n = 64 if block_m <= 64 else 32
    _split_kernel[(splits, batch, kv_heads)](
        query, key, value, base_len, part_o, part_lse,
        query.stride(0), query.stride(1), query.stride(2),
        key.stride(0), key.stride(1), key.stride(2),
        value.stride(0), value.stride(1), value.stride(2),
        part_o.stride(0), part_o.stride(1), part_o.stride(2), part_o.stride(3),
        part_lse.stride(0), part_lse.stride(1), part_lse.stride(2),
        scaling, keys_per_split,
        GROUP=group, LEN=length, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32",  # float32 stays exact; tf32 is unused for 16-bit
        num_warps=4, num_stages=2,
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
