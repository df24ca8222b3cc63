"""Shared test set-up: offline model loading, and fixture modules (speech, tiny CLIP, media corpus)."""

import os

# A test must never wait on a model hub: every model comes from a package or is built by a fixture.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["fixtures.speech", "fixtures.tiny_clip", "fixtures.corpus"]
