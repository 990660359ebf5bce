"""Benchmark: what the real recipe costs, measured part by part, and the projected 5-fold run.

How long the five folds of ``run_cv.py --systems gmp_tl,baseline`` take on this machine (a GPU,
or the CPU), how much memory and disk they need, and where the time goes: the recipe's own
Brains on random-weight encoders of the real configuration, offline. What is measured, how the
FLOP are counted and what the projection counts: docs/reference.md (Benchmarks,
``scale_bench.py``). The parts: ``scale_fold`` (the recipe's settings, a fold's batches),
``scale_flops`` (the FLOP count, device peaks), ``scale_measure``, ``scale_project``,
``scale_report``.

Usage::

    python benchmarks/scale_bench.py [--encoder hubert_large] [--device cuda]
        [--precisions fp32,bf16] [--steps 3] [--max_batch_length 60] [--kmeans_frames N]
        [--peak_tflops 989] [--threads N] [--quick]

The last line printed is ``audio_s_per_s=... projected_hours=... disk_gb=...``.
"""

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before torch, which imports tqdm

import scale_report as report  # noqa: E402
import torch  # noqa: E402
from bench_utils import machine_line  # noqa: E402
from scale_flops import PRECISIONS, FlopModel, device_peaks  # noqa: E402
from scale_fold import (  # noqa: E402
    fold_batches,
    fold_durations,
    recipe_settings,
    shrink_gmp_layer,
    to_samples,
)
from scale_measure import encoder_folder, measure_all  # noqa: E402
from scale_project import disk_plan, projection, run_flop  # noqa: E402

# --quick: the shrunk encoder (write_random_encoder's size arguments; SHRUNK_SIZE of
# lobes.fixtures.encoders), shorter training batches (a shrunk model keeps the hub's 16 attention
# heads, so its attention costs as much as the full model's), a small k-means
QUICK_SIZE = {"n_layers": 2, "hidden_size": 32, "conv_dim": 16}
QUICK_MAX_BATCH_LENGTH = 15.0
QUICK_KMEANS_FRAMES = 16000


def parse_args(argv):
    from lobes.fixtures.encoders import HUB_CONFIGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=sorted(HUB_CONFIGS), default="hubert_large",
                        help="hub configuration of the random-weight encoder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="comma-separated, of fp32 and bf16 (autocast)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per stage "
                        "and precision (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up training steps "
                        "on the epoch's largest batch (evaluation and extraction: one untimed "
                        "call on their first timed batch; 0: none)")
    parser.add_argument("--eval_steps", type=int, default=2, help="timed evaluation batches")
    parser.add_argument("--extract_steps", type=int, default=2, help="timed extraction batches")
    parser.add_argument("--max_batch_length", type=float,
                        help="seconds of audio per training batch (default: the hparams' 60)")
    parser.add_argument("--kmeans_frames", type=int, help="frames per k-means fit (default: "
                        "the fold's training frames, at most kmeans_max_frames)")
    parser.add_argument("--peak_tflops", help="device peak: one number for every precision "
                        "or e.g. fp32=67,bf16=989")
    parser.add_argument("--n_layers", type=int, help="shrink the encoder: transformer layers")
    parser.add_argument("--hidden_size", type=int, help="shrink the encoder: width")
    parser.add_argument("--conv_dim", type=int, help="shrink the encoder: CNN channels")
    parser.add_argument("--model_dir", help="where random encoders are written and reused "
                        "(default: a temporary folder)")
    parser.add_argument("--threads", type=int, help="torch and faiss threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"shrunk encoder {QUICK_SIZE}, "
                        f"max_batch_length {QUICK_MAX_BATCH_LENGTH:g} s, no warm-up, 2 steps, "
                        f"k-means on "
                        f"{QUICK_KMEANS_FRAMES} frames (the test suite)")
    args = parser.parse_args(argv)
    if args.quick:
        # no warm-up: the largest batches (34 s clips) cost most of a quick run
        args.steps, args.eval_steps, args.extract_steps, args.warmup = 2, 2, 2, 0
        for key, value in QUICK_SIZE.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.kmeans_frames = args.kmeans_frames or QUICK_KMEANS_FRAMES
        args.max_batch_length = args.max_batch_length or QUICK_MAX_BATCH_LENGTH
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = sorted(set(args.precisions) - set(PRECISIONS))
    if unknown or not args.precisions:
        parser.error(f"--precisions takes fp32 and/or bf16, got {unknown or 'nothing'}")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def quiet():
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*TF32.*")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    import lobes.models.encoder  # noqa: F401  (SpeechBrain's HF wrappers: their loggers exist now)

    for name in ("speechbrain", "lobes", "faiss", *logging.root.manager.loggerDict):
        if name.split(".")[0] in ("speechbrain", "lobes", "faiss"):
            logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet()
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    from lobes.models.encoder import encoder_config
    from lobes.runner.disk import parameter_counts

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    settings = recipe_settings(args.encoder)
    size = {key: getattr(args, key) for key in ("n_layers", "hidden_size", "conv_dim")}
    if size["n_layers"]:
        shrink_gmp_layer(settings, args.encoder, size["n_layers"])
    splits = fold_durations(settings["gmp"]["valid_ratio"], args.seed)
    samples = {split: to_samples(d) for split, d in splits.items()}
    print(machine_line())
    peaks, peaks_how = device_peaks(args.device, args.peak_tflops)
    report.print_device(args.device, peaks, peaks_how)

    with tempfile.TemporaryDirectory(prefix="scale_bench_") as scratch:
        work = Path(scratch)
        started = time.perf_counter()
        folder, label = encoder_folder(args.encoder, args.model_dir or work / "models", size)
        config = encoder_config(folder)
        flops = FlopModel(config, settings)
        params = parameter_counts(config)
        seconds = time.perf_counter() - started
        batches = fold_batches(splits["train"], settings, args.max_batch_length)
        report.print_setup(label, config, params, seconds, settings, splits, batches, samples,
                           args.max_batch_length)
        measured = measure_all(args, folder, config.hidden_size, settings, splits, samples,
                               batches, flops, work, generator)

    report.print_flop_count(flops, settings, splits, samples, batches, measured.checks)
    throughput = report.print_training(args, measured, peaks)
    report.print_evaluation(args, measured, peaks, settings["stage0"]["eval_batch_size"])
    report.print_extraction(args, measured, settings["encoder"]["gmp_layer"], flops.layers)
    report.print_kmeans(measured, settings["gmp"]["kmeans_iterations"], config.hidden_size)

    lines, peak = disk_plan(splits, config.hidden_size, *params, settings)
    totals = {}
    for precision in args.precisions:
        rows = projection(settings, splits, batches, flops, measured, precision)
        if rows is None:
            print(f"\nprojection, {precision}: n/a (a stage ran out of memory)")
            continue
        totals[precision] = report.print_projection(rows, precision)
    report.print_disk(lines, peak, params[0])
    report.print_estimate(run_flop(settings, splits, batches, flops))
    report.print_summary(totals, throughput, peak)


if __name__ == "__main__":
    main()
