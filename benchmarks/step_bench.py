"""Benchmark: stage-1 training step (multi-scale frame heads) against the baseline's step.

Both steps are the recipe's own: ``GMPBrain`` (stage 1) and ``EmotionBrain`` (the baseline) of
``recipes/IEMOCAP/GMP-TL/train.py``, driven through SpeechBrain's ``Brain.fit_batch`` (forward,
objectives with their accuracy counts, backward, gradient clipping, the two Adam optimisers of
``EncoderBrain``), with the modules built from ``lobes`` as the hparams build them:

- encoder: ``SSLEncoder(freeze="cnn", output_layers=[-1])`` on a random-weight HuBERT-base
  architecture (HF ``HubertConfig`` defaults: 12 layers, 768-d, 12 heads, FFN 3072, 512-channel
  CNN; dropout and LayerDrop off), the same weights for both;
- stage 1: ``MultiScaleFrameHead(768, [64, 256, 1024])`` and ``multi_scale_frame_loss``
  (``alpha: 0``, so no pooling/emotion head, as train.py removes them);
- baseline: ``MaskedPooling("mean")``, ``torch.nn.Linear(768, 4)``, ``SoftmaxCELoss``.

Both steps see the same batch (by default 4 utterances of 4-6 s, random audio, random GMPs).
Repetitions are interleaved (stage 1, baseline, stage 1, ...); medians are compared. A second,
steadier estimate times the heads alone on a fixed encoder output (forward + backward into the
encoder output), i.e. the only work that differs, and divides it by the baseline step.

Usage::

    python benchmarks/step_bench.py [--repeats 4] [--batch 4] [--min_s 4 --max_s 6]
        [--threads N] [--quick]

The last line printed is ``overhead=<stage-1 step / baseline step - 1>``.
"""

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

import speechbrain as sb
import torch
from bench_utils import SIZES, interleaved, load_note, machine_line, recipe_module, write_hubert
from speechbrain.dataio.batch import PaddedBatch

from lobes.data.datasets import make_label_encoder
from lobes.models.encoder import SSLEncoder
from lobes.models.frames import n_frames
from lobes.models.heads import MultiScaleFrameHead, SoftmaxCELoss, multi_scale_frame_loss
from lobes.models.pooling import MaskedPooling

GMP_SCALES = [64, 256, 1024]
TARGET = 0.10


