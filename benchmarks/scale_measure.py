"""Measuring the recipe's parts on the device, as ``scale_bench.py`` runs them.

The recipe's own Brains through ``Brain.fit_batch`` and ``Brain.evaluate_batch``, the GMP
extraction's encoder pass and cache writes, k-means at a fold's scale and a checkpoint save,
each with its time, FLOP and peak memory; what each measures and how is in docs/reference.md
(Benchmarks, ``scale_bench.py``). Progress goes to stderr; stdout is the report's.
"""

import contextlib
import gc
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bench_utils import cpu_peak_kb, recipe_module, reset_cpu_peak, status_kb
from scale_flops import FLOP_CHECK_SECONDS, embedding_size, grouped_conv_backward_flop
from scale_fold import EXTRACTION_BATCH, SAMPLE_RATE, STAGE_FILES, pick_batches, sorted_batches

_STARTED = time.perf_counter()


def progress(message):
    """A progress line on stderr (stdout holds the report, the summary line last)."""
    print(f"[{time.perf_counter() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


def make_batch(samples, gmp_outputs, n_emotions, generator):
    """A SpeechBrain ``PaddedBatch`` of random waveforms (and random labels of every kind)."""
    from speechbrain.dataio.batch import PaddedBatch

    from lobes.models.frames import n_frames

    examples = []
    for index, count in enumerate(samples):
        count = int(count)
        example = {
            "id": f"utt{index}",
            "sig": 0.1 * torch.randn(count, generator=generator),
            "emo_encoded": torch.LongTensor([index % n_emotions]),
            "gender_encoded": torch.LongTensor([index % 2]),
        }
        for scale_index, k in enumerate(gmp_outputs):
            example[f"gmp_{scale_index}"] = torch.randint(k, (n_frames(count),),
                                                          generator=generator)
        examples.append(example)
    return PaddedBatch(examples)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(device, function):
    """Seconds ``function()`` takes, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    function()
    sync(device)
    return time.perf_counter() - start


def reset_peak(device):
    """Reset the peak-memory counter; False where it cannot be reset (CPU without clear_refs)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    return reset_cpu_peak()


def peak_bytes(device):
    """GPU: ``max_memory_allocated``; CPU: peak resident set (VmHWM, else ru_maxrss)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return 1024 * cpu_peak_kb()


def set_precision(brain, precision):
    """Switch a Brain's autocast contexts, exactly as ``Brain.__init__`` builds them."""
    from speechbrain.utils.autocast import AMPConfig, TorchAutocast

    dtype = AMPConfig.from_name(precision).dtype
    brain.precision = brain.eval_precision = precision
    brain.training_ctx = TorchAutocast(device_type=brain.device_type, dtype=dtype)
    brain.evaluation_ctx = TorchAutocast(device_type=brain.device_type, dtype=dtype)


class LayerCounter:
    """Counts the transformer layers that ran (LayerDrop skips some in training)."""

    def __init__(self, encoder):
        self.count = 0
        self.handles = [layer.register_forward_hook(self._hook)
                        for layer in encoder.model.encoder.layers]

    def _hook(self, module, inputs, output):
        self.count += 1

    def remove(self):
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def eager_attention(encoder):
    """Eager attention for a FlopCounterMode count (it does not see CPU SDPA kernels)."""
    model = encoder.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def encoder_folder(name, model_dir, size):
    """Write (or reuse) the random-weight encoder ``name`` of ``size`` under ``model_dir``."""
    from lobes.fixtures.encoders import hub_config, write_random_encoder

    label = name if not any(size.values()) else (
        f"{name}-L{size['n_layers']}-H{size['hidden_size']}-C{size['conv_dim']}")
    folder = Path(model_dir) / label
    wanted = hub_config(name, **size)
    config_path = folder / "config.json"
    if config_path.exists() and (folder / "model.safetensors").exists():
        import json

        saved = json.loads(config_path.read_text())
        if all(saved.get(key) == wanted[key] for key in
               ("hidden_size", "num_hidden_layers", "conv_dim", "intermediate_size")):
            return str(folder), label
    write_random_encoder(name, folder, **size)
    return str(folder), label


def build_brain(stage, folder, settings, device, work):
    """The stage's Brain of the recipe with its modules as the stage's hparams build them."""
    import torch.nn

    from lobes.data.datasets import make_label_encoder
    from lobes.models.encoder import SSLEncoder
    from lobes.models.heads import AMSoftmaxLoss, CosineHead, MultiScaleFrameHead, SoftmaxCELoss
    from lobes.models.pooling import MaskedPooling

    values, encoder_values = settings[stage], settings["encoder"]
    encoder = SSLEncoder(
        folder, work / "hub", output_layers=[-1], freeze=values["freeze_encoder"],
        layerdrop=encoder_values["layerdrop"],
        apply_spec_augment=encoder_values["apply_spec_augment"],
        mask_time_prob=encoder_values["mask_time_prob"],
    )
    dim, n_emotions = encoder.hidden_size, int(values["n_emotions"])
    pooling = MaskedPooling(values["pooling_mode"], dim)
    hparams = {
        "opt_class": lambda params: torch.optim.Adam(params, lr=values["lr"]),
        "encoder_opt_class": lambda params: torch.optim.Adam(params, lr=values["lr_encoder"]),
        "label_encoder": make_label_encoder(values["emotion_classes"]),
        "output_folder": str(work),
        "emotion_loss": SoftmaxCELoss(),
    }
    if stage == "stage0":
        brain_class = recipe_module("train_mtl").MTLBrain
        modules = {"encoder": encoder, "pooling": pooling,
                   "emotion_head": torch.nn.Linear(dim, n_emotions),
                   "gender_head": torch.nn.Linear(dim, 2)}
        hparams["lambda_gender"] = values["lambda_gender"]
    elif stage == "stage1":
        brain_class = recipe_module("train").GMPBrain
        frame_head = MultiScaleFrameHead(dim, values["gmp_scales"], values["gmp_gender_split"])
        modules = {"encoder": encoder, "frame_head": frame_head}
        if values["alpha"] > 0:
            modules.update(pooling=pooling, emotion_head=torch.nn.Linear(dim, n_emotions))
        hparams.update({key: values[key] for key in
                        ("gmp_scales", "gmp_scale_weights", "alpha")})
        hparams["gmp_layers"] = [settings["encoder"]["gmp_layer"]]
    else:
        brain_class = recipe_module("train").EmotionBrain
        if stage == "stage2":
            head = CosineHead(dim, n_emotions,
                              embedding_size=embedding_size(values["embedding_size"], dim))
            hparams["emotion_loss"] = AMSoftmaxLoss(values["am_margin"], values["am_scale"])
        else:
            head = torch.nn.Linear(dim, n_emotions)
        modules = {"encoder": encoder, "pooling": pooling, "emotion_head": head}
    brain = brain_class(modules=modules, hparams=hparams, run_opts={"device": device},
                        checkpointer=None)
    brain.init_optimizers()
    brain.step = 1
    return brain


def batch_targets(brain):
    """What ``make_batch`` draws labels for: the frame heads' sizes and the emotion count."""
    outputs = brain.modules["frame_head"].n_outputs if "frame_head" in brain.modules else []
    return outputs, len(brain.hparams.label_encoder)


def measure_training(brain, stage, batches, samples, precision, args, flops, generator):
    """Warm-up on the largest batch, then timed ``fit_batch`` calls; sums and peak memory."""
    import speechbrain as sb

    set_precision(brain, precision)
    outputs, n_emotions = batch_targets(brain)
    warmup_batch, timed = pick_batches(batches, samples, args.steps)
    counter = LayerCounter(brain.modules.encoder)
    optimizer_times = []
    original_step = brain.optimizers_step

    def timed_optimizers_step():
        optimizer_times.append(timed_call(args.device, original_step))

    brain.optimizers_step = timed_optimizers_step
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN)
    peak_reset = reset_peak(args.device)
    result = {"steps": 0, "audio_s": 0.0, "padded_s": 0.0, "time_s": 0.0, "optimizer_s": 0.0,
              "flop": 0.0, "layers_run": 0, "step_times": []}
    try:
        for index, indices in enumerate([warmup_batch] * args.warmup + timed):
            batch_samples = samples[indices]
            batch = make_batch(batch_samples, outputs, n_emotions, generator)
            counter.count = 0
            optimizer_times.clear()
            elapsed = timed_call(args.device, lambda batch=batch: brain.fit_batch(batch))
            brain.step += 1
            if index < args.warmup:
                continue
            result["steps"] += 1
            result["audio_s"] += batch_samples.sum() / SAMPLE_RATE
            result["padded_s"] += len(indices) * batch_samples.max() / SAMPLE_RATE
            result["time_s"] += elapsed
            result["optimizer_s"] += sum(optimizer_times)
            result["flop"] += flops.train_step(stage, batch_samples.tolist(), counter.count)
            result["layers_run"] += counter.count
            result["step_times"].append(elapsed)
    finally:
        counter.remove()
        brain.optimizers_step = original_step
    result["peak_bytes"] = peak_bytes(args.device)
    result["peak_reset"] = peak_reset
    return result


