"""The one reader and writer of GMP label files (docs/design.md, Data contract).

A label file holds one line per utterance: its id, then one k-means cluster id per
encoder frame, space separated. Beside it, ``<name>.json`` records where the labels
come from (layer, k, k-means model, frame totals). Both are written atomically,
the label file first.
"""

import json
import logging
from pathlib import Path

import numpy as np

from lobes.models.frames import SAMPLE_RATE, n_frames
from lobes.utils.io import atomic_write, write_json_atomic

logger = logging.getLogger(__name__)

REQUIRED_META_KEYS = ("layer", "k", "kmeans_model")
RERUN_HINT = "re-run extract_gmp.py for this manifest"


class LabelMismatchError(ValueError):
    """Raised when GMP labels do not fit the utterances or frames they are used for."""


def meta_path_of(label_path):
    """Path of the metadata JSON beside a label file.

    Example
    -------
    >>> str(meta_path_of("gmp/train_k64.km"))
    'gmp/train_k64.json'
    """
    return Path(label_path).with_suffix(".json")


def expected_frame_counts(manifest):
    """Frames each manifest utterance yields: ``n_frames(round(duration * 16000))``.

    Example
    -------
    >>> expected_frame_counts({"a": {"duration": 1.0}, "b": {"duration": 0.045}})
    {'a': 49, 'b': 2}
    """
    return {
        utt_id: n_frames(round(float(entry["duration"]) * SAMPLE_RATE))
        for utt_id, entry in manifest.items()
    }


def _first_few(ids, count=5):
    ids = list(ids)
    shown = ", ".join(str(utt_id) for utt_id in ids[:count])
    return f"{shown}{' ...' if len(ids) > count else ''} ({len(ids)} in all)"


def write_label_file(path, labels, meta):
    """Write a GMP label file and, after it, its metadata JSON, both atomically.

    Arguments
    ---------
    path : str or Path
        Label file to write (its metadata goes to ``meta_path_of(path)``).
    labels : dict
        ``{utt_id: int array (n_frames,)}``, written in the dict's order.
    meta : dict
        Must hold ``layer``, ``k`` (clusters) and ``kmeans_model`` (its path); any
        further keys are stored as given. ``n_utterances`` and ``n_frames`` are added.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "train_k4.km"
    >>> write_label_file(path, {"a": np.array([0, 3]), "b": np.array([1])},
    ...                  {"layer": 6, "k": 4, "kmeans_model": "km4.npz"})
    >>> print(path.read_text(), end="")
    a 0 3
    b 1
    >>> read_label_meta(path)["n_frames"]
    3
    """
    path = Path(path)
    missing_keys = [key for key in REQUIRED_META_KEYS if key not in meta]
    if missing_keys:
        raise ValueError(f"label metadata for {path} lacks {missing_keys}")
    if path.suffix == ".json":
        raise ValueError(f"{path}: a label file may not end in .json (its metadata does)")
    n_clusters = int(meta["k"])
    total_frames = 0
    with atomic_write(path) as handle:
        for utt_id, frame_labels in labels.items():
            utt_id = str(utt_id)
            if not utt_id or any(char.isspace() for char in utt_id):
                raise ValueError(f"{path}: utterance id {utt_id!r} is empty or holds whitespace")
            frame_labels = np.asarray(frame_labels)
            if frame_labels.ndim != 1 or len(frame_labels) == 0:
                raise ValueError(
                    f"{path}: {utt_id} needs a non-empty 1-D label array, got shape "
                    f"{frame_labels.shape}"
                )
            if not np.issubdtype(frame_labels.dtype, np.integer):
                raise ValueError(f"{path}: labels of {utt_id} are {frame_labels.dtype}, not ints")
            if frame_labels.min() < 0 or frame_labels.max() >= n_clusters:
                raise ValueError(
                    f"{path}: {utt_id} has labels outside 0..{n_clusters - 1} (k={n_clusters})"
                )
            handle.write(f"{utt_id} {' '.join(map(str, frame_labels.tolist()))}\n")
            total_frames += len(frame_labels)
    write_json_atomic(
        meta_path_of(path),
        {**meta, "n_utterances": len(labels), "n_frames": total_frames},
    )
    logger.info("wrote %s: %d utterances, %d frames", path, len(labels), total_frames)


