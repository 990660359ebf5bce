"""IEMOCAP preparation on the demo corpus: counts, folds, validation draw, errors and re-runs."""

import json
import logging
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
from recipe_helpers import RECIPE_DIR, recipe_module

from lobes.data.audio import AudioError

SPLITS = ("train", "valid", "test")




iemocap_prepare = recipe_module("iemocap_prepare")
make_demo_corpus = recipe_module("make_demo_corpus").make_demo_corpus
prepare_iemocap = iemocap_prepare.prepare_iemocap
PreparationError = iemocap_prepare.PreparationError


@pytest.fixture(scope="session")
def demo_corpus_small(tmp_path_factory):
    """A small demo corpus (8 kept utterances per speaker, 80 in all) in the release layout."""
    return make_demo_corpus(tmp_path_factory.mktemp("demo_small"), seed=7, utts_per_speaker=8)


@pytest.fixture(scope="module")
def truth(demo_corpus_small):
    return json.loads((demo_corpus_small / "demo_truth.json").read_text())


@pytest.fixture(scope="module")
def kept_truth(truth):
    return {utt_id: entry for utt_id, entry in truth.items() if entry["kept"]}


@pytest.fixture(scope="module")
def folds(demo_corpus_small, kept_truth, tmp_path_factory):
    """The manifests of all five folds, as ``{test_session: {split: manifest}}``."""
    prepared = {}
    for test_session in range(1, 6):
        save_folder = tmp_path_factory.mktemp(f"fold{test_session}")
        prepare_iemocap(demo_corpus_small, save_folder, test_session,
                        expected_utterances=len(kept_truth))
        prepared[test_session] = _read_manifests(save_folder)
    return prepared


@pytest.fixture
def corpus_copy(demo_corpus_small, tmp_path):
    """A private copy of the small corpus, for tests that damage or extend it."""
    return Path(shutil.copytree(demo_corpus_small, tmp_path / "IEMOCAP_full_release"))


def _read_manifests(save_folder):
    return {split: json.loads((save_folder / f"{split}.json").read_text()) for split in SPLITS}


def _counts(entries, field):
    return Counter(entry[field] for entry in entries)


@pytest.mark.parametrize("test_session", [1, 2, 3, 4, 5])
def test_counts_equal_the_generated_truth(folds, kept_truth, test_session):
    manifests = folds[test_session]
    all_entries = [entry for split in SPLITS for entry in manifests[split].values()]
    for field in ("emo", "gender", "session", "spk"):
        assert _counts(all_entries, field) == _counts(kept_truth.values(), field)
    test_truth = [entry for entry in kept_truth.values() if entry["session"] == test_session]
    assert _counts(manifests["test"].values(), "emo") == _counts(test_truth, "emo")
    assert _counts(manifests["test"].values(), "gender") == _counts(test_truth, "gender")


@pytest.mark.parametrize("test_session", [1, 2, 3, 4, 5])
def test_folds_are_disjoint_and_test_is_the_test_session(folds, kept_truth, test_session):
    manifests = folds[test_session]
    train, valid, test = (set(manifests[split]) for split in SPLITS)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert test == {
        utt_id for utt_id, entry in kept_truth.items() if entry["session"] == test_session
    }
    assert train | valid == set(kept_truth) - test


@pytest.mark.parametrize("test_session", [1, 2, 3, 4, 5])
def test_entries_follow_the_manifest_contract(folds, kept_truth, test_session):
    for split in SPLITS:
        for utt_id, entry in folds[test_session][split].items():
            truth_entry = kept_truth[utt_id]
            assert set(entry) == {"wav", "duration", "emo", "gender", "spk", "session"}
            assert entry["emo"] == truth_entry["emo"]  # exc already merged into hap
            assert (entry["gender"], entry["spk"], entry["session"]) == (
                truth_entry["gender"], truth_entry["spk"], truth_entry["session"]
            )
            wav_path = Path(entry["wav"])
            assert wav_path.is_absolute() and wav_path.is_file()
            assert wav_path.parts[-5:] == (f"Session{truth_entry['session']}", "sentences", "wav",
                                           truth_entry["dialog"], f"{utt_id}.wav")
            assert entry["duration"] == pytest.approx(truth_entry["duration"], abs=1e-6)


