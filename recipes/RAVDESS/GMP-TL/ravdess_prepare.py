#!/usr/bin/env python3
"""Prepare one speaker-independent RAVDESS fold: ``train.json``, ``valid.json``, ``test.json``.

Layout (the audio-only speech release, ``Audio_Speech_Actors_01-24``)::

    data_folder/Actor_12/03-01-05-01-02-01-12.wav

The name's seven fields: modality (``03`` audio-only; ``01`` full AV and ``02`` video-only are
skipped), vocal channel (``01`` speech; ``02`` song is skipped), emotion (``01`` neutral, ``02``
calm, ``03`` happy, ``04`` sad, ``05`` angry, ``06`` fearful, ``07`` disgust, ``08`` surprised),
intensity, statement, repetition, actor (``01``-``24``: odd actors male, even female). Files
that are not wavs (the ``.mp4`` of the video releases) and macOS ``._*`` files are ignored, so
the audio and video releases may share one tree. The release is 48 kHz: the shared audio loader
resamples on load, and the preparation reports how many files it will convert.

Classes (``classes.json``, in the order ``neu hap ang sad fea dis sur cal``):

- ``classes="8"``: all eight emotions. ``calm="keep"`` keeps calm as its own class ``cal`` (8
  classes); ``calm="neu"`` labels calm ``neu`` and ``calm="drop"`` leaves it out (7 classes).
- ``classes="4"``: ``neu hap ang sad`` (the IEMOCAP set); calm is ``neu`` or dropped
  (``calm="keep"`` is refused: calm would be no class of the set).

Folds (``lobes.data.manifests.speaker_folds``): the actors are dealt round-robin into ``n_folds``
groups, women in sorted id order then men, so folds are balanced by gender and size. Fold K's
actors are the test set; ``valid.json`` is a seeded, speaker-stratified share of the others.

The skeleton every corpus shares (options, wav check, validation draw, manifests, command line)
is ``lobes.data.manifests.prepare_corpus``; this file supplies what is RAVDESS's own
(``CORPUS``): how the actor folders and wav names become utterance entries, the class sets with
the calm rule and the fold rule.

Usage::

    python recipes/RAVDESS/GMP-TL/ravdess_prepare.py --data_folder PATH/Audio_Speech_Actors_01-24 \\
        --save_folder OUT [--fold 1] [--n_folds 5] [--classes 8|4] [--calm neu|drop|keep]
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

AUDIO_ONLY = "03"
SPEECH = "01"
EMOTION_CODES = {"01": "neu", "02": "cal", "03": "hap", "04": "sad", "05": "ang", "06": "fea",
                 "07": "dis", "08": "sur"}
CLASS_SETS = {"8": ("neu", "hap", "ang", "sad", "fea", "dis", "sur", "cal"),
              "4": ("neu", "hap", "ang", "sad")}
CALM_RULES = ("neu", "drop", "keep")
# `03-01-05-01-02-01-12`: modality, vocal channel, emotion, intensity, statement, repetition, actor
FILE_NAME = re.compile(
    r"^(?P<modality>\d\d)-(?P<channel>\d\d)-(?P<emotion>\d\d)-(?P<intensity>\d\d)-"
    r"(?P<statement>\d\d)-(?P<repetition>\d\d)-(?P<actor>\d\d)$"
)
ACTOR_FOLDER = re.compile(r"^Actor_(?P<actor>\d\d)$")


def prepare_ravdess(data_folder, save_folder, fold, n_folds=5, valid_ratio=0.1, seed=1986,
                    calm="neu", classes="8", skip_prep=False):
    """Write the train/valid/test manifests of one speaker-independent RAVDESS fold.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The folder holding ``Actor_01`` ... ``Actor_24``.
    fold, n_folds : int
        The fold (1 ... ``n_folds``) whose actors form the test set, and the number of actor
        groups (2 ... number of actors).
    calm : str
        ``"neu"`` (calm is labelled neutral), ``"drop"`` (calm is left out) or ``"keep"`` (calm
        is its own class ``cal``; needs ``classes="8"``).
    classes : str
        ``"8"`` (every emotion, calm as ``calm`` says) or ``"4"`` (``neu hap ang sad``).
    save_folder, valid_ratio, seed, skip_prep
        As for every corpus (``lobes.data.manifests.prepare_corpus``).

    Returns
    -------
    dict or None
        ``{"train": n, "valid": n, "test": n, "n_converted": n, "skipped": bool}`` (every clip of
        the 48 kHz release counts as converted), as ``lobes.data.manifests.prepare_corpus``
        returns it.

    Raises
    ------
    lobes.data.manifests.PreparationError
        For a bad option, a missing folder, a malformed file name or an actor mismatch.
    lobes.data.audio.AudioError
        Listing every speech clip that is missing or unreadable, all at once.

    Example
    -------
    >>> import json, pathlib, tempfile, numpy, soundfile
    >>> corpus = pathlib.Path(tempfile.mkdtemp()) / "Audio_Speech_Actors_01-24"
    >>> for name in ("03-01-02-01-01-01-01", "03-01-05-02-01-01-02", "03-02-05-02-01-01-02"):
    ...     actor_folder = corpus / f"Actor_{name[-2:]}"
    ...     actor_folder.mkdir(parents=True, exist_ok=True)
    ...     soundfile.write(actor_folder / f"{name}.wav", numpy.zeros(9600), 48000)
    >>> prepare_ravdess(corpus, corpus.parent / "fold2", fold=2, n_folds=2)
    {'train': 1, 'valid': 0, 'test': 1, 'n_converted': 2, 'skipped': False}
    >>> entry = json.loads((corpus.parent / "fold2" / "test.json").read_text())[
    ...     "03-01-02-01-01-01-01"]
    >>> entry["emo"], entry["gender"], entry["spk"], entry["session"], entry["duration"]
    ('neu', 'M', 'Actor_01', 2, 0.2)
    """
    return manifests.prepare_corpus(CORPUS, prepare_ravdess, locals())


def _class_set(options):
    """The ordered classes: the chosen set, with ``cal`` only when calm is kept apart."""
    keep_calm = options["calm"] == "keep"
    return tuple(emo for emo in CLASS_SETS[options["classes"]] if emo != "cal" or keep_calm)


def _check_options(options):
    manifests.check_choice("classes", options["classes"], sorted(CLASS_SETS))
    manifests.check_choice("calm", options["calm"], CALM_RULES)
    if options["classes"] == "4" and options["calm"] == "keep":
        raise PreparationError(
            'calm="keep" makes calm a class of its own, which the 4-class set (neu hap ang '
            'sad) has not: use calm="neu" (calm counts as neutral) or calm="drop", or classes="8"'
        )
    manifests.check_fold(options["fold"], options["n_folds"])


def _read_utterances(data_folder, options, classes):
    """The clips of ``classes``, calm as ``calm`` says, each with its actor's fold as session."""
    clips = _read_clips(data_folder)
    if options["calm"] == "neu":
        clips = {utt_id: {**clip, "emo": "neu" if clip["emo"] == "cal" else clip["emo"]}
                 for utt_id, clip in clips.items()}
    return manifests.speaker_fold_utterances(clips, options["fold"], options["n_folds"], classes,
                                             data_folder), {}


