"""The data pipeline shared by every stage: manifests in, SpeechBrain datasets out.

Manifests follow ``docs/design.md``, section "Data contract" (``wav``, ``duration``, ``emo``,
``gender``, ``spk``, ``session``). Every stage builds its datasets with ``dataio_prepare``; GMP
label files, when a stage needs them, come in as extra per-scale items checked against the
manifests.
"""

import json
import logging
import os
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.dataio.sampler import DynamicBatchSampler, ReproducibleRandomSampler

from lobes.data.audio import AudioError, audio_info, read_audio
from lobes.data.manifests import UNKNOWN, PreparationError
from lobes.gmp.labels import check_labels_against_manifest, fit_labels_to_frames, read_label_file
from lobes.models.frames import RECEPTIVE_FIELD, SAMPLE_RATE, n_frames

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
GENDERS = ("F", "M")
# ``gender_encoded`` of an utterance whose gender is unknown: the ignore index of
# ``torch.nn.functional.cross_entropy``, so that losses leave it out.
UNKNOWN_GENDER_INDEX = -100
MIN_DURATION = RECEPTIVE_FIELD / SAMPLE_RATE
# A wav whose length differs from its manifest entry by more than this was replaced or cut.
DURATION_TOLERANCE = 0.01
# Fewer validation utterances than this draw a warning (our choice: one decision in ten).
MIN_VALID_UTTERANCES = 10


