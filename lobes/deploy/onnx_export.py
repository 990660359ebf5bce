"""``gmptl-export ... --onnx``: add ``model.onnx`` and ``head.onnx`` to a model folder, checked.

The graphs (described in ``lobes.deploy.onnx_runtime``) are traced from the folder's own
``EmotionRecognizer`` by ``torch.onnx.export`` with the TorchScript-based exporter
(``dynamo=False``) at opset ``OPSET``, with dynamic batch and length. Our choice: the
torch.export-based exporter (``dynamo=True``, torch 2.9) stops on the encoder lobe's
data-dependent check (a clip shorter than one frame) and, with that check removed, still
refuses dynamic shapes: the model's Python branches make it guard on a batch of more than one
clip and on clips of at least 720 samples (two frames), so one graph could not serve a single
clip or a one-frame clip. The traced graphs reproduce every encoder family of
``hparams/encoders/`` (HuBERT, WavLM with its relative position bias, wav2vec 2.0; group-norm
and layer-norm front ends; stable layer norm) at any batch and length, a single clip and a
one-frame clip included, which the check below verifies on each export.

Two things the lobe does in Python are written as tensor operations for the trace:

- a group-norm front end (base models) is run on each utterance alone by the lobe; here its
  first layer normalises each utterance over its own valid samples with a mask (the later
  layers only see valid samples at valid frames), which gives the same frames;
- clips shorter than one frame and long utterances (chunking) are handled around the session
  (``OnnxEmotionRecognizer``), as the graph cannot raise or loop.

The export checks itself: ``OnnxEmotionRecognizer`` and ``EmotionRecognizer`` classify the same
generated waveforms (several lengths in one padded batch, a one-frame clip, and a clip encoded
in chunks); utterance and frame probabilities must agree within ``TOLERANCE`` and the labels
must be equal (unless torch's two best classes are themselves within ``TOLERANCE``, a tie), or
``OnnxCheckError`` names the difference and no graph is left in the folder. The opset, the
exporter, the versions and the differences seen go into the model card.
"""

import datetime
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lobes.deploy.inference import EmotionRecognizer
from lobes.deploy.onnx_runtime import CHUNK_KEY, CLASSES_KEY, HEAD_FILE, MODEL_FILE
from lobes.models.frames import frame_mask

# Our choice: opset 17 is the newest the TorchScript-based exporter of torch 2.9 writes with
# LayerNormalization as one node; onnxruntime >= 1.14 runs it.
OPSET = 17
EXPORTER = "torch.onnx.export, TorchScript-based (dynamo=False)"
# The bound on probabilities (utterance and frame) between onnxruntime and torch.
TOLERANCE = 1e-4
# Lengths (samples) of the check's generated waveforms: one padded batch of three (padding,
# different lengths), one frame alone, and one clip encoded in two chunks (CHECK_CHUNK_SECONDS).
CHECK_BATCH = (23999, 8000, 12345)
CHECK_ONE_FRAME = 400
CHECK_CHUNKED = 40000
CHECK_CHUNK_SECONDS = 1.5


class OnnxCheckError(RuntimeError):
    """The exported graphs disagree with torch; the message names the difference."""


def _masked_group_norm_front_end(feature_encoder, encoder, input_values):
    """HF's feature encoder with its first (group-norm) layer normalising each utterance over
    its own valid samples: the traced equivalent of ``SSLEncoder``'s per-utterance front end."""
    counts = encoder._sample_counts
    first = feature_encoder.conv_layers[0]
    hidden = first.conv(input_values[:, None])
    kernel, stride = first.conv.kernel_size[0], first.conv.stride[0]
    valid = torch.div(counts - kernel, stride, rounding_mode="floor") + 1
    mask = (torch.arange(hidden.shape[-1], device=hidden.device)[None, :] < valid[:, None])
    mask = mask.to(hidden.dtype)[:, None, :]
    n_valid = mask.sum(dim=-1, keepdim=True)
    mean = (hidden * mask).sum(dim=-1, keepdim=True) / n_valid
    variance = (((hidden - mean) * mask) ** 2).sum(dim=-1, keepdim=True) / n_valid
    norm = first.layer_norm
    hidden = (hidden - mean) / torch.sqrt(variance + norm.eps)
    hidden = first.activation(hidden * norm.weight[None, :, None] + norm.bias[None, :, None])
    for layer in feature_encoder.conv_layers[1:]:
        hidden = layer(hidden)
    return hidden


