"""What every corpus preparation shares: its skeleton and the steps it is built from.

A corpus preparation (``recipes/<CORPUS>/GMP-TL/<corpus>_prepare.py``) supplies only what
differs per corpus, as a ``Corpus``: how its layout and label files become utterance entries
``{utt_id: {"wav", "emo", "gender", "spk", "session"}}``, its class sets, its fold rule, its
option checks and its names. ``prepare_corpus`` runs every preparation the same way (options
from the function's signature, checks, wav check, fold, manifests written once) and
``command_line`` gives every preparation script the same command line. The steps, one way each:

- ``check_wavs`` reads every wav header through the project's one audio loader
  (``lobes.data.audio``), records ``duration``, counts the files the loader will convert, and raises
  ONE ``AudioError`` listing every missing or unreadable file;
- ``speaker_folds`` puts speakers into speaker-independent, gender-balanced folds;
- ``split_fold`` / ``draw_validation`` hold out a test group and draw a seeded,
  speaker-stratified validation share from the rest (``hold_out`` is that fold rule);
  ``draw_speakers`` draws a validation set of whole speakers instead (EmoBox);
- ``write_manifests`` writes the manifest contract (docs/design.md, Data contract:
  ``train.json``, ``valid.json``, ``test.json``), ``classes.json`` (the ordered class list of
  the corpus as configured) and, last, ``prepare_options.json``, each atomically;
- ``prepared_counts`` tells whether an identical earlier run can be reused;
- ``run_from_command_line`` runs a preparation with parsed options, the end of
  ``command_line``.
"""

import argparse
import inspect
import json
import logging
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lobes.data.audio import AudioError, audio_info, needs_conversion
from lobes.utils.io import write_json_atomic

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MANIFEST_FIELDS = ("wav", "duration", "emo", "gender", "spk", "session")
GENDERS = ("F", "M")
# The gender and speaker of an utterance whose corpus does not give them (EmoBox datasets whose
# keys carry neither): stage 0 leaves such genders out of its gender loss.
UNKNOWN = "unknown"
OPTIONS_FILE = "prepare_options.json"
CLASSES_FILE = "classes.json"


class PreparationError(ValueError):
    """The corpus or the options cannot give a valid fold; the message says what to do."""


def check_valid_ratio(valid_ratio):
    """Refuse a validation share outside ``[0, 1)``.

    Example
    -------
    >>> check_valid_ratio(0.1)
    >>> check_valid_ratio(1.0)
    Traceback (most recent call last):
    ...
    lobes.data.manifests.PreparationError: valid_ratio must be in [0, 1), got 1.0
    """
    if not 0.0 <= valid_ratio < 1.0:
        raise PreparationError(f"valid_ratio must be in [0, 1), got {valid_ratio}")


def check_choice(name, value, choices):
    """Refuse an option value that is not one of ``choices`` (shown as given, list or tuple).

    Example
    -------
    >>> check_choice("classes", "6", ["4", "6"])
    >>> try:
    ...     check_choice("calm", "happy", ("neu", "drop", "keep"))
    ... except PreparationError as error:
    ...     print(error)
    calm must be one of ('neu', 'drop', 'keep'), got 'happy'
    """
    if value not in choices:
        raise PreparationError(f"{name} must be one of {choices}, got {value!r}")


def check_fold(fold, n_folds):
    """Refuse a fold outside ``1 .. n_folds`` or fewer than two folds.

    Example
    -------
    >>> try:
    ...     check_fold(3, 2)
    ... except PreparationError as error:
    ...     print(error)
    fold must be from 1 to n_folds (2), got 3
    """
    if n_folds < 2:
        raise PreparationError(f"n_folds must be at least 2, got {n_folds}")
    if not 1 <= fold <= n_folds:
        raise PreparationError(f"fold must be from 1 to n_folds ({n_folds}), got {fold}")


def check_data_folder(data_folder, expected):
    """Refuse a data folder that does not exist; ``expected`` says which folder to give.

    Example
    -------
    >>> try:
    ...     check_data_folder("/nowhere", "the CREMA-D folder")
    ... except PreparationError as error:
    ...     print(error)
    data folder not found: /nowhere; give the path of the CREMA-D folder
    """
    if not Path(data_folder).is_dir():
        raise PreparationError(f"data folder not found: {data_folder}; give the path of {expected}")


