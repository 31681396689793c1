"""A Generator over llama-cpp-python in this process: what a llama.cpp server offers (completions
that follow a GBNF grammar, stop strings, seeds), without a server. For tests and measurements
of the grammar path; the real remote backend lives in engine/backends."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from storyloom.engine.generate import Capabilities, Cancel, GenerationStats, Generator, ModelInfo, Stopwatch
from storyloom.engine.sampling import SamplerSettings

GRAMMAR_ONLY = Capabilities(stream=True, batch=False, token_logprobs=False, scoring=False, grammar="gbnf",
                            token_steering=False, exact_tokens=True, seed=True)


def import_llama_cpp():
    """llama_cpp, or None when it is not installed (tests skip with that reason)."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp


class LlamaCppGenerator(Generator):
    capabilities = GRAMMAR_ONLY

    def __init__(self, gguf: Path, tokenizer_dir: Path | None = None, n_ctx: int = 1024, threads: int = 2):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, verbose=False)
        self.template = None
        if tokenizer_dir is not None:  # the chat template, as the model's own tokenizer renders it
            from transformers import AutoTokenizer

            self.template = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.info = ModelInfo(name=Path(gguf).stem, backend="llama-cpp-python", context_length=n_ctx,
                              chat_template=self.template is not None)
        self.last_stats = GenerationStats()
        self.grammars: list[str] = []  # every grammar asked for, in order

    def chat_prompt(self, messages) -> str:
        if self.template is None:
            return super().chat_prompt(messages)
        return self.template.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def parses(self, grammar: str) -> bool:
        """Does llama.cpp's own grammar parser accept `grammar`? (It returns no sampler if not.)"""
        lib = self.llama_cpp
        sampler = lib.llama_sampler_init_grammar(self.llm._model.vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            return False
        lib.llama_sampler_free(sampler)
        return True

    def _stream(self, prompt: str, settings: SamplerSettings, cancel: Cancel | None,
                grammar: str | None = None) -> Iterator[str]:
        extra = {}
        if grammar is not None:
            self.grammars.append(grammar)
            extra["grammar"] = self.llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)
        watch = Stopwatch(self.count_tokens(prompt))
        chunks = self.llm.create_completion(
            prompt, max_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
            top_k=settings.top_k, min_p=0.0, typical_p=settings.typical_p, repeat_penalty=settings.repetition_penalty,
            stop=list(settings.stop) or None, seed=settings.seed, stream=True,
            **extra)
        try:
            for chunk in chunks:
                if cancel is not None and cancel.is_set():
                    break
                watch.token()
                yield chunk["choices"][0]["text"]
        finally:
            self.last_stats = watch.done()
