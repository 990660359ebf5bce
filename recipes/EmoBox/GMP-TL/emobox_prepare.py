#!/usr/bin/env python3
"""Prepare one fold of an EmoBox dataset, on EmoBox's own split: train, valid and test manifests.

EmoBox (github.com/emo-box/EmoBox; Ma et al., Interspeech 2024) gives 32 emotion corpora a
metadata file and fixed train/test folds. Its ``data/`` folder (the ``metadata`` option) holds,
per dataset::

    data/<dataset>/label_map.json                                  raw label -> class name
    data/<dataset>/fold_<k>/<dataset>_{train,test}_fold_<k>.jsonl  one JSON object a line
    data/<dataset>/fold_<k>/<dataset>_valid_fold_<k>.jsonl         (m3ed, meld, msppodcast)

Every line has ``key`` (``<dataset>-<id>``), ``wav`` (a path relative to the folder holding
``downloads/``, the ``data_folder``), ``emo`` (a raw label), ``num_frame`` and ``sample_rate``.
Fold K of EmoBox is fold K here: its test list is ``test.json``; its official valid list, where
EmoBox has one, is ``valid.json``; else ``valid.json`` is a seeded ``valid_ratio`` share of its
train list, drawn by whole speakers (``lobes.data.manifests.draw_speakers``) where the keys name
the speakers, by utterance where they do not (logged).

Classes: the class names of ``label_map.json`` (``emovo`` names it ``label_dict.json``) that the
fold's lists use, so IEMOCAP's ``exc`` is ``hap`` as EmoBox maps it. The names the native
preparations share get their codes and order (``neu hap ang sad fea dis sur cal``), the others
follow, lower-cased, in label-map order (our choice: an EmoBox IEMOCAP fold then has the classes
of ``iemocap_prepare.py``).

Speaker and gender are not in EmoBox's metadata: ``KEY_RULES`` derives them from the key for the
datasets whose ids carry them (CREMA-D's gender from its ``VideoDemographics.csv``); the others
are ``unknown`` (docs/design.md, Data contract). ``session`` is the fold for test utterances and
0 for the others. The manifest id is EmoBox's key.

Checks before any work, one line per problem: a dataset the metadata lacks (with a
did-you-mean), a fold it lacks, a label outside the label map, keys that do not follow the
dataset's naming, and wav files that disagree with the metadata (missing, unreadable, other
sample counts or rates). The skeleton every corpus shares (options, wav check, manifests, re-run
skip, command line) is ``lobes.data.manifests.prepare_corpus``; this file supplies what is
EmoBox's own (``CORPUS``).

Usage::

    python recipes/EmoBox/GMP-TL/emobox_prepare.py --data_folder PATH/EmoBox \\
        --save_folder OUT --fold 1 --dataset iemocap [--metadata PATH/EmoBox/data] \\
        [--demographics PATH/VideoDemographics.csv] [--valid_ratio 0.1]
"""

import csv
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    from lobes.data import manifests
except ModuleNotFoundError:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from lobes.data import manifests
from lobes.data.audio import AudioError, audio_info
from lobes.utils.errors import did_you_mean

PreparationError = manifests.PreparationError
UNKNOWN = manifests.UNKNOWN

logger = logging.getLogger(__name__)

LABEL_MAP_FILES = ("label_map.json", "label_dict.json")  # emovo's is label_dict.json
# The classes the native preparations share, in their order, and the EmoBox class names of
# each (with the spellings of older EmoBox label maps).
CLASS_ORDER = ("neu", "hap", "ang", "sad", "fea", "dis", "sur", "cal")
CLASS_CODES = {"Neutral": "neu", "Happy": "hap", "Joy": "hap", "Angry": "ang", "Anger": "ang",
               "Angray": "ang", "Sad": "sad", "Sadness": "sad", "Fear": "fea", "Fearful": "fea",
               "Disgust": "dis", "Disgusted": "dis", "Surprise": "sur", "Surprised": "sur",
               "Superise": "sur", "Calm": "cal"}
# Our choice: a speaker-disjoint valid split may hold up to twice the valid_ratio share of the
# training utterances; with fewer, larger speakers it is drawn by utterance instead (logged).
MAX_VALID_SHARE = 2.0
SHOWN = 3  # problem files named in an error; the count gives the rest
CREMAD_DEMOGRAPHICS = Path("downloads") / "cremad" / "VideoDemographics.csv"
SEX_TO_GENDER = {"Female": "F", "Male": "M"}