def prepared_counts(save_folder, options):
    """The split sizes of an identical earlier run in ``save_folder``, or None.

    An earlier run counts only if it finished (``prepare_options.json`` is written last), left
    every manifest and ``classes.json``, and recorded exactly ``options``.

    Arguments
    ---------
    save_folder : str or pathlib.Path
        Folder of the manifests.
    options : dict
        The options of this run, as ``write_manifests`` records them.

    Returns
    -------
    dict or None
        ``{"train": n, "valid": n, "test": n}``, or None when the fold must be (re)prepared.

    Example
    -------
    >>> import tempfile
    >>> save_folder = Path(tempfile.mkdtemp())
    >>> prepared_counts(save_folder, {"seed": 1}) is None
    True
    >>> entry = {"wav": "/a.wav", "duration": 1.0, "emo": "neu", "gender": "F", "spk": "s1",
    ...          "session": 1}
    >>> _ = write_manifests(save_folder, {"train": {"u1": entry}, "valid": {}, "test": {}},
    ...                     ["neu"], {"seed": 1})
    >>> prepared_counts(save_folder, {"seed": 1})
    {'train': 1, 'valid': 0, 'test': 0}
    >>> prepared_counts(save_folder, {"seed": 2}) is None
    True
    """
    save_folder = Path(save_folder)
    needed = [save_folder / f"{split}.json" for split in SPLITS] + [save_folder / CLASSES_FILE]
    options_path = save_folder / OPTIONS_FILE
    if not options_path.is_file() or not all(path.is_file() for path in needed):
        return None
    try:
        if json.loads(options_path.read_text()) != options:
            return None
        return {
            split: len(json.loads((save_folder / f"{split}.json").read_text()))
            for split in SPLITS
        }
    except json.JSONDecodeError:
        return None


def prepare_once(description, save_folder, options, build, log=logger,
                 fact_keys=("n_converted",)):
    """Prepare a fold unless an identical earlier run did: the frame of every corpus preparation.

    Arguments
    ---------
    description : str
        Named in the log, e.g. ``"IEMOCAP fold 1"``.
    save_folder : str or pathlib.Path
        Folder of the manifests.
    options : dict
        The preparation's options (checked by the caller), recorded with the manifests.
    build : callable
        ``build() -> (splits, classes, facts)``: the ``write_manifests`` splits, the ordered
        class list and a dict of facts to return (``n_converted`` and the like). Only called
        when the fold must be (re)prepared.
    log : logging.Logger
        The calling preparation's logger.
    fact_keys : tuple of str
        The keys of ``facts``, returned as None when the preparation is skipped.

    Returns
    -------
    dict
        ``{"train": n, "valid": n, "test": n, **facts, "skipped": bool}``.

    Example
    -------
    >>> import tempfile
    >>> entry = {"wav": "/a.wav", "duration": 1.0, "emo": "neu", "gender": "F", "spk": "s1",
    ...          "session": 1}
    >>> def build():
    ...     return {"train": {"u1": entry}, "valid": {}, "test": {}}, ["neu"], {"n_converted": 0}
    >>> save_folder = tempfile.mkdtemp()
    >>> prepare_once("toy fold 1", save_folder, {"seed": 1}, build)
    {'train': 1, 'valid': 0, 'test': 0, 'n_converted': 0, 'skipped': False}
    >>> prepare_once("toy fold 1", save_folder, {"seed": 1}, build)["skipped"]
    True
    """
    save_folder = Path(save_folder)
    counts = prepared_counts(save_folder, options)
    if counts is not None:
        log.info("%s already prepared in %s; skipping", description, save_folder)
        return {**counts, **dict.fromkeys(fact_keys), "skipped": True}
    splits, classes, facts = build()
    counts = write_manifests(save_folder, splits, classes, options)
    log.info("%s prepared in %s: %s", description, save_folder, counts)
    return {**counts, **facts, "skipped": False}


