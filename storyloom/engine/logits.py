"""The token-choice step: apply SamplerSettings to a batch of logits."""
from __future__ import annotations

import torch

from storyloom.engine.sampling import SamplerSettings


def apply_repetition_penalty(
    logits: torch.Tensor, history: torch.Tensor, penalty: float, window: int
) -> torch.Tensor:
    """CTRL-style penalty on tokens seen in the last `window` tokens (KoboldAI's rep_pen_range)."""
    if penalty == 1.0 or history.shape[-1] == 0:
        return logits
    recent = history[:, -window:] if window else history
    seen = torch.gather(logits, 1, recent)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, recent, seen)


# Nucleus sampling without top-k looks at this many best tokens when they hold top_p of the mass.
SUBSET = 1024


def choose_next(
    logits: torch.Tensor,
    history: torch.Tensor,
    settings: SamplerSettings,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Pick one token per row from `logits` [batch, vocab]. Returns [batch] token ids.

    The filters and the draw run on the few best tokens (top-k, or the nucleus) rather than
    the whole vocabulary: sorting and sampling 49k entries per row per token costs more than
    a small model's layer. The distribution sampled from is the same.
    """
    logits = apply_repetition_penalty(
        logits.float(), history, settings.repetition_penalty, settings.repetition_range
    )
    if settings.greedy:
        return logits.argmax(dim=-1)
    logits = logits / settings.temperature
    vocab = logits.shape[-1]
    if settings.top_k and settings.top_k < vocab:
        vals, idx = torch.topk(logits, settings.top_k, dim=-1)
    elif settings.top_p < 1.0 and settings.typical_p == 1.0 and vocab > 2 * SUBSET:
        vals, idx = torch.topk(logits, SUBSET, dim=-1)
        mass = torch.exp(torch.logsumexp(vals, -1) - torch.logsumexp(logits, -1))
        if not bool((mass >= settings.top_p).all()):  # a flat distribution: the nucleus is wider
            vals, idx = logits, None
    else:
        vals, idx = logits, None
    picked = _draw(vals, settings, generator)
    return picked if idx is None else idx.gather(1, picked[:, None]).squeeze(1)


def _draw(logits: torch.Tensor, settings: SamplerSettings, generator: torch.Generator | None) -> torch.Tensor:
    if settings.typical_p < 1.0:
        logits = _typical(logits, settings.typical_p)
    if settings.top_p < 1.0:
        logits = _top_p(logits, settings.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens before it already reach top_p (the best one always stays).
    drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _typical(logits: torch.Tensor, mass: float) -> torch.Tensor:
    """Locally typical sampling (Meister et al. 2022), as in transformers' TypicalLogitsWarper."""
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    entropy = -torch.nansum(p * logp, dim=-1, keepdim=True)
    surprise_gap = (-logp - entropy).abs()
    gap_sorted, order = torch.sort(surprise_gap, dim=-1)
    cumulative = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    drop_sorted = gap_sorted > gap_sorted.gather(1, last)
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
