#!/usr/bin/env python3
"""Prepare the official MSP-Podcast split: ``train.json``, ``valid.json``, ``test.json``.

Layout (the MSP-Podcast release)::

    data_folder/Labels/labels_consensus.csv   FileName, EmoClass, EmoAct, EmoVal, EmoDom,
                                              SpkrID, Gender, Split_Set
    data_folder/Audios/<FileName>              16 kHz mono wavs

MSP-Podcast has one official, speaker-independent split, so there is one fold only (``fold`` is
accepted for a uniform interface and must be 1; ``session`` is 0 in every entry): ``Train`` ->
``train.json``, ``Development`` -> ``valid.json`` (or, with ``valid_from="Train"``, a seeded,
speaker-stratified share of ``Train``), ``Test1`` -> ``test.json`` (``test_set`` picks another
test set, e.g. ``Test2``). Other ``Split_Set`` values are not used.

EmoClass codes become ``N neu, H hap, A ang, S sad, F fea, D dis, U sur, C con``. ``classes="4"``
keeps ``neu hap ang sad`` (the IEMOCAP set), ``classes="8"`` all eight (``classes.json`` in that
order). ``O`` (other) and ``X`` (no agreement) are always left out. Rows whose ``Gender`` or
``SpkrID`` is ``Unknown`` are left out too, because the manifest contract needs a gender F or M
and a speaker; the preparation logs and returns how many it dropped.

The skeleton every corpus shares (options, wav check, validation draw, manifests, command line)
is ``lobes.data.manifests.prepare_corpus``; this file supplies what is MSP-Podcast's own
(``CORPUS``): how the labels file becomes utterance entries, the class sets and the fold rule
(the official split).

Usage::

    python recipes/MSP-Podcast/GMP-TL/msppodcast_prepare.py --data_folder PATH/MSP-Podcast \\
        --save_folder OUT [--classes 4|8] [--valid_from Development|Train] [--test_set Test1]
"""

import csv
import logging
import sys
from pathlib import Path

try:
    from lobes.data import manifests
except ModuleNotFoundError:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from lobes.data import manifests

PreparationError = manifests.PreparationError

logger = logging.getLogger(__name__)

EMOTION_CODES = {"N": "neu", "H": "hap", "A": "ang", "S": "sad", "F": "fea", "D": "dis",
                 "U": "sur", "C": "con"}
DROPPED_CODES = ("O", "X")  # other, no agreement
CLASS_SETS = {"4": ("neu", "hap", "ang", "sad"),
              "8": ("neu", "hap", "ang", "sad", "fea", "dis", "sur", "con")}
GENDER_CODES = {"Female": "F", "Male": "M"}
UNKNOWN = "unknown"
VALID_SOURCES = ("Development", "Train")
LABEL_COLUMNS = ("FileName", "EmoClass", "SpkrID", "Gender", "Split_Set")
LABELS_FILE = Path("Labels") / "labels_consensus.csv"
SESSION = 0  # one official split: no speaker groups


