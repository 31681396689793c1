"""The embedded default model really loads and writes."""
from __future__ import annotations

import pytest

from storyloom.engine.sampling import SamplerSettings

pytestmark = pytest.mark.real_model


def test_default_model_generates_reproducibly(real_model):
    assert real_model.info.name == "SmolLM2-135M-Instruct"
    assert real_model.info.context_length == 8192
    settings = SamplerSettings(temperature=0.8, seed=42, max_new_tokens=24)
    prompt = "The old castle stood on the hill, and"
    a = real_model.generate(prompt, settings)
    b = real_model.generate(prompt, settings)
    assert a == b
    assert len(a.split()) >= 5
    assert real_model.generate(prompt, settings.with_(seed=43)) != a


def test_default_model_chat_template_and_scores(real_model):
    prompt = real_model.chat_prompt([{"role": "user", "content": "Name a colour."}])
    assert "<|im_start|>assistant" in prompt
    good = real_model.score("The cat sat on the", " mat.")
    bad = real_model.score("The cat sat on the", " purple elephant galaxy.")
    assert good > bad
