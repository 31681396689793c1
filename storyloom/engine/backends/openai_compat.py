"""A remote engine: any server speaking the OpenAI-compatible *completions* API.

llama.cpp's llama-server, llama-cpp-python's server, vLLM, Ollama and hosted endpoints all serve
`/v1/completions`; they differ in everything around it (a tokenize endpoint, the context window,
`n`, prompt log-probs, grammars). So on connecting we ask the server what it is and then check
each ability with a tiny request (a few tokens each) instead of trusting a table: a server that
returns nonsense prompt log-probs (llama-cpp-python 0.3 does) is not used for ranking.

Spec: `openai:http://127.0.0.1:8080/v1` (a plain http(s) URL works too), optionally `#name` for
the served model (else the first of `/v1/models`) and `;ctx=N` / `;tokenizer=FOLDER_OR_ID`:
`openai:http://host:8000/v1#Qwen/Qwen2.5-7B;ctx=8192`. The API key comes from STORYLOOM_API_KEY
(or OPENAI_API_KEY), never from the spec, and is kept out of every message.

The HTTP client is the `openai` package: it does the SSE parsing, the timeouts and the retries
with backoff on 429/5xx and dropped connections before a reply starts; a reply that breaks off
midway is reported, never retried behind the player's back.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from storyloom.engine.generate import (
    Cancel,
    Capabilities,
    GenerationStats,
    Generator,
    ModelInfo,
    RowLogprobs,
    StopScanner,
    Stopwatch,
    cut_at_stops,
)
from storyloom.engine.models import ModelError
from storyloom.engine.sampling import SamplerSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0  # a long prompt on a big model can take a while before the first token
RETRIES = 3
DEFAULT_CONTEXT = 2048  # when the server does not say its window: small enough for any server
CHARS_PER_TOKEN_ESTIMATE = 2.5  # no tokenizer at all: over-count (English BPE is ~4 chars a token)
PROBE_PROMPT = "The old lighthouse keeper climbed the stairs"


class RemoteError(ModelError):
    """The server could not be used; the message is one sentence, without the API key."""


@dataclass(frozen=True)
class Remote:
    base_url: str  # ends in /v1
    model: str | None = None
    context: int | None = None
    tokenizer: str | None = None

    @property
    def root(self) -> str:
        """The server's root (where llama.cpp's /props and vLLM's /tokenize live)."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url


