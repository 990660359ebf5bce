"""The preparation skeleton (``lobes.data.manifests.prepare_corpus``, ``hold_out``,
``command_line``).

A toy corpus (``<speaker>_<n>_<emo>.wav`` files) goes through the skeleton the way the four
corpus preparations do; each test names what a wrong skeleton would get wrong unseen by the
corpus tests (their options are passed well typed, their checks come first anyway, ...).
"""

import json
import logging

import numpy as np
import pytest
import soundfile

from lobes.data import manifests
from lobes.data.audio import AudioError

SPLITS = ("train", "valid", "test")
# speaker: (gender, group)
SPEAKERS = {"ann": ("F", 1), "bob": ("M", 1), "cat": ("F", 2), "dan": ("M", 2), "eve": ("F", 3)}
EMOTIONS = ("neu", "sad", "ang")
CLASS_SETS = {"2": ("neu", "sad"), "3": ("neu", "sad", "ang")}


@pytest.fixture
def toy_folder(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    for spk in SPEAKERS:
        for index in range(10):
            emo = EMOTIONS[index % 3]
            soundfile.write(folder / f"{spk}_{index}_{emo}.wav", np.zeros(1600), 16000)
    return folder


class Calls:
    """What the skeleton gave the corpus hooks, in call order."""

    def __init__(self):
        self.log = []


calls = Calls()


def _check(options):
    calls.log.append(("check", dict(options)))
    manifests.check_choice("classes", options["classes"], sorted(CLASS_SETS))


def _read(data_folder, options, classes):
    calls.log.append(("read", data_folder, classes))
    utterances = {}
    for path in sorted(data_folder.glob("*.wav")):
        spk, _, emo = path.stem.split("_")
        if emo in classes:
            gender, group = SPEAKERS[spk]
            utterances[path.stem] = {"wav": str(path), "emo": emo, "gender": gender, "spk": spk,
                                     "session": group, "source": path.name}
    return utterances, {"n_speakers": len({entry["spk"] for entry in utterances.values()})}


def _split(utterances, options):
    calls.log.append(("split", {utt_id: dict(entry) for utt_id, entry in utterances.items()}))
    return manifests.hold_out("fold")(utterances, options)


TOY = manifests.Corpus(
    name="Toy", folder="the toy folder", describe="toy fold {fold} (classes {classes})",
    check=_check, classes=lambda options: CLASS_SETS[options["classes"]], read=_read,
    split=_split, restore_hint="ask the toy maker", facts=("n_speakers",),
    unrecorded=("channel",),
)


def prepare_toy(data_folder, save_folder, fold, valid_ratio=0.1, seed=1986, classes="2",
                channel=1, skip_prep=False):
    """Prepare one toy fold (the shape of every corpus preparation)."""
    return manifests.prepare_corpus(TOY, prepare_toy, locals())


@pytest.fixture(autouse=True)
def _fresh_calls():
    calls.log.clear()


def _manifests(save_folder):
    return {split: json.loads((save_folder / f"{split}.json").read_text()) for split in SPLITS}


def test_options_are_typed_and_recorded_in_signature_order(toy_folder, tmp_path, monkeypatch):
    # Options may arrive as strings (hparams, command lines): typed by the signature's defaults,
    # the fold (no default) as an int; a relative data folder is recorded resolved.
    monkeypatch.chdir(toy_folder.parent)
    summary = prepare_toy("toy", tmp_path / "out", "2", valid_ratio="0.2", seed="7", classes=3,
                          channel="1")
    recorded = json.loads((tmp_path / "out" / "prepare_options.json").read_text())
    assert list(recorded.items()) == [
        ("data_folder", str(toy_folder.resolve())), ("fold", 2), ("valid_ratio", 0.2),
        ("seed", 7), ("classes", "3"),
    ]  # no save_folder, no skip_prep, no unrecorded channel
    check_options = calls.log[0][1]
    assert check_options["channel"] == 1 and check_options["fold"] == 2  # checked, typed
    assert summary["test"] == 2 * 10  # fold 2: cat and dan, every class


def test_a_rerun_with_the_same_options_given_as_strings_is_skipped(toy_folder, tmp_path):
    # The record compares typed values, so "1" and 1 are the same fold.
    first = prepare_toy(toy_folder, tmp_path, 1, valid_ratio=0, seed=5)
    again = prepare_toy(str(toy_folder), str(tmp_path), "1", valid_ratio="0.0", seed="5")
    assert not first["skipped"] and again["skipped"] and first["valid"] == 0


def test_skip_prep_checks_and_reads_nothing(tmp_path):
    assert prepare_toy(tmp_path / "nowhere", tmp_path / "out", 9, classes="bad",
                       skip_prep=True) is None
    assert calls.log == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments, message", [
    ({"classes": "5"}, r"classes must be one of \['2', '3'\], got '5'"),  # the corpus check
    ({"valid_ratio": 1.5}, r"valid_ratio must be in \[0, 1\), got 1.5"),  # every corpus
])
def test_bad_options_stop_before_anything_is_read(toy_folder, tmp_path, arguments, message):
    with pytest.raises(manifests.PreparationError, match=message):
        prepare_toy(toy_folder, tmp_path / "out", 1, **arguments)
    assert [call[0] for call in calls.log] == ["check"]
    assert not (tmp_path / "out").exists()


