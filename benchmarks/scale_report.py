"""The tables and lines that ``scale_bench.py`` prints, from its measurements and projection.

stdout is the report: the setup, the FLOP count, the measured tables (training steps,
evaluation, GMP extraction, k-means), one projection table per precision, the disk plan, the
GPU estimate, and last the summary line ``audio_s_per_s=... projected_hours=... disk_gb=...``
(docs/reference.md, Benchmarks, ``scale_bench.py``).
"""

import torch
from bench_utils import load_note
from scale_flops import FLOP_CHECK_SECONDS, PEAK_TFLOPS
from scale_fold import N_FOLDS, SAMPLE_RATE, STAGE_FILES
from scale_project import TRAINING_STEPS_PER_FOLD, epoch_flop, expected_layers

from lobes.runner.disk import GB

ASSUMED_GPU_MFU = 0.35  # only for the clearly marked estimate without a GPU run


def fmt_count(n):
    """A parameter count: ``315.4 M`` or, below a million, ``29,952``."""
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def fmt_bytes(n):
    """A size in MiB, or in GiB from 1 GiB."""
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def rate_and_mfu(flop, seconds, peak):
    """TFLOP/s of ``flop`` in ``seconds`` and its MFU cell against ``peak`` TFLOP/s."""
    rate = flop / seconds / 1e12
    return rate, (f"{100 * rate / peak:6.2f}" if peak else "   n/a")


def print_device(device, peaks, how):
    """The device and the peaks that MFU divides by."""
    print(f"device {device}; peak TFLOP/s fp32 "
          f"{peaks['fp32'] if peaks['fp32'] is not None else 'n/a'}, bf16 "
          f"{peaks['bf16'] if peaks['bf16'] is not None else 'n/a'} ({how})")


def print_setup(label, config, params, seconds, settings, splits, batches, samples,
                max_batch_length):
    """The encoder, the fold and one epoch of stage 0's training batches."""
    total_params, front_end_params = params
    print(f"encoder: random-weight {label} ({config.num_hidden_layers} layers x "
          f"{config.hidden_size}, FFN {config.intermediate_size}, CNN {len(config.conv_dim)}"
          f" x {config.conv_dim[0]}, {config.feat_extract_norm}-norm front end; "
          f"{fmt_count(total_params)} parameters, {fmt_count(front_end_params)} frozen "
          f"CNN), written/loaded in {seconds:.1f} s; freeze "
          f"{settings['stage0']['freeze_encoder']}, layerdrop "
          f"{settings['encoder']['layerdrop']}, SpecAugment "
          f"{settings['encoder']['apply_spec_augment']} (mask_time_prob "
          f"{settings['encoder']['mask_time_prob']})")
    print("fold (IEMOCAP-like durations, see docs/reference.md): "
          + ", ".join(f"{split} {len(d)} utts {d.sum() / 3600:.2f} h"
                      for split, d in splits.items()))
    first = batches["stage0"]
    padded = sum(len(b) * samples["train"][b].max() for b in first)
    print(f"training batches (DynamicBatchSampler, max_batch_length "
          f"{max_batch_length or settings['stage0']['max_batch_length']:g} s, "
          f"num_buckets {settings['stage0']['num_buckets']}): {len(first)} per epoch, "
          f"largest {max(len(b) * samples['train'][b].max() for b in first) / SAMPLE_RATE:.1f}"
          f" s padded, {100 * (1 - samples['train'].sum() / padded):.1f} % padding")


def print_flop_count(flops, settings, splits, samples, batches, checks):
    """The analytic FLOP count and its cross-checks against FlopCounterMode."""
    print(f"\nFLOP count (analytic; 2 FLOP per multiply-add; matrix products and convolutions "
          f"only): per transformer layer and frame 8*H^2 + 4*H*F = "
          f"{(8 * flops.hidden ** 2 + 4 * flops.hidden * flops.ffn) / 1e6:.2f} MFLOP plus "
          f"attention 4*T*H; training = CNN forward (frozen) + 3 x (everything else)")
    clip = int(FLOP_CHECK_SECONDS * SAMPLE_RATE)
    parts = flops.forward([clip])
    print(f"forward FLOP of one {FLOP_CHECK_SECONDS:.2f} s clip (eval, all {flops.layers} layers):"
          f" {parts['total']} = "
          f"{parts['total'] / FLOP_CHECK_SECONDS / 1e9:.4f} GFLOP per second of audio "
          f"(CNN {parts['cnn'] / FLOP_CHECK_SECONDS / 1e9:.3f}, projection + positional conv "
          f"{(parts['projection'] + parts['positional']) / FLOP_CHECK_SECONDS / 1e9:.3f}, "
          f"transformer {parts['layers'] / FLOP_CHECK_SECONDS / 1e9:.3f} of which attention "
          f"{parts['attention'] / FLOP_CHECK_SECONDS / 1e9:.3f})")
    layers = expected_layers(settings, flops)
    for stage in STAGE_FILES:
        stage_flop = epoch_flop(flops, stage, batches[stage], samples["train"], layers)
        print(f"  training {stage}: {stage_flop / splits['train'].sum() / 1e9:.4f} GFLOP per "
              f"second of audio over an epoch's batches (padding and attention at their "
              f"lengths; {layers:g} layers expected with LayerDrop)")
    for what, counted, analytic in checks:
        print(f"  cross-check FlopCounterMode, {what}: counted {counted / 1e9:.3f} GFLOP, "
              f"analytic {analytic / 1e9:.3f} GFLOP (ratio {counted / analytic:.4f})")