def api_key() -> str | None:
    return os.environ.get("STORYLOOM_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def redact(text: str) -> str:
    """`text` with the API key (and any password in a URL) replaced by ***."""
    key = api_key()
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return text


def parse_remote(spec: str) -> Remote:
    raw = spec.strip().removeprefix("openai:")
    address, _, fragment = raw.partition("#")
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(f"A server address looks like openai:http://127.0.0.1:8080/v1, not {_short(spec)!r}.")
    if parts.username or parts.password:
        raise RemoteError("Put the server's API key in STORYLOOM_API_KEY, not in the address.")
    if parts.query:
        raise RemoteError("A server address takes no ?query; use #model;ctx=N;tokenizer=... for options.")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise RemoteError(f"The port in {_short(address)!r} is not a number from 1 to 65535.") from None
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    model, context, tokenizer = None, None, None
    for i, item in enumerate(p.strip() for p in fragment.split(";") if p.strip()):
        name, eq, value = item.partition("=")
        if not eq and i == 0:
            model = item
        elif name == "ctx" and value.isdigit() and 256 <= int(value) <= 10_000_000:
            context = int(value)
        elif name == "tokenizer" and value:
            tokenizer = value
        else:
            raise RemoteError(f"Unknown server option {_short(item)!r}: use #model;ctx=N;tokenizer=FOLDER.")
    return Remote(base, model, context, tokenizer)


def _short(text: str, limit: int = 80) -> str:
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- errors -------------------------------------------------------------------------------
def _explain(exc: Exception, where: str) -> RemoteError:
    """One sentence for any failure of the client, the connection or the server."""
    import openai

    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        why = f"did not answer within {READ_TIMEOUT:.0f} s"
    elif isinstance(exc, openai.APIConnectionError):
        why = "cannot be reached (is it running?)"
    elif isinstance(exc, openai.AuthenticationError):
        why = "refused the API key (set STORYLOOM_API_KEY)"
    elif isinstance(exc, openai.NotFoundError):
        why = "has no such model or endpoint (404)"
    elif isinstance(exc, openai.APIStatusError):
        detail = ""
        try:
            body = exc.response.json()
            err = body.get("error", body) if isinstance(body, dict) else body
            detail = err.get("message", "") if isinstance(err, dict) else str(err)
        except Exception:  # noqa: BLE001 - a non-JSON error page
            detail = exc.response.text[:200] if exc.response is not None else ""
        why = f"answered {exc.status_code}" + (f": {_short(str(detail).strip(), 120)}" if detail else "")
    elif isinstance(exc, (ValueError, KeyError, TypeError, AttributeError, IndexError)):
        why = "sent a reply StoryLoom cannot read"
    else:
        name = type(exc).__name__
        if any(k in name for k in ("Protocol", "Read", "Stream", "Network", "Connect", "Remote")):
            why = "closed the connection in the middle of its reply"
        else:
            why = f"failed ({name})"
    return RemoteError(redact(f"The server at {where} {why}."))


# -- the generator ------------------------------------------------------------------------
@dataclass
class _Found:
    """What connecting found out about the server."""

    family: str = "openai-compatible"
    model: str = ""
    context: int | None = None
    parallel: int = 4
    tokenize: str | None = None  # which endpoint counts tokens: "llama.cpp" | "llama-cpp-python" | "vllm"
    grammar_field: str | None = None  # how this server takes a GBNF grammar
    batch: bool = False
    scoring: bool = False
    token_logprobs: bool = False
    raw_logprobs: bool = False  # its token log-probs are the model's own, before its sampler
    record_logprobs: bool = False  # candidates() asks for them, for co-write's ranking (see _probe)
    why_not_scoring: str = ""
    min_p: str = ""  # "yes" the server uses min_p; "maybe" it accepted the field (it may ignore it)


class OpenAIGenerator(Generator):
    """Completions from a remote server; see the module docstring."""

    def __init__(self, remote: Remote, client, found: _Found, local_tokenizer=None):
        self.remote = remote
        self.client = client
        self.found = found
        self.local_tokenizer = local_tokenizer
        self._slots = threading.BoundedSemaphore(max(1, found.parallel))
        exact = found.tokenize is not None or local_tokenizer is not None
        self.capabilities = Capabilities(
            stream=True, batch=found.batch, token_logprobs=found.token_logprobs, scoring=found.scoring,
            grammar="gbnf" if found.grammar_field else None, token_steering=False, exact_tokens=exact,
            seed=True, parallel=max(1, found.parallel),
        )
        counting = ("the server's tokenizer" if found.tokenize else "a local tokenizer" if local_tokenizer
                    else f"an estimate ({CHARS_PER_TOKEN_ESTIMATE} characters a token)")
        extra = {
            "server": f"{redact(remote.base_url)} ({found.family})",
            "abilities": ", ".join(k for k, v in (("stream", True), ("n per request", found.batch),
                                                   ("scoring", found.scoring), ("grammar", bool(found.grammar_field)),
                                                   ("token log-probs", found.token_logprobs),
                                                   ("log-probs while writing", found.record_logprobs)) if v),
            "token counts": counting,
            "parallel requests": found.parallel,
        }
        extra["samplers"] = ("min-p, DRY, XTC (banned phrases stay local-only)" if found.family == "llama.cpp"
                             else "min-p (no DRY, XTC or banned phrases)" if found.min_p == "yes"
                             else "min-p is sent but may be ignored (no DRY, XTC or banned phrases)"
                             if found.min_p == "maybe" else "none beyond temperature and top-p")
        if not found.scoring and found.why_not_scoring:
            extra["no scoring"] = found.why_not_scoring
        context = remote.context or found.context
        if not context:
            extra["context"] = f"the server does not say its window: assuming {DEFAULT_CONTEXT} (set ;ctx=N)"
        self.info = ModelInfo(name=found.model, backend="openai", context_length=context or DEFAULT_CONTEXT,
                              location=redact(remote.base_url), chat_template=False, extra=extra)
        self.last_stats = GenerationStats()
        self._count_cache: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.streamed_pieces = 0

    # -- requests ------------------------------------------------------------------------
    def _body(self, settings: SamplerSettings, grammar: str | None, stops: Sequence[str] = ()) -> dict:
        body: dict = {"max_tokens": settings.max_new_tokens, "temperature": settings.temperature,
                      "top_p": settings.top_p}
        stop = list(dict.fromkeys([*settings.stop, *stops]))[:4]  # the OpenAI API takes at most 4
        if stop:
            body["stop"] = stop
        if settings.seed is not None:
            body["seed"] = settings.seed
        extra: dict = {}
        family = self.found.family
        if family in ("llama.cpp", "llama-cpp-python"):
            extra.update(top_k=settings.top_k, repeat_penalty=settings.repetition_penalty,
                         typical_p=settings.typical_p)
            if family == "llama.cpp":
                extra["repeat_last_n"] = settings.repetition_range or -1
                extra.update(_llama_cpp_samplers(settings))
        elif family == "vllm":
            extra.update(top_k=settings.top_k or -1, repetition_penalty=settings.repetition_penalty)
        # A mode's shortest turn (no end of text before it): the servers that document min_tokens.
        # Others write as they would (llama.cpp's server has no such field).
        if settings.min_new_tokens and family in ("llama-cpp-python", "vllm"):
            extra["min_tokens"] = settings.min_new_tokens
        # min_p only when on: a request with the defaults stays what every server accepts
        if settings.min_p and self.found.min_p:
            extra["min_p"] = settings.min_p
        bias = self._logit_bias(settings)
        if bias:
            body["logit_bias"] = bias
        if grammar is not None:
            field = self.found.grammar_field
            extra.update({"structured_outputs": {"grammar": grammar}} if field == "structured_outputs"
                         else {field: grammar})
        if extra:
            body["extra_body"] = extra
        return body

    def ignored_samplers(self, settings: SamplerSettings) -> list[str]:
        """The samplers `settings` turns on that this server will not apply (said on screen)."""
        out = []
        if settings.min_p and self.found.min_p != "yes":
            out.append("min-p" + (" (sent; the server may ignore it)" if self.found.min_p == "maybe" else ""))
        if self.found.family != "llama.cpp":
            out += [name for name, on in (("DRY", settings.dry_multiplier), ("XTC", settings.xtc_probability))
                    if on]
        if settings.banned:
            out.append("banned phrases")
        if settings.phrase_bias and not self._can_tokenize():
            out.append("phrase bias (the server does not say its token ids)")
        return out

    def _can_tokenize(self) -> bool:
        return self.local_tokenizer is not None or self.found.tokenize in ("llama.cpp", "vllm")

    def _logit_bias(self, settings: SamplerSettings) -> dict[str, float]:
        """The phrase bias as the OpenAI API's logit_bias: only each phrase's first token (as it
        follows a word), for the whole reply, since a server cannot follow a phrase token by token
        or stop pushing one already written (the local engine does both)."""
        if not settings.phrase_bias or not self._can_tokenize():
            return {}
        out: dict[str, float] = {}
        for phrase, value in settings.phrase_bias:
            token = self._first_token(" " + " ".join(phrase.split()))
            if token is not None and abs(value) > abs(out.get(str(token), 0.0)):
                out[str(token)] = value
        return out

    def _first_token(self, text: str) -> int | None:
        cache = self.__dict__.setdefault("_first_tokens", {})
        if text not in cache:
            if self.local_tokenizer is not None:
                ids = self.local_tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = _server_tokens(self.client, self.remote, self.found, text)
            cache[text] = int(ids[0]) if ids else None
        return cache[text]

    def _fit(self, prompt: str, max_new: int) -> str:
        """Keep the end of a prompt that would overflow the server's window (the recent story)."""
        room = self.context_length - max_new - 8
        if self.count_tokens(prompt) <= room:
            return prompt
        lo, hi = 0, len(prompt)
        while lo < hi:  # the longest tail that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.count_tokens(prompt[-mid:]) <= room else (lo, mid - 1)
        return prompt[-lo:] if lo else ""

    def _open(self, prompt: str, body: dict, n: int = 1):
        try:
            return self.client.completions.create(model=self.found.model, prompt=prompt, stream=True,
                                                  **({"n": n} if n > 1 else {}), **body)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence
            raise _explain(exc, redact(self.remote.base_url)) from None

    def _chunks(self, stream, cancel: Cancel | None) -> Iterator[tuple[int, str, str | None, object]]:
        """(choice index, text, finish reason, log-probs or None) as they arrive; closing the
        stream (on cancel, or when the caller stops reading and closes this) drops the
        connection, which tells the server to stop at once."""
        where = redact(self.remote.base_url)
        events = finished = 0
        try:
            for chunk in stream:
                if cancel is not None and cancel.is_set():
                    return
                events += 1
                for choice in chunk.choices or ():
                    finished += choice.finish_reason is not None
                    if choice.text:
                        with self._count_lock:
                            self.streamed_pieces += 1  # every piece streamed, all requests (benches)
                    yield (int(choice.index or 0), choice.text or "", choice.finish_reason,
                           getattr(choice, "logprobs", None))
        except RemoteError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _explain(exc, where) from None
        finally:
            stream.close()
        if cancel is not None and cancel.is_set():
            return
        # Every OpenAI-style stream ends with a finish reason; a reply without one was cut off
        # (a server that died on a connection it closes cleanly), one with no events was not a stream.
        if not events:
            raise RemoteError(f"The server at {where} sent a reply StoryLoom cannot read.")
        if not finished:
            raise RemoteError(f"The server at {where} closed the connection in the middle of its reply.")

    def _stream(self, prompt: str, settings: SamplerSettings, cancel: Cancel | None,
                grammar: str | None = None) -> Iterator[str]:
        prompt = self._fit(prompt, settings.max_new_tokens)
        watch = Stopwatch()
        scanner = StopScanner(settings.stop)
        text = ""
        try:
            with self._slots:
                stream = self._open(prompt, self._body(settings, grammar, self.stop_strings))
                for _, piece, _finish, _ in self._chunks(stream, cancel):
                    if not piece:
                        continue
                    watch.token()
                    text += piece
                    out = scanner.feed(text)
                    if out:
                        yield out
                    if scanner.stopped:
                        return
            rest = scanner.finish(text)
            if rest:
                yield rest
        finally:
            self.last_stats = watch.done()

    def candidates(self, prompt: str, n: int, settings: SamplerSettings | None = None,
                   cancel: Cancel | None = None, on_step: Callable[[int], None] | None = None,
                   grammar: str | None = None, enough=None, record=None, complete=None) -> list[str]:
        """n continuations: one request with `n` where the server takes it, otherwise concurrent
        requests (as many at once as the server has slots), each with its own seed. Every reply
        streams, so a candidate stops where `complete` calls it whole (its own request is closed,
        which stops the server; a choice of one request with `n` is read no further, and the
        request closes once every choice is done), and `enough` ends the call (requests not yet
        sent are not sent). `record` gets each candidate's token log-probs where the server
        reports the model's own cheaply (see _probe); else it stays empty and ranking scores."""
        settings = settings or SamplerSettings()
        if n < 1:
            raise ValueError("n must be at least 1")
        if grammar is not None:
            self._check_grammar()
        prompt = self._fit(prompt, settings.max_new_tokens)
        watch = Stopwatch()
        texts = [""] * n
        counts = [0] * n
        done = [False] * n
        rows = [RowLogprobs([], []) for _ in range(n)] if record is not None and self.found.record_logprobs else None
        trusted = [True] * n  # every piece of the row came with its log-probs
        stops = tuple(settings.stop) + self.stop_strings  # the server gets at most 4: the rest end a row here
        lock = threading.Lock()
        halt = threading.Event()  # `enough` said so: every request still going closes

        def judge() -> None:  # under the lock; once enough has said so it is not asked again
            if enough is not None and not halt.is_set() and not all(done) and enough(
                    [cut_at_stops(t, settings.stop)[0] for t in texts], list(done)):
                halt.set()

        def seen(index: int, piece: str, logprobs) -> bool:
            """Take a piece of candidate `index`; True once that candidate is done."""
            with lock:
                if done[index]:
                    return True
                if rows is not None and (piece or logprobs is not None):
                    start = len(texts[index])
                    trusted[index] &= _add_logprobs(rows[index], logprobs, start, start + len(piece))
                if piece:
                    texts[index] += piece
                    counts[index] += 1
                    watch.token()
                    if on_step is not None:
                        on_step(max(counts))
                    text = texts[index]
                    if (complete is not None and complete(text)) or any(s in text for s in stops):
                        done[index] = True
                    judge()
                return done[index]

        def finished(index: int) -> None:
            with lock:
                if not done[index]:
                    done[index] = True
                    judge()

        stopped = _Either(cancel, halt)

        def read(stream, one: int | None = None) -> None:
            chunks = self._chunks(stream, stopped)
            try:
                for index, piece, finish, logprobs in chunks:
                    index = index if one is None else one
                    if not 0 <= index < n:
                        continue
                    if seen(index, piece, logprobs) and one is not None:
                        return  # its turn is whole: closing the stream stops the server
                    if finish is not None:
                        finished(index)
                    if one is None and all(done):
                        return
            finally:
                chunks.close()

        logprobs_field = {"logprobs": 1} if rows is not None else {}
        if self.found.batch and n > 1:
            with self._slots:
                read(self._open(prompt, self._body(settings, grammar, self.stop_strings) | logprobs_field, n))
        else:
            def one(index: int) -> None:
                seed = None if settings.seed is None else settings.seed + index
                body = self._body(settings.with_(seed=seed), grammar, self.stop_strings) | logprobs_field
                with self._slots:
                    if not stopped.is_set():  # enough may have come while it waited for a slot
                        read(self._open(prompt, body), index)
                finished(index)

            with ThreadPoolExecutor(max_workers=min(n, max(1, self.found.parallel))) as pool:
                for future in [pool.submit(one, i) for i in range(n)]:
                    future.result()  # the first failure is raised, with its sentence
        self.last_stats = watch.done()
        if rows is not None:
            record.extend(row if ok else RowLogprobs([], []) for row, ok in zip(rows, trusted))
        out = []
        for text in texts:
            scanner = StopScanner(settings.stop)
            out.append(scanner.feed(text) + scanner.finish(text))
        return out

    def score_many(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """Mean token log-prob of each continuation, from the server's echoed prompt log-probs."""
        if not self.capabilities.scoring:
            raise NotImplementedError(self.found.why_not_scoring or "this server cannot score text")
        if not continuations:
            return []

        def one(text: str) -> float:
            if not text:
                return float("-inf")
            logprobs = self._echo(prompt + text)
            picked = [lp for offset, lp in logprobs if offset >= len(prompt) and lp is not None]
            return sum(picked) / len(picked) if picked else float("-inf")

        with ThreadPoolExecutor(max_workers=min(len(continuations), max(1, self.found.parallel))) as pool:
            return list(pool.map(one, continuations))

    def token_choices(self, prompt: str, text: str, top: int = 10) -> list:
        """Each token of `text` after `prompt`, its probability and the `top` alternatives: from
        an echo of prompt + text where the server's echoed log-probs were found trustworthy on
        connecting (capabilities.scoring), else by having the server write `text` itself under a
        grammar that allows only it (llama.cpp's llama-server echoes no prompt log-probs, but
        reports the model's own, pre-grammar, log-probs of what it writes)."""
        if not self.capabilities.token_logprobs:
            return super().token_choices(prompt, text, top)
        if self.capabilities.scoring:
            return self._echoed_choices(prompt, text, top)
        if self.found.grammar_field:
            return self._forced_choices(prompt, text, top)
        return super().token_choices(prompt, text, top)

    def _echoed_choices(self, prompt: str, text: str, top: int) -> list:
        from storyloom.engine.generate import TokenChoice

        try:
            with self._slots:
                reply = self.client.completions.create(model=self.found.model, prompt=prompt + text, max_tokens=1,
                                                       echo=True, logprobs=top, temperature=0)
            lp = reply.choices[0].logprobs
            rows = list(zip(lp.text_offset, lp.tokens, lp.token_logprobs, lp.top_logprobs or []))
        except Exception as exc:  # noqa: BLE001
            raise _explain(exc, redact(self.remote.base_url)) from None
        out = []
        for offset, token, logprob, alternatives in rows:
            if offset < len(prompt) or offset >= len(prompt) + len(text) or logprob is None:
                continue
            out.append(TokenChoice(offset - len(prompt), token, math.exp(logprob), _alternatives(alternatives, top)))
        return out

    def _forced_choices(self, prompt: str, text: str, top: int) -> list:
        from storyloom import StoryloomError
        from storyloom.engine.generate import TokenChoice

        if not text:
            return []
        body = self._body(SamplerSettings(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
                                          max_new_tokens=len(text.encode()) + 4, seed=0),
                          f"root ::= {gbnf_literal(text)}")
        try:
            with self._slots:
                reply = self.client.completions.create(model=self.found.model, prompt=prompt, logprobs=top,
                                                       stream=False, **body)
            rows = _logprob_rows(reply.choices[0].logprobs)
        except Exception as exc:  # noqa: BLE001
            raise _explain(exc, redact(self.remote.base_url)) from None
        out, offset = [], 0
        for token, logprob, alternatives in rows:
            if offset >= len(text) or logprob is None:
                break
            out.append(TokenChoice(offset, token, math.exp(logprob), _alternatives(alternatives, top)))
            offset += len(token)
        if "".join(c.text for c in out) != text:
            raise StoryloomError(f"{self.name} did not write the text back under a grammar, so its token "
                                 "probabilities are not shown.")
        return out

    def _echo(self, text: str) -> list[tuple[int, float | None]]:
        """(character offset, log-prob) of every token of `text` as the server reads it."""
        try:
            with self._slots:
                reply = self.client.completions.create(model=self.found.model, prompt=text, max_tokens=1,
                                                       echo=True, logprobs=1, temperature=0)
            lp = reply.choices[0].logprobs
            return list(zip(lp.text_offset, lp.token_logprobs))
        except Exception as exc:  # noqa: BLE001
            raise _explain(exc, redact(self.remote.base_url)) from None

    # -- tokens --------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        cached = self._count_cache.get(text)
        if cached is not None:
            return cached
        if self.local_tokenizer is not None:
            n = len(self.local_tokenizer(text, add_special_tokens=False)["input_ids"])
        elif self.found.tokenize is not None:
            n = _server_count(self.client, self.remote, self.found, text)
        else:
            n = math.ceil(len(text.encode("utf-8")) / CHARS_PER_TOKEN_ESTIMATE)
        if len(self._count_cache) > 8192:
            self._count_cache.clear()
        self._count_cache[text] = n
        return n


class _Either:
    """Set when either is: the caller's cancel or the call's own stop."""

    def __init__(self, *events):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _add_logprobs(row: RowLogprobs, logprobs, start: int, end: int) -> bool:
    """Add the tokens of one streamed piece (text[start:end] of its candidate) to `row`, each
    ending where its text does within the piece, the last at the piece's end (a token whose text
    a server shows only in part, half a character, still ends inside its piece). False where the
    piece came without log-probs: that row is then not trusted."""
    try:
        tokens = _logprob_rows(logprobs)
    except (AttributeError, TypeError):
        return False
    if not tokens or any(not isinstance(v, (int, float)) or math.isnan(v) for _, v, _ in tokens):
        return False
    at = start
    for k, (token, value, _) in enumerate(tokens):
        at = end if k == len(tokens) - 1 else min(end, at + len(token or ""))
        row.ends.append(at)
        row.logprobs.append(float(value))
    return True


def _llama_cpp_samplers(settings: SamplerSettings) -> dict:
    """llama-server's /completion fields for DRY and XTC (its names), only for those turned on."""
    out: dict = {}
    if settings.dry_multiplier:
        out.update(dry_multiplier=settings.dry_multiplier, dry_base=settings.dry_base,
                   dry_allowed_length=settings.dry_allowed_length,
                   dry_penalty_last_n=settings.dry_range or -1,
                   dry_sequence_breakers=list(settings.dry_sequence_breakers))
    if settings.xtc_probability:
        out.update(xtc_probability=settings.xtc_probability, xtc_threshold=settings.xtc_threshold)
    return out


def _server_count(client, remote: Remote, found: _Found, text: str) -> int:
    try:
        if found.tokenize == "llama-cpp-python":
            reply = client.post(remote.root + "/extras/tokenize/count", cast_to=object,
                                body={"input": text, "model": found.model})
            return int(reply["count"])
        if found.tokenize == "vllm":
            reply = client.post(remote.root + "/tokenize", cast_to=object,
                                body={"model": found.model, "prompt": text, "add_special_tokens": False})
            return int(reply["count"])
        reply = client.post(remote.root + "/tokenize", cast_to=object, body={"content": text})
        return len(reply["tokens"])
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, redact(remote.base_url)) from None


# -- connecting ---------------------------------------------------------------------------
def _server_tokens(client, remote: Remote, found: _Found, text: str) -> list[int]:
    """The server's token ids for `text` (llama.cpp and vLLM's /tokenize)."""
    try:
        if found.tokenize == "vllm":
            reply = client.post(remote.root + "/tokenize", cast_to=object,
                                body={"model": found.model, "prompt": text, "add_special_tokens": False})
        else:
            reply = client.post(remote.root + "/tokenize", cast_to=object, body={"content": text})
        tokens = reply["tokens"]
        return [int(t["id"] if isinstance(t, dict) else t) for t in tokens]
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, redact(remote.base_url)) from None


