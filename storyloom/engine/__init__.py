"""Generation engine: model loading, sampling, streaming. Knows nothing of the UI."""


def compute_threads() -> int:
    """How many threads local generation uses (benches report it)."""
    import torch

    return torch.get_num_threads()