@dataclass(frozen=True)
class KeyRule:
    """How one dataset's keys carry its speaker and gender.

    Attributes
    ----------
    pattern : str
        A regular expression the key without ``<dataset>-`` matches in full.
    example : str
        Such a key, named in the error for keys that do not match.
    speaker : str or None
        The speaker id, formatted from the pattern's groups; None where the key has none.
    gender : str or None
        Formatted from the groups (or from ``wav_gender``'s match), looked up in ``genders``;
        None where the key gives no gender.
    genders : dict
        That value -> ``"F"`` or ``"M"``; a value it lacks is ``unknown``.
    wav_gender : str or None
        A regular expression searched in the ``wav`` path instead, for ``gender`` (Oréau keeps
        the speaker's gender in its folder names only).
    """

    pattern: str
    example: str
    speaker: str | None
    gender: str | None = None
    genders: dict = field(default_factory=lambda: {"F": "F", "M": "M"})
    wav_gender: str | None = None

    def speaker_gender(self, key_id, wav):
        """``(speaker, gender)`` of one key, ``unknown`` where not given; None if it does not
        match.

        Example
        -------
        >>> KEY_RULES["ravdess"].speaker_gender("03-01-05-01-02-01-18", "")
        ('Actor_18', 'F')
        >>> KEY_RULES["oreau"].speaker_gender("36a10Pa", "downloads/oreau/O/m/sessp/36a10Pa.wav")
        ('36', 'M')
        """
        match = re.fullmatch(self.pattern, key_id)
        if match is None:
            return None
        groups = match.groupdict()
        if self.wav_gender is not None:
            found = re.search(self.wav_gender, wav)
            groups.update(found.groupdict() if found else {})
        speaker = self.speaker.format(**groups) if self.speaker else UNKNOWN
        try:
            gender = self.genders.get(self.gender.format(**groups), UNKNOWN)
        except (AttributeError, KeyError):  # no gender rule, or the wav path lacks it
            gender = UNKNOWN
        return speaker, gender


def _alternating(n_actors):
    """Actors ``01`` ... numbered from 1: odd male, even female (RAVDESS, CaFE)."""
    return {f"{actor:02d}": "M" if actor % 2 else "F" for actor in range(1, n_actors + 1)}