def make_client(remote: Remote, retries: int = RETRIES):
    import openai

    return openai.OpenAI(base_url=remote.base_url, api_key=api_key() or "no-key", max_retries=retries,
                         timeout=openai.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT))


def connect(spec: str, progress=lambda stage, fraction: None) -> OpenAIGenerator:
    """Reach the server, find its model, family and window, and check what it can do."""
    try:
        import openai  # noqa: F401
    except ImportError:
        raise RemoteError("Remote servers need the `openai` package: pip install openai.") from None
    remote = parse_remote(spec)
    where = redact(remote.base_url)
    client = make_client(remote)
    progress(f"Connecting to {where}", None)
    found = _Found()
    try:
        listed = client.get("/models", cast_to=object)
        models = [m for m in (listed.get("data") or []) if isinstance(m, dict) and m.get("id")]
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, where) from None
    if remote.model:
        match = [m for m in models if m["id"] == remote.model]
        if models and not match:
            names = ", ".join(m["id"] for m in models[:5])
            raise RemoteError(_short(f"The server at {where} does not serve {remote.model!r} (it serves: {names}).", 200))
        entry = match[0] if match else {"id": remote.model}
    elif models:
        entry = models[0]
    else:
        raise RemoteError(f"The server at {where} lists no models: name one as {where}#MODEL.")
    found.model = str(entry["id"])
    found.context = _int(entry.get("max_model_len")) or _int((entry.get("meta") or {}).get("n_ctx_train"))
    if entry.get("max_model_len"):
        found.family, found.parallel = "vllm", 16
    _identify(client, remote, found)
    local_tokenizer = _local_tokenizer(remote.tokenizer) if remote.tokenizer else None
    progress(f"Asking {where} what it can do", None)
    _probe(client, found, where)
    return OpenAIGenerator(remote, client, found, local_tokenizer)


