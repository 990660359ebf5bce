"""CREMA-D, RAVDESS and MSP-Podcast preparations on small trees in each corpus's own layout.

The fixtures follow each corpus's documented naming and label files and record what they wrote
(``truth``); the label tables below are written from the corpus documentation, not imported from
the preparations, so a wrong mapping fails.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lobes.data import manifests
from lobes.data.audio import AudioError
from lobes.fixtures.recipe_modules import recipe_module

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SPLITS = ("train", "valid", "test")
CONTRACT_FIELDS = {"wav", "duration", "emo", "gender", "spk", "session"}
CLIP_SECONDS = 0.3
APPLE_DOUBLE_JUNK = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)


def _load_recipe_module(corpus, name):
    return recipe_module(name, RECIPES / corpus / "GMP-TL")


cremad_prepare = _load_recipe_module("CREMA-D", "cremad_prepare")
ravdess_prepare = _load_recipe_module("RAVDESS", "ravdess_prepare")
msppodcast_prepare = _load_recipe_module("MSP-Podcast", "msppodcast_prepare")
prepare_cremad = cremad_prepare.prepare_cremad
prepare_ravdess = ravdess_prepare.prepare_ravdess
prepare_msppodcast = msppodcast_prepare.prepare_msppodcast
PreparationError = manifests.PreparationError


def _write_clip(path, sample_rate, rng, channels=1):
    n_samples = round(CLIP_SECONDS * sample_rate)
    time = np.arange(n_samples) / sample_rate
    tone = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * time)
    samples = tone + 0.01 * rng.standard_normal(n_samples)
    if channels > 1:
        samples = np.stack([samples] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, sample_rate)


def _read_manifests(save_folder):
    return {split: json.loads((Path(save_folder) / f"{split}.json").read_text())
            for split in SPLITS}


def _read_classes(save_folder):
    return json.loads((Path(save_folder) / "classes.json").read_text())


def _all_entries(prepared):
    return {utt_id: entry for split in SPLITS for utt_id, entry in prepared[split].items()}


def _check_fold(prepared, truth, kept_ids, fold):
    """Disjoint splits covering the kept clips; entries as the fixture wrote them."""
    train, valid, test = (set(prepared[split]) for split in SPLITS)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert train | valid | test == kept_ids
    test_speakers = {entry["spk"] for entry in prepared["test"].values()}
    training_speakers = {entry["spk"] for split in ("train", "valid")
                         for entry in prepared[split].values()}
    assert test_speakers and not test_speakers & training_speakers  # speaker independent
    assert {entry["session"] for entry in prepared["test"].values()} == {fold}
    assert fold not in {entry["session"] for split in ("train", "valid")
                        for entry in prepared[split].values()}
    for utt_id, entry in _all_entries(prepared).items():
        assert set(entry) == CONTRACT_FIELDS
        assert (entry["gender"], entry["spk"]) == (truth[utt_id]["gender"], truth[utt_id]["spk"])
        assert Path(entry["wav"]).is_absolute() and Path(entry["wav"]).name == f"{utt_id}.wav"
        assert Path(entry["wav"]).is_file()
        assert entry["duration"] == pytest.approx(CLIP_SECONDS, abs=1e-4)
    return test_speakers


def _check_speaker_cover(test_speakers_per_fold, speaker_genders):
    """Every speaker is tested in exactly one fold; each fold's test speakers gender-balanced."""
    tested = [spk for speakers in test_speakers_per_fold.values() for spk in speakers]
    assert Counter(tested) == Counter(set(speaker_genders))
    for speakers in test_speakers_per_fold.values():
        genders = Counter(speaker_genders[spk] for spk in speakers)
        assert genders["F"] == genders["M"], (speakers, genders)


# ---------------------------------------------------------------------------------------------
# CREMA-D: AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav, VideoDemographics.csv, 16 kHz mono.

CREMAD_EMOTIONS = {"ANG": "ang", "DIS": "dis", "FEA": "fea", "HAP": "hap", "NEU": "neu",
                   "SAD": "sad"}
