"""Running an exported model with onnxruntime only: ``OnnxEmotionRecognizer`` (no torch).

``gmptl-export RUN_FOLDER MODEL_FOLDER --onnx`` (``lobes.deploy.onnx_export``) adds two graphs to
a model folder:

- ``model.onnx``: ``waveform`` ``(batch, samples)`` float32 16 kHz and ``lengths`` ``(batch,)``
  int64 valid samples in; ``probabilities`` ``(batch, classes)``, ``frame_scores``
  ``(batch, frames, classes)`` (the frame-level emotion track, zero on padding frames),
  ``frame_counts`` ``(batch,)`` and ``frames`` ``(batch, frames, dim)`` (the pooling input) out;
  batch and length are dynamic;
- ``head.onnx``: ``frames`` and ``frame_counts`` in; ``probabilities`` and ``frame_scores`` out
  (the pooling and emotion head alone).

What the graphs cannot do is done here in numpy around the sessions, mirroring
``EmotionRecognizer.encode_frames``: padding a list of waveforms into a batch, refusing clips
shorter than one frame, and encoding an utterance longer than ``chunk_seconds`` chunk by chunk
(``model.onnx`` on each chunk, the chunks' frames joined, then ``head.onnx`` pools them as one
utterance). Reading files, refusing and printing are shared with the torch path
(``lobes.deploy.predictions``). This module imports numpy, soundfile and onnxruntime only.
"""

import json
from pathlib import Path

import numpy as np

from lobes.deploy.predictions import (
    CHUNK_OVERLAP,
    EmotionPrediction,
    check_utterance_lengths,
    chunk_bounds,
    chunk_frames_of,
    read_clip,
)
from lobes.models.frames import FRAME_SHIFT

MODEL_FILE = "model.onnx"
HEAD_FILE = "head.onnx"
# the metadata keys gmptl-export --onnx writes into model.onnx
CLASSES_KEY, CHUNK_KEY = "emotion_classes", "chunk_seconds"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "the onnx backend needs onnxruntime: pip install '.[onnx]' (or the pinned "
            f"onnxruntime of requirements.txt) ({error})"
        ) from error
    return onnxruntime