@pytest.mark.parametrize("test_session", [1, 2, 3, 4, 5])
def test_valid_is_a_speaker_stratified_share_of_training_sessions(folds, kept_truth,
                                                                  test_session):
    manifests = folds[test_session]
    training_per_speaker = Counter(
        entry["spk"] for entry in kept_truth.values() if entry["session"] != test_session
    )
    valid_per_speaker = _counts(manifests["valid"].values(), "spk")
    assert {entry["session"] for entry in manifests["valid"].values()} == (
        set(range(1, 6)) - {test_session}
    )
    assert set(valid_per_speaker) == set(training_per_speaker)  # 8 speakers, none missed
    for spk, n_training in training_per_speaker.items():
        assert valid_per_speaker[spk] == math.floor(0.1 * n_training + 0.5)


def test_valid_draw_is_deterministic_for_a_seed(demo_corpus_small, kept_truth, tmp_path):
    options = {"test_session": 2, "expected_utterances": len(kept_truth), "valid_ratio": 0.3}
    prepare_iemocap(demo_corpus_small, tmp_path / "a", seed=5, **options)
    prepare_iemocap(demo_corpus_small, tmp_path / "b", seed=5, **options)
    prepare_iemocap(demo_corpus_small, tmp_path / "c", seed=6, **options)
    valid_a, valid_b, valid_c = (
        json.loads((tmp_path / name / "valid.json").read_text()) for name in "abc"
    )
    assert valid_a == valid_b
    assert set(valid_a) != set(valid_c) and len(valid_a) == len(valid_c)


def test_macos_junk_other_folders_and_annotator_lines_are_ignored(corpus_copy, kept_truth,
                                                                  tmp_path):
    annotation_folder = corpus_copy / "Session1" / "dialog" / "EmoEvaluation"
    assert (annotation_folder / "._Ses01F_impro01.txt").is_file()  # the generator's own junk
    decoy = "[1.0000 - 2.0000]\t{}\tneu\t[2.5000, 2.5000, 2.5000]\n"
    (annotation_folder / "._Ses01M_impro02.txt").write_text(decoy.format("Ses01M_impro02_F900"))
    (annotation_folder / "Categorical" / "Ses01F_impro01_cat.txt").write_text(
        decoy.format("Ses01F_impro01_F901")
    )
    (annotation_folder / "Attribute").mkdir()
    (annotation_folder / "Attribute" / "Ses01F_impro01_atr.txt").write_text(
        decoy.format("Ses01F_impro01_M902")
    )
    # An annotator line with the shape of a turn line except for its leading bracket.
    with open(annotation_folder / "Ses01F_impro01.txt", "a") as annotation_file:
        annotation_file.write("C-E2:\tSes01F_impro01_F903\tneu\t[2.5000, 2.5000, 2.5000]\n\n")

    summary = prepare_iemocap(corpus_copy, tmp_path / "out", 1,
                              expected_utterances=len(kept_truth))

    manifests = _read_manifests(tmp_path / "out")
    assert set().union(*manifests.values()) == set(kept_truth)
    assert sum(summary[split] for split in SPLITS) == len(kept_truth)


def test_missing_and_unreadable_wavs_are_reported_together(corpus_copy, kept_truth, tmp_path):
    missing_id, garbage_id = sorted(kept_truth)[3], sorted(kept_truth)[-2]
    missing_wav = _corpus_wav(corpus_copy, missing_id, kept_truth)
    garbage_wav = _corpus_wav(corpus_copy, garbage_id, kept_truth)
    missing_wav.unlink()
    garbage_wav.write_bytes(b"\x13\x37garbage, not a RIFF header" * 64)

    with pytest.raises(AudioError) as raised:
        prepare_iemocap(corpus_copy, tmp_path / "out", 1, expected_utterances=len(kept_truth))

    message = str(raised.value)
    assert str(missing_wav) in message and str(garbage_wav) in message
    assert f"2 of {len(kept_truth)}" in message and "Restore" in message
    assert not (tmp_path / "out" / "train.json").exists()


def test_44k_stereo_wav_is_accepted_and_counted_as_converted(corpus_copy, kept_truth,
                                                             tmp_path, caplog):
    utt_id = sorted(kept_truth)[5]
    wav_path = _corpus_wav(corpus_copy, utt_id, kept_truth)
    samples, _ = soundfile.read(wav_path)
    time_16k = np.arange(len(samples)) / 16000
    time_44k = np.arange(round(len(samples) * 44100 / 16000)) / 44100
    resampled = np.interp(time_44k, time_16k, samples)
    soundfile.write(wav_path, np.stack([resampled, resampled], axis=1), 44100)

    with caplog.at_level(logging.INFO, logger=iemocap_prepare.__name__):
        summary = prepare_iemocap(corpus_copy, tmp_path / "out", 1,
                                  expected_utterances=len(kept_truth))

    assert summary["n_converted"] == 1
    assert f"1 of {len(kept_truth)} wav files are not 16 kHz mono" in caplog.text
    entry = _read_manifests(tmp_path / "out")["test"][utt_id]
    assert entry["duration"] == pytest.approx(kept_truth[utt_id]["duration"], abs=1e-4)


