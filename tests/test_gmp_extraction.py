"""Stage 0 and the GMP extraction on the demo corpus (the one-fold run of the runner)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from recipe_helpers import RECIPE_DIR, recipe_module, tiny_encoder

from lobes.gmp.feature_cache import FeatureCache
from lobes.gmp.labels import read_label_file, read_label_meta
from lobes.models.frames import n_frames

SPLITS = ("train", "valid", "test")
SCALES = (8, 16, 32)  # hparams/demo.yaml
FIT_HPARAMS = {"gmp_gender_split": False, "kmeans_max_frames": 10**6, "seed": 1986,
               "kmeans_backend": "faiss", "kmeans_iterations": 5, "sklearn_options": {}}


@pytest.fixture(scope="module")
def fold(cv_run):
    fold_dir = cv_run / "fold1"
    manifests = {split: json.loads((fold_dir / "prepare" / f"{split}.json").read_text())
                 for split in SPLITS}
    return fold_dir, manifests


def test_label_files_hold_n_frames_labels_for_every_utterance_of_every_split(fold):
    fold_dir, manifests = fold
    for split in SPLITS:
        for k in SCALES:
            path = fold_dir / "gmp" / f"{split}_L2_K{k}.km"
            labels = read_label_file(path)
            assert list(labels) == list(manifests[split])
            for utt_id, entry in manifests[split].items():
                assert len(labels[utt_id]) == n_frames(round(entry["duration"] * 16000))
                assert labels[utt_id].min() >= 0 and labels[utt_id].max() < k
            meta = read_label_meta(path)
            assert (meta["layer"], meta["k"], meta["n_utterances"]) == (2, k, len(labels))


def test_test_session_frames_never_enter_a_kmeans_fit(fold, monkeypatch, tmp_path):
    fold_dir, manifests = fold
    for k in SCALES:  # what the recipe's own fits recorded
        record = json.loads((fold_dir / "gmp" / f"kmeans_L2_K{k}.json").read_text())
        assert record["fit_split"] == "train" and 1 not in record["fit_sessions"]
        assert record["n_fit_utterances"] == len(manifests["train"])
    extract_gmp = recipe_module("extract_gmp")
    given = []

    def recording_fit(features, *args, **kwargs):
        given.append(np.array(features))
        return original_fit(features, *args, **kwargs)

    original_fit = extract_gmp.fit_kmeans
    monkeypatch.setattr(extract_gmp, "fit_kmeans", recording_fit)
    caches = {split: FeatureCache(fold_dir / "gmp" / "cache", split) for split in SPLITS}
    rows = {split: {row.tobytes() for row in caches[split].sample_frames(2, 10**7)}
            for split in SPLITS}
    for gender_split in (False, True):
        hparams = {**FIT_HPARAMS, "gmp_gender_split": gender_split}
        models = extract_gmp.fit_scale(hparams, caches, manifests, 2, 8, tmp_path / "km.npz")
        assert len(models) == (2 if gender_split else 1)
    assert len(given) == 3
    for features in given:
        fitted = {row.tobytes() for row in features.astype(np.float32)}
        assert fitted <= rows["train"]
        assert not fitted & rows["test"] and not fitted & rows["valid"]
    # one k-means per gender: the second gender's ids are offset by K
    labels = extract_gmp.label_split(caches["test"], manifests["test"], models, 2, True)
    for utt_id, entry in manifests["test"].items():
        assert (labels[utt_id] >= 8).all() == (entry["gender"] == "M")


def test_fewer_training_frames_than_clusters_is_a_clear_error(fold, tmp_path):
    fold_dir, manifests = fold
    extract_gmp = recipe_module("extract_gmp")
    caches = {split: FeatureCache(fold_dir / "gmp" / "cache", split) for split in SPLITS}
    with pytest.raises(ValueError, match="training frames .* for K=1000000 clusters"):
        extract_gmp.fit_scale(FIT_HPARAMS, caches, manifests, 2, 10**6, tmp_path / "km.npz")


def test_rerun_does_no_extraction_or_fitting(fold, demo_corpus_dir, demo_hubert_dir):
    fold_dir, _ = fold
    gmp = fold_dir / "gmp"
    watched = [*gmp.glob("cache/*"), *gmp.glob("*.km"), *gmp.glob("kmeans_*.npz")]
    before = {path: path.stat().st_mtime_ns for path in watched}
    completed = subprocess.run(
        [sys.executable, str(RECIPE_DIR / "extract_gmp.py"),
         str(RECIPE_DIR / "hparams" / "gmp.yaml"),
         f"--data_folder={demo_corpus_dir}", *tiny_encoder(demo_hubert_dir),
         "--expected_utterances=0", "--skip_prep=True", "--gmp_layer=2",
         "--gmp_scales=[8, 16, 32]", f"--output_root={fold_dir}"],
        capture_output=True, text=True,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-2000:]
    assert "encoding" not in output and "fitting k-means" not in output
    assert "gmp already finished with these settings; nothing to do" in output
    assert {path: path.stat().st_mtime_ns for path in watched} == before


def test_stage0_learns_emotion_and_gender_on_a_held_out_session(fold):
    fold_dir, _ = fold
    stats = json.loads((fold_dir / "stage0" / "test_stats.json").read_text())
    # chance: UA 0.25 (4 classes), gender accuracy 0.5 (one woman, one man in the session)
    assert stats["UA"] > 0.45, stats
    assert stats["gender_acc"] > 0.65, stats
