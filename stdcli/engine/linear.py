"""The recurrent state of a hybrid's linear-attention layers, per slot, and how a rejected draft leaves none behind.

A Gated DeltaNet layer (Qwen3.5) keeps no KV cache: each sequence carries a fixed-size state, the last inputs of a
causal convolution and the delta rule's matrix, which every token updates. An attention layer is rolled back by not
advancing a length; a recurrent state cannot be, so `LinearStates` keeps, per linear layer and slot:

- the committed state (after every committed token), which dense steps update in place (they always commit);
- drafting's own copy: a cycle's drafts start from the committed state and move their copy, never the original;
- the state after the slot's prompt, which `Decoder.seed` puts back (a prompt's KV entries survive decoding, a
  recurrent state does not);
- what the last verify read: the convolution's inputs and the layer's input, up to VERIFY_WIDTH tokens. The verify
  runs transformers' forward from the committed state and leaves it as it was (its final state goes to drafting's
  copy, unused by then).

After verification each slot keeps its first n = accepted + 1 tokens. Its convolution state is the last inputs of
those (a gather); its delta-rule state is the verify's own final one when every draft was accepted, otherwise the rule
run again from the committed state over the n kept tokens (`replay`, when a slot rejected a draft). The replay needs
no large projection: the q/k/v inputs were recorded, and only the two small gate projections are computed again from
the recorded layer inputs, with the verify's own shapes (so to the same values). On a GPU the rule is transformers'
recurrent kernel when flash-linear-attention is installed; without it (as on every CPU, where fla and causal-conv1d
do not run) transformers' PyTorch versions compute the same, correct but slower.

The views a forward gets (`prefill_layer`, `step_layer`) implement transformers' linear-attention cache layer API,
which its Gated DeltaNet layers call: conv_states / recurrent_states / has_previous_state, update_conv_state,
update_recurrent_state.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, LinearAttentionCacheLayerMixin

from ..model.adapter import LinearDims
from .options import MAX_GAMMA

VERIFY_WIDTH = MAX_GAMMA + 1  # the most tokens a verify reads: what the record of its inputs holds
STATE_COPIES = 3  # committed, drafting's, after the prompt


def slot_bytes(dims: LinearDims) -> int:
    """Bytes `LinearStates` holds per slot: STATE_COPIES states, and the record of a verify's inputs."""
    record = len(dims.layers) * VERIFY_WIDTH * (dims.conv_dim + dims.hidden_size) * dims.dtype.itemsize
    return STATE_COPIES * dims.state_bytes + record


def linear_modules(model: Any, dims: LinearDims) -> dict[int, Any]:
    """The model's linear-attention modules by layer index."""
    layers = model.model.language_model.layers
    return {i: layers[i].linear_attn for i in dims.layers}