@dataclass(frozen=True)
class Corpus:
    """What one corpus preparation supplies to the skeleton, ``prepare_corpus``.

    Attributes
    ----------
    name : str
        The corpus, as the wav error names it ("Restore these files from the <name> release").
    folder : str
        What the data folder is, named when it is not found, e.g. ``"the CREMA-D folder (the one
        holding AudioWAV/)"``.
    describe : str
        The prepared fold in the log, formatted with the options, e.g. ``"CREMA-D fold {fold} of
        {n_folds}"``.
    check : callable
        ``check(options)`` raises ``PreparationError`` for an option of this corpus that cannot
        be used; ``valid_ratio`` and the data folder are checked after it, for every corpus.
    classes : callable
        ``classes(options)``: the ordered class list for these options (``classes.json``).
    read : callable
        ``read(data_folder, options, classes) -> (utterances, facts)``: how the corpus layout
        and label files become the utterances of these classes, ``{utt_id: {"wav", "emo",
        "gender", "spk", "session"}}`` (further fields are allowed, for the fold rule; they are
        not written), and a dict of facts to return, with the keys in ``facts``.
        ``data_folder`` is a resolved ``pathlib.Path``.
    split : callable
        The fold rule, ``split(utterances, options) -> {"train": ..., "valid": ..., "test": ...}``,
        e.g. ``hold_out("fold")``; the utterances have their ``duration`` by then.
    restore_hint : str
        How to restore a bad wav, in the wav error.
    facts : tuple of str
        The keys of the facts ``read`` returns (returned as None when the fold was skipped).
    unrecorded : tuple of str
        Parameters that are checked but not recorded in ``prepare_options.json`` (MSP-Podcast's
        ``fold``, always 1).
    """

    name: str
    folder: str
    describe: str
    check: Callable
    classes: Callable
    read: Callable
    split: Callable
    restore_hint: str = "re-extract the archive"
    facts: tuple = ()
    unrecorded: tuple = ()