def _read_clips(data_folder):
    """Utterance id -> entry without duration and session, for every audio-only speech clip."""
    actor_folders = sorted(
        path for path in data_folder.iterdir() if path.is_dir() and ACTOR_FOLDER.match(path.name)
    )
    if not actor_folders:
        raise PreparationError(
            f"no Actor_XX folder in {data_folder}; give the folder that holds Actor_01 ... "
            "Actor_24 (the extracted Audio_Speech_Actors_01-24.zip)"
        )
    clips, malformed, n_skipped = {}, [], 0
    for actor_folder in actor_folders:
        folder_actor = ACTOR_FOLDER.match(actor_folder.name)["actor"]
        for path in sorted(actor_folder.iterdir()):
            # Video (.mp4) and other files, and macOS ._* resource forks, are not audio clips.
            if path.suffix.lower() != ".wav" or path.name.startswith("._"):
                continue
            match = FILE_NAME.match(path.stem)
            if match is None or match["emotion"] not in EMOTION_CODES:
                malformed.append(str(path))
                continue
            if match["modality"] != AUDIO_ONLY or match["channel"] != SPEECH:
                n_skipped += 1  # audio-video, video-only or song
                continue
            if match["actor"] != folder_actor:
                raise PreparationError(
                    f"{path} names actor {match['actor']} but lies in {actor_folder.name}; move "
                    f"it to Actor_{match['actor']}"
                )
            actor = int(match["actor"])
            clips[path.stem] = {
                "wav": str(path),
                "emo": EMOTION_CODES[match["emotion"]],
                "gender": "M" if actor % 2 else "F",
                "spk": f"Actor_{match['actor']}",
            }
    if malformed:
        raise PreparationError(
            f"{len(malformed)} wav name(s) do not follow the RAVDESS naming "
            "(seven two-digit fields, e.g. 03-01-05-01-02-01-12.wav, emotion 01-08): "
            f"{', '.join(malformed)}; rename or remove them"
        )
    if n_skipped:
        logger.info("skipped %d wavs that are not audio-only speech (song or video)", n_skipped)
    if not clips:
        raise PreparationError(
            f"no audio-only speech wav (03-01-...) in {data_folder}; the song release "
            "(03-02-...) is not used"
        )
    return clips


CORPUS = manifests.Corpus(
    name="RAVDESS", describe="RAVDESS fold {fold} of {n_folds}",
    folder="the RAVDESS speech folder (the one holding Actor_01 ...)",
    check=_check_options, classes=_class_set, read=_read_utterances,
    split=manifests.hold_out("fold"),
)


def main(argv=None):
    manifests.command_line(
        prepare_ravdess, __doc__, argv,
        data_folder={"help": "the folder holding Actor_01 ... Actor_24"},
        calm={"choices": CALM_RULES,
              "help": "neu: calm counts as neutral; drop: left out; keep: class cal"},
        classes={"choices": sorted(CLASS_SETS),
                 "help": "8: every emotion (calm as --calm says); 4: neu hap ang sad"},
    )


if __name__ == "__main__":
    main()
