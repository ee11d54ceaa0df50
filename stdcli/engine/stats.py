"""What decoding one sequence measured and did: counts and times, and the ratios shown to the user."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# An estimate of the speedup is given only over at least this much decoding: below it, one slow step (an
# allocation, a cold cache) and the timer's resolution move the ratio by more than drafting could.
MIN_ESTIMATE_DECODE_S = 0.2
DENSE_ONLY = "dense steps only: drafting does not pay here"


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
    first_token_s: float | None = None  # from the start of the request's work (Request.started) to its first token
    gammas: dict[int, int] = field(default_factory=dict)  # gamma -> cycles with it (0: dense steps)
    drafts: dict[str, int] = field(default_factory=dict)  # draft kind -> StD cycles it drafted

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
        """Decode time dense decoding would have taken (tokens x measured dense step) over the time taken; None when
        no draft ran (nothing to estimate) or the decoding was too short to time (MIN_ESTIMATE_DECODE_S)."""
        if self.dense_step_s is None or not self.cycles or self.decode_s < MIN_ESTIMATE_DECODE_S:
            return None
        return self.decoded_tokens * self.dense_step_s / self.decode_s

    def record_cycle(self, gamma: int, accepted: int, draft_s: float, verify_s: float, draft: str) -> None:
        """One cycle of `gamma` drafts of kind `draft` (0: a dense step, timed as verify_s) committed
        `accepted` + 1 tokens."""
        self.gammas[gamma] = self.gammas.get(gamma, 0) + 1
        if gamma == 0:
            self.dense_steps += 1
            self.dense_s += verify_s
            self.dense_step_s = verify_s if self.dense_step_s is None else min(self.dense_step_s, verify_s)
            return
        self.cycles += 1
        self.drafts[draft] = self.drafts.get(draft, 0) + 1
        self.drafted += gamma
        self.accepted += accepted
        self.draft_s += draft_s
        self.verify_s += verify_s


def gamma_counts(histograms: Iterable[Mapping[int, int] | Mapping[str, int]]) -> dict[str, int]:
    """Cycles per gamma summed over histograms (DecodeStats.gammas, or records' "gammas"), as records write them:
    {"gamma": cycles} in order of gamma, "0" counting plain dense steps."""
    total: Counter[int] = Counter()
    for histogram in histograms:
        for gamma, cycles in histogram.items():
            total[int(gamma)] += cycles
    return {str(gamma): cycles for gamma, cycles in sorted(total.items())}


def draft_counts(histograms: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """StD cycles per draft kind summed over histograms (DecodeStats.drafts, or records' "drafts")."""
    total: Counter[str] = Counter()
    for histogram in histograms:
        total.update(histogram)
    return dict(sorted(total.items()))