def _int(value) -> int | None:
    try:
        return int(value) if value is not None and int(value) > 0 else None
    except (TypeError, ValueError):
        return None


def _identify(client, remote: Remote, found: _Found) -> None:
    """Which server this is, from the endpoints only it has (no retries: a 404 is an answer)."""
    quick = client.with_options(max_retries=0, timeout=CONNECT_TIMEOUT * 2)

    def ask(method: str, path: str, body=None):
        try:
            if method == "get":
                return quick.get(remote.root + path, cast_to=object)
            return quick.post(remote.root + path, cast_to=object, body=body)
        except Exception:  # noqa: BLE001 - absent endpoints are how servers differ
            return None

    props = ask("get", "/props")
    if isinstance(props, dict) and "default_generation_settings" in props:
        found.family, found.tokenize = "llama.cpp", "llama.cpp"
        settings = props.get("default_generation_settings") or {}
        found.context = _int(settings.get("n_ctx")) or found.context
        found.parallel = _int(props.get("total_slots")) or 1
        return
    counted = ask("post", "/extras/tokenize/count", {"input": "hello", "model": found.model})
    if isinstance(counted, dict) and "count" in counted:
        # llama-cpp-python: one request at a time (a new streaming request even interrupts the
        # running one unless the server was started with --interrupt_requests false).
        found.family, found.tokenize, found.parallel = "llama-cpp-python", "llama-cpp-python", 1
        return
    counted = ask("post", "/tokenize", {"model": found.model, "prompt": "hello"})
    if isinstance(counted, dict) and "count" in counted:
        found.family, found.tokenize = "vllm", "vllm"
        found.context = _int(counted.get("max_model_len")) or found.context
        found.parallel = max(found.parallel, 16)
        return
    version = ask("get", "/api/version")
    if isinstance(version, dict) and "version" in version:
        found.family = "ollama"