def prepare_msppodcast(data_folder, save_folder, classes="4", valid_from="Development",
                       test_set="Test1", valid_ratio=0.1, seed=1986, fold=1, skip_prep=False):
    """Write the train/valid/test manifests of the official MSP-Podcast split.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The MSP-Podcast folder, holding ``Labels/labels_consensus.csv`` and ``Audios/``.
    classes : str
        ``"4"`` (``neu hap ang sad``) or ``"8"`` (adds ``fea dis sur con``).
    valid_from : str
        ``"Development"`` (the official development set) or ``"Train"`` (a seeded,
        speaker-stratified ``valid_ratio`` share of ``Train``; ``Development`` is then unused).
    test_set : str
        The ``Split_Set`` value that becomes ``test.json`` (``Test1``, ``Test2`` ...).
    valid_ratio, seed
        The validation draw when ``valid_from="Train"`` (recorded, unused otherwise).
    fold : int
        Must be 1: MSP-Podcast has one official split.
    save_folder, skip_prep
        As for every corpus (``lobes.data.manifests.prepare_corpus``).

    Returns
    -------
    dict or None
        ``{"train": n, "valid": n, "test": n, "n_converted": n, "n_unknown_dropped": n,
        "skipped": bool}``: as ``lobes.data.manifests.prepare_corpus`` returns it, with the rows of
        the used splits and classes left out for an ``Unknown`` gender or speaker (None, like
        ``n_converted``, when the work was skipped).

    Raises
    ------
    lobes.data.manifests.PreparationError
        For a bad option, a missing folder or column, an unknown code or a duplicated file.
    lobes.data.audio.AudioError
        Listing every wav of the used rows that is missing or unreadable, all at once.

    Example
    -------
    >>> import json, pathlib, tempfile, numpy, soundfile
    >>> corpus = pathlib.Path(tempfile.mkdtemp()) / "MSP-Podcast"
    >>> (corpus / "Labels").mkdir(parents=True)
    >>> (corpus / "Audios").mkdir()
    >>> rows = ["MSP-PODCAST_0001_0001.wav,H,5.0,6.0,5.0,127,Female,Train",
    ...         "MSP-PODCAST_0001_0002.wav,X,4.0,4.0,4.0,127,Female,Train",
    ...         "MSP-PODCAST_0002_0001.wav,S,2.0,2.0,3.0,53,Male,Development",
    ...         "MSP-PODCAST_0003_0001.wav,A,6.0,2.0,6.0,Unknown,Unknown,Test1",
    ...         "MSP-PODCAST_0004_0001.wav,N,4.0,4.0,4.0,88,Male,Test1"]
    >>> _ = (corpus / "Labels" / "labels_consensus.csv").write_text(
    ...     "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\\n"
    ...     + "\\n".join(rows) + "\\n")
    >>> for row in rows:
    ...     soundfile.write(corpus / "Audios" / row.split(",")[0], numpy.zeros(8000), 16000)
    >>> prepare_msppodcast(corpus, corpus.parent / "official")
    {'train': 1, 'valid': 1, 'test': 1, 'n_converted': 0, 'n_unknown_dropped': 1, 'skipped': False}
    >>> json.loads((corpus.parent / "official" / "test.json").read_text())[
    ...     "MSP-PODCAST_0004_0001"]["spk"]
    '88'
    """
    return manifests.prepare_corpus(CORPUS, prepare_msppodcast, locals())


def _check_options(options):
    if options["fold"] != 1:
        raise PreparationError(
            f"MSP-Podcast has one official split: fold must be 1, got {options['fold']} (choose "
            "the test set with test_set instead)"
        )
    manifests.check_choice("classes", options["classes"], sorted(CLASS_SETS))
    manifests.check_choice("valid_from", options["valid_from"], VALID_SOURCES)
    if options["test_set"] in VALID_SOURCES:
        raise PreparationError(
            f"test_set must be a test Split_Set (Test1, Test2 ...), got {options['test_set']!r}"
        )


def _read_utterances(data_folder, options, classes):
    """The rows of ``classes`` in the used Split_Sets, each with its manifest in ``split``."""
    split_of_set = {"Train": "train", options["test_set"]: "test"}
    if options["valid_from"] == "Development":
        split_of_set["Development"] = "valid"
    rows_by_split, n_unknown_dropped = _read_labels(data_folder, classes, split_of_set)
    for split_set, split in split_of_set.items():
        if not rows_by_split[split]:
            raise PreparationError(
                f"no usable row of Split_Set {split_set} (classes {list(classes)}, known "
                f"gender and speaker) in {data_folder / LABELS_FILE}; check the labels file "
                "or choose another --test_set"
            )
    utterances = {utt_id: entry for rows in rows_by_split.values()
                  for utt_id, entry in rows.items()}
    return utterances, {"n_unknown_dropped": n_unknown_dropped}


def _official_split(utterances, options):
    """The fold rule: each row to its own manifest; with ``valid_from="Train"``, valid drawn
    from Train (a seeded, speaker-stratified ``valid_ratio`` share)."""
    splits = {split: {} for split in manifests.SPLITS}
    for utt_id, entry in utterances.items():
        splits[entry["split"]][utt_id] = entry
    if options["valid_from"] == "Train":
        splits["train"], splits["valid"] = manifests.draw_validation(
            splits["train"], options["valid_ratio"], options["seed"]
        )
    return splits


