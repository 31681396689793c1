"""Generation engine: model loading, sampling, streaming. Knows nothing of the UI."""