# Contiguous or id-order round-robin folds would not be gender-balanced with these sexes.
CREMAD_SEXES = {"1001": "Female", "1002": "Female", "1003": "Male", "1004": "Male",
                "1005": "Female", "1006": "Female", "1007": "Male", "1008": "Male",
                "1009": "Male", "1076": "Female"}


def make_cremad(root):
    """10 actors x 2 sentences x 6 emotions, the silent 1076_MTI_SAD_XX, junk beside them."""
    rng = np.random.default_rng(11)
    corpus = Path(root) / "CREMA-D"
    audio_folder = corpus / "AudioWAV"
    truth = {}
    for actor, sex in CREMAD_SEXES.items():
        for sentence, level in (("DFA", "XX"), ("IEO", "HI")):
            for code, emo in CREMAD_EMOTIONS.items():
                utt_id = f"{actor}_{sentence}_{code}_{level}"
                _write_clip(audio_folder / f"{utt_id}.wav", 16000, rng)
                truth[utt_id] = {"emo": emo, "gender": sex[0], "spk": actor}
    soundfile.write(audio_folder / "1076_MTI_SAD_XX.wav", np.zeros(0), 16000)  # as released
    (audio_folder / "._1001_DFA_ANG_XX.wav").write_bytes(APPLE_DOUBLE_JUNK)
    (audio_folder / "notes.txt").write_text("not audio\n")
    demographics = ["ActorID,Age,Sex,Race,Ethnicity"] + [
        f"{actor},{30 + index},{sex},Caucasian,Not Hispanic"
        for index, (actor, sex) in enumerate(CREMAD_SEXES.items())
    ] + ["1010,40,Male,Asian,Not Hispanic"]  # an actor without audio in this subset
    (corpus / "VideoDemographics.csv").write_text("\n".join(demographics) + "\n")
    return corpus, truth


@pytest.fixture(scope="module")
def cremad(tmp_path_factory):
    return make_cremad(tmp_path_factory.mktemp("cremad"))


@pytest.fixture(scope="module")
def cremad_folds(cremad, tmp_path_factory):
    """All five folds of each class option, as ``{(classes, fold): (manifests, classes)}``."""
    corpus, _ = cremad
    prepared = {}
    for classes in ("4", "6"):
        for fold in range(1, 6):
            save_folder = tmp_path_factory.mktemp(f"cremad_{classes}_{fold}")
            summary = prepare_cremad(corpus, save_folder, fold, classes=classes)
            assert summary["n_converted"] == 0 and not summary["skipped"]
            prepared[classes, fold] = (_read_manifests(save_folder), _read_classes(save_folder))
    return prepared


@pytest.mark.parametrize("classes, expected", [
    ("4", ["neu", "hap", "ang", "sad"]),
    ("6", ["neu", "hap", "ang", "sad", "fea", "dis"]),
])
def test_cremad_folds_classes_and_speaker_independence(cremad, cremad_folds, classes, expected):
    _, truth = cremad
    kept_ids = {utt_id for utt_id, clip in truth.items() if clip["emo"] in expected}
    test_speakers_per_fold = {}
    for fold in range(1, 6):
        prepared, written_classes = cremad_folds[classes, fold]
        assert written_classes == expected
        test_speakers_per_fold[fold] = _check_fold(prepared, truth, kept_ids, fold)
        for utt_id, entry in _all_entries(prepared).items():
            assert entry["emo"] == truth[utt_id]["emo"]
        # valid: round(10 %) of each training actor's clips (len(expected) * 2 clips each)
        valid_per_actor = Counter(entry["spk"] for entry in prepared["valid"].values())
        assert set(valid_per_actor.values()) == {round(0.1 * len(expected) * 2)}
        assert len(valid_per_actor) == 8
    genders = {actor: sex[0] for actor, sex in CREMAD_SEXES.items()}
    _check_speaker_cover(test_speakers_per_fold, genders)


