"""For tests of the decode loop on a tiny random model: a generator on one path, and a record of
every step's sampling (choose_next's logits, what else the test asks for, the chosen tokens)."""
from __future__ import annotations


def on_path(tiny, engine: str):
    """A TransformersGenerator over the tiny model on `engine` ("native" or "reference")."""
    from storyloom.engine.backends.transformers_backend import TransformersGenerator

    return TransformersGenerator(tiny.model, tiny.tokenizer, "tiny", engine=engine)


def spy_steps(monkeypatch, extra) -> list[tuple]:
    """Each step's (logits after the model, extra(history, context), chosen tokens), appended as
    the loop runs."""
    from storyloom.engine.backends import transformers_backend as tb

    seen = []
    real = tb.choose_next

    def spy(logits, history, settings, gen, context=None):
        token = real(logits, history, settings, gen, context)
        seen.append((logits.clone(), extra(history, context), token.clone()))
        return token

    monkeypatch.setattr(tb, "choose_next", spy)
    return seen
