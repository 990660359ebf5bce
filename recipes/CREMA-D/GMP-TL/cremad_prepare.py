#!/usr/bin/env python3
"""Prepare one speaker-independent CREMA-D fold: ``train.json``, ``valid.json``, ``test.json``.

Layout (the CREMA-D release, cloned with git-lfs)::

    data_folder/AudioWAV/1001_DFA_ANG_XX.wav   actor _ sentence _ emotion _ level, 16 kHz mono
    data_folder/VideoDemographics.csv          ActorID, Age, Sex (Male/Female), Race, Ethnicity

Emotions ``ANG DIS FEA HAP NEU SAD`` become ``ang dis fea hap neu sad``. ``classes="4"`` keeps the
four shared with IEMOCAP (``neu hap ang sad``), ``classes="6"`` all six; ``classes.json`` lists
them in the order ``neu hap ang sad fea dis``, so the shared four keep the IEMOCAP indices.

Folds (``lobes.data.manifests.speaker_folds``): the actors that have wavs are dealt round-robin into
``n_folds`` groups, women in sorted id order then men in sorted id order, so folds are balanced
by gender and size. Fold K's actors are the test set; ``valid.json`` is a seeded,
speaker-stratified share of the other actors' utterances. ``session`` holds the actor's fold.
``1076_MTI_SAD_XX`` (silent in the release) is left out, with a log line.

The skeleton every corpus shares (options, wav check, validation draw, manifests, command line)
is ``lobes.data.manifests.prepare_corpus``; this file supplies what is CREMA-D's own (``CORPUS``):
how the wav names and the demographics file become utterance entries, the class sets and the
fold rule.

Usage::

    python recipes/CREMA-D/GMP-TL/cremad_prepare.py --data_folder PATH/CREMA-D \\
        --save_folder OUT [--fold 1] [--n_folds 5] [--classes 4|6] [--valid_ratio 0.1]
"""

import csv
import logging
import re
import sys
from pathlib import Path

try:
    from lobes.data import manifests
except ModuleNotFoundError:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from lobes.data import manifests

PreparationError = manifests.PreparationError

logger = logging.getLogger(__name__)

EMOTION_CODES = {"NEU": "neu", "HAP": "hap", "ANG": "ang", "SAD": "sad", "FEA": "fea",
                 "DIS": "dis"}
CLASS_SETS = {"4": ("neu", "hap", "ang", "sad"), "6": ("neu", "hap", "ang", "sad", "fea", "dis")}
SEX_TO_GENDER = {"Female": "F", "Male": "M"}
# Clips known to hold no usable audio in the release (reported upstream, skipped by most users).
KNOWN_UNUSABLE = ("1076_MTI_SAD_XX",)
DEMOGRAPHICS_FILE = "VideoDemographics.csv"
# `1001_DFA_ANG_XX`: actor, sentence, emotion, intensity level (LO, MD, HI or XX)
FILE_NAME = re.compile(
    r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{1,2})$"
)


def prepare_cremad(data_folder, save_folder, fold, n_folds=5, valid_ratio=0.1, seed=1986,
                   classes="4", skip_prep=False):
    """Write the train/valid/test manifests of one speaker-independent CREMA-D fold.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The CREMA-D folder, holding ``AudioWAV/`` and ``VideoDemographics.csv``.
    fold : int
        The fold (1 ... ``n_folds``) whose actors form the test set.
    n_folds : int
        Number of actor groups (2 ... number of actors).
    classes : str
        ``"4"`` (``neu hap ang sad``, the IEMOCAP set) or ``"6"`` (adds ``fea dis``).
    save_folder, valid_ratio, seed, skip_prep
        As for every corpus (``lobes.data.manifests.prepare_corpus``).

    Returns
    -------
    dict or None
        The clips per split, ``n_converted`` and ``skipped``, as
        ``lobes.data.manifests.prepare_corpus`` returns them.

    Raises
    ------
    lobes.data.manifests.PreparationError
        For a bad option, a missing folder or file, a malformed file name or demographics row.
    lobes.data.audio.AudioError
        Listing every clip that cannot be used, all at once (a zip download holds LFS pointers).

    Example
    -------
    >>> import json, pathlib, tempfile, numpy, soundfile
    >>> corpus = pathlib.Path(tempfile.mkdtemp()) / "CREMA-D"
    >>> (corpus / "AudioWAV").mkdir(parents=True)
    >>> _ = (corpus / "VideoDemographics.csv").write_text(
    ...     "ActorID,Age,Sex,Race,Ethnicity\\n1001,51,Male,Caucasian,Not Hispanic\\n"
    ...     "1002,21,Female,Caucasian,Not Hispanic\\n")
    >>> for name in ("1001_DFA_ANG_XX", "1002_IEO_FEA_HI", "1002_IEO_SAD_LO"):
    ...     soundfile.write(corpus / "AudioWAV" / f"{name}.wav", numpy.zeros(8000), 16000)
    >>> prepare_cremad(corpus, corpus.parent / "fold1", fold=1, n_folds=2)
    {'train': 1, 'valid': 0, 'test': 1, 'n_converted': 0, 'skipped': False}
    >>> json.loads((corpus.parent / "fold1" / "test.json").read_text())["1002_IEO_SAD_LO"]["spk"]
    '1002'
    """
    return manifests.prepare_corpus(CORPUS, prepare_cremad, locals())


