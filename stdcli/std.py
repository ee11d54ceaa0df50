"""Sparse-to-Dense (StD) decoding: the same model drafts with top-K sparse attention, then verifies densely.

The steps are small functions over explicit state (gpt-fast style):

- `prefill`: run the prompt (vision tower included) with full attention into one slot of the engine cache, rank
  the visual tokens per layer and KV head by the attention the prompt's text pays them, and build that slot's
  sparse view (top-K visual + all text entries);
- `draft`: gamma single-token forwards that read only the sparse view;
- `verify`: ONE dense forward over the last committed token plus the drafts;
- `commit`: keep the accepted prefix plus the dense model's own next token, and append the verified dense KV of
  the committed tokens to the sparse view. Rejected drafts leave nothing behind: lengths simply do not advance.

With gamma = 0 a cycle is one plain dense decoding step: that is the `--dense` baseline, on the same code path.
The default gamma, "auto", picks each cycle's gamma (0 included) from measured step costs: see policy.py.

Steps have static shapes (whole cache buffers, lengths masked in attention) and take their per-slot state from
one host-to-device copy per cycle; on a CUDA GPU each step shape is captured once in a CUDA graph (graphs.py).
The only host synchronization inside a cycle is reading what verification accepted.
"""

from __future__ import annotations

import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .attention import StepContext, engine_attention, step_context
from .fused import decode_forward, fused_text_model
from .graphs import CapturedStep
from .kvcache import EngineCache
from .policy import AUTO, MAX_AUTO_GAMMA, GammaPolicy, memory_key
from .sampling import accept_greedy, accept_sampled, sample, token_probs

DEFAULT_K = 512
DEFAULT_GAMMA = AUTO


