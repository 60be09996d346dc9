"""A test-only model plugin that replays exact token sequences, and the checkpoints it reads."""