# One rule per dataset whose keys name the speaker or the gender; checked against every key of
# EmoBox's metadata (commit 08280f2). Datasets not here (aesdd, emns, emozionalmente, m3ed, meld,
# mer2023, msppodcast, pavoque, resd, and asvpesd, whose keys' actor field disagrees with the
# actor folders for 968 files) have neither.
KEY_RULES = {
    "iemocap": KeyRule(r"Ses0(?P<session>[1-5])[FM]_\w+_(?P<g>[FM])\d+",
                       "Ses01F_impro04_F000", "Ses0{session}_{g}", "{g}"),
    "ravdess": KeyRule(r"\d\d-\d\d-\d\d-\d\d-\d\d-\d\d-(?P<actor>\d\d)", "03-01-05-01-02-01-18",
                       "Actor_{actor}", "{actor}", _alternating(24)),
    # the gender comes from VideoDemographics.csv (option demographics)
    "cremad": KeyRule(r"(?P<actor>\d{4})-[A-Z]{3}-[A-Z]{3}-[A-Z]{2}", "1087-IWL-ANG-XX",
                      "{actor}", "{actor}", {}),
    "cafe": KeyRule(r"(?P<actor>\d\d)-[A-Z]-\d-\d", "12-P-2-5", "{actor}", "{actor}",
                    _alternating(12)),
    "casia": KeyRule(r"\d+-(?P<spk>[a-z]+)-[a-z]+", "239-wangzhe-neutral", "{spk}", "{spk}",
                     {"liuchanhg": "F", "zhaoquanyin": "F", "wangzhe": "M", "zhaozuoxiang": "M"}),
    "emodb": KeyRule(r"(?P<spk>\d\d)[ab]\d\d[A-Z][a-z]", "03a01Wa", "{spk}", "{spk}",
                     {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M", "12": "M",
                      "13": "F", "14": "F", "15": "M", "16": "F"}),
    "emovdb": KeyRule(r"(?P<spk>[a-z]+)-[A-Za-z]+-\d+", "jenie-Amused-0057", "{spk}", "{spk}",
                      {"bea": "F", "jenie": "F", "josh": "M", "sam": "M"}),
    "emovo": KeyRule(r"[a-z]{3}-(?P<g>[fm])(?P<n>\d)-\w+", "gio-f2-b2", "{g}{n}", "{g}",
                     {"f": "F", "m": "M"}),
    "jlcorpus": KeyRule(r"(?P<g>female|male)(?P<n>\d)-.+", "male2-concerned-6b-1", "{g}{n}",
                        "{g}", {"female": "F", "male": "M"}),
    "savee": KeyRule(r"(?P<spk>DC|JE|JK|KL)-[a-z]+\d\d", "JE-n23", "{spk}", "{spk}",
                     {"DC": "M", "JE": "M", "JK": "M", "KL": "M"}),
    "tess": KeyRule(r"(?P<spk>OAF|YAF)-.+", "OAF-lid-fear", "{spk}", "{spk}",
                    {"OAF": "F", "YAF": "F"}),
    "shemo": KeyRule(r"(?P<g>[FM])(?P<n>\d\d)[A-Z]\d\d", "M36S02", "{g}{n}", "{g}"),
    "subesco": KeyRule(r"(?P<g>[FM])_(?P<n>\d\d)_(?P<name>[A-Z]+)_S_.+",
                       "F_10_FAHMEE_S_6_FEAR_5", "{g}_{n}_{name}", "{g}"),
    "urdu": KeyRule(r"S(?P<g>[FM])(?P<n>\d+)_F\d+_[A-Z]\d+", "SM20_F8_N012", "S{g}{n}", "{g}"),
    "oreau": KeyRule(r"(?P<spk>\d\d)[a-z]\d\d[A-Z][a-z]", "10a02Ja", "{spk}", "{g}",
                     {"f": "F", "m": "M"}, wav_gender=r"/(?P<g>[fm])/sess"),
    "mead": KeyRule(r"(?P<g>[MW])(?P<n>\d{3})-.+", "W019-neutral-level-1-020", "{g}{n}", "{g}",
                    {"M": "M", "W": "F"}),
    # field 4 is the gender as EmoBox's preprocessing (ased.py) reads it; field 5 is not a
    # consistent speaker id (some numbers come with both genders)
    "ased": KeyRule(r"[A-Za-z]\d-\d\d-\d\d-(?P<g>\d\d)-\d+", "a5-02-01-01-33", None, "{g}",
                    {"01": "F", "02": "M"}),
    # F and M are adult voices; C is a child's, whose gender MESD does not give
    "mesd": KeyRule(r"[A-Za-z]+_(?P<g>[FMC])_[AB]_.+", "Anger_F_A_tarde", None, "{g}"),
    # speakers only: the keys give no gender
    "polish": KeyRule(r"(?P<spk>m\d)\..+", "m3.s_trzymaj_5", "{spk}"),
    "enterface": KeyRule(r"s_?(?P<n>\d+)_[a-z]{2}(?:_\d)?\.avi", "s19_an_4.avi", "s{n}"),
    "turevdb": KeyRule(r"(?P<spk>\d{4})_[a-z]{2}_.+", "1984_sk_eger.wav", "{spk}"),
    "esd": KeyRule(r"(?P<spk>\d{4})-\d{6}", "0005-000001", "{spk}"),
}


