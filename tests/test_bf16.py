"""Lossless in bfloat16 on a GPU: StD's tokens are bit for bit our dense path's, because every operation of a
decoding step computes a row the same way whatever rows are computed with it (kernels.py: the matmul and attention
kernels; the element-wise kernels work row by row). The hardest case: a 7B-shape model with random bf16 weights,
whose logits are full of near-ties, on synthetic prompts, at every gamma 1 to 8 and every draft kind, at batch 1
and 4. Needs a CUDA GPU with about 25 GB free; skipped elsewhere (float32 exactness is test_std.py's).
"""

from __future__ import annotations

import pytest
import torch

from stdcli.engine import kernels
from stdcli.engine.options import DRAFT_KINDS
from stdcli.engine.session import Engine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or not kernels.available(torch.device("cuda")),
                                reason="needs a CUDA GPU and Triton")


@pytest.fixture(scope="module")
def engine_7b():
    from stdcli.model.build import build_random_model, make_config

    model = build_random_model("qwen2-vl", make_config("qwen2-vl", "7b"), seed=0, dtype=torch.bfloat16,
                               device="cuda")
    yield Engine.of(model)
    del model
    torch.cuda.empty_cache()


@pytest.mark.parametrize("batch", [1, 4])
def test_std_is_our_dense_path_bit_for_bit_in_bfloat16(engine_7b, batch):
    from stdcli.bench.profile import _decode_point

    point = _decode_point(engine_7b, context=2048, batch=batch, k=256, gammas=range(1, 9), drafts=DRAFT_KINDS,
                          text_tokens=64, new_tokens=64, rounds=1, seed=batch)
    differing = {f"{c['gamma']}/{c['draft']}": f"{c['identical_to_dense']}/{c['total']}"
                 for c in point["configs"] if c["identical_to_dense"] != c["total"]}
    drafted = {f"{c['gamma']}/{c['draft']}": c["drafts"] for c in point["configs"] if c["gamma"] != 0}
    print(f"batch {batch}: {len(point['configs']) - 1} StD methods, differing {differing or 'none'}")
    assert not differing
    assert all(drafted[f"{g}/{kind}"].get(kind) for g in range(1, 9) for kind in DRAFT_KINDS), drafted