def print_training(args, measured, peaks):
    """The training-steps table, the peak memory and the checkpoint save; returns each
    precision's training throughput (audio seconds per second, all stages)."""
    training = measured.training
    print(f"\ntraining steps ({args.warmup} warm-up on the largest batch, then {args.steps} "
          f"timed at quantiles of the padded size; Brain.fit_batch incl. the optimizers):")
    print(f"| {'stage':<8} | {'prec':<4} | {'steps':>5} | {'audio s':>8} | {'padded s':>8} | "
          f"{'step s':>7} | {'optim s':>7} | {'audio s/s':>9} | {'TFLOP/s':>8} | {'MFU %':>6} | "
          f"{'peak mem':>10} |")
    print(f"|{'-' * 10}|{'-' * 6}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 9}|{'-' * 9}|"
          f"{'-' * 11}|{'-' * 10}|{'-' * 8}|{'-' * 12}|")
    throughput = {}
    for precision in args.precisions:
        audio = time_s = 0.0
        for stage in STAGE_FILES:
            row = training[stage][precision]
            if row is None:
                print(f"| {stage:<8} | {precision:<4} | out of memory")
                continue
            audio += row["audio_s"]
            time_s += row["time_s"]
            rate, mfu = rate_and_mfu(row["flop"], row["time_s"], peaks[precision])
            print(f"| {stage:<8} | {precision:<4} | {row['steps']:>5} | "
                  f"{row['audio_s'] / row['steps']:>8.2f} | "
                  f"{row['padded_s'] / row['steps']:>8.2f} | "
                  f"{row['time_s'] / row['steps']:>7.3f} | "
                  f"{row['optimizer_s'] / row['steps']:>7.3f} | "
                  f"{row['audio_s'] / row['time_s']:>9.2f} | {rate:>8.4f} | {mfu} | "
                  f"{fmt_bytes(row['peak_bytes']):>10} |")
        throughput[precision] = audio / time_s if time_s else 0.0
    memory_kind = ("torch.cuda.max_memory_allocated" if torch.device(args.device).type == "cuda"
                   else "peak resident set of the process (VmHWM)")
    if torch.device(args.device).type != "cuda":
        memory_kind += f"; {fmt_bytes(measured.rss_start)} resident before the first stage"
    print(f"peak mem: {memory_kind}, per (stage, precision)"
          + ("" if all(r is None or r["peak_reset"] for s in training.values()
                       for r in s.values()) else "; could not be reset: process peak so far"))
    print(f"checkpoint save (encoder + both Adam states, torch.save + fsync): "
          f"{measured.checkpoint_s:.2f} s for {fmt_bytes(measured.checkpoint_bytes)}")
    return throughput


def print_evaluation(args, measured, peaks, eval_size):
    """The evaluation table (valid/test batches of ``eval_size`` utterances)."""
    print(f"\nevaluation (valid/test: Brain.evaluate_batch, {eval_size} utterances per batch "
          f"sorted by duration, {args.eval_steps} timed batches):")
    print(f"| {'stage':<8} | {'prec':<4} | {'batches':>7} | {'audio s/s':>9} | {'TFLOP/s':>8} | "
          f"{'MFU %':>6} |")
    print(f"|{'-' * 10}|{'-' * 6}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 8}|")
    for stage in STAGE_FILES:
        for precision in args.precisions:
            row = measured.evaluation[stage][precision]
            if row is None:
                continue
            rate, mfu = rate_and_mfu(row["flop"], row["time_s"], peaks[precision])
            print(f"| {stage:<8} | {precision:<4} | {row['batches']:>7} | "
                  f"{row['audio_s'] / row['time_s']:>9.2f} | {rate:>8.4f} | {mfu} |")


def print_extraction(args, measured, layer, n_layers):
    """The GMP extraction table (the encoder up to ``layer`` of ``n_layers``)."""
    print(f"\nGMP extraction (frozen encoder up to layer {layer} of {n_layers}, one utterance "
          "at a time as extract_gmp.py encodes them, float16 cache):")
    print(f"| {'prec':<4} | {'batches':>7} | {'audio s/s':>9} | {'TFLOP/s':>8} | "
          f"{'cache write us/frame':>20} |")
    print(f"|{'-' * 6}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 22}|")
    for precision in args.precisions:
        row = measured.extraction[precision]
        print(f"| {precision:<4} | {row['batches']:>7} | {row['audio_s'] / row['encode_s']:>9.2f}"
              f" | {row['flop'] / row['encode_s'] / 1e12:>8.4f} | "
              f"{1e6 * row['write_s'] / row['frames']:>20.2f} |")