def _probe(client, found: _Found, where: str) -> None:
    """Check each optional ability with a request of a few tokens."""
    quick = client.with_options(max_retries=1)

    def complete(**kw):
        kw.setdefault("temperature", 0)
        return quick.completions.create(model=found.model, prompt=kw.pop("prompt", PROBE_PROMPT), **kw)

    try:
        greedy = complete(max_tokens=4, logprobs=1)
    except Exception as exc:  # noqa: BLE001 - the plainest request failed: the server is unusable
        raise _explain(exc, where) from None
    choice = greedy.choices[0]
    lp = getattr(choice, "logprobs", None)
    found.token_logprobs = bool(lp and lp.token_logprobs and all(v is not None for v in lp.token_logprobs))
    found.raw_logprobs = found.token_logprobs and _logprobs_before_sampler(complete, lp)
    # Candidates ask for their tokens' log-probs (so co-write's ranking need not score them
    # again) only where they are the model's own and come cheap. llama-cpp-python 0.3 reports
    # the model's own (from its raw logits), but for each token it reports, it sorts the whole
    # vocabulary in Python (18 ms a token here, as long as the 135M model takes to write one: a
    # co-write k=4 paragraph turn took 3.3x as long, median 15.1 s against 4.5 s), and it cannot
    # score, so co-write ranks by repetition there and would read none of them.
    found.record_logprobs = found.raw_logprobs and found.family != "llama-cpp-python"
    try:
        found.batch = len(complete(max_tokens=1, n=2, temperature=1.0).choices) == 2
    except Exception:  # noqa: BLE001
        found.batch = False
    found.scoring, found.why_not_scoring = _check_scoring(complete, choice.text or "", lp)
    if found.family in ("llama.cpp", "llama-cpp-python", "vllm"):
        found.min_p = "yes"  # each documents min_p in its completions request
    else:  # a probe can tell only whether the server rejects the field, not whether it uses it
        try:
            complete(max_tokens=1, extra_body={"min_p": 0.05})
            found.min_p = "maybe"
        except Exception:  # noqa: BLE001 - it refuses unknown fields: never send them
            found.min_p = ""
    for field in (("grammar",) if found.family in ("llama.cpp", "llama-cpp-python") else
                  ("structured_outputs", "guided_grammar", "grammar")):
        body = {"structured_outputs": {"grammar": 'root ::= "qz7"'}} if field == "structured_outputs" \
            else {field: 'root ::= "qz7"'}
        try:
            if (complete(max_tokens=4, extra_body=body).choices[0].text or "").strip() == "qz7":
                found.grammar_field = field
                break
        except Exception as exc:  # noqa: BLE001 - a server that rejects the field cannot do grammars
            log.debug("grammar probe: %s rejected the %r field (%s)", where, field, type(exc).__name__)
            continue