def prepare_emobox(data_folder, save_folder, fold, dataset="", metadata="", demographics="",
                   valid_ratio=0.1, seed=1986, skip_prep=False):
    """Write the train/valid/test manifests of EmoBox fold ``fold`` of ``dataset``.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The folder holding EmoBox's ``downloads/`` (the metadata's wav paths are relative to
        it), usually the EmoBox checkout.
    fold : int
        EmoBox's fold (1 ... ``n_folds``): its test list is ``test.json``.
    dataset : str
        The EmoBox dataset, e.g. ``iemocap`` (a folder of ``metadata``).
    metadata : str
        EmoBox's ``data/`` folder; empty (the default, our choice): ``<data_folder>/data``.
    demographics : str
        CREMA-D only: its ``VideoDemographics.csv`` (the actors' sex); empty (the default):
        ``<data_folder>/downloads/cremad/VideoDemographics.csv`` if there, else the genders
        are unknown (logged).
    save_folder, valid_ratio, seed, skip_prep
        As for every corpus (``lobes.data.manifests.prepare_corpus``); ``valid_ratio`` is the
        share of the fold's train list drawn for ``valid.json`` (by whole speakers where known).

    Returns
    -------
    dict or None
        ``{"train": n, "valid": n, "test": n, "n_converted": n, "unknown_gender": n,
        "skipped": bool}``, as ``lobes.data.manifests.prepare_corpus`` returns it;
        ``unknown_gender`` counts the utterances without a known gender.

    Raises
    ------
    lobes.data.manifests.PreparationError
        For a dataset or fold the metadata lacks, a label outside the label map, keys off the
        dataset's naming, or wav files that disagree with the metadata (one line per problem).

    Example
    -------
    >>> import json, pathlib, tempfile, numpy, soundfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> lines = {"train": [], "test": []}
    >>> for number, (actor, emotion) in enumerate([(1, "05"), (2, "01"), (3, "01")]):
    ...     name = f"03-01-{emotion}-01-01-01-{actor:02d}"
    ...     wav = pathlib.Path("downloads", "ravdess", f"Actor_{actor:02d}", f"{name}.wav")
    ...     (root / wav).parent.mkdir(parents=True, exist_ok=True)
    ...     soundfile.write(root / wav, numpy.zeros(4800), 48000)
    ...     lines["test" if actor == 1 else "train"].append(json.dumps({
    ...         "key": f"ravdess-{name}", "wav": str(wav), "emo": "Angry" if emotion == "05"
    ...         else "Neutral", "num_frame": 4800.0, "sample_rate": 48000}))
    >>> fold_folder = root / "data" / "ravdess" / "fold_1"
    >>> fold_folder.mkdir(parents=True)
    >>> for split, split_lines in lines.items():
    ...     _ = (fold_folder / f"ravdess_{split}_fold_1.jsonl").write_text("\\n".join(split_lines))
    >>> _ = (root / "data" / "ravdess" / "label_map.json").write_text(
    ...     '{"Angry": "Angry", "Neutral": "Neutral"}')
    >>> prepare_emobox(root, root / "fold1", 1, dataset="ravdess", valid_ratio=0.5)["test"]
    1
    >>> entry = json.loads((root / "fold1" / "test.json").read_text())[
    ...     "ravdess-03-01-05-01-01-01-01"]
    >>> entry["emo"], entry["spk"], entry["gender"], entry["session"]
    ('ang', 'Actor_01', 'M', 1)
    >>> json.loads((root / "fold1" / "classes.json").read_text())
    ['neu', 'ang']
    """
    return manifests.prepare_corpus(CORPUS, prepare_emobox, locals())


def n_folds(data_folder, dataset="", metadata="", **_):
    """How many folds EmoBox gives ``dataset`` (its ``fold_<k>`` folders), checked.

    The runner calls it to learn the folds before preparing (``lobes.data.corpora``).

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for k in (1, 2):
    ...     (root / "data" / "savee" / f"fold_{k}").mkdir(parents=True)
    >>> n_folds(root, dataset="savee")
    2
    """
    folder = _dataset_folder({"data_folder": str(data_folder), "dataset": dataset,
                              "metadata": metadata})
    numbers = sorted(int(path.name[5:]) for path in folder.iterdir()
                     if path.is_dir() and re.fullmatch(r"fold_[1-9]\d*", path.name))
    if numbers != list(range(1, len(numbers) + 1)):
        raise PreparationError(
            f"{folder} holds the folds {numbers}, not fold_1 ... fold_<n>: restore the EmoBox "
            "data/ folder"
        )
    return len(numbers)


def split_name(folds, dataset="", **_):
    """How results tables name the split, e.g. ``EmoBox iemocap fold 1-5``.

    Example
    -------
    >>> split_name([1, 2, 3, 4, 5], dataset="iemocap"), split_name([1, 3], dataset="cafe")
    ('EmoBox iemocap fold 1-5', 'EmoBox cafe fold 1, 3')
    """
    folds = sorted(folds)
    contiguous = len(folds) > 1 and folds == list(range(folds[0], folds[-1] + 1))
    listed = f"{folds[0]}-{folds[-1]}" if contiguous else ", ".join(map(str, folds))
    return f"EmoBox {dataset} fold {listed}"