def test_missing_data_folder_is_named_with_the_corpus_folder(tmp_path):
    with pytest.raises(manifests.PreparationError,
                       match="data folder not found: .*nowhere; give the path of the toy folder"):
        prepare_toy(tmp_path / "nowhere", tmp_path / "out", 1)


def test_read_gets_the_classes_written_and_split_gets_durations(toy_folder, tmp_path):
    summary = prepare_toy(toy_folder, tmp_path / "out", 1, classes="3")

    (_, data_folder, classes), (_, split_input) = calls.log[1], calls.log[2]
    assert data_folder == toy_folder.resolve() and classes == ("neu", "sad", "ang")
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == list(classes)
    # check_wavs ran on what read returned before the fold rule saw it
    assert {entry["duration"] for entry in split_input.values()} == {0.1}
    prepared = _manifests(tmp_path / "out")
    assert set(prepared["test"]) == {utt_id for utt_id in split_input
                                     if utt_id.split("_")[0] in ("ann", "bob")}
    assert all(set(entry) == set(manifests.MANIFEST_FIELDS)  # "source" is not written
               for split in SPLITS for entry in prepared[split].values())
    assert summary == {"train": 27, "valid": 3, "test": 20, "n_converted": 0, "n_speakers": 5,
                       "skipped": False}


def test_rerun_is_skipped_with_facts_none_and_not_read(toy_folder, tmp_path):
    prepare_toy(toy_folder, tmp_path / "out", 3)
    calls.log.clear()
    again = prepare_toy(toy_folder, tmp_path / "out", 3, channel=2)  # unrecorded: same record
    assert again["skipped"] and again["n_converted"] is None and again["n_speakers"] is None
    assert [call[0] for call in calls.log] == ["check"]
    assert not prepare_toy(toy_folder, tmp_path / "out", 3, seed=2)["skipped"]


def test_wav_errors_and_logs_name_the_corpus_and_its_module(toy_folder, tmp_path, caplog):
    soundfile.write(toy_folder / "eve_0_neu.wav", np.zeros((4410, 2)), 44100)
    (toy_folder / "dan_1_sad.wav").write_bytes(b"not a wav")
    with pytest.raises(AudioError) as raised:
        prepare_toy(toy_folder, tmp_path / "out", 1)
    assert "1 of 35 wav files cannot be used" in str(raised.value)
    assert "Restore these files from the Toy release (ask the toy maker)" in str(raised.value)

    (toy_folder / "dan_1_sad.wav").unlink()
    with caplog.at_level(logging.INFO, logger=__name__):
        summary = prepare_toy(toy_folder, tmp_path / "out", 1)
    assert summary["n_converted"] == 1
    logged = {(record.name, record.getMessage()) for record in caplog.records}
    assert (__name__, "1 of 34 wav files are not 16 kHz mono; the shared audio loader "
            "(lobes.data.audio.read_audio) converts them on load") in logged
    assert any(name == __name__ and message.startswith("toy fold 1 (classes 2) prepared in")
               for name, message in logged)