def read_label_file(path):
    """Read a GMP label file into ``{utt_id: int64 array}`` (file order).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    LabelMismatchError
        Naming the file and line of a malformed line or repeated id.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "l.km"
    >>> _ = path.write_text("a 0 3\\nb 1\\n")
    >>> read_label_file(path)
    {'a': array([0, 3]), 'b': array([1])}
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"GMP label file {path} does not exist: {RERUN_HINT}")
    labels = {}
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            utt_id, tokens = fields[0], fields[1:]
            if not tokens:
                raise LabelMismatchError(f"{path} line {line_number}: {utt_id} has no labels")
            try:
                frame_labels = np.array([int(token) for token in tokens], dtype=np.int64)
            except ValueError:
                raise LabelMismatchError(
                    f"{path} line {line_number}: labels of {utt_id} are not all integers"
                ) from None
            if frame_labels.min() < 0:
                raise LabelMismatchError(f"{path} line {line_number}: negative label for {utt_id}")
            if utt_id in labels:
                raise LabelMismatchError(f"{path} line {line_number}: {utt_id} appears twice")
            labels[utt_id] = frame_labels
    return labels


def read_label_meta(path):
    """Read the metadata JSON beside the label file ``path``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "l.km"
    >>> write_label_file(path, {"a": [1]}, {"layer": 6, "k": 2, "kmeans_model": "m.npz"})
    >>> read_label_meta(path)["layer"]
    6
    """
    meta_path = meta_path_of(path)
    if not meta_path.exists():
        raise FileNotFoundError(
            f"metadata {meta_path} of GMP label file {path} does not exist: {RERUN_HINT}"
        )
    with open(meta_path) as handle:
        return json.load(handle)


def check_labels_against_manifest(labels, manifest, label_path, tolerance=1):
    """Check that every manifest utterance has labels of about the right length.

    Arguments
    ---------
    labels : dict
        ``{utt_id: labels}`` as from ``read_label_file``.
    manifest : dict
        SpeechBrain manifest ``{utt_id: {"duration": seconds, ...}}``.
    label_path : str or Path
        The label file, named in errors.
    tolerance : int
        Frames a label count may differ from ``n_frames(round(duration * 16000))``.

    Raises
    ------
    LabelMismatchError
        Naming the file and the missing ids or the first utterances off by more
        than ``tolerance``.

    Example
    -------
    >>> manifest = {"a": {"duration": 1.0}}
    >>> check_labels_against_manifest({"a": np.zeros(48)}, manifest, "x.km")
    >>> check_labels_against_manifest({"a": np.zeros(47)}, manifest, "x.km")
    Traceback (most recent call last):
    ...
    lobes.gmp.labels.LabelMismatchError: GMP label file x.km: 1 utterances have label counts \
off by more than 1 frame: a (expected 49 frames, found 47): re-run extract_gmp.py for this manifest
    """
    missing = [utt_id for utt_id in manifest if utt_id not in labels]
    if missing:
        raise LabelMismatchError(
            f"GMP label file {label_path} has no labels for {_first_few(missing)} manifest "
            f"utterances: {RERUN_HINT}"
        )
    expected = expected_frame_counts(manifest)
    wrong = [
        f"{utt_id} (expected {expected[utt_id]} frames, found {len(labels[utt_id])})"
        for utt_id in manifest
        if abs(len(labels[utt_id]) - expected[utt_id]) > tolerance
    ]
    if wrong:
        shown = ", ".join(wrong[:3]) + (" ..." if len(wrong) > 3 else "")
        raise LabelMismatchError(
            f"GMP label file {label_path}: {len(wrong)} utterances have label counts off by "
            f"more than {tolerance} frame{'s' if tolerance != 1 else ''}: {shown}: {RERUN_HINT}"
        )


def fit_labels_to_frames(frame_labels, n_frames_out, tolerance=1):
    """Pad (repeating the last label) or trim labels to ``n_frames_out`` frames.

    Raises
    ------
    LabelMismatchError
        If the lengths differ by more than ``tolerance``.

    Example
    -------
    >>> fit_labels_to_frames(np.array([4, 5]), 3)
    array([4, 5, 5])
    >>> fit_labels_to_frames(np.array([4, 5, 6]), 2)
    array([4, 5])
    """
    frame_labels = np.asarray(frame_labels)
    difference = len(frame_labels) - int(n_frames_out)
    if abs(difference) > tolerance:
        raise LabelMismatchError(
            f"{len(frame_labels)} labels for {n_frames_out} frames: more than {tolerance} "
            f"apart; {RERUN_HINT}"
        )
    if difference > 0:
        return frame_labels[:n_frames_out]
    if difference < 0:
        return np.concatenate([frame_labels, np.repeat(frame_labels[-1:], -difference)])
    return frame_labels