def prepare_corpus(corpus, prepare, arguments):
    """Prepare one fold of a corpus: the skeleton that every ``prepare_<corpus>`` runs.

    The signature of ``prepare`` is the option list: every parameter but ``save_folder`` and
    ``skip_prep`` is an option, recorded in signature order and typed by its default (``int``,
    ``float`` or ``str``, as ``run_cv.py`` types ``--prepare_option`` values). A parameter
    without default (the fold or test session) is an ``int``; ``data_folder`` is recorded
    resolved, as a string. Then:

    1. with ``skip_prep``, nothing is done and None returned;
    2. the options are checked: ``corpus.check``, then ``valid_ratio`` and the data folder;
    3. unless an identical earlier run left its manifests (``prepare_once``): ``corpus.read``,
       ``check_wavs`` on what it read, the fold rule ``corpus.split`` and ``write_manifests``
       with the class list ``corpus.classes``.

    Log lines (the wav conversion count, the outcome) go to the logger of ``prepare``'s module.

    The parameters every preparation has mean the same for every corpus: ``save_folder``, where
    ``train.json``, ``valid.json``, ``test.json``, ``classes.json`` and ``prepare_options.json``
    go; ``valid_ratio``, the share of each training speaker's utterances drawn for
    ``valid.json`` (``round(valid_ratio * n)`` of a speaker's ``n``, see ``draw_validation``);
    ``seed``, the seed of that draw (the same seed gives the same split); ``skip_prep``, True
    to do nothing and return None.

    Arguments
    ---------
    corpus : Corpus
        What differs per corpus.
    prepare : callable
        The public preparation function, e.g. ``prepare_cremad``.
    arguments : dict
        The arguments of this call of ``prepare`` by parameter name (its ``locals()``).

    Returns
    -------
    dict or None
        ``{"train": n, "valid": n, "test": n, "n_converted": n, **facts, "skipped": bool}``:
        utterances per split, how many wavs are not 16 kHz mono (``lobes.data.audio.read_audio``
        converts them on load) and the corpus' facts (these None when the work was skipped),
        and whether the manifests of an identical earlier run were reused. None with
        ``skip_prep``.

    Raises
    ------
    PreparationError
        For an option that cannot be used or a data folder that is not there, and from
        ``corpus.read`` for what it finds wrong in the corpus.
    lobes.data.audio.AudioError
        Listing every wav that is missing or unreadable, all at once (``check_wavs``).

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> corpus_folder = Path(tempfile.mkdtemp())
    >>> for name in ("ann_1", "ann_2", "bob_1"):
    ...     soundfile.write(corpus_folder / f"{name}.wav", numpy.zeros(1600), 16000)
    >>> def read(data_folder, options, classes):
    ...     return {path.stem: {"wav": str(path), "emo": "neu", "gender": "F",
    ...                         "spk": path.stem[:3], "session": 1 + path.stem.startswith("b")}
    ...             for path in sorted(data_folder.glob("*.wav"))}, {}
    >>> toy = Corpus(name="toy", folder="the toy folder", describe="toy fold {fold}",
    ...              check=lambda options: check_fold(options["fold"], 2),
    ...              classes=lambda options: ("neu",), read=read, split=hold_out("fold"))
    >>> def prepare_toy(data_folder, save_folder, fold, valid_ratio=0.0, seed=1,
    ...                 skip_prep=False):
    ...     return prepare_corpus(toy, prepare_toy, locals())
    >>> prepare_toy(corpus_folder, corpus_folder / "fold2", "2")
    {'train': 2, 'valid': 0, 'test': 1, 'n_converted': 0, 'skipped': False}
    >>> json.loads((corpus_folder / "fold2" / "prepare_options.json").read_text())["fold"]
    2
    """
    if arguments["skip_prep"]:
        return None
    options = _typed_options(prepare, arguments)
    corpus.check(options)
    check_valid_ratio(options["valid_ratio"])
    check_data_folder(options["data_folder"], corpus.folder)
    log = logging.getLogger(prepare.__module__)

    def build():
        classes = tuple(corpus.classes(options))
        utterances, facts = corpus.read(Path(options["data_folder"]), options, classes)
        n_converted = check_wavs(utterances, corpus.name, corpus.restore_hint, log=log)
        splits = corpus.split(utterances, options)
        return splits, classes, {"n_converted": n_converted, **facts}

    record = {name: value for name, value in options.items() if name not in corpus.unrecorded}
    return prepare_once(corpus.describe.format(**options), arguments["save_folder"], record,
                        build, log=log, fact_keys=("n_converted", *corpus.facts))


def _typed_options(prepare, arguments):
    """The options of one call of ``prepare``, typed and ordered by its signature."""
    options = {}
    for name, parameter in inspect.signature(prepare).parameters.items():
        if name in ("save_folder", "skip_prep"):
            continue
        value = arguments[name]
        if name == "data_folder":
            options[name] = str(Path(value).resolve())
        elif parameter.default is parameter.empty:  # the fold or test session
            options[name] = int(value)
        else:
            options[name] = type(parameter.default)(value)
    return options


def hold_out(fold_option):
    """The fold rule of corpora whose utterances carry their speaker group in ``session``.

    The group named by the option ``fold_option`` is the test set; ``valid`` is a seeded,
    speaker-stratified share of the other groups (``split_fold`` with the options'
    ``valid_ratio`` and ``seed``).

    Arguments
    ---------
    fold_option : str
        The option holding the test group: ``"test_session"`` (IEMOCAP), ``"fold"``.

    Returns
    -------
    callable
        ``split(utterances, options) -> {"train": ..., "valid": ..., "test": ...}``.

    Example
    -------
    >>> utterances = {f"{spk}{i}": {"spk": spk, "session": 1 if spk == "a" else 2}
    ...               for spk in "abc" for i in range(10)}
    >>> splits = hold_out("fold")(utterances, {"fold": 1, "valid_ratio": 0.2, "seed": 3})
    >>> sorted(splits["test"]) == [f"a{i}" for i in range(10)], len(splits["valid"])
    (True, 4)
    """

    def split(utterances, options):
        return split_fold(utterances, options[fold_option], options["valid_ratio"],
                          options["seed"])

    return split


