"""Using a trained model: ``EmotionRecognizer``, a SpeechBrain ``Pretrained`` interface.

A model folder written by ``gmptl-export`` (``lobes/deploy/export.py``) holds everything inference
needs: ``hyperparams.yaml``, the fine-tuned encoder (``encoder/``, a HF ``save_pretrained``
folder loaded through the same ``SSLEncoder`` as training), the pooling and emotion head
weights and the label encoder. It loads offline, from any place::

    from lobes.deploy.inference import EmotionRecognizer

    recognizer = EmotionRecognizer.from_hparams(source="my_model", savedir="my_model_cache")
    prediction = recognizer.classify_file("speech.wav")
    prediction.label, prediction.probabilities, prediction.frame_scores.shape

The utterance probabilities are the softmax of the margin-free scores (scaled cosines for
GMP-TL stage 2, logits for the baseline): the ``score_<class>`` columns that training-time
evaluation writes to ``predictions.csv``. The frame-level emotion track applies the same
emotion head to every 20 ms frame before pooling and scales it like the utterance scores.
"""

import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch
from speechbrain.inference.interfaces import Pretrained

from lobes.data.audio import read_audio
from lobes.deploy import predictions
from lobes.deploy.predictions import (
    CHUNK_OVERLAP,
    EmotionPrediction,
    check_utterance_lengths,
    chunk_bounds,
    chunk_frames_of,
    read_clip,
)
from lobes.models.frames import FRAME_SHIFT, frame_mask

__all__ = ["CHUNK_OVERLAP", "EmotionBatch", "EmotionPrediction", "EmotionRecognizer",
           "chunk_bounds", "frame_times", "quiet_library_logs"]


def quiet_library_logs():
    """Keep SpeechBrain's info messages and the HF progress bars off a command's output.

    For the command-line entry points: it also sets ``SB_LOG_LEVEL`` for this process, so that
    SpeechBrain loggers created later (when the hparams import their modules) stay quiet too.

    Example
    -------
    >>> environment = dict(os.environ)
    >>> quiet_library_logs()
    >>> logging.getLogger("speechbrain.utils.parameter_transfer").level >= logging.WARNING
    True
    >>> os.environ.clear(); os.environ.update(environment)  # the process goes on (a test suite)
    """
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    os.environ["SB_LOG_LEVEL"] = "ERROR"
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("speechbrain"):
            logging.getLogger(name).setLevel(logging.ERROR)


def frame_times(n_frames):
    """Centre time in seconds of each 20 ms HuBERT frame, as a tensor
    (``lobes.deploy.predictions.frame_times``).

    Example
    -------
    >>> frame_times(3)
    tensor([0.0125, 0.0325, 0.0525])
    """
    return torch.from_numpy(predictions.frame_times(n_frames)).float()


class EmotionBatch(NamedTuple):
    """The result for a batch.

    ``labels``: predicted emotion per utterance; ``probabilities``: ``(batch, n_classes)``;
    ``frame_scores``: ``(batch, max_frames, n_classes)``, zero on padding frames;
    ``frame_counts``: ``(batch,)`` real frames per utterance.
    """

    labels: list
    probabilities: torch.Tensor
    frame_scores: torch.Tensor
    frame_counts: torch.Tensor

    def per_utterance(self):
        """Split into one ``EmotionPrediction`` per utterance (tensors on the CPU)."""
        return [
            EmotionPrediction(label, probabilities.cpu(), frame_scores[:count].cpu())
            for label, probabilities, frame_scores, count in zip(
                self.labels, self.probabilities, self.frame_scores, self.frame_counts.tolist(),
                strict=True,
            )
        ]


