"""What a prediction is and how it is shown, for every backend (torch, ONNX runtime, the app).

Both recognizers (``lobes.deploy.inference.EmotionRecognizer`` on torch,
``lobes.deploy.onnx_runtime.OnnxEmotionRecognizer`` on onnxruntime) read a clip through
``read_clip``, chunk long audio with ``chunk_bounds``, return ``EmotionPrediction`` and are shown
by ``result_record``, ``format_table`` and ``plot_emotion_track``, so that ``gmptl-classify
--backend torch|onnx`` and ``gmptl-app`` accept, refuse and print alike. This module imports
numpy and soundfile only (matplotlib when a figure is drawn): never torch.
"""

from typing import NamedTuple

import numpy as np

from lobes.data.audio import read_waveform
from lobes.models.frames import FRAME_SHIFT, RECEPTIVE_FIELD, SAMPLE_RATE, TooShortError

# A chunk of ``k * FRAME_SHIFT`` samples plus this overlap yields exactly ``k`` frames that sit
# on the frame grid of the whole file.
CHUNK_OVERLAP = RECEPTIVE_FIELD - FRAME_SHIFT


class EmotionPrediction(NamedTuple):
    """The result for one utterance.

    ``label``: the predicted emotion; ``probabilities``: ``(n_classes,)`` softmax of the
    utterance scores; ``frame_scores``: ``(n_frames, n_classes)`` scores of each 20 ms frame
    (same scale as the utterance scores; their softmax gives per-frame probabilities,
    ``frame_times`` their times). Arrays are torch tensors from ``EmotionRecognizer`` and numpy
    arrays from ``OnnxEmotionRecognizer``; ``np.asarray`` reads both.
    """

    label: str
    probabilities: object
    frame_scores: object


def frame_times(n_frames):
    """Centre time in seconds of each 20 ms HuBERT frame (frame ``i`` covers samples
    ``320 i .. 320 i + 400``), as a numpy array.

    Example
    -------
    >>> frame_times(3).round(4).tolist()
    [0.0125, 0.0325, 0.0525]
    """
    return (np.arange(n_frames) * FRAME_SHIFT + RECEPTIVE_FIELD / 2) / SAMPLE_RATE


def chunk_bounds(n_samples, chunk_frames):
    """``(start, end)`` sample bounds of the chunks a long waveform is encoded in.

    Each chunk starts on the frame grid and overlaps the next by 80 samples, so that the
    chunks' frames, concatenated, are the frames of the whole waveform
    (``lobes.models.frames.n_frames(n_samples)`` of them), each computed from the same 400 samples.

    Arguments
    ---------
    n_samples : int
        Length of the waveform (at least 400 samples).
    chunk_frames : int
        Frames per chunk (the chunk length is ``320 * chunk_frames`` samples, plus 80).

    Example
    -------
    >>> chunk_bounds(1100, 2)
    [(0, 720), (640, 1100)]
    >>> from lobes.models.frames import n_frames
    >>> sum(n_frames(end - start) for start, end in chunk_bounds(1100, 2)) == n_frames(1100)
    True
    """
    step = chunk_frames * FRAME_SHIFT
    return [
        (start, min(start + step + CHUNK_OVERLAP, n_samples))
        for start in range(0, n_samples - RECEPTIVE_FIELD + 1, step)
    ]


def chunk_frames_of(chunk_seconds):
    """Frames per encoder chunk for ``chunk_seconds`` (at least one).

    Example
    -------
    >>> chunk_frames_of(30.0)
    1500
    """
    return max(1, round(chunk_seconds * SAMPLE_RATE / FRAME_SHIFT))


def check_utterance_lengths(n_samples):
    """Raise ``TooShortError`` when an utterance of a batch is shorter than one frame.

    Example
    -------
    >>> check_utterance_lengths(np.array([400, 16000]))
    >>> check_utterance_lengths(np.array([399]))
    Traceback (most recent call last):
    ...
    lobes.models.frames.TooShortError: an utterance of 399 samples is shorter than one HuBERT \
frame (400 samples = 25 ms at 16 kHz)
    """
    shortest = int(n_samples.min())
    if shortest < RECEPTIVE_FIELD:
        raise TooShortError(
            f"an utterance of {shortest} samples is shorter than one HuBERT frame "
            f"({RECEPTIVE_FIELD} samples = 25 ms at 16 kHz)"
        )