def _metadata_folder(options):
    folder = Path(options["metadata"] or Path(options["data_folder"]) / "data")
    if not folder.is_dir():
        raise PreparationError(
            f"EmoBox metadata folder not found: {folder}; give metadata=PATH, the data/ folder "
            "of an EmoBox checkout (github.com/emo-box/EmoBox)"
        )
    return folder


def _dataset_folder(options):
    metadata = _metadata_folder(options)
    dataset = options["dataset"]
    known = sorted(path.name for path in metadata.iterdir() if (path / "fold_1").is_dir())
    if not dataset:
        raise PreparationError(f"give dataset=NAME, one of EmoBox's: {', '.join(known)}")
    if dataset not in known:
        raise PreparationError(
            f"EmoBox has no dataset {dataset!r}{did_you_mean(dataset, known)} in {metadata}; "
            f"its datasets: {', '.join(known)}"
        )
    return metadata / dataset


def _check_options(options):
    """Dataset, fold and demographics, before anything is read."""
    if not options["metadata"]:
        manifests.check_data_folder(options["data_folder"], CORPUS.folder)
    count = n_folds(**options)
    if not 1 <= options["fold"] <= count:
        raise PreparationError(
            f"EmoBox's {options['dataset']} has {count} fold{'s' * (count > 1)} (fold_1 ... "
            f"fold_{count}); fold {options['fold']} is not one of them"
        )
    if options["demographics"] and options["dataset"] != "cremad":
        raise PreparationError(
            f"demographics is CREMA-D's VideoDemographics.csv; {options['dataset']} does not "
            "read it: leave it out"
        )
    if options["demographics"] and not Path(options["demographics"]).is_file():
        raise PreparationError(
            f"demographics file not found: {options['demographics']}; give the "
            "VideoDemographics.csv of the CREMA-D release"
        )


def _label_map(options):
    folder = _dataset_folder(options)
    for name in LABEL_MAP_FILES:
        if (folder / name).is_file():
            return folder / name, json.loads((folder / name).read_text())
    raise PreparationError(f"{folder / LABEL_MAP_FILES[0]} not found: restore the EmoBox data/ "
                           "folder")


def _class_code(name):
    """The recipe's class code of an EmoBox class name.

    Example
    -------
    >>> _class_code("Happy"), _class_code("Surprised"), _class_code("pain, groan")
    ('hap', 'sur', 'pain_groan')
    """
    return CLASS_CODES.get(name) or re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _fold_files(options):
    """``{split: path}`` of the fold's lists: train, test and, where EmoBox has one, valid."""
    dataset, fold = options["dataset"], options["fold"]
    folder = _dataset_folder(options) / f"fold_{fold}"
    files = {split: folder / f"{dataset}_{split}_fold_{fold}.jsonl"
             for split in ("train", "valid", "test")}
    for split in ("train", "test"):
        if not files[split].is_file():
            raise PreparationError(f"{files[split]} not found: restore the EmoBox data/ folder")
    return {split: path for split, path in files.items() if path.is_file()}


def _read_lines(options):
    """``{key: line}`` of the fold's lists, each line with its ``split``, the label checked."""
    map_path, label_map = _label_map(options)
    lines, outside, malformed = {}, {}, []
    for split, path in _fold_files(options).items():
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                key, emo, _ = line["key"], line["emo"], line["wav"]
            except (json.JSONDecodeError, KeyError, TypeError):
                malformed.append(f"{path}:{number}")
                continue
            if key in lines:
                raise PreparationError(
                    f"{key} is listed twice ({lines[key]['split']} and {split} of "
                    f"{path.parent}); restore the EmoBox data/ folder"
                )
            if emo not in label_map:
                outside.setdefault(emo, f"{path}:{number}")
            lines[key] = {**line, "split": split}
    if malformed:
        raise PreparationError(
            f"{len(malformed)} line(s) are not JSON objects with key, wav and emo: "
            f"{_first(malformed)}; restore the EmoBox data/ folder"
        )
    if outside:
        listing = ", ".join(f"{emo!r} (first at {where})" for emo, where in outside.items())
        raise PreparationError(
            f"labels outside {map_path}: {listing}; add them to the label map or restore the "
            "EmoBox data/ folder"
        )
    return lines, label_map