def speaker_fold_utterances(clips, fold, n_folds, class_set, data_folder):
    """Put each clip in its speaker's fold (``speaker_folds``), keeping the classes asked for.

    For corpora without sessions (CREMA-D, RAVDESS): the fold number goes to ``session``, so
    that ``split_fold`` holds fold ``fold`` out as the test set.

    Arguments
    ---------
    clips : dict
        ``{utt_id: entry}`` with ``emo``, ``spk`` and ``gender``.
    fold, n_folds : int
        The test fold and the number of folds.
    class_set : sequence of str
        The classes kept.
    data_folder : str or pathlib.Path
        Named in the error when the test fold holds no clip of these classes.

    Returns
    -------
    dict
        The kept clips, each with ``session`` set to its fold.

    Example
    -------
    >>> clips = {f"u{i}": {"emo": emo, "spk": f"s{i}", "gender": "FM"[i % 2]}
    ...          for i, emo in enumerate(["neu", "sad", "fea", "neu"])}
    >>> kept = speaker_fold_utterances(clips, 1, 2, ["neu", "sad"], "/corpus")
    >>> {utt_id: entry["session"] for utt_id, entry in kept.items()}
    {'u0': 1, 'u1': 1, 'u3': 2}
    """
    folds = speaker_folds({clip["spk"]: clip["gender"] for clip in clips.values()}, n_folds)
    utterances = {
        utt_id: {**clip, "session": folds[clip["spk"]]}
        for utt_id, clip in clips.items()
        if clip["emo"] in class_set
    }
    if not any(entry["session"] == fold for entry in utterances.values()):
        raise PreparationError(
            f"fold {fold} has no utterance of the classes {list(class_set)} in {data_folder}"
        )
    return utterances


def check_wavs(utterances, corpus_name, restore_hint="re-extract the archive", log=logger):
    """Read every wav header, record its ``duration``; return how many need conversion.

    Floating-point wavs are also read through, to find NaN or infinite samples.

    Every file is checked before anything fails, so that one error lists them all.

    Arguments
    ---------
    utterances : dict
        ``{utt_id: entry}`` with ``entry["wav"]``; ``entry["duration"]`` is set in place.
    corpus_name : str
        Named in the error message ("Restore these files from the <corpus_name> release").
    restore_hint : str
        How to restore the files, e.g. "re-extract the archive".
    log : logging.Logger
        Where the conversion count is reported (the calling preparation's logger).

    Returns
    -------
    int
        Number of wavs that are not 16 kHz mono (``lobes.data.audio.read_audio`` converts them on
        load).

    Raises
    ------
    lobes.data.audio.AudioError
        Listing every missing, unreadable or non-finite wav, with the count and what to do.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> wav_path = Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(wav_path, numpy.zeros((4800, 2)), 48000)
    >>> utterances = {"a": {"wav": str(wav_path)}}
    >>> check_wavs(utterances, "RAVDESS"), utterances["a"]["duration"]
    (1, 0.1)
    """
    problems = []
    n_converted = 0
    for entry in utterances.values():
        try:
            info = audio_info(entry["wav"], check_samples=True)
        except AudioError as error:
            problems.append(str(error))
            continue
        entry["duration"] = info.duration
        n_converted += needs_conversion(info)
    if problems:
        listing = "\n  ".join(problems)
        raise AudioError(
            f"{len(problems)} of {len(utterances)} wav files cannot be used:\n  {listing}\n"
            f"Restore these files from the {corpus_name} release ({restore_hint}), then run the "
            "preparation again."
        )
    if n_converted:
        log.info(
            "%d of %d wav files are not 16 kHz mono; the shared audio loader "
            "(lobes.data.audio.read_audio) converts them on load",
            n_converted,
            len(utterances),
        )
    return n_converted


