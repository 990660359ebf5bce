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

Usage::

    python recipes/MSP-Podcast/GMP-TL/msppodcast_prepare.py --data_folder PATH/MSP-Podcast \\
        --save_folder OUT [--classes 4|8] [--valid_from Development|Train] [--test_set Test1]
"""

import argparse
import csv
import logging
import sys
from pathlib import Path

try:
    from lobes import manifests
except ModuleNotFoundError:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from lobes import manifests

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


def prepare_msppodcast(
    data_folder,
    save_folder,
    classes="4",
    valid_from="Development",
    test_set="Test1",
    valid_ratio=0.1,
    seed=1986,
    fold=1,
    skip_prep=False,
):
    """Write the train/valid/test manifests of the official MSP-Podcast split.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The MSP-Podcast folder, holding ``Labels/labels_consensus.csv`` and ``Audios/``.
    save_folder : str or pathlib.Path
        Where ``train.json``, ``valid.json``, ``test.json``, ``classes.json`` and
        ``prepare_options.json`` go.
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
    skip_prep : bool
        If True, do nothing and return None.

    Returns
    -------
    dict or None
        ``{"train": n, "valid": n, "test": n, "n_converted": n, "n_unknown_dropped": n,
        "skipped": bool}``: as for ``prepare_iemocap``, plus the rows of the used splits and
        classes left out for an ``Unknown`` gender or speaker (None, like ``n_converted``, when
        the work was skipped).

    Raises
    ------
    lobes.manifests.PreparationError
        For a bad option, a missing folder or column, an unknown code or a duplicated file.
    lobes.audio.AudioError
        Listing every wav that is missing or unreadable, all at once.

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
    if skip_prep:
        return None
    data_folder = Path(data_folder).resolve()
    save_folder = Path(save_folder)
    options = {
        "data_folder": str(data_folder),
        "classes": str(classes),
        "valid_from": str(valid_from),
        "test_set": str(test_set),
        "valid_ratio": float(valid_ratio),
        "seed": int(seed),
    }
    _check_options(options, fold)

    def build():
        class_set = CLASS_SETS[options["classes"]]
        split_of_set = {"Train": "train", test_set: "test"}
        if valid_from == "Development":
            split_of_set["Development"] = "valid"
        rows_by_split, n_unknown_dropped = _read_labels(data_folder, class_set, split_of_set)
        for split_set, split in split_of_set.items():
            if not rows_by_split[split]:
                raise PreparationError(
                    f"no usable row of Split_Set {split_set} (classes {list(class_set)}, known "
                    f"gender and speaker) in {data_folder / LABELS_FILE}; check the labels file "
                    "or choose another --test_set"
                )
        all_utterances = {utt_id: entry for rows in rows_by_split.values()
                          for utt_id, entry in rows.items()}
        n_converted = manifests.check_wavs(all_utterances, "MSP-Podcast", log=logger)
        if valid_from == "Train":
            train, valid = manifests.draw_validation(rows_by_split["train"], valid_ratio, seed)
            splits = {"train": train, "valid": valid, "test": rows_by_split["test"]}
        else:
            splits = rows_by_split
        return splits, class_set, {"n_converted": n_converted,
                                   "n_unknown_dropped": n_unknown_dropped}

    return manifests.prepare_once(
        f"MSP-Podcast (test set {test_set})", save_folder, options, build, log=logger,
        fact_keys=("n_converted", "n_unknown_dropped"),
    )


def _check_options(options, fold):
    if int(fold) != 1:
        raise PreparationError(
            f"MSP-Podcast has one official split: fold must be 1, got {fold} (choose the test "
            "set with test_set instead)"
        )
    if options["classes"] not in CLASS_SETS:
        raise PreparationError(
            f"classes must be one of {sorted(CLASS_SETS)}, got {options['classes']!r}"
        )
    if options["valid_from"] not in VALID_SOURCES:
        raise PreparationError(
            f"valid_from must be one of {VALID_SOURCES}, got {options['valid_from']!r}"
        )
    if options["test_set"] in VALID_SOURCES:
        raise PreparationError(
            f"test_set must be a test Split_Set (Test1, Test2 ...), got {options['test_set']!r}"
        )
    manifests.check_valid_ratio(options["valid_ratio"])
    manifests.check_data_folder(
        options["data_folder"], "the MSP-Podcast folder (the one holding Labels/ and Audios/)"
    )


def _read_labels(data_folder, class_set, split_of_set):
    """``{split: {utt_id: entry without duration}}`` and the count of Unknown rows dropped."""
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
            }
    if n_unknown_dropped:
        logger.info(
            "left out %d rows with an Unknown gender or speaker (the manifest needs F or M "
            "and a speaker)", n_unknown_dropped,
        )
    sorted_rows = {split: dict(sorted(rows.items())) for split, rows in rows_by_split.items()}
    return sorted_rows, n_unknown_dropped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", required=True, type=Path,
                        help="the MSP-Podcast folder (holding Labels/ and Audios/)")
    parser.add_argument("--save_folder", required=True, type=Path,
                        help="where the manifests are written")
    parser.add_argument("--fold", type=int, default=1, choices=[1],
                        help="only 1: MSP-Podcast has one official split")
    parser.add_argument("--classes", choices=sorted(CLASS_SETS), default="4",
                        help="4: neu hap ang sad (as IEMOCAP); 8: adds fea dis sur con")
    parser.add_argument("--valid_from", choices=VALID_SOURCES, default="Development",
                        help="Development: the official set; Train: a share of Train")
    parser.add_argument("--test_set", default="Test1", help="the Split_Set used as test set")
    parser.add_argument("--valid_ratio", type=float, default=0.1,
                        help="share of Train drawn for validation with --valid_from Train")
    parser.add_argument("--seed", type=int, default=1986)
    args = parser.parse_args(argv)
    manifests.run_from_command_line(prepare_msppodcast, vars(args))


if __name__ == "__main__":
    main()
