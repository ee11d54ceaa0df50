"""Token choice and speculative acceptance: pure functions over logits and probabilities.

Greedy verification keeps the output token-for-token identical to greedy decoding. With temperature > 0, the
speculative-sampling rule (accept draft x with probability min(1, p(x)/q(x)), else resample from
normalize(max(0, p - q))) keeps the output distribution identical to sampling from the dense model.
"""

from __future__ import annotations

import torch


def token_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution dense sampling draws from: softmax(logits / T), then nucleus filtering.

    Nucleus filtering follows transformers' TopPLogitsWarper exactly (drop the least likely tokens whose
    cumulative mass is <= 1 - top_p, always keep the most likely one), so that our dense sampling and
    `generate(do_sample=True)` sample the same distribution.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1)  # ascending
    drop_sorted = sorted_probs.cumsum(-1) <= 1 - top_p
    drop_sorted[..., -1] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    probs = probs.masked_fill(drop, 0.0)
    return probs / probs.sum(-1, keepdim=True)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of probs [..., V] -> [...]."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def accepted_prefix(matches: torch.Tensor) -> torch.Tensor:
    """Length of the leading run of True in each row of matches [B, gamma] -> [B]."""
    return matches.to(torch.int64).cumprod(-1).sum(-1)


def accept_greedy(drafts: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """drafts [B, g]; target_logits [B, g+1, V] from the dense verify pass.

    Returns (accepted [B], next_token [B]): the number of drafts equal to the dense greedy choice, and the dense
    model's token after them (the correction at the first mismatch, or the bonus token after all drafts).
    """
    target = target_logits.argmax(-1)
    accepted = accepted_prefix(drafts == target[:, :-1])
    return accepted, target.gather(1, accepted[:, None]).squeeze(1)


def accept_sampled(
    drafts: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling. drafts [B, g] drawn from draft_probs [B, g, V]; target_probs [B, g+1, V]."""
    p_draft = target_probs[:, :-1].gather(-1, drafts[..., None]).squeeze(-1)
    q_draft = draft_probs.gather(-1, drafts[..., None]).squeeze(-1)
    u = torch.rand(p_draft.shape, generator=generator, device=p_draft.device)
    accepted = accepted_prefix(u * q_draft < p_draft)
    rows = torch.arange(drafts.shape[0], device=drafts.device)
    p_next = target_probs[rows, accepted]
    q_next = torch.cat([draft_probs, torch.zeros_like(draft_probs[:, :1])], dim=1)[rows, accepted]
    residual = (p_next - q_next).clamp_(min=0.0)
    mass = residual.sum(-1, keepdim=True)
    # After a rejection sample from the residual; when every draft was accepted q_next is 0 and this is p itself.
    # A residual of zero mass only happens when p == q, where resampling from p is exact.
    residual = torch.where(mass > 0, residual / mass.clamp(min=1e-30), p_next)
    return accepted, sample(residual, generator)