def test_count_mismatch_fails_unless_relaxed(demo_corpus_small, kept_truth, tmp_path):
    with pytest.raises(PreparationError, match=f"found {len(kept_truth)} utterances") as raised:
        prepare_iemocap(demo_corpus_small, tmp_path / "full", 1)
    assert "--expected_utterances 0" in str(raised.value)
    with pytest.raises(PreparationError, match="expected 81"):
        prepare_iemocap(demo_corpus_small, tmp_path / "off_by_one", 1,
                        expected_utterances=len(kept_truth) + 1)

    summary = prepare_iemocap(demo_corpus_small, tmp_path / "relaxed", 1, expected_utterances=0)

    assert sum(summary[split] for split in SPLITS) == len(kept_truth)


def _mtimes(save_folder):
    names = [f"{split}.json" for split in SPLITS] + ["prepare_options.json"]
    return {name: (save_folder / name).stat().st_mtime_ns for name in names}


def test_rerun_is_skipped_and_an_option_change_reprepares(demo_corpus_small, kept_truth,
                                                         tmp_path):
    save_folder = tmp_path / "out"
    options = {"expected_utterances": len(kept_truth)}
    first = prepare_iemocap(demo_corpus_small, save_folder, 3, **options)
    before = _mtimes(save_folder)
    recorded = json.loads((save_folder / "prepare_options.json").read_text())
    assert recorded == {
        "data_folder": str(demo_corpus_small.resolve()), "test_session": 3, "valid_ratio": 0.1,
        "seed": 1986, "expected_utterances": len(kept_truth),
    }

    again = prepare_iemocap(demo_corpus_small, save_folder, 3, **options)

    assert again["skipped"] and not first["skipped"]
    assert {split: again[split] for split in SPLITS} == {split: first[split] for split in SPLITS}
    assert _mtimes(save_folder) == before

    reseeded = prepare_iemocap(demo_corpus_small, save_folder, 3, seed=11, **options)
    assert not reseeded["skipped"]
    assert json.loads((save_folder / "prepare_options.json").read_text())["seed"] == 11

    larger_valid = prepare_iemocap(demo_corpus_small, save_folder, 3, seed=11, valid_ratio=0.3,
                                   **options)
    assert not larger_valid["skipped"] and larger_valid["valid"] > reseeded["valid"]
    assert len(json.loads((save_folder / "valid.json").read_text())) == larger_valid["valid"]

    (save_folder / "test.json").unlink()
    repaired = prepare_iemocap(demo_corpus_small, save_folder, 3, seed=11, valid_ratio=0.3,
                               **options)
    assert not repaired["skipped"] and (save_folder / "test.json").is_file()


def test_skip_prep_does_nothing(demo_corpus_small, tmp_path):
    assert prepare_iemocap(demo_corpus_small, tmp_path / "out", 1, skip_prep=True) is None
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "bad_options, message",
    [({"test_session": 6}, "test_session"), ({"test_session": 1, "valid_ratio": 1.0},
                                             "valid_ratio")],
)
def test_bad_options_are_refused(demo_corpus_small, tmp_path, bad_options, message):
    with pytest.raises(PreparationError, match=message):
        prepare_iemocap(demo_corpus_small, tmp_path / "out", expected_utterances=0,
                        **bad_options)


def test_missing_data_folder_is_refused(tmp_path):
    with pytest.raises(PreparationError, match="IEMOCAP_full_release"):
        prepare_iemocap(tmp_path / "nowhere", tmp_path / "out", 1)


def test_command_line_runs_from_anywhere(demo_corpus_small, kept_truth, tmp_path):
    # Run from outside the checkout, so the script must find the lobes package itself.
    result = subprocess.run(
        [sys.executable, str(RECIPE_DIR / "iemocap_prepare.py"),
         "--data_folder", str(demo_corpus_small), "--save_folder", str(tmp_path / "out"),
         "--test_session", "4", "--expected_utterances", str(len(kept_truth))],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["test"] == sum(entry["session"] == 4 for entry in kept_truth.values())
    assert set(_read_manifests(tmp_path / "out")["test"]) == {
        utt_id for utt_id, entry in kept_truth.items() if entry["session"] == 4
    }


def _corpus_wav(corpus, utt_id, kept_truth):
    entry = kept_truth[utt_id]
    return corpus / f"Session{entry['session']}" / "sentences" / "wav" / entry["dialog"] / (
        f"{utt_id}.wav"
    )
