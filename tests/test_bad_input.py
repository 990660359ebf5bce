"""Bad input through the pipeline: found before training with the file and the fix named.

The unit-level cases live beside their modules' tests (``test_audio.py``, ``test_gmp_labels.py``,
``test_kmeans.py``, ``test_lobes.py``, ``test_iemocap_prepare.py``); here the same kinds of files
go through the preparation checks, ``dataio_prepare`` and a real stage run.
"""

import json
import logging
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile
import torch
from recipe_helpers import (
    RECIPE_DIR,
    demo_manifest,
    recipe_table,
    tiny_encoder,
    write_fold_manifests,
)

from lobes.data.audio import AudioError, read_audio
from lobes.data.datasets import dataio_prepare
from lobes.data.manifests import check_wavs
from lobes.gmp.labels import LabelMismatchError, expected_frame_counts, write_label_file
from lobes.models.encoder import SSLEncoder
from lobes.models.frames import n_frames
from lobes.models.pooling import MaskedPooling
from lobes.runner import hparams as hp

SPLITS = ("train", "valid", "test")


@pytest.fixture()
def manifest(demo_corpus_dir, tmp_path):
    """A manifest of 12 demo wavs (copied, so that tests may damage them), 3 per emotion."""
    return demo_manifest(demo_corpus_dir, tmp_path)


