"""Sparse-to-Dense (StD) decoding: the same model drafts with top-K sparse attention, then verifies densely.

`Decoder` holds B slots over one preallocated cache and does the steps, small functions over explicit state
(gpt-fast style), and nothing else:

- `prefill(slot, inputs)`: run the prompt (vision tower included) with full attention into one slot, rank the
  visual tokens per layer and KV head by the attention the prompt's text pays them, and build that slot's sparse
  view (top-K visual + all text entries); `seed(slot, state)` puts a prefilled state back instead (profiling);
- `step(gamma)`: one cycle for every active slot: `_draft` gamma single-token forwards that read only the sparse
  view, `_verify` ONE dense forward over the last committed token plus the drafts, `_accept` the longest agreeing
  prefix (or the sampling rule), `_commit` the accepted tokens plus the dense model's own next one, appending
  their verified dense KV to the sparse view. Rejected drafts leave nothing behind: lengths do not advance (and a
  hybrid's linear-attention layers keep the state of the committed tokens only: linear.py).

With gamma = 0 a cycle is one plain dense decoding step: that is the `--dense` baseline, on the same code path.
Which gamma each cycle takes, and how slots are refilled, is the session loop's business (session.py).

Steps have static shapes (whole cache buffers, lengths masked in attention) and take their per-slot state from
one host-to-device copy per cycle; on a CUDA GPU each step shape is captured once in a CUDA graph (graphs.py).
The only host synchronization inside a cycle is reading what verification accepted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch

from ..model.adapter import ModelAdapter
from .attention import MAX_SCORE_QUERIES, STEP_KWARG, StepContext, engine_attention, step_context
from .cache import DENSE, SPARSE, EngineCache
from .device import synchronize, to_device
from .fused import FusedTextModel, decode_forward
from .graphs import StepGraphs
from .linear import LinearStates, linear_modules, recording_verify_inputs
from .options import SPARSE_DRAFT, DecodeOptions, EngineConfig
from .sampling import accept_greedy, accept_sampled, sample, token_probs
from .stats import DecodeStats


@dataclass
class Slot:
    """Host-side state of one sequence in the batch."""

    dense_len: int  # tokens whose dense KV is cached
    sparse_len: int  # entries of its sparse view
    # per position row (3 for Qwen M-RoPE, else 1): generated token i sits at dense_len + i + delta
    rope_delta: tuple[int, ...]
    last_token: int  # committed, its KV not yet cached
    max_new_tokens: int
    tokens: list[int] = field(default_factory=list)
    done: bool = False
    unsynced: int = 0  # committed by dense steps, their KV not yet copied to the sparse view (done before a draft)
    has_view: bool = True  # False: prefilled without a sparse view, dense steps only
    stats: DecodeStats = field(default_factory=DecodeStats)


class SharedPrefix:
    """The first `length` tokens of the prompts of `uses` requests (a video, and the text before each question
    about it), prefilled once. The first of those requests to be prefilled runs its whole prompt and keeps here the
    dense keys and values of the prefix, and the query rows of the prefix's text after the video (which ranks
    visual tokens for every prompt that continues it); each later one copies them into its slot and prefills only
    the rest. The copy is freed after the last use."""

    def __init__(self, length: int, uses: int):
        self.length, self.uses = length, uses
        self.keys: torch.Tensor | None = None  # [layers, Hkv, length, D]
        self.values: torch.Tensor | None = None
        self.query_rows: dict[int, torch.Tensor] = {}  # layer -> [Hq, Q, D]
        self.input_ids: torch.Tensor | None = None  # [length]: what a prompt that continues it must start with

    def prefilled(self, cache: EngineCache, slot: int, input_ids: torch.Tensor, ctx: StepContext) -> None:
        """One of its requests was prefilled into `slot`: keep the prefix if it is not kept yet and others will
        continue it."""
        if self.keys is None and self.uses > 1:
            self.keys, self.values = cache.read_prefix(slot, self.length)
            self.query_rows, self.input_ids = ctx.query_rows, input_ids[0, : self.length].clone()
        self.drop()

    def drop(self) -> None:
        """One of its requests is done with it (prefilled, or given up before): the last frees the copy."""
        self.uses -= 1
        if self.uses <= 0:
            self.keys = self.values = self.input_ids = None
            self.query_rows = {}


@dataclass
class SlotTensors:
    """The slots' host state on the device, copied once per cycle; empty slots read as zeros."""

    dense_len: torch.Tensor  # [B]
    sparse_len: torch.Tensor  # [B] after the pending copy of densely committed tokens to the sparse view
    unsynced: torch.Tensor  # [B] of those, tokens whose KV is still to be copied
    last_token: torch.Tensor  # [B, 1]
    next_position: torch.Tensor  # [rows, B] rope position of the next token (rows: 3 for M-RoPE, else 1)