class EmotionRecognizer(Pretrained):
    """Speech emotion recognition with a GMP-TL (or baseline) model folder.

    Load with ``EmotionRecognizer.from_hparams(source=MODEL_FOLDER, savedir=...)``, where
    ``MODEL_FOLDER`` is a local folder written by ``gmptl-export``; nothing is downloaded.

    Long inputs are encoded in chunks of ``chunk_seconds`` (hparams, default 30 s) so that the
    encoder's memory stays bounded: the chunks are encoded separately (a frame near a chunk edge
    does not see the context beyond it, and each chunk is normalised on its own, an approximation
    of encoding the whole file at once), then the frames of all chunks are pooled together, as
    one utterance. The waveform and the frames of the whole input are held in memory (for
    HuBERT large about 0.25 GB and 0.75 GB per hour of audio).

    Example
    -------
    >>> import tempfile
    >>> from lobes.fixtures.encoders import write_tiny_hubert
    >>> from lobes.deploy.export import write_model_folder
    >>> model_folder = write_model_folder(
    ...     tempfile.mkdtemp(), write_tiny_hubert(tempfile.mkdtemp(), n_layers=1, dim=8),
    ...     classes=["neu", "sad"],
    ... )
    >>> recognizer = EmotionRecognizer.from_hparams(source=model_folder)
    >>> result = recognizer.classify_batch(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> len(result.labels), tuple(result.probabilities.shape), result.frame_counts.tolist()
    (2, (2, 2), [49, 24])
    """

    MODULES_NEEDED = ["encoder", "pooling", "emotion_head"]
    HPARAMS_NEEDED = ["label_encoder", "emotion_loss", "emotion_classes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hparams.label_encoder.expect_len(len(self.hparams.emotion_classes))

    @classmethod
    def from_hparams(cls, source, hparams_file="hyperparams.yaml", overrides=None, **kwargs):
        """Load a model folder (see ``Pretrained.from_hparams``); ``source`` is a local folder.

        The hparams refer to the folder they are loaded from as ``model_folder``, so that the
        folder can be moved or copied anywhere.
        """
        overrides = dict(overrides or {})
        overrides.setdefault("model_folder", str(Path(source).resolve()))
        return super().from_hparams(source, hparams_file, overrides=overrides, **kwargs)

    @property
    def classes(self):
        """Emotion class names in score order."""
        encoder = self.hparams.label_encoder
        return encoder.decode_ndim(list(range(len(encoder))))

    @property
    def chunk_frames(self):
        """Frames per encoder chunk (``chunk_seconds`` of the hparams, default 30 s)."""
        return chunk_frames_of(getattr(self.hparams, "chunk_seconds", 30.0))

    def load_audio(self, path, savedir=None):
        """Read an audio file with the project's loader (16 kHz mono, any rate or channels)."""
        return read_audio(path)

    def encode_frames(self, wavs, wav_lens=None):
        """Last-layer frames of a batch, encoding long utterances chunk by chunk.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(batch, samples)`` 16 kHz waveforms.
        wav_lens : torch.Tensor
            Relative lengths in ``(0, 1]``; ``None`` means no padding.

        Returns
        -------
        frames : torch.Tensor
            ``(batch, max_frames, dim)``.
        frame_counts : torch.Tensor
            ``(batch,)`` real frames per utterance.
        """
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        wavs, wav_lens = wavs.to(self.device).float(), wav_lens.to(self.device)
        max_samples = wavs.shape[1]
        n_samples = torch.round(wav_lens * max_samples).long().clamp(max=max_samples)
        check_utterance_lengths(n_samples)
        chunk_samples = self.chunk_frames * FRAME_SHIFT + CHUNK_OVERLAP
        if max_samples <= chunk_samples:
            hidden, frame_counts = self.mods.encoder(wavs, wav_lens)
            return hidden[-1], frame_counts
        is_long = n_samples > chunk_samples
        frames_per_utterance = [None] * len(wavs)
        short_ids = torch.nonzero(~is_long).flatten().tolist()
        if short_ids:
            short_samples = int(n_samples[short_ids].max())
            hidden, counts = self.mods.encoder(
                wavs[short_ids, :short_samples], n_samples[short_ids] / short_samples
            )
            for index, frames, count in zip(short_ids, hidden[-1], counts.tolist(), strict=True):
                frames_per_utterance[index] = frames[:count]
        for index in torch.nonzero(is_long).flatten().tolist():
            frames_per_utterance[index] = self.encode_long(wavs[index, : n_samples[index]])
        frame_counts = torch.tensor([len(f) for f in frames_per_utterance], device=self.device)
        frames = torch.nn.utils.rnn.pad_sequence(frames_per_utterance, batch_first=True)
        return frames, frame_counts

    def encode_long(self, wav):
        """``(n_frames, dim)`` frames of one long 1-D waveform, one chunk at a time."""
        chunk_frames = []
        for start, end in chunk_bounds(len(wav), self.chunk_frames):
            hidden, counts = self.mods.encoder(wav[None, start:end])
            chunk_frames.append(hidden[-1][0, : int(counts[0])])
        return torch.cat(chunk_frames)

    def classify_batch(self, wavs, wav_lens=None):
        """Classify a batch of 16 kHz waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(batch, samples)`` (or ``(samples,)``) 16 kHz mono waveforms.
        wav_lens : torch.Tensor
            Relative lengths in ``(0, 1]``; ``None`` means no padding.

        Returns
        -------
        EmotionBatch
            Labels, utterance probabilities, per-frame scores and frame counts.
        """
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        with torch.no_grad(), self.inference_ctx:
            frames, frame_counts = self.encode_frames(wavs, wav_lens)
            pooled = self.mods.pooling(frames, frame_counts)
            scores = self.hparams.emotion_loss.scores(self.mods.emotion_head(pooled)).float()
            frame_scores = self.hparams.emotion_loss.scores(self.mods.emotion_head(frames))
            padding = ~frame_mask(frame_counts, frames.shape[1])
            frame_scores = frame_scores.float().masked_fill(padding.unsqueeze(-1), 0.0)
        labels = self.hparams.label_encoder.decode_ndim(scores.argmax(dim=-1).tolist())
        return EmotionBatch(labels, torch.softmax(scores, dim=-1), frame_scores, frame_counts)

    def classify_file(self, path):
        """Classify one audio file (any sample rate and channel count; see ``read_audio``).

        Returns
        -------
        EmotionPrediction
            The label, the class probabilities and the frame-level emotion track.

        Raises
        ------
        lobes.data.audio.AudioError
            If the file is missing, corrupt or empty.
        lobes.models.frames.TooShortError
            If it holds fewer than 400 samples at 16 kHz.
        """
        waveform = torch.from_numpy(read_clip(path))
        return self.classify_batch(waveform.unsqueeze(0)).per_utterance()[0]

    def classify_waveforms(self, waveforms):
        """Classify 1-D 16 kHz waveforms of any lengths (numpy arrays or tensors), padded into
        one batch: one ``EmotionPrediction`` each (the interface ``OnnxEmotionRecognizer``
        shares, used by ``gmptl-classify`` and ``gmptl-app``)."""
        waveforms = [torch.as_tensor(waveform) for waveform in waveforms]
        lengths = torch.tensor([len(waveform) for waveform in waveforms])
        batch = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)
        return self.classify_batch(batch, lengths / lengths.max()).per_utterance()

    def forward(self, wavs, wav_lens=None):
        """Run the classification (``classify_batch``)."""
        return self.classify_batch(wavs, wav_lens)