def _classes(options):
    """The class codes the fold uses, the native order first (see the module docstring)."""
    lines, label_map = _read_lines(options)
    used = {_class_code(label_map[line["emo"]]) for line in lines.values()}
    in_map_order = dict.fromkeys(_class_code(name) for name in label_map.values())
    return ([code for code in CLASS_ORDER if code in used]
            + [code for code in in_map_order if code in used and code not in CLASS_ORDER])


def _first(items):
    """The first ``SHOWN`` items, joined, and how many more."""
    more = len(items) - SHOWN
    return ", ".join(map(str, items[:SHOWN])) + (f" and {more} more" if more > 0 else "")


def _read_utterances(data_folder, options, classes):
    """The fold's utterances, after every check of metadata against keys and wav files."""
    dataset = options["dataset"]
    lines, label_map = _read_lines(options)
    prefix = f"{dataset}-"
    bad_keys = [key for key in lines if not key.startswith(prefix)]
    if bad_keys:
        raise PreparationError(
            f"{len(bad_keys)} key(s) of EmoBox's {dataset} fold {options['fold']} do not start "
            f"with {prefix!r}: {_first(bad_keys)}; restore the EmoBox data/ folder"
        )
    _check_audio(data_folder, lines, options)
    speakers = _speakers_genders(lines, options, data_folder)
    utterances = {}
    for key, line in lines.items():
        spk, gender = speakers[key]
        utterances[key] = {
            "wav": str(data_folder / line["wav"]),
            "emo": _class_code(label_map[line["emo"]]),
            "gender": gender,
            "spk": spk,
            "session": options["fold"] if line["split"] == "test" else 0,
            "split": line["split"],
        }
    n_unknown = sum(entry["gender"] == UNKNOWN for entry in utterances.values())
    if n_unknown == len(utterances):
        logger.warning(
            "EmoBox %s: no utterance has a known gender, so stage 0 trains on emotion alone "
            "(its gender loss has nothing to learn from)", dataset)
    elif n_unknown:
        logger.warning("EmoBox %s: %d of %d utterances have no known gender; stage 0's gender "
                       "loss leaves them out", dataset, n_unknown, len(utterances))
    return utterances, {"unknown_gender": n_unknown}


def _check_audio(data_folder, lines, options):
    """Every wav against its metadata line; one error line per kind of disagreement."""
    cut = next((line for line in lines.values() if float(line.get("start_time") or 0) > 0),
               None)
    if cut is not None:
        raise PreparationError(
            f"EmoBox's {options['dataset']} lists segments of longer recordings ({cut['key']} "
            f"starts at {cut['start_time']} s in {cut['wav']}); the recipe reads whole files: "
            "cut the segments to wav files and list those"
        )
    problems = {"missing": [], "unreadable": [], "samples": [], "rate": []}
    for line in lines.values():
        path = data_folder / line["wav"]
        if not path.is_file():
            problems["missing"].append(line["wav"])
            continue
        try:
            info = audio_info(path)
        except AudioError:
            problems["unreadable"].append(line["wav"])
            continue
        if "num_frame" in line and info.n_samples != round(float(line["num_frame"])):
            problems["samples"].append(
                f"{line['wav']} ({info.n_samples} in the file, {round(float(line['num_frame']))}"
                " in the metadata)")
        if "sample_rate" in line and info.sample_rate != int(line["sample_rate"]):
            problems["rate"].append(
                f"{line['wav']} ({info.sample_rate} Hz in the file, {line['sample_rate']} Hz in "
                "the metadata)")
    n = len(lines)
    what = {
        "missing": "are missing",
        "unreadable": "cannot be read as audio (video or compressed files: extract their audio "
                      "to the listed path)",
        "samples": "hold other sample counts than the metadata's num_frame",
        "rate": "have other sample rates than the metadata's sample_rate",
    }
    found = [f"{len(items)} of {n} wav files {what[kind]}: {_first(items)}"
             for kind, items in problems.items() if items]
    if found:
        raise PreparationError(
            f"EmoBox's {options['dataset']} fold {options['fold']} metadata and the files under "
            f"{data_folder} disagree (download each dataset into downloads/ as EmoBox's README "
            "says, the paths as in the metadata):\n  " + "\n  ".join(found)
        )