def _logprobs_before_sampler(complete, greedy) -> bool:
    """Whether the server's token log-probs are the model's own (what the local engine records
    and ranking compares), not what its sampler made of them: the likeliest token at the first
    place must have the same log-prob under greedy decoding as under a hot, narrow sampler
    (temperature and top-p reshape it where a server reports what it sampled from)."""
    try:
        hot = complete(max_tokens=1, logprobs=1, temperature=1.8, top_p=0.5, seed=1)
        a, b = _likeliest(greedy), _likeliest(hot.choices[0].logprobs)
    except Exception:  # noqa: BLE001 - no answer is no promise
        return False
    return a is not None and b is not None and a[0] == b[0] and abs(a[1] - b[1]) < 0.05


def _likeliest(lp) -> tuple[str, float] | None:
    """The likeliest token at the first place of a reply's log-probs, with its log-prob."""
    rows = _logprob_rows(lp)
    top = {t: v for t, v in (rows[0][2] or {}).items() if isinstance(v, (int, float))} if rows else {}
    return max(top.items(), key=lambda tv: tv[1]) if top else None


def _check_scoring(complete, generated: str, lp) -> tuple[bool, str]:
    """Prompt log-probs are trusted only if they agree with the log-probs the server gave the
    same tokens when it generated them (some servers echo numbers that are not log-probs)."""
    if not generated.strip() or not lp or not lp.token_logprobs:
        return False, "the server gives no log-probs"
    try:
        echoed = complete(prompt=PROBE_PROMPT + generated, max_tokens=1, echo=True, logprobs=1)
        elp = echoed.choices[0].logprobs
        pairs = [(o, v) for o, v in zip(elp.text_offset, elp.token_logprobs) if o >= len(PROBE_PROMPT)]
    except Exception:  # noqa: BLE001
        return False, "the server does not echo prompt log-probs"
    got = [v for _, v in pairs][: len(lp.token_logprobs)]
    want = list(lp.token_logprobs)[: len(got)]
    if not got or any(v is None for v in got):
        return False, "the server does not echo prompt log-probs"
    if max(abs(a - b) for a, b in zip(got, want)) > 0.1:
        return False, "the server's prompt log-probs disagree with its own generation log-probs"
    return True, ""


