"""The torch side of constrained decoding (see constrained.py): a local model's KV cache,
logits, sampler and random state, stepped one chosen token at a time; or several rows from one
place stepped together (rows(): one batched forward draws several lines for the price of two)."""
from __future__ import annotations

import copy
import os
from typing import Sequence

import torch

from storyloom.engine.logits import choose_next
from storyloom.engine.sampling import SamplerSettings


class TorchDecoder:
    """A ConstrainedDecoder over a local generator's decode state (decode_state/encode/decode)."""

    def __init__(self, generator, text: str, seed: int | None = None):
        self.generator = generator
        self.rng = torch.Generator().manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "little"))
        self.state = generator.decode_state(generator.encode(text))
        self.logits = self.state.logits[0]
        self.history: list[int] = []

    def mark(self) -> tuple:
        return self.state.length, self.logits, len(self.history)

    def rewind(self, mark: tuple) -> None:
        length, logits, history = mark
        self.state.crop(length)
        self.logits = logits
        del self.history[history:]

    def step(self, token: int) -> None:
        self.logits = self.state.feed(torch.tensor([[token]]))[0]
        self.history.append(token)

    def sample(self, allowed: Sequence[int], settings: SamplerSettings) -> tuple[int, float]:
        logits = self.logits.float()
        index = torch.tensor(list(allowed), dtype=torch.long)
        masked = torch.full_like(logits, float("-inf"))
        masked[index] = logits[index]
        # the penalty looks only at its own window (repetition_range) of the text so far
        token = int(choose_next(masked[None], torch.tensor([self.history], dtype=torch.long), settings, self.rng)[0])
        return token, float(torch.log_softmax(logits, -1)[token])

    def logprobs(self, tokens: Sequence[int]) -> list[float]:
        """The unconstrained log-prob of each of `tokens` as the next one (no draw, no forward)."""
        logp = torch.log_softmax(self.logits.float(), -1)
        return logp[torch.tensor(list(tokens), dtype=torch.long)].tolist()

    def score_rows(self, rows: Sequence[Sequence[int]]) -> list[list[float]]:
        """The log-prob of each token of each row, read after this place (each row on its own),
        all rows in one batched forward; this decoder is left as it is."""
        logp = torch.log_softmax(self.logits.float(), -1)
        out = [[float(logp[r[0]])] if r else [] for r in rows]
        longest = max((len(r) for r in rows), default=0)
        if longest > 1:
            fork = _fork(self.state, len(rows))
            ids = torch.zeros(len(rows), longest - 1, dtype=torch.long)  # right padding: causal rows never see it
            for i, r in enumerate(rows):
                if len(r) > 1:
                    ids[i, : len(r) - 1] = torch.tensor(list(r[:-1]), dtype=torch.long)
            with torch.inference_mode():
                if fork.fast is not None:
                    logits = fork.fast.forward(ids, fork.kv, all_logits=True)
                else:
                    logits = fork.model(input_ids=ids, past_key_values=fork.kv, use_cache=True).logits
            logp = torch.log_softmax(logits.float(), -1)
            for i, r in enumerate(rows):
                if len(r) > 1:
                    out[i] += logp[i, torch.arange(len(r) - 1), torch.tensor(list(r[1:]))].tolist()
        return out

    def rows(self, count: int) -> "TorchRows":
        """`count` copies of this place to draw on side by side (this decoder is left as it is)."""
        return TorchRows(self, count)

    def decode(self, ids: Sequence[int]) -> str:
        return self.generator.decode(ids)


class TorchRows:
    """Rows that start at one decoder's place and go on together, one token each per step (one
    batched forward); a finished row is dropped (drop) and the others go on. Each row has its
    own allowed tokens and repetition history; the draws use the parent decoder's random state."""

    def __init__(self, parent: TorchDecoder, count: int):
        self.parent = parent
        self.state = _fork(parent.state, count)
        self.logits = parent.logits.expand(count, -1)
        self.history = torch.tensor([parent.history] * count, dtype=torch.long).reshape(count, len(parent.history))
        self.count = count

    def sample(self, allowed: Sequence[Sequence[int]], settings: SamplerSettings,
               likeliest: Sequence[bool] = ()) -> list[tuple[int, float]]:
        """One draw per row among its `allowed` tokens (as TorchDecoder.sample, row by row); a row
        marked in `likeliest` takes its likeliest allowed token instead (no penalty, no draw)."""
        logits = self.logits.float()
        masked = torch.full_like(logits, float("-inf"))
        for row, ids in enumerate(allowed):
            index = torch.tensor(list(ids), dtype=torch.long)
            masked[row, index] = logits[row, index]
        tokens = choose_next(masked, self.history, settings, self.parent.rng)
        if any(likeliest):
            top = masked.argmax(-1)
            tokens = torch.where(torch.tensor(list(likeliest), dtype=torch.bool), top, tokens)
        logp = torch.log_softmax(logits, -1).gather(1, tokens[:, None])[:, 0]
        return list(zip(tokens.tolist(), logp.tolist()))

    def step(self, tokens: Sequence[int]) -> None:
        """Feed one token to every row."""
        column = torch.tensor(list(tokens), dtype=torch.long)[:, None]
        self.logits = self.state.feed(column)
        self.history = torch.cat([self.history, column], 1)

    def drop(self, rows: Sequence[int]) -> None:
        """Go on without these rows (indexes among the rows still going): later steps cost less."""
        keep = [r for r in range(self.count) if r not in set(rows)]
        if keep and len(keep) < self.count:
            self.state.keep(keep)
            index = torch.tensor(keep, dtype=torch.long)
            self.logits, self.history = self.logits.index_select(0, index), self.history.index_select(0, index)
        self.count = len(keep)

    def decode(self, ids: Sequence[int]) -> str:
        return self.parent.decode(ids)


def _fork(state, count: int):
    """A decode state of `count` rows over `state`'s text, `state` untouched: the lean paths copy
    the one row into each of the batch's rows (fast_llama.ensure_cache, a fresh cache)."""
    fork = copy.copy(state)
    if state.fast is not None:
        kv = type(state.kv)()
        # one row would be written in place of the shared one: a copy, so `state` stays as it is
        kv.cache = state.kv.cache if count > 1 else state.kv.cache[:, :, :, :, : state.kv.length].clone()
        kv.length = state.kv.length
        fork.kv = kv
        if count > 1:  # through the lean path's own expand: it knows the rows share this prefix
            state.fast.expand(kv, count)
    else:  # the library's cache: copied whole, then each row repeated
        fork.kv = copy.deepcopy(state.kv)
        if count > 1:
            fork.kv.batch_repeat_interleave(count)
    fork.logits = state.logits.expand(count, -1)
    return fork