class OnnxEmotionRecognizer:
    """Speech emotion recognition with the ONNX graphs of a model folder, on the CPU.

    Arguments
    ---------
    model_folder : str or Path
        A folder written by ``gmptl-export ... --onnx`` (``model.onnx`` and ``head.onnx``).
    threads : int, optional
        Intra-op threads of onnxruntime (default: its own choice, all cores).
    chunk_seconds : float, optional
        Encode utterances longer than this chunk by chunk (default: the exported model's
        ``chunk_seconds``, as the torch path).

    Example
    -------
    >>> import tempfile
    >>> from lobes.deploy.export import write_model_folder
    >>> from lobes.deploy.onnx_export import export_onnx
    >>> from lobes.fixtures.encoders import write_tiny_hubert
    >>> folder = write_model_folder(Path(tempfile.mkdtemp()) / "model", write_tiny_hubert(
    ...     tempfile.mkdtemp(), n_layers=1, dim=8), classes=["neu", "sad"])
    >>> _ = export_onnx(folder)  # what gmptl-export --onnx adds
    >>> recognizer = OnnxEmotionRecognizer(folder)
    >>> [len(p.frame_scores) for p in recognizer.classify_waveforms(
    ...     [np.zeros(16000, np.float32), np.ones(8000, np.float32)])]
    [49, 24]
    """

    def __init__(self, model_folder, threads=None, chunk_seconds=None):
        model_folder = Path(model_folder)
        paths = [model_folder / MODEL_FILE, model_folder / HEAD_FILE]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found: export the run with `gmptl-export RUN_FOLDER "
                    f"{model_folder} --onnx` to run it without torch, or use --backend torch"
                )
        ort = _onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session, self.head_session = (
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for path in paths
        )
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.classes = json.loads(metadata[CLASSES_KEY])
        self.chunk_seconds = float(chunk_seconds or metadata[CHUNK_KEY])

    @property
    def chunk_frames(self):
        """Frames per encoder chunk."""
        return chunk_frames_of(self.chunk_seconds)

    def _encode(self, waveform, lengths):
        names = ("probabilities", "frame_scores", "frame_counts", "frames")
        return dict(zip(names, self.session.run(
            list(names), {"waveform": waveform.astype(np.float32, copy=False),
                          "lengths": lengths.astype(np.int64)}), strict=True))

    def classify_batch(self, waveform, lengths):
        """Classify a padded batch.

        Arguments
        ---------
        waveform : numpy.ndarray
            ``(batch, samples)`` 16 kHz waveforms.
        lengths : numpy.ndarray
            ``(batch,)`` valid samples of each.

        Returns
        -------
        labels : list of str
        probabilities : numpy.ndarray
            ``(batch, classes)``.
        frame_scores : numpy.ndarray
            ``(batch, max_frames, classes)``, zero on padding frames.
        frame_counts : numpy.ndarray
            ``(batch,)``.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        check_utterance_lengths(lengths)
        chunk_samples = self.chunk_frames * FRAME_SHIFT + CHUNK_OVERLAP
        if waveform.shape[1] <= chunk_samples:
            out = self._encode(waveform, lengths)
            probabilities, frame_scores = out["probabilities"], out["frame_scores"]
            frame_counts = out["frame_counts"]
        else:
            frames = [None] * len(waveform)
            short = np.flatnonzero(lengths <= chunk_samples)
            if len(short):
                longest = int(lengths[short].max())
                out = self._encode(waveform[short, :longest], lengths[short])
                for index, utterance, count in zip(short, out["frames"], out["frame_counts"],
                                                   strict=True):
                    frames[index] = utterance[:count]
            for index in np.flatnonzero(lengths > chunk_samples):
                chunks = []
                for start, end in chunk_bounds(int(lengths[index]), self.chunk_frames):
                    out = self._encode(waveform[index:index + 1, start:end],
                                       np.array([end - start]))
                    chunks.append(out["frames"][0, : int(out["frame_counts"][0])])
                frames[index] = np.concatenate(chunks)
            frame_counts = np.array([len(f) for f in frames], dtype=np.int64)
            padded = np.zeros((len(frames), frame_counts.max(), frames[0].shape[1]), np.float32)
            for index, utterance in enumerate(frames):
                padded[index, : len(utterance)] = utterance
            probabilities, frame_scores = self.head_session.run(
                ["probabilities", "frame_scores"],
                {"frames": padded, "frame_counts": frame_counts},
            )
        labels = [self.classes[index] for index in probabilities.argmax(axis=-1)]
        return labels, probabilities, frame_scores, frame_counts

    def classify_waveforms(self, waveforms):
        """Classify 1-D 16 kHz waveforms of any lengths, padded into one batch: one
        ``EmotionPrediction`` (numpy arrays) each."""
        lengths = np.array([len(waveform) for waveform in waveforms], dtype=np.int64)
        batch = np.zeros((len(waveforms), lengths.max()), dtype=np.float32)
        for index, waveform in enumerate(waveforms):
            batch[index, : len(waveform)] = waveform
        labels, probabilities, frame_scores, counts = self.classify_batch(batch, lengths)
        return [EmotionPrediction(label, probs, scores[:count])
                for label, probs, scores, count in zip(labels, probabilities, frame_scores,
                                                       counts, strict=True)]

    def classify_file(self, path):
        """Classify one audio file (any sample rate and channel count), as
        ``EmotionRecognizer.classify_file`` does.

        Raises
        ------
        lobes.data.audio.AudioError
            If the file is missing, corrupt or empty.
        lobes.models.frames.TooShortError
            If it holds fewer than 400 samples at 16 kHz.
        """
        return self.classify_waveforms([read_clip(path)])[0]