def read_clip(path):
    """Read an audio file for classification: ``read_waveform`` (16 kHz mono, any rate or
    channel count), refusing clips shorter than one frame.

    Raises
    ------
    lobes.data.audio.AudioError
        If the file is missing, corrupt or empty.
    lobes.models.frames.TooShortError
        If it holds fewer than 400 samples at 16 kHz.

    Example
    -------
    >>> import tempfile, pathlib, soundfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "short.wav"
    >>> soundfile.write(path, np.zeros(300), 16000)
    >>> read_clip(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lobes.models.frames.TooShortError: ...short.wav holds 300 samples at 16 kHz, fewer than one...
    """
    waveform = read_waveform(path)
    if len(waveform) < RECEPTIVE_FIELD:
        raise TooShortError(
            f"{path} holds {len(waveform)} samples at 16 kHz, fewer than one HuBERT frame "
            f"({RECEPTIVE_FIELD} samples = 25 ms)"
        )
    return waveform


def softmax(scores):
    """Softmax over the last axis of a numpy array (float64 inside, float32 out).

    Example
    -------
    >>> softmax(np.array([[0.0, 0.0], [0.0, np.log(3.0)]])).tolist()
    [[0.5, 0.5], [0.25, 0.75]]
    """
    scores = np.asarray(scores, dtype=np.float64)
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def result_record(path, prediction, classes, with_frames=False):
    """One file's result as a JSON-ready dict.

    Example
    -------
    >>> prediction = EmotionPrediction("sad", np.array([0.25, 0.75]), np.zeros((3, 2)))
    >>> result_record("a.wav", prediction, ["neu", "sad"])
    {'file': 'a.wav', 'label': 'sad', 'probabilities': {'neu': 0.25, 'sad': 0.75}, 'n_frames': 3}
    """
    probabilities = np.asarray(prediction.probabilities, dtype=np.float64).tolist()
    record = {
        "file": str(path),
        "label": prediction.label,
        "probabilities": dict(zip(classes, probabilities, strict=True)),
        "n_frames": len(prediction.frame_scores),
    }
    if with_frames:
        record["frame_scores"] = [
            [round(score, 4) for score in frame]
            for frame in np.asarray(prediction.frame_scores, dtype=np.float64).tolist()
        ]
    return record


def format_table(records, classes):
    """The results as a text table: file, label, one probability column per class.

    Example
    -------
    >>> record = {"file": "a.wav", "label": "sad", "probabilities": {"neu": 0.25, "sad": 0.75}}
    >>> print(format_table([record], ["neu", "sad"]))
    file   label      neu     sad
    a.wav  sad      0.250   0.750
    """
    width = max([len("file"), *(len(record["file"]) for record in records)])
    lines = [f"{'file':<{width}}  {'label':<6}" + "".join(f"{name:>8}" for name in classes)]
    for record in records:
        lines.append(
            f"{record['file']:<{width}}  {record['label']:<6}"
            + "".join(f"{record['probabilities'][name]:>8.3f}" for name in classes)
        )
    return "\n".join(lines)


def plot_emotion_track(waveform, prediction, classes, path, title=""):
    """Save a figure of the waveform and the frame-level emotion probabilities as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lobes.utils.io import save_figure

    waveform = np.asarray(waveform)
    frame_probabilities = softmax(prediction.frame_scores)
    times = frame_times(len(frame_probabilities))
    fig, (wave_axis, track_axis) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    wave_axis.plot(np.arange(len(waveform)) / SAMPLE_RATE, waveform, linewidth=0.5, color="0.3")
    wave_axis.set_ylabel("waveform")
    probabilities = ", ".join(
        f"{name} {p:.2f}" for name, p in zip(
            classes, np.asarray(prediction.probabilities).tolist(), strict=True)
    )
    wave_axis.set_title(f"{title}\nutterance: {prediction.label} ({probabilities})")
    for index, name in enumerate(classes):
        track_axis.plot(times, frame_probabilities[:, index], label=name)
    track_axis.set_ylim(0, 1)
    track_axis.set_xlabel("time (s)")
    track_axis.set_ylabel("frame probability")
    track_axis.legend(loc="upper right", ncol=len(classes), fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
