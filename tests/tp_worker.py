"""One rank of the tensor-parallel tests (tests/test_tensor_parallel.py), started by torchrun:

    python -m torch.distributed.run --nproc-per-node N tests/tp_worker.py DEVICE OUT.json FOLDER...

Every rank loads each tiny checkpoint whole (the one-rank reference) and split over the ranks, decodes the same
prompts with both, profiles a split random model as `stdcli bench --random-init --tp N` does, and writes what it
found to OUT.json.RANK. On DEVICE cuda (NCCL, one GPU per rank) it also records every warning that a decoding step
could not be captured in a CUDA graph.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch

from stdcli.bench.profile import profile_random_init
from stdcli.engine import DecodeOptions, EngineConfig
from stdcli.engine.options import INT8_DRAFT, SPARSE_DRAFT
from stdcli.engine.session import Engine, Request
from stdcli.engine.tensor_parallel import start
from stdcli.model.loading import load_model
from stdcli.model.prompts import build_inputs
from tests.conftest import small_video

# (name, options, fused forward): dense steps, StD with a small K (drafts rejected as well as accepted), gamma
# auto, a quantized draft, sampling, and transformers' forward decoding the steps
CASES = (
    ("dense", DecodeOptions(max_new_tokens=12, gamma=0), True),
    ("std", DecodeOptions(max_new_tokens=12, gamma=3, k=3, draft=SPARSE_DRAFT), True),
    ("auto", DecodeOptions(max_new_tokens=12, k=3), True),
    ("int8", DecodeOptions(max_new_tokens=12, gamma=4, k=3, draft=INT8_DRAFT), True),
    ("sampled", DecodeOptions(max_new_tokens=12, gamma=3, k=3, temperature=1.0, seed=7, draft=SPARSE_DRAFT), True),
    ("unfused", DecodeOptions(max_new_tokens=12, gamma=3, k=3, draft=SPARSE_DRAFT), False),
)
PROMPTS = ((6, "What happens?", 1), (3, "Which colour moves first?", 2))


def decode(engine: Engine, prompts: list[dict], options: DecodeOptions, batch_size: int) -> list[dict]:
    done: dict[int, dict] = {}
    engine.run([Request(i, inputs) for i, inputs in enumerate(prompts)], options, batch_size=batch_size,
               on_done=lambda request, g: done.__setitem__(request.key, {
                   "tokens": g.tokens, "drafted": g.stats.drafted, "accepted": g.stats.accepted}))
    return [done[i] for i in range(len(prompts))]


def sparse_view(engine: Engine, inputs: dict, options: DecodeOptions) -> torch.Tensor:
    """The keys [layers, KV heads, entries, D] of the sparse view the prefill of `inputs` builds."""
    with engine.new_decoder(options, 1, 512, 256) as decoder:
        decoder.prefill(0, inputs)
        length = decoder.slots[0].sparse_len
        return decoder.storage.sparse_k[:, 0, :, :length].clone()


def main(device: str, out: str, folders: list[str]) -> None:
    parallel = start(int(os.environ["WORLD_SIZE"]), device)
    results: dict = {"rank": parallel.rank, "graph_warnings": []}
    warnings.simplefilter("always")
    for folder in folders:
        whole = load_model(folder, device=str(parallel.device), dtype="float32")
        split = load_model(folder, device=str(parallel.device), dtype="float32", tensor_parallel=parallel)
        prompts = [build_inputs(whole, small_video(num_frames=n, seed=seed), question)
                   for n, question, seed in PROMPTS]
        cases: dict = {}
        results[folder] = {"kv_heads": [lm.engine.adapter.cache.kv_heads for lm in (whole, split)], "cases": cases}
        for name, options, fused in CASES:
            if options.draft == INT8_DRAFT and whole.engine.fused() is None:
                continue  # a model without the fused forward drafts sparse only
            engines = [Engine(lm.engine.adapter, EngineConfig(fused=fused), parallel=lm.engine.parallel)
                       for lm in (whole, split)]
            with warnings.catch_warnings(record=True) as caught:
                cases[name] = [decode(engine, prompts, options, 1) for engine in engines]
            results["graph_warnings"] += [str(w.message) for w in caught if "CUDA graphs" in str(w.message)]
        cases["batch"] = [decode(lm.engine, prompts, CASES[1][1], 2) for lm in (whole, split)]
        # this rank's KV head of the sparse view: the one-rank view's, the same entries kept
        share = split.engine.adapter.cache.kv_heads
        mine = slice(parallel.rank * share, (parallel.rank + 1) * share)
        whole_view, split_view = (sparse_view(lm.engine, prompts[0], CASES[1][1]) for lm in (whole, split))
        results[folder]["view_difference"] = float((whole_view[:, mine] - split_view).abs().max())
    results["profile"] = profile_random_init("qwen2-vl", scale="tiny", contexts=[128], batches=[1], ks=[8],
                                            gammas=[1, 2], iters=1, bandwidth_bytes=1 << 20,
                                            tensor_parallel=parallel)
    with open(f"{out}.{parallel.rank}", "w") as file:
        json.dump(results, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
