#!/usr/bin/env python3
"""Prepare one leave-one-session-out IEMOCAP fold: ``train.json``, ``valid.json``, ``test.json``.

The manifests follow the manifest contract (docs/design.md, Data contract), keyed by utterance
id::

    {"wav": "/abs/.../Ses01F_impro01_F000.wav", "duration": 1.94, "emo": "neu",
     "gender": "F", "spk": "Ses01_F", "session": 1}

Only the 4-class labels are kept (``neu``, ``hap`` with ``exc`` merged in, ``ang``, ``sad``).
The test session goes to ``test.json`` only; ``valid.json`` is a seeded, speaker-stratified share
of the training sessions. Every wav is checked through the project's one audio loader
(``lobes.data.audio``) before anything is written. The skeleton every corpus shares (options, wav
check, validation draw, manifest, ``classes.json`` and options writing, re-run skip, command
line) is ``lobes.data.manifests.prepare_corpus``; this file supplies what is IEMOCAP's own
(``CORPUS``): how the layout and the EmoEvaluation files become utterance entries, the class
set and the fold rule (the test session is held out).

Usage::

    python recipes/IEMOCAP/GMP-TL/iemocap_prepare.py --data_folder PATH/IEMOCAP_full_release \\
        --save_folder OUT --test_session 1 [--expected_utterances 5531] [--valid_ratio 0.1]
"""

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

SESSIONS = (1, 2, 3, 4, 5)
LABEL_TO_EMO = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
CLASSES = ("neu", "hap", "ang", "sad")
FULL_RELEASE_UTTERANCES = 5531

# `[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`
ANNOTATION_LINE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\s*\]\t(?P<utt_id>\S+)\t"
    r"(?P<label>\w+)\t\[[^\]]*\]\s*$"
)
UTTERANCE_ID = re.compile(r"^Ses0(?P<session>[1-5])[FM]_\w+_(?P<gender>[FM])\d+$")


def prepare_iemocap(data_folder, save_folder, test_session, valid_ratio=0.1, seed=1986,
                    expected_utterances=FULL_RELEASE_UTTERANCES, skip_prep=False):
    """Write the train/valid/test manifests of one leave-one-session-out IEMOCAP fold.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The ``IEMOCAP_full_release`` folder (holding ``Session1`` ... ``Session5``).
    test_session : int
        Session (1-5) held out as the test set; the four others train.
    expected_utterances : int
        Number of 4-class utterances the corpus must hold (5531 for the full release); 0 turns
        the check off, for subsets or other corpora in the same layout.
    save_folder, valid_ratio, seed, skip_prep
        As for every corpus (``lobes.data.manifests.prepare_corpus``); ``classes.json`` holds
        ``neu``, ``hap``, ``ang``, ``sad``.

    Returns
    -------
    dict or None
        ``{"train": n, "valid": n, "test": n, "n_converted": n, "skipped": bool}``, as
        ``lobes.data.manifests.prepare_corpus`` returns it.

    Raises
    ------
    lobes.data.manifests.PreparationError
        For a missing folder, a malformed annotation, a bad option or a count mismatch.
    lobes.data.audio.AudioError
        Listing every wav of a 4-class utterance that is missing or unreadable, all at once.

    Example
    -------
    >>> import json, pathlib, tempfile, numpy, soundfile
    >>> corpus = pathlib.Path(tempfile.mkdtemp()) / "IEMOCAP_full_release"
    >>> wav_folder = corpus / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    >>> wav_folder.mkdir(parents=True)
    >>> soundfile.write(wav_folder / "Ses01F_impro01_F000.wav", numpy.zeros(16000), 16000)
    >>> annotation_folder = corpus / "Session1" / "dialog" / "EmoEvaluation"
    >>> annotation_folder.mkdir(parents=True)
    >>> _ = (annotation_folder / "Ses01F_impro01.txt").write_text(
    ...     "[6.2901 - 8.2357]\\tSes01F_impro01_F000\\texc\\t[2.5000, 2.5000, 2.5000]\\n")
    >>> fold_folder = corpus.parent / "fold1"
    >>> prepare_iemocap(corpus, fold_folder, test_session=1, expected_utterances=1)
    {'train': 0, 'valid': 0, 'test': 1, 'n_converted': 0, 'skipped': False}
    >>> json.loads((fold_folder / "test.json").read_text())["Ses01F_impro01_F000"]["emo"]
    'hap'
    >>> prepare_iemocap(corpus, fold_folder, test_session=1, expected_utterances=1)["skipped"]
    True
    """
    return manifests.prepare_corpus(CORPUS, prepare_iemocap, locals())


