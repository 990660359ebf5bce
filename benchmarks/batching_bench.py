"""Benchmark: padding per epoch, length-bucketed dynamic batches against plain random batches.

Our batching is ``lobes.data.datasets.train_loader_options`` with ``dynamic_batching: True``:
SpeechBrain's ``DynamicBatchSampler`` by duration, with ``max_batch_length`` (seconds of audio
per batch) and ``num_buckets`` read from the stage hparams. The named alternative is plain
random batching (shuffle, then fixed-size batches) with the batch size that holds the same mean
audio per batch as the dynamic batches.

Padding share = padded samples / all samples of the padded batch tensors, over whole epochs
(each batch is padded to its longest utterance, as SpeechBrain's ``PaddedBatch`` does); the
padded-frame share (HuBERT frames, 20 ms) is printed beside it.

Duration sets:

- ``iemocap-like``: 5531 durations (the 4-class IEMOCAP count) from a log-normal with median
  3.5 s and sigma 0.72 (mean ~4.5 s, i.e. ~7 h in all, as the 4-class IEMOCAP set), redrawn
  until inside IEMOCAP's range 0.6-34 s; seeded. A fitted stand-in, not the real durations.
- ``demo``: the training manifest of fold 1 of the demo corpus (``make_demo_corpus.py``,
  ``--utts_per_speaker``), batched with ``hparams/demo.yaml``'s values.

Then a sweep of ``num_buckets`` (and ``max_batch_length``) shows what the defaults could be,
and one row shows data-driven bucket boundaries (duration quantiles of the training set, given
to ``DynamicBatchSampler(bucket_boundaries=...)``), which ``train_loader_options`` does not do.

Usage::

    python benchmarks/batching_bench.py [--epochs 5] [--utts_per_speaker 30] [--quick]

The last line printed is ``padding_dynamic=<share> padding_random=<share>`` for the
IEMOCAP-like set with the stage-1 hparams.
"""

import argparse
import logging
import math
import tempfile

import numpy as np
import torch
from bench_utils import RECIPE, default_seed, demo_manifests
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.sampler import DynamicBatchSampler

from lobes.data.datasets import train_loader_options
from lobes.models.frames import n_frames
from lobes.runner.hparams import compose, raw_values

IEMOCAP_N = 5531
IEMOCAP_MEDIAN_S = 3.5
IEMOCAP_SIGMA = 0.72
IEMOCAP_RANGE_S = (0.6, 34.0)
SAMPLE_RATE = 16000
TARGET = 0.10


def iemocap_like_durations(seed=0, n=IEMOCAP_N):
    """``n`` log-normal durations (median 3.5 s, sigma 0.72) inside 0.6-34 s, seeded.

    Example
    -------
    >>> durations = iemocap_like_durations(n=1000)
    >>> len(durations), bool(0.6 <= durations.min()), bool(durations.max() <= 34.0)
    (1000, True, True)
    """
    rng = np.random.default_rng(seed)
    low, high = IEMOCAP_RANGE_S
    durations = np.empty(0)
    while len(durations) < n:
        draw = rng.lognormal(math.log(IEMOCAP_MEDIAN_S), IEMOCAP_SIGMA, size=2 * n)
        durations = np.concatenate([durations, draw[(draw >= low) & (draw <= high)]])
    return np.round(durations[:n] * SAMPLE_RATE) / SAMPLE_RATE


def hparams_value(file_name, key):
    """A plain number of a recipe hparams file, composed (``extends:``) as the scripts read it."""
    return float(raw_values(compose(RECIPE / "hparams" / file_name))[key])


def duration_dataset(durations):
    """A ``DynamicItemDataset`` holding only durations (what the sampler reads)."""
    return DynamicItemDataset(
        {f"utt{i:05d}": {"duration": float(d)} for i, d in enumerate(durations)}
    )


def padding_of(batches, durations):
    """Padding shares (samples and frames) and batch statistics of a list of index batches."""
    samples = np.round(np.asarray(durations) * SAMPLE_RATE).astype(np.int64)
    frames = n_frames(torch.from_numpy(np.maximum(samples, 400))).numpy()
    real_samples = padded_samples = real_frames = padded_frames = 0
    for batch in batches:
        batch = np.asarray(batch, dtype=np.int64)
        real_samples += samples[batch].sum()
        padded_samples += samples[batch].max() * len(batch)
        real_frames += frames[batch].sum()
        padded_frames += frames[batch].max() * len(batch)
    return {
        "samples": 1.0 - real_samples / padded_samples,
        "frames": 1.0 - real_frames / padded_frames,
        "n_batches": len(batches),
        "mean_audio_s": real_samples / SAMPLE_RATE / len(batches),
        "max_batch": max(len(batch) for batch in batches),
    }


def epochs_of_sampler(sampler, epochs):
    """The batches of ``epochs`` epochs, with ``set_epoch`` as ``Brain.fit`` calls it."""
    batches = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        batches += [list(batch) for batch in sampler]
    return batches


def dynamic_batches(durations, max_batch_length, num_buckets, epochs):
    """Our batching: the sampler built by ``lobes.data.datasets.train_loader_options``."""
    hparams = {
        "dynamic_batching": True, "max_batch_length": max_batch_length,
        "num_buckets": int(num_buckets), "batch_size": 4, "seed": default_seed(),
    }
    sampler = train_loader_options(hparams, duration_dataset(durations))["batch_sampler"]
    return epochs_of_sampler(sampler, epochs), sampler