def test_cremad_fold_of_an_actor_does_not_depend_on_the_class_option(cremad_folds):
    for fold in range(1, 6):
        fold_of_actor = {}
        for classes in ("4", "6"):
            prepared, _ = cremad_folds[classes, fold]
            fold_of_actor[classes] = {entry["spk"]: entry["session"]
                                      for entry in _all_entries(prepared).values()}
        assert fold_of_actor["4"] == fold_of_actor["6"]


def test_cremad_skips_the_silent_clip_and_ignores_junk(cremad_folds):
    every_id = set().union(*(_all_entries(prepared) for prepared, _ in cremad_folds.values()))
    assert "1076_MTI_SAD_XX" not in every_id
    assert all(not utt_id.startswith("._") for utt_id in every_id)
    assert len(every_id) == 10 * 2 * 6


def test_cremad_rerun_is_skipped_and_a_class_change_reprepares(cremad, tmp_path):
    corpus, _ = cremad
    first = prepare_cremad(corpus, tmp_path, 2)
    options_path = tmp_path / "prepare_options.json"
    written_last = options_path.stat().st_mtime_ns
    assert all((tmp_path / name).stat().st_mtime_ns <= written_last
               for name in ("train.json", "valid.json", "test.json", "classes.json"))
    assert json.loads(options_path.read_text()) == {
        "data_folder": str(corpus.resolve()), "fold": 2, "n_folds": 5, "valid_ratio": 0.1,
        "seed": 1986, "classes": "4",
    }
    again = prepare_cremad(corpus, tmp_path, 2)
    assert again["skipped"] and again["test"] == first["test"]
    assert options_path.stat().st_mtime_ns == written_last
    six = prepare_cremad(corpus, tmp_path, 2, classes="6")
    assert not six["skipped"] and six["test"] == first["test"] * 6 // 4
    assert _read_classes(tmp_path) == ["neu", "hap", "ang", "sad", "fea", "dis"]
    (tmp_path / "classes.json").unlink()
    assert not prepare_cremad(corpus, tmp_path, 2, classes="6")["skipped"]


def test_cremad_missing_and_unreadable_wavs_are_reported_together(cremad, tmp_path):
    corpus = Path(cremad[0])
    damaged = tmp_path / "CREMA-D"
    (damaged / "AudioWAV").mkdir(parents=True)
    (damaged / "VideoDemographics.csv").write_bytes((corpus / "VideoDemographics.csv")
                                                    .read_bytes())
    for wav_path in (corpus / "AudioWAV").iterdir():
        os.symlink(wav_path, damaged / "AudioWAV" / wav_path.name)
    dangling = damaged / "AudioWAV" / "1003_DFA_NEU_XX.wav"  # a moved file: dangling link
    dangling.unlink()
    os.symlink(tmp_path / "moved_away.wav", dangling)
    garbage = damaged / "AudioWAV" / "1008_IEO_HAP_HI.wav"
    garbage.unlink()
    garbage.write_bytes(b"version https://git-lfs.github.com/spec/v1\n" * 4)  # an LFS pointer

    with pytest.raises(AudioError) as raised:
        prepare_cremad(damaged, tmp_path / "out", 1)

    message = str(raised.value)
    assert str(dangling) in message and str(garbage) in message
    assert f"2 of {10 * 2 * 4} wav files cannot be used" in message and "git-lfs" in message
    assert not (tmp_path / "out").exists()


def test_cremad_actor_missing_from_demographics_is_refused(cremad, tmp_path):
    corpus = Path(cremad[0])
    extra = tmp_path / "CREMA-D"
    (extra / "AudioWAV").mkdir(parents=True)
    (extra / "VideoDemographics.csv").write_bytes((corpus / "VideoDemographics.csv")
                                                  .read_bytes())
    _write_clip(extra / "AudioWAV" / "1091_DFA_ANG_XX.wav", 16000, np.random.default_rng(0))
    with pytest.raises(PreparationError, match="actor 1091"):
        prepare_cremad(extra, tmp_path / "out", 1)