def _check_options(options):
    manifests.check_choice("classes", options["classes"], sorted(CLASS_SETS))
    manifests.check_fold(options["fold"], options["n_folds"])


def _read_utterances(data_folder, options, classes):
    """The clips of ``classes``, each with its actor's fold as ``session``."""
    clips = _read_clips(data_folder)
    return manifests.speaker_fold_utterances(clips, options["fold"], options["n_folds"], classes,
                                             data_folder), {}


def _read_genders(data_folder):
    """Actor id -> "F" or "M", from ``VideoDemographics.csv``."""
    demographics_path = data_folder / DEMOGRAPHICS_FILE
    if not demographics_path.is_file():
        raise PreparationError(
            f"{demographics_path} not found: CREMA-D gives each actor's sex in that file; "
            "restore it from the CREMA-D release"
        )
    with open(demographics_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"ActorID", "Sex"} - set(reader.fieldnames or ())
        if missing:
            raise PreparationError(
                f"{demographics_path} lacks the column(s) {sorted(missing)}; expected ActorID, "
                "Age, Sex, Race, Ethnicity"
            )
        genders = {}
        for line_number, row in enumerate(reader, start=2):
            actor, sex = row["ActorID"].strip(), row["Sex"].strip()
            if sex not in SEX_TO_GENDER:
                raise PreparationError(
                    f"{demographics_path}:{line_number}: Sex must be Male or Female, got {sex!r}"
                )
            genders[actor] = SEX_TO_GENDER[sex]
    return genders


def _read_clips(data_folder):
    """Utterance id -> entry without duration and session, for every clip of the six emotions."""
    audio_folder = data_folder / "AudioWAV"
    if not audio_folder.is_dir():
        raise PreparationError(
            f"no AudioWAV folder in {data_folder}; give the path of the CREMA-D folder itself"
        )
    genders = _read_genders(data_folder)
    clips, malformed, excluded = {}, [], []
    # ._* files are macOS resource forks, not audio.
    for wav_path in sorted(audio_folder.glob("*.wav")):
        if wav_path.name.startswith("._"):
            continue
        match = FILE_NAME.match(wav_path.stem)
        if match is None or match["emotion"] not in EMOTION_CODES:
            malformed.append(wav_path.name)
            continue
        if wav_path.stem in KNOWN_UNUSABLE:
            excluded.append(wav_path.name)
            continue
        actor = match["actor"]
        if actor not in genders:
            raise PreparationError(
                f"actor {actor} of {wav_path} is not in {data_folder / DEMOGRAPHICS_FILE}; "
                "restore the full demographics file from the CREMA-D release"
            )
        clips[wav_path.stem] = {
            "wav": str(wav_path),
            "emo": EMOTION_CODES[match["emotion"]],
            "gender": genders[actor],
            "spk": actor,
        }
    if malformed:
        raise PreparationError(
            f"{len(malformed)} wav name(s) in {audio_folder} do not follow "
            f"ACTOR_SENTENCE_EMOTION_LEVEL (e.g. 1001_DFA_ANG_XX.wav, emotion one of "
            f"{sorted(EMOTION_CODES)}): {', '.join(malformed)}; rename or remove them"
        )
    if excluded:
        logger.info("left out %s: known to hold no usable audio", ", ".join(excluded))
    if not clips:
        raise PreparationError(f"no CREMA-D wav in {audio_folder}")
    return clips


CORPUS = manifests.Corpus(
    name="CREMA-D", describe="CREMA-D fold {fold} of {n_folds}",
    folder="the CREMA-D folder (the one holding AudioWAV/)",
    restore_hint="clone it with git-lfs: a zip download holds LFS pointers, not audio",
    check=_check_options, classes=lambda options: CLASS_SETS[options["classes"]],
    read=_read_utterances, split=manifests.hold_out("fold"),
)


def main(argv=None):
    manifests.command_line(
        prepare_cremad, __doc__, argv,
        data_folder={"help": "the CREMA-D folder (holding AudioWAV/ and VideoDemographics.csv)"},
        classes={"choices": sorted(CLASS_SETS),
                 "help": "4: neu hap ang sad (as IEMOCAP); 6: adds fea dis"},
    )


if __name__ == "__main__":
    main()