class LinearStates:
    """The states of B slots (see the module docstring); `modules`: the model's layers (linear_modules)."""

    def __init__(self, dims: LinearDims, batch: int, device: torch.device, modules: dict[int, Any]):
        count = len(dims.layers)
        self.dims = dims
        self.index = {layer: i for i, layer in enumerate(dims.layers)}  # model layer -> index in the buffers
        self.modules = [modules[layer] for layer in dims.layers]
        self.conv = torch.zeros(count, batch, dims.conv_dim, dims.conv_kernel, dtype=dims.dtype, device=device)
        shape = (count, batch, dims.value_heads, dims.key_dim, dims.value_dim)
        self.recurrent = torch.zeros(shape, dtype=torch.float32, device=device)  # transformers keeps it in float32
        self.draft_conv, self.draft_recurrent = torch.zeros_like(self.conv), torch.zeros_like(self.recurrent)
        self.prompt_conv, self.prompt_recurrent = torch.zeros_like(self.conv), torch.zeros_like(self.recurrent)
        self.inputs = torch.zeros(count, batch, dims.conv_dim, VERIFY_WIDTH, dtype=dims.dtype, device=device)
        self.hidden = torch.zeros(count, batch, VERIFY_WIDTH, dims.hidden_size, dtype=dims.dtype, device=device)

    def nbytes(self) -> int:
        tensors = (self.conv, self.recurrent, self.draft_conv, self.draft_recurrent, self.prompt_conv,
                   self.prompt_recurrent, self.inputs, self.hidden)
        return sum(t.numel() * t.element_size() for t in tensors)

    # ---- views for one forward ---------------------------------------------------------------------------------
    def prefill_layer(self, layer: int, slot: int) -> LinearAttentionCacheLayerMixin:
        """Layer `layer` of a prompt's forward into `slot`: no previous state; what it leaves is the slot's."""
        i = self.index[layer]
        return _Prefill(self.conv[i, slot : slot + 1], self.recurrent[i, slot : slot + 1])

    def step_layer(self, layer: int, drafting: bool, width: int) -> LinearAttentionCacheLayerMixin:
        """Layer `layer` of a decoding step of `width` tokens per slot: a draft step moves drafting's copy, a dense
        step (width 1) the committed state, a verify (width > 1) records what it reads and moves nothing."""
        i = self.index[layer]
        if drafting:
            return _Step(self.draft_conv[i], self.draft_recurrent[i])
        if width == 1:
            return _Step(self.conv[i], self.recurrent[i])
        return _Verify(self, i, width)

    # ---- between forwards --------------------------------------------------------------------------------------
    def snapshot(self, slot: int) -> None:
        """Keep `slot`'s state after its prompt, for `restore`."""
        self.prompt_conv[:, slot] = self.conv[:, slot]
        self.prompt_recurrent[:, slot] = self.recurrent[:, slot]

    def restore(self, slot: int) -> None:
        """Put `slot`'s state after its prompt back."""
        self.conv[:, slot] = self.prompt_conv[:, slot]
        self.recurrent[:, slot] = self.prompt_recurrent[:, slot]

    def begin_draft(self) -> None:
        """Drafting starts from the committed state of every slot."""
        self.draft_conv.copy_(self.conv)
        self.draft_recurrent.copy_(self.recurrent)

    def commit(self, kept: torch.Tensor, width: int, every_draft_accepted: bool) -> None:
        """After a verify of `width` tokens per slot: slot b keeps its first kept[b] tokens ([B], on the device)."""
        if not every_draft_accepted:
            whole = (kept == width)[:, None, None, None]
            for i, module in enumerate(self.modules):
                replayed = replay(module, self.conv[i], self.recurrent[i], self.inputs[i, ..., :width],
                                  self.hidden[i, :, :width], kept)
                self.recurrent[i] = torch.where(whole, self.draft_recurrent[i], replayed)
        else:
            self.recurrent.copy_(self.draft_recurrent)
        # the convolution's state: its last inputs, those of the kept tokens after the committed ones
        inputs = torch.cat([self.conv, self.inputs[..., :width]], -1)
        columns = kept[:, None, None] + torch.arange(self.dims.conv_kernel, device=kept.device)
        self.conv.copy_(inputs.gather(-1, columns.expand(*self.conv.shape)))


def replay(module: Any, conv: torch.Tensor, state: torch.Tensor, inputs: torch.Tensor, hidden: torch.Tensor,
           kept: torch.Tensor) -> torch.Tensor:
    """The delta-rule state [B, H, Dk, Dv] of each slot after the first kept[b] of a verify's tokens, from the state
    before them: the Gated DeltaNet layer's own computation (transformers' functions, in its order) from the
    recorded convolution inputs [B, C, L] and layer inputs [B, L, hidden]. Tokens past kept[b] get beta = 0 and no
    decay, which leaves a state unchanged."""
    functions = sys.modules[type(module).__module__]  # transformers' modeling module of the layer
    batch, length = hidden.shape[:2]
    mixed = functions.causal_conv1d_fn(torch.cat([conv, inputs], -1), module.conv1d.weight.squeeze(1),
                                       module.conv1d.bias, activation=module.activation)[..., -length:]
    query, key, value = torch.split(mixed.transpose(1, 2), [module.key_dim, module.key_dim, module.value_dim], -1)
    query = query.reshape(batch, length, -1, module.head_k_dim)
    key = key.reshape(batch, length, -1, module.head_k_dim)
    value = value.reshape(batch, length, -1, module.head_v_dim)
    groups = module.num_v_heads // module.num_k_heads
    if groups > 1:  # each key head serves `groups` value heads
        query, key = query.repeat_interleave(groups, dim=2), key.repeat_interleave(groups, dim=2)
    hidden = hidden.contiguous()  # the verify's own layout: its projections computed the same way
    beta = module.in_proj_b(hidden).sigmoid()
    decay = -module.A_log.float().exp() * F.softplus(module.in_proj_a(hidden).float() + module.dt_bias)
    keep = (torch.arange(length, device=kept.device) < kept[:, None])[..., None]
    _, final = functions.torch_recurrent_gated_delta_rule(
        query, key, value, g=decay * keep, beta=beta * keep, initial_state=state, output_final_state=True,
        use_qk_l2norm_in_kernel=True)
    result: torch.Tensor = final
    return result


