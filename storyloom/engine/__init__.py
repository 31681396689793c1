"""Generation engine: model loading, sampling, streaming. Knows nothing of the UI."""
from storyloom.engine.threads import prepare_runtime as _prepare_runtime

_prepare_runtime()  # OpenMP's wait policy, read once when torch (below this package) loads libgomp


def compute_threads() -> int:
    """How many threads local generation uses (benches report it)."""
    import torch

    return torch.get_num_threads()