def speaker_folds(speaker_genders, n_folds):
    """Put every speaker in one of ``n_folds`` speaker-independent, gender-balanced folds.

    The rule is deterministic: female speakers in sorted id order, then male speakers in sorted
    id order, dealt round-robin to folds 1, 2, ..., ``n_folds``, 1, 2, ... (the male deal goes on
    where the female one stopped). Fold sizes then differ by at most one speaker overall and by
    at most one speaker of each gender.

    Arguments
    ---------
    speaker_genders : dict
        ``{speaker id: "F" or "M"}``.
    n_folds : int
        Number of folds, from 2 to the number of speakers.

    Returns
    -------
    dict
        ``{speaker id: fold number (1 ... n_folds)}``.

    Example
    -------
    >>> speaker_folds({"s1": "M", "s2": "F", "s3": "F", "s4": "M", "s5": "F"}, 2)
    {'s2': 1, 's3': 2, 's5': 1, 's1': 2, 's4': 1}
    """
    if not 2 <= n_folds <= len(speaker_genders):
        raise PreparationError(
            f"n_folds must be from 2 to the number of speakers ({len(speaker_genders)}), "
            f"got {n_folds}"
        )
    ordered = sorted(speaker_genders, key=lambda spk: (speaker_genders[spk], spk))
    return {spk: index % n_folds + 1 for index, spk in enumerate(ordered)}


def draw_validation(utterances, valid_ratio, seed):
    """Split utterances into train and a seeded, speaker-stratified validation share.

    Each speaker gives ``round(valid_ratio * n)`` of its ``n`` utterances (halves round up),
    drawn with a generator seeded by ``"<seed>:<speaker>"``: the same seed gives the same draw
    in every process, and a speaker's draw does not depend on the other speakers.

    Arguments
    ---------
    utterances : dict
        ``{utt_id: entry}`` with ``entry["spk"]``.
    valid_ratio : float
        Share of each speaker's utterances drawn for validation, in ``[0, 1)``.
    seed : int
        Seed of the draw.

    Returns
    -------
    train, valid : dict
        The two parts, each ``{utt_id: entry}``, speakers in sorted order.

    Example
    -------
    >>> utterances = {f"u{i}": {"spk": "A" if i < 10 else "B"} for i in range(20)}
    >>> train, valid = draw_validation(utterances, 0.2, seed=3)
    >>> len(train), sorted(entry["spk"] for entry in valid.values())
    (16, ['A', 'A', 'B', 'B'])
    """
    by_speaker = {}
    for utt_id, entry in utterances.items():
        by_speaker.setdefault(entry["spk"], []).append(utt_id)
    train, valid = {}, {}
    for spk in sorted(by_speaker):
        speaker_ids = by_speaker[spk]
        n_valid = math.floor(valid_ratio * len(speaker_ids) + 0.5)
        # A string seed is hashed with SHA-512, so the draw is the same in every process.
        valid_ids = set(random.Random(f"{seed}:{spk}").sample(speaker_ids, n_valid))
        for utt_id in speaker_ids:
            (valid if utt_id in valid_ids else train)[utt_id] = utterances[utt_id]
    return train, valid


def draw_speakers(utterances, valid_ratio, seed):
    """Split utterances into train and a seeded validation set of whole speakers.

    The speakers are shuffled by a generator seeded with ``"<seed>:speakers"``, then taken in
    that order until the validation set holds at least ``round(valid_ratio * n)`` of the ``n``
    utterances (halves round up); at least one speaker stays in train. No speaker is in both.

    Arguments
    ---------
    utterances : dict
        ``{utt_id: entry}`` with ``entry["spk"]``.
    valid_ratio : float
        Share of the utterances wanted for validation, in ``[0, 1)``.
    seed : int
        Seed of the draw.

    Returns
    -------
    train, valid : dict
        The two parts, each ``{utt_id: entry}``.

    Example
    -------
    >>> utterances = {f"u{i}": {"spk": f"s{i % 10}"} for i in range(100)}
    >>> train, valid = draw_speakers(utterances, 0.2, seed=3)
    >>> len(valid), len({entry["spk"] for entry in valid.values()})
    (20, 2)
    >>> {entry["spk"] for entry in valid.values()} & {entry["spk"] for entry in train.values()}
    set()
    """
    by_speaker = {}
    for utt_id, entry in utterances.items():
        by_speaker.setdefault(entry["spk"], []).append(utt_id)
    target = math.floor(valid_ratio * len(utterances) + 0.5)
    # A string seed is hashed with SHA-512, so the draw is the same in every process.
    order = sorted(by_speaker)
    random.Random(f"{seed}:speakers").shuffle(order)
    chosen, n_valid = set(), 0
    for spk in order[:-1]:
        if n_valid >= target:
            break
        chosen.add(spk)
        n_valid += len(by_speaker[spk])
    train, valid = {}, {}
    for utt_id, entry in utterances.items():
        (valid if entry["spk"] in chosen else train)[utt_id] = entry
    return train, valid


