"""Preallocated KV storage of the StD engine: one dense cache and one compact sparse view, for B sequences.

- dense  [layers, B, Hkv, max_len, D]: the full context of every sequence, in position order;
- sparse [layers, B, Hkv, sparse_cap, D]: per layer and KV head, the top-K visual entries and every text entry
  of the prompt (copied once after prefill), then the generated tokens (their dense KV, appended after each
  verification), then scratch room for the drafts of the current cycle. Its size is
  O(layers x Hkv x (K + text + generated)), never a second full cache.

Decoding steps always read a whole buffer (lengths are masked per sequence in attention): every step of a kind
then has the same shapes, which is what lets one CUDA graph replay it.

A hybrid (Qwen3.5) has KV only in its full-attention layers: the buffers hold those, and its linear-attention layers'
recurrent state lives in `linear` (linear.py).

Where transformers' own forward runs (every prefill; decoding steps of models without our fused forward), it
gets a view of this storage for that one call, as a transformers `Cache` (the public cache API): `prefill_view`
writes a prompt into one slot, `step_view` writes a step's entries at given positions and hands attention the
buffer of the step's mode. A view is made for one forward and holds everything that call needs: the storage has
no mode of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, LinearAttentionCacheLayerMixin

from .linear import LinearStates

DENSE, SPARSE = "dense", "sparse"


def store_step_entries(keys: torch.Tensor, values: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       write_pos: torch.Tensor) -> None:
    """Store a step's new key/value [B, Hkv, L, D] into one layer's buffers [B, Hkv, N, D] at write_pos [B, L]."""
    batch_index = torch.arange(keys.shape[0], device=keys.device)[:, None]
    # advanced indices around a slice put [B, L] first: the target is [B, L, Hkv, D]
    keys[batch_index, :, write_pos] = key.transpose(1, 2)
    values[batch_index, :, write_pos] = value.transpose(1, 2)


class EngineCache:
    """`num_layers`: the model's layers with a KV cache; `linear`: a hybrid's linear-attention states."""

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, head_dim: int, max_len: int, sparse_cap: int,
                 dtype: torch.dtype, device: torch.device, linear: LinearStates | None = None):
        shape = (num_layers, batch, num_kv_heads)
        self.dense_k = torch.zeros(*shape, max_len, head_dim, dtype=dtype, device=device)
        self.dense_v = torch.zeros_like(self.dense_k)
        self.sparse_k = torch.zeros(*shape, sparse_cap, head_dim, dtype=dtype, device=device)
        self.sparse_v = torch.zeros_like(self.sparse_k)
        self.batch_index = torch.arange(batch, device=device)[:, None]
        self.num_layers = num_layers
        self.max_len = max_len
        self.sparse_cap = sparse_cap
        self.linear = linear

    @property
    def batch(self) -> int:
        return self.dense_k.shape[1]

    def nbytes(self) -> int:
        kv = sum(t.numel() * t.element_size() for t in (self.dense_k, self.dense_v, self.sparse_k, self.sparse_v))
        return kv + (self.linear.nbytes() if self.linear is not None else 0)

    def buffer_len(self, mode: str) -> int:
        return self.max_len if mode == DENSE else self.sparse_cap

    def step_buffers(self, layer: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values [B, Hkv, N, D] of one layer that a decoding step of `mode` writes and reads."""
        if mode == DENSE:
            return self.dense_k[layer], self.dense_v[layer]
        return self.sparse_k[layer], self.sparse_v[layer]

    def layer_buffers(self, mode: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.step_buffers(layer, mode) for layer in range(self.num_layers)]

    def prefill_view(self, slot: int, start: int = 0) -> Cache:
        """A transformers Cache for one prompt's forward: its keys and values go to `slot` from position `start`
        (after a shared prefix already copied there, which attention then reads too), and a hybrid's linear layers
        leave their state in that slot."""
        return _View(self._model_layers(lambda kv: _PrefillLayer(self, kv, slot, start),
                                        lambda states, layer: states.prefill_layer(layer, slot)))

    def read_prefix(self, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of the dense keys and values [layers, Hkv, length, D] of the first `length` tokens of `slot`."""
        return self.dense_k[:, slot, :, :length].clone(), self.dense_v[:, slot, :, :length].clone()

    def write_prefix(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put keys and values that read_prefix gave back as the first tokens of `slot`."""
        length = keys.shape[2]
        self.dense_k[:, slot, :, :length] = keys
        self.dense_v[:, slot, :, :length] = values

    def step_view(self, mode: str, write_pos: torch.Tensor) -> Cache:
        """A transformers Cache for one decoding step's forward: new entries go to write_pos [B, L] of the `mode`
        buffers, and attention gets those whole buffers (a hybrid's linear layers: LinearStates.step_layer)."""
        width = write_pos.shape[1]
        return _View(self._model_layers(lambda kv: _StepLayer(self, kv, mode, write_pos),
                                        lambda states, layer: states.step_layer(layer, mode == SPARSE, width)))

    def _model_layers(self, attention: Callable[[int], CacheLayerMixin],
                      linear: Callable[[LinearStates, int], LinearAttentionCacheLayerMixin]) -> list[Any]:
        """A view's layers in the model's order: attention layers by their index in the KV buffers, a hybrid's linear
        layers by theirs in the model."""
        if self.linear is None:
            return [attention(i) for i in range(self.num_layers)]
        states, kv = self.linear, iter(range(self.num_layers))
        return [linear(states, i) if i in states.index else attention(next(kv))
                for i in range(self.num_layers + len(states.index))]

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


class _View(Cache):
    def __init__(self, layers: list[Any]):
        super().__init__(layers=layers)


class _Layer(CacheLayerMixin):
    """One attention layer's window onto the engine cache for one forward; all storage lives in `EngineCache`."""

    is_compileable = True
    view_len = 0  # keys attention reads: 0 tells transformers it is a prefill

    def __init__(self, storage: EngineCache, index: int):
        super().__init__()
        self.storage = storage
        self.index = index  # in the KV buffers
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None  # storage is preallocated

    def get_seq_length(self) -> int:
        # transformers asks this to tell prefill (0) from decoding; decoding positions are always given explicitly
        return self.view_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.view_len, 0

    def get_max_length(self) -> int:
        return self.storage.max_len


class _PrefillLayer(_Layer):
    def __init__(self, storage: EngineCache, index: int, slot: int, start: int):
        super().__init__(storage, index)
        self.slot, self.start = slot, start

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.start + key_states.shape[2]
        keys, values = self.storage.dense_k[self.index], self.storage.dense_v[self.index]
        keys[self.slot, :, self.start : end] = key_states[0]
        values[self.slot, :, self.start : end] = value_states[0]
        if not self.start:
            return key_states, value_states
        return keys[self.slot : self.slot + 1, :, :end], values[self.slot : self.slot + 1, :, :end]


class _StepLayer(_Layer):
    def __init__(self, storage: EngineCache, index: int, mode: str, write_pos: torch.Tensor):
        super().__init__(storage, index)
        self.mode, self.write_pos = mode, write_pos
        self.view_len = storage.buffer_len(mode)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.storage.step_buffers(self.index, self.mode)
        store_step_entries(keys, values, key_states, value_states, self.write_pos)
        return keys, values
