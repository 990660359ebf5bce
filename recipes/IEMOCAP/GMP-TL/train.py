#!/usr/bin/env python3
"""GMP-TL stages 1 and 2, and the plain fine-tuning baseline.

- ``hparams/stage1.yaml``: GMP-guided frame-level fine-tuning. One linear frame head per GMP
  scale, loss ``sum_s w_s * CE(frame logits_s, GMP_s)`` over real frames only (plus
  ``alpha * CE(emotion)`` when ``alpha > 0``). Exports the encoder for stage 2.
- ``hparams/stage2.yaml``: utterance-level fine-tuning from the stage-1 encoder (SpeechBrain
  ``Pretrainer``), masked pooling and a cosine classifier trained with AM-Softmax.
- ``hparams/baseline.yaml``: the same encoder and pooling from the pre-trained HuBERT, a linear
  classifier and plain cross-entropy (SpeechBrain's IEMOCAP recipe method).

Usage::

    python train.py hparams/stage2.yaml --data_folder=PATH/IEMOCAP_full_release
"""

from pathlib import Path

import speechbrain as sb
from steps import TABLE

from lobes.gmp.labels import read_label_meta
from lobes.models.frames import frame_mask
from lobes.models.heads import multi_scale_frame_loss
from lobes.runner.recipe import load_recipe, run_main
from lobes.training.brain import EncoderBrain

SPLITS = ("train", "valid", "test")


class GMPBrain(EncoderBrain):
    """Stage 1: predict the frame-level GMPs of every scale; selection on valid frame accuracy."""

    selection_key = "frame_acc"

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        hidden, frame_counts = self.modules.encoder(wavs, wav_lens)
        frames = hidden[-1]
        emotion_logits = None
        if self.hparams.alpha > 0:
            emotion_logits = self.modules.emotion_head(self.modules.pooling(frames, frame_counts))
        return self.modules.frame_head(frames), frame_counts, emotion_logits

    def compute_objectives(self, predictions, batch, stage):
        logits_per_scale, frame_counts, emotion_logits = predictions
        labels_per_scale = [getattr(batch, f"gmp_{index}").data for index in self.scale_indices]
        loss = multi_scale_frame_loss(
            logits_per_scale, labels_per_scale, frame_counts, self.hparams.gmp_scale_weights
        )
        for name, logits, labels in zip(
            self.scale_names, logits_per_scale, labels_per_scale, strict=True
        ):
            n_frames_in_batch = min(logits.shape[1], labels.shape[1])
            mask = frame_mask(frame_counts.clamp(max=n_frames_in_batch), n_frames_in_batch)
            hits = (logits[:, :n_frames_in_batch].argmax(-1) == labels[:, :n_frames_in_batch])
            self.count(f"frame_acc_{name}", hits[mask].sum(), mask.sum())
            self.count("frame_acc", hits[mask].sum(), mask.sum())
        if emotion_logits is not None:
            emotions = batch.emo_encoded.data.reshape(-1)
            loss = loss + self.hparams.alpha * self.hparams.emotion_loss(emotion_logits, emotions)
            if stage != sb.Stage.TRAIN:
                scores = self.hparams.emotion_loss.scores(emotion_logits)
                self.report.append(batch.id, scores, emotions)
        return loss

    @property
    def scale_indices(self):
        return range(len(self.scale_names))

    @property
    def scale_names(self):
        return [f"L{layer}_K{k}" for layer, k in gmp_label_sets(vars(self.hparams))]


class EmotionBrain(EncoderBrain):
    """Stage 2 and the baseline: pooled utterance classifier; selection on valid UA."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        hidden, frame_counts = self.modules.encoder(wavs, wav_lens)
        return self.modules.emotion_head(self.modules.pooling(hidden[-1], frame_counts))

    def compute_objectives(self, outputs, batch, stage):
        emotions = batch.emo_encoded.data.reshape(-1)
        # AM-Softmax puts its margin in this training loss only; scores never carry it
        loss = self.hparams.emotion_loss(outputs, emotions)
        scores = self.hparams.emotion_loss.scores(outputs)
        self.count("emotion_acc", (scores.argmax(1) == emotions).sum(), len(emotions))
        if stage != sb.Stage.TRAIN:
            self.report.append(batch.id, scores, emotions)
        return loss


def gmp_label_sets(hparams):
    """The (layer, K) pairs of stage 1: ``gmp_layers`` x ``gmp_scales``."""
    return [(layer, k) for layer in hparams["gmp_layers"] for k in hparams["gmp_scales"]]


def gmp_label_files(hparams):
    """``{split: [label file per (layer, K)]}``, checked against the frame head sizes."""
    n_label_sets = len(gmp_label_sets(hparams))
    if len(hparams["gmp_scale_weights"]) != n_label_sets:
        raise ValueError(
            f"gmp_scale_weights {hparams['gmp_scale_weights']} needs one weight per GMP label "
            f"set ({n_label_sets}: gmp_layers {hparams['gmp_layers']} x gmp_scales "
            f"{hparams['gmp_scales']}): set it when changing gmp_scales"
        )
    head_sizes = hparams["frame_head"].n_outputs * len(hparams["gmp_layers"])
    files = {}
    for split in SPLITS:
        files[split] = []
        for (layer, k), head_size in zip(gmp_label_sets(hparams), head_sizes, strict=True):
            path = Path(hparams["gmp_folder"]) / f"{split}_L{layer}_K{k}.km"
            if not path.exists():
                raise FileNotFoundError(
                    f"GMP label file {path} not found: run extract_gmp.py with gmp_layers "
                    f"{hparams['gmp_layers']} and gmp_scales {hparams['gmp_scales']} first"
                )
            n_label_ids = int(read_label_meta(path)["k"])
            if n_label_ids != head_size:
                raise ValueError(
                    f"{path} holds {n_label_ids} label ids but the frame head has {head_size} "
                    "outputs: gmp_scales / gmp_gender_split differ from the GMP extraction"
                )
            files[split].append(path)
    return files


def main(argv=None):
    hparams, run_opts = load_recipe(TABLE, __file__, argv)
    if hparams is None:  # finished earlier with the same settings
        return
    brain_class = {"stage1": GMPBrain, "stage2": EmotionBrain, "baseline": EmotionBrain}[
        hparams["step"]
    ]
    label_files = None
    if hparams["step"] == "stage1":
        label_files = gmp_label_files(hparams)
        if hparams["alpha"] == 0:
            # unused parameters would stall DDP's gradient reduction
            del hparams["modules"]["emotion_head"], hparams["modules"]["pooling"]
    brain_class.train_and_test(hparams, run_opts, label_files)


if __name__ == "__main__":
    run_main(main)