def print_kmeans(measured, iterations, dim):
    """The k-means table: measured fit and label times and their fold-scale values."""
    kmeans, fit_frames = measured.kmeans, measured.fit_frames
    scaled = "" if fit_frames == measured.fit_frames_real else (
        f"; fit times scaled x{kmeans['scale']:.2f} to the fold's {measured.fit_frames_real} "
        f"frames")
    print(f"\nk-means (faiss, {iterations} iterations, {fit_frames} x "
          f"{dim} synthetic frames{scaled}; labels of all {measured.all_frames} frames of "
          f"a fold, scaled from {fit_frames}):")
    print(f"| {'K':>5} | {'fit s (measured)':>16} | {'fit s (fold)':>12} | "
          f"{'labels frames/s':>15} | {'labels s (fold)':>15} |")
    print(f"|{'-' * 7}|{'-' * 18}|{'-' * 14}|{'-' * 17}|{'-' * 17}|")
    for k, row in kmeans["rows"].items():
        print(f"| {k:>5} | {row['fit_s']:>16.2f} | {row['fit_s'] * kmeans['scale']:>12.1f} | "
              f"{fit_frames / row['assign_s']:>15,.0f} | "
              f"{row['assign_s'] * kmeans['assign_scale']:>15.1f} |")


def print_projection(rows, precision):
    """The projection table of one precision; returns the total hours."""
    print(f"\nprojection, {precision} (run_cv.py --precision {precision} --eval_precision "
          f"{precision}), hours for {N_FOLDS} folds:")
    numbers = ("train h", "valid h", "test h", "ckpt h", "gmp h")
    print(f"| {'step':<22} | {'runs per fold':<13} | "
          + " | ".join(f"{name:>10}" for name in numbers) + f" | {'total h':>11} | {'share':>6} |")
    print(f"|{'-' * 24}|{'-' * 15}|" + f"{'-' * 12}|" * len(numbers) + f"{'-' * 13}|{'-' * 8}|")
    totals = [round(sum(parts.values()), 4) for _, _, parts in rows]
    grand = sum(totals)
    for (name, runs, parts), total in zip(rows, totals, strict=True):
        cells = " | ".join(f"{parts[key]:>10.4f}"
                           for key in ("train", "valid", "test", "checkpoints", "gmp"))
        print(f"| {name:<22} | {runs:<13} | {cells} | {total:>11.4f} | "
              f"{100 * total / grand:>5.1f}% |")
    blank = " | ".join(f"{'':>10}" for _ in numbers)
    print(f"| {'total':<22} | {'':<13} | {blank} | {grand:>11.4f} | {100.0:>5.1f}% |")
    return grand


def print_disk(lines, peak, total_params):
    """The disk plan of the run (``lobes.runner.disk.plan``)."""
    print(f"\ndisk (lobes.runner.disk.plan, {fmt_count(total_params)} encoder parameters, "
          f"run_cv.py --systems gmp_tl,baseline: {TRAINING_STEPS_PER_FOLD} training steps per "
          f"fold):")
    for line, size_bytes in lines:
        print(f"  {size_bytes / GB:8.3f} GB  {line}")
    print(f"  {peak / GB:8.3f} GB  at the peak, for the whole run")


def print_estimate(run_flop):
    """The clearly marked GPU estimate from the run's analytic FLOP (no GPU measurement)."""
    h100 = dict(PEAK_TFLOPS)["H100"]["bf16"] * 1e12
    print(f"\nESTIMATE, not a measurement: the run's training and evaluation cost "
          f"{run_flop / 1e15:.1f} PFLOP (analytic count above); at an H100 SXM's dense bf16 "
          f"peak ({h100 / 1e12:.0f} TFLOP/s) that is a floor of {run_flop / h100 / 3600:.3f} h, "
          f"at an assumed {100 * ASSUMED_GPU_MFU:.0f} % MFU "
          f"{run_flop / h100 / ASSUMED_GPU_MFU / 3600:.2f} h"
          f", plus the k-means, extraction and checkpoint writes. Real GPU figures need this "
          f"benchmark run on the GPU (--device cuda).")


def print_summary(totals, throughput, peak):
    """The load at the end, the chosen precision and the summary line (printed last)."""
    print(f"at the end: {load_note()}")
    if not totals:
        print("summary precision: none (every precision ran out of memory)")
        print(f"audio_s_per_s=nan projected_hours=nan disk_gb={peak / GB:.3f}")
        return
    best = max(totals, key=lambda precision: throughput[precision])
    print(f"summary precision: {best} (the higher training throughput of "
          f"{', '.join(f'{p} {throughput[p]:.2f}' for p in throughput)} audio s/s, all stages)")
    print(f"audio_s_per_s={throughput[best]:.4f} projected_hours={totals[best]:.4f} "
          f"disk_gb={peak / GB:.3f}")