class _Head(torch.nn.Module):
    """Pooling and emotion head: frames and counts in, probabilities and frame scores out."""

    def __init__(self, recognizer):
        super().__init__()
        self.pooling = recognizer.mods.pooling
        self.emotion_head = recognizer.mods.emotion_head
        self.emotion_loss = recognizer.hparams.emotion_loss

    def forward(self, frames, frame_counts):
        scores = self.emotion_loss.scores(self.emotion_head(self.pooling(frames, frame_counts)))
        frame_scores = self.emotion_loss.scores(self.emotion_head(frames))
        padding = ~frame_mask(frame_counts, frames.shape[1])
        frame_scores = frame_scores.masked_fill(padding.unsqueeze(-1), 0.0)
        return torch.softmax(scores, dim=-1), frame_scores


class _Model(torch.nn.Module):
    """Encoder, pooling and head: waveform and lengths in (``model.onnx``)."""

    def __init__(self, recognizer):
        super().__init__()
        self.encoder = recognizer.mods.encoder
        self.head = _Head(recognizer)

    def forward(self, waveform, lengths):
        hidden, frame_counts = self.encoder(waveform, lengths.to(waveform.dtype)
                                            / waveform.shape[1])
        frames = hidden[-1]
        probabilities, frame_scores = self.head(frames, frame_counts)
        return probabilities, frame_scores, frame_counts, frames


def _export(module, inputs, path, input_names, output_names, dynamic_axes):
    with torch.no_grad():
        torch.onnx.export(
            module, inputs, str(path), dynamo=False, opset_version=OPSET,
            input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
        )


def _set_metadata(path, metadata):
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def check_waveforms(seed=0):
    """The check's generated waveforms: tones gliding in noise, one list per call of
    ``classify_waveforms`` (a padded batch, a one-frame clip, a chunked clip).

    Example
    -------
    >>> [[len(w) for w in group] for group in check_waveforms()]
    [[23999, 8000, 12345], [400], [40000]]
    """
    rng = np.random.default_rng(seed)

    def clip(n_samples):
        t = np.arange(n_samples) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (120 + 80 * rng.random()) * t * (1 + 0.3 * t))
        return (tone + 0.05 * rng.standard_normal(n_samples)).astype(np.float32)

    return [[clip(n) for n in CHECK_BATCH], [clip(CHECK_ONE_FRAME)], [clip(CHECK_CHUNKED)]]


def compare_backends(torch_recognizer, onnx_recognizer, tolerance=TOLERANCE):
    """Classify ``check_waveforms`` with both recognizers; return the largest differences.

    Returns
    -------
    dict
        ``max_probability_difference``, ``max_frame_probability_difference``,
        ``n_utterances``.

    Raises
    ------
    OnnxCheckError
        Naming the utterance (length) and what differs: frame counts, label, probabilities.
    """
    from lobes.deploy.predictions import softmax

    worst = {"max_probability_difference": 0.0, "max_frame_probability_difference": 0.0,
             "n_utterances": 0}
    for waveforms in check_waveforms():
        expected = torch_recognizer.classify_waveforms(waveforms)
        got = onnx_recognizer.classify_waveforms(waveforms)
        for waveform, ours, theirs in zip(waveforms, got, expected, strict=True):
            where = f"generated clip of {len(waveform)} samples"
            reference = theirs.probabilities.numpy()
            if len(ours.frame_scores) != len(theirs.frame_scores):
                raise OnnxCheckError(f"{where}: onnxruntime gives {len(ours.frame_scores)} "
                                     f"frames, torch {len(theirs.frame_scores)}")
            difference = float(np.abs(ours.probabilities - reference).max())
            frame_difference = float(np.abs(
                softmax(ours.frame_scores) - softmax(theirs.frame_scores.numpy())).max())
            top_two = np.sort(reference)[-2:]
            if ours.label != theirs.label and top_two[1] - top_two[0] > tolerance:
                raise OnnxCheckError(f"{where}: onnxruntime says {ours.label}, torch says "
                                     f"{theirs.label} (probabilities {ours.probabilities} "
                                     f"against {reference})")
            for name, value in (("class probabilities", difference),
                                ("frame probabilities", frame_difference)):
                if not value <= tolerance:
                    raise OnnxCheckError(f"{where}: the {name} of onnxruntime and torch differ "
                                         f"by {value:.2e}, more than {tolerance:g}")
            worst["max_probability_difference"] = max(worst["max_probability_difference"],
                                                      difference)
            worst["max_frame_probability_difference"] = max(
                worst["max_frame_probability_difference"], frame_difference)
            worst["n_utterances"] += 1
    return worst


