"""The session loop: one or many sequences decoded in the slots of one Decoder, refilled as answers end.

Every way of decoding goes through `run_window`: one answer (`Engine.generate`), a folder run with several
videos decoded together (`Engine.run` with a batch size; continuous batching: a slot whose answer ends takes the
next request at once), and the benchmarks, which seed slots with prefilled states instead of prompts. Requests
are pulled from the caller's iterable only when a slot is free for them (a video is read when it can be decoded,
not a window ahead), and admitted while they fit the caches the window's first requests sized; one that does not
fit starts the next window. Each window gets one `GammaPolicy` (one gamma serves every slot of a cycle), started
from the cost memory and left to it afterwards.

`Engine` is what decoding one model needs across runs, held explicitly: its adapter, its fused weights, the
decoder it keeps for reuse on a GPU (whose CUDA graphs are then replayed, not captured again) and the cost memory
of gamma auto. Nothing is stored on the transformers model.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..model.adapter import ModelAdapter
from . import kernels
from .costs import CostMemory, cost_key, model_label
from .decoder import Decoder, SharedPrefix, Slot
from .device import device_label, free_memory_bytes
from .fused import FusedTextModel, fused_text_model, still_shared, unsupported_reason
from .linear import slot_bytes
from .options import AUTO, AUTO_DRAFTS, INT4_DRAFT, INT8_DRAFT, MAX_GAMMA, SPARSE_DRAFT, DecodeOptions, EngineConfig
from .policy import GammaPolicy
from .quant import bf16_bytes, quantized_text_model
from .stats import DecodeStats
from .tensor_parallel import SharedPolicy, TensorParallel

# Caches of a decoder kept for reuse are rounded up to these sizes, so that prompts of similar lengths share it.
DENSE_ROUNDING, SPARSE_ROUNDING = 4096, 1024
# Elsewhere a window's caches are rounded up to these, so that later requests a little longer than the first fit;
# attention reads the whole buffer there, so the room costs a little time.
CPU_DENSE_ROUNDING, CPU_SPARSE_ROUNDING = 512, 256
QUANT_BITS = {INT8_DRAFT: 8, INT4_DRAFT: 4}
# Auto tries a quantized draft only for a model whose projections weigh this much: reading 1 GiB takes about
# 0.25 ms on an H100 or H200, what a step's launches and small kernels cost; a smaller model's step is bound by
# those, so a quantized draft saves nothing, and its first cycle pays for making the copy and compiling its
# kernels (the built-in model, 16 MB in bf16: one answer of a few tokens took 0.25 s longer).
AUTO_QUANT_MIN_BYTES = 1 << 30
WINDOW_PER_SLOT = 4  # requests one window admits per batch slot before the policy starts afresh
MEMORY_SHARE = 0.8  # of the free device memory the batch's caches may take


@dataclass
class Request:
    """One sequence to decode: a prompt (`inputs`, a batch-1 dict of model inputs from the processor), or a state
    already prefilled in the decoder's cache (`prefilled`, for profiling). `key` is the caller's own.

    `prefix`: the first tokens of the prompt, shared with other requests (several questions about one video): they
    are prefilled once, by the first of those requests, and the others prefill only the rest of their prompt (the
    answer is the same). `started`: when the caller began work on this request (time.perf_counter()), the origin of
    its stats.first_token_s; None: its prefill."""

    key: Any
    inputs: dict[str, torch.Tensor] | None = None
    max_new_tokens: int | None = None  # None: the options'
    prefilled: Slot | None = None
    prefix: SharedPrefix | None = None
    started: float | None = None


@dataclass
class Generation:
    tokens: list[int]
    stats: DecodeStats
    finish_reason: str  # "stop" (an end token) or "length" (the token limit)


TokensCallback = Callable[[Request, list[int], DecodeStats], None]
DoneCallback = Callable[[Request, Generation], None]


def cache_capacity(prompt_tokens: int, visual_tokens: int, options: DecodeOptions) -> tuple[int, int]:
    """(dense, sparse) cache lengths one prompt needs: generated tokens plus a cycle's scratch room. The room is
    that of the longest draft whatever gamma is asked for: dense decoding and StD then read caches of one length,
    which the decode kernel splits alike, so that their results agree bit for bit in 16-bit too."""
    room = options.max_new_tokens + MAX_GAMMA + 1
    kept = min(options.k, visual_tokens) + prompt_tokens - visual_tokens
    return prompt_tokens + room, kept + room


def policy_cycle(decoder: Decoder, policy: GammaPolicy) -> dict[int, list[int]]:
    """One cycle of the gamma the policy chooses, its costs and acceptance reported back to the policy (the mean
    over the active slots: one gamma serves them all). Returns the tokens each slot committed; {} if none is
    active."""
    active = list(decoder.active().values())
    if not active:
        return {}
    cycle, accepted = policy.choose(), sum(s.stats.accepted for s in active)
    committed = decoder.step(cycle.gamma, cycle.draft)
    mean_accepted = round((sum(s.stats.accepted for s in active) - accepted) / len(active))
    costs = None if decoder.last_captured else (decoder.last_draft_s, decoder.last_verify_s)
    policy.observe(cycle, costs, mean_accepted)
    return committed


def finish_reason(state: Slot, eos: frozenset[int]) -> str:
    return "stop" if state.tokens and state.tokens[-1] in eos else "length"


def run_window(decoder: Decoder, policy: GammaPolicy, requests: Sequence[Request],
               on_tokens: TokensCallback | None = None, on_done: DoneCallback | None = None,
               refill: Callable[[], Request | None] | None = None) -> None:
    """THE decoding loop: fill free slots with the waiting requests (prefill, or seed a prefilled state), then,
    once those are placed, with what `refill` gives (None: no more for this window); run the policy's cycle over
    all active slots, hand out each slot's new tokens, and release finished slots (then refilled) until every
    request is done. Whether the window's prefills build a sparse view is decided once, by the policy, for all of
    them."""
    sparse_view = policy.wants_sparse_view()
    waiting = deque(requests)
    owner: dict[int, Request] = {}
    while True:
        for slot in range(len(decoder.slots)):
            if decoder.slots[slot] is not None:
                continue
            if not waiting and refill is not None:
                if (more := refill()) is None:
                    refill = None
                else:
                    waiting.append(more)
            if waiting:
                request = owner[slot] = waiting.popleft()
                if request.prefilled is not None:
                    decoder.seed(slot, request.prefilled, sparse_view)
                    continue
                assert request.inputs is not None
                began = time.perf_counter() if request.started is None else request.started
                first = decoder.prefill(slot, request.inputs, request.max_new_tokens, sparse_view, request.prefix)
                state = decoder.slots[slot]
                if state is not None:
                    state.stats.first_token_s = time.perf_counter() - began
                    if on_tokens:
                        on_tokens(request, first, state.stats)
        if not any(decoder.slots):
            return
        for slot, tokens in policy_cycle(decoder, policy).items():
            state = decoder.slots[slot]
            if on_tokens and state is not None:
                on_tokens(owner[slot], tokens, state.stats)
        for slot, maybe in enumerate(decoder.slots):
            if maybe is not None and maybe.done:
                state = decoder.release(slot)
                policy.observe_answer(state.stats)
                if on_done:
                    on_done(owner.pop(slot), Generation(state.tokens, state.stats, finish_reason(state, decoder.eos)))


class _Pending:
    """The caller's requests, pulled one at a time and only when wanted; one that did not fit a window is held
    for the next."""

    def __init__(self, requests: Iterator[Request]):
        self.requests = requests
        self.held: Request | None = None

    def next(self) -> Request | None:
        request, self.held = self.held, None
        return request if request is not None else next(self.requests, None)

    def take(self, count: int) -> list[Request]:
        taken: list[Request] = []
        while len(taken) < count and (request := self.next()) is not None:
            taken.append(request)
        return taken

    def take_if(self, admit: Callable[[Request], bool]) -> Request | None:
        request = self.next()
        if request is not None and not admit(request):
            self.held, request = request, None
        return request


class CallbackError(Exception):
    """An error raised by a caller's callback: it is the caller's, and passes through the engine untouched."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _guarded(callback: Callable[..., None] | None) -> Callable[..., None] | None:
    if callback is None:
        return None

    def call(*args: Any) -> None:
        try:
            callback(*args)
        except Exception as error:
            raise CallbackError(error) from error

    return call


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