def split_fold(utterances, test_session, valid_ratio, seed):
    """One cross-validation fold: test = ``session == test_session``, valid drawn from the rest.

    Arguments
    ---------
    utterances : dict
        ``{utt_id: entry}`` with ``entry["session"]`` (the speaker group) and ``entry["spk"]``.
    test_session : int
        The speaker group held out as the test set.
    valid_ratio, seed
        As for ``draw_validation``, applied to the training groups only.

    Returns
    -------
    dict
        ``{"train": {...}, "valid": {...}, "test": {...}}``.

    Example
    -------
    >>> utterances = {f"u{i}": {"spk": f"s{i % 4}", "session": i % 2 + 1} for i in range(40)}
    >>> splits = split_fold(utterances, test_session=2, valid_ratio=0.1, seed=1)
    >>> {split: len(part) for split, part in splits.items()}
    {'train': 18, 'valid': 2, 'test': 20}
    """
    test = {}
    training = {}
    for utt_id, entry in utterances.items():
        (test if entry["session"] == test_session else training)[utt_id] = entry
    train, valid = draw_validation(training, valid_ratio, seed)
    return {"train": train, "valid": valid, "test": test}


def write_manifests(save_folder, splits, classes, options):
    """Write the three manifests, ``classes.json`` and, last, ``prepare_options.json``.

    Each entry is reduced to the fields of the manifest contract (docs/design.md, Data
    contract) and checked against it. The old options record is removed first and written again
    only after every other file is in place, so an interrupted run never looks finished to
    ``prepared_counts``. Every file is written atomically (temporary name, then rename).

    Arguments
    ---------
    save_folder : str or pathlib.Path
        Created if needed.
    splits : dict
        ``{"train": {utt_id: entry}, "valid": ..., "test": ...}``; each entry holds at least
        ``wav``, ``duration``, ``emo``, ``gender``, ``spk``, ``session``.
    classes : list of str
        The ordered class list of the corpus as configured; every ``emo`` must be in it.
    options : dict
        The preparation options (JSON-serialisable), recorded to skip an identical re-run.

    Returns
    -------
    dict
        ``{"train": n, "valid": n, "test": n}``.

    Raises
    ------
    ValueError
        If an entry breaks the contract (a bug of the corpus preparation).

    Example
    -------
    >>> import tempfile
    >>> save_folder = Path(tempfile.mkdtemp())
    >>> entry = {"wav": "/a.wav", "duration": 1.0, "emo": "sad", "gender": "M", "spk": "s1",
    ...          "session": 2, "source_line": 7}
    >>> write_manifests(save_folder, {"train": {}, "valid": {}, "test": {"u1": entry}},
    ...                 ["neu", "hap", "ang", "sad"], {"fold": 2})
    {'train': 0, 'valid': 0, 'test': 1}
    >>> json.loads((save_folder / "test.json").read_text())["u1"]["session"]
    2
    >>> json.loads((save_folder / "classes.json").read_text())
    ['neu', 'hap', 'ang', 'sad']
    """
    save_folder = Path(save_folder)
    manifests = {
        split: {utt_id: _contract_entry(utt_id, entry, classes)
                for utt_id, entry in splits[split].items()}
        for split in SPLITS
    }
    (save_folder / OPTIONS_FILE).unlink(missing_ok=True)
    for split in SPLITS:
        write_json_atomic(save_folder / f"{split}.json", manifests[split])
    write_json_atomic(save_folder / CLASSES_FILE, list(classes))
    write_json_atomic(save_folder / OPTIONS_FILE, options)
    return {split: len(manifests[split]) for split in SPLITS}


