"""Bad input met at training time (gone or broken wavs refused at start, or skipped), CPU
determinism, and checkpoints that cannot run code when loaded."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recipe_helpers import (
    RECIPE_DIR,
    demo_manifest,
    recipe_module,
    tiny_encoder,
    write_fold_manifests,
)

from lobes.data.audio import AudioError
from lobes.data.datasets import dataio_prepare
from lobes.training.brain import load_encoder_weights
from lobes.training.checkpoints import AtomicCheckpointer

STAGE0_AND_GMP = (("train_mtl.py", "stage0_mtl.yaml"), ("extract_gmp.py", "gmp.yaml"))


@pytest.fixture()
def fold_with_bad_wavs(demo_corpus_dir, tmp_path):
    """Manifests of the demo corpus where one wav is gone and one is garbage since preparation."""
    manifest = demo_manifest(demo_corpus_dir, tmp_path)
    gone, broken = list(manifest)[:2]
    Path(manifest[gone]["wav"]).unlink()
    Path(manifest[broken]["wav"]).write_bytes(b"not a wav at all")
    return write_fold_manifests(manifest, tmp_path), gone, broken


def test_bad_wavs_stop_training_at_start_naming_every_file(fold_with_bad_wavs):
    hparams, gone, broken = fold_with_bad_wavs
    with pytest.raises(AudioError) as error:
        dataio_prepare(hparams)
    message = str(error.value)
    assert gone in message and broken in message
    assert "2 of 12 train utterances" in message and "bad_audio: skip" in message


def test_bad_wavs_are_skipped_with_a_count_when_asked(fold_with_bad_wavs, caplog):
    hparams, gone, broken = fold_with_bad_wavs
    datasets, _ = dataio_prepare({**hparams, "bad_audio": "skip"})
    for dataset in datasets.values():
        ids = [item["id"] for item in dataset]
        assert len(ids) == 10 and gone not in ids and broken not in ids
        assert all(len(item["sig"]) > 400 for item in dataset)
    assert "skipping 2 of 12 utterances with unusable audio" in caplog.text


def test_same_seed_gives_identical_manifests_gmps_and_metrics(tmp_path, demo_hubert_dir):
    """CPU determinism: preparation, stage 0 and the GMP extraction, each run twice."""
    corpus = recipe_module("make_demo_corpus").make_demo_corpus(tmp_path / "corpus", seed=7,
                                                                utts_per_speaker=6)
    common = [f"--data_folder={corpus}", *tiny_encoder(demo_hubert_dir),
              "--expected_utterances=0"]
    options = {"train_mtl.py": ["--number_of_epochs=1", "--max_batch_length=20"],
               "extract_gmp.py": ["--gmp_layer=2", "--gmp_scales=[8, 16]"]}
    runs = []
    for run in ("a", "b"):
        root = tmp_path / run / "fold1"
        for script, hparams in STAGE0_AND_GMP:
            completed = subprocess.run(
                [sys.executable, str(RECIPE_DIR / script), str(RECIPE_DIR / "hparams" / hparams),
                 *common, *options[script], f"--output_root={root}"],
                capture_output=True, text=True,
            )
            assert completed.returncode == 0, completed.stderr[-2000:]
        runs.append(root)
    first, second = runs
    for split in ("train", "valid", "test"):
        assert (first / "prepare" / f"{split}.json").read_bytes() == (
            second / "prepare" / f"{split}.json").read_bytes()
        for k in (8, 16):
            assert (first / "gmp" / f"{split}_L2_K{k}.km").read_bytes() == (
                second / "gmp" / f"{split}_L2_K{k}.km").read_bytes()
    assert (first / "stage0" / "metrics.json").read_bytes() == (
        second / "stage0" / "metrics.json").read_bytes()
    weights = [torch.load(root / "stage0" / "encoder.ckpt", weights_only=True) for root in runs]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


class CodeOnLoad:
    """A pickled object that would create ``marker`` when unpickled without ``weights_only``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_checkpoint_recovery_refuses_pickled_code(tmp_path):
    """SpeechBrain's recovery and our encoder loading use torch's ``weights_only`` loading."""
    layer = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(tmp_path / "save", recoverables={"layer": layer})
    checkpoint = checkpointer.save_checkpoint()
    marker = tmp_path / "code_ran"
    torch.save({"weight": CodeOnLoad(marker)}, checkpoint.paramfiles["layer"])
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        checkpointer.recover_if_possible()
    torch.save({"weight": CodeOnLoad(marker)}, tmp_path / "encoder.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        load_encoder_weights(layer, tmp_path / "encoder.ckpt")
    assert not marker.exists()
