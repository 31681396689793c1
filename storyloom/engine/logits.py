"""The token-choice step: apply SamplerSettings to a batch of logits.

The order is text-generation-webui's: banned tokens, phrase bias, repetition penalty, DRY, temperature, then
top-k, typical-p, top-p, min-p and XTC on what is left, and the draw. Both decode paths (native
and reference) hand their logits here, so every sampler behaves the same on each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from storyloom.engine import native
from storyloom.engine.sampling import SamplerSettings

# The bans, the penalty, the temperature and the top-k in one native pass where the C library is
# built (native/sample.c: the same values, bit for bit); False keeps every step in torch (tests).
NATIVE = True


def apply_repetition_penalty(
    logits: torch.Tensor, history: torch.Tensor, penalty: float, window: int, inplace: bool = False
) -> torch.Tensor:
    """CTRL-style penalty on tokens seen in the last `window` tokens (KoboldAI's rep_pen_range).
    `inplace`: into `logits` itself (a copy the caller owns)."""
    if penalty == 1.0 or history.shape[-1] == 0:
        return logits
    recent = history[:, -window:] if window else history
    seen = torch.gather(logits, 1, recent)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    # a token seen twice is written twice with the same value: in place is the same as a copy
    return logits.scatter_(1, recent, seen) if inplace else logits.scatter(1, recent, seen)


@dataclass
class Context:
    """What the sampler needs beyond settings: which tokens break a DRY repeat, which ones XTC
    never removes (newline, end of text: webui's rule, so it cannot make turns run on), the
    tokens banned at this position of each row (a banned phrase began with them), and each
    row's phrase bias at this position (token -> logits added; engine/biasing.py)."""

    dry_breakers: frozenset[int] = frozenset()
    xtc_protect: frozenset[int] = frozenset()
    banned: list[set[int]] | None = None
    bias: list[dict[int, float]] | None = None
    _protect: torch.Tensor | None = field(default=None, repr=False)

    def protect_ids(self) -> torch.Tensor:
        if self._protect is None:
            self._protect = torch.tensor(sorted(self.xtc_protect), dtype=torch.long)
        return self._protect


DRY_MAX_MATCH = 50  # as webui: longer repeats get the same penalty (and the search stays short)


def apply_dry(logits: torch.Tensor, history: torch.Tensor, settings: SamplerSettings,
              breakers: frozenset[int]) -> torch.Tensor:
    """DRY ("don't repeat yourself", text-generation-webui's DRYLogitsProcessor): for every
    earlier place where the last tokens already occurred, the token that followed there would
    extend the repeat; it loses multiplier * base ** (repeat length - allowed length)."""
    if settings.dry_multiplier == 0 or history.shape[-1] < 2:
        return logits
    window = history[:, -settings.dry_range:] if settings.dry_range else history
    out = logits.clone()
    for row in range(window.shape[0]):
        ids = window[row]
        last = int(ids[-1])
        if last in breakers:
            continue
        matches = torch.nonzero(ids[:-1] == last).flatten().tolist()
        if not matches:
            continue
        seq = ids.tolist()
        n = len(seq)
        longest: dict[int, int] = {}
        for i in matches:
            follower = seq[i + 1]
            if follower in breakers:
                continue
            length = 1
            while length < DRY_MAX_MATCH:
                j = i - length
                if j < 0:
                    break
                previous = seq[n - 1 - length]
                if seq[j] != previous or previous in breakers:
                    break
                length += 1
            if length > longest.get(follower, 0):
                longest[follower] = length
        for token, length in longest.items():
            if length >= settings.dry_allowed_length:
                out[row, token] -= settings.dry_multiplier * settings.dry_base ** (length - settings.dry_allowed_length)
    return out


def _ban(logits: torch.Tensor, banned: list[set[int]] | None, inplace: bool = False) -> torch.Tensor:
    if not banned or not any(banned):
        return logits
    logits = logits if inplace else logits.clone()
    for row, tokens in enumerate(banned):
        if tokens:
            logits[row, list(tokens)] = float("-inf")
    return logits


def apply_bias(logits: torch.Tensor, bias: list[dict[int, float]] | None, inplace: bool = False) -> torch.Tensor:
    """Add each row's phrase bias to its logits (before temperature, as llama.cpp's logit_bias:
    at temperature 1 a bias b multiplies the token's odds by e**b)."""
    if not bias or not any(bias):
        return logits
    logits = logits if inplace else logits.clone()
    for row, pushes in enumerate(bias):
        if pushes:
            ids = torch.tensor(list(pushes), dtype=torch.long)
            logits[row, ids] += torch.tensor(list(pushes.values()), dtype=logits.dtype)
    return logits


# Nucleus sampling without top-k looks at this many best tokens when they hold top_p of the mass.
SUBSET = 1024


def choose_next(
    logits: torch.Tensor,
    history: torch.Tensor,
    settings: SamplerSettings,
    generator: torch.Generator | None,
    context: Context | None = None,
) -> torch.Tensor:
    """Pick one token per row from `logits` [batch, vocab]. Returns [batch] token ids.

    The filters and the draw run on the few best tokens (top-k, or the nucleus) rather than
    the whole vocabulary: sorting and sampling 49k entries per row per token costs more than
    a small model's layer. The distribution sampled from is the same.
    """
    context = context or Context()
    logits = logits.float()
    fast = _native_top_k(logits, history, settings, context)
    if fast is not None:
        vals, idx = fast
        picked = _draw(vals, idx, settings, generator, context)
        return idx.gather(1, picked[:, None]).squeeze(1)
    # The bans, the bias and the penalty write into one copy (the caller's logits stay as they
    # were): a copy each was a pass over [batch, vocab] each, per token.
    banned = bool(context.banned) and any(context.banned)
    biased = bool(context.bias) and any(context.bias)
    penalised = settings.repetition_penalty != 1.0 and history.shape[-1] > 0
    if banned or biased or penalised:
        logits = logits.clone()
        _ban(logits, context.banned, inplace=True)
        apply_bias(logits, context.bias, inplace=True)
        apply_repetition_penalty(logits, history, settings.repetition_penalty, settings.repetition_range, inplace=True)
    logits = apply_dry(logits, history, settings, context.dry_breakers)
    if settings.greedy:
        return logits.argmax(dim=-1)
    logits = logits / settings.temperature
    vocab = logits.shape[-1]
    if settings.top_k and settings.top_k < vocab:
        vals, idx = torch.topk(logits, settings.top_k, dim=-1)
    elif settings.min_p > 0 and settings.top_p == 1.0 and settings.typical_p == 1.0:
        # min-p alone keeps only tokens within log(min_p) of the best: draw among those (the
        # filters after it, XTC included, renormalise, so the distribution is the same)
        floor = logits.max(dim=-1, keepdim=True).values + math.log(settings.min_p)
        keep = max(1, int((logits >= floor).sum(dim=-1).max()))
        vals, idx = torch.topk(logits, keep, dim=-1)
    elif settings.top_p < 1.0 and settings.typical_p == 1.0 and vocab > 2 * SUBSET:
        vals, idx = torch.topk(logits, SUBSET, dim=-1)
        mass = torch.exp(torch.logsumexp(vals, -1) - torch.logsumexp(logits, -1))
        if not bool((mass >= settings.top_p).all()):  # a flat distribution: the nucleus is wider
            vals, idx = logits, None
    else:
        vals, idx = logits, None
    picked = _draw(vals, idx, settings, generator, context)
    return picked if idx is None else idx.gather(1, picked[:, None]).squeeze(1)


def _native_top_k(logits: torch.Tensor, history: torch.Tensor, settings: SamplerSettings,
                  context: Context) -> tuple[torch.Tensor, torch.Tensor] | None:
    """choose_next's top-k (values after the bans, the penalty and the temperature, best first,
    and their ids) from native/sample.c; None where that cannot run: no library, a sampler it
    does not do (DRY, phrase bias, greedy, no top-k), or logits it cannot read in place."""
    if not NATIVE or settings.greedy or not settings.top_k or settings.dry_multiplier or \
            (context.bias and any(context.bias)):
        return None
    if logits.dim() != 2 or logits.dtype != torch.float32 or logits.device.type != "cpu" or logits.stride(1) != 1:
        return None
    batch, vocab = logits.shape
    if settings.top_k >= vocab or history.dtype != torch.long or history.shape[0] != batch:
        return None
    lib = native.library()
    if lib is None:
        return None
    rows = [sorted(b) for b in context.banned[:batch]] if context.banned else []
    per_row = max((len(r) for r in rows), default=0)
    rows += [[]] * (batch - len(rows))
    banned = torch.tensor([r + [-1] * (per_row - len(r)) for r in rows] if per_row else [[-1]] * batch)
    window = history if history.stride(1) == 1 else history.contiguous()
    penalised = settings.repetition_penalty != 1.0 and window.shape[1] > 0
    if penalised and settings.repetition_range:
        window = window[:, -settings.repetition_range:]
    k = settings.top_k
    vals = torch.empty(batch, k)
    ids = torch.empty(batch, k, dtype=torch.long)
    work = torch.empty(vocab)
    status = lib.sl_top_k(logits.data_ptr(), logits.stride(0), batch, vocab, banned.data_ptr(), per_row,
                          window.data_ptr(), window.stride(0), window.shape[1] if penalised else 0,
                          settings.repetition_penalty, settings.temperature, k, work.data_ptr(),
                          vals.data_ptr(), ids.data_ptr())
    return (vals, ids) if status == 0 else None


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> list[float]:
    """Each row's log-prob of its token under logits [rows, vocab] (before any sampler)."""
    lib = native.library() if NATIVE else None
    if lib is not None and logits.dim() == 2 and logits.dtype == torch.float32 and logits.stride(1) == 1:
        tokens = tokens.to(torch.long).contiguous()
        out = torch.empty(logits.shape[0])
        if lib.sl_logprobs(logits.data_ptr(), logits.stride(0), logits.shape[0], logits.shape[1],
                           tokens.data_ptr(), out.data_ptr()) == 0:
            return out.tolist()
    logits = logits.float()
    return (logits.gather(1, tokens[:, None]).squeeze(1) - torch.logsumexp(logits, -1)).tolist()


def filtered(logits: torch.Tensor, ids: torch.Tensor | None, settings: SamplerSettings,
             generator: torch.Generator | None, context: Context | None = None) -> torch.Tensor:
    """The logits after the filters that follow temperature (-inf where a token is dropped).
    `ids` are the vocabulary ids of the columns (None: the columns are the vocabulary)."""
    if settings.typical_p < 1.0:
        logits = _typical(logits, settings.typical_p)
    if settings.top_p < 1.0:
        logits = _top_p(logits, settings.top_p)
    if settings.min_p > 0:
        logits = _min_p(logits, settings.min_p)
    if settings.xtc_probability > 0:
        logits = _xtc(logits, ids, settings, generator, context or Context())
    return logits


def _draw(logits, ids, settings, generator, context) -> torch.Tensor:
    probs = torch.softmax(filtered(logits, ids, settings, generator, context), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens at least min_p times as likely as the likeliest (Nguyen et al. 2024)."""
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))


def _xtc(logits: torch.Tensor, ids: torch.Tensor | None, settings: SamplerSettings,
         generator: torch.Generator | None, context: Context) -> torch.Tensor:
    """Exclude Top Choices (text-generation-webui's XTCLogitsWarper): with xtc_probability, drop
    every token at or above xtc_threshold but the least likely of them; nothing changes when
    fewer than two reach it, or when a newline or end-of-text token would be dropped."""
    out = logits.clone()
    for row in range(logits.shape[0]):
        if float(torch.rand((), generator=generator)) >= settings.xtc_probability:
            continue
        sorted_logits, order = torch.sort(logits[row], descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop_sorted = torch.zeros_like(probs, dtype=torch.bool)
        drop_sorted[:-1] = probs[1:] >= settings.xtc_threshold
        if not bool(drop_sorted.any()):
            continue
        dropped = order[drop_sorted]
        vocab_ids = dropped if ids is None else ids[row, dropped]
        if context.xtc_protect and bool(torch.isin(vocab_ids, context.protect_ids()).any()):
            continue
        out[row, dropped] = float("-inf")
    return out


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
