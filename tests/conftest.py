"""Shared pytest fixtures. Nothing here touches the network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from recipe_helpers import recipe_module, run_cv  # noqa: E402

from lobes.fixtures.encoders import write_tiny_hubert  # noqa: E402


@pytest.fixture(autouse=True)
def process_environment():
    """Each test leaves the environment as it found it: SpeechBrain sets ``SB_LOG_LEVEL`` in the
    process it runs in (and the command-line helpers quiet it), which the subprocesses of later
    tests would otherwise inherit."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_hubert_dir(tmp_path_factory):
    """A tiny random-weight HuBERT (3 layers, 32-d) saved with ``save_pretrained``."""
    return write_tiny_hubert(tmp_path_factory.mktemp("tiny_hubert"), n_layers=3, dim=32,
                             conv_dim=16)


@pytest.fixture(scope="session")
def demo_corpus_dir(tmp_path_factory):
    """The demo corpus (20 utterances per speaker, 200 with a 4-class label)."""
    make_demo_corpus = recipe_module("make_demo_corpus").make_demo_corpus
    return make_demo_corpus(tmp_path_factory.mktemp("demo_corpus"), seed=0, utts_per_speaker=20)


@pytest.fixture(scope="session")
def demo_hubert_dir(tmp_path_factory):
    """The demo's tiny HuBERT (4 layers, 64-d, 16-channel CNN), as hparams/demo.yaml expects."""
    return write_tiny_hubert(tmp_path_factory.mktemp("demo_hubert"), n_layers=4, dim=64,
                             conv_dim=16)


@pytest.fixture(scope="session")
def cv_run(tmp_path_factory, demo_corpus_dir, demo_hubert_dir):
    """A one-fold run (test session 1) of gmp_tl and baseline on the demo corpus."""
    output_folder = tmp_path_factory.mktemp("cv") / "out"
    completed = run_cv(output_folder, demo_corpus_dir, demo_hubert_dir, "--folds", "1")
    (output_folder / "run_cv_stdout.txt").write_text(completed.stdout + completed.stderr)
    return output_folder


# The test modules that read the one-fold demo run (``cv_run``, built once per worker process).
DEMO_RUN_MODULES = {"test_training.py", "test_inference.py", "test_gmp_extraction.py"}


def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs two pytest-xdist workers: each test module goes to one worker (its
    module fixtures are built once), and the modules that read the demo run go to the same one.
    (xdist's own ``--dist loadgroup`` marks do not take with pytest 9's node ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return "demo run" if Path(module).name in DEMO_RUN_MODULES else module

    return SharedRunScheduling(config, log)