class Engine:
    """Decoding for one model: see the module docstring. `memory` None: a fresh in-memory cost memory. `parallel`:
    this rank's group when the model is split by tensor parallelism (tensor_parallel.py; the adapter's tp_size is
    the group's size)."""

    def __init__(self, adapter: ModelAdapter, config: EngineConfig | None = None, memory: CostMemory | None = None,
                 parallel: TensorParallel | None = None):
        self.adapter = adapter
        self.config = config or EngineConfig()
        self.memory = memory if memory is not None else CostMemory()
        self.parallel = parallel
        self._fused: FusedTextModel | None = None
        self._quantized: dict[str, FusedTextModel] = {}  # draft kind -> the fused model's quantized copy
        self._kept: Decoder | None = None

    @classmethod
    def of(cls, model: Any, config: EngineConfig | None = None, memory: CostMemory | None = None,
           tokenizer: Any = None, parallel: TensorParallel | None = None) -> Engine:
        tp_size = parallel.size if parallel is not None else 1
        return cls(ModelAdapter.of(model, tokenizer, tp_size), config, memory, parallel)

    @property
    def model(self) -> Any:
        return self.adapter.model

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    def fused(self) -> FusedTextModel | None:
        """The model's fused decoding forward (built once; again if the model was moved or cast since), or None
        where it does not apply (then transformers' forward decodes)."""
        if not self.config.fused:
            return None
        if self._fused is None or not still_shared(self.model, self._fused):
            reduce = self.parallel.ordered_sum if self.parallel is not None else None
            self._fused, self._quantized = fused_text_model(self.model, reduce), {}
        return self._fused

    def draft_kinds(self, options: DecodeOptions) -> tuple[str, ...]:
        """What the policy chooses among: the kind asked for, or for auto the kinds that can pay here (quantized
        drafts need the fused forward, the GPU kernels and a model large enough: AUTO_QUANT_MIN_BYTES)."""
        fused = self.fused()
        if options.draft != AUTO:
            if options.draft != SPARSE_DRAFT and fused is None:
                raise ValueError(f"{options.draft} drafts need the fused decoding forward, which this model's "
                                 f"architecture does not have ({unsupported_reason(self.model)})")
            return (options.draft,)
        worth_it = fused is not None and kernels.available(self.device) and bf16_bytes(fused) >= AUTO_QUANT_MIN_BYTES
        return AUTO_DRAFTS if worth_it else (SPARSE_DRAFT,)

    def draft_models(self, kinds: Sequence[str]) -> dict[str, FusedTextModel]:
        """The weights each draft kind reads, quantized copies made on first use (quant.py says what they add to
        memory); empty where the model decodes through transformers' forward (sparse drafts only)."""
        fused = self.fused()
        if fused is None:
            return {}
        models = {}
        for kind in kinds:
            if kind == SPARSE_DRAFT:
                models[kind] = fused
                continue
            if kind not in self._quantized:
                self._quantized[kind] = quantized_text_model(fused, QUANT_BITS[kind])
            models[kind] = self._quantized[kind]
        return models

    def cost_key(self, prompt_tokens: int, batch: int = 1) -> str:
        name = model_label(self.adapter.name, id(self.model))
        if self.parallel is not None:
            name += f"|tp={self.parallel.size}"
        dtype = str(self.adapter.dtype).removeprefix("torch.")
        return cost_key(name, device_label(self.device), dtype, batch, prompt_tokens)

    def start_policy(self, options: DecodeOptions, key: str) -> GammaPolicy:
        policy = GammaPolicy.start(options.gamma, options.calibration_steps, self.memory.get(key),
                                   self.draft_kinds(options))
        return policy if self.parallel is None else SharedPolicy.of(policy, self.parallel)

    def finish_policy(self, key: str, policy: GammaPolicy) -> None:
        self.memory.remember(key, policy)
        self.memory.save_if_due()

    # ---- decoders --------------------------------------------------------------------------------
    def new_decoder(self, options: DecodeOptions, batch: int, max_len: int, sparse_cap: int,
                    eos: Sequence[int] | None = None, kinds: Sequence[str] | None = None) -> Decoder:
        """A decoder of its own, not kept (use it as a context manager), with the draft kinds `options` asks for (or
        `kinds`)."""
        return Decoder(self.adapter, options, batch=batch, max_len=max_len, sparse_cap=sparse_cap,
                       config=self.config, fused=self.fused(), eos=eos,
                       drafts=self.draft_models(kinds or self.draft_kinds(options)))

    def decoder(self, options: DecodeOptions, batch: int, max_len: int, sparse_cap: int,
                eos: Sequence[int] | None = None) -> Decoder:
        """A decoder for one window (cache lengths as `rounded` gives them). On CUDA with graphs on, the engine keeps
        its last decoder and hands it out again while its caches are large enough and its batch is the same: its
        captured CUDA graphs are replayed, so only the first answer of a folder run pays for capturing (the decode
        kernel reads only each sequence's own length, so spare room costs memory, not time). Elsewhere every
        window gets a new decoder (there, attention does read the whole buffer)."""
        if not (self.config.cuda_graphs and self.device.type == "cuda"):
            return self.new_decoder(options, batch, max_len, sparse_cap, eos)
        kept = self._kept
        if kept is not None and kept.fits(options, batch, max_len, sparse_cap) and kept.fused is self.fused():
            kept.restart(options, eos, self.draft_models(self.draft_kinds(options)))
            return kept
        self.release()  # its memory goes back before the new caches are allocated
        self._kept = self.new_decoder(options, batch, max_len, sparse_cap, eos)
        return self._kept

    @property
    def kept_decoder(self) -> Decoder | None:
        return self._kept

    def release(self) -> None:
        """Free the decoder kept for reuse (its caches and graphs), e.g. to give the GPU memory back."""
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    def cache_bytes(self, batch: int, max_len: int, sparse_cap: int) -> int:
        """Bytes of the engine cache: dense and sparse K and V for every attention layer, slot and KV head, and a
        hybrid's linear-attention states."""
        dims = self.adapter.cache
        kv = 2 * dims.layers * batch * dims.kv_heads * dims.head_dim * (max_len + sparse_cap) * dims.dtype.itemsize
        return kv + (batch * slot_bytes(dims.linear) if dims.linear is not None else 0)

    def fitting_batch(self, wanted: int, max_len: int, sparse_cap: int) -> int:
        """The largest batch up to `wanted` whose caches fit in MEMORY_SHARE of the free device memory (at least
        1); the kept decoder's caches count as free, since they are given back when it is replaced."""
        if wanted <= 1:
            return 1
        held = self._kept.cache.nbytes() if self._kept is not None and self._kept.cache is not None else 0
        budget = MEMORY_SHARE * (free_memory_bytes(self.device) + held)
        batch = wanted
        while batch > 1 and self.cache_bytes(batch, max_len, sparse_cap) > budget:
            batch -= 1
        return batch if self.parallel is None else self.parallel.agreed_min(batch)

    # ---- running requests -----------------------------------------------------------------------
    def run(
        self,
        requests: Iterable[Request],
        options: DecodeOptions,
        *,
        batch_size: int = 1,
        eos: Sequence[int] | None = None,
        on_tokens: TokensCallback | None = None,
        on_done: DoneCallback | None = None,
        on_error: Callable[[Request, Exception], None] | None = None,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        """Decode every request, `batch_size` at a time. Requests are taken from the iterable only as slots free up
        for them; a window admits up to WINDOW_PER_SLOT * batch_size of them (one at batch 1). `on_tokens(request,
        tokens, stats)` after every step, `on_done(request, generation)` as each answer ends. An error while
        decoding a window (out of memory, say) goes to `on_error` for each of its unfinished requests, and the next
        window goes on; without `on_error` it is raised. Errors of the callbacks themselves are raised as they
        are."""
        pending = _Pending(iter(requests))
        tokens_cb, done_cb = _guarded(on_tokens), _guarded(on_done)
        window: list[Request] = []  # the current window's requests, as they are admitted
        answered: set[int] = set()  # ids of those whose answer ended

        def finished(request: Request, generation: Generation) -> None:
            answered.add(id(request))
            if done_cb:
                done_cb(request, generation)

        while first := pending.take(batch_size):
            window[:], answered = list(first), set()
            try:
                self._run_window(window, pending, options, batch_size, eos, tokens_cb, finished, warn)
            except CallbackError as error:
                raise error.error from None
            except Exception as error:
                if on_error is None:
                    raise
                for request in window:
                    if id(request) not in answered:
                        on_error(request, error)

    def _run_window(self, window: list[Request], pending: _Pending, options: DecodeOptions, batch_size: int,
                    eos: Sequence[int] | None, on_tokens: TokensCallback | None, on_done: DoneCallback,
                    warn: Callable[[str], None]) -> None:
        """One window: caches sized for its first requests (with room to spare), then refilled from `pending`
        with what fits; `window` collects every request it admits."""
        layouts = [self.adapter.layout(r.inputs) for r in window if r.inputs is not None]
        needs = [cache_capacity(*layout, options) for layout in layouts]
        max_len, sparse_cap = self.rounded(max(n[0] for n in needs), max(n[1] for n in needs))
        wanted = min(batch_size, len(window))
        batch = self.fitting_batch(wanted, max_len, sparse_cap)
        if batch < wanted:
            warn(f"batch lowered from {wanted} to {batch}: the caches of more answers of {max_len} tokens would "
                 "not fit in memory")
        key = self.cost_key(max(prompt for prompt, _ in layouts), batch)
        policy = self.start_policy(options, key)
        limit = 1 if batch_size == 1 else WINDOW_PER_SLOT * batch_size

        def fits(request: Request) -> bool:
            assert request.inputs is not None
            dense, sparse = cache_capacity(*self.adapter.layout(request.inputs), options)
            return dense <= max_len and sparse <= sparse_cap

        def refill() -> Request | None:
            if len(window) >= limit or (request := pending.take_if(fits)) is None:
                return None
            window.append(request)
            return request

        with self.decoder(options, batch, max_len, sparse_cap, eos) as decoder:
            run_window(decoder, policy, window, on_tokens, on_done, refill)
        self.finish_policy(key, policy)

    def rounded(self, max_len: int, sparse_cap: int) -> tuple[int, int]:
        """Cache lengths with room for later requests of similar length (and, on CUDA, for reuse)."""
        if self.config.cuda_graphs and self.device.type == "cuda":
            return _round_up(max_len, DENSE_ROUNDING), _round_up(sparse_cap, SPARSE_ROUNDING)
        return _round_up(max_len, CPU_DENSE_ROUNDING), _round_up(sparse_cap, CPU_SPARSE_ROUNDING)

    def generate(self, inputs: dict[str, torch.Tensor], options: DecodeOptions | None = None, *,
                 eos: Sequence[int] | None = None, on_tokens: Callable[[list[int], DecodeStats], None] | None = None,
                 started: float | None = None) -> Generation:
        """Decode one prompt (a batch-1 dict of model inputs from the processor) with StD, or densely if gamma = 0.

        Greedy output is token-for-token identical to `model.generate(**inputs, do_sample=False)`; sampled output
        has the same distribution as `model.generate(do_sample=True)` with the same temperature and top_p.
        `on_tokens(new_tokens, stats)` is called after every step, for streaming and live statistics. `started`:
        as Request.started.
        """
        results: list[Generation] = []
        stream = None if on_tokens is None else (lambda request, tokens, stats: on_tokens(tokens, stats))
        self.run([Request(0, inputs, started=started)], options or DecodeOptions(), eos=eos, on_tokens=stream,
                 on_done=lambda request, generation: results.append(generation))
        return results[0]


def generate(model: Any, inputs: dict[str, torch.Tensor], options: DecodeOptions | None = None, *,
             config: EngineConfig | None = None, eos: Sequence[int] | None = None,
             on_tokens: Callable[[list[int], DecodeStats], None] | None = None) -> Generation:
    """Engine.generate on a new engine of `model` (no decoder kept, no cost memory carried over): for one-off use
    from Python. Keep an `Engine` to decode many prompts of one model."""
    return Engine.of(model, config).generate(inputs, options, eos=eos, on_tokens=on_tokens)