def _check_options(options):
    manifests.check_choice("test_session", options["test_session"], SESSIONS)
    if options["expected_utterances"] < 0:
        raise PreparationError(
            "expected_utterances must be 0 (no check) or a positive count, got "
            f"{options['expected_utterances']}"
        )


def _read_utterances(data_folder, options, classes):
    """Every 4-class utterance, checked against the expected count and the test session."""
    utterances = _read_annotations(data_folder)
    found, expected = len(utterances), options["expected_utterances"]
    if expected and found != expected:
        raise PreparationError(
            f"found {found} utterances with a 4-class label (neu, hap, exc, ang, sad) in "
            f"{data_folder}, expected {expected} (the full IEMOCAP release has "
            f"{FULL_RELEASE_UTTERANCES}); check that every session is complete, or pass "
            "--expected_utterances 0 (expected_utterances: 0) to accept a subset"
        )
    test_session = options["test_session"]
    if not any(entry["session"] == test_session for entry in utterances.values()):
        raise PreparationError(
            f"test session {test_session} has no 4-class utterance in {data_folder}; check "
            f"that Session{test_session} is there or choose another --test_session"
        )
    return utterances, {}


def _read_annotations(data_folder):
    """Utterance id -> manifest entry without duration, for every 4-class utterance."""
    session_folders = [data_folder / f"Session{session}" for session in SESSIONS]
    if not any(folder.is_dir() for folder in session_folders):
        raise PreparationError(
            f"no Session1 ... Session5 folder in {data_folder}; give the path of the "
            "IEMOCAP_full_release folder itself"
        )
    utterances = {}
    source_of = {}
    for session_folder in session_folders:
        annotation_folder = session_folder / "dialog" / "EmoEvaluation"
        if not annotation_folder.is_dir():
            logger.warning("no annotation folder %s; that session is left out", annotation_folder)
            continue
        # Only the top-level files annotate: Categorical/, Attribute/ and Self-evaluation/
        # hold per-annotator files, and ._* files are macOS resource forks, not text.
        annotation_files = sorted(
            path
            for path in annotation_folder.glob("*.txt")
            if path.is_file() and not path.name.startswith("._")
        )
        for annotation_file in annotation_files:
            text = annotation_file.read_text(encoding="utf-8", errors="replace")
            for line_number, line in enumerate(text.splitlines(), start=1):
                match = ANNOTATION_LINE.match(line)
                if match is None:  # header, annotator lines (C-E2:, A-E3: ...) and blanks
                    continue
                utt_id, label = match["utt_id"], match["label"]
                where = f"{annotation_file}:{line_number}"
                if utt_id in source_of:
                    raise PreparationError(
                        f"utterance {utt_id} is annotated twice ({source_of[utt_id]} and "
                        f"{where}); remove the stray copy from the EmoEvaluation folder"
                    )
                source_of[utt_id] = where
                if label not in LABEL_TO_EMO:
                    continue
                utterances[utt_id] = _manifest_entry(session_folder, utt_id, label, where)
    return dict(sorted(utterances.items()))


def _manifest_entry(session_folder, utt_id, label, where):
    id_match = UTTERANCE_ID.match(utt_id)
    if id_match is None:
        raise PreparationError(
            f"unexpected utterance id {utt_id!r} at {where}: IEMOCAP ids look like "
            "Ses01F_impro01_F000 or Ses01F_script01_1_F000; fix or remove that line"
        )
    session = int(id_match["session"])
    if session_folder.name != f"Session{session}":
        raise PreparationError(
            f"utterance {utt_id} (session {session}) is annotated in {session_folder} at "
            f"{where}; move the annotation file to Session{session}"
        )
    gender = id_match["gender"]
    dialog = utt_id.rsplit("_", 1)[0]
    wav_path = session_folder / "sentences" / "wav" / dialog / f"{utt_id}.wav"
    return {
        "wav": str(wav_path),
        "emo": LABEL_TO_EMO[label],
        "gender": gender,
        "spk": f"Ses0{session}_{gender}",
        "session": session,
    }


CORPUS = manifests.Corpus(
    name="IEMOCAP", describe="IEMOCAP fold {test_session}",
    folder="the IEMOCAP_full_release folder (the one holding Session1 ... Session5)",
    check=_check_options, classes=lambda options: CLASSES, read=_read_utterances,
    split=manifests.hold_out("test_session"),
)


def main(argv=None):
    manifests.command_line(
        prepare_iemocap, __doc__, argv,
        data_folder={"help": "the IEMOCAP_full_release folder"},
        test_session={"choices": SESSIONS},
        expected_utterances={"help": "4-class utterance count to insist on; 0 accepts any "
                                     "(subsets)"},
    )


if __name__ == "__main__":
    main()