class StepClock:
    """Wall time of one cycle, split into drafting and verification without stopping the GPU in between: on CUDA
    the split point is an event, read once the cycle's results have been synchronized anyway."""

    def __init__(self, device: torch.device):
        self.started = time.perf_counter()
        self.events: tuple[torch.cuda.Event, torch.cuda.Event] | None = None
        if device.type == "cuda":
            self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self.events[0].record()
        self.drafted_at = self.started

    def mark_drafted(self) -> None:
        if self.events:
            self.events[1].record()
        else:
            self.drafted_at = time.perf_counter()

    def split(self) -> tuple[float, float]:
        """(draft_s, verify_s); call after a synchronization that follows the whole cycle."""
        total = time.perf_counter() - self.started
        if self.events:
            self.events[1].synchronize()
            draft = min(self.events[0].elapsed_time(self.events[1]) / 1e3, total)
        else:
            draft = self.drafted_at - self.started
        return draft, total - draft


class Decoder:
    """B slots of StD (or dense) decoding over one preallocated cache.

    A context manager: inside `with Decoder(...) as decoder:` the model's language attention is the engine's.
    `fused`: the model's fused decoding forward (fused.py), or None for transformers' forward; `drafts`: the
    weights each draft kind reads (the fused model itself for sparse drafts, or its quantized copies), empty where
    drafts run through transformers' forward (sparse only).
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        options: DecodeOptions,
        *,
        batch: int = 1,
        max_len: int,
        sparse_cap: int,
        config: EngineConfig | None = None,
        fused: FusedTextModel | None = None,
        eos: Sequence[int] | None = None,
        drafts: dict[str, FusedTextModel] | None = None,
    ):
        self.adapter = adapter
        self.model = adapter.model
        self.config = config or EngineConfig()
        self.device = adapter.device
        self.fused = fused
        dims = adapter.cache
        cap = sparse_cap if options.drafting else 1
        linear = None
        if dims.linear is not None:
            linear = LinearStates(dims.linear, batch, self.device, linear_modules(self.model, dims.linear))
        self.cache: EngineCache | None = EngineCache(
            dims.layers, batch, dims.kv_heads, dims.head_dim, max_len, cap, dims.dtype, self.device, linear)
        self.mrope = adapter.mrope
        self.generator = torch.Generator(self.device)
        self.slots: list[Slot | None] = []
        self.drafts: dict[str, FusedTextModel] = {}
        self.restart(options, eos, drafts)
        self.last_draft_s = self.last_verify_s = 0.0
        self.last_captured = False  # whether the last step captured a graph (its time is not a step's cost)
        self.graphs: StepGraphs | None = None
        self._step_fn: Callable[..., torch.Tensor] = self._model_step
        if self.config.cuda_graphs and self.device.type == "cuda":
            self.graphs = StepGraphs()
            if self.config.compile:
                self._step_fn = torch.compile(self._model_step, dynamic=False)

    @property
    def storage(self) -> EngineCache:
        if self.cache is None:
            raise RuntimeError("this decoder was closed")
        return self.cache

    @property
    def graph_failure(self) -> str | None:
        return self.graphs.failure if self.graphs is not None else None

    def fits(self, options: DecodeOptions, batch: int, max_len: int, sparse_cap: int) -> bool:
        """Whether a run with these needs can reuse this decoder (and its CUDA graphs)."""
        return (
            self.cache is not None
            and self.cache.batch == batch
            and self.cache.max_len >= max_len
            and self.cache.sparse_cap >= (sparse_cap if options.drafting else 1)
        )

    def restart(self, options: DecodeOptions, eos: Sequence[int] | None = None,
                drafts: dict[str, FusedTextModel] | None = None) -> None:
        """Empty every slot for a run with these options (a new decoder's first, or a reused one's next); the caches
        and captured graphs stay."""
        self.options = options
        self.drafts = dict(drafts or {})
        self.eos = frozenset(self.adapter.eos_ids if eos is None else eos)
        self.slots = [None] * self.storage.batch
        # where an empty slot's rows of a step write: past what the slot last held, so that a prompt left in its
        # caches (a sequence to seed again) stays whole while the other slots decode
        self.parked = [(0, 0)] * self.storage.batch
        seed = options.seed if options.seed is not None else random.randrange(2**63)
        self.generator.manual_seed(seed)

    def close(self) -> None:
        """Free the graphs and caches now, not when the garbage collector finds them."""
        self.graphs, self.cache, self.slots = None, None, []

    def __enter__(self) -> Decoder:
        self._hooks = ExitStack()
        self._hooks.enter_context(engine_attention(self.model))
        if self.storage.linear is not None:
            self._hooks.enter_context(recording_verify_inputs(self.storage.linear))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._hooks.__exit__(kind, error, trace)

    def active(self) -> dict[int, Slot]:
        """The slots still decoding, by index."""
        return {i: s for i, s in enumerate(self.slots) if s is not None and not s.done}

    # ---- one decoding step of the model ----------------------------------------------------------
    def _model_step(self, mode: str, draft: str, tokens: torch.Tensor, positions: torch.Tensor,
                    base_len: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, V] of L new tokens per slot stored after base_len [B] entries of the `mode` cache; a
        sparse step reads the weights of draft kind `draft`."""
        cache, length = self.storage, tokens.shape[1]
        write_pos = base_len[:, None] + torch.arange(length, device=self.device)
        ctx = step_context(mode, base_len, length, cache.buffer_len(mode), cache.dense_k.shape[-1])
        if self.fused is not None:
            weights = self.drafts.get(draft, self.fused) if mode == SPARSE else self.fused
            return decode_forward(weights, tokens, positions, cache.layer_buffers(mode), write_pos, ctx)
        out = self.model(input_ids=tokens, position_ids=positions, past_key_values=cache.step_view(mode, write_pos),
                         use_cache=True, **{STEP_KWARG: ctx})
        logits: torch.Tensor = out.logits
        return logits

    def _forward(self, mode: str, tokens: torch.Tensor, positions: torch.Tensor, base_len: torch.Tensor,
                 draft: str = SPARSE_DRAFT) -> torch.Tensor:
        if mode == DENSE:
            draft = ""  # a dense step or verify reads the model's own weights, whatever drafted
        if self.graphs is None:
            return self._model_step(mode, draft, tokens, positions, base_len)

        def step(*x: torch.Tensor) -> torch.Tensor:
            return self._step_fn(mode, draft, *x)

        logits, captured = self.graphs.run((mode, draft, tokens.shape[1]), step, tokens, positions, base_len)
        self.last_captured = self.last_captured or captured
        return logits

    def _slot_tensors(self) -> SlotTensors:
        rows = 3 if self.mrope else 1
        table = torch.tensor(
            [[s.dense_len, s.sparse_len + s.unsynced, s.unsynced, s.last_token,
              *(s.dense_len + d for d in s.rope_delta)] if s else [*parked, 0, 0, *[parked[0]] * rows]
             for s, parked in zip(self.slots, self.parked, strict=True)],
            dtype=torch.long,
        )
        t = to_device(table, self.device)
        return SlotTensors(t[:, 0], t[:, 1], t[:, 2], t[:, 3:4], t[:, 4:].T)

    def _positions(self, on_device: SlotTensors, length: int, offset: int = 0) -> torch.Tensor:
        """Positions of `length` new tokens per slot, from `offset` on: [B, L], or [3, B, L] for M-RoPE."""
        positions = on_device.next_position[:, :, None] + (offset + torch.arange(length, device=self.device))
        return positions if self.mrope else positions[0]

    def _choose(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next token from logits [..., V] (and its distribution when sampling)."""
        if self.options.greedy:
            return logits.argmax(-1), None
        probs = token_probs(logits, self.options.temperature, self.options.top_p)
        return sample(probs, self.generator), probs

    # ---- prefill ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, slot: int, inputs: dict[str, torch.Tensor], max_new_tokens: int | None = None,
                sparse_view: bool = True, prefix: SharedPrefix | None = None) -> list[int]:
        """Run the prompt into `slot`; returns the first generated token as a list (empty if the limit is 0).

        sparse_view=False skips ranking the visual tokens and building the slot's sparse view (gamma auto, when
        the remembered costs say drafting will not pay): the slot can then only take dense steps.

        `prefix`: the first tokens of the prompt, shared with other requests (SharedPrefix). The first of them to
        be prefilled runs its whole prompt and keeps the prefix; the others copy it into their slot and run only
        the rest of their prompt, whose text ranks the visual tokens over the cached keys as the whole prompt would
        (with the prefix's own text after the video, kept from the first)."""
        started = time.perf_counter()
        input_ids = inputs["input_ids"]
        is_visual = torch.isin(input_ids[0], torch.tensor(self.adapter.visual_ids, device=input_ids.device))
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        visual, text = positions[is_visual], positions[~is_visual]
        sparse_view = self.options.drafting and sparse_view
        drafting = sparse_view and visual.numel() > 0
        ctx = StepContext("prefill")
        if drafting:
            # only text that comes after the video can attend to it
            ctx.score_queries, ctx.visual_keys = text[text > visual[0]], visual
        extra: dict[str, Any] = {}
        rope_delta: tuple[int, ...] = (0,)
        if self.mrope:
            extra["position_ids"] = self.adapter.positions(inputs)
            rope_delta = tuple(int(p) + 1 - input_ids.shape[1] for p in extra["position_ids"][:, 0, -1])
        if self.storage.linear is not None:
            prefix = None  # a hybrid's linear layers keep a recurrent state, no prefix cache to copy: prefilled whole
        start = 0 if prefix is None else self._enter_prefix(slot, prefix, input_ids, is_visual, text, ctx)
        model_inputs: dict[str, torch.Tensor] = inputs
        if start:  # no pixels: every visual token is in the cached prefix
            model_inputs = {"input_ids": input_ids[:, start:]}
            all_positions = extra["position_ids"] if self.mrope else positions[None]
            extra["position_ids"] = all_positions[..., start:]
        out = self.model(**model_inputs, **extra, past_key_values=self.storage.prefill_view(slot, start),
                         use_cache=True, logits_to_keep=1, **{STEP_KWARG: ctx})
        if prefix is not None:
            prefix.prefilled(self.storage, slot, input_ids, ctx)
        if self.storage.linear is not None:
            self.storage.linear.snapshot(slot)
        if sparse_view:
            synchronize(self.device)  # the view's own time starts when the forward has finished
        view_started = time.perf_counter()
        sparse_len = self._build_sparse(slot, ctx, text) if sparse_view else 0
        first, _ = self._choose(out.logits[:, -1])
        synchronize(self.device)
        state = Slot(
            dense_len=input_ids.shape[1],
            sparse_len=sparse_len,
            rope_delta=rope_delta,
            last_token=int(first[0]),
            max_new_tokens=self.options.max_new_tokens if max_new_tokens is None else max_new_tokens,
            has_view=sparse_view,
        )
        state.stats.prompt_tokens, state.stats.visual_tokens = input_ids.shape[1], visual.numel()
        state.stats.kept_tokens = sparse_len
        state.stats.view_s = ctx.scoring_s + (time.perf_counter() - view_started if sparse_view else 0.0)
        state.stats.prefill_s = time.perf_counter() - started
        self.slots[slot] = state
        return self._append(state, [state.last_token])

    def _enter_prefix(self, slot: int, prefix: SharedPrefix, input_ids: torch.Tensor, is_visual: torch.Tensor,
                      text: torch.Tensor, ctx: StepContext) -> int:
        """Set up a prefill with a shared prefix: copy it into `slot` and return its length, or return 0 when it is
        not kept yet (this prompt prefills it whole, keeping the query rows of its text after the video)."""
        length = prefix.length
        if not 0 < length < input_ids.shape[1] or bool(is_visual[length:].any()):
            raise ValueError(f"a shared prefix of {length} tokens must hold every visual token of a prompt of "
                             f"{input_ids.shape[1]}, and be shorter")
        if prefix.keys is None or prefix.values is None or prefix.input_ids is None:
            if self.options.drafting and bool(is_visual.any()):
                first_visual = int(is_visual.nonzero()[0])
                before = text[(text > first_visual) & (text < length)]
                ctx.row_positions = before[-MAX_SCORE_QUERIES:]
            return 0
        if not torch.equal(prefix.input_ids, input_ids[0, :length]):
            raise ValueError("this prompt does not start with the shared prefix it was given")
        self.storage.write_prefix(slot, prefix.keys, prefix.values)
        ctx.start, ctx.query_rows = length, prefix.query_rows
        return length

    def seed(self, slot: int, state: Slot, sparse_view: bool = True) -> None:
        """Put a slot state back whose prompt is already in this decoder's cache: a sequence prefilled earlier
        (the prompt entries of the caches are never written by decoding), or made up over random KV when
        profiling step costs. sparse_view=False: the slot takes dense steps only, as if prefilled without one."""
        state.has_view = state.has_view and sparse_view and self.options.drafting
        if self.storage.linear is not None:
            self.storage.linear.restore(slot)
        self.slots[slot] = state

    def _build_sparse(self, slot: int, ctx: StepContext, text: torch.Tensor) -> int:
        """The slot's sparse view after prefill; its length."""
        cache, kept = self.storage, None
        if ctx.visual_scores:
            # by layer, in the model's order: the KV buffers' (a hybrid's linear layers score nothing)
            scores = torch.stack([ctx.visual_scores[i] for i in sorted(ctx.visual_scores)])  # [layers, Hkv, V]
            top = scores.topk(min(self.options.k, scores.shape[-1]), dim=-1).indices.sort(dim=-1).values
            assert ctx.visual_keys is not None
            kept = ctx.visual_keys[top]
        elif ctx.visual_keys is not None:  # visual tokens but no text after them to rank them: keep the first K
            layers, _, kv_heads = cache.sparse_k.shape[:3]
            kept = ctx.visual_keys[: self.options.k].expand(layers, kv_heads, -1)
        return cache.build_sparse(slot, kept, text.to(self.device))

    # ---- a cycle -----------------------------------------------------------------------------------
    def _draft(self, on_device: SlotTensors, gamma: int, draft: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """gamma tokens from the sparse view, one at a time, with the weights of draft kind `draft`. Returns drafts
        [B, g] (and their distributions)."""
        token = on_device.last_token
        drafts, dists = [], []
        if self.storage.linear is not None:
            self.storage.linear.begin_draft()
        for j in range(gamma):
            logits = self._forward(SPARSE, token, self._positions(on_device, 1, j), on_device.sparse_len + j, draft)
            choice, probs = self._choose(logits[:, -1])
            token = choice[:, None]
            drafts.append(token)
            dists.append(probs)
        draft_probs = torch.stack([d for d in dists if d is not None], 1) if not self.options.greedy else None
        return torch.cat(drafts, 1), draft_probs

    def _verify(self, on_device: SlotTensors, drafts: torch.Tensor) -> torch.Tensor:
        """One dense forward over the last committed token plus the drafts: logits [B, g+1, V]."""
        tokens = torch.cat([on_device.last_token, drafts], 1)
        return self._forward(DENSE, tokens, self._positions(on_device, tokens.shape[1]), on_device.dense_len)

    def _accept(self, drafts: torch.Tensor, draft_probs: torch.Tensor | None, logits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if drafts.shape[1] == 0:  # a dense step
            token, _ = self._choose(logits[:, 0])
            return torch.zeros_like(token), token
        if self.options.greedy:
            return accept_greedy(drafts, logits)
        assert draft_probs is not None
        target = token_probs(logits, self.options.temperature, self.options.top_p)
        return accept_sampled(drafts, draft_probs, target, self.generator)

    def _append(self, state: Slot, tokens: list[int]) -> list[int]:
        """Commit tokens to a slot, stopping at EOS and at its token limit; returns what was kept."""
        room = state.max_new_tokens - len(state.tokens)
        kept = tokens[:room]
        for i, token in enumerate(kept):
            if token in self.eos:
                kept = kept[: i + 1]
                break
        state.tokens.extend(kept)
        state.stats.new_tokens = len(state.tokens)
        state.done = len(state.tokens) >= state.max_new_tokens or (bool(kept) and kept[-1] in self.eos)
        return kept

    def _sync_sparse(self, on_device: SlotTensors) -> None:
        """Copy the KV of tokens that dense steps committed to the sparse view: a dense step skips the copy, since
        the next cycle may be dense too (gamma auto on hardware where drafting does not pay)."""
        width = max((s.unsynced for s in self.slots if s), default=0)
        if not width:
            return
        start = on_device.dense_len - on_device.unsynced
        self.storage.copy_dense_to_sparse(start, on_device.sparse_len - on_device.unsynced, width)
        for s in self.slots:
            if s:
                s.sparse_len, s.unsynced = s.sparse_len + s.unsynced, 0

    @torch.inference_mode()
    def step(self, gamma: int | None = None, draft: str = SPARSE_DRAFT) -> dict[int, list[int]]:
        """Advance every active slot by one cycle of `gamma` drafts of kind `draft` (default: the fixed gamma of the
        options, sparse drafts); returns the tokens each slot committed. The cycle's times are left in
        last_draft_s and last_verify_s."""
        if draft != SPARSE_DRAFT and draft not in self.drafts:
            raise ValueError(f"this decoder has no {draft} draft (it has {', '.join(self.drafts) or 'sparse only'})")
        if gamma is None:
            if not isinstance(self.options.gamma, int):
                raise ValueError("step needs a gamma: the options' gamma is auto")
            gamma = self.options.gamma
        if gamma > self.options.max_gamma:
            raise ValueError(f"step needs a gamma from 0 to {self.options.max_gamma}, got {gamma!r}")
        if gamma and not all(s.has_view for s in self.slots if s):
            raise ValueError("a slot prefilled without a sparse view can only take dense steps (gamma 0)")
        active = self.active()
        if not active:
            return {}
        self.last_captured = False
        clock = StepClock(self.device)
        on_device = self._slot_tensors()
        drafts: torch.Tensor
        draft_probs: torch.Tensor | None = None
        if gamma:
            self._sync_sparse(on_device)
            drafts, draft_probs = self._draft(on_device, gamma, draft)
        else:
            drafts = torch.empty(self.storage.batch, 0, dtype=torch.long, device=self.device)
        clock.mark_drafted()
        logits = self._verify(on_device, drafts)
        accepted, next_token = self._accept(drafts, draft_probs, logits)
        if gamma:
            self.storage.copy_dense_to_sparse(on_device.dense_len, on_device.sparse_len, gamma + 1)
        # the one synchronization of a cycle: what was accepted decides what the host does next
        rows = torch.cat([accepted[:, None], next_token[:, None], drafts], 1).tolist()
        if gamma and self.storage.linear is not None:
            every_draft = all(rows[i][0] == gamma for i in active)
            self.storage.linear.commit(accepted + 1, gamma + 1, every_draft)
        self.last_draft_s, self.last_verify_s = clock.split()
        return {i: self._commit(state, gamma, rows[i], draft) for i, state in active.items()}

    def _commit(self, state: Slot, gamma: int, row: list[int], draft: str) -> list[int]:
        """One slot's outcome of a cycle, row = [accepted, the dense model's next token, drafts...]: keep the
        accepted drafts and that token; returns what was kept (EOS or the token limit may cut it)."""
        accepted, token, drafted = row[0], row[1], row[2:]
        kept = self._append(state, drafted[:accepted] + [token])
        state.dense_len += accepted + 1
        if gamma:
            state.sparse_len += accepted + 1
        else:
            state.unsynced += 1
        state.last_token = token
        state.stats.record_cycle(gamma, accepted, self.last_draft_s, self.last_verify_s, draft)
        return kept

    def release(self, slot: int) -> Slot:
        state = self.slots[slot]
        if state is None:
            raise ValueError(f"slot {slot} is empty")
        self.slots[slot] = None
        self.parked[slot] = (state.dense_len, state.sparse_len + state.unsynced)
        return state
