"""EmoBox preparation on small trees in EmoBox's format: metadata, folds, label maps and wavs.

The fixtures write EmoBox's layout (``data/<dataset>/fold_<k>/<dataset>_{train,test}_fold_<k>
.jsonl``, ``label_map.json``, wavs under ``downloads/``) for IEMOCAP (over the demo corpus, so the
native preparation can read the same audio), RAVDESS, CREMA-D and Emozionalmente (keys without
speakers). The speaker and gender tables below are written from each corpus's documentation, not
imported from the preparation, so a wrong table fails.
"""

import csv
import doctest
import json
import logging
import math
import os
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile
import speechbrain as sb
import torch
from recipe_helpers import recipe_module, recipe_table
from speechbrain.dataio.batch import PaddedBatch

from lobes.data import corpora, manifests
from lobes.data.datasets import UNKNOWN_GENDER_INDEX, dataio_prepare
from lobes.fixtures.recipe_modules import recipe_module as import_script
from lobes.models.heads import SoftmaxCELoss
from lobes.runner.results import results_markdown
from lobes.utils.errors import HparamsError

EMOBOX_DIR = Path(__file__).resolve().parents[1] / "recipes" / "EmoBox" / "GMP-TL"
emobox_prepare = import_script("emobox_prepare", EMOBOX_DIR)
prepare_emobox = emobox_prepare.prepare_emobox
PreparationError = manifests.PreparationError
SPLITS = ("train", "valid", "test")

# EmoBox's own label maps (data/<dataset>/label_map.json of the release).
IEMOCAP_MAP = {"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad", "exc": "Happy"}
RAVDESS_MAP = {"Angry": "Angry", "Surprised": "Surprise", "Sad": "Sad", "Disgust": "Disgust",
               "Happy": "Happy", "Calm": "Calm", "Neutral": "Neutral", "Fearful": "Fear"}
CREMAD_MAP = {"ANG": "Angry", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happy", "NEU": "Neutral",
              "SAD": "Sad"}
EMOZIONALMENTE_MAP = {"anger": "Angry", "disgust": "Disgust", "fear": "Fear", "joy": "Happy",
                      "neutrality": "Neutral", "sadness": "Sad", "surprise": "Surprise"}
RAVDESS_EMOTIONS = {"01": "Neutral", "02": "Calm", "03": "Happy", "05": "Angry"}


