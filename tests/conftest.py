"""Shared pytest fixtures. Nothing here touches the network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from lobes.tiny_hubert import write_tiny_hubert  # noqa: E402


@pytest.fixture(scope="session")
def tiny_hubert_dir(tmp_path_factory):
    """A tiny random-weight HuBERT (3 layers, 32-d) saved with ``save_pretrained``."""
    return write_tiny_hubert(tmp_path_factory.mktemp("tiny_hubert"), n_layers=3, dim=32,
                             conv_dim=32)
