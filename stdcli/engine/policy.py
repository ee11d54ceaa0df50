"""Choosing gamma before every cycle: how many tokens to draft, or 0 for a plain dense step.

A cycle of g drafts costs g draft steps plus one verify of g+1 tokens and commits E(g) = 1 + a1 + a1*a2 + ...
+ a1*...*ag tokens on average, where aj is the probability that draft j is accepted once drafts 1..j-1 were
(tracked per position: acceptance falls along a draft, so one average rate would overrate long drafts).
Drafting pays only when a draft step is cheap next to a dense step AND drafts are accepted: on a GPU at batch 1 a
7B model's draft step costs nearly a dense step (the weights dominate what a step reads), on a CPU a small model's
verify of g+1 tokens can cost several dense steps. So `--gamma auto` measures instead of assuming: `GammaPolicy`
keeps moving averages of the engine's own timings of the three steps and the acceptance rates, and picks the gamma
with the most expected tokens per second, 0 when no gamma beats a dense step. While dense wins it still tries one
cycle now and then, at doubling intervals, since acceptance and costs change as the context grows. What a sequence
measured can be remembered (costs.py: per model, device, dtype, batch and context size), so that the next video,
and the next run, start from it instead of trying a cycle first: short answers would otherwise pay for that try.
The same holds for the kind of draft (sparse view with the model's own weights, or its int8 / int4 copy):
each kind's step cost and acceptance are tracked, tried once each, and the cheapest expected cycle wins. The
policy is a plain object: it holds no global state and touches no file. The choice never changes the tokens:
every gamma, 0 included, commits exactly what dense decoding would (greedy) or the same distribution (sampling).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .options import AUTO, MAX_AUTO_GAMMA, SPARSE_DRAFT
from .stats import DecodeStats

FIRST_TRY_GAMMA = 4  # the first StD cycle, which measures the draft and verify costs
PRIOR_ACCEPTANCE = 0.7  # before any draft is judged; weighs as PRIOR_DRAFTS drafts at each draft position
PRIOR_DRAFTS = 2.0
ACCEPTANCE_DECAY = 0.97  # per cycle: recent cycles count more as the answer moves on
COST_SMOOTHING = 0.25  # weight of a new timing in the moving averages
MARGIN = 1.02  # drafting must beat dense by 2%: timing noise must not flip a tie to the slower side
VIEW_EVERY = 8  # while drafting does not pay, one answer in this many still builds a sparse view, to probe
BEST_EVERY = 16  # dense steps between two evaluations of the best gamma (cycles re-evaluate at once)
FIRST_PROBE_INTERVAL = 16  # dense steps before trying a cycle again, doubled after every try that loses
LAST_PROBE_INTERVAL = 256


def expected_tokens(acceptance: float, gamma: int) -> float:
    """Tokens a cycle commits on average at per-token acceptance a: (1 - a^(gamma+1)) / (1 - a)."""
    if acceptance >= 1.0:
        return gamma + 1.0
    return (1 - acceptance ** (gamma + 1)) / (1 - acceptance)


# What a finished sequence leaves for the next: costs, acceptance, probing and view state.
SAVED_FIELDS = ("dense_s", "draft_s", "verify_s", "judged", "accepted", "probe_interval", "views_skipped",
                "answer_tokens", "view_s")


def _prior(length: int, value: float) -> list[float]:
    return [value] * length


def _smooth(average: float | None, sample: float) -> float:
    return sample if average is None else (1 - COST_SMOOTHING) * average + COST_SMOOTHING * sample


@dataclass(frozen=True)
class Cycle:
    """What the next cycle does: `gamma` drafts of kind `draft` (gamma 0: a plain dense step)."""

    draft: str
    gamma: int


@dataclass
class GammaPolicy:
    """The draft kind and gamma of each cycle. `gamma` is a fixed count (after `calibration_steps` dense steps,
    whose cost is the baseline of the speedup estimate) or AUTO; `drafts` the draft kinds to choose among (one:
    that kind). `observe` is told what each cycle cost and accepted. Draft costs and acceptance are kept per kind;
    a verify costs the same whichever kind drafted."""

    gamma: int | str
    calibration_steps: int = 2
    drafts: tuple[str, ...] = (SPARSE_DRAFT,)
    max_gamma: int = MAX_AUTO_GAMMA
    dense_s: float | None = None
    draft_s: dict[str, float] = field(default_factory=dict)  # kind -> one draft step
    verify_s: dict[int, float] = field(default_factory=dict)  # gamma -> one verify of gamma + 1 tokens
    # per kind and draft position j (0-based): decayed counts of drafts judged there and of those accepted
    judged: dict[str, list[float]] = field(default_factory=dict)
    accepted: dict[str, list[float]] = field(default_factory=dict)
    dense_steps: int = 0
    since_cycle: int = 0  # dense steps since the last StD cycle
    probe_interval: int = FIRST_PROBE_INTERVAL
    views_skipped: int = 0  # answers in a row prefilled without a sparse view
    answer_tokens: float | None = None  # moving average of tokens per answer
    view_s: float | None = None  # moving average of what ranking and building one answer's sparse view costs
    can_draft: bool = True  # False once this answer was prefilled without one
    # best() of the last cycle's costs, reused by dense steps (a few us per step, which a small model notices)
    best_memo: tuple[Cycle, float] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # every kind tracks as many positions as the longest draft (a fixed gamma may draft beyond auto's range),
        # starting from the prior
        positions = max(MAX_AUTO_GAMMA, self.gamma if isinstance(self.gamma, int) else 0)
        for kind in self.drafts:
            judged, accepted = self.judged.setdefault(kind, []), self.accepted.setdefault(kind, [])
            judged += _prior(positions - len(judged), PRIOR_DRAFTS)
            accepted += _prior(positions - len(accepted), PRIOR_ACCEPTANCE * PRIOR_DRAFTS)

    @classmethod
    def start(cls, gamma: int | str, calibration_steps: int, known: GammaPolicy | None = None,
              drafts: tuple[str, ...] = (SPARSE_DRAFT,)) -> GammaPolicy:
        """A policy for a new sequence (or batch window) choosing among `drafts`: for auto, continuing from
        `known`, what an earlier one measured (CostMemory.get), if any; a fixed gamma ignores it."""
        if gamma != AUTO or known is None:
            return cls(gamma, calibration_steps, drafts)
        return known.copy(dense_steps=0, since_cycle=0, calibration_steps=calibration_steps, drafts=drafts)

    @property
    def worth_remembering(self) -> bool:
        """Whether this policy measured costs another sequence can start from."""
        return self.gamma == AUTO and self.dense_s is not None

    def saved_state(self) -> dict[str, Any]:
        """What another sequence, or another process, starts from (CostMemory writes it as JSON)."""
        return {name: getattr(self, name) for name in SAVED_FIELDS}

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> GammaPolicy:
        state = {name: values[name] for name in SAVED_FIELDS}
        state["verify_s"] = {int(g): float(s) for g, s in state["verify_s"].items()}
        state["draft_s"] = {str(kind): float(s) for kind, s in state["draft_s"].items()}
        return cls(AUTO, drafts=tuple(state["judged"]), **state)

    def copy(self, **changes: Any) -> GammaPolicy:
        copied = {"verify_s": dict(self.verify_s), "draft_s": dict(self.draft_s),
                  "judged": {k: list(v) for k, v in self.judged.items()},
                  "accepted": {k: list(v) for k, v in self.accepted.items()}}
        policy = replace(self, **{**copied, **changes})
        return policy

    def expected_tokens(self, gamma: int, draft: str | None = None) -> float:
        """Tokens a cycle of `gamma` drafts of kind `draft` (default: the first) commits on average, by the
        per-position acceptance rates."""
        kind = self.drafts[0] if draft is None else draft
        judged, accepted = self.judged[kind], self.accepted[kind]
        total, reach = 1.0, 1.0
        for j in range(gamma):
            reach *= accepted[j] / judged[j]
            total += reach
        return total

    def wants_sparse_view(self) -> bool:
        """Whether this answer's prefill should rank visual tokens and build the sparse view. Under auto, only when
        the remembered costs say drafting saves more over an answer of the usual length than the view costs,
        and one answer in VIEW_EVERY anyway, whose probes keep the costs current."""
        wanted = self.gamma != AUTO or self.untried() is not None or self.dense_s is None
        if not wanted:
            dense = self.measured_dense()
            rate = self.best()[1]
            saved = max(dense - 1 / rate, 0.0) * (self.answer_tokens or 0.0)  # seconds, one answer
            wanted = rate > MARGIN / dense and saved > (self.view_s or 0.0)
            wanted = wanted or self.views_skipped + 1 >= VIEW_EVERY
        self.views_skipped = 0 if wanted else self.views_skipped + 1
        self.can_draft = wanted
        return wanted

    def observe_answer(self, stats: DecodeStats) -> None:
        """An answer ended: its length, and what its sparse view cost (if it had one)."""
        self.answer_tokens = _smooth(self.answer_tokens, float(stats.new_tokens))
        if self.can_draft and stats.view_s > 0:
            self.view_s = _smooth(self.view_s, stats.view_s)

    def untried(self) -> str | None:
        """The first draft kind whose step cost is not measured yet."""
        return next((kind for kind in self.drafts if kind not in self.draft_s), None)

    def choose(self) -> Cycle:
        dense_step = Cycle(self.drafts[0], 0)
        if not self.can_draft:
            return dense_step
        if self.gamma != AUTO:
            if self.gamma and self.dense_steps < self.calibration_steps:
                return dense_step
            untried = self.untried()
            if untried is not None or len(self.drafts) == 1:
                return Cycle(untried or self.drafts[0], int(self.gamma))
            return Cycle(max(self.drafts, key=lambda kind: self.rate(kind, int(self.gamma))), int(self.gamma))
        if self.dense_steps < max(self.calibration_steps, 1) or self.dense_s is None:
            return dense_step
        untried = self.untried()
        if untried is not None:  # one cycle measures what this kind's draft steps and verifies cost
            return Cycle(untried, min(FIRST_TRY_GAMMA, self.max_gamma))
        if self.best_memo is None or self.since_cycle % BEST_EVERY == 0:
            self.best_memo = self.best()
        best, rate = self.best_memo
        if rate > MARGIN / self.dense_s or self.since_cycle >= self.probe_interval:  # a win, or a probe
            return best
        return dense_step

    def measured_dense(self) -> float:
        """Seconds of a dense step, which the cost model needs measured before it can compare anything with it."""
        if self.dense_s is None:
            raise ValueError("the cost model needs a measured dense step")
        return self.dense_s

    def rate(self, draft: str, gamma: int) -> float:
        """Expected tokens per second of cycles of `gamma` drafts of kind `draft` (its costs measured)."""
        return self.expected_tokens(gamma, draft) / (gamma * self.draft_s[draft] + self.verify_cost(gamma))

    def best(self) -> tuple[Cycle, float]:
        """The best cycle (draft kind, gamma >= 1) by the cost model, among the kinds measured, and its expected
        tokens per second."""
        rates = {Cycle(kind, g): self.rate(kind, g)
                 for kind in self.drafts if kind in self.draft_s for g in range(1, self.max_gamma + 1)}
        if not rates:
            raise ValueError("the cost model needs a measured draft step")
        best = max(rates, key=lambda cycle: rates[cycle])
        return best, rates[best]

    def verify_cost(self, gamma: int) -> float:
        """Measured, or interpolated linearly in the width between a dense step (width 1) and the nearest
        measured verify."""
        if gamma in self.verify_s:
            return self.verify_s[gamma]
        dense = self.measured_dense()
        nearest = min(self.verify_s, key=lambda g: (abs(g - gamma), g))
        per_token = max(self.verify_s[nearest] - dense, 0.0) / nearest
        return dense + per_token * gamma

    def observe(self, cycle: Cycle, costs: tuple[float, float] | None, accepted: int) -> None:
        """One cycle happened: its measured (draft_s, verify_s), verify_s being the dense step's time when
        gamma = 0; None when the cycle's time is not a step's cost (it captured a CUDA graph)."""
        gamma, kind = cycle.gamma, cycle.draft
        if gamma == 0:
            self.dense_steps += 1
            self.since_cycle += 1
            if costs is None:
                return
            # the calibration steps' fastest: the first step after a prefill is often slow (allocation, caches)
            if self.dense_steps <= self.calibration_steps and self.dense_s is not None:
                self.dense_s = min(self.dense_s, costs[1])
            else:
                self.dense_s = _smooth(self.dense_s, costs[1])
            return
        if costs is not None:
            self.draft_s[kind] = _smooth(self.draft_s.get(kind), costs[0] / gamma)
            self.verify_s[gamma] = _smooth(self.verify_s.get(gamma), costs[1])
        judged, hits = self.judged[kind], self.accepted[kind]
        for j in range(gamma):
            judged[j] *= ACCEPTANCE_DECAY
            hits[j] *= ACCEPTANCE_DECAY
            if j <= accepted:  # drafts after the first rejected one were never judged
                judged[j] += 1
                hits[j] += j < accepted
        self.best_memo = None
        probing = self.since_cycle >= self.probe_interval
        if self.gamma == AUTO and probing and self.untried() is None and self.dense_s is not None:
            winning = self.best()[1] > MARGIN / self.dense_s
            self.probe_interval = FIRST_PROBE_INTERVAL if winning else min(2 * self.probe_interval, LAST_PROBE_INTERVAL)
        self.since_cycle = 0
