"""The native step reads a prompt that a batch's rows share from row 0 alone (NativeLlama tracks
how far the rows' caches are alike: expanded from one row, less what a rewind gives up)."""
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from storyloom.engine import native  # noqa: E402
from storyloom.engine.fast_llama import KVState  # noqa: E402
from storyloom.engine.native_llama import NativeLlama  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(5)
    # head size 64: the 512-bit attention where the CPU has it
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def step(model):
    if native.library() is None:
        pytest.skip(native.unavailable() or "no native step")
    return NativeLlama.build(model)


def _library(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits[:, -1]


def test_candidates_share_the_prompt_and_keep_their_own_logits(model, step):
    prompt = torch.tensor([[1, 5, 9, 33, 2, 70, 11, 12, 40]])
    state = KVState()
    step.forward(prompt, state)
    assert step.shared_prefix(state) == 0  # one row: nothing to share
    step.expand(state, 3)
    assert step.shared_prefix(state) == prompt.shape[1]
    ids = prompt.repeat(3, 1)
    for token in ([4, 8, 90], [60, 61, 62], [7, 7, 3], [20, 30, 40], [1, 2, 3]):
        column = torch.tensor([token]).T
        ids = torch.cat([ids, column], dim=1)
        ours = step.forward(column, state)
        assert torch.allclose(ours, _library(model, ids), atol=1e-4)
    assert step.shared_prefix(state) == prompt.shape[1]  # the rows' own tokens came after it


def test_a_rewind_below_the_shared_prompt_is_not_read_as_shared(model, step):
    prompt = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10]])
    state = KVState()
    step.forward(prompt, state)
    step.expand(state, 2)
    state.length = 5  # back into the prompt, then each row its own tokens from there
    fed = torch.tensor([[50, 51, 52], [60, 61, 62]])
    step.forward(fed, state)
    assert step.shared_prefix(state) == 5
    ids = torch.cat([prompt[:, :5].repeat(2, 1), fed], dim=1)
    for token in ([4, 8], [9, 10]):
        column = torch.tensor([token]).T
        ids = torch.cat([ids, column], dim=1)
        assert torch.allclose(step.forward(column, state), _library(model, ids), atol=1e-4)
    state.length = 0  # a fresh prompt in the same state: nothing shared
    step.forward(prompt, state)
    assert step.shared_prefix(state) == 0


def test_rows_that_leave_the_batch_stay_where_they_are_and_the_rest_read_their_own(model, step):
    """A finished candidate leaves the batch without moving the others' caches (keep_rows); the
    torch forward, which reads every row, gets them moved together first (compact)."""
    prompt = torch.tensor([[1, 5, 9, 33, 2, 70, 11, 12, 40]])
    state = KVState()
    step.forward(prompt, state)
    step.expand(state, 4)
    ids = prompt.repeat(4, 1)
    for token in ([4, 8, 90, 3], [60, 61, 62, 63]):
        column = torch.tensor([token]).T
        ids = torch.cat([ids, column], dim=1)
        step.forward(column, state)
    cache = state.cache
    step.keep_rows(state, [3, 1])  # rows 0 and 2 finished
    assert state.cache is cache and state.rows == [3, 1]
    ids = ids[[3, 1]]
    for token in ([7, 9], [20, 30]):
        column = torch.tensor([token]).T
        ids = torch.cat([ids, column], dim=1)
        assert torch.allclose(step.forward(column, state), _library(model, ids), atol=1e-4)
    step.keep_rows(state, [1])  # batch row 1 is cache row 1
    assert state.rows == [1]
    ids = ids[[1]]
    column = torch.tensor([[44]])
    ids = torch.cat([ids, column], dim=1)
    assert torch.allclose(step.forward(column, state), _library(model, ids), atol=1e-4)
    two = torch.tensor([[5, 6]])  # two tokens at once: the torch forward, on the moved row
    ids = torch.cat([ids, two], dim=1)
    assert torch.allclose(step.forward(two, state), _library(model, ids), atol=1e-4)
    assert state.rows is None and state.cache.shape[2] == 1
