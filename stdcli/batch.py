"""Folder runs with several videos decoded together (`stdcli ask --batch-size B`).

At batch 1 a large model's weights dominate what each decode step reads; decoding B answers together reads them
once for all B, and StD's drafts read only K + text entries per answer. Videos are prepared (frames sampled,
prompt built) a window at a time; the window's answers are decoded in B engine slots, and a slot whose answer ends
(EOS or its token limit) takes the next video of the window at once (continuous batching), so the batch stays
full. Every answer is token for token the answer decoded alone (greedy; tested in float32). Records are handed
out as answers finish, so an interrupted run keeps what was done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .ask import STOP_THE_RUN, AskOptions, Prepared, answer_record, prepare
from .models import LoadedModel
from .policy import GammaPolicy, memory_key
from .records import error_record
from .std import Generation, cache_capacity, cache_dims, kept_decoder, policy_cycle, prompt_layout, reusable_decoder

WINDOW_PER_SLOT = 4  # videos prepared per batch slot: enough to refill slots, few enough to hold their frames
MEMORY_SHARE = 0.8  # of the free device memory the batch's caches may take


def cache_bytes(model, batch: int, max_len: int, sparse_cap: int) -> int:
    """Bytes of the engine cache: dense and sparse K and V for every layer, slot and KV head."""
    layers, kv_heads, head_dim, dtype = cache_dims(model)
    return 2 * layers * batch * kv_heads * head_dim * (max_len + sparse_cap) * dtype.itemsize


def fitting_batch(lm: LoadedModel, wanted: int, max_len: int, sparse_cap: int) -> int:
    """The largest batch up to `wanted` whose caches fit in MEMORY_SHARE of the free device memory (at least 1)."""
    from .bench import free_memory_bytes

    kept = kept_decoder(lm.model)  # a decoder kept for reuse gives its caches back when it is replaced
    held = kept.cache.nbytes() if kept is not None and kept.cache is not None else 0
    budget = MEMORY_SHARE * (free_memory_bytes(lm.device) + held)
    batch = wanted
    while batch > 1 and cache_bytes(lm.model, batch, max_len, sparse_cap) > budget:
        batch -= 1
    return batch


def windows(lm: LoadedModel, videos: Iterable[str], options: AskOptions, size: int,
            on_record: Callable[[dict[str, Any]], None]) -> Iterator[list[Prepared]]:
    """Prepared videos, `size` at a time; videos that cannot be read go straight to on_record."""
    window: list[Prepared] = []
    for video in videos:
        item = prepare(lm, video, options)
        if isinstance(item, dict):
            on_record(item)
            continue
        window.append(item)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def answer_videos(
    lm: LoadedModel,
    videos: Iterable[str],
    options: AskOptions,
    batch_size: int,
    on_record: Callable[[dict[str, Any]], None],
    warn: Callable[[str], None] = lambda message: None,
) -> None:
    """Answer every video with `batch_size` decoded together; each record goes to on_record as its answer ends."""
    for window in windows(lm, videos, options, WINDOW_PER_SLOT * batch_size, on_record):
        try:
            decode_window(lm, window, options, batch_size, on_record, warn)
        except STOP_THE_RUN:
            raise
        except Exception as error:  # noqa: BLE001 - e.g. out of memory: the window's unfinished videos fail
            for item in window:
                if item is not None:
                    on_record(error_record(item.video, options.question, lm.name, options.mode, error))


def decode_window(
    lm: LoadedModel,
    window: list[Prepared | None],
    options: AskOptions,
    batch_size: int,
    on_record: Callable[[dict[str, Any]], None],
    warn: Callable[[str], None],
) -> None:
    """Decode one window in continuous batching; entries of `window` become None as their records go out."""
    layouts = [prompt_layout(item.inputs, lm.visual_token_ids) for item in window]
    needs = [cache_capacity(*layout, options.decode) for layout in layouts]
    max_len, sparse_cap = max(n[0] for n in needs), max(n[1] for n in needs)
    batch = fitting_batch(lm, min(batch_size, len(window)), max_len, sparse_cap)
    if batch < min(batch_size, len(window)):
        warn(f"batch lowered from {min(batch_size, len(window))} to {batch}: the caches of more answers of "
             f"{max_len} tokens would not fit in memory")
    key = memory_key(lm.model, max(prompt for prompt, _ in layouts), batch)
    policy = GammaPolicy.start(options.decode.gamma, options.decode.calibration_steps, key)
    sparse_view = policy.wants_sparse_view()
    waiting = list(range(len(window)))
    owner: dict[int, int] = {}
    decoder = reusable_decoder(lm.model, options.decode, batch=batch, max_len=max_len, sparse_cap=sparse_cap,
                               eos=lm.eos_token_ids, visual_ids=lm.visual_token_ids)
    with decoder:
        while waiting or any(decoder.slots):
            for slot in range(batch):  # refill free slots
                if decoder.slots[slot] is None and waiting:
                    owner[slot] = waiting.pop(0)
                    decoder.prefill(slot, window[owner[slot]].inputs, sparse_view=sparse_view)
            policy_cycle(decoder, policy)
            for slot, state in enumerate(decoder.slots):
                if state is not None and state.done:
                    decoder.release(slot)
                    item, window[owner[slot]] = window[owner[slot]], None
                    policy.observe_answer(state.stats)
                    on_record(answer_record(lm, item, options, Generation(tokens=state.tokens, stats=state.stats)))
    policy.remember(key)