def _model_card_section(report):
    return f"""
## ONNX

`model.onnx` (waveform and lengths in; class probabilities, the frame-level emotion track, frame
counts and the encoder's frames out; dynamic batch and length) and `head.onnx` (pooling and head
alone, for audio longer than `chunk_seconds`, encoded in chunks) were exported on
{report["date"]} by {report["exporter"]}, opset {report["opset"]} (torch {report["torch"]},
onnx {report["onnx"]}; checked with onnxruntime {report["onnxruntime"]}). Run without torch:

    gmptl-classify THIS_FOLDER speech.wav --backend onnx

Export check, onnxruntime against torch on {report["n_utterances"]} generated clips of different
lengths (one encoded in chunks): largest difference of the class probabilities
{report["max_probability_difference"]:.1e}, of the frame probabilities
{report["max_frame_probability_difference"]:.1e} (bound {TOLERANCE:g}); labels equal.
"""


def export_onnx(model_folder, tolerance=TOLERANCE):
    """Add ``model.onnx`` and ``head.onnx`` to a model folder written by ``gmptl-export``, after
    checking them against torch; record the export in the model card.

    Returns
    -------
    dict
        What went into the model card: opset, exporter, versions, seconds, differences.

    Raises
    ------
    OnnxCheckError
        If onnxruntime and torch disagree (nothing is left in the folder).
    ImportError
        If onnx or onnxruntime is missing (``pip install '.[onnx]'``).
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"--onnx needs onnx and onnxruntime: pip install '.[onnx]' "
                          f"({error})") from error
    from lobes.deploy.onnx_runtime import OnnxEmotionRecognizer

    model_folder = Path(model_folder)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".onnx.", dir=model_folder) as building:
        building = Path(building)
        recognizer = EmotionRecognizer.from_hparams(
            source=str(model_folder), savedir=str(building / "savedir")
        )
        recognizer.mods.eval()
        encoder = recognizer.mods.encoder
        if encoder.group_norm_front_end:
            feature_encoder = encoder.model.feature_extractor
            feature_encoder.forward = functools.partial(
                _masked_group_norm_front_end, feature_encoder, encoder)
        example = torch.from_numpy(np.stack([np.resize(w, 16000) for w in
                                             check_waveforms(seed=1)[0][:2]]))
        lengths = torch.tensor([16000, 9000])
        _export(_Model(recognizer), (example, lengths), building / MODEL_FILE,
                ["waveform", "lengths"],
                ["probabilities", "frame_scores", "frame_counts", "frames"],
                {"waveform": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                 "probabilities": {0: "batch"}, "frame_scores": {0: "batch", 1: "frames"},
                 "frame_counts": {0: "batch"}, "frames": {0: "batch", 1: "frames"}})
        with torch.no_grad():
            frames = _Model(recognizer)(example, lengths)[3]
        _export(_Head(recognizer), (frames, torch.tensor([49, 27])), building / HEAD_FILE,
                ["frames", "frame_counts"], ["probabilities", "frame_scores"],
                {"frames": {0: "batch", 1: "frames"}, "frame_counts": {0: "batch"},
                 "probabilities": {0: "batch"}, "frame_scores": {0: "batch", 1: "frames"}})
        chunk_seconds = float(getattr(recognizer.hparams, "chunk_seconds", 30.0))
        _set_metadata(building / MODEL_FILE, {
            CLASSES_KEY: json.dumps(recognizer.classes), CHUNK_KEY: json.dumps(chunk_seconds),
            "exporter": EXPORTER, "opset": str(OPSET)})
        export_seconds = time.perf_counter() - started
        # the reference is the folder loaded afresh, as users load it (not the recognizer
        # rewritten for the trace); both run with short chunks, so that chunking is checked too
        reference = EmotionRecognizer.from_hparams(
            source=str(model_folder), savedir=str(building / "savedir"),
            overrides={"chunk_seconds": CHECK_CHUNK_SECONDS})
        differences = compare_backends(
            reference, OnnxEmotionRecognizer(building, chunk_seconds=CHECK_CHUNK_SECONDS),
            tolerance)
        for name in (MODEL_FILE, HEAD_FILE):
            (building / name).replace(model_folder / name)
    report = {
        "date": datetime.date.today().isoformat(), "exporter": EXPORTER, "opset": OPSET,
        "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__, "export_seconds": round(export_seconds, 2),
        "check_seconds": round(time.perf_counter() - started - export_seconds, 2),
        **differences,
    }
    card = model_folder / "README.md"
    card.write_text(card.read_text() + _model_card_section(report))
    return report