def load_manifest(path):
    """Read a JSON manifest (utterance id -> entry), with a clear error if it is missing.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> _ = path.write_text('{"u1": {"wav": "a.wav", "duration": 1.0}}')
    >>> load_manifest(path)["u1"]["duration"]
    1.0
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"manifest {path} not found: run the corpus preparation (e.g. iemocap_prepare.py) "
            "or set skip_prep: False"
        )
    with open(path) as handle:
        return json.load(handle)


def emotion_classes(manifest, preferred_order=None):
    """The emotion classes of a (training) manifest, in a stable order.

    ``preferred_order`` (e.g. ``[neu, hap, ang, sad]``) fixes the index of each class; classes
    of the data that it does not list are an error, so that heads size themselves from the data
    and never silently drop a class.

    Example
    -------
    >>> emotion_classes({"a": {"emo": "sad"}, "b": {"emo": "ang"}})
    ['ang', 'sad']
    >>> emotion_classes({"a": {"emo": "sad"}}, ["neu", "sad"])
    ['neu', 'sad']
    """
    found = sorted({entry["emo"] for entry in manifest.values()})
    if not preferred_order:
        return found
    unknown = sorted(set(found) - set(preferred_order))
    if unknown:
        raise ValueError(
            f"the manifest holds emotion classes {unknown} that emotion_classes "
            f"{list(preferred_order)} does not list: add them to emotion_classes in the hparams"
        )
    return list(preferred_order)


def make_label_encoder(classes, save_path=None):
    """A SpeechBrain ``CategoricalEncoder`` with ``classes`` at indices 0..n-1, in order.

    With ``save_path``, SpeechBrain's DDP-safe ``CategoricalEncoder.load_or_create`` makes the
    file: the main process loads it if it exists, or writes it (atomically), while the other
    ranks wait, then every rank reads it. An existing file is reused only when it holds exactly
    ``classes`` in this order; any other content stops with an error naming the file, so that
    a class list edited between runs is never silently replaced by the old one.

    Arguments
    ---------
    classes : list of str
        The class labels, in index order (e.g. ``emotion_classes`` of the hparams).
    save_path : str or pathlib.Path, optional
        The ``label_encoder.txt`` to load or create.

    Returns
    -------
    CategoricalEncoder
        Expecting ``len(classes)`` classes.

    Raises
    ------
    ValueError
        If ``save_path`` exists and holds another class list or order.

    Example
    -------
    >>> encoder = make_label_encoder(["neu", "hap", "ang", "sad"])
    >>> encoder.encode_label("ang"), encoder.decode_ndim(3)
    (2, 'sad')
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "label_encoder.txt"
    >>> make_label_encoder(["neu", "sad"], path).encode_label("sad")
    1
    >>> make_label_encoder(["sad", "neu"], path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    ValueError: ...label_encoder.txt holds the classes ['neu', 'sad'], not ['sad', 'neu']: ...
    """
    classes = list(classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f"the class list {classes} repeats a class")
    encoder = _AtomicSaveEncoder()
    if save_path is None:
        encoder.update_from_iterable(classes)
    else:
        save_path = Path(save_path)
        save_path.parent.mkdir(parents=True, exist_ok=True)
        encoder.load_or_create(save_path, from_iterables=[classes])
        expected = {label: index for index, label in enumerate(classes)}
        if encoder.lab2ind != expected or getattr(encoder, "unk_label", None) is not None:
            found = [label for label, _ in sorted(encoder.lab2ind.items(), key=lambda x: x[1])]
            raise ValueError(
                f"{save_path} holds the classes {found}, not {classes}: it was written by a "
                "run with another emotion_classes. Delete it (or use another output_folder) "
                "to start over with the new classes, or set emotion_classes back"
            )
    encoder.expect_len(len(classes))
    return encoder


class _AtomicSaveEncoder(CategoricalEncoder):
    """``CategoricalEncoder`` whose ``save`` writes a temporary file and renames it.

    SpeechBrain's ``save`` writes in place: a job killed mid-write leaves a truncated file,
    which ``load_if_possible`` may accept (a partial class list) or fail on with a ``KeyError``.
    """

    def save(self, path):
        """Write the encoding to ``path`` atomically (same file format as SpeechBrain's)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            super().save(temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    @staticmethod
    def _load_literal(path):
        # A file cut before its extras (a non-atomic save killed part-way) parses without
        # "starting_index": a ValueError makes load_or_create rebuild it instead of crashing.
        lab2ind, ind2lab, extras = CategoricalEncoder._load_literal(path)
        if "starting_index" not in extras:
            raise ValueError(f"{path} is truncated")
        return lab2ind, ind2lab, extras


def screen_audio(manifest, split, policy="error"):
    """Check every wav of a manifest before training starts: never a crash hours into a run.

    Files may vanish, break or be replaced after the preparation checked them (a file whose
    length no longer matches its manifest ``duration`` counts as bad). ``policy="error"``
    raises one ``AudioError`` listing every bad file; ``policy="skip"`` drops them with a
    warning and a count. Headers are read, and the samples of floating-point files (the only
    ones that can hold NaN or infinity); 16-bit PCM corpora cost one header read per file.

    Returns
    -------
    dict
        The manifest without the bad files.

    Example
    -------
    >>> manifest = {"gone": {"wav": "/nonexistent.wav", "duration": 1.0}}
    >>> screen_audio(manifest, "train", policy="skip")
    {}
    """
    if policy not in ("error", "skip"):
        raise ValueError(f"bad_audio must be 'error' or 'skip', got {policy!r}")
    problems = {}
    for utt_id, entry in manifest.items():
        try:
            info = audio_info(entry["wav"], check_samples=True)
        except AudioError as error:
            problems[utt_id] = str(error)
            continue
        if abs(info.duration - entry["duration"]) > DURATION_TOLERANCE:
            problems[utt_id] = (
                f"{entry['wav']} lasts {info.duration:.3f} s but the manifest says "
                f"{entry['duration']:.3f} s: the file changed since the preparation"
            )
    if not problems:
        return manifest
    listing = "\n".join(f"  {utt_id}: {message}" for utt_id, message in problems.items())
    if policy == "error":
        raise AudioError(
            f"{len(problems)} of {len(manifest)} {split} utterances have unusable audio:\n"
            f"{listing}\nRestore the files, re-run the preparation, or set bad_audio: skip to "
            "train without them."
        )
    logger.warning("%s: skipping %d of %d utterances with unusable audio (bad_audio: skip):\n%s",
                   split, len(problems), len(manifest), listing)
    return {utt_id: entry for utt_id, entry in manifest.items() if utt_id not in problems}


def _drop_too_short(dataset, split):
    before = len(dataset)
    # valid and test are sorted by duration: batches then carry little padding
    sort_key = None if split == "train" else "duration"
    dataset = dataset.filtered_sorted(key_min_value={"duration": MIN_DURATION}, sort_key=sort_key)
    if len(dataset) < before:
        logger.warning(
            "%s: dropped %d utterance(s) shorter than one HuBERT frame (%.3f s)",
            split, before - len(dataset), MIN_DURATION,
        )
    return dataset


def add_gmp_items(dataset, manifest, label_paths):
    """Add one padded item ``gmp_<s>`` per scale: the frame labels of ``label_paths[s]``.

    Every label file is checked against the manifest (every utterance present, frame counts
    within one of ``n_frames``); labels are then fitted to the exact frame count of the audio.
    """
    item_names = []
    for scale_index, label_path in enumerate(label_paths):
        labels = read_label_file(label_path)
        check_labels_against_manifest(labels, manifest, label_path)
        item_name = f"gmp_{scale_index}"

        def gmp_pipeline(utt_id, sig, labels=labels):
            fitted = fit_labels_to_frames(labels[utt_id], n_frames(len(sig)))
            return torch.as_tensor(fitted, dtype=torch.long)

        dataset.add_dynamic_item(gmp_pipeline, takes=["id", "sig"], provides=item_name)
        item_names.append(item_name)
    return item_names


@sb.utils.data_pipeline.takes("wav")
@sb.utils.data_pipeline.provides("sig")
def audio_pipeline(wav):
    """The waveform item ``sig`` of every dataset: 16 kHz mono through ``read_audio``."""
    return read_audio(wav)


def audio_dataset(manifest):
    """A dataset of ``id`` and ``sig`` only, over a manifest dict (feature extraction).

    Example
    -------
    >>> dataset = audio_dataset({"u1": {"wav": "a.wav", "duration": 1.0}})
    >>> len(dataset)
    1
    """
    dataset = DynamicItemDataset(manifest)
    dataset.add_dynamic_item(audio_pipeline)
    dataset.set_output_keys(["id", "sig"])
    return dataset


def check_split_sizes(manifests):
    """Stop on an empty split; warn when the validation split is too small to select on.

    Example
    -------
    >>> try:
    ...     check_split_sizes({"train": {"a": {}}, "valid": {}, "test": {"b": {}}})
    ... except PreparationError as error:
    ...     print(str(error).split(":")[0])
    the valid split is empty
    """
    for split, manifest in manifests.items():
        if not manifest:
            hint = ("model selection needs validation utterances; raise valid_ratio (each "
                    "training speaker gives round(valid_ratio * n))" if split == "valid"
                    else "check the preparation's folds and classes")
            raise PreparationError(f"the {split} split is empty: {hint}")
    if len(manifests["valid"]) < MIN_VALID_UTTERANCES:
        logger.warning(
            "the valid split holds %d utterances (under %d): checkpoint selection on it is "
            "noisy; raise valid_ratio for a steadier choice", len(manifests["valid"]),
            MIN_VALID_UTTERANCES,
        )


def dataio_prepare(hparams, gmp_label_paths=None):
    """Build the train, valid and test datasets of one fold.

    Arguments
    ---------
    hparams : dict
        Needs ``train_annotation``, ``valid_annotation``, ``test_annotation``,
        ``save_folder``; optionally ``emotion_classes`` (fixed class order) and ``bad_audio``
        (``error``, the default, or ``skip``: see ``screen_audio``).
    gmp_label_paths : dict, optional
        ``{split: [label file of each scale]}``; adds ``gmp_0``, ``gmp_1``... items.

    Returns
    -------
    datasets : dict
        ``{"train": ..., "valid": ..., "test": ...}`` ``DynamicItemDataset`` objects with
        outputs ``id``, ``sig``, ``emo_encoded``, ``gender_encoded`` (``UNKNOWN_GENDER_INDEX``
        for an ``unknown`` gender) and the GMP items.
    label_encoder : CategoricalEncoder
        The emotion label encoder (also saved as ``<save_folder>/label_encoder.txt``).
    """
    manifests = {
        split: screen_audio(load_manifest(hparams[f"{split}_annotation"]), split,
                            hparams.get("bad_audio", "error"))
        for split in SPLITS
    }
    check_split_sizes(manifests)
    classes = emotion_classes(manifests["train"], hparams.get("emotion_classes"))
    if hparams.get("n_emotions", len(classes)) != len(classes):
        raise ValueError(
            f"n_emotions is {hparams['n_emotions']} but the data has {len(classes)} emotion "
            f"classes {classes}: set n_emotions: {len(classes)} in the hparams"
        )
    label_encoder = make_label_encoder(classes, Path(hparams["save_folder"]) / "label_encoder.txt")
    gender_encoder = make_label_encoder(GENDERS)

    @sb.utils.data_pipeline.takes("emo", "gender")
    @sb.utils.data_pipeline.provides("emo_encoded", "gender_encoded")
    def label_pipeline(emo, gender):
        yield torch.LongTensor([label_encoder.encode_label(emo)])
        yield torch.LongTensor([UNKNOWN_GENDER_INDEX if gender == UNKNOWN
                                else gender_encoder.encode_label(gender)])

    datasets = {}
    for split in SPLITS:
        dataset = DynamicItemDataset(manifests[split])
        dataset.add_dynamic_item(audio_pipeline)
        dataset.add_dynamic_item(label_pipeline)
        outputs = ["id", "sig", "emo_encoded", "gender_encoded"]
        if gmp_label_paths is not None:
            outputs += add_gmp_items(dataset, manifests[split], gmp_label_paths[split])
        dataset.set_output_keys(outputs)
        datasets[split] = _drop_too_short(dataset, split)
    return datasets, label_encoder


def train_loader_options(hparams, train_set):
    """Loader options for training: length-bucketed dynamic batches or plain random batches.

    With ``dynamic_batching: True`` (our default), SpeechBrain's ``DynamicBatchSampler`` groups
    utterances of similar duration into batches of at most ``max_batch_length`` seconds of
    audio, so little of each batch is padding; batches come in random order each epoch. Either
    sampler draws from the ``seed`` hparam (SpeechBrain's own defaults would give every seed of
    a study the same batch order).

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> dataset = DynamicItemDataset({f"u{index}": {"duration": 1.0 + index % 3}
    ...                               for index in range(12)})
    >>> hparams = {"dynamic_batching": True, "max_batch_length": 4.0, "num_buckets": 2,
    ...            "seed": 7, "num_workers": 0}
    >>> first = list(train_loader_options(hparams, dataset)["batch_sampler"])
    >>> first == list(train_loader_options(hparams, dataset)["batch_sampler"])
    True
    >>> first == list(train_loader_options({**hparams, "seed": 8}, dataset)["batch_sampler"])
    False
    """
    if not hparams.get("dynamic_batching", False):
        sampler = ReproducibleRandomSampler(train_set, seed=hparams["seed"])
        return {"batch_size": hparams["batch_size"], "sampler": sampler,
                **worker_options(hparams)}
    sampler = DynamicBatchSampler(
        train_set,
        max_batch_length=hparams["max_batch_length"],
        num_buckets=hparams["num_buckets"],
        length_func=lambda entry: entry["duration"],
        shuffle=True,
        batch_ordering="random",
        max_batch_ex=hparams.get("max_batch_size"),
        seed=hparams["seed"],
    )
    return {"batch_sampler": sampler, **worker_options(hparams)}


def eval_loader_options(hparams):
    """Loader options for valid and test: fixed batch size (order does not matter)."""
    return {"batch_size": hparams.get("eval_batch_size", hparams["batch_size"]),
            **worker_options(hparams)}


def worker_options(hparams):
    """``num_workers`` loading processes, and pinned memory when batches go to a GPU.

    Example
    -------
    >>> worker_options({"num_workers": 2})["num_workers"]
    2
    """
    return {"num_workers": int(hparams.get("num_workers", 0)),
            "pin_memory": torch.cuda.is_available()}