def measure_eval(brain, stage, batches, samples, precision, args, flops, generator):
    """Timed ``evaluate_batch`` calls on sorted eval batches (after one untimed call)."""
    import speechbrain as sb

    set_precision(brain, precision)
    outputs, n_emotions = batch_targets(brain)
    _, timed = pick_batches(batches, samples, args.eval_steps)
    warmup = min(args.warmup, 1)  # on the first timed batch (the largest can cost minutes on CPU)
    brain.modules.eval()
    brain.on_stage_start(sb.Stage.VALID)
    result = {"batches": 0, "audio_s": 0.0, "time_s": 0.0, "flop": 0.0}
    for index, indices in enumerate(timed[:warmup] + timed):
        batch_samples = samples[indices]
        batch = make_batch(batch_samples, outputs, n_emotions, generator)
        elapsed = timed_call(args.device,
                             lambda batch=batch: brain.evaluate_batch(batch, sb.Stage.VALID))
        if index < warmup:
            continue
        result["batches"] += 1
        result["audio_s"] += batch_samples.sum() / SAMPLE_RATE
        result["time_s"] += elapsed
        result["flop"] += flops.forward(batch_samples.tolist(), stage=stage)["total"]
    return result


def measure_extraction(folder, settings, batches, samples, precision, args, flops, work,
                       generator):
    """The GMP extraction's encoder pass and float16 cache writes on sorted batches."""
    from speechbrain.utils.autocast import AMPConfig, TorchAutocast

    from lobes.gmp.feature_cache import FeatureCacheWriter
    from lobes.gmp.labels import fit_labels_to_frames
    from lobes.models.encoder import SSLEncoder
    from lobes.models.frames import n_frames

    layer = settings["encoder"]["gmp_layer"]
    encoder = SSLEncoder(folder, work / "hub", output_layers=[layer], freeze="all")
    encoder.drop_layers_after(layer)
    encoder = encoder.to(args.device).eval()
    _, timed = pick_batches(batches, samples, args.extract_steps)
    warmup = min(args.warmup, 1)  # on the first timed batch, as the evaluation
    utt_ids = [f"utt{i}" for indices in timed for i in indices]
    planned = [n_frames(int(samples[i])) for indices in timed for i in indices]
    writer = FeatureCacheWriter(work / f"cache_{precision}", "train", [layer],
                                encoder.hidden_size, utt_ids, planned)
    context = TorchAutocast(device_type=torch.device(args.device).type,
                            dtype=AMPConfig.from_name(precision).dtype)
    result = {"batches": 0, "audio_s": 0.0, "encode_s": 0.0, "write_s": 0.0, "frames": 0,
              "flop": 0.0}
    for index, indices in enumerate(timed[:warmup] + timed):
        batch_samples = samples[indices]
        wavs = torch.zeros(len(indices), int(batch_samples.max()))
        for row, count in enumerate(batch_samples):
            wavs[row, :count] = 0.1 * torch.randn(int(count), generator=generator)
        lens = torch.as_tensor(batch_samples / batch_samples.max(), dtype=torch.float32)
        sync(args.device)
        start = time.perf_counter()
        with context, torch.no_grad():
            hidden, frame_counts = encoder(wavs.to(args.device), lens.to(args.device))
        # .float() as in extract_gmp.py: numpy has no bf16
        hidden = hidden.float().cpu().numpy()
        encoded = time.perf_counter()
        if index >= warmup:
            for row, utt_index in enumerate(indices):
                count = int(frame_counts[row])
                rows = fit_labels_to_frames(np.arange(count), n_frames(int(samples[utt_index])))
                writer.write(f"utt{utt_index}", {layer: hidden[0, row, rows]})
                result["frames"] += len(rows)
        written = time.perf_counter()
        if index < warmup:
            continue
        result["batches"] += 1
        result["audio_s"] += batch_samples.sum() / SAMPLE_RATE
        result["encode_s"] += encoded - start
        result["write_s"] += written - encoded
        result["flop"] += flops.forward(batch_samples.tolist(), layers=layer)["total"]
    start = time.perf_counter()
    writer.finalize()
    result["write_s"] += time.perf_counter() - start
    del encoder
    return result