def _speakers_genders(lines, options, data_folder):
    """``{key: (speaker, gender)}`` by the dataset's ``KEY_RULES`` entry, else unknown."""
    dataset = options["dataset"]
    rule = KEY_RULES.get(dataset)
    if rule is None:
        logger.info("EmoBox %s: the keys name no speaker or gender; both are unknown", dataset)
        return dict.fromkeys(lines, (UNKNOWN, UNKNOWN))
    prefix = len(dataset) + 1
    found = {key: rule.speaker_gender(key[prefix:], line["wav"]) for key, line in lines.items()}
    off = [key for key, value in found.items() if value is None]
    if off:
        raise PreparationError(
            f"{len(off)} key(s) of EmoBox's {dataset} do not follow its naming "
            f"({dataset}-{rule.example}), so speaker and gender cannot be read from them: "
            f"{_first(off)}; restore the EmoBox data/ folder"
        )
    if dataset == "cremad":
        genders = _cremad_genders(options, data_folder)
        found = {key: (spk, genders.get(spk, UNKNOWN)) for key, (spk, _) in found.items()}
    return found


def _cremad_genders(options, data_folder):
    """CREMA-D actor -> gender from ``VideoDemographics.csv``; empty (logged) when absent."""
    path = Path(options["demographics"] or data_folder / CREMAD_DEMOGRAPHICS)
    if not path.is_file():
        logger.warning(
            "CREMA-D's VideoDemographics.csv is not at %s: the genders are unknown; give "
            "demographics=PATH for stage 0's gender task", path)
        return {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"ActorID", "Sex"} <= set(reader.fieldnames or ()):
            raise PreparationError(f"{path} lacks the columns ActorID and Sex; give the "
                                   "VideoDemographics.csv of the CREMA-D release")
        return {row["ActorID"].strip(): SEX_TO_GENDER.get(row["Sex"].strip(), UNKNOWN)
                for row in reader}


def _split(utterances, options):
    """Test = the fold's test list; valid = the official list, else drawn from train."""
    parts = {split: {} for split in manifests.SPLITS}
    for key, entry in utterances.items():
        parts[entry["split"]][key] = entry
    if parts["valid"]:
        return parts
    train, valid_ratio, seed = parts["train"], options["valid_ratio"], options["seed"]
    dataset = options["dataset"]
    if all(entry["spk"] == UNKNOWN for entry in train.values()):
        logger.warning("EmoBox %s: the keys name no speaker, so the valid split is drawn by "
                       "utterance (%.0f %% of the train list)", dataset, 100 * valid_ratio)
        parts["train"], parts["valid"] = manifests.draw_validation(train, valid_ratio, seed)
        return parts
    kept, valid = manifests.draw_speakers(train, valid_ratio, seed)
    target = math.floor(valid_ratio * len(train) + 0.5)
    if len(valid) > MAX_VALID_SHARE * target:
        logger.warning(
            "EmoBox %s fold %d: whole speakers would give the valid split %d of %d training "
            "utterances (over %g times valid_ratio); it is drawn by utterance from every "
            "speaker instead", dataset, options["fold"], len(valid), len(train),
            MAX_VALID_SHARE)
        kept, valid = manifests.draw_validation(train, valid_ratio, seed)
    parts["train"], parts["valid"] = kept, valid
    return parts


CORPUS = manifests.Corpus(
    name="EmoBox", describe="EmoBox {dataset} fold {fold}",
    folder="the folder holding EmoBox's downloads/ (the metadata's wav paths are relative to it)",
    check=_check_options, classes=_classes, read=_read_utterances, split=_split,
    restore_hint="download it again into downloads/ as EmoBox's README says",
    facts=("unknown_gender",),
)


def main(argv=None):
    manifests.command_line(
        prepare_emobox, __doc__, argv,
        data_folder={"help": "the folder holding EmoBox's downloads/ (usually the checkout)"},
        fold={"help": "EmoBox's fold, 1 ... n_folds of the dataset"},
        dataset={"required": True, "help": "an EmoBox dataset, e.g. iemocap"},
        metadata={"help": "EmoBox's data/ folder (default: DATA_FOLDER/data)"},
        demographics={"help": "cremad: VideoDemographics.csv (default: "
                              "DATA_FOLDER/downloads/cremad/VideoDemographics.csv)"},
    )


if __name__ == "__main__":
    main()