def gbnf_literal(text: str) -> str:
    """`text` as one GBNF string literal (quotes, backslashes and control characters escaped)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _logprob_rows(lp) -> list[tuple[str, float | None, dict]]:
    """(token, log-prob, {alternative: log-prob}) of each written token, from either shape servers
    use: the completions one (tokens, token_logprobs, top_logprobs) or the chat one (content)."""
    if lp is None:
        return []
    content = getattr(lp, "content", None)
    if content is None and isinstance(lp, dict):
        content = lp.get("content")
    if content:
        def field(item, name):
            return item.get(name) if isinstance(item, dict) else getattr(item, name, None)
        return [(field(c, "token") or "", field(c, "logprob"),
                 {field(a, "token"): field(a, "logprob") for a in field(c, "top_logprobs") or ()}) for c in content]
    tops = list(lp.top_logprobs or [])
    return [(t, v, tops[i] if i < len(tops) else {}) for i, (t, v) in enumerate(zip(lp.tokens, lp.token_logprobs))]


def _alternatives(alternatives, top: int) -> tuple:
    return tuple(sorted(((t, math.exp(v)) for t, v in (alternatives or {}).items() if v is not None),
                        key=lambda tv: -tv[1])[:top])


def _local_tokenizer(name: str):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise RemoteError(f"Could not load the tokenizer {_short(name)!r} (a local folder or a cached "
                          f"Hugging Face id): {type(exc).__name__}.") from None


def with_found(generator: OpenAIGenerator, **changes) -> OpenAIGenerator:
    """A copy of `generator` that believes the server can (or cannot) do something: for tests."""
    return OpenAIGenerator(generator.remote, generator.client, replace(generator.found, **changes),
                           generator.local_tokenizer)