def synthetic_features(n_frames, dim, n_components=4096, seed=0, chunk=65536):
    """float32 frames of an unbalanced Gaussian mixture, built in chunks (bounded memory).

    Example
    -------
    >>> synthetic_features(100, 8).shape
    (100, 8)
    """
    rng = np.random.default_rng(seed)
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(dim))).astype(np.float32)
    means = (rng.standard_normal((n_components, dim), dtype=np.float32) * spectrum * 4.0)
    spreads = rng.lognormal(-0.5, 0.5, size=(n_components, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, n_components + 1) ** 0.7
    frames = np.empty((n_frames, dim), dtype=np.float32)
    for start in range(0, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        members = rng.choice(n_components, size=stop - start, p=weights / weights.sum())
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        frames[start:stop] = means[members] + noise * spreads[members]
    return frames


def measure_kmeans(dim, scales, n_fit, iterations, seed=0):
    """Fit (``fit_kmeans``, faiss) and label assignment time of each scale on ``n_fit``
    synthetic frames of ``dim`` dimensions."""
    from lobes.gmp.kmeans import fit_kmeans

    frames = synthetic_features(n_fit, dim, seed=seed)
    rows = {}
    for k in scales:
        start = time.perf_counter()
        model = fit_kmeans(frames, k, backend="faiss", seed=seed, n_iter=iterations)
        fit_wall = time.perf_counter() - start
        start = time.perf_counter()
        model.predict(frames)
        assign = time.perf_counter() - start
        rows[k] = {"fit_s": fit_wall, "train_s": model.meta["fit_seconds"], "assign_s": assign}
        progress(f"k-means K={k} on {n_fit} x {dim}: fit {fit_wall:.1f} s, labels {assign:.1f} s")
    return rows


def measure_checkpoint(brain, folder):
    """Seconds to save the encoder and both optimizers' states (torch.save + fsync), bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    objects = {"encoder": brain.modules.encoder.state_dict()}
    objects.update({f"optimizer_{name}": optimizer.state_dict()
                    for name, optimizer in brain.optimizers_dict.items()})
    start = time.perf_counter()
    written = 0
    for name, state in objects.items():
        path = folder / f"{name}.ckpt"
        with open(path, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        written += path.stat().st_size
    seconds = time.perf_counter() - start
    for path in folder.iterdir():
        path.unlink()
    return seconds, written


def flop_checks(brain, flops, device, generator):
    """FlopCounterMode against the analytic count: one eval forward of a 4 s clip, one
    stage-0 training step (with ``grouped_conv_backward_flop``). Returns ``[(what, counted,
    analytic)]``."""
    import speechbrain as sb
    from torch.utils.flop_counter import FlopCounterMode

    encoder = brain.modules.encoder
    checks = []
    clip = int(FLOP_CHECK_SECONDS * SAMPLE_RATE)
    wavs = (0.1 * torch.randn(1, clip, generator=generator)).to(device)
    encoder.eval()
    with eager_attention(encoder), FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(wavs, torch.ones(1, device=device))
    checks.append((f"encoder forward, one {FLOP_CHECK_SECONDS:.2f} s clip, eval",
                   counter.get_total_flops(), flops.forward([clip])["total"]))
    samples = np.array([int(2.0 * SAMPLE_RATE), int(1.5 * SAMPLE_RATE)])
    batch = make_batch(samples, [], 4, generator)
    layer_counter = LayerCounter(encoder)
    set_precision(brain, "fp32")
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN)
    fixed = {torch.ops.aten.convolution_backward: grouped_conv_backward_flop}
    try:
        with eager_attention(encoder), FlopCounterMode(display=False,
                                                       custom_mapping=fixed) as counter:
            brain.fit_batch(batch)
    finally:
        layer_counter.remove()
    checks.append(("stage-0 training step, 2.0 s + 1.5 s, 3x rule", counter.get_total_flops(),
                   flops.train_step("stage0", samples.tolist(), layer_counter.count)))
    return checks


@dataclass
class Measurements:
    """What one run measured: the rows of every table, and the scales of the k-means times.

    ``training`` and ``evaluation`` are ``{stage: {precision: row}}`` (None: out of memory),
    ``extraction`` ``{precision: row}``, ``kmeans`` ``{"rows": {K: row}, "scale",
    "assign_scale"}`` (fit and label times scaled from ``fit_frames`` to the fold's
    ``fit_frames_real`` and ``all_frames``), ``checks`` the FLOP cross-checks ``[(what, counted,
    analytic)]``, ``rss_start`` the resident bytes before the first stage.
    """

    training: dict
    evaluation: dict
    extraction: dict
    kmeans: dict
    fit_frames: int
    fit_frames_real: int
    all_frames: int
    checkpoint_s: float
    checkpoint_bytes: int
    checks: list
    rss_start: int


def measure_stages(args, folder, settings, splits, samples, batches, flops, work, generator):
    """Training steps and evaluation of every stage at every precision, one checkpoint save and
    the FLOP cross-checks (on stage 0); a stage and precision that runs out of memory is
    reported and the others go on.

    Returns
    -------
    tuple
        ``(training, evaluation, checkpoint_s, checkpoint_bytes, checks)``.
    """
    training = {stage: {} for stage in STAGE_FILES}
    evaluation = {stage: {} for stage in STAGE_FILES}
    checkpoint_s, checkpoint_bytes, checks = None, None, []
    eval_size = settings["stage0"]["eval_batch_size"]
    eval_batches = sorted_batches(splits["valid"], eval_size)
    for stage in STAGE_FILES:
        brain = build_brain(stage, folder, settings, args.device, work)
        for precision in args.precisions:
            try:
                training[stage][precision] = measure_training(
                    brain, stage, batches[stage], samples["train"], precision, args, flops,
                    generator)
                progress(f"{stage} {precision}: training steps measured")
                evaluation[stage][precision] = measure_eval(
                    brain, stage, eval_batches, samples["valid"], precision, args, flops,
                    generator)
                progress(f"{stage} {precision}: evaluation measured")
            except torch.OutOfMemoryError:
                print(f"{stage} {precision}: out of memory (lower --max_batch_length)")
                training[stage][precision] = evaluation[stage][precision] = None
                brain.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
            if stage == "stage0" and checkpoint_s is None:
                checkpoint_s, checkpoint_bytes = measure_checkpoint(brain, work / "ckpt")
        if stage == "stage0":
            checks = flop_checks(brain, flops, args.device, generator)
            progress("FLOP cross-checks done")
        del brain
        gc.collect()
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()
    return training, evaluation, checkpoint_s, checkpoint_bytes, checks


def measure_extractions(args, folder, settings, splits, samples, flops, work, generator):
    """``{precision: row}`` of the GMP extraction (``measure_extraction``)."""
    extraction = {}
    extract_batches = sorted_batches(splits["train"], EXTRACTION_BATCH)
    for precision in args.precisions:
        extraction[precision] = measure_extraction(
            folder, settings, extract_batches, samples["train"], precision, args, flops,
            work, generator)
        progress(f"extraction {precision} measured")
    return extraction


def measure_fold_kmeans(args, dim, settings, samples):
    """k-means fits and labels of every GMP scale at a fold's frame counts (``measure_kmeans``
    on ``--kmeans_frames`` frames at most, its times scaled to the fold's counts).

    Returns
    -------
    tuple
        ``(kmeans, fit_frames, fit_frames_real, all_frames)``.
    """
    from lobes.models.frames import n_frames

    fold_train_frames = sum(n_frames(int(n)) for n in samples["train"])
    all_frames = sum(n_frames(int(n)) for split in samples for n in samples[split])
    fit_frames_real = min(fold_train_frames, settings["gmp"]["kmeans_max_frames"])
    fit_frames = min(args.kmeans_frames or fit_frames_real, fit_frames_real)
    kmeans_rows = measure_kmeans(dim, settings["stage1"]["gmp_scales"], fit_frames,
                                 settings["gmp"]["kmeans_iterations"], args.seed)
    kmeans = {"rows": kmeans_rows, "scale": fit_frames_real / fit_frames,
              "assign_scale": all_frames / fit_frames}
    progress("k-means measured")
    return kmeans, fit_frames, fit_frames_real, all_frames


def measure_all(args, folder, dim, settings, splits, samples, batches, flops, work, generator):
    """Every measurement of one run, in the order they are taken (stages, extraction,
    k-means)."""
    rss_start = 1024 * (status_kb("VmRSS") or 0)
    training, evaluation, checkpoint_s, checkpoint_bytes, checks = measure_stages(
        args, folder, settings, splits, samples, batches, flops, work, generator)
    extraction = measure_extractions(args, folder, settings, splits, samples, flops, work,
                                     generator)
    kmeans, fit_frames, fit_frames_real, all_frames = measure_fold_kmeans(args, dim, settings,
                                                                          samples)
    return Measurements(training, evaluation, extraction, kmeans, fit_frames, fit_frames_real,
                        all_frames, checkpoint_s, checkpoint_bytes, checks, rss_start)
