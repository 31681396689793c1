"""Local generation with a transformers causal LM, through our own lean decode loop.

The loop (prefill once, then one token per forward with the KV cache) lets us stream text,
check the cancel flag every token, apply our sampler, and batch candidates over one prompt.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence

import torch

from storyloom.engine.generate import (
    TOP_ALTERNATIVES,
    Cancel,
    Capabilities,
    GenerationStats,
    Generator,
    ModelInfo,
    RowLogprobs,
    StopScanner,
    Stopwatch,
    TokenChoice,
    cut_at_stops,
)
from storyloom.engine import byte_pieces, native, threads
from storyloom.engine.fast_llama import FastLlama, KVState, select_rows
from storyloom.engine.kv_cache import new_cache
from storyloom.engine.native_llama import MAX_BATCH, NativeLlama
from storyloom.engine.banning import PhraseBan, token_at
from storyloom.engine.biasing import PhraseBias
from storyloom.engine.logits import Context, choose_next, token_logprobs
from storyloom.engine.sampling import SamplerSettings


def _rng(seed: int | None) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
    return gen


# Decode paths, chosen with STORYLOOM_ENGINE:
#   native     (the default) tokens through the C step on the model's own weights (packed exactly
#              into GGUF blocks: the default model's Q4_1 grid), prompts through the lean torch forward
#   reference  the library's forward
# A model the lean forward does not know uses the reference; without a C compiler the lean torch
# forward runs everything (reported as engine "lean"; no longer a choice of its own).
ENGINES = ("native", "reference")


def engine_choice() -> str:
    choice = os.environ.get("STORYLOOM_ENGINE", "native").strip() or "native"
    if choice not in ENGINES:
        from storyloom.engine.models import ModelError

        raise ModelError(f"STORYLOOM_ENGINE must be one of {', '.join(ENGINES)}, not {choice!r}.")
    return choice


def _fast_path(model, engine: str):
    """(forward or None, the engine actually used): each path falls back to the next that can run."""
    if engine == "native":
        fast = NativeLlama.build(model)
        if fast is not None:
            return fast, engine
        fast = FastLlama.build(model)
        if fast is not None:
            return fast, "lean"
    return None, "reference"


def _pickable(piece: str) -> bool:
    """Text an alternative can be continued from: not half a character, not a control code."""
    return bool(piece) and "\ufffd" not in piece and all(ch in "\n\t" or ch.isprintable() for ch in piece)


def _worth_shrinking(width: int, going: int, steps_left: int) -> bool:
    """Whether to drop finished rows from the batch: on the 135M model (a 400-token prompt, a
    busy machine) a step of 4 rows costs 20 ms, of 3 15, of 2 14, of 1 11, and keeping 3 of 4
    rows' caches costs 11 ms, 2 of 4 5 ms: about one step, so shrink while a few steps remain."""
    return going < width and steps_left >= SHRINK_MIN_STEPS


SHRINK_MIN_STEPS = 4
# Scoring: a prompt this short (the neutral prompt) is run once and its cache kept, a few of them.
KEPT_PROMPT_TOKENS, PROMPTS_KEPT = 4, 4


# Scoring rows at most this long go through the native step a position at a time (in a batch of
# at most its MAX_BATCH rows); longer ones through the torch forward, whose matmuls take every
# position at once.
STEPPED_ROW_TOKENS = 16


def _stepped_rows(fast, shape: torch.Size) -> bool:
    """Whether rows of `shape` [rows, longest] are scored through the native step."""
    return isinstance(fast, NativeLlama) and native.library() is not None and \
        shape[0] <= MAX_BATCH and shape[1] <= STEPPED_ROW_TOKENS


def _before_stop(text: str, stops: tuple[str, ...]) -> str:
    """A row's decoded text before its first stop string (and without half a character)."""
    return cut_at_stops(text.rstrip("\ufffd"), stops)[0]

# A banned phrase backs the loop up at most this often per text; then the text ends before it.
MAX_BACKTRACKS = 64