class _View(LinearAttentionCacheLayerMixin):
    """One linear layer's window onto `LinearStates` for one forward: the state it reads and moves."""

    def __init__(self, conv: torch.Tensor, recurrent: torch.Tensor, previous: bool):
        super().__init__()
        self.conv_states[0], self.recurrent_states[0] = conv, recurrent
        self.has_previous_state[0] = previous
        self.conv_kernel_size[0] = conv.shape[-1]
        self.is_conv_states_initialized[0] = self.is_recurrent_states_initialized[0] = True

    def lazy_initialization(self, *args: Any, **kwargs: Any) -> None:
        return None  # storage is preallocated

    def update_recurrent_state(self, recurrent_states: torch.Tensor, state_idx: int = 0, **kwargs: Any
                               ) -> torch.Tensor:
        state: torch.Tensor = self.recurrent_states[0]
        state.copy_(recurrent_states)
        return state


class _Prefill(_View):
    def __init__(self, conv: torch.Tensor, recurrent: torch.Tensor):
        super().__init__(conv, recurrent, previous=False)

    def update_conv_state(self, conv_states: torch.Tensor, state_idx: int = 0, **kwargs: Any) -> torch.Tensor:
        """A prompt's convolution inputs [1, C, L]: the state keeps the last kernel-size ones (zeros before a prompt
        shorter than that, as transformers pads)."""
        state: torch.Tensor = self.conv_states[0]
        kernel, length = state.shape[-1], conv_states.shape[-1]
        full = F.pad(conv_states, (kernel - length, 0)) if length < kernel else conv_states
        state.copy_(full[..., -kernel:])
        return full


class _Step(_View):
    """A single-token step: transformers updates the convolution state in place and hands the new delta-rule state
    to update_recurrent_state."""

    def __init__(self, conv: torch.Tensor, recurrent: torch.Tensor):
        super().__init__(conv, recurrent, previous=True)

    def update_conv_state(self, conv_states: torch.Tensor, state_idx: int = 0, **kwargs: Any) -> torch.Tensor:
        raise RuntimeError("a single-token step updates the convolution state in place")


class _Verify(_View):
    """A verify of several tokens: it reads the committed state, records its inputs, and moves nothing committed."""

    def __init__(self, states: LinearStates, index: int, width: int):
        super().__init__(states.conv[index], states.recurrent[index], previous=True)
        self.states, self.index, self.width = states, index, width

    def update_conv_state(self, conv_states: torch.Tensor, state_idx: int = 0, **kwargs: Any) -> torch.Tensor:
        self.states.inputs[self.index, ..., : self.width] = conv_states
        return torch.cat([self.states.conv[self.index], conv_states], -1)

    def update_recurrent_state(self, recurrent_states: torch.Tensor, state_idx: int = 0, **kwargs: Any
                               ) -> torch.Tensor:
        final = self.states.draft_recurrent[self.index]  # drafting is over: its copy holds the verify's final state
        final.copy_(recurrent_states)
        return final

    def record_input(self, hidden: torch.Tensor) -> None:
        self.states.hidden[self.index, :, : self.width] = hidden


def _record_verify_input(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    cache = kwargs.get("cache_params")
    layer = cache.layers[module.layer_idx] if isinstance(cache, Cache) else None
    if isinstance(layer, _Verify):
        layer.record_input(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])


@contextmanager
def recording_verify_inputs(states: LinearStates) -> Iterator[None]:
    """While the block runs, a verify's forward records each linear layer's input (the replay's gates need it):
    a forward pre-hook on the layers, removed afterwards."""
    hooks = [module.register_forward_pre_hook(_record_verify_input, with_kwargs=True) for module in states.modules]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
