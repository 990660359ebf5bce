"""Stages 1 and 2 and the baseline: learning, parameter transfer, margin and padding."""

import json
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import speechbrain as sb
import torch
from recipe_helpers import RECIPE_DIR, recipe_module, tiny_encoder
from speechbrain.dataio.batch import PaddedBatch

from lobes.data.datasets import make_label_encoder
from lobes.gmp.labels import read_label_file
from lobes.models.encoder import SSLEncoder
from lobes.models.frames import n_frames
from lobes.models.heads import AMSoftmaxLoss, CosineHead, MultiScaleFrameHead

DEMO_SCALES = (8, 16, 32)  # hparams/demo.yaml
DEMO_LAYER = 2


def last_epoch_stats(train_log, split):
    """``{name: value}`` of ``split`` on the last epoch line of a SpeechBrain train log."""
    epoch_lines = [line for line in train_log.read_text().splitlines() if line.startswith("epoch")]
    part = epoch_lines[-1].split(f"{split} loss")[1].split(" - ")[0]
    stats = dict(re.findall(r"(\w+): ([-+.\deE]+)", f"loss{part}"))
    return {name: float(value) for name, value in stats.items()}


def test_stage1_frame_accuracy_rises_well_above_majority_cluster(cv_run):
    fold_dir = cv_run / "fold1"
    train_stats = last_epoch_stats(fold_dir / "stage1" / "train_log.txt", "train")
    test_stats = json.loads((fold_dir / "stage1" / "test_stats.json").read_text())
    for k in DEMO_SCALES:
        name = f"frame_acc_L{DEMO_LAYER}_K{k}"
        for split, accuracy in (("train", train_stats[name]), ("test", test_stats[name])):
            labels = np.concatenate(list(read_label_file(
                fold_dir / "gmp" / f"{split}_L{DEMO_LAYER}_K{k}.km").values()))
            majority_rate = Counter(labels.tolist()).most_common(1)[0][1] / len(labels)
            # train: the last epoch's running accuracy; test: held-out session, selected model
            assert accuracy > 1.4 * majority_rate, (
                f"{split} K={k}: frame accuracy {accuracy:.3f}, majority {majority_rate:.3f}"
            )
            if k == DEMO_SCALES[0]:
                assert accuracy > majority_rate + 0.1


def test_stage2_and_baseline_well_above_chance_on_a_held_out_session(cv_run):
    for system in ("stage2", "baseline"):
        metrics = json.loads((cv_run / "fold1" / system / "metrics.json").read_text())
        # 4 balanced classes: chance UA is 0.25
        assert metrics["UA"] > 0.45, f"{system}: test UA {metrics['UA']}"


def test_stage2_really_starts_from_stage1_weights(cv_run, demo_corpus_dir, demo_hubert_dir,
                                                  tmp_path):
    stage1_encoder = cv_run / "fold1" / "stage1" / "encoder.ckpt"
    output_folder = tmp_path / "stage2_lr0"
    # learning rates 0: the exported encoder is exactly what stage 2 started from
    command = [
        sys.executable, str(RECIPE_DIR / "train.py"), str(RECIPE_DIR / "hparams" / "stage2.yaml"),
        f"--data_folder={demo_corpus_dir}", *tiny_encoder(demo_hubert_dir),
        "--expected_utterances=0", "--skip_prep=True",
        f"--output_root={cv_run / 'fold1'}", f"--output_folder={output_folder}",
        f"--encoder_init={stage1_encoder}", "--number_of_epochs=1", "--lr=0.0",
        "--lr_encoder=0.0", "--max_batch_length=20",
    ]
    subprocess.run(command, check=True, capture_output=True)
    started_from = torch.load(output_folder / "encoder.ckpt", weights_only=True)
    stage1 = torch.load(stage1_encoder, weights_only=True)
    pretrained = SSLEncoder(demo_hubert_dir, tmp_path / "cache").state_dict()
    assert started_from.keys() == stage1.keys()
    assert all(torch.equal(started_from[key], stage1[key]) for key in stage1)
    # and stage 1 did move the transformer away from the pre-trained weights
    moved = [key for key in stage1 if "encoder.layers" in key
             and not torch.equal(stage1[key], pretrained[key])]
    assert moved


class FakeBatch:
    def __init__(self, ids, emotions):
        self.id = ids
        self.emo_encoded = sb.dataio.batch.PaddedData(emotions.reshape(-1, 1), None)


def test_am_softmax_margin_in_training_loss_only():
    emotion_brain = recipe_module("train").EmotionBrain
    loss_fn = AMSoftmaxLoss(margin=0.2, scale=30.0)
    label_encoder = make_label_encoder(["neu", "hap", "ang", "sad"])
    brain = emotion_brain(modules={"head": CosineHead(4, 4)},
                          hparams={"emotion_loss": loss_fn, "label_encoder": label_encoder})
    torch.manual_seed(0)
    cosines = torch.rand(6, 4) * 2 - 1
    emotions = torch.tensor([0, 1, 2, 3, 0, 1])
    batch = FakeBatch([f"u{i}" for i in range(6)], emotions)
    losses = {}
    for stage in (sb.Stage.TRAIN, sb.Stage.VALID):
        brain.on_stage_start(stage)
        losses[stage] = brain.compute_objectives(cosines, batch, stage)
    plain_ce = torch.nn.functional.cross_entropy(30.0 * cosines, emotions)
    assert losses[sb.Stage.TRAIN] > plain_ce + 0.1
    # the evaluation scores are the plain scaled cosines: no margin on the true class
    torch.testing.assert_close(brain.report.scores[0], 30.0 * cosines)


def test_padded_frames_leave_stage1_loss_unchanged(tiny_hubert_dir, tmp_path):
    gmp_brain = recipe_module("train").GMPBrain
    encoder = SSLEncoder(tiny_hubert_dir, tmp_path, freeze="none").eval()
    scales = [4, 8]
    brain = gmp_brain(
        modules={"encoder": encoder, "frame_head": MultiScaleFrameHead(32, scales)},
        hparams={"alpha": 0.0, "gmp_scale_weights": [1.0, 0.5], "gmp_layers": [3],
                 "gmp_scales": scales, "label_encoder": make_label_encoder(["neu", "sad"])},
    )
    generator = torch.Generator().manual_seed(0)
    lengths = [16000, 9000]
    examples = [
        {"id": f"u{i}", "sig": torch.randn(length, generator=generator),
         **{f"gmp_{s}": torch.randint(0, k, (n_frames(length),), generator=generator)
            for s, k in enumerate(scales)}}
        for i, length in enumerate(lengths)
    ]

    def loss_of(batch):
        brain.on_stage_start(sb.Stage.VALID)
        with torch.no_grad():
            return brain.compute_objectives(
                brain.compute_forward(batch, sb.Stage.VALID), batch, sb.Stage.VALID)

    batch = PaddedBatch(examples)
    reference = loss_of(batch)
    batch.sig.data[1, 9000:] = 10 * torch.randn(7000, generator=generator)  # padded samples
    for scale in range(len(scales)):  # labels on padded frames
        getattr(batch, f"gmp_{scale}").data[1, n_frames(9000):] = 1
    torch.testing.assert_close(loss_of(batch), reference, atol=1e-5, rtol=1e-5)
    batch.sig.data[1, :9000] += 0.5 * torch.randn(9000, generator=generator)  # real samples
    assert not torch.allclose(loss_of(batch), reference, atol=1e-4)