@pytest.mark.parametrize("bad_options, message", [
    ({"fold": 6}, "fold must be from 1 to n_folds"),
    ({"fold": 1, "classes": "5"}, "classes must be one of"),
    ({"fold": 1, "n_folds": 11}, "n_folds must be from 2 to the number of speakers"),
])
def test_cremad_bad_options_are_refused(cremad, tmp_path, bad_options, message):
    with pytest.raises(PreparationError, match=message):
        prepare_cremad(cremad[0], tmp_path / "out", **bad_options)


def test_cremad_command_line(cremad, tmp_path, capsys):
    cremad_prepare.main(["--data_folder", str(cremad[0]), "--save_folder", str(tmp_path),
                         "--fold", "3", "--classes", "6"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["test"] == 2 * 2 * 6 and not summary["skipped"]
    assert _read_classes(tmp_path) == ["neu", "hap", "ang", "sad", "fea", "dis"]


# ---------------------------------------------------------------------------------------------
# RAVDESS: Actor_XX/<modality>-<channel>-<emotion>-<intensity>-<statement>-<rep>-<actor>.wav,
# 48 kHz; odd actors male, even female.

RAVDESS_EMOTIONS = {1: "neu", 2: "cal", 3: "hap", 4: "sad", 5: "ang", 6: "fea", 7: "dis",
                    8: "sur"}
RAVDESS_ACTORS = range(1, 7)


def make_ravdess(root):
    """6 actors, 15 speech clips each (neutral has no strong intensity), song/video junk."""
    rng = np.random.default_rng(5)
    corpus = Path(root) / "Audio_Speech_Actors_01-24"
    truth = {}
    for actor in RAVDESS_ACTORS:
        actor_folder = corpus / f"Actor_{actor:02d}"
        for emotion, emo in RAVDESS_EMOTIONS.items():
            for intensity in (1,) if emotion == 1 else (1, 2):
                utt_id = f"03-01-{emotion:02d}-{intensity:02d}-01-01-{actor:02d}"
                _write_clip(actor_folder / f"{utt_id}.wav", 48000, rng,
                            channels=2 if actor % 3 == 0 else 1)
                truth[utt_id] = {"emo": emo, "gender": "M" if actor % 2 else "F",
                                 "spk": f"Actor_{actor:02d}"}
        # Junk of the other releases in the same tree: song (a real wav), audio-video and
        # video-only files, and a macOS resource fork.
        _write_clip(actor_folder / f"03-02-03-01-01-01-{actor:02d}.wav", 48000, rng)
        (actor_folder / f"01-01-03-01-01-01-{actor:02d}.mp4").write_bytes(b"\x00" * 64)
        (actor_folder / f"02-01-03-01-01-01-{actor:02d}.mp4").write_bytes(b"\x00" * 64)
        (actor_folder / f"._03-01-01-01-01-01-{actor:02d}.wav").write_bytes(APPLE_DOUBLE_JUNK)
    _write_clip(corpus / "Actor_02" / "01-01-04-01-01-01-02.wav", 48000, rng)  # AV, as wav
    return corpus, truth


@pytest.fixture(scope="module")
def ravdess(tmp_path_factory):
    return make_ravdess(tmp_path_factory.mktemp("ravdess"))


@pytest.mark.parametrize("classes, calm, expected_classes", [
    ("8", "neu", ["neu", "hap", "ang", "sad", "fea", "dis", "sur"]),
    ("8", "drop", ["neu", "hap", "ang", "sad", "fea", "dis", "sur"]),
    ("8", "keep", ["neu", "hap", "ang", "sad", "fea", "dis", "sur", "cal"]),
    ("4", "neu", ["neu", "hap", "ang", "sad"]),
    ("4", "drop", ["neu", "hap", "ang", "sad"]),
])
def test_ravdess_folds_classes_and_calm(ravdess, tmp_path, classes, calm, expected_classes):
    corpus, truth = ravdess
    calm_label = {"neu": "neu", "drop": None, "keep": "cal"}[calm]
    expected_emo = {
        utt_id: calm_label if clip["emo"] == "cal" else clip["emo"]
        for utt_id, clip in truth.items()
    }
    kept_ids = {utt_id for utt_id, emo in expected_emo.items() if emo in expected_classes}
    test_speakers_per_fold = {}
    for fold in (1, 2, 3):
        save_folder = tmp_path / f"fold{fold}"
        summary = prepare_ravdess(corpus, save_folder, fold, n_folds=3, classes=classes,
                                  calm=calm)
        assert summary["n_converted"] == len(kept_ids)  # every clip is 48 kHz
        prepared = _read_manifests(save_folder)
        assert _read_classes(save_folder) == expected_classes
        test_speakers_per_fold[fold] = _check_fold(prepared, truth, kept_ids, fold)
        for utt_id, entry in _all_entries(prepared).items():
            assert entry["emo"] == expected_emo[utt_id]
    genders = {f"Actor_{actor:02d}": "M" if actor % 2 else "F" for actor in RAVDESS_ACTORS}
    _check_speaker_cover(test_speakers_per_fold, genders)


def test_ravdess_calm_kept_in_the_4_class_set_is_refused(ravdess, tmp_path):
    with pytest.raises(PreparationError, match='calm="keep"'):
        prepare_ravdess(ravdess[0], tmp_path, 1, classes="4", calm="keep")


def test_ravdess_unreadable_wav_is_reported(ravdess, tmp_path):
    corpus = Path(ravdess[0])
    damaged = tmp_path / "Audio_Speech_Actors_01-24"
    for actor_folder in corpus.iterdir():
        (damaged / actor_folder.name).mkdir(parents=True)
        for path in actor_folder.iterdir():
            os.symlink(path, damaged / actor_folder.name / path.name)
    truncated = damaged / "Actor_04" / "03-01-05-02-01-01-04.wav"
    header = truncated.read_bytes()[:20]
    truncated.unlink()
    truncated.write_bytes(header)
    with pytest.raises(AudioError, match="1 of 90 wav files cannot be used") as raised:
        prepare_ravdess(damaged, tmp_path / "out", 1, n_folds=3)
    assert str(truncated) in str(raised.value)


def test_ravdess_malformed_name_and_actor_mismatch_are_refused(ravdess, tmp_path):
    corpus = tmp_path / "Audio_Speech_Actors_01-24"
    rng = np.random.default_rng(1)
    _write_clip(corpus / "Actor_01" / "03-01-05-01-01-01-01.wav", 48000, rng)
    _write_clip(corpus / "Actor_02" / "03-01-05-01-01-01-02.wav", 48000, rng)
    _write_clip(corpus / "Actor_02" / "03-01-05-01-01-01-03.wav", 48000, rng)
    with pytest.raises(PreparationError, match="names actor 03 but lies in Actor_02"):
        prepare_ravdess(corpus, tmp_path / "out", 1, n_folds=2)
    (corpus / "Actor_02" / "03-01-05-01-01-01-03.wav").rename(corpus / "Actor_02" / "take2.wav")
    with pytest.raises(PreparationError, match="take2.wav"):
        prepare_ravdess(corpus, tmp_path / "out", 1, n_folds=2)


def test_ravdess_command_line_runs_from_anywhere(ravdess, tmp_path):
    result = subprocess.run(
        [sys.executable, str(RECIPES / "RAVDESS" / "GMP-TL" / "ravdess_prepare.py"),
         "--data_folder", str(ravdess[0]), "--save_folder", str(tmp_path / "out"),
         "--fold", "2", "--n_folds", "3", "--classes", "4", "--calm", "drop"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    # fold 2 of 3: one woman and one man, 7 clips each of neu (1), hap, sad, ang (2 each)
    assert summary["test"] == 2 * 7 and summary["n_converted"] == 6 * 7
    assert "not audio-only speech" in result.stderr


# ---------------------------------------------------------------------------------------------
# MSP-Podcast: Labels/labels_consensus.csv and Audios/<FileName>, 16 kHz; one official split.

MSP_EMOTIONS = {"N": "neu", "H": "hap", "A": "ang", "S": "sad", "U": "sur", "F": "fea",
                "D": "dis", "C": "con"}
MSP_SPEAKERS = {  # speaker id: (gender, Split_Set)
    "101": ("Female", "Train"), "102": ("Male", "Train"), "103": ("Female", "Train"),
    "104": ("Male", "Train"), "201": ("Female", "Development"), "202": ("Male", "Development"),
    "301": ("Male", "Test1"), "302": ("Female", "Test1"), "401": ("Female", "Test2"),
}
MSP_CODES = ("N", "H", "A", "S", "U", "F", "D", "C", "O", "X", "N", "H")


def make_msppodcast(root):
    """12 rows per speaker (O and X included), Unknown rows, an unlabelled wav."""
    rng = np.random.default_rng(3)
    corpus = Path(root) / "MSP-Podcast"
    rows, truth = [], {}
    segment = 0

    def add_row(code, spkr_id, gender, split_set):
        nonlocal segment
        segment += 1
        utt_id = f"MSP-PODCAST_{segment // 10:04d}_{segment % 10:04d}"
        _write_clip(corpus / "Audios" / f"{utt_id}.wav", 16000, rng)
        rows.append(f"{utt_id}.wav,{code},4.0,4.2,3.8,{spkr_id},{gender},{split_set}")
        truth[utt_id] = {"code": code, "spk": spkr_id, "gender": gender[0],
                         "split_set": split_set}

    for spkr_id, (gender, split_set) in MSP_SPEAKERS.items():
        for code in MSP_CODES:
            add_row(code, spkr_id, gender, split_set)
    for code, spkr_id, gender, split_set in (
        ("H", "Unknown", "Unknown", "Train"), ("A", "Unknown", "Unknown", "Test1"),
        ("S", "Unknown", "Male", "Train"), ("N", "105", "Unknown", "Development"),
        ("X", "Unknown", "Unknown", "Train"),  # left out for its class already
    ):
        add_row(code, spkr_id, gender, split_set)
    _write_clip(corpus / "Audios" / "MSP-PODCAST_9999_0001.wav", 16000, rng)  # not labelled
    (corpus / "Labels").mkdir()
    (corpus / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
        + "\n".join(rows) + "\n"
    )
    return corpus, truth


@pytest.fixture(scope="module")
def msppodcast(tmp_path_factory):
    return make_msppodcast(tmp_path_factory.mktemp("msppodcast"))


def _msp_expected(truth, classes, split_of_set):
    """``{split: ids}`` from the fixture's truth, and the Unknown rows of used splits/classes."""
    expected = {split: set() for split in SPLITS}
    n_unknown = 0
    for utt_id, row in truth.items():
        split = split_of_set.get(row["split_set"])
        if split is None or MSP_EMOTIONS.get(row["code"]) not in classes:
            continue
        if row["spk"] == "Unknown" or row["gender"] == "U":
            n_unknown += 1
        else:
            expected[split].add(utt_id)
    return expected, n_unknown


@pytest.mark.parametrize("classes, expected_classes, test_set", [
    ("4", ["neu", "hap", "ang", "sad"], "Test1"),
    ("8", ["neu", "hap", "ang", "sad", "fea", "dis", "sur", "con"], "Test1"),
    ("4", ["neu", "hap", "ang", "sad"], "Test2"),
])
def test_msppodcast_official_split(msppodcast, tmp_path, classes, expected_classes, test_set):
    corpus, truth = msppodcast
    summary = prepare_msppodcast(corpus, tmp_path, classes=classes, test_set=test_set)
    prepared = _read_manifests(tmp_path)
    expected, n_unknown = _msp_expected(
        truth, expected_classes, {"Train": "train", "Development": "valid", test_set: "test"}
    )
    assert {split: set(prepared[split]) for split in SPLITS} == expected
    assert summary["n_unknown_dropped"] == n_unknown and summary["n_converted"] == 0
    assert _read_classes(tmp_path) == expected_classes
    for utt_id, entry in _all_entries(prepared).items():
        assert set(entry) == CONTRACT_FIELDS and entry["session"] == 0
        assert entry["emo"] == MSP_EMOTIONS[truth[utt_id]["code"]]
        assert (entry["gender"], entry["spk"]) == (truth[utt_id]["gender"], truth[utt_id]["spk"])
        assert Path(entry["wav"]) == corpus.resolve() / "Audios" / f"{utt_id}.wav"
        assert entry["duration"] == pytest.approx(CLIP_SECONDS, abs=1e-4)
    assert {entry["emo"] for entry in _all_entries(prepared).values()} == set(expected_classes)


def test_msppodcast_counts_are_what_the_labels_say(msppodcast, tmp_path):
    # Per speaker: N, H twice and A, S once among the 4 classes; O and X never.
    summary = prepare_msppodcast(msppodcast[0], tmp_path)
    assert (summary["train"], summary["valid"], summary["test"]) == (4 * 6, 2 * 6, 2 * 6)
    assert summary["n_unknown_dropped"] == 4


def test_msppodcast_valid_drawn_from_train(msppodcast, tmp_path):
    corpus, truth = msppodcast
    prepare_msppodcast(corpus, tmp_path, valid_from="Train", valid_ratio=0.34, seed=4)
    prepared = _read_manifests(tmp_path)
    expected, _ = _msp_expected(truth, ["neu", "hap", "ang", "sad"],
                                {"Train": "train", "Test1": "test"})
    assert set(prepared["train"]) | set(prepared["valid"]) == expected["train"]
    assert not set(prepared["train"]) & set(prepared["valid"])
    assert set(prepared["test"]) == expected["test"]
    assert Counter(entry["spk"] for entry in prepared["valid"].values()) == {
        "101": 2, "102": 2, "103": 2, "104": 2  # round(0.34 * 6) of each training speaker
    }


def test_msppodcast_missing_wav_gives_one_error(msppodcast, tmp_path):
    corpus, truth = msppodcast
    damaged = tmp_path / "MSP-Podcast"
    (damaged / "Audios").mkdir(parents=True)
    os.symlink(corpus / "Labels", damaged / "Labels")
    for wav_path in (corpus / "Audios").iterdir():
        os.symlink(wav_path, damaged / "Audios" / wav_path.name)
    by_code = {}
    for utt_id, row in sorted(truth.items()):
        by_code.setdefault((row["code"], row["split_set"]), utt_id)
    missing = damaged / "Audios" / f"{by_code['H', 'Train']}.wav"
    unreadable = damaged / "Audios" / f"{by_code['S', 'Test1']}.wav"
    unused = damaged / "Audios" / f"{by_code['X', 'Train']}.wav"  # no-agreement row
    for path in (missing, unreadable, unused):
        path.unlink()
    unreadable.write_bytes(b"RIFF")

    with pytest.raises(AudioError) as raised:
        prepare_msppodcast(damaged, tmp_path / "out")

    message = str(raised.value)
    assert str(missing) in message and str(unreadable) in message and str(unused) not in message
    assert f"2 of {4 * 6 + 2 * 6 + 2 * 6} wav files cannot be used" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad_options, message", [
    ({"fold": 2}, "one official split: fold must be 1"),
    ({"valid_from": "Test2"}, "valid_from must be one of"),
    ({"test_set": "Development"}, "test_set must be a test Split_Set"),
    ({"test_set": "Test9"}, "no usable row of Split_Set Test9"),
    ({"classes": "6"}, "classes must be one of"),
])
def test_msppodcast_bad_options_are_refused(msppodcast, tmp_path, bad_options, message):
    with pytest.raises(PreparationError, match=message):
        prepare_msppodcast(msppodcast[0], tmp_path, **bad_options)


def test_msppodcast_unknown_class_code_is_refused(tmp_path):
    corpus = tmp_path / "MSP-Podcast"
    (corpus / "Labels").mkdir(parents=True)
    (corpus / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
        "MSP-PODCAST_0001_0001.wav,Z,4,4,4,7,Male,Train\n"
    )
    with pytest.raises(PreparationError, match="unknown EmoClass 'Z'"):
        prepare_msppodcast(corpus, tmp_path / "out")


def test_msppodcast_command_line_accepts_only_fold_1(msppodcast, tmp_path, capsys):
    msppodcast_prepare.main(["--data_folder", str(msppodcast[0]), "--save_folder",
                             str(tmp_path), "--fold", "1", "--classes", "8"])
    assert json.loads(capsys.readouterr().out)["test"] == 2 * 10
    with pytest.raises(SystemExit) as raised:
        msppodcast_prepare.main(["--data_folder", str(msppodcast[0]), "--save_folder",
                                 str(tmp_path), "--fold", "2"])
    assert raised.value.code == 2 and "invalid choice" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The shared pieces.

def test_speaker_folds_are_balanced_for_ravdess_sized_corpora():
    genders = {f"Actor_{actor:02d}": "M" if actor % 2 else "F" for actor in range(1, 25)}
    for n_folds in (2, 3, 4, 5, 6, 24):
        folds = manifests.speaker_folds(genders, n_folds)
        assert set(folds) == set(genders) and set(folds.values()) == set(range(1, n_folds + 1))
        sizes = Counter(folds.values())
        assert max(sizes.values()) - min(sizes.values()) <= 1
        for gender in "FM":
            per_fold = Counter(fold for spk, fold in folds.items() if genders[spk] == gender)
            assert max(per_fold.values()) - min(per_fold.get(fold, 0)
                                                for fold in range(1, n_folds + 1)) <= 1
        assert folds == manifests.speaker_folds(dict(reversed(genders.items())), n_folds)


def test_write_manifests_refuses_an_entry_outside_the_contract(tmp_path):
    entry = {"wav": "/a.wav", "duration": 1.0, "emo": "neu", "gender": "U", "spk": "s",
             "session": 0}
    with pytest.raises(ValueError, match="gender 'U'"):
        manifests.write_manifests(tmp_path, {"train": {"u": entry}, "valid": {}, "test": {}},
                                  ["neu"], {})
    with pytest.raises(ValueError, match="emo 'neu', not in"):
        manifests.write_manifests(tmp_path, {"train": {"u": {**entry, "gender": "F"}},
                                             "valid": {}, "test": {}}, ["sad"], {})
    assert not (tmp_path / "train.json").exists()


def test_one_ravdess_fold_runs_end_to_end_through_the_same_recipe(ravdess, tmp_path,
                                                                  demo_hubert_dir):
    """--corpus ravdess: the IEMOCAP stage scripts, heads sized from the prepared classes."""
    from recipe_helpers import run_cv

    corpus, truth = ravdess
    output = tmp_path / "out"
    completed = run_cv(output, corpus, demo_hubert_dir, "--corpus", "ravdess", "--folds", "1",
                       "--systems", "gmp_tl", overrides_text="number_of_epochs: 1\n",
                       check=False)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    expected_classes = ["neu", "hap", "ang", "sad", "fea", "dis", "sur"]  # 8 classes, calm->neu
    metrics = json.loads((output / "fold1" / "stage2" / "metrics.json").read_text())
    assert metrics["classes"] == expected_classes
    assert len(metrics["confusion"]) == len(expected_classes)
    header = (output / "fold1" / "stage2" / "predictions.csv").read_text().splitlines()[0]
    assert header == "id,true,predicted," + ",".join(f"score_{c}" for c in expected_classes)
    test_ids = set(json.loads((output / "fold1" / "prepare" / "test.json").read_text()))
    assert test_ids and test_ids <= set(truth)
    assert metrics["n_utterances"] == len(test_ids)
    results = json.loads((output / "results.json").read_text())
    assert set(results["systems"]) == {"gmp_tl"} and "reported" not in results
    assert "reported" not in (output / "results.md").read_text()
