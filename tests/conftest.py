"""Shared fixtures: a fresh StoryLoom home per test, a tiny random model, the real model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Resolve the shared models folder before any test moves STORYLOOM_HOME.
os.environ.setdefault(
    "STORYLOOM_MODELS",
    str(Path(os.environ.get("STORYLOOM_HOME", Path(__file__).resolve().parents[1] / "saved")) / "models"),
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def storyloom_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("STORYLOOM_HOME", str(home))
    return home


CORPUS = [
    "Once upon a time there was a dragon who lived in a cave by the sea.",
    "You open the door. The room beyond is dark and smells of old paper.",
    'You say "hello". The knight turns and looks at you with tired eyes.',
    "The rain fell on the city all night, and nobody slept.",
    "> look around\nYou see a table, a lamp and a locked chest.",
]


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on a few sentences."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # Larger weights make the random model's distribution peakier, so text varies less wildly.
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    from storyloom.engine import models

    return models.load(str(tiny_model_dir))


@pytest.fixture(scope="session")
def real_model():
    from storyloom.engine import default_model, models

    if not default_model.is_ready():
        pytest.fail("The default model is not pulled: run `storyloom model pull` (tasks.py test does).")
    return models.load("default")


@pytest.fixture(scope="session")
def native_builds(tmp_path_factory) -> Path:
    """A models folder of this session's own for the native kernels (not the shared one): every
    level is compiled from these sources once (two builds, ~10 s each on the CI machine) rather
    than again by each test that needs one. The tests of the build cache itself
    (test_native_safety) keep a folder per test."""
    return tmp_path_factory.mktemp("native-builds")
