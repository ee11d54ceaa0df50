"""gamma auto: the cost model's choice between drafting (which gamma) and plain dense steps, from timings."""

from __future__ import annotations

import pytest

from stdcli.engine import policy
from stdcli.engine.costs import CostMemory, cost_key, model_label
from stdcli.engine.policy import AUTO, FIRST_PROBE_INTERVAL, FIRST_TRY_GAMMA, Cycle, GammaPolicy, expected_tokens
from stdcli.engine.stats import DecodeStats


def run(p: GammaPolicy, steps: int, dense: float, draft, verify, accept) -> list[int]:
    """Drive the policy for `steps` choices on a simulated device; returns the gammas it chose. `draft` and
    `accept` are a number, or a dict by draft kind."""
    chosen = []
    for _ in range(steps):
        cycle = p.choose()
        g, kind = cycle.gamma, cycle.draft
        chosen.append(g)
        if g == 0:
            p.observe(cycle, (0.0, dense), 0)
        else:
            cost = draft[kind] if isinstance(draft, dict) else draft
            rate = accept[kind] if isinstance(accept, dict) else accept
            p.observe(cycle, (g * cost, verify(g)), round(rate * g))
    return chosen


def test_expected_tokens():
    assert expected_tokens(1.0, 4) == 5
    assert expected_tokens(0.0, 4) == 1
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


def test_fixed_gamma_calibrates_then_drafts():
    p = GammaPolicy(3, calibration_steps=2)
    assert run(p, 5, 1.0, 0.1, lambda g: 1.0, 0.9) == [0, 0, 3, 3, 3]
    assert run(GammaPolicy(0), 3, 1.0, 0.1, lambda g: 1.0, 0.9) == [0, 0, 0]


def test_auto_drafts_when_drafts_are_cheap_and_accepted():
    p = GammaPolicy(AUTO)
    chosen = run(p, 40, dense=1.0, draft=0.2, verify=lambda g: 1.0 + 0.05 * g, accept=0.9)
    assert chosen[:3] == [0, 0, FIRST_TRY_GAMMA]
    assert all(g >= 3 for g in chosen[3:]), chosen