@dataclass
class DecodeOptions:
    max_new_tokens: int = 256
    k: int = DEFAULT_K  # visual entries kept per layer and KV head
    gamma: int | str = DEFAULT_GAMMA  # drafts per cycle; 0 = dense decoding; "auto": chosen per cycle (policy.py)
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    # StD sequences start with this many plain dense steps: their measured cost is the baseline of `speedup_est`.
    calibration_steps: int = 2
    cuda_graphs: bool = True  # on a CUDA device: each step shape is captured once and replayed
    # Experimental, on a CUDA device: torch.compile each step shape before capturing it. Measured on transformers'
    # forward it halved the kernels of a step but compiled the cache writes to whole-buffer copies, 2x slower
    # (docs/benchmarks.md); not measured with the fused forward, which already has few kernels
    compile: bool = False
    # Qwen2-family language models: decoding steps run our fused forward (fused.py); False: transformers' forward
    fused: bool = True

    def __post_init__(self) -> None:
        if not (self.gamma == AUTO or (isinstance(self.gamma, int) and self.gamma >= 0)):
            raise ValueError(f"gamma must be a count >= 0 or {AUTO!r}, got {self.gamma!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def max_gamma(self) -> int:
        """The most drafts a cycle can make: what caches must leave room for."""
        return MAX_AUTO_GAMMA if self.gamma == AUTO else self.gamma

    @property
    def drafting(self) -> bool:
        return self.max_gamma > 0


@dataclass
class DecodeStats:
    prompt_tokens: int = 0
    visual_tokens: int = 0
    kept_tokens: int = 0  # sparse view after prefill: kept visual + text entries
    new_tokens: int = 0
    cycles: int = 0  # StD cycles (draft + verify)
    dense_steps: int = 0  # plain dense steps
    drafted: int = 0
    accepted: int = 0
    prefill_s: float = 0.0
    view_s: float = 0.0  # of prefill_s: ranking the visual tokens and building the sparse view
    draft_s: float = 0.0
    verify_s: float = 0.0
    dense_s: float = 0.0
    dense_step_s: float | None = None  # fastest measured dense step: the baseline of speedup_est
    gammas: dict[int, int] = field(default_factory=dict)  # gamma -> cycles with it (0: dense steps)

    @property
    def decode_s(self) -> float:
        return self.draft_s + self.verify_s + self.dense_s

    @property
    def decoded_tokens(self) -> int:  # the first new token comes out of prefill
        return max(self.new_tokens - 1, 0)

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def mean_accepted_length(self) -> float | None:
        """Tokens committed per StD cycle (accepted drafts plus the dense model's token)."""
        committed = self.decoded_tokens - self.dense_steps
        return committed / self.cycles if self.cycles else None

    @property
    def dense_share(self) -> float | None:
        """Share of the decoded tokens that came from plain dense steps."""
        return self.dense_steps / self.decoded_tokens if self.decoded_tokens else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.decoded_tokens / self.decode_s if self.decode_s > 0 else None

    @property
    def speedup_est(self) -> float | None:
        """Decode time dense decoding would have taken (tokens x measured dense step) over the time taken."""
        if self.dense_step_s is None or self.decode_s <= 0 or not self.cycles:
            return None
        return self.decoded_tokens * self.dense_step_s / self.decode_s


def gamma_counts(histograms: Iterable[Mapping[int | str, int]]) -> dict[str, int]:
    """Cycles per gamma summed over histograms (DecodeStats.gammas, or records' "gammas"), as records write them:
    {"gamma": cycles} in order of gamma, "0" counting plain dense steps."""
    total: Counter[int] = Counter()
    for histogram in histograms:
        for gamma, cycles in histogram.items():
            total[int(gamma)] += cycles
    return {str(gamma): cycles for gamma, cycles in sorted(total.items())}


@dataclass
class Slot:
    """Host-side state of one sequence in the batch."""

    dense_len: int  # tokens whose dense KV is cached
    sparse_len: int  # entries of its sparse view
    rope_delta: tuple[int, ...]  # per position row (3 for Qwen M-RoPE, else 1): generated token i sits at dense_len + i + delta
    last_token: int  # committed, its KV not yet cached
    max_new_tokens: int
    tokens: list[int] = field(default_factory=list)
    done: bool = False
    unsynced: int = 0  # committed by dense steps, their KV not yet copied to the sparse view (done before a draft)
    has_view: bool = True  # False: prefilled without a sparse view, dense steps only
    stats: DecodeStats = field(default_factory=DecodeStats)


@dataclass
class Generation:
    tokens: list[int]
    stats: DecodeStats


@dataclass
class SlotTensors:
    """The slots' host state on the device, copied once per cycle; empty slots read as zeros."""

    dense_len: torch.Tensor  # [B]
    sparse_len: torch.Tensor  # [B] after the pending copy of densely committed tokens to the sparse view
    unsynced: torch.Tensor  # [B] of those, tokens whose KV is still to be copied
    last_token: torch.Tensor  # [B, 1]
    next_position: torch.Tensor  # [rows, B] rope position of the next token (rows: 3 for M-RoPE, else 1)


def to_device(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on the device; on CUDA through pinned memory, so the copy does not wait for the GPU."""
    if device.type != "cuda":
        return table.to(device)
    return table.pin_memory().to(device, non_blocking=True)


def visual_token_ids(model) -> tuple[int, ...]:
    """Placeholder ids of image and video tokens, from the model config (Qwen: *_token_id, LLaVA-OV: *_token_index)."""
    config = model.config
    names = ("image_token_id", "video_token_id", "image_token_index", "video_token_index")
    return tuple(sorted({value for n in names if isinstance(value := getattr(config, n, None), int)}))


def eos_token_ids(model, tokenizer=None) -> tuple[int, ...]:
    """Token ids that end an answer: the generation config's eos ids, else the tokenizer's eos (when given)."""
    eos = model.generation_config.eos_token_id
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, (list, tuple)) else [eos]
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


# What Qwen-VL position functions read from the processor's output, beside input_ids.
ROPE_INDEX_INPUTS = ("mm_token_type_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")


def prompt_positions(model, inputs: dict) -> torch.Tensor:
    """M-RoPE positions [3, 1, L] of a prompt, as the model's forward computes them.

    The model's own `rope_deltas` are not the offset generation continues from: after a long video it is taken
    from the video's largest temporal position, while the text after the video continues from a smaller one, and
    `generate` extends every row of the prompt's own positions by one per token. Offsets are taken from the
    prompt's last position instead, row by row, as `generate` does.
    """
    input_ids = inputs["input_ids"]
    if "mm_token_type_ids" not in inputs:  # text only, from a bare tokenizer
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand(3, 1, -1)
    kwargs = {key: inputs[key] for key in ROPE_INDEX_INPUTS if key in inputs}
    return model.model.get_rope_index(input_ids, **kwargs)[0]


def uses_mrope(model) -> bool:
    """Qwen-VL models rotate with 3-D (temporal, height, width) positions and keep a per-prompt offset."""
    return hasattr(model.model, "rope_deltas")


def cache_dims(model) -> tuple[int, int, int, torch.dtype]:
    text = model.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    dtype = model.get_input_embeddings().weight.dtype
    return text.num_hidden_layers, text.num_key_value_heads, head_dim, dtype


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Wall time of one cycle, split into drafting and verification without stopping the GPU in between: on CUDA
    the split point is an event, read once the cycle's results have been synchronized anyway."""

    def __init__(self, device: torch.device):
        self.started = time.perf_counter()
        self.events = None
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
    `prefill(slot, inputs)` starts a sequence in a free slot and `step()` advances every active slot by one
    cycle; `generate()` below wraps this for one prompt.
    """

    def __init__(
        self,
        model,
        options: DecodeOptions,
        *,
        batch: int = 1,
        max_len: int,
        sparse_cap: int,
        eos: Sequence[int] | None = None,
        visual_ids: Sequence[int] | None = None,
    ):
        self.model = model
        self.options = options
        self.device = model.get_input_embeddings().weight.device
        layers, kv_heads, head_dim, dtype = cache_dims(model)
        cap = sparse_cap if options.drafting else 1
        self.cache = EngineCache(layers, batch, kv_heads, head_dim, max_len, cap, dtype, self.device)
        self.mrope = uses_mrope(model)
        self.generator = torch.Generator(self.device)
        self.restart(options, eos, visual_ids)
        self.last_draft_s = self.last_verify_s = 0.0
        self.last_captured = False  # whether the last step captured a graph (its time is not a step's cost)
        self.graphs: dict[tuple[str, int], CapturedStep] | None = None
        self.graph_failure: str | None = None
        self.fused = fused_text_model(model) if options.fused else None
        self._step_fn = self._model_step
        if options.cuda_graphs and self.device.type == "cuda":
            self.graphs, self._graph_pool = {}, torch.cuda.graph_pool_handle()
            if options.compile:
                self._step_fn = torch.compile(self._model_step, dynamic=False)

    def fits(self, options: DecodeOptions, batch: int, max_len: int, sparse_cap: int) -> bool:
        """Whether a run with these needs can reuse this decoder (and its CUDA graphs)."""
        return (
            self.cache is not None
            and options.fused == self.options.fused  # the captured graphs are of one forward or the other
            and self.cache.batch == batch
            and self.cache.max_len >= max_len
            and self.cache.sparse_cap >= (sparse_cap if options.drafting else 1)
        )

    def restart(self, options: DecodeOptions, eos: Sequence[int] | None, visual_ids: Sequence[int] | None) -> None:
        """Empty every slot for a run with these options (a new decoder's first, or a reused one's next); the caches
        and captured graphs stay."""
        self.options = options
        self.eos = frozenset(eos_token_ids(self.model) if eos is None else eos)
        self.visual_ids = tuple(visual_token_ids(self.model) if visual_ids is None else visual_ids)
        self.slots = [None] * self.cache.batch
        seed = options.seed if options.seed is not None else random.randrange(2**63)
        self.generator.manual_seed(seed)

    def close(self) -> None:
        """Free the graphs and caches now, not when the garbage collector finds them."""
        self.graphs, self.cache, self.slots = None, None, []

    def __enter__(self) -> Decoder:
        self._attention = engine_attention(self.model)
        self._attention.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._attention.__exit__(*exc)

    # ---- one decoding step of the model ----------------------------------------------------------
    def _model_step(self, mode: str, tokens: torch.Tensor, positions: torch.Tensor, base_len: torch.Tensor):
        """Logits [B, L, V] of L new tokens per slot stored after base_len [B] entries of the `mode` cache."""
        length = tokens.shape[1]
        self.cache.set_step(mode, base_len[:, None] + torch.arange(length, device=self.device))
        ctx = step_context(mode, base_len, length, self.cache.buffer_len(mode), self.cache.dense_k.shape[-1])
        if self.fused is not None:
            buffers = [self.cache.step_buffers(layer) for layer in range(len(self.fused.layers))]
            return decode_forward(self.fused, tokens, positions, buffers, self.cache.write_pos, ctx)
        out = self.model(
            input_ids=tokens, position_ids=positions, past_key_values=self.cache, use_cache=True, std_step=ctx
        )
        return out.logits

    def _forward(self, mode: str, tokens: torch.Tensor, positions: torch.Tensor, base_len: torch.Tensor):
        if self.graphs is None:
            return self._model_step(mode, tokens, positions, base_len)
        key = (mode, tokens.shape[1])
        step = self.graphs.get(key)
        if step is None:
            step = self.graphs[key] = CapturedStep(lambda *x: self._step_fn(mode, *x), self._graph_pool)
            self.last_captured = True
        logits = step(tokens, positions, base_len)
        if step.failed:  # this transformers' forward cannot be captured: plain launches from now on
            self.graph_failure, self.graphs = step.failed, None
            warnings.warn(f"decoding without CUDA graphs (slower): {step.failed}", RuntimeWarning, stacklevel=2)
        return logits

    def _slot_tensors(self) -> SlotTensors:
        rows = 3 if self.mrope else 1
        table = torch.tensor(
            [[s.dense_len, s.sparse_len + s.unsynced, s.unsynced, s.last_token, *(s.dense_len + d for d in s.rope_delta)]
             if s else [0] * (4 + rows) for s in self.slots],
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
    def prefill(self, slot: int, inputs: dict, max_new_tokens: int | None = None, sparse_view: bool = True) -> list[int]:
        """Run the prompt into `slot`; returns the first generated token as a list (empty if the limit is 0).

        sparse_view=False skips ranking the visual tokens and building the slot's sparse view (gamma auto, when
        the remembered costs say drafting will not pay): the slot can then only take dense steps."""
        started = time.perf_counter()
        input_ids = inputs["input_ids"]
        is_visual = torch.isin(input_ids[0], torch.tensor(self.visual_ids, device=input_ids.device))
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        visual, text = positions[is_visual], positions[~is_visual]
        sparse_view = self.options.drafting and sparse_view
        drafting = sparse_view and visual.numel() > 0
        ctx = StepContext("prefill")
        if drafting:
            # only text that comes after the video can attend to it
            ctx.score_queries, ctx.visual_keys = text[text > visual[0]], visual
        self.cache.set_prefill(slot)
        extra, rope_delta = {}, (0,)
        if self.mrope:
            extra["position_ids"] = prompt_positions(self.model, inputs)
            rope_delta = tuple(int(p) + 1 - input_ids.shape[1] for p in extra["position_ids"][:, 0, -1])
        out = self.model(**inputs, **extra, past_key_values=self.cache, use_cache=True, logits_to_keep=1, std_step=ctx)
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

    def _build_sparse(self, slot: int, ctx: StepContext, text: torch.Tensor) -> int:
        kept = None
        if ctx.visual_scores:
            scores = torch.stack([ctx.visual_scores[i] for i in range(len(ctx.visual_scores))])  # [layers, Hkv, V]
            keep = min(self.options.k, scores.shape[-1])
            top = scores.topk(keep, dim=-1).indices.sort(dim=-1).values
            kept = ctx.visual_keys[top]
        elif ctx.visual_keys is not None:  # visual tokens but no text after them to rank them: keep the first K
            layers, _, kv_heads = self.cache.sparse_k.shape[:3]
            kept = ctx.visual_keys[: self.options.k].expand(layers, kv_heads, -1)
        return self.cache.build_sparse(slot, kept, text.to(self.device))

    # ---- a cycle -----------------------------------------------------------------------------------
    def _draft(self, on_device: SlotTensors, gamma: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """gamma tokens from the sparse view, one at a time. Returns drafts [B, g] (and their distributions)."""
        token = on_device.last_token
        drafts, dists = [], []
        for j in range(gamma):
            logits = self._forward("sparse", token, self._positions(on_device, 1, j), on_device.sparse_len + j)
            token, probs = self._choose(logits[:, -1])
            token = token[:, None]
            drafts.append(token)
            dists.append(probs)
        draft_probs = torch.stack(dists, 1) if not self.options.greedy else None
        return torch.cat(drafts, 1), draft_probs

    def _verify(self, on_device: SlotTensors, drafts: torch.Tensor) -> torch.Tensor:
        """One dense forward over the last committed token plus the drafts: logits [B, g+1, V]."""
        tokens = torch.cat([on_device.last_token, drafts], 1)
        return self._forward("dense", tokens, self._positions(on_device, tokens.shape[1]), on_device.dense_len)

    def _accept(self, drafts, draft_probs, logits) -> tuple[torch.Tensor, torch.Tensor]:
        if drafts.shape[1] == 0:  # a dense step
            token, _ = self._choose(logits[:, 0])
            return torch.zeros_like(token), token
        if self.options.greedy:
            return accept_greedy(drafts, logits)
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
        self.cache.copy_dense_to_sparse(start, on_device.sparse_len - on_device.unsynced, width)
        for s in self.slots:
            if s:
                s.sparse_len, s.unsynced = s.sparse_len + s.unsynced, 0

    @torch.inference_mode()
    def step(self, gamma: int | None = None) -> dict[int, list[int]]:
        """Advance every active slot by one cycle of `gamma` drafts (default: the fixed gamma of the options);
        returns the tokens each slot committed. The cycle's times are left in last_draft_s and last_verify_s."""
        gamma = self.options.gamma if gamma is None else gamma
        if gamma == AUTO or gamma > self.options.max_gamma:
            raise ValueError(f"step needs a gamma from 0 to {self.options.max_gamma}, got {gamma!r}")
        if gamma and not all(s.has_view for s in self.slots if s):
            raise ValueError("a slot prefilled without a sparse view can only take dense steps (gamma 0)")
        active = {i: s for i, s in enumerate(self.slots) if s is not None and not s.done}
        if not active:
            return {}
        self.last_captured = False
        clock = StepClock(self.device)
        on_device = self._slot_tensors()
        if gamma:
            self._sync_sparse(on_device)
            drafts, draft_probs = self._draft(on_device, gamma)
        else:
            drafts, draft_probs = torch.empty(self.cache.batch, 0, dtype=torch.long, device=self.device), None
        clock.mark_drafted()
        logits = self._verify(on_device, drafts)
        accepted, next_token = self._accept(drafts, draft_probs, logits)
        if gamma:
            self.cache.copy_dense_to_sparse(on_device.dense_len, on_device.sparse_len, gamma + 1)
        # the one synchronization of a cycle: what was accepted decides what the host does next
        rows = torch.cat([accepted[:, None], next_token[:, None], drafts], 1).tolist()
        self.last_draft_s, self.last_verify_s = clock.split()
        committed = {}
        for i, state in active.items():
            a, token, drafted = rows[i][0], rows[i][1], rows[i][2:]
            committed[i] = self._append(state, drafted[:a] + [token])
            state.dense_len += a + 1
            if gamma:
                state.sparse_len += a + 1
            else:
                state.unsynced += 1
            state.last_token = token
            self._record(state.stats, gamma, a, self.last_draft_s, self.last_verify_s)
        return committed

    @staticmethod
    def _record(stats: DecodeStats, gamma: int, accepted: int, draft_s: float, verify_s: float) -> None:
        stats.gammas[gamma] = stats.gammas.get(gamma, 0) + 1
        if gamma == 0:
            stats.dense_steps += 1
            stats.dense_s += verify_s
            stats.dense_step_s = verify_s if stats.dense_step_s is None else min(stats.dense_step_s, verify_s)
            return
        stats.cycles += 1
        stats.drafted += gamma
        stats.accepted += accepted
        stats.draft_s += draft_s
        stats.verify_s += verify_s

    def release(self, slot: int) -> Slot:
        state, self.slots[slot] = self.slots[slot], None
        return state


# Caches of a decoder kept for reuse are rounded up to these sizes, so that prompts of similar lengths share it.
DENSE_ROUNDING, SPARSE_ROUNDING = 4096, 1024
KEPT_DECODER = "_stdcli_decoder"  # the model attribute that holds it


def kept_decoder(model) -> Decoder | None:
    """The decoder the model keeps for reuse, if any (its caches and CUDA graphs stay allocated)."""
    return getattr(model, KEPT_DECODER, None)


def release_decoder(model) -> None:
    """Free the decoder the model keeps for reuse (its caches and graphs), e.g. to give the GPU memory back."""
    kept = kept_decoder(model)
    if kept is not None:
        kept.close()
        setattr(model, KEPT_DECODER, None)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def reusable_decoder(
    model,
    options: DecodeOptions,
    *,
    batch: int = 1,
    max_len: int,
    sparse_cap: int,
    eos: Sequence[int] | None = None,
    visual_ids: Sequence[int] | None = None,
) -> Decoder:
    """A decoder for one run (use it as a context manager, as `Decoder`).

    On CUDA with graphs on, the model keeps its last decoder and hands it out again while its caches are large
    enough and its batch is the same: its captured CUDA graphs are replayed, not captured again, so only the first
    answer of a folder run pays for capturing. Its caches are rounded up for that (the decode kernel reads only
    each sequence's own length, so the room costs memory, not time). Elsewhere every run gets a new decoder sized
    exactly (there, attention does read the whole buffer).
    """
    device = model.get_input_embeddings().weight.device
    if not (options.cuda_graphs and device.type == "cuda"):
        return Decoder(model, options, batch=batch, max_len=max_len, sparse_cap=sparse_cap, eos=eos,
                       visual_ids=visual_ids)
    kept = kept_decoder(model)
    if kept is not None and kept.fits(options, batch, max_len, sparse_cap):
        kept.restart(options, eos, visual_ids)
        return kept
    release_decoder(model)  # its memory goes back before the new caches are allocated
    decoder = Decoder(model, options, batch=batch, max_len=_round_up(max_len, DENSE_ROUNDING),
                      sparse_cap=_round_up(sparse_cap, SPARSE_ROUNDING), eos=eos, visual_ids=visual_ids)
    setattr(model, KEPT_DECODER, decoder)
    return decoder


def policy_cycle(decoder: Decoder, policy: GammaPolicy) -> dict[int, list[int]]:
    """One cycle of the gamma the policy chooses, its costs and acceptance reported back to the policy (the mean
    over the active slots: one gamma serves them all). Returns the tokens each slot committed; {} if none is
    active."""
    active = [s for s in decoder.slots if s is not None and not s.done]
    if not active:
        return {}
    gamma, accepted = policy.choose(), sum(s.stats.accepted for s in active)
    committed = decoder.step(gamma)
    mean_accepted = round((sum(s.stats.accepted for s in active) - accepted) / len(active))
    costs = None if decoder.last_captured else (decoder.last_draft_s, decoder.last_verify_s)
    policy.observe(gamma, costs, mean_accepted)
    return committed


def prompt_layout(inputs: dict, visual_ids: Sequence[int]) -> tuple[int, int]:
    """(prompt tokens, visual tokens) of a single prompt."""
    ids = inputs["input_ids"][0]
    return ids.numel(), int(torch.isin(ids, torch.tensor(visual_ids, device=ids.device)).sum())


def cache_capacity(prompt_tokens: int, visual_tokens: int, options: DecodeOptions) -> tuple[int, int]:
    """(dense, sparse) cache lengths one prompt needs: generated tokens plus a cycle's scratch room."""
    room = options.max_new_tokens + options.max_gamma + 1
    kept = min(options.k, visual_tokens) + prompt_tokens - visual_tokens
    return prompt_tokens + room, kept + room


def generate(
    model,
    inputs: dict,
    options: DecodeOptions | None = None,
    *,
    eos: Sequence[int] | None = None,
    visual_ids: Sequence[int] | None = None,
    on_tokens: Callable[[list[int], DecodeStats], None] | None = None,
) -> Generation:
    """Decode one prompt (a batch-1 dict of model inputs from the processor) with StD, or densely if gamma = 0.

    Greedy output is token-for-token identical to `model.generate(**inputs, do_sample=False)`; sampled output
    has the same distribution as `model.generate(do_sample=True)` with the same temperature and top_p.
    `on_tokens(new_tokens, stats)` is called after every step, for streaming and live statistics.
    """
    options = options or DecodeOptions()
    visual_ids = tuple(visual_token_ids(model) if visual_ids is None else visual_ids)
    prompt_tokens, visual_tokens = prompt_layout(inputs, visual_ids)
    max_len, sparse_cap = cache_capacity(prompt_tokens, visual_tokens, options)
    decoder = reusable_decoder(model, options, max_len=max_len, sparse_cap=sparse_cap, eos=eos, visual_ids=visual_ids)
    with decoder:
        key = memory_key(model, prompt_tokens)
        policy = GammaPolicy.start(options.gamma, options.calibration_steps, key)
        first = decoder.prefill(0, inputs, sparse_view=policy.wants_sparse_view())
        state = decoder.slots[0]
        if on_tokens:
            on_tokens(first, state.stats)
        while not state.done:
            new = policy_cycle(decoder, policy)[0]
            if on_tokens:
                on_tokens(new, state.stats)
        decoder.release(0)
        policy.observe_answer(state.stats)
        policy.remember(key)
    return Generation(tokens=state.tokens, stats=state.stats)