def test_hold_out_tests_the_named_group_and_draws_valid_from_the_others():
    utterances = {f"{spk}_{index}": {"spk": spk, "session": group}
                  for spk, (_, group) in SPEAKERS.items() for index in range(10)}
    splits = manifests.hold_out("test_session")(
        utterances, {"test_session": 2, "fold": 1, "valid_ratio": 0.3, "seed": 4}
    )
    assert {utt_id.split("_")[0] for utt_id in splits["test"]} == {"cat", "dan"}
    assert {entry["spk"] for entry in splits["valid"].values()} == {"ann", "bob", "eve"}
    assert len(splits["valid"]) == 9 and len(splits["train"]) == 21


def prepare_cli(data_folder, save_folder, classes="2", fold=1, n_folds=5, valid_ratio=0.1,
                name="x", skip_prep=False):
    """A command-line target: the fold last in the signature, as MSP-Podcast has it."""
    return {"data_folder": str(data_folder), "save_folder": str(save_folder), "fold": fold,
            "n_folds": n_folds, "valid_ratio": valid_ratio, "classes": classes, "name": name}


def test_command_line_is_built_from_the_signature(capsys):
    with pytest.raises(SystemExit):
        manifests.command_line(prepare_cli, "Prepare it.\n\nMore.", ["--help"],
                               classes={"choices": ["2", "3"], "help": "the class set"})
    usage = capsys.readouterr().out
    assert usage.startswith(
        "usage: ") and "Prepare it." in usage and "More." not in usage
    order = [usage.index(f"--{name}") for name in ("data_folder", "save_folder", "fold",
                                                   "classes", "n_folds", "valid_ratio", "name")]
    assert order == sorted(order) and "--skip_prep" not in usage  # the fold first
    assert "test fold, 1 ... n_folds" in usage and "the class set" in usage

    manifests.command_line(prepare_cli, "Prepare it.", [
        "--data_folder", "d", "--save_folder", "s", "--n_folds", "3", "--valid_ratio", "0.5",
        "--classes", "3", "--name", "7"])
    assert json.loads(capsys.readouterr().out) == {
        "data_folder": "d", "save_folder": "s", "fold": 1, "n_folds": 3, "valid_ratio": 0.5,
        "classes": "3", "name": "7"}


@pytest.mark.parametrize("argv, message", [
    (["--save_folder", "s"], "the following arguments are required: --data_folder"),
    (["--data_folder", "d", "--save_folder", "s", "--classes", "4"], "invalid choice: '4'"),
    (["--data_folder", "d", "--save_folder", "s", "--n_folds", "x"], "invalid int value: 'x'"),
])
def test_command_line_refuses_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as raised:
        manifests.command_line(prepare_cli, "Prepare it.", argv,
                               classes={"choices": ["2", "3"]})
    assert raised.value.code == 2 and message in capsys.readouterr().err


def test_command_line_requires_a_fold_without_default_unless_named_fold(capsys):
    def prepare_session(data_folder, save_folder, test_session, skip_prep=False):
        return {"test_session": test_session}

    with pytest.raises(SystemExit):
        manifests.command_line(prepare_session, "S.", ["--data_folder", "d", "--save_folder", "s"])
    assert "required: --test_session" in capsys.readouterr().err
    manifests.command_line(prepare_session, "S.", ["--data_folder", "d", "--save_folder", "s",
                                                   "--test_session", "4"])
    assert json.loads(capsys.readouterr().out) == {"test_session": 4}


def test_command_line_reports_a_preparation_error_in_one_line(toy_folder, tmp_path):
    with pytest.raises(SystemExit) as raised:
        manifests.command_line(prepare_toy, "Toy.", ["--data_folder", str(toy_folder),
                                                     "--save_folder", str(tmp_path),
                                                     "--classes", "9"])
    assert raised.value.code == "error: classes must be one of ['2', '3'], got '9'"