def test_auto_goes_dense_when_a_draft_costs_a_dense_step():
    """A 7B model at batch 1 on a GPU: drafting cannot pay, whatever the acceptance."""
    p = GammaPolicy(AUTO)
    chosen = run(p, 200, dense=1.0, draft=0.95, verify=lambda g: 1.0 + 0.02 * g, accept=1.0)
    cycles = [i for i, g in enumerate(chosen) if g]
    assert cycles[0] == 2  # the one try that measures the costs
    # then probes only, at doubling intervals: a few percent of the steps at most
    gaps = [b - a for a, b in zip(cycles, cycles[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[0] > FIRST_PROBE_INTERVAL
    assert len(cycles) <= 5


def test_acceptance_is_tracked_per_draft_position():
    """Drafts whose first token is always accepted and second always rejected: E(g) stops growing after g = 1."""
    p = GammaPolicy(AUTO)
    p.observe(Cycle("sparse", 0), (0.0, 1.0), 0)
    for _ in range(200):
        p.observe(Cycle("sparse", 4), (0.4, 1.0), 1)
    assert p.expected_tokens(1) == pytest.approx(2.0, abs=0.05)
    assert p.expected_tokens(4) == pytest.approx(2.0, abs=0.05)
    assert p.best()[0] == Cycle("sparse", 1)


def test_auto_goes_dense_when_drafts_are_rejected():
    p = GammaPolicy(AUTO)
    chosen = run(p, 60, dense=1.0, draft=0.3, verify=lambda g: 1.0 + 0.05 * g, accept=0.0)
    assert sum(1 for g in chosen[3:] if g) <= 3 and chosen[-30:].count(0) >= 29  # after the try: rare probes


def test_auto_follows_a_change_of_costs():
    """Costs that favour drafting after a dense stretch (a context that grew) are found by the probes."""
    p = GammaPolicy(AUTO)
    run(p, 40, dense=1.0, draft=0.95, verify=lambda g: 1.1, accept=0.9)
    chosen = run(p, 200, dense=1.0, draft=0.1, verify=lambda g: 1.05, accept=0.9)
    assert chosen[-50:].count(0) == 0


def key_of(name: str | None, prompt_tokens: int) -> str:
    return cost_key(model_label(name, 1234), "cpu:2cpus", "float32", 1, prompt_tokens)


def test_memory_skips_the_try():
    memory = CostMemory()
    key = key_of(None, 1000)
    assert key == key_of(None, 600) != key_of(None, 1100)  # same power-of-two bucket or not
    first = GammaPolicy.start(AUTO, 2, memory.get(key))
    run(first, 20, dense=1.0, draft=0.95, verify=lambda g: 1.1, accept=0.9)
    memory.remember(key, first)
    second = GammaPolicy.start(AUTO, 2, memory.get(key))
    assert run(second, 10, dense=1.0, draft=0.95, verify=lambda g: 1.1, accept=0.9) == [0] * 10
    assert GammaPolicy.start(4, 2, memory.get(key)).draft_s == {}  # a fixed gamma ignores the memory


def test_costs_are_remembered_on_disk_across_processes(tmp_path):
    path = tmp_path / "costs" / "step-costs.json"
    memory = CostMemory.load(path)  # a new process: no file yet
    key = key_of("/models/m", 3000)
    first = GammaPolicy.start(AUTO, 2, memory.get(key))
    run(first, 20, dense=1.0, draft=0.95, verify=lambda g: 1.1, accept=0.9)
    memory.remember(key, first)
    unnamed = key_of(None, 3000)
    memory.remember(unnamed, first)
    memory.save()  # as the command line does when its run ends
    again = GammaPolicy.start(AUTO, 2, CostMemory.load(path).get(key))  # the next process reads the file
    assert (again.dense_s, again.draft_s, again.verify_s) == (first.dense_s, first.draft_s, first.verify_s)
    assert CostMemory.load(path).get(unnamed) is None  # models without a name stay in the process
    path.write_text("{not json")
    assert CostMemory.load(path).get(key) is None  # a damaged cache is ignored, costs are measured again


def test_auto_draft_chooses_the_kind_that_pays():
    """Two draft kinds, each tried once: the cheap, well accepted one is taken; the other is left alone."""
    p = GammaPolicy(AUTO, drafts=("int4", "sparse"))
    run(p, 3, dense=1.0, draft={"int4": 0.3, "sparse": 0.95}, verify=lambda g: 1.05,
        accept={"int4": 0.9, "sparse": 0.9})
    cycles = []
    for _ in range(40):
        cycle = p.choose()
        cycles.append(cycle)
        cost = {"int4": 0.3, "sparse": 0.95}[cycle.draft]
        p.observe(cycle, (cycle.gamma * cost, 1.05) if cycle.gamma else (0.0, 1.0), round(0.9 * cycle.gamma))
    assert set(p.draft_s) == {"int4", "sparse"}  # both measured
    assert all(c.draft == "int4" and c.gamma >= 3 for c in cycles[2:]), cycles


def test_a_fixed_gamma_with_several_kinds_keeps_the_gamma():
    p = GammaPolicy(5, calibration_steps=1, drafts=("int4", "sparse"))
    chosen = run(p, 6, dense=1.0, draft={"int4": 0.3, "sparse": 0.5}, verify=lambda g: 1.0, accept=0.5)
    assert chosen == [0, 5, 5, 5, 5, 5] and set(p.draft_s) == {"int4", "sparse"}


def test_nothing_is_written_unless_saved(tmp_path):
    path = tmp_path / "step-costs.json"
    memory = CostMemory(path)
    p = GammaPolicy(AUTO)
    run(p, 20, dense=1.0, draft=0.95, verify=lambda g: 1.1, accept=0.9)
    memory.remember(key_of("/models/m", 100), p)
    assert not path.exists()
    memory.save()
    assert path.exists()


def test_sparse_view_is_skipped_while_drafting_does_not_pay():
    p = GammaPolicy(AUTO)
    assert p.wants_sparse_view()  # nothing measured yet
    run(p, 20, dense=1.0, draft=0.95, verify=lambda g: 1.1, accept=0.9)
    views = [p.copy().wants_sparse_view() for _ in range(1)]  # a fresh answer from the same memory
    assert views == [False]
    chosen = []
    for _ in range(2 * policy.VIEW_EVERY):
        chosen.append(p.wants_sparse_view())
    assert chosen.count(True) == 2  # one answer in VIEW_EVERY still builds a view, to probe
    p.can_draft = False
    assert run(p, 40, dense=1.0, draft=0.1, verify=lambda g: 1.0, accept=1.0) == [0] * 40  # no view, no drafts
    assert GammaPolicy(4).wants_sparse_view()  # a fixed gamma always drafts


def test_sparse_view_only_when_drafting_saves_more_than_the_view_costs():
    """Drafting saves 0.5 of a dense step per token here; a view costing 4 dense steps pays on 20-token answers,
    not on 5-token ones."""
    def policy_after(answer_tokens: int) -> GammaPolicy:
        p = GammaPolicy(AUTO)
        run(p, 30, dense=1.0, draft=0.1, verify=lambda g: 0.2 + 0.1 * g, accept=1.0)  # the best gamma's cost ~0.5/token
        p.dense_s, p.draft_s, p.verify_s = 1.0, {"sparse": 0.1}, {g: 0.2 + 0.1 * g for g in range(1, 9)}
        p.judged, p.accepted = {"sparse": [10.0] * 8}, {"sparse": [5.0] * 8}  # acceptance 0.5 at every position
        for _ in range(20):
            p.observe_answer(DecodeStats(new_tokens=answer_tokens, view_s=4.0))
        return p

    gain = 1.0 - 1 / policy_after(5).best()[1]
    assert 4.0 / 20 < gain < 4.0 / 5  # the two cases straddle the break-even
    assert policy_after(20).wants_sparse_view()
    short = policy_after(5)
    assert [short.wants_sparse_view() for _ in range(policy.VIEW_EVERY)].count(True) == 1  # the periodic one only