class DecodeState:
    """One generation's place in the model: next-token logits [batch, vocab], and how to go on
    (feed tokens) or go back (crop to an earlier length). Uses the lean path when the generator
    has one, the library's forward otherwise; never shared between threads."""

    @torch.inference_mode()
    def __init__(self, generator: "TransformersGenerator", prompt_ids: list[int], batch: int = 1):
        self.fast = generator.fast
        self.model = generator.model
        threads.choose()  # as many threads as other programs leave cores free
        ids = torch.tensor([prompt_ids], dtype=torch.long)
        if self.fast is not None:
            self.kv = KVState()
            logits = self.fast.forward(ids, self.kv)
            if batch > 1:
                self.fast.expand(self.kv, batch)
        else:
            out = self.model(input_ids=ids, use_cache=True, past_key_values=new_cache(self.model.config))
            self.kv = out.past_key_values
            if batch > 1:
                self.kv.batch_repeat_interleave(batch)
            logits = out.logits[:, -1, :]
        self.logits = logits.expand(batch, -1)
        self.length = len(prompt_ids)

    @torch.inference_mode()
    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [batch, T] after what is held; returns (and keeps) the new next-token logits."""
        threads.choose()
        if self.fast is not None:
            self.logits = self.fast.forward(tokens, self.kv)
        else:
            self.logits = self.model(input_ids=tokens, past_key_values=self.kv, use_cache=True).logits[:, -1, :]
        self.length += tokens.shape[1]
        return self.logits

    def keep(self, rows: list[int]) -> None:
        """Go on with only these batch rows (the others finished): later steps cost less."""
        index = torch.tensor(rows, dtype=torch.long)
        if hasattr(self.fast, "keep_rows"):  # the native step reads the kept rows where they are
            self.fast.keep_rows(self.kv, rows)
        elif self.fast is not None:
            select_rows(self.kv, rows)
        else:
            self.kv.batch_select_indices(index)
        self.logits = self.logits.index_select(0, index)

    def crop(self, length: int) -> None:
        """Forget everything after `length` tokens (the caller restores the logits it kept)."""
        if self.length > length:
            if self.fast is not None:
                self.kv.length = length
            else:
                self.kv.crop(length - self.length)
            self.length = length


def mean_logprobs(first: torch.Tensor, logp: torch.Tensor, conts: Sequence[Sequence[int]]) -> list[float]:
    """Mean token log-prob of each continuation: `first` [vocab] predicts every row's first token
    (the prompt's last position), `logp` [rows, longest, vocab] the rest (row position j predicts
    token j+1; right padding comes after, so causal rows never see it). An empty one is -inf."""
    scores = []
    for i, c in enumerate(conts):
        if not c:
            scores.append(float("-inf"))
            continue
        total = float(first[c[0]])
        if len(c) > 1:
            total += float(logp[i, torch.arange(len(c) - 1), torch.tensor(c[1:])].sum())
        scores.append(total / len(c))
    return scores


def _mean_token_logprobs(first: torch.Tensor, logits: torch.Tensor, conts: Sequence[Sequence[int]]) -> list[float]:
    """mean_logprobs from raw logits, each position's log-prob of its own token alone (no
    log-softmax over every position's vocabulary, most of which nothing reads)."""
    heads = token_logprobs(first[None].expand(len(conts), -1), torch.tensor([c[0] if c else 0 for c in conts]))
    scores = []
    for i, c in enumerate(conts):
        if not c:
            scores.append(float("-inf"))
            continue
        rest = token_logprobs(logits[i, : len(c) - 1], torch.tensor(c[1:])) if len(c) > 1 else []
        scores.append((heads[i] + sum(rest)) / len(c))
    return scores