def quantile_batches(durations, max_batch_length, num_buckets, epochs):
    """Alternative not in lobes: bucket boundaries at the training durations' quantiles."""
    boundaries = np.unique(np.quantile(durations, np.linspace(0, 1, num_buckets + 1)[1:]))
    sampler = DynamicBatchSampler(
        duration_dataset(durations), max_batch_length=max_batch_length,
        length_func=lambda entry: entry["duration"], shuffle=True, batch_ordering="random",
        bucket_boundaries=[float(b) for b in boundaries],
    )
    return epochs_of_sampler(sampler, epochs)


def random_batches(durations, batch_size, epochs, seed=0):
    """Plain random batching: shuffle each epoch, then fixed-size batches."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(epochs):
        order = rng.permutation(len(durations))
        batches += [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return batches


def row(name, stats):
    return (
        f"  {name:<48} padding {100 * stats['samples']:5.1f} % samples "
        f"({100 * stats['frames']:5.1f} % frames)  {stats['n_batches'] :5d} batches  "
        f"mean audio {stats['mean_audio_s']:5.1f} s  max {stats['max_batch']:3d} utts"
    )


def compare(title, durations, max_batch_length, num_buckets, epochs, sweep):
    """Print our batching against random batching, then the sweep of ``(max_batch_length,
    num_buckets)`` pairs; return the two padding shares."""
    durations = np.asarray(durations, dtype=float)
    print(
        f"\n{title}: {len(durations)} utterances, median {np.median(durations):.2f} s, "
        f"mean {durations.mean():.2f} s, range {durations.min():.2f}-{durations.max():.2f} s, "
        f"{durations.sum() / 3600:.2f} h; {epochs} epochs"
    )
    batches, sampler = dynamic_batches(durations, max_batch_length, num_buckets, epochs)
    ours = padding_of(batches, durations)
    boundaries = ", ".join(f"{b:.2f}" for b in sampler._bucket_boundaries[:6])
    print(f"  bucket boundaries (s) of our sampler: {boundaries}, ...")
    batch_size = max(1, round(ours["mean_audio_s"] / durations.mean()))
    plain = padding_of(random_batches(durations, batch_size, epochs), durations)
    plain4 = padding_of(random_batches(durations, 4, epochs), durations)
    print(row(f"ours: dynamic, max_batch_length {max_batch_length:g}, buckets {num_buckets}",
              ours))
    print(row(f"random, batch_size {batch_size} (same mean audio)", plain))
    print(row("random, batch_size 4 (hparams batch_size)", plain4))
    print(
        f"  padded share ratio random/ours = {plain['samples'] / ours['samples']:.2f}; "
        f"target < {100 * TARGET:.0f} %: {'met' if ours['samples'] < TARGET else 'MISSED'}"
    )
    print("  sweep:")
    for length, buckets in sweep:
        stats = padding_of(dynamic_batches(durations, length, buckets, epochs)[0], durations)
        print(row(f"dynamic, max_batch_length {length:g}, num_buckets {buckets}", stats))
    for buckets in sorted({num_buckets, 2 * num_buckets}):
        stats = padding_of(quantile_batches(durations, max_batch_length, buckets, epochs),
                           durations)
        print(row(f"quantile boundaries, {buckets} buckets (not lobes)", stats))
    return ours["samples"], plain["samples"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs averaged")
    parser.add_argument("--utts_per_speaker", type=int, default=20,
                        help="demo corpus size (make demo: 20)")
    parser.add_argument("--work_dir", help="where the demo corpus goes (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="2 epochs, a smaller sweep")
    args = parser.parse_args(argv)
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    epochs = 2 if args.quick else args.epochs

    stage_length = hparams_value("stage1.yaml", "max_batch_length")
    stage_buckets = int(hparams_value("stage1.yaml", "num_buckets"))
    print(f"stage hparams (stage1.yaml; stage0/2/baseline alike): max_batch_length "
          f"{stage_length:g} s, num_buckets {stage_buckets}")
    buckets = [10, 40, 80] if args.quick else [10, 30, 40, 60, 80, 120]
    sweep = [(stage_length, b) for b in buckets] + [(30, stage_buckets), (120, stage_buckets)]
    ours, plain = compare(
        "iemocap-like (log-normal fit, see docstring)", iemocap_like_durations(),
        stage_length, stage_buckets, epochs, sweep,
    )

    demo_length = hparams_value("demo.yaml", "max_batch_length")
    demo_buckets = int(hparams_value("demo.yaml", "num_buckets"))
    with tempfile.TemporaryDirectory() as scratch:
        manifests = demo_manifests(args.work_dir or scratch, args.utts_per_speaker)
    demo_durations = [entry["duration"] for entry in manifests["train"].values()]
    buckets = [20] if args.quick else [10, 20, 40]
    sweep = [(demo_length, b) for b in buckets] + [(20, demo_buckets), (10, demo_buckets)]
    compare(
        f"demo corpus, fold 1 train (utts_per_speaker {args.utts_per_speaker}; demo.yaml)",
        demo_durations, demo_length, demo_buckets, epochs, sweep,
    )
    print(f"\npadding_dynamic={ours:.4f} padding_random={plain:.4f}")


if __name__ == "__main__":
    main()
