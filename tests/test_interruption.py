"""Every stage killed (SIGKILL) mid-way and started again ends where an uninterrupted run ends.

A small fold goes through stage 0, the GMP extraction, stage 1 and stage 2 twice: once without
interruption, once killed at exact points (``kill_at.py``): in the middle of saving a checkpoint,
while caching features, between two label files, mid-epoch, and while testing. After every
kill each output file is whole (the old complete version or none); after the restarts the run
has resumed from its checkpoints and finished pieces and gives the same files, weights and
metrics as the uninterrupted run (CPU resumption is exact: ``lobes.training.checkpoints``).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from recipe_helpers import RECIPE_DIR, recipe_module, tiny_encoder

from lobes.gmp.labels import meta_path_of, read_label_file

KILL_AT = Path(__file__).with_name("kill_at.py")
SCALES = (8, 16)
TRAINING = ["--number_of_epochs=2", "--max_batch_length=20"]
STEPS = {  # step: (script, hparams, options)
    "stage0": ("train_mtl.py", "stage0_mtl.yaml", TRAINING),
    "gmp": ("extract_gmp.py", "gmp.yaml", ["--gmp_layer=2", "--gmp_scales=[8, 16]",
                                           "--cache_flush_every=2"]),
    "stage1": ("train.py", "stage1.yaml", ["--gmp_layer=2", "--gmp_scales=[8, 16]",
                                           "--gmp_scale_weights=[1.0, 1.0]", *TRAINING]),
    "stage2": ("train.py", "stage2.yaml", TRAINING),
}
MID_EPOCH_2 = ("lobes.training.brain.EncoderBrain.on_stage_start=3,"
               "speechbrain.core.Brain.fit_batch=2")
KILLS = {  # step: the points where the first runs are killed, in order
    "stage0": ["lobes.training.checkpoints.AtomicCheckpointer._save_checkpoint_metafile=2"],
    "gmp": ["lobes.gmp.feature_cache.FeatureCacheWriter.write=7",
            "lobes.gmp.labels.write_label_file=2"],
    "stage1": [MID_EPOCH_2],
    # mid-epoch, then while testing the selected model (the second start runs train 2,
    # valid 2, test)
    "stage2": [MID_EPOCH_2, "lobes.training.brain.EncoderBrain.on_stage_start=3"],
}


def run_step(step, root, corpus, hubert, kill=None):
    script, hparams, options = STEPS[step]
    command = [sys.executable, *([str(KILL_AT), kill] if kill else []), str(RECIPE_DIR / script),
               str(RECIPE_DIR / "hparams" / hparams), f"--data_folder={corpus}",
               *tiny_encoder(hubert), "--expected_utterances=0",
               f"--output_root={root}", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def assert_outputs_whole(root):
    """Every output file present reads as a complete file."""
    for path in root.rglob("*"):
        if path.is_dir() or path.name.startswith("."):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".km":
            labels = read_label_file(path)
            if meta_path_of(path).exists():
                assert len(labels) == json.loads(meta_path_of(path).read_text())["n_utterances"]
        elif path.suffix == ".npz":
            np.load(path, allow_pickle=False)
        elif path.suffix == ".ckpt" and path.read_bytes()[:2] == b"PK":  # a torch file
            torch.load(path, map_location="cpu", weights_only=True)
    for folder in root.rglob("CKPT+*"):
        if (folder / "CKPT.yaml").exists():  # a checkpoint that recovery would use
            names = {path.stem for path in folder.glob("*.ckpt")}
            assert {"encoder", "counter", "random_states"} <= names, (folder, names)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_hubert_dir):
    """``(uninterrupted root, killed-and-resumed root, {step: outputs of the restarts})``."""
    base = tmp_path_factory.mktemp("interruption")
    corpus = recipe_module("make_demo_corpus").make_demo_corpus(base / "corpus", seed=5,
                                                                utts_per_speaker=6)
    reference, killed = base / "reference" / "fold1", base / "killed" / "fold1"
    restarts = {}
    for step in STEPS:
        completed = run_step(step, reference, corpus, demo_hubert_dir)
        assert completed.returncode == 0, completed.stderr[-3000:]
        for kill in KILLS[step]:
            completed = run_step(step, killed, corpus, demo_hubert_dir, kill=kill)
            assert completed.returncode == -9, (kill, completed.stderr[-3000:])
            assert_outputs_whole(killed)
        completed = run_step(step, killed, corpus, demo_hubert_dir)
        assert completed.returncode == 0, completed.stderr[-3000:]
        restarts[step] = completed.stdout + completed.stderr
    return reference, killed, restarts


def encoder_weights(folder):
    return torch.load(folder / "encoder.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("step", ["stage0", "stage1", "stage2"])
def test_killed_stage_resumes_and_ends_as_the_uninterrupted_run(runs, step):
    reference, killed, _ = runs
    # the reference loads one checkpoint (to test); the restart first resumes from one
    loads = [(root / step / "log.txt").read_text().count("Loading a checkpoint from")
             for root in (reference, killed)]
    assert loads[1] > loads[0], loads
    # the planned epochs, each finished once in the resumed run's log
    epochs = re.findall(r"^epoch: (\d+)", (killed / step / "train_log.txt").read_text(), re.M)
    assert epochs[-1] == "2" and set(epochs) == {"1", "2"}
    expected, resumed = encoder_weights(reference / step), encoder_weights(killed / step)
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    assert (reference / step / "test_stats.json").read_text() == (
        killed / step / "test_stats.json").read_text()


def test_interrupted_checkpoint_save_is_never_resumed_from(runs):
    _, killed, restarts = runs
    assert "its save was interrupted" in restarts["stage0"]
    folders = list((killed / "stage0" / "save").glob("CKPT+*"))
    assert folders and all((folder / "CKPT.yaml").exists() for folder in folders)


def test_killed_extraction_resumes_its_cache_and_scales(runs):
    reference, killed, restarts = runs
    # the second start found 6 of the train utterances cached (flushed every 2 of 7 written)
    log = (killed / "gmp" / "log.txt").read_text()
    assert re.search(r"resuming feature cache .* 6 of \d+ utterances already written", log)
    # the last start found the cache complete
    assert "encoding" not in restarts["gmp"]
    for split in ("train", "valid", "test"):
        for k in SCALES:
            name = f"{split}_L2_K{k}.km"
            assert (killed / "gmp" / name).read_bytes() == (reference / "gmp" / name).read_bytes()
    assert (killed / "gmp" / "cluster_report.json").read_text() == (
        reference / "gmp" / "cluster_report.json").read_text()
