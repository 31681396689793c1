"""Generator backends: transformers (local, default), openai_compat (remote), scripted (tests)."""