def _contract_entry(utt_id, entry, classes):
    missing = [field for field in MANIFEST_FIELDS if field not in entry]
    if missing:
        raise ValueError(f"manifest entry {utt_id} lacks {missing}: {entry}")
    if entry["emo"] not in classes:
        raise ValueError(f"manifest entry {utt_id} has emo {entry['emo']!r}, not in {classes}")
    if entry["gender"] not in (*GENDERS, UNKNOWN):
        raise ValueError(
            f"manifest entry {utt_id} has gender {entry['gender']!r}, not F, M or {UNKNOWN}"
        )
    if not isinstance(entry["session"], int):
        raise ValueError(f"manifest entry {utt_id} has a non-integer session: {entry}")
    return {field: entry[field] for field in MANIFEST_FIELDS}


def run_from_command_line(prepare, arguments):
    """Run a preparation from its command line: log to stderr, print the summary as JSON.

    A ``PreparationError`` or ``AudioError`` ends the program with ``error: <message>`` (exit
    status 1) instead of a traceback: the message already says what to do.

    Arguments
    ---------
    prepare : callable
        The corpus preparation, e.g. ``prepare_cremad``.
    arguments : dict
        Its keyword arguments.

    Example
    -------
    >>> run_from_command_line(lambda n_folds: {"test": n_folds}, {"n_folds": 5})
    {"test": 5}
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = prepare(**arguments)
    except (PreparationError, AudioError) as error:
        sys.exit(f"error: {error}")
    print(json.dumps(summary))


# What every preparation's command line says about these parameters, unless it says otherwise.
COMMAND_LINE_DEFAULTS = {
    "data_folder": {"required": True, "type": Path},
    "save_folder": {"required": True, "type": Path, "help": "where the manifests are written"},
    "fold": {"type": int, "default": 1, "help": "test fold, 1 ... n_folds"},
}
FOLD_PARAMETERS = ("fold", "test_session")


def command_line(prepare, doc, argv=None, **arguments):
    """The ``main`` of every preparation script: its command line, built from its signature.

    One ``--<name>`` per parameter of ``prepare`` but ``skip_prep``: ``--data_folder`` and
    ``--save_folder`` (required paths), the fold (``--fold``, default 1, or ``--test_session``),
    then the others in signature order, each typed and defaulted by its default in the
    signature; a parameter without default is a required int. The parsed options go to
    ``run_from_command_line``.

    Arguments
    ---------
    prepare : callable
        The corpus preparation, e.g. ``prepare_cremad``.
    doc : str
        The script's docstring; its first paragraph describes the command.
    argv : list of str, optional
        The command-line arguments (default: ``sys.argv[1:]``).
    **arguments : dict
        More ``argparse`` settings per parameter, e.g. ``classes={"choices": ["4", "6"],
        "help": "..."}``.

    Example
    -------
    >>> def prepare_toy(data_folder, save_folder, fold, n_folds=5, skip_prep=False):
    ...     return {"fold": fold, "n_folds": n_folds}
    >>> command_line(prepare_toy, "Prepare a toy fold.", ["--data_folder", "corpus",
    ...              "--save_folder", "out", "--n_folds", "3"], n_folds={"choices": [3, 5]})
    {"fold": 1, "n_folds": 3}
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parameters = inspect.signature(prepare).parameters
    first = ["data_folder", "save_folder", *(name for name in parameters
                                             if name in FOLD_PARAMETERS)]
    for name in first + [name for name in parameters if name not in first + ["skip_prep"]]:
        default = parameters[name].default
        if name in COMMAND_LINE_DEFAULTS:
            settings = dict(COMMAND_LINE_DEFAULTS[name])
        elif default is parameters[name].empty:
            settings = {"required": True, "type": int}
        else:
            settings = {"type": type(default), "default": default}
        parser.add_argument(f"--{name}", **{**settings, **arguments.get(name, {})})
    run_from_command_line(prepare, vars(parser.parse_args(argv)))