def make_batch(n_utts, min_s, max_s, seed=0):
    """A SpeechBrain ``PaddedBatch`` of random audio with random GMPs of every scale."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(n_utts):
        duration = min_s + (max_s - min_s) * index / max(n_utts - 1, 1)
        n_samples = int(duration * 16000)
        example = {
            "id": f"utt{index}",
            "sig": 0.1 * torch.randn(n_samples, generator=generator),
            "emo_encoded": torch.LongTensor([index % 4]),
            "gender_encoded": torch.LongTensor([index % 2]),
        }
        for scale_index, k in enumerate(GMP_SCALES):
            example[f"gmp_{scale_index}"] = torch.randint(
                k, (n_frames(n_samples),), generator=generator
            )
        examples.append(example)
    return PaddedBatch(examples)


def common_hparams(work):
    return {
        "opt_class": lambda params: torch.optim.Adam(params, lr=1e-4),
        "encoder_opt_class": lambda params: torch.optim.Adam(params, lr=1e-5),
        "label_encoder": make_label_encoder(["neu", "hap", "ang", "sad"]),
        "output_folder": str(work),
    }


def build_brains(train, model_folder, work):
    """The stage-1 and baseline Brains, their encoders holding the same weights."""
    encoders = [
        SSLEncoder(model_folder, work / "hub", output_layers=[-1], freeze="cnn")
        for _ in range(2)
    ]
    encoders[1].load_state_dict(encoders[0].state_dict())
    dim = encoders[0].hidden_size
    run_opts = {"device": "cpu"}
    stage1 = train.GMPBrain(
        modules={"encoder": encoders[0], "frame_head": MultiScaleFrameHead(dim, GMP_SCALES)},
        hparams={
            **common_hparams(work), "gmp_layers": [6], "gmp_scales": GMP_SCALES,
            "gmp_scale_weights": [1.0] * len(GMP_SCALES), "alpha": 0.0,
            "emotion_loss": SoftmaxCELoss(),
        },
        run_opts=run_opts,
    )
    baseline = train.EmotionBrain(
        modules={
            "encoder": encoders[1], "pooling": MaskedPooling("mean", dim),
            "emotion_head": torch.nn.Linear(dim, 4),
        },
        hparams={**common_hparams(work), "emotion_loss": SoftmaxCELoss()},
        run_opts=run_opts,
    )
    for brain in (stage1, baseline):
        brain.init_optimizers()
        brain.modules.train()
        brain.on_stage_start(sb.Stage.TRAIN)
        brain.step = 1
    return stage1, baseline


def head_only_steps(stage1, baseline, batch, dim):
    """Closures timing only what differs: the heads' forward + loss + backward on a fixed
    encoder output (``requires_grad`` so that the gradient into the encoder output is made)."""
    wavs, wav_lens = batch.sig
    max_frames = n_frames(wavs.shape[1])
    counts = n_frames(torch.round(wav_lens * wavs.shape[1]).long())
    frames = torch.randn(len(wav_lens), max_frames, dim, requires_grad=True)
    labels = [getattr(batch, f"gmp_{i}").data for i in range(len(GMP_SCALES))]
    emotions = batch.emo_encoded.data.reshape(-1)
    frame_head = stage1.modules.frame_head
    pooling, emotion_head = baseline.modules.pooling, baseline.modules.emotion_head

    def stage1_heads():
        loss = multi_scale_frame_loss(frame_head(frames), labels, counts, [1.0] * 3)
        loss.backward()
        frames.grad = None

    def baseline_heads():
        loss = SoftmaxCELoss()(emotion_head(pooling(frames, counts)), emotions)
        loss.backward()
        frames.grad = None

    return stage1_heads, baseline_heads


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4, help="interleaved step repetitions")
    parser.add_argument("--batch", type=int, default=4, help="utterances per batch")
    parser.add_argument("--min_s", type=float, default=4.0, help="shortest utterance (s)")
    parser.add_argument("--max_s", type=float, default=6.0, help="longest utterance (s)")
    parser.add_argument("--size", choices=sorted(SIZES), default="base",
                        help="encoder size (mid: the tests' shrunk run)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="2 repetitions")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    train = recipe_module("train")
    print(machine_line())

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model_folder = write_hubert(work / "model", args.size)
        stage1, baseline = build_brains(train, model_folder, work)
        batch = make_batch(args.batch, args.min_s, args.max_s)
        dim = stage1.modules.encoder.hidden_size
        n_encoder = sum(p.numel() for p in stage1.modules.encoder.parameters())
        n_trained = sum(
            p.numel() for p in stage1.modules.encoder.parameters() if p.requires_grad
        )
        print(
            f"encoder: random HuBERT-{args.size} ({n_encoder / 1e6:.1f} M parameters, "
            f"{n_trained / 1e6:.1f} M trained, CNN frozen); batch: {args.batch} utterances "
            f"of {args.min_s:g}-{args.max_s:g} s ({batch.sig.data.shape[1] / 16000:.2f} s padded)"
        )
        print(
            f"stage-1 head: {sum(p.numel() for p in stage1.modules.frame_head.parameters())} "
            f"parameters (scales {GMP_SCALES}); baseline head: "
            f"{sum(p.numel() for p in baseline.modules.emotion_head.parameters())}"
        )

        steps = interleaved(
            {"stage1": lambda: stage1.fit_batch(batch),
             "baseline": lambda: baseline.fit_batch(batch)},
            repeats=repeats, warmup=1,
        )
        stage1_heads, baseline_heads = head_only_steps(stage1, baseline, batch, dim)
        heads = interleaved({"stage1": stage1_heads, "baseline": baseline_heads},
                            repeats=max(20, 4 * repeats), warmup=2)

    s1, base = steps["stage1"]["median"], steps["baseline"]["median"]
    ratios = [a / b for a, b in zip(steps["stage1"]["times"], steps["baseline"]["times"],
                                    strict=True)]
    print(f"\nfull training step (median of {repeats}, interleaved):")
    print(f"  stage 1 (GMPBrain.fit_batch)   {s1:7.3f} s   "
          f"[{', '.join(f'{t:.2f}' for t in steps['stage1']['times'])}]")
    print(f"  baseline (EmotionBrain)        {base:7.3f} s   "
          f"[{', '.join(f'{t:.2f}' for t in steps['baseline']['times'])}]")
    print(f"  ratio stage1/baseline: {s1 / base:.3f} (median of paired ratios "
          f"{statistics.median(ratios):.3f})")
    head_delta = heads["stage1"]["median"] - heads["baseline"]["median"]
    print("heads alone (forward + loss + backward into the encoder output):")
    print(f"  stage-1 frame heads {1000 * heads['stage1']['median']:.1f} ms, baseline pooling + "
          f"linear {1000 * heads['baseline']['median']:.1f} ms: difference "
          f"{1000 * head_delta:.1f} ms = {100 * head_delta / base:.2f} % of the baseline step")
    overhead = s1 / base - 1
    print(f"at the end: {load_note()}")
    print(f"target < {100 * TARGET:.0f} % overhead: {'met' if overhead < TARGET else 'MISSED'}")
    print(f"\noverhead={overhead:.4f}")


if __name__ == "__main__":
    main()