def _read_labels(data_folder, class_set, split_of_set):
    """``{split: {utt_id: entry with its split, no duration}}`` and the Unknown rows dropped."""
    labels_path = data_folder / LABELS_FILE
    if not labels_path.is_file():
        raise PreparationError(
            f"{labels_path} not found; give the MSP-Podcast folder that holds "
            "Labels/labels_consensus.csv and Audios/"
        )
    rows_by_split = {"train": {}, "valid": {}, "test": {}}
    line_of = {}
    n_unknown_dropped = 0
    with open(labels_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in LABEL_COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise PreparationError(
                f"{labels_path} lacks the column(s) {missing}; expected FileName, EmoClass, "
                "EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set"
            )
        for line_number, row in enumerate(reader, start=2):
            where = f"{labels_path}:{line_number}"
            row = {column: (row[column] or "").strip() for column in LABEL_COLUMNS}
            utt_id = Path(row["FileName"]).stem
            if utt_id in line_of:
                raise PreparationError(
                    f"{row['FileName']} is labelled twice ({line_of[utt_id]} and {where}); "
                    "remove the stray row"
                )
            line_of[utt_id] = where
            code, gender = row["EmoClass"], row["Gender"]
            if code not in EMOTION_CODES and code not in DROPPED_CODES:
                raise PreparationError(
                    f"{where}: unknown EmoClass {code!r}; expected one of "
                    f"{sorted(EMOTION_CODES) + list(DROPPED_CODES)}"
                )
            if gender not in GENDER_CODES and gender.lower() != UNKNOWN:
                raise PreparationError(
                    f"{where}: Gender must be Male, Female or Unknown, got {gender!r}"
                )
            split = split_of_set.get(row["Split_Set"])
            if split is None or code in DROPPED_CODES or EMOTION_CODES[code] not in class_set:
                continue
            if gender.lower() == UNKNOWN or row["SpkrID"].lower() in (UNKNOWN, ""):
                n_unknown_dropped += 1
                continue
            rows_by_split[split][utt_id] = {
                "wav": str(data_folder / "Audios" / row["FileName"]),
                "emo": EMOTION_CODES[code],
                "gender": GENDER_CODES[gender],
                "spk": row["SpkrID"],
                "session": SESSION,
                "split": split,  # the manifest the row goes to (not written)
            }
    if n_unknown_dropped:
        logger.info(
            "left out %d rows with an Unknown gender or speaker (the manifest needs F or M "
            "and a speaker)", n_unknown_dropped,
        )
    sorted_rows = {split: dict(sorted(rows.items())) for split, rows in rows_by_split.items()}
    return sorted_rows, n_unknown_dropped


CORPUS = manifests.Corpus(
    name="MSP-Podcast", describe="MSP-Podcast (test set {test_set})",
    folder="the MSP-Podcast folder (the one holding Labels/ and Audios/)",
    check=_check_options, classes=lambda options: CLASS_SETS[options["classes"]],
    read=_read_utterances, split=_official_split, facts=("n_unknown_dropped",),
    unrecorded=("fold",),
)


def main(argv=None):
    manifests.command_line(
        prepare_msppodcast, __doc__, argv,
        data_folder={"help": "the MSP-Podcast folder (holding Labels/ and Audios/)"},
        fold={"choices": [1], "help": "only 1: MSP-Podcast has one official split"},
        classes={"choices": sorted(CLASS_SETS),
                 "help": "4: neu hap ang sad (as IEMOCAP); 8: adds fea dis sur con"},
        valid_from={"choices": VALID_SOURCES,
                    "help": "Development: the official set; Train: a share of Train"},
        test_set={"help": "the Split_Set used as test set"},
        valid_ratio={"help": "share of Train drawn for validation with --valid_from Train"},
    )


if __name__ == "__main__":
    main()
