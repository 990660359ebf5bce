#!/usr/bin/env python3
"""GMP-TL stage 0: gender-augmented multi-task fine-tuning of HuBERT.

The encoder is fine-tuned with a pooled emotion head and a pooled gender head,
``loss = CE(emotion) + lambda_gender * CE(gender)``, the gender term over the utterances whose
gender is known (a corpus without genders trains on emotion alone, and the log says so). The
selected encoder (best valid UA) is exported to ``<output_folder>/encoder.ckpt``: the GMP
extraction clusters its features.

Usage::

    python train_mtl.py hparams/stage0_mtl.yaml --data_folder=PATH/IEMOCAP_full_release
"""

import logging

import speechbrain as sb
from steps import TABLE

from lobes.data.datasets import GENDERS, load_manifest
from lobes.runner.recipe import load_recipe, run_main
from lobes.training.brain import EncoderBrain, gender_loss

logger = logging.getLogger(__name__)


class MTLBrain(EncoderBrain):
    """Emotion + gender multi-task fine-tuning; selection on valid emotion UA."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        hidden, frame_counts = self.modules.encoder(wavs, wav_lens)
        pooled = self.modules.pooling(hidden[-1], frame_counts)
        return self.modules.emotion_head(pooled), self.modules.gender_head(pooled)

    def compute_objectives(self, predictions, batch, stage):
        emotion_logits, gender_logits = predictions
        emotions = batch.emo_encoded.data.reshape(-1)
        genders = batch.gender_encoded.data.reshape(-1)
        emotion_loss = self.hparams.emotion_loss(emotion_logits, emotions)
        gender_term, gender_hits, known_genders = gender_loss(gender_logits, genders)
        self.count("emotion_acc", (emotion_logits.argmax(1) == emotions).sum(), len(emotions))
        self.count("gender_acc", gender_hits, known_genders)
        if stage != sb.Stage.TRAIN:
            self.report.append(batch.id, self.hparams.emotion_loss.scores(emotion_logits), emotions)
        return emotion_loss + self.hparams.lambda_gender * gender_term


def main(argv=None):
    hparams, run_opts = load_recipe(TABLE, __file__, argv)
    if hparams is None:  # finished earlier with the same settings
        return
    train = load_manifest(hparams["train_annotation"])
    n_known = sum(entry["gender"] in GENDERS for entry in train.values())
    if not n_known:
        logger.warning("no training utterance has a known gender (the corpus does not give "
                       "them): stage 0 trains on emotion alone")
    elif n_known < len(train):
        logger.info("%d of %d training utterances have a known gender; the gender loss leaves "
                    "the others out", n_known, len(train))
    MTLBrain.train_and_test(hparams, run_opts)


if __name__ == "__main__":
    run_main(main)
