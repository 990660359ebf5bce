"""Benchmark: GMP extraction with one encoder pass for every (layer, K) against one pass per scale.

Our way (``extract_gmp.py``): one pass of the stage-0 encoder over train, valid and test fills
the float16 feature cache with every layer of ``gmp_layers``; k-means at every scale then reads
the cache. The named alternative re-extracts per scale: for each (layer, K) a fresh encoder pass
writes a cache of that layer alone, then k-means at that K alone, i.e. ``len(layers) x
len(scales)`` passes. Both run the recipe's own functions (``extract_features`` and
``cluster_scales`` of ``recipes/IEMOCAP/GMP-TL/extract_gmp.py``) on the same utterances (fold 1
of the demo corpus) with the same random-weight encoder; only ``gmp_layers``/``gmp_scales`` and
the cache folder differ. Encoder passes are counted by a hook on the encoder (utterances encoded
/ utterances in the three splits); both ways must write identical label files.

Usage::

    python benchmarks/extraction_bench.py [--size mid|base] [--utts_per_speaker 6]
        [--scales 16 64 256] [--layers L1 L2] [--repeats 2] [--threads N] [--quick]

The last line printed is ``passes_ours=<n> passes_per_scale=<n> speedup=<per-scale time / our
time>``.
"""

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before torch, which imports tqdm

import torch  # noqa: E402
from bench_utils import (  # noqa: E402
    RECIPE,
    SIZES,
    demo_manifests,
    load_note,
    machine_line,
    recipe_module,
    write_hubert,
)

from lobes.data.datasets import SPLITS  # noqa: E402
from lobes.models.encoder import SSLEncoder  # noqa: E402
from lobes.runner.hparams import compose, raw_values  # noqa: E402


class PassCounter:
    """Counts utterances that go through an encoder's forward (a forward hook)."""

    def __init__(self):
        self.utterances = 0
        self.batches = 0

    def __call__(self, module, args, output):
        self.utterances += int(args[0].shape[0])
        self.batches += 1


def base_hparams(model_folder, stage0_folder, dim, work, name, layers, scales, counter):
    """The keys that ``extract_features`` and ``cluster_scales`` read: the shipped ``gmp.yaml``
    values (composed as the script reads them), this run's encoder, folders, layers and scales."""
    encoder = SSLEncoder(model_folder, work / "hub", output_layers=[-1], freeze="all")
    encoder.register_forward_hook(counter)
    shipped = raw_values(compose(RECIPE / "hparams" / "gmp.yaml"))
    hparams = {key: shipped[key] for key in (
        "cache_flush_every", "gmp_gender_split", "kmeans_backend", "kmeans_max_frames",
        "kmeans_iterations", "sklearn_options", "seed")}
    hparams.update({
        "encoder": encoder,
        "encoder_source": str(model_folder),
        "encoder_dim": dim,
        "stage0_folder": str(stage0_folder),
        "cache_folder": str(work / name / "cache"),
        "output_folder": str(work / name / "gmp"),
        "gmp_layers": list(layers),
        "gmp_scales": list(scales),
    })
    return hparams


def run_extraction(extract_gmp, manifests, hparams_of, label_sets):
    """Run extraction + clustering for each hparams of ``label_sets``; return the timings."""
    encode_s = cluster_s = 0.0
    for layers, scales in label_sets:
        start = time.perf_counter()
        hparams = hparams_of(layers, scales)
        extract_gmp.extract_features(hparams, manifests, "cpu", 0, 1)
        middle = time.perf_counter()
        extract_gmp.cluster_scales(hparams, manifests)
        cluster_s += time.perf_counter() - middle
        encode_s += middle - start
    return {"encode": encode_s, "cluster": cluster_s, "total": encode_s + cluster_s}


def label_files(folder):
    return {path.name: path.read_bytes() for path in Path(folder).rglob("*.km")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="mid", help="encoder size")
    parser.add_argument("--utts_per_speaker", type=int, default=6, help="demo corpus size")
    parser.add_argument("--scales", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--layers", type=int, nargs="+", help="default: middle and 3/4 depth")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="1 repeat")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats = 1
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    logging.getLogger("lobes").setLevel(logging.WARNING)
    extract_gmp = recipe_module("extract_gmp")
    print(machine_line())

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        manifests = demo_manifests(work / "corpus", args.utts_per_speaker)
        n_utts = sum(len(manifests[split]) for split in SPLITS)
        audio_s = sum(e["duration"] for split in SPLITS for e in manifests[split].values())
        model_folder = write_hubert(work / "model", args.size)
        counter = PassCounter()
        probe = SSLEncoder(model_folder, work / "hub", freeze="all")
        n_layers, dim = probe.num_layers, probe.hidden_size
        stage0_folder = work / "stage0"
        stage0_folder.mkdir()
        torch.save(probe.state_dict(), stage0_folder / "encoder.ckpt")
        del probe
        layers = args.layers or [n_layers // 2, (3 * n_layers) // 4]
        print(
            f"encoder: random HuBERT '{args.size}' ({n_layers} layers, {dim}-d), layers "
            f"{layers}, scales {args.scales}; data: demo corpus fold 1, {n_utts} utterances "
            f"(train+valid+test), {audio_s:.0f} s of audio; faiss k-means, 20 iterations"
        )

        ways = {
            "ours (one pass, cache reused)": [(layers, args.scales)],
            "per scale (one pass per (layer, K))": [
                ([layer], [k]) for layer in layers for k in args.scales
            ],
        }
        results = {name: [] for name in ways}
        passes = {}
        labels = {}
        for repeat in range(args.repeats):
            for index, (name, label_sets) in enumerate(ways.items()):
                run_dir = f"r{repeat}_w{index}"
                counter.utterances = counter.batches = 0
                sub_runs = iter(range(len(label_sets)))

                def hparams_of(layers_, scales_, run_dir=run_dir, sub_runs=sub_runs):
                    return base_hparams(model_folder, stage0_folder, dim, work,
                                        f"{run_dir}/{next(sub_runs)}", layers_, scales_,
                                        counter)

                results[name].append(run_extraction(extract_gmp, manifests, hparams_of,
                                                    label_sets))
                passes[name] = counter.utterances / n_utts
                labels[name] = label_files(work / run_dir)

        print(f"\n{'way':<38} {'encoder passes':>14} {'encode s':>9} {'k-means s':>9} "
              f"{'total s':>8}   (medians of {args.repeats})")
        medians = {}
        for name, runs in results.items():
            medians[name] = {key: statistics.median(run[key] for run in runs)
                             for key in ("encode", "cluster", "total")}
            m = medians[name]
            print(f"{name:<38} {passes[name]:>14.0f} {m['encode']:>9.1f} {m['cluster']:>9.1f} "
                  f"{m['total']:>8.1f}")
        ours, alternative = (medians[name] for name in ways)
        ours_name, alternative_name = ways
        same = labels[ours_name] == labels[alternative_name]
        print(f"identical label files ({len(labels[ours_name])} files): {same}")
        print(f"encode-time ratio per-scale/ours: {alternative['encode'] / ours['encode']:.2f}; "
              f"total-time ratio: {alternative['total'] / ours['total']:.2f}")
        print(f"at the end: {load_note()}")
        print(f"\npasses_ours={passes[ours_name]:.0f} passes_per_scale="
              f"{passes[alternative_name]:.0f} speedup={alternative['total'] / ours['total']:.2f}")


if __name__ == "__main__":
    main()
