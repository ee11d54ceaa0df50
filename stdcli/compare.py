"""`--compare`: StD against our dense path on the same inputs, measured so that the ratio means something.

The answer's own StD run and a first dense run are warm-up (the dense one also says whether the answers are
identical); then StD and dense decode the same inputs in turn, MIN_RUNS times at least and until each has
MIN_DECODE_S of decoding (MAX_RUNS at most). The speedup is the median of the pairs' ratios, shown only when the
range of the ratios lies wholly above or below 1; otherwise the note says there is no measurable difference.
Where StD took dense steps only, there is nothing to compare and the note says so.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

from .engine.options import DecodeOptions
from .engine.session import Generation
from .engine.stats import DENSE_ONLY, DecodeStats
from .model.loading import LoadedModel

MIN_RUNS, MAX_RUNS = 3, 10
MIN_DECODE_S = 0.5


def _per_token(stats: DecodeStats) -> float | None:
    return stats.decode_s / stats.decoded_tokens if stats.decoded_tokens and stats.decode_s > 0 else None


def _total(stats: DecodeStats) -> float:
    return stats.prefill_s + stats.decode_s


def _measured(ratios: list[float]) -> float | None:
    """The median ratio, if every ratio lies on the same side of 1."""
    if min(ratios) <= 1.0 <= max(ratios):
        return None
    return round(statistics.median(ratios), 4)


def compare_with_dense(lm: LoadedModel, inputs: dict[str, Any], options: DecodeOptions, std: Generation,
                       decode_answer: Any) -> dict[str, Any]:
    """The record's `compare`: whether dense decoding gives the same answer, and the measured speedup."""
    decode = lm.engine.generate
    dense_options = replace(options, gamma=0)
    dense = decode(inputs, dense_options, eos=lm.eos_token_ids)
    result: dict[str, Any] = {
        "identical": dense.tokens == std.tokens,
        "dense_answer": decode_answer(lm.tokenizer, dense.tokens),
        "dense_tokens_per_s": None if dense.stats.tokens_per_s is None else round(dense.stats.tokens_per_s, 4),
        "decode_speedup": None,
        "total_speedup": None,
        "decode_speedup_range": None,
        "runs": 0,
        "note": None,
    }
    if not std.stats.cycles:
        result["note"] = DENSE_ONLY
        return result
    if _per_token(std.stats) is None:
        result["note"] = "the answer is too short to time"
        return result
    decode_ratios: list[float] = []
    total_ratios: list[float] = []
    timed = 0.0
    while len(decode_ratios) < MAX_RUNS and (len(decode_ratios) < MIN_RUNS or timed < MIN_DECODE_S):
        again, baseline = decode(inputs, options, eos=lm.eos_token_ids), decode(inputs, dense_options,
                                                                             eos=lm.eos_token_ids)
        std_token, dense_token = _per_token(again.stats), _per_token(baseline.stats)
        if std_token is None or dense_token is None:
            break
        decode_ratios.append(dense_token / std_token)
        total_ratios.append(_total(baseline.stats) / _total(again.stats))
        timed += min(again.stats.decode_s, baseline.stats.decode_s)
    result["runs"] = len(decode_ratios)
    if not decode_ratios:
        result["note"] = "the answer is too short to time"
        return result
    low, high = round(min(decode_ratios), 4), round(max(decode_ratios), 4)
    result.update(decode_speedup=_measured(decode_ratios), total_speedup=_measured(total_ratios),
                  decode_speedup_range=[low, high])
    if result["decode_speedup"] is None:
        result["note"] = f"no measurable difference: {low:.2f}-{high:.2f}x over {len(decode_ratios)} runs"
    return result
