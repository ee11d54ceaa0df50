"""Preallocated KV storage of the StD engine: one dense cache and one compact sparse view, for B sequences.

It is a transformers `Cache` (the public cache API), so the model's own forward writes into it. Where a forward's
new keys and values go, and which stored entries attention reads back, depends on the mode the engine sets
before the call (`set_prefill`, `set_step`):

- dense  [layers, B, Hkv, max_len, D]: the full context of every sequence, in position order;
- sparse [layers, B, Hkv, sparse_cap, D]: per layer and KV head, the top-K visual entries and every text entry
  of the prompt (copied once after prefill), then the generated tokens (their dense KV, appended after each
  verification), then scratch room for the drafts of the current cycle. Its size is
  O(layers x Hkv x (K + text + generated)), never a second full cache.

Decoding steps always read a whole buffer (lengths are masked per sequence in attention): every step of a kind
then has the same shapes, which is what lets one CUDA graph replay it.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


def store_step_entries(keys: torch.Tensor, values: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       write_pos: torch.Tensor) -> None:
    """Store a step's new key/value [B, Hkv, L, D] into one layer's buffers [B, Hkv, N, D] at write_pos [B, L]."""
    batch_index = torch.arange(keys.shape[0], device=keys.device)[:, None]
    # advanced indices around a slice put [B, L] first: the target is [B, L, Hkv, D]
    keys[batch_index, :, write_pos] = key.transpose(1, 2)
    values[batch_index, :, write_pos] = value.transpose(1, 2)


class EngineCacheLayer(CacheLayerMixin):
    """One decoder layer's window onto the engine cache; all storage lives in `EngineCache`."""

    is_compileable = True

    def __init__(self, cache: EngineCache, layer_idx: int):
        super().__init__()
        self.cache = cache
        self.layer_idx = layer_idx
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:  # storage is preallocated
        return None

    def update(self, key_states, value_states, *args, **kwargs):
        return self.cache.write(self.layer_idx, key_states, value_states)

    def get_seq_length(self) -> int:
        return self.cache.get_seq_length()

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cache.view_len, 0

    def get_max_length(self) -> int:
        return self.cache.max_len


class EngineCache(Cache):
    def __init__(
        self,
        num_layers: int,
        batch: int,
        num_kv_heads: int,
        head_dim: int,
        max_len: int,
        sparse_cap: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        super().__init__(layers=[EngineCacheLayer(self, i) for i in range(num_layers)])
        shape = (num_layers, batch, num_kv_heads)
        self.dense_k = torch.zeros(*shape, max_len, head_dim, dtype=dtype, device=device)
        self.dense_v = torch.zeros_like(self.dense_k)
        self.sparse_k = torch.zeros(*shape, sparse_cap, head_dim, dtype=dtype, device=device)
        self.sparse_v = torch.zeros_like(self.sparse_k)
        self.batch_index = torch.arange(batch, device=device)[:, None]
        self.max_len = max_len
        self.sparse_cap = sparse_cap
        self.mode = "dense"
        self.slot = 0
        self.write_pos: torch.Tensor | None = None  # [B, L] where the new entries go

    @property
    def batch(self) -> int:
        return self.dense_k.shape[1]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.dense_k, self.dense_v, self.sparse_k, self.sparse_v))

    def set_prefill(self, slot: int) -> None:
        self.mode, self.slot = "prefill", slot

    def buffer_len(self, mode: str) -> int:
        return self.max_len if mode == "dense" else self.sparse_cap

    def set_step(self, mode: str, write_pos: torch.Tensor) -> None:
        """A decoding step of `mode` ("dense" or "sparse") whose new entries go to write_pos [B, L]."""
        self.mode, self.write_pos = mode, write_pos

    @property
    def view_len(self) -> int:
        """Entries a decoding step's attention reads: the whole buffer of its mode (0 for a prefill)."""
        return 0 if self.mode == "prefill" else self.buffer_len(self.mode)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # transformers asks this to tell prefill (0) from decoding; decoding positions are always given explicitly
        return self.view_len

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "prefill":
            length = key.shape[2]
            self.dense_k[layer, self.slot, :, :length] = key[0]
            self.dense_v[layer, self.slot, :, :length] = value[0]
            return key, value
        keys, values = self.step_buffers(layer)
        store_step_entries(keys, values, key, value, self.write_pos)
        return keys, values

    def step_buffers(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values [B, Hkv, N, D] of one layer that the current decoding step writes and reads."""
        if self.mode == "dense":
            return self.dense_k[layer], self.dense_v[layer]
        return self.sparse_k[layer], self.sparse_v[layer]

    def build_sparse(self, slot: int, kept_visual: torch.Tensor | None, text_positions: torch.Tensor) -> int:
        """Fill the sparse view of `slot` from its prefilled dense cache; returns its length.

        kept_visual [layers, Hkv, K']: positions of the visual entries each layer and KV head keeps (or None).
        text_positions [T]: positions of every non-visual prompt token, kept by all heads.
        """
        count = 0
        if kept_visual is not None and kept_visual.shape[-1]:
            count = kept_visual.shape[-1]
            index = kept_visual[..., None].expand(-1, -1, -1, self.dense_k.shape[-1])
            self.sparse_k[:, slot, :, :count] = torch.gather(self.dense_k[:, slot], 2, index)
            self.sparse_v[:, slot, :, :count] = torch.gather(self.dense_v[:, slot], 2, index)
        end = count + text_positions.numel()
        self.sparse_k[:, slot, :, count:end] = self.dense_k[:, slot, :, text_positions]
        self.sparse_v[:, slot, :, count:end] = self.dense_v[:, slot, :, text_positions]
        return end

    def copy_dense_to_sparse(self, dense_start: torch.Tensor, sparse_start: torch.Tensor, width: int) -> None:
        """Append the verified dense KV of the tokens just committed to the sparse view, for every slot.

        Copies a fixed window of `width` entries per slot (static shapes); entries past what a slot committed
        land beyond its sparse length and are overwritten later.
        """
        offsets = torch.arange(width, device=dense_start.device)
        src = (dense_start[:, None] + offsets).clamp_(max=self.max_len - 1)
        dst = (sparse_start[:, None] + offsets).clamp_(max=self.sparse_cap - 1)
        # [layers, B, Hkv, W, D] via gathering positions per slot
        batch = self.batch_index
        self.sparse_k[:, batch, :, dst] = self.dense_k[:, batch, :, src]
        self.sparse_v[:, batch, :, dst] = self.dense_v[:, batch, :, src]