def write_wav(path, n_samples, rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(len(str(path))).normal(0, 0.1, n_samples)
    soundfile.write(path, noise, rate, subtype="PCM_16")


def line(key, wav, emo, n_samples, rate):
    """One metadata line as EmoBox writes it."""
    return {"key": key, "dataset": key.split("-")[0], "wav": str(wav), "type": "raw",
            "sample_rate": rate, "num_frame": float(n_samples), "task": "category",
            "length": n_samples / rate, "emo": emo, "channel": 1}


def write_metadata(root, dataset, folds, label_map, label_map_file="label_map.json"):
    """``folds``: ``{k: {"train": [line, ...], "test": [...]}}`` under ``root/data``."""
    folder = root / "data" / dataset
    for fold, splits in folds.items():
        (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
        for split, lines in splits.items():
            (folder / f"fold_{fold}" / f"{dataset}_{split}_fold_{fold}.jsonl").write_text(
                "".join(json.dumps(entry) + "\n" for entry in lines))
    (folder / label_map_file).write_text(json.dumps(label_map, indent=4))
    return folder


def read_fold(folder):
    return {split: json.loads((Path(folder) / f"{split}.json").read_text()) for split in SPLITS}


def emobox_values(root, prepare_folder, fold, **options):
    return {"corpus": "emobox", "data_folder": str(root), "prepare_folder": str(prepare_folder),
            "test_session": fold, "valid_ratio": 0.1, "seed": 1986, "expected_utterances": 0,
            "skip_prep": False, "prepare_options": options}


# --- RAVDESS: speakers and genders in the key, 48 kHz, two folds -----------------------------

@pytest.fixture
def ravdess_root(tmp_path):
    """Actors 01-04, four clips each; fold 1 tests actors 01-02, fold 2 actors 03-04."""
    lines = {}
    for actor in range(1, 5):
        for emotion, name in RAVDESS_EMOTIONS.items():
            clip = f"03-01-{emotion}-01-01-01-{actor:02d}"
            wav = Path("downloads/ravdess/audio/Audio_Speech_Actors_01-24") / \
                f"Actor_{actor:02d}" / f"{clip}.wav"
            write_wav(tmp_path / wav, 4800 + 480 * actor, 48000)
            lines.setdefault(actor, []).append(
                line(f"ravdess-{clip}", wav, name, 4800 + 480 * actor, 48000))
    folds = {1: {"train": lines[3] + lines[4], "test": lines[1] + lines[2]},
             2: {"train": lines[1] + lines[2], "test": lines[3] + lines[4]}}
    write_metadata(tmp_path, "ravdess", folds, RAVDESS_MAP)
    return tmp_path


def test_ravdess_folds_speakers_genders_classes(ravdess_root, tmp_path):
    assert emobox_prepare.n_folds(ravdess_root, dataset="ravdess") == 2
    summary = prepare_emobox(ravdess_root, tmp_path / "fold2", 2, dataset="ravdess",
                             valid_ratio=0.5)
    assert (summary["test"], summary["n_converted"], summary["unknown_gender"]) == (8, 16, 0)
    fold = read_fold(tmp_path / "fold2")
    # test = EmoBox's test list of fold 2 (actors 03 and 04), ids = EmoBox's keys
    assert {entry["spk"] for entry in fold["test"].values()} == {"Actor_03", "Actor_04"}
    entry = fold["test"]["ravdess-03-01-05-01-01-01-03"]
    assert (entry["emo"], entry["gender"], entry["session"]) == ("ang", "M", 2)
    assert entry["duration"] == pytest.approx((4800 + 480 * 3) / 48000)
    assert fold["test"]["ravdess-03-01-02-01-01-01-04"]["gender"] == "F"  # even actors: women
    assert entry["wav"] == str(ravdess_root.resolve() / "downloads/ravdess/audio/"
                               "Audio_Speech_Actors_01-24/Actor_03/03-01-05-01-01-01-03.wav")
    # valid: whole speakers of the train list, half of it
    valid_speakers = {entry["spk"] for entry in fold["valid"].values()}
    train_speakers = {entry["spk"] for entry in fold["train"].values()}
    assert len(fold["valid"]) == 4 and len(valid_speakers) == 1
    assert not valid_speakers & train_speakers
    assert {entry["session"] for entry in [*fold["train"].values(), *fold["valid"].values()]} \
        == {0}
    # the label map's names, in the native preparations' order
    classes = json.loads((tmp_path / "fold2" / "classes.json").read_text())
    assert classes == ["neu", "hap", "ang", "cal"]


def test_valid_by_utterance_when_speakers_are_too_few(ravdess_root, tmp_path, caplog):
    """Two training actors of 4 clips: one actor would be 4 clips, over twice 15 % of 8."""
    with caplog.at_level(logging.WARNING):
        prepare_emobox(ravdess_root, tmp_path / "fold1", 1, dataset="ravdess", valid_ratio=0.15)
    fold = read_fold(tmp_path / "fold1")
    assert len(fold["valid"]) == 2
    assert {entry["spk"] for entry in fold["valid"].values()} == {"Actor_03", "Actor_04"}
    assert "drawn by utterance from every speaker" in caplog.text


def test_same_seed_same_split_other_seed_other_split(ravdess_root, tmp_path):
    valid_speakers = set()
    for seed in (1, 1, 2, 3, 4, 5, 6, 7):
        folder = tmp_path / f"seed{seed}"
        prepare_emobox(ravdess_root, folder, 1, dataset="ravdess", valid_ratio=0.5, seed=seed)
        fold = read_fold(folder)
        if seed == 1:
            assert fold == read_fold(tmp_path / "seed1")
        valid_speakers.add(frozenset(entry["spk"] for entry in fold["valid"].values()))
    assert valid_speakers == {frozenset({"Actor_03"}), frozenset({"Actor_04"})}


# --- a dataset whose keys name no speaker ----------------------------------------------------

@pytest.fixture
def emozionalmente_root(tmp_path):
    """One fold of 20 train and 5 test clips at 16 kHz, keys as in EmoBox (timestamps)."""
    labels = ["neutrality", "joy", "anger", "neutrality", "joy"]
    lines = []
    for index in range(25):
        key = f"emozionalmente-16136550{index:05d}"
        wav = Path("downloads/emozionalmente/audio") / f"16136550{index:05d}.wav"
        write_wav(tmp_path / wav, 3200, 16000)
        lines.append(line(key, wav, labels[index % 5], 3200, 16000))
    write_metadata(tmp_path, "emozionalmente", {1: {"train": lines[:20], "test": lines[20:]}},
                   EMOZIONALMENTE_MAP)
    return tmp_path


def test_dataset_without_speakers(emozionalmente_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        summary = prepare_emobox(emozionalmente_root, tmp_path / "fold1", 1,
                                 dataset="emozionalmente", valid_ratio=0.2)
    assert (summary["train"], summary["valid"], summary["test"]) == (16, 4, 5)
    assert summary["unknown_gender"] == 25
    fold = read_fold(tmp_path / "fold1")
    entries = [entry for split in SPLITS for entry in fold[split].values()]
    assert {(entry["spk"], entry["gender"]) for entry in entries} == {("unknown", "unknown")}
    assert json.loads((tmp_path / "fold1" / "classes.json").read_text()) == ["neu", "hap", "ang"]
    assert "drawn by utterance" in caplog.text
    assert "stage 0 trains on emotion alone" in caplog.text
    assert emobox_prepare.n_folds(emozionalmente_root, dataset="emozionalmente") == 1


def test_command_line(emozionalmente_root, tmp_path, capsys):
    emobox_prepare.main(["--data_folder", str(emozionalmente_root), "--save_folder",
                         str(tmp_path / "out"), "--dataset", "emozionalmente", "--metadata",
                         str(emozionalmente_root / "data")])
    assert json.loads(capsys.readouterr().out)["test"] == 5
    with pytest.raises(SystemExit, match="fold 2 is not one of them"):
        emobox_prepare.main(["--data_folder", str(emozionalmente_root), "--save_folder",
                             str(tmp_path / "out2"), "--dataset", "emozionalmente",
                             "--fold", "2"])


def test_unknown_genders_through_stage0_loss(emozionalmente_root, ravdess_root, tmp_path):
    """Unknown genders reach stage 0's loss as the ignore index and add nothing to it."""
    prepare_emobox(emozionalmente_root, tmp_path / "emo", 1, dataset="emozionalmente",
                   valid_ratio=0.2)
    datasets, label_encoder = dataio_prepare({
        **{f"{split}_annotation": tmp_path / "emo" / f"{split}.json" for split in SPLITS},
        "save_folder": tmp_path / "save"})
    batch = PaddedBatch([datasets["train"][index] for index in range(4)])
    assert batch.gender_encoded.data.reshape(-1).tolist() == [UNKNOWN_GENDER_INDEX] * 4

    train_mtl = recipe_module("train_mtl")
    counts = {}
    brain = types.SimpleNamespace(
        hparams=types.SimpleNamespace(emotion_loss=SoftmaxCELoss(), lambda_gender=1.0),
        count=lambda name, correct, total: counts.update({name: (int(correct), int(total))}))
    emotion_logits = torch.randn(4, 3)
    gender_logits = torch.randn(4, 2, requires_grad=True)
    loss = train_mtl.MTLBrain.compute_objectives(brain, (emotion_logits, gender_logits), batch,
                                                 sb.Stage.TRAIN)
    emotions = batch.emo_encoded.data.reshape(-1)
    assert float(loss.detach()) == pytest.approx(
        float(SoftmaxCELoss()(emotion_logits, emotions)))
    assert counts["gender_acc"] == (0, 0)
    loss.backward()  # the gender head still gets a (zero) gradient
    assert torch.equal(gender_logits.grad, torch.zeros(4, 2))

    # a batch mixing known and unknown genders: the loss over the known ones only
    batch.gender_encoded.data[:2] = torch.tensor([[0], [1]])
    loss = train_mtl.MTLBrain.compute_objectives(brain, (emotion_logits, gender_logits), batch,
                                                 sb.Stage.TRAIN)
    expected = SoftmaxCELoss()(emotion_logits, emotions) + torch.nn.functional.cross_entropy(
        gender_logits[:2], torch.tensor([0, 1]))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))
    assert counts["gender_acc"][1] == 2


def test_unknown_gender_refused_by_per_gender_clustering():
    extract_gmp = recipe_module("extract_gmp")
    extract_gmp.check_gender_split(False, {"train": {"u": {"gender": "unknown"}}})
    with pytest.raises(HparamsError, match="set gmp_gender_split: False"):
        extract_gmp.check_gender_split(True, {"train": {"u": {"gender": "unknown"}}})


def test_contract_takes_unknown_gender_only():
    entry = {"wav": "/a.wav", "duration": 1.0, "emo": "neu", "gender": "unknown",
             "spk": "unknown", "session": 0}
    manifests._contract_entry("u", entry, ["neu"])
    with pytest.raises(ValueError, match="not F, M or unknown"):
        manifests._contract_entry("u", {**entry, "gender": "X"}, ["neu"])


# --- CREMA-D: the gender from VideoDemographics.csv ------------------------------------------

@pytest.fixture
def cremad_root(tmp_path):
    lines = []
    for actor in ("1001", "1002", "1003"):
        for emotion in ("ANG", "NEU", "SAD"):
            name = f"{actor}_IEO_{emotion}_HI"
            wav = Path("downloads/cremad/AudioWAV") / f"{name}.wav"
            write_wav(tmp_path / wav, 2400, 16000)
            lines.append(line(f"cremad-{name.replace('_', '-')}", wav, emotion, 2400, 16000))
    write_metadata(tmp_path, "cremad", {1: {"train": lines[:6], "test": lines[6:]}}, CREMAD_MAP)
    return tmp_path


def write_demographics(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
        writer.writerows([["1001", 51, "Male", "Caucasian", "Not Hispanic"],
                          ["1002", 21, "Female", "Caucasian", "Not Hispanic"],
                          ["1003", 21, "Female", "Caucasian", "Not Hispanic"]])


def test_cremad_genders_from_demographics(cremad_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        prepare_emobox(cremad_root, tmp_path / "none", 1, dataset="cremad")
    assert "VideoDemographics.csv is not at" in caplog.text
    fold = read_fold(tmp_path / "none")
    assert {entry["gender"] for entry in fold["test"].values()} == {"unknown"}

    # looked up under the data folder, where the CREMA-D download puts it
    write_demographics(cremad_root / "downloads" / "cremad" / "VideoDemographics.csv")
    prepare_emobox(cremad_root, tmp_path / "found", 1, dataset="cremad")
    fold = read_fold(tmp_path / "found")
    genders = {entry["spk"]: entry["gender"] for split in SPLITS for entry in fold[split].values()}
    assert genders == {"1001": "M", "1002": "F", "1003": "F"}

    # or given
    other = tmp_path / "elsewhere" / "demo.csv"
    write_demographics(other)
    prepare_emobox(cremad_root, tmp_path / "given", 1, dataset="cremad", demographics=str(other))
    assert read_fold(tmp_path / "given") == fold
    with pytest.raises(PreparationError, match="demographics file not found"):
        prepare_emobox(cremad_root, tmp_path / "x", 1, dataset="cremad",
                       demographics=str(tmp_path / "nowhere.csv"))


# --- the checks before any work --------------------------------------------------------------

def test_unknown_dataset_did_you_mean(ravdess_root, tmp_path):
    with pytest.raises(PreparationError, match=r"no dataset 'ravdes' \(did you mean 'ravdess'"):
        prepare_emobox(ravdess_root, tmp_path / "out", 1, dataset="ravdes")
    with pytest.raises(PreparationError, match="give dataset=NAME, one of EmoBox's: ravdess"):
        prepare_emobox(ravdess_root, tmp_path / "out", 1)
    with pytest.raises(PreparationError, match="EmoBox metadata folder not found"):
        prepare_emobox(ravdess_root, tmp_path / "out", 1, dataset="ravdess",
                       metadata=str(tmp_path / "nowhere"))


def test_fold_the_metadata_lacks(ravdess_root, tmp_path):
    with pytest.raises(PreparationError, match=r"ravdess has 2 folds .*fold 3 is not one"):
        prepare_emobox(ravdess_root, tmp_path / "out", 3, dataset="ravdess")
    assert not (tmp_path / "out").exists()


def test_label_outside_label_map(ravdess_root, tmp_path):
    path = ravdess_root / "data/ravdess/fold_1/ravdess_test_fold_1.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"emo": "Happy"', '"emo": "Joyful"')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PreparationError, match=r"labels outside .*label_map.json: 'Joyful' "
                                               r"\(first at .*ravdess_test_fold_1.jsonl:3\)"):
        prepare_emobox(ravdess_root, tmp_path / "out", 1, dataset="ravdess")


def test_metadata_and_wavs_disagree(ravdess_root, tmp_path):
    """Missing files, other sample counts and other rates: one line each, first three named."""
    actor1 = ravdess_root / "downloads/ravdess/audio/Audio_Speech_Actors_01-24/Actor_01"
    wavs = sorted(actor1.glob("*.wav"))
    for wav in wavs:
        wav.unlink()
    actor2 = actor1.parent / "Actor_02"
    write_wav(actor2 / "03-01-01-01-01-01-02.wav", 100, 48000)
    write_wav(actor2 / "03-01-02-01-01-01-02.wav", 4800 + 480 * 2, 44100)
    with pytest.raises(PreparationError) as raised:
        prepare_emobox(ravdess_root, tmp_path / "out", 1, dataset="ravdess")
    problems = str(raised.value).splitlines()[1:]
    assert len(problems) == 3
    assert problems[0].startswith("  4 of 16 wav files are missing: downloads/ravdess/")
    assert problems[0].endswith("and 1 more")
    assert "1 of 16 wav files hold other sample counts" in problems[1]
    assert "03-01-01-01-01-01-02.wav (100 in the file, 5760 in the metadata)" in problems[1]
    assert "1 of 16 wav files have other sample rates" in problems[2]
    assert "(44100 Hz in the file, 48000 Hz in the metadata)" in problems[2]
    assert not (tmp_path / "out").exists()


def test_keys_off_the_naming(ravdess_root, tmp_path):
    path = ravdess_root / "data/ravdess/fold_1/ravdess_train_fold_1.jsonl"
    path.write_text(path.read_text().replace("ravdess-03-01-01-01-01-01-03", "ravdess-actor3-x"))
    with pytest.raises(PreparationError, match=r"1 key\(s\) of EmoBox's ravdess do not follow "
                                               r"its naming \(ravdess-03-01-05-01-02-01-18\)"):
        prepare_emobox(ravdess_root, tmp_path / "out", 1, dataset="ravdess")


# --- the speaker and gender tables -----------------------------------------------------------

# Real EmoBox keys (without "<dataset>-") and the speaker and gender each corpus's
# documentation gives them.
DOCUMENTED = {
    "iemocap": ("Ses03M_script02_1_F012", "Ses03_F", "F"),
    "ravdess": ("03-01-08-01-02-01-13", "Actor_13", "M"),
    "cafe": ("07-P-1-6", "07", "M"),
    "casia": ("248-zhaoquanyin-sad", "zhaoquanyin", "F"),
    "emodb": ("08b01Lb", "08", "F"),
    "emovdb": ("sam-Sleepy-0381", "sam", "M"),
    "emovo": ("dis-m1-l4", "m1", "M"),
    "jlcorpus": ("female2-anxious-7b-2", "female2", "F"),
    "savee": ("KL-sa05", "KL", "M"),
    "tess": ("YAF-rough-fear", "YAF", "F"),
    "shemo": ("F24H09", "F24", "F"),
    "subesco": ("M_07_SIBLY_S_8_NEUTRAL_3", "M_07_SIBLY", "M"),
    "urdu": ("SF6_F6_H030", "SF6", "F"),
    "mead": ("W029-neutral-level-1-023", "W029", "F"),
    "mesd": ("Fear_C_B_alterado", "unknown", "unknown"),
    "polish": ("m1.s_oddaj_2", "m1", "unknown"),
    "enterface": ("s_3_su_4.avi", "s3", "unknown"),
    "esd": ("0011-000001", "0011", "unknown"),
}


def test_key_rules_match_the_documentation():
    for dataset, (key_id, speaker, gender) in DOCUMENTED.items():
        assert emobox_prepare.KEY_RULES[dataset].speaker_gender(key_id, "") == (speaker, gender)
    assert emobox_prepare.KEY_RULES["oreau"].speaker_gender(
        "13a06Ta", "downloads/oreau/OréauFR_02/f/sesst/13a06Ta.wav") == ("13", "F")
    for rule in emobox_prepare.KEY_RULES.values():
        assert rule.speaker_gender(rule.example, "/f/sess") is not None


def test_label_dict_file_of_emovo(tmp_path):
    """emovo's label map is label_dict.json in the EmoBox release."""
    lines = []
    for index, (speaker, emotion) in enumerate([("f1", "gio"), ("m1", "tri"), ("f2", "neu")]):
        wav = Path("downloads/emovo") / speaker / f"{emotion}-{speaker}-b{index}.wav"
        write_wav(tmp_path / wav, 1600, 16000)
        lines.append(line(f"emovo-{emotion}-{speaker}-b{index}", wav, emotion, 1600, 16000))
    write_metadata(tmp_path, "emovo", {1: {"train": lines[:2], "test": lines[2:]}},
                   {"neu": "Neutral", "gio": "Happy", "tri": "Sad"}, "label_dict.json")
    prepare_emobox(tmp_path, tmp_path / "out", 1, dataset="emovo", valid_ratio=0.0)
    fold = read_fold(tmp_path / "out")
    assert [(entry["emo"], entry["spk"], entry["gender"]) for entry in fold["train"].values()] \
        == [("hap", "f1", "F"), ("sad", "m1", "M")]


def test_other_classes_follow_in_label_map_order(tmp_path):
    """Classes the native preparations lack come after theirs, lower-cased (EmoV-DB)."""
    label_map = {"Amused": "Amused", "Sleepy": "Sleepy", "Angry": "Angry", "Disgust": "Disgust",
                 "Neutral": "Neutral"}
    lines = []
    for speaker in ("bea", "sam"):
        for number, emotion in enumerate(("Sleepy", "Amused", "Neutral", "Angry")):
            wav = Path("downloads/emovdb") / f"{speaker}_{emotion}" / f"x_{number:04d}.wav"
            write_wav(tmp_path / wav, 1600, 16000)
            lines.append(line(f"emovdb-{speaker}-{emotion}-{number:04d}", wav, emotion, 1600,
                              16000))
    write_metadata(tmp_path, "emovdb", {1: {"train": lines[:4], "test": lines[4:]}}, label_map)
    prepare_emobox(tmp_path, tmp_path / "out", 1, dataset="emovdb", valid_ratio=0.0)
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == \
        ["neu", "ang", "amused", "sleepy"]
    fold = read_fold(tmp_path / "out")
    assert {(entry["spk"], entry["gender"]) for entry in fold["test"].values()} == {("sam", "M")}


def test_official_valid_list(emozionalmente_root, tmp_path):
    """Where EmoBox gives a valid list (m3ed, meld, msppodcast), it is valid.json."""
    fold_folder = emozionalmente_root / "data" / "emozionalmente" / "fold_1"
    train = (fold_folder / "emozionalmente_train_fold_1.jsonl").read_text().splitlines()
    (fold_folder / "emozionalmente_train_fold_1.jsonl").write_text("\n".join(train[:17]))
    (fold_folder / "emozionalmente_valid_fold_1.jsonl").write_text("\n".join(train[17:]))
    prepare_emobox(emozionalmente_root, tmp_path / "out", 1, dataset="emozionalmente",
                   valid_ratio=0.5)
    fold = read_fold(tmp_path / "out")
    assert sorted(fold["valid"]) == sorted(json.loads(text)["key"] for text in train[17:])
    assert len(fold["train"]) == 17


# --- the runner's view: folds, split name, results -------------------------------------------

def test_runner_learns_folds_and_split_name(ravdess_root, tmp_path):
    table = recipe_table()
    values = emobox_values(ravdess_root, tmp_path / "p", 1, dataset="ravdess")
    assert corpora.corpus_folds(values, table.corpora) == [1, 2]
    assert corpora.corpus_split_name(values, table.corpora, [1, 2]) == "EmoBox ravdess fold 1-2"
    assert corpora.corpus_folds({**values, "corpus": "iemocap"}, table.corpora) is None
    results = {"systems": {}, "stale": [], "overrides": {}, "split": "EmoBox ravdess fold 1-2"}
    assert results_markdown(results, [1, 2]).startswith("Split: EmoBox ravdess fold 1-2\n")
    with pytest.raises(HparamsError, match="has no option 'datset'"):
        corpora.prepare_fold({**values, "prepare_options": {"datset": "ravdess"}}, table.corpora)


# --- the same split two ways: EmoBox's IEMOCAP metadata and the native preparation ------------

@pytest.fixture(scope="module")
def iemocap_two_ways(tmp_path_factory):
    """A demo IEMOCAP corpus, the EmoBox metadata written for it, and both preparations."""
    root = tmp_path_factory.mktemp("emobox_iemocap")
    corpus = recipe_module("make_demo_corpus").make_demo_corpus(root / "release", seed=3,
                                                                utts_per_speaker=3)
    truth = json.loads((corpus / "demo_truth.json").read_text())
    kept = {utt_id: entry for utt_id, entry in truth.items() if entry["kept"]}
    (root / "downloads").mkdir()
    os.symlink(corpus, root / "downloads" / "iemocap")
    lines = {session: [] for session in range(1, 6)}
    for utt_id, entry in kept.items():
        wav = (f"downloads/iemocap/Session{entry['session']}/sentences/wav/{entry['dialog']}/"
               f"{utt_id}.wav")
        n_samples = round(entry["duration"] * 16000)
        lines[entry["session"]].append(line(f"iemocap-{utt_id}", wav, entry["label"], n_samples,
                                            16000))
    write_metadata(root, "iemocap", {
        fold: {"train": [item for session in range(1, 6) if session != fold
                         for item in lines[session]], "test": lines[fold]}
        for fold in range(1, 6)}, IEMOCAP_MAP)
    table = recipe_table()
    prepared = {}
    for fold in range(1, 6):
        native = {**emobox_values(corpus, root / f"native{fold}", fold), "corpus": "iemocap",
                  "expected_utterances": len(kept), "prepare_options": {}}
        emobox = emobox_values(root, root / f"emobox{fold}", fold, dataset="iemocap")
        prepared[fold] = {
            way: (corpora.prepare_fold(values, table.corpora), read_fold(values["prepare_folder"]))
            for way, values in (("native", native), ("emobox", emobox))
        }
    return root, kept, prepared


def test_emobox_iemocap_gives_the_native_folds(iemocap_two_ways):
    _, kept, prepared = iemocap_two_ways
    assert any(entry["label"] == "exc" for entry in kept.values())
    for fold, ways in prepared.items():
        (native_classes, native), (emobox_classes, emobox) = ways["native"], ways["emobox"]
        assert emobox_classes == native_classes == ["neu", "hap", "ang", "sad"]
        native_test = native["test"]
        emobox_test = {key.removeprefix("iemocap-"): entry for key, entry in
                       emobox["test"].items()}
        assert sorted(emobox_test) == sorted(native_test) and native_test
        for utt_id, entry in native_test.items():
            for field in ("emo", "gender", "spk", "session"):
                assert emobox_test[utt_id][field] == entry[field], (fold, utt_id, field)
            assert emobox_test[utt_id]["duration"] == pytest.approx(entry["duration"])
            assert Path(emobox_test[utt_id]["wav"]).resolve() == Path(entry["wav"]).resolve()
        # the same training utterances, the valid split drawn by whole speakers
        native_rest = {**native["train"], **native["valid"]}
        emobox_rest = {key.removeprefix("iemocap-"): entry for split in ("train", "valid")
                       for key, entry in emobox[split].items()}
        assert sorted(emobox_rest) == sorted(native_rest)
        assert {utt_id: entry["emo"] for utt_id, entry in emobox_rest.items()} == \
            {utt_id: entry["emo"] for utt_id, entry in native_rest.items()}
        valid_speakers = {entry["spk"] for entry in emobox["valid"].values()}
        assert valid_speakers and not valid_speakers & {
            entry["spk"] for entry in emobox["train"].values()}
        assert len(emobox["valid"]) <= 2 * math.floor(0.1 * len(emobox_rest) + 0.5)


def test_emobox_iemocap_folds_and_split_name(iemocap_two_ways):
    root, _, _ = iemocap_two_ways
    values = emobox_values(root, root / "unused", 1, dataset="iemocap")
    table = recipe_table()
    assert corpora.corpus_folds(values, table.corpora) == [1, 2, 3, 4, 5]
    assert corpora.corpus_split_name(values, table.corpora, [1, 2, 3, 4, 5]) == \
        "EmoBox iemocap fold 1-5"


def test_runner_default_folds_follow_emobox(ravdess_root, demo_hubert_dir, tmp_path, capsys):
    """Without --folds, run_cv.py runs EmoBox's folds of the dataset (two here)."""
    repo = Path(__file__).resolve().parents[1]
    common = ["--data_folder", str(ravdess_root), "--corpus", "emobox",
              "--overrides", str(repo / "hparams" / "encoders" / "tiny.yaml"),
              str(repo / "recipes" / "IEMOCAP" / "GMP-TL" / "hparams" / "demo.yaml"),
              "--encoder_source", str(demo_hubert_dir), "--systems", "baseline", "--plan_only"]
    recipe_module("run_cv").main([*common, "--output_folder", str(tmp_path / "out"),
                                  "--prepare_option", "dataset=ravdess"])
    out = capsys.readouterr().out
    assert "fold 1 | baseline: to run" in out and "fold 2 | baseline: to run" in out
    assert "fold 3" not in out
    with pytest.raises(PreparationError, match=r"no dataset 'ravdes' \(did you mean 'ravdess'"):
        recipe_module("run_cv").main([*common, "--output_folder", str(tmp_path / "out2"),
                                      "--prepare_option", "dataset=ravdes"])


def test_examples_of_the_preparation():
    """The docstring examples of emobox_prepare.py (recipe scripts are not collected)."""
    assert doctest.testmod(emobox_prepare).failed == 0