class TransformersGenerator(Generator):
    capabilities = Capabilities(stream=True, batch=True, token_logprobs=True, scoring=True,
                                token_steering=True, exact_tokens=True, seed=True)

    def __init__(self, model, tokenizer, name: str, location: str | None = None, engine: str | None = None):
        self.model = model.eval()
        engine = engine or engine_choice()
        self.fast, engine = _fast_path(model, engine)
        extra = {"engine": engine}
        if getattr(self.fast, "kinds", None):
            extra["weights"] = ", ".join(f"{count} {kind}" for kind, count in self.fast.kinds.items())
        if engine == "native":
            extra["native kernels"] = native.isa()
        if native.unavailable():
            extra["native step"] = native.unavailable()
        self.tokenizer = tokenizer
        config = model.config
        ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self.info = ModelInfo(
            name=name,
            backend="transformers",
            parameters=sum(p.numel() for p in model.parameters()),
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            context_length=int(ctx) if ctx else 2048,
            location=location,
            chat_template=bool(getattr(tokenizer, "chat_template", None)),
            extra=extra,
        )
        self.last_stats = GenerationStats()
        eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # The tokenizer's own turn markers (ChatML's <|im_end|> and friends): modes stop on them
        # instead of hard-coding one chat format.
        self.stop_strings = tuple(t for t in getattr(tokenizer, "all_special_tokens", ())
                                  if t and len(t) > 2 and t.startswith("<") and t.endswith(">"))

    # -- text <-> tokens -------------------------------------------------------------
    def encode(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text, special=False))

    def byte_pieces(self) -> list[bytes] | None:
        """Each id's bytes where a row's text is its tokens' bytes joined (byte_pieces.py), else None."""
        if not hasattr(self, "_byte_pieces"):
            self._byte_pieces = byte_pieces.pieces(self.tokenizer)
        return self._byte_pieces

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        if not self.info.chat_template:
            return super().chat_prompt(messages)
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )

    def _prompt_ids(self, prompt: str, max_new: int) -> list[int]:
        ids = self.encode(prompt)
        room = self.context_length - max_new
        # Never overflow the window: keep the end of an over-long prompt (the recent story).
        return ids[-room:] if len(ids) > room else ids

    # -- the decode loop --------------------------------------------------------------
    @torch.inference_mode()
    def _steps(self, prompt_ids: list[int], batch: int, settings: SamplerSettings, cancel: Cancel | None,
               context: Context | None = None):
        """Yield the next token ids [batch] one step at a time. The caller may change `context`
        (the phrase bias of each row) between steps."""
        gen = _rng(settings.seed)
        state = self.decode_state(prompt_ids, batch)
        history = torch.tensor([prompt_ids] * batch, dtype=torch.long)
        context = context or self.sampler_context(settings)
        for count in range(settings.max_new_tokens):
            if cancel is not None and cancel.is_set():
                return
            ending = self._early_end(count, settings)
            context.banned = [ending] * batch if ending else None
            token = choose_next(state.logits, history, settings, gen, context)
            yield token
            history = torch.cat([history, token[:, None]], dim=1)
            if cancel is not None and cancel.is_set():
                return
            state.feed(token[:, None])

    def _early_end(self, written: int, settings: SamplerSettings) -> set[int]:
        """The tokens banned for ending the text too soon: the end-of-text ones while fewer than
        min_new_tokens are written, else none."""
        return set(self.eos_ids) if written < settings.min_new_tokens else set()

    def token_texts(self) -> list[str]:
        """Each vocabulary id's own text (computed once: DRY's breakers and XTC's protected tokens)."""
        if getattr(self, "_token_texts", None) is None:
            self._token_texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        return self._token_texts

    def sampler_context(self, settings: SamplerSettings) -> Context:
        """The token sets DRY and XTC need, for this tokenizer (cached per breaker list)."""
        breakers: frozenset[int] = frozenset()
        if settings.dry_multiplier:
            cache = self.__dict__.setdefault("_breakers", {})
            key = settings.dry_sequence_breakers
            if key not in cache:
                cache[key] = frozenset(i for i, t in enumerate(self.token_texts()) if any(b in t for b in key))
            breakers = cache[key]
        protect: frozenset[int] = frozenset()
        if settings.xtc_probability:
            if getattr(self, "_xtc_protect", None) is None:
                self._xtc_protect = frozenset(self.eos_ids) | frozenset(
                    i for i, t in enumerate(self.token_texts()) if "\n" in t)
            protect = self._xtc_protect
        return Context(dry_breakers=breakers, xtc_protect=protect)

    def phrase_bias(self, settings: SamplerSettings) -> PhraseBias | None:
        """The settings' phrase bias on this tokenizer (None when there is none)."""
        if not settings.phrase_bias:
            return None
        bias = PhraseBias(settings.phrase_bias, lambda text: self.encode(text, special=False))
        return bias or None

    @torch.inference_mode()
    def _banned_pieces(self, prompt_ids: list[int], settings: SamplerSettings, cancel: Cancel | None,
                       watch: Stopwatch, before: str = "") -> Iterator[str]:
        """One text with banned phrases kept out: when one forms, the cache and positions go back
        to the token where it began, that token is banned at that position, and decoding goes on
        from there. Text that could still turn into a banned phrase is held back from the stream."""
        ban = PhraseBan(settings.banned)
        bias = self.phrase_bias(settings)
        gen = _rng(settings.seed)
        state = self.decode_state(prompt_ids, 1)
        first_logits = state.logits
        base = len(prompt_ids)
        context = self.sampler_context(settings)
        scanner = StopScanner(settings.stop + self.stop_strings)
        ids: list[int] = []
        offsets: list[int] = []  # where each token's text starts in the decoded output
        bans: dict[int, set[int]] = {}
        backtracks = 0
        text = ""
        while len(ids) < settings.max_new_tokens:
            if cancel is not None and cancel.is_set():
                return
            pos = len(ids)
            context.banned = [bans.get(pos, set()) | self._early_end(pos, settings)]
            if bias is not None:
                context.bias = [bias.pushes(text.rstrip("\ufffd"), before)]
            history = torch.tensor([prompt_ids + ids], dtype=torch.long)
            token = int(choose_next(state.logits, history, settings, gen, context)[0])
            watch.token()
            end = token in self.eos_ids
            if not end:
                offsets.append(len(text))
                ids.append(token)
                text = self.decode(ids)
                if text.endswith("\ufffd") and len(ids) < settings.max_new_tokens:
                    state.feed(torch.tensor([[token]]))
                    continue
            match = ban.find(text.rstrip("\ufffd"), final=end or len(ids) >= settings.max_new_tokens)
            if match is not None and backtracks >= MAX_BACKTRACKS:
                text, end = text[:match.start], True  # no other way out: end the text before it
            elif match is not None:
                backtracks += 1
                at = token_at(offsets, match.start)
                bans = {p: b for p, b in bans.items() if p <= at}
                bans.setdefault(at, set()).add(ids[at])
                del ids[at:], offsets[at:]
                text = self.decode(ids)
                state.crop(base + max(0, at - 1))
                if at == 0:
                    state.logits = first_logits
                else:
                    state.length = base + at - 1
                    state.feed(torch.tensor([[ids[at - 1]]]))
                continue
            if end:
                break
            state.feed(torch.tensor([[token]]))
            hold = ban.hold(text)
            safe = offsets[token_at(offsets, len(text) - hold)] if hold else len(text)
            piece = scanner.feed(text[:safe])
            if piece:
                yield piece
            if scanner.stopped:
                return
        rest = scanner.finish(text.rstrip("\ufffd"))
        if rest:
            yield rest

    def constrained_decoder(self, text: str, seed: int | None = None):
        """A decoder over `text` whose every token the caller chooses among allowed ones (poetry)."""
        from storyloom.engine.torch_decoder import TorchDecoder

        return TorchDecoder(self, text, seed)

    def decode_state(self, prompt_ids: list[int], batch: int = 1) -> "DecodeState":
        """The prompt run once (its KV cache copied for each of `batch` rows), ready to feed tokens."""
        return DecodeState(self, prompt_ids, batch)

    def _stream(self, prompt: str, settings: SamplerSettings, cancel: Cancel | None) -> Iterator[str]:
        prompt_ids = self._prompt_ids(prompt, settings.max_new_tokens)
        watch = Stopwatch(len(prompt_ids))
        before = prompt[-1:]  # what the first token follows (the phrase bias spaces by it)
        if settings.banned:
            try:
                yield from self._banned_pieces(prompt_ids, settings, cancel, watch, before)
            finally:
                self.last_stats = watch.done()
            return
        scanner = StopScanner(settings.stop + self.stop_strings)
        bias = self.phrase_bias(settings)
        context = self.sampler_context(settings)
        if bias is not None:
            context.bias = [bias.pushes("", before)]
        ids: list[int] = []
        text = ""
        try:
            for step in self._steps(prompt_ids, 1, settings, cancel, context):
                token = int(step[0])
                watch.token()
                if token in self.eos_ids:
                    break
                ids.append(token)
                text = self.decode(ids)
                if bias is not None:
                    context.bias = [bias.pushes(text.rstrip("\ufffd"), before)]
                if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                    continue
                piece = scanner.feed(text)
                if piece:
                    yield piece
                if scanner.stopped:
                    return
            rest = scanner.finish(text.rstrip("\ufffd"))
            if rest:
                yield rest
        finally:
            self.last_stats = watch.done()

    def candidates(
        self, prompt: str, n: int, settings: SamplerSettings | None = None, cancel: Cancel | None = None,
        on_step: Callable[[int], None] | None = None, grammar: str | None = None,
        enough: Callable[[list[str], list[bool]], bool] | None = None,
        record: list[RowLogprobs] | None = None, complete: Callable[[str], bool] | None = None,
    ) -> list[str]:
        if grammar is not None:
            self._check_grammar()  # this backend steers tokens itself instead (constrained_decoder)
        settings = settings or SamplerSettings()
        if n < 1:
            raise ValueError("n must be at least 1")
        prompt_ids = self._prompt_ids(prompt, settings.max_new_tokens)
        watch = Stopwatch(len(prompt_ids))
        stops = settings.stop + self.stop_strings
        before = prompt[-1:]
        if settings.banned:  # backing up is per row (each its own cache): one row at a time
            texts = [""] * n
            for i in range(n):
                seed = None if settings.seed is None else settings.seed + i
                texts[i] = "".join(self._banned_pieces(prompt_ids, settings.with_(seed=seed), cancel, watch, before))
                if on_step is not None:
                    on_step(settings.max_new_tokens * (i + 1) // n)
                if enough is not None and i < n - 1 and enough(list(texts), [j <= i for j in range(n)]):
                    break
            self.last_stats = watch.done()
            return texts
        bias = self.phrase_bias(settings)
        context = self.sampler_context(settings)
        if bias is not None:
            context.bias = [bias.pushes("", before)] * n
        rows: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[float]] = [[] for _ in range(n)]
        ends: list[list[int]] = [[] for _ in range(n)]  # where each token ends in its row's text (record)
        done = [False] * n
        texts = [""] * n
        table = self.byte_pieces()  # a row's text grows by its new token's bytes, not a decode of the row
        raw = [bytearray() for _ in range(n)]
        gen = _rng(settings.seed)
        state = self.decode_state(prompt_ids, n)
        history = torch.tensor([prompt_ids] * n, dtype=torch.long)
        live = list(range(n))  # the candidate in each batch row (finished ones leave the batch)
        for count in range(1, settings.max_new_tokens + 1):
            if cancel is not None and cancel.is_set():
                break
            ending = self._early_end(count - 1, settings)
            context.banned = [ending] * len(live) if ending else None
            step = choose_next(state.logits, history, settings, gen, context)
            history = torch.cat([history, step[:, None]], dim=1)
            if on_step is not None:
                on_step(count)
            # the model's own log-prob of each drawn token (choose_next leaves state.logits as they were)
            drawn = token_logprobs(state.logits, step) if record is not None else None
            finished = False
            for j, (i, token) in enumerate(zip(live, step.tolist())):
                if done[i]:
                    continue
                watch.token()
                if token in self.eos_ids:
                    done[i] = finished = True
                    continue
                rows[i].append(token)
                if stops or bias is not None or enough is not None or complete is not None or drawn is not None:
                    if table is not None:
                        raw[i] += table[token] if token < len(table) else b""  # (ids past the tokenizer's decode to nothing)
                        texts[i] = raw[i].decode("utf-8", "replace")
                    else:
                        texts[i] = self.decode(rows[i])
                    if drawn is not None:  # a token that completes a multi-byte character ends where it does
                        logprobs[i].append(drawn[j])
                        ends[i].append(len(texts[i].rstrip("\ufffd")))
                    if any(s in texts[i] for s in stops) or (complete is not None and complete(texts[i])):
                        done[i] = finished = True
            if all(done) or count == settings.max_new_tokens or (cancel is not None and cancel.is_set()):
                break
            # Enough for the caller (say a finished row passes its critic): the batch ends here,
            # and the rows still going come back as far as they got (as at max_new_tokens).
            if enough is not None and enough([_before_stop(t, stops) for t in texts], list(done)):
                break
            going = [j for j, i in enumerate(live) if not done[i]]
            if finished and _worth_shrinking(len(live), len(going), settings.max_new_tokens - count):
                state.keep(going)
                history, step, live = history[going], step[going], [live[j] for j in going]
            if bias is not None:
                context.bias = [{} if done[i] else bias.pushes(texts[i].rstrip("\ufffd"), before) for i in live]
            state.feed(step[:, None])
        self.last_stats = watch.done()
        if record is not None:
            record.extend(RowLogprobs(e, lps) for e, lps in zip(ends, logprobs))
        return [_before_stop(self.decode(row), stops) for row in rows]

    @torch.inference_mode()
    def token_choices(self, prompt: str, text: str, top: int = TOP_ALTERNATIVES) -> list[TokenChoice]:
        """Recomputed by one forward over prompt + text rather than recorded while generating:
        it fits the text as the player sees it (cleaned, picked among candidates, altered, or
        loaded from a save, none of which a record would survive), costs nothing while writing,
        and gives the model's own probabilities, before any sampler reshaped them."""
        ids = self.encode(text, special=False)
        if not ids:
            return []
        prompt_ids = self.encode(prompt)[-max(1, self.context_length - len(ids)):]
        if self.fast is not None:  # our forward: the prompt, then the text's positions
            first, rest = self._fast_logits(prompt_ids, [ids[:-1]] if len(ids) > 1 else [])
            logits = torch.cat([first[None], rest[0]]) if len(ids) > 1 else first[None]
        else:
            logits = self.model(input_ids=torch.tensor([prompt_ids + ids]), logits_to_keep=len(ids) + 1).logits[0]
        logp = torch.log_softmax(logits[: len(ids)].float(), -1)  # row j predicts token j
        best = torch.topk(logp, min(logp.shape[-1], top * 4 + 16), dim=-1)  # room for skipped ones
        starts = [len(self.decode(ids[:i])) for i in range(len(ids))] + [len(text)]
        out = []
        for j, token in enumerate(ids):
            alternatives = []
            for value, alt in zip(best.values[j].tolist(), best.indices[j].tolist()):
                piece = self.decode([alt])
                if _pickable(piece) and alt not in self.eos_ids:
                    alternatives.append((piece, float(torch.tensor(value).exp())))
                if len(alternatives) == top:
                    break
            out.append(TokenChoice(starts[j], text[starts[j]:starts[j + 1]], float(logp[j, token].exp()),
                                   tuple(alternatives)))
        return out

    @torch.inference_mode()
    def score_many(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """Mean token log-prob of each continuation after `prompt`.

        The prompt is run once and its KV cache shared by every continuation, so ranking n
        candidates costs one prefill plus n short rows, not n full prompts.
        """
        conts, longest, prompt_ids = self._score_inputs(prompt, continuations)
        if not longest:
            return [float("-inf")] * len(conts)
        if self.fast is not None:  # our forward: a long prompt in bf16 where the CPU has bf16 units
            # A row's last token is only predicted, never predicts: it is not fed (a 13-token row
            # of the neutral pass then costs 13 positions, not 14).
            first, logits = self._fast_logits(prompt_ids, [c[:-1] for c in conts] if longest > 1 else [])
            return _mean_token_logprobs(first.float(), logits.float() if logits is not None else None, conts)
        out = self.model(input_ids=torch.tensor([prompt_ids]), use_cache=True,
                         past_key_values=new_cache(self.model.config))
        first = torch.log_softmax(out.logits[0, -1].float(), -1)  # predicts each row's first token
        past = out.past_key_values
        past.batch_repeat_interleave(len(conts))
        ids = torch.full((len(conts), longest), self.pad_id, dtype=torch.long)
        mask = torch.ones((len(conts), len(prompt_ids) + longest), dtype=torch.long)
        for i, c in enumerate(conts):
            ids[i, : len(c)] = torch.tensor(c, dtype=torch.long) if c else ids[i, :0]
            mask[i, len(prompt_ids) + len(c):] = 0  # right padding: causal, so real tokens never see it
        logits = self.model(input_ids=ids, attention_mask=mask, past_key_values=past, use_cache=True).logits
        return mean_logprobs(first, torch.log_softmax(logits.float(), -1), conts)

    def _fast_logits(self, prompt_ids: list[int], rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Our forward over the prompt once, then `rows` as one right-padded batch over its cache
        (causal, so no row sees the padding): the logits after the prompt [vocab], and each row
        position's [rows, longest, vocab] (no rows: None)."""
        threads.choose()  # as DecodeState does: the cores other programs leave free
        state = KVState()
        if rows and len(prompt_ids) <= KEPT_PROMPT_TOKENS:
            # A prompt of a token or two (the neutral prompt): its cache is kept, so a call's rows
            # start on it (carrying it in every row cost a position per row, each call).
            cached, kept_first = self._short_prompt(prompt_ids)
            first = kept_first.clone()  # the caller may write into it; the kept one stays as it is
            state.cache, state.length = cached, len(prompt_ids)
        else:
            first = self.fast.forward(torch.tensor([prompt_ids]), state)[0]
        if not rows:
            return first, None
        self.fast.expand(state, len(rows))
        ids = torch.full((len(rows), max(len(r) for r in rows)), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        if _stepped_rows(self.fast, ids.shape):
            # Short rows (the neutral pass: ~12 tokens of 4 candidates) as a batch through the C
            # step, a position at a time (right padding is fed too: causal, no row's real tokens
            # see it): on 2 cores with AVX2 the step took 0.9-2.1 s where the torch forward over
            # the same 48 positions took 1.5-2.3 (busy machine); every k>1 co-write turn pays it.
            return first, torch.stack([self.fast.forward(ids[:, j : j + 1], state) for j in range(ids.shape[1])], 1)
        return first, self.fast.forward(ids, state, all_logits=True)

    def _short_prompt(self, prompt_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A short prompt's KV cache (one row, exactly its positions: a row fed after it writes a
        fresh copy, never this one) and its logits, computed once: the neutral pass of every co-write turn."""
        kept = self.__dict__.setdefault("_short_prompts", {})
        key = tuple(prompt_ids)
        if key not in kept:
            state = KVState()
            first = self.fast.forward(torch.tensor([prompt_ids]), state)[0]
            if len(kept) >= PROMPTS_KEPT:
                kept.pop(next(iter(kept)))
            kept[key] = (state.cache[:, :, :, :, : len(prompt_ids)].clone(), first)
        return kept[key]

    def _score_inputs(self, prompt: str, continuations: Sequence[str]) -> tuple[list[list[int]], int, list[int]]:
        """(each continuation's ids, the longest's length, the prompt's ids cut to leave it room)."""
        conts = [self.encode(c, special=False) for c in continuations]
        longest = max((len(c) for c in conts), default=0)
        prompt_ids = self.encode(prompt)[-max(1, self.context_length - longest):] if longest else []
        return conts, longest, prompt_ids