def damage(manifest):
    """Make one wav hold a NaN (float WAV) and replace another by a 300-sample clip."""
    nan_id, cut_id = list(manifest)[:2]
    samples = read_audio(manifest[nan_id]["wav"]).numpy()
    samples[len(samples) // 2] = np.nan
    soundfile.write(manifest[nan_id]["wav"], samples, 16000, subtype="FLOAT")
    soundfile.write(manifest[cut_id]["wav"], np.zeros(300, np.float32), 16000)
    return nan_id, cut_id


def test_nan_and_replaced_wavs_stop_a_stage_at_start(manifest, tmp_path):
    nan_id, cut_id = damage(manifest)
    with pytest.raises(AudioError) as error:
        dataio_prepare(write_fold_manifests(manifest, tmp_path / "fold"))
    message = str(error.value)
    assert "2 of 12 train utterances" in message and "bad_audio: skip" in message
    assert f"{nan_id}.wav holds NaN or infinite samples" in message
    assert f"{cut_id}.wav lasts 0.019 s" in message and "changed since the preparation" in message


def test_nan_and_replaced_wavs_are_skipped_with_a_count(manifest, tmp_path, caplog):
    nan_id, cut_id = damage(manifest)
    hparams = write_fold_manifests(manifest, tmp_path / "fold")
    datasets, _ = dataio_prepare({**hparams, "bad_audio": "skip"})
    for dataset in datasets.values():
        signals = {item["id"]: item["sig"] for item in dataset}  # loads every file: no error
        assert len(signals) == 10 and nan_id not in signals and cut_id not in signals
        assert all(torch.isfinite(signal).all() for signal in signals.values())
    assert "skipping 2 of 12 utterances with unusable audio" in caplog.text


def test_preparation_lists_nan_wavs_with_the_unreadable_ones(manifest):
    nan_id, _ = damage(manifest)
    broken_id = list(manifest)[2]
    with open(manifest[broken_id]["wav"], "r+b") as handle:
        handle.truncate(20)  # a truncated header
    with pytest.raises(AudioError) as error:
        check_wavs(manifest, "IEMOCAP")
    message = str(error.value)
    assert message.startswith("2 of 12 wav files cannot be used")
    assert f"{nan_id}.wav holds NaN" in message and f"{broken_id}.wav" in message
    assert "Restore these files from the IEMOCAP release" in message


def test_clip_shorter_than_one_frame_is_dropped_before_training(manifest, tmp_path, caplog):
    short_id = list(manifest)[0]
    soundfile.write(manifest[short_id]["wav"], np.zeros(300, np.float32), 16000)
    manifest[short_id]["duration"] = 300 / 16000  # as the preparation records it
    with caplog.at_level(logging.WARNING):
        datasets, _ = dataio_prepare(write_fold_manifests(manifest, tmp_path / "fold"))
    for split, dataset in datasets.items():
        assert short_id not in [item["id"] for item in dataset]
        assert f"{split}: dropped 1 utterance(s) shorter than one HuBERT frame" in caplog.text


def test_other_rates_and_stereo_are_converted_in_the_datasets(manifest, tmp_path):
    """8 kHz (with a warning), 48 kHz and 44.1 kHz stereo wavs come out as 16 kHz mono."""
    converted = {}
    formats = [(8000, 1), (48000, 1), (44100, 2)]
    for (utt_id, entry), (rate, channels) in zip(list(manifest.items())[:3], formats,
                                                 strict=True):
        waveform = torch.from_numpy(soundfile.read(entry["wav"], dtype="float32")[0])
        resampled = torch.nn.functional.interpolate(
            waveform[None, None], size=round(len(waveform) * rate / 16000), mode="linear"
        )[0, 0].numpy()
        samples = np.stack([resampled] * channels, axis=1) if channels == 2 else resampled
        soundfile.write(entry["wav"], samples, rate, subtype="FLOAT")
        entry["duration"] = len(resampled) / rate
        converted[utt_id] = math.ceil(len(resampled) * 16000 / rate)  # torchaudio's length
    datasets, _ = dataio_prepare(write_fold_manifests(manifest, tmp_path / "fold"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        signals = {item["id"]: item["sig"] for item in datasets["train"]}
    assert len(signals) == 12
    for utt_id, length in converted.items():
        assert signals[utt_id].ndim == 1 and len(signals[utt_id]) == length
    band_limited = [str(w.message) for w in caught if "band-limited" in str(w.message)]
    assert len(band_limited) == 1 and list(converted)[0] in band_limited[0]


def test_silent_audio_gives_finite_features_loss_and_gradients(tiny_hubert_dir, tmp_path):
    """All-zero audio (the per-utterance normalisation divides by its deviation) trains."""
    encoder = SSLEncoder(tiny_hubert_dir, tmp_path, output_layers=[-1], freeze="none")
    pooling = MaskedPooling(mode="mean", input_size=32)
    head = torch.nn.Linear(32, 4)
    wavs = torch.zeros(2, 16000)
    wavs[1, :8000] = 0.1 * torch.randn(8000)  # a second, shorter utterance beside the silence
    hidden, frame_counts = encoder(wavs, torch.tensor([1.0, 0.5]))
    loss = torch.nn.functional.cross_entropy(head(pooling(hidden[-1], frame_counts)),
                                             torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(hidden).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_stage_run_with_bad_audio_skip_trains_without_the_bad_files(manifest, tmp_path,
                                                                    demo_hubert_dir):
    """A baseline run on manifests holding a NaN wav and a replaced one: they are skipped at
    start with a count and the run completes; with the default it stops before training."""
    nan_id, cut_id = damage(manifest)
    root = tmp_path / "fold1"
    write_fold_manifests(manifest, root / "prepare")
    command = [
        sys.executable, str(RECIPE_DIR / "train.py"), str(RECIPE_DIR / "hparams" / "baseline.yaml"),
        f"--data_folder={tmp_path}", *tiny_encoder(demo_hubert_dir),
        "--skip_prep=True", f"--output_root={root}", "--number_of_epochs=1",
        "--max_batch_length=20",
    ]
    stopped = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert stopped.returncode != 0
    assert f"{nan_id}.wav holds NaN" in stopped.stdout + stopped.stderr
    assert not (root / "baseline" / "train_log.txt").exists()
    completed = subprocess.run([*command, "--bad_audio=skip"], capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "skipping 2 of 12 utterances with unusable audio" in (
        completed.stdout + completed.stderr)
    metrics = json.loads((root / "baseline" / "metrics.json").read_text())
    assert metrics["n_utterances"] == 10


def test_misspelled_key_in_an_hparams_file_stops_before_any_work(tmp_path, demo_hubert_dir):
    """A copy of a stage file, elsewhere, with a misspelled key instead of the original."""
    text = (RECIPE_DIR / "hparams" / "stage1.yaml").read_text()
    assert "\nnumber_of_epochs: " in text
    mine = tmp_path / "elsewhere" / "my_stage1.yaml"
    mine.parent.mkdir()
    mine.write_text(text.replace("\nnumber_of_epochs: ", "\nnumbr_of_epochs: "))
    completed = subprocess.run(
        [sys.executable, str(RECIPE_DIR / "train.py"), str(mine), f"--data_folder={tmp_path}",
         *tiny_encoder(demo_hubert_dir), f"--output_root={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode != 0
    assert (f"hparams file {mine}: 'numbr_of_epochs' is not a known key (did you mean "
            "'number_of_epochs'?)") in completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()


def test_own_hparams_keys_only_warn(tmp_path, caplog):
    shipped = RECIPE_DIR / "hparams" / "baseline.yaml"
    known = set().union(*hp.shipped_keys(recipe_table()).values())
    mine = tmp_path / "mine.yaml"
    mine.write_text(shipped.read_text() + "my_note: fold for the paper\n")
    with caplog.at_level(logging.WARNING):
        hp.check_keys(mine, known)
    assert "keys ['my_note'] are not used by the recipe's steps" in caplog.text
    # a misspelling beside the key it means (which would otherwise win silently), short keys too
    mine.write_text(shipped.read_text() + "lrr: 0.5\n")
    with pytest.raises(ValueError, match="'lrr' is not a known key \\(did you mean 'lr'\\?\\)"):
        hp.check_keys(mine, known)


def test_label_files_that_do_not_match_the_manifest_stop_before_training(manifest, tmp_path):
    """One utterance too few, or a frame count off by two, is an error naming the label file;
    off by one frame is fitted to the audio."""
    hparams = write_fold_manifests(manifest, tmp_path / "fold")
    counts = expected_frame_counts(manifest)
    labels = {utt_id: np.arange(count) % 8 for utt_id, count in counts.items()}
    first, second = list(manifest)[:2]
    label_path = tmp_path / "gmp" / "train_L2_K8.km"
    meta = {"layer": 2, "k": 8, "kmeans_model": "kmeans_L2_K8.npz"}
    for broken, problem in [
        ({utt_id: lab for utt_id, lab in labels.items() if utt_id != first}, "no labels for"),
        ({**labels, first: labels[first][:-2]},
         f"{first} (expected {counts[first]} frames, found {counts[first] - 2})"),
    ]:
        write_label_file(label_path, broken, meta)
        with pytest.raises(LabelMismatchError) as error:
            dataio_prepare(hparams, dict.fromkeys(SPLITS, [label_path]))
        assert str(label_path) in str(error.value) and problem in str(error.value)
        assert "re-run extract_gmp.py" in str(error.value)
    write_label_file(label_path, {**labels, second: labels[second][:-1]}, meta)
    datasets, _ = dataio_prepare(hparams, dict.fromkeys(SPLITS, [label_path]))
    item = next(item for item in datasets["train"] if item["id"] == second)
    assert len(item["gmp_0"]) == n_frames(len(item["sig"]))
