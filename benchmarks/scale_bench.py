"""Benchmark: what the real recipe costs, measured part by part, and the projected 5-fold run.

The question it answers: how long do the five folds of ``run_cv.py --systems gmp_tl,baseline``
take on this machine (a GPU, or the CPU), how much memory and disk do they need, and where does
the time go. Everything runs offline with random weights in the real configuration
(``lobes.fixtures.encoders.write_random_encoder``: full size by default, ``--encoder
hubert_large``, or shrunk in depth and width), loaded through
``lobes.models.encoder.SSLEncoder`` with
the flags of the shipped hparams (``freeze: cnn``; LayerDrop, SpecAugment and
``mask_time_prob`` from ``hparams/encoders/<encoder>.yaml``: 0.1, on, 0.05 for HuBERT large).
Every recipe value (epochs, ``max_batch_length``, ``num_buckets``, batch sizes, learning rates,
GMP layer and scales, k-means settings) is read from the shipped hparams files.

What is measured
----------------
- **Training steps** of stage 0 (``MTLBrain``: masked mean pooling, emotion and gender linear
  heads, CE + CE), stage 1 (``GMPBrain``: ``MultiScaleFrameHead`` for the GMP scales,
  ``multi_scale_frame_loss``), stage 2 (``EmotionBrain``: pooling, ``CosineHead`` with its
  embedding, ``AMSoftmaxLoss``) and the baseline (``EmotionBrain``: pooling, linear, CE): the
  recipe's own Brains driven through SpeechBrain's ``Brain.fit_batch`` (forward, loss,
  backward, gradient clipping, the two Adam optimisers of ``EncoderBrain``: encoder lr 1e-5,
  heads 1e-4). Batches are the padded shapes the recipe produces: a fold's training part of
  an IEMOCAP-like duration set (``batching_bench.iemocap_like_durations``: 5531 log-normal
  durations, median 3.5 s, sigma 0.72, 0.6-34 s, about 7 h; a fold holds out a fifth as test
  and 10 % of the rest as valid) batched by SpeechBrain's ``DynamicBatchSampler`` through
  ``lobes.data.datasets.train_loader_options`` at the stage's ``max_batch_length`` and
  ``num_buckets``; random waveforms and labels. One warm-up step on the epoch's largest batch
  (so that the peak memory is the worst batch's), then ``--steps`` timed steps on batches at
  evenly spaced quantiles of the padded batch size. fp32 and bf16 autocast (SpeechBrain's
  ``--precision``) side by side on the same model. The optimizer step is timed apart
  (``optimizers_step``).
- **Evaluation** (valid/test): ``Brain.evaluate_batch`` on batches of ``eval_batch_size`` (8)
  utterances sorted by duration, as the recipe's loaders give them; ``--eval_steps`` batches at
  quantiles of the padded size after one untimed call.
- **GMP extraction**: the frozen encoder returning the GMP layer, the layers above it dropped
  (``SSLEncoder.drop_layers_after``, as ``extract_gmp.py``), one utterance at a time as
  ``extract_gmp.py`` encodes them, under the eval precision; then the frames go
  to a float16 ``FeatureCacheWriter`` (timed apart).
- **k-means** (faiss, ``lobes.gmp.kmeans.fit_kmeans`` with ``kmeans_iterations``) on synthetic
  frames of the encoder's width, one fit per GMP scale on the fold's training frames (capped
  at ``kmeans_max_frames``, 1 M), and the label assignment (``KMeansModel.predict``). faiss runs
  a fixed number of exhaustive Lloyd iterations, so the time does not depend on the frames'
  content. ``--kmeans_frames`` fits fewer frames; the time is then scaled linearly to the
  fold's count (said so in the table).
- **Checkpoint save**: the encoder and both optimizers' states written with ``torch.save``
  and fsync'ed, once; the recipe saves one checkpoint per epoch.
- **Peak memory** of each (stage, precision): ``torch.cuda.max_memory_allocated`` on a GPU;
  on CPU the process's peak resident set (``VmHWM``, reset before each measurement through
  ``/proc/self/clear_refs``; ``ru_maxrss`` where that is impossible).

FLOP count and MFU
------------------
Counted analytically from ``config.json`` at each batch's padded shape (2 FLOP per
multiply-add; matrix products and convolutions only, norms, activations, softmax and the
optimizer are not counted):

- CNN front end: ``2 * c_in * c_out * kernel * L_out`` per conv layer, at the padded length
  (group-norm front ends run per utterance in ``SSLEncoder``: at each utterance's length);
- feature projection ``2 * c_last * H`` per frame; positional convolution
  ``2 * (H / groups) * kernel * H`` per output frame;
- each transformer layer ``8 H^2 + 4 H F`` per frame (Q, K, V, output; FFN) plus attention
  ``4 T H`` per frame (``Q K^T`` and ``A V`` over the batch's padded length ``T``);
- heads (the frame heads of stage 1: ``2 H (64 + 256 + 1024)`` per frame). WavLM's gated
  relative position bias (a few small products per head) is not counted.

A training step costs the frozen CNN's forward once plus 3 times (forward + backward) all the
rest, with the transformer layers that LayerDrop actually ran in that step (counted by
hooks); the projection uses the expected count ``(1 - layerdrop) * L``. Evaluation and
extraction are forward only. Two cross-checks with ``torch.utils.flop_counter.FlopCounterMode``
(eager attention, so that the attention products are seen), both printed as ratios: one
forward of a 4 s clip, and one stage-0 training step against the 3x rule (with torch's count
of a grouped convolution's weight gradient corrected: ``grouped_conv_backward_flop``); both
are 1.0000 for hubert_large and the shrunk models. MFU = counted FLOP per
second of wall time (optimizer included) / the device's peak: dense datasheet peaks of known
GPUs (``PEAK_TFLOPS``, chosen by ``torch.cuda.get_device_name``), on CPU an estimate (cores x
clock x FLOP per cycle from the CPU flags); ``--peak_tflops`` overrides either. On a CPU
without native bf16 (no AVX512-BF16 or AMX) bf16 autocast falls back to slow kernels: about
30 times slower than fp32 for hubert_large on the 2-core AMD EPYC (AVX2) where this was
written, so ``--precisions fp32`` is the sensible choice there.

Projection
----------
Per fold: stage 0, stage 1, stage 2 and the baseline each run ``number_of_epochs`` epochs of
(every training batch of the epoch + one validation pass + one checkpoint save) and one test
pass; the GMP extraction encodes all three splits once; k-means fits each scale once and labels
every frame. A training epoch costs ``batches x optimizer step + epoch FLOP / measured
forward+backward FLOP/s`` (so every batch shape of the epoch counts, not only the timed
ones), a validation or test pass ``FLOP / measured evaluation FLOP/s``. Times 5 folds. Not
counted: audio loading and data pipeline (``num_workers: 0`` in the recipe), model loading,
the cluster report, process start-up. Disk: ``lobes.runner.disk.plan`` with the encoder's parameter
count and the fold's float16 feature cache, as ``run_cv.py`` prints it.

Usage::

    python benchmarks/scale_bench.py [--encoder hubert_large] [--device cuda]
        [--precisions fp32,bf16] [--steps 3] [--max_batch_length 60] [--kmeans_frames N]
        [--peak_tflops 989] [--threads N] [--quick]

A GPU user: ``--device cuda`` (fp32 and bf16, full size, the shipped 60 s batches; k-means
runs on the machine's CPU, as in the recipe; not yet run on a GPU). ``--max_batch_length 120``
and the peak memory column say whether larger batches fit; a stage that runs out of memory is
reported and the others go on. ``--n_layers``, ``--hidden_size`` and ``--conv_dim`` shrink the
encoder (the GMP layer keeps its relative depth). ``--quick`` shrinks it to ``QUICK_SIZE`` and
takes 15 s batches, no warm-up, 2 steps and a small k-means: the test suite runs it on CPU
(about 20 s).

The last line printed is ``audio_s_per_s=<training audio seconds per second, all stages, the
faster precision> projected_hours=<5 folds of gmp_tl + baseline at that precision>
disk_gb=<lobes.runner.disk.plan peak>``.
"""

import argparse
import contextlib
import gc
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before torch, which imports tqdm

import numpy as np  # noqa: E402
import torch  # noqa: E402
from batching_bench import duration_dataset, iemocap_like_durations  # noqa: E402
from bench_utils import (  # noqa: E402
    RECIPE,
    REPO,
    cpu_peak_kb,
    load_note,
    machine_line,
    recipe_module,
    reset_cpu_peak,
    status_kb,
)

STAGE_FILES = {
    "stage0": "stage0_mtl.yaml",
    "stage1": "stage1.yaml",
    "stage2": "stage2.yaml",
    "baseline": "baseline.yaml",
}
STAGE_NAMES = {
    "stage0": "stage 0: emotion + gender, pooled",
    "stage1": "stage 1: GMP frame heads",
    "stage2": "stage 2: cosine head, AM-Softmax",
    "baseline": "baseline: linear head, CE",
}
PRECISIONS = ("fp32", "bf16")
SAMPLE_RATE = 16000
N_FOLDS = 5
GB = 1e9
# --quick: the shrunk encoder (write_random_encoder's size arguments; SHRUNK_SIZE of
# lobes.fixtures.encoders), shorter training batches (a shrunk model keeps the hub's 16 attention
# heads, so its attention costs as much as the full model's), a small k-means
QUICK_SIZE = {"n_layers": 2, "hidden_size": 32, "conv_dim": 16}
QUICK_MAX_BATCH_LENGTH = 15.0
QUICK_KMEANS_FRAMES = 16000
FLOP_CHECK_SECONDS = 4.0
ASSUMED_GPU_MFU = 0.35  # only for the clearly marked estimate without a GPU run
# Dense (no sparsity) datasheet peaks in TFLOP/s: bf16 tensor cores; fp32 without TF32 (what
# PyTorch's matrix products use by default). First matching pattern wins.
PEAK_TFLOPS = [
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.2}),
    ("H100 NVL", {"bf16": 835.0, "fp32": 60.0}),
    ("H100", {"bf16": 989.0, "fp32": 67.0}),  # SXM ("H100 80GB HBM3")
    ("H200", {"bf16": 989.0, "fp32": 67.0}),
    ("GH200", {"bf16": 989.0, "fp32": 67.0}),
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp32": 30.3}),
]


# ---------------------------------------------------------------- recipe settings


# extract_gmp.py encodes one utterance at a time (its GMPs never depend on a batch)
EXTRACTION_BATCH = 1


def _plain(value):
    """A ruamel value as plain Python (tagged ``!ref`` values as their ``<...>`` text)."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(getattr(value, "value", value))


def _tag(value):
    tag = getattr(value, "tag", None)
    return getattr(tag, "value", tag)


def recipe_settings(encoder_name):
    """The shipped hparams values the benchmark needs: ``{stage: {...}, "gmp": {...},
    "encoder": {...}}`` (stage files composed with common.yaml, as the stage scripts see them).

    Example
    -------
    >>> settings = recipe_settings("hubert_large")
    >>> settings["stage1"]["number_of_epochs"], settings["stage1"]["gmp_scales"]
    (10, [64, 256, 1024])
    >>> settings["encoder"]["gmp_layer"], settings["encoder"]["layerdrop"]
    (12, 0.1)
    """
    from lobes.runner.hparams import compose, raw_values

    settings = {}
    for stage, file_name in STAGE_FILES.items():
        values = raw_values(compose(RECIPE / "hparams" / file_name))
        settings[stage] = {key: _plain(value) for key, value in values.items()
                           if _tag(value) is None or key == "embedding_size"}
    gmp = raw_values(compose(RECIPE / "hparams" / "gmp.yaml"))
    settings["gmp"] = {key: _plain(gmp[key]) for key in (
        "kmeans_max_frames", "kmeans_iterations", "kmeans_backend",
        "keep_feature_cache", "gmp_scales", "valid_ratio", "expected_utterances")}
    fragment = raw_values((REPO / "hparams" / "encoders" / f"{encoder_name}.yaml").read_text())
    settings["encoder"] = {key: _plain(fragment[key]) for key in (
        "gmp_layer", "layerdrop", "apply_spec_augment", "mask_time_prob")}
    return settings


# ---------------------------------------------------------------- durations and batches


def to_samples(durations):
    """Seconds -> 16 kHz sample counts (int64 array)."""
    return np.round(np.asarray(durations, dtype=float) * SAMPLE_RATE).astype(np.int64)


def fold_durations(valid_ratio, seed=0):
    """One fold of the IEMOCAP-like set: a fifth as test, ``valid_ratio`` of the rest as valid.

    Example
    -------
    >>> splits = fold_durations(0.1)
    >>> {split: len(d) for split, d in splits.items()}
    {'train': 3983, 'valid': 442, 'test': 1106}
    """
    durations = iemocap_like_durations(seed=seed)
    order = np.random.default_rng(seed + 1).permutation(len(durations))
    n_test = round(len(durations) / N_FOLDS)
    rest = durations[order[n_test:]]
    n_valid = round(valid_ratio * len(rest))
    return {"train": rest[n_valid:], "valid": rest[:n_valid], "test": durations[order[:n_test]]}


def train_batches(durations, max_batch_length, num_buckets, epoch=0):
    """One epoch of index batches from the recipe's sampler (``train_loader_options``)."""
    from lobes.data.datasets import train_loader_options

    hparams = {"dynamic_batching": True, "max_batch_length": max_batch_length,
               "num_buckets": int(num_buckets), "batch_size": 4}
    sampler = train_loader_options(hparams, duration_dataset(durations))["batch_sampler"]
    sampler.set_epoch(epoch)
    return [[int(index) for index in batch] for batch in sampler]


def sorted_batches(durations, batch_size):
    """Batches of ``batch_size`` utterances in ascending duration (valid, test, extraction).

    Example
    -------
    >>> sorted_batches(np.array([3.0, 1.0, 2.0]), 2)
    [[1, 2], [0]]
    """
    order = np.argsort(np.asarray(durations), kind="stable").tolist()
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def pick_batches(batches, samples, n_timed):
    """The warm-up batch (the largest padded batch) and ``n_timed`` batches at evenly spaced
    quantiles of the padded size.

    Example
    -------
    >>> batches = [[0], [1], [2], [3]]
    >>> pick_batches(batches, np.array([10, 40, 20, 30]), 2)
    ([1], [[2], [3]])
    """
    padded = [len(batch) * int(samples[batch].max()) for batch in batches]
    order = np.argsort(padded, kind="stable")
    n_timed = min(n_timed, len(batches))
    positions = sorted({round((i + 0.5) / n_timed * (len(batches) - 1))
                        for i in range(n_timed)})
    return batches[int(order[-1])], [batches[int(order[p])] for p in positions]


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


# ---------------------------------------------------------------- FLOP count


def embedding_size(value, hidden):
    """Stage 2's ``embedding_size``: null (no embedding), ``!ref <encoder_dim>`` or an int."""
    if value in (None, "None", "null"):
        return None
    return hidden if value == "<encoder_dim>" else int(value)


class FlopModel:
    """Analytic FLOP count of the encoder and heads (see the module docstring).

    Arguments
    ---------
    config : transformers.PretrainedConfig
        The encoder's configuration (``config.json``).
    settings : dict
        ``recipe_settings(...)``: heads' sizes.

    Example
    -------
    >>> from transformers import AutoConfig
    >>> from lobes.fixtures.encoders import hub_config
    >>> values = hub_config("hubert_large")
    >>> config = AutoConfig.for_model(values.pop("model_type"), **values)
    >>> model = FlopModel(config, recipe_settings("hubert_large"))
    >>> round(model.forward([SAMPLE_RATE])["total"] / 1e9, 1)  # GFLOP, 1 s clip
    35.6
    """

    def __init__(self, config, settings):
        self.hidden = int(config.hidden_size)
        self.ffn = int(config.intermediate_size)
        self.layers = int(config.num_hidden_layers)
        self.conv = list(zip(config.conv_dim, config.conv_kernel, config.conv_stride,
                             strict=True))
        self.pos_kernel = int(config.num_conv_pos_embeddings)
        self.pos_groups = int(config.num_conv_pos_embedding_groups)
        self.per_utterance_front_end = config.feat_extract_norm == "group"
        self.settings = settings

    def _conv(self, n_samples):
        flops, length, channels_in = 0, int(n_samples), 1
        for channels_out, kernel, stride in self.conv:
            length = (length - kernel) // stride + 1
            flops += 2 * channels_in * channels_out * kernel * length
            channels_in = channels_out
        return flops, length

    def front_end(self, samples):
        """CNN FLOPs of a batch whose utterances hold ``samples`` (padded to the longest)."""
        if self.per_utterance_front_end:
            return sum(self._conv(n)[0] for n in samples)
        return len(samples) * self._conv(max(samples))[0]

    def frames(self, samples):
        """Padded frame count of the batch."""
        return self._conv(max(samples))[1]

    def layer(self, batch, frames):
        """One transformer layer on ``batch x frames`` (dense part + attention)."""
        dense = batch * frames * (8 * self.hidden ** 2 + 4 * self.hidden * self.ffn)
        return dense + 4 * batch * frames ** 2 * self.hidden

    def head(self, stage, batch, frames):
        """The stage's heads (pooling and losses are not matrix products)."""
        values = self.settings.get(stage, {})
        n_emotions = int(values.get("n_emotions", 4))
        if stage == "stage0":
            return 2 * self.hidden * (n_emotions + 2) * batch
        if stage == "stage1":
            outputs = sum(k * (2 if values.get("gmp_gender_split") else 1)
                          for k in values["gmp_scales"])
            emotion = 2 * self.hidden * n_emotions * batch if values.get("alpha", 0) > 0 else 0
            return 2 * self.hidden * outputs * batch * frames + emotion
        if stage == "stage2":
            embedding = embedding_size(values.get("embedding_size"), self.hidden)
            if embedding is None:
                return 2 * self.hidden * n_emotions * batch
            return 2 * (self.hidden * embedding + embedding * n_emotions) * batch
        if stage == "baseline":
            return 2 * self.hidden * n_emotions * batch
        return 0

    def forward(self, samples, layers=None, stage=None):
        """Forward FLOPs of one batch, by part: ``{"cnn", "projection", "positional",
        "layers", "attention", "heads", "total"}``."""
        layers = self.layers if layers is None else layers
        batch, frames = len(samples), self.frames(samples)
        pos_frames = frames + 2 * (self.pos_kernel // 2) - self.pos_kernel + 1
        parts = {
            "cnn": self.front_end(samples),
            "projection": 2 * self.conv[-1][0] * self.hidden * batch * frames,
            "positional": 2 * (self.hidden // self.pos_groups) * self.pos_kernel * self.hidden
            * batch * pos_frames,
            "layers": layers * self.layer(batch, frames),
            "attention": layers * 4 * batch * frames ** 2 * self.hidden,
            "heads": self.head(stage, batch, frames),
        }
        parts["total"] = (parts["cnn"] + parts["projection"] + parts["positional"]
                          + parts["layers"] + parts["heads"])
        return parts

    def train_step(self, stage, samples, layers_run):
        """Forward + backward FLOPs: the frozen CNN once, everything else 3 times."""
        parts = self.forward(samples, layers_run, stage)
        return parts["cnn"] + 3 * (parts["total"] - parts["cnn"])


# ---------------------------------------------------------------- device helpers


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


def cpu_peak_tflops(threads):
    """Estimated CPU peak ``{"fp32", "bf16"}`` in TFLOP/s and how it was estimated."""
    flags, mhz = set(), None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
    ghz = (mhz or 2000.0) / 1000
    if "avx512f" in flags:
        fp32, isa = 64, "AVX-512, 2 FMA units assumed"
    elif {"avx2", "fma"} <= flags:
        fp32, isa = 32, "AVX2 + FMA, 2 FMA units assumed"
    else:
        fp32, isa = 8, "no AVX2/FMA"
    if "amx_bf16" in flags:
        bf16, bf16_note = 1024, "AMX-BF16"
    elif "avx512_bf16" in flags:
        bf16, bf16_note = 2 * fp32, "AVX512-BF16"
    else:
        bf16, bf16_note = fp32, "no native bf16: fp32 rate at best"
    peaks = {"fp32": threads * ghz * fp32 / 1e3, "bf16": threads * ghz * bf16 / 1e3}
    how = (f"ESTIMATE: {threads} threads x {ghz:.2f} GHz x {fp32} fp32 FLOP/cycle ({isa}); "
           f"bf16 {bf16} FLOP/cycle ({bf16_note})")
    return peaks, how


def device_peaks(device, override):
    """``({"fp32", "bf16"} TFLOP/s or None, description)``; ``override`` ("989" or
    "fp32=67,bf16=989") wins."""
    peaks, how = {"fp32": None, "bf16": None}, "unknown device: give --peak_tflops"
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(device)
        for pattern, values in PEAK_TFLOPS:
            if pattern in name:
                peaks, how = dict(values), f"{name}: datasheet dense peaks (table {pattern!r})"
                break
        else:
            how = f"{name}: not in the table of peaks; give --peak_tflops"
    else:
        peaks, how = cpu_peak_tflops(torch.get_num_threads())
    if override:
        for item in override.split(","):
            key, _, value = item.rpartition("=")
            for precision in ([key] if key else PRECISIONS):
                peaks[precision] = float(value)
        how = f"--peak_tflops {override} (given)"
    return peaks, how


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


# ---------------------------------------------------------------- models


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


# ---------------------------------------------------------------- measurements


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
        # .float(): extract_gmp.py calls .numpy() on the autocast output directly, which fails
        # for bf16 (reported; not changed here)
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


def grouped_conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding,
                               _dilation, transposed, _output_padding, _groups, output_mask,
                               out_shape):
    """``aten.convolution_backward`` FLOPs with the groups in the weight gradient.

    torch 2.9's ``flop_counter.conv_backward_flop`` counts the weight gradient of a grouped
    convolution as if it were dense (``groups`` times too many: 16 for the positional
    convolution). Each weight element takes one multiply-add per output position of each
    utterance, hence ``2 * weight elements * batch * output length``; the input gradient is
    counted as torch does.
    """
    from torch.utils.flop_counter import conv_flop_count

    flop = 0
    if output_mask[0]:
        flop += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:
        flop += 2 * math.prod(w_shape) * grad_out_shape[0] * math.prod(grad_out_shape[2:])
    return flop


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


# ---------------------------------------------------------------- projection


def projection(settings, splits, batches, flops, training, evaluation, extraction, kmeans,
               checkpoint_s, precision):
    """``[(row name, runs per fold, {part: hours for 5 folds})]`` for ``precision``."""
    from lobes.models.frames import n_frames

    samples = {split: to_samples(d) for split, d in splits.items()}
    hours = 3600.0
    rows = []
    for stage in STAGE_FILES:
        values = settings[stage]
        train = training[stage][precision]
        ev = evaluation[stage][precision]
        if train is None or ev is None or not train["steps"]:
            return None
        expected_layers = (1 - settings["encoder"]["layerdrop"]) * flops.layers
        epoch_flop = sum(flops.train_step(stage, samples["train"][b].tolist(), expected_layers)
                         for b in batches[stage])
        rate = train["flop"] / (train["time_s"] - train["optimizer_s"])
        train_s = len(batches[stage]) * train["optimizer_s"] / train["steps"] + epoch_flop / rate
        eval_rate = ev["flop"] / ev["time_s"]

        valid_s, test_s = (
            sum(flops.forward(samples[split][b].tolist(), stage=stage)["total"]
                for b in sorted_batches(splits[split], values["eval_batch_size"])) / eval_rate
            for split in ("valid", "test"))
        epochs = values["number_of_epochs"]
        parts = {"train": epochs * train_s, "valid": epochs * valid_s, "test": test_s,
                 "checkpoints": epochs * checkpoint_s, "gmp": 0.0}
        rows.append((stage, f"{epochs} epochs", {k: N_FOLDS * v / hours
                                                 for k, v in parts.items()}))
        if stage == "stage0":
            ex = extraction[precision]
            if ex is None:
                return None
            layer = settings["encoder"]["gmp_layer"]
            extract_flop = sum(
                flops.forward(samples[split][b].tolist(), layers=layer)["total"]
                for split in splits
                for b in sorted_batches(splits[split], EXTRACTION_BATCH))
            all_frames = sum(n_frames(int(n)) for split in splits for n in samples[split])
            extract_s = (extract_flop / (ex["flop"] / ex["encode_s"])
                         + all_frames * ex["write_s"] / ex["frames"])
            rows.append(("gmp extraction", "1 pass", {"train": 0.0, "valid": 0.0, "test": 0.0,
                                                      "checkpoints": 0.0,
                                                      "gmp": N_FOLDS * extract_s / hours}))
            kmeans_s = sum(row["fit_s"] * kmeans["scale"] + row["assign_s"] * kmeans["assign_scale"]
                           for row in kmeans["rows"].values())
            scales = "/".join(str(k) for k in kmeans["rows"])
            rows.append((f"k-means K={scales}", "fit + labels", {
                "train": 0.0, "valid": 0.0, "test": 0.0, "checkpoints": 0.0,
                "gmp": N_FOLDS * kmeans_s / hours}))
    return rows


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


# ---------------------------------------------------------------- main


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


_STARTED = time.perf_counter()


def progress(message):
    """A progress line on stderr (stdout holds the report, the summary line last)."""
    print(f"[{time.perf_counter() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


def fmt_count(n):
    """A parameter count: ``315.4 M`` or, below a million, ``29,952``."""
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def fmt_bytes(n):
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet()
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    from lobes.models.encoder import encoder_config
    from lobes.models.frames import n_frames
    from lobes.runner.disk import feature_cache_bytes, parameter_counts, plan

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    settings = recipe_settings(args.encoder)
    size = {key: getattr(args, key) for key in ("n_layers", "hidden_size", "conv_dim")}
    if size["n_layers"]:  # the GMP layer at the same relative depth
        from lobes.fixtures.encoders import HUB_CONFIGS

        hub_layers = HUB_CONFIGS[args.encoder]["config"]["num_hidden_layers"]
        settings["encoder"]["gmp_layer"] = max(
            1, round(settings["encoder"]["gmp_layer"] * size["n_layers"] / hub_layers))
    splits = fold_durations(settings["gmp"]["valid_ratio"], args.seed)
    samples = {split: to_samples(d) for split, d in splits.items()}
    print(machine_line())
    peaks, peaks_how = device_peaks(args.device, args.peak_tflops)
    print(f"device {args.device}; peak TFLOP/s fp32 "
          f"{peaks['fp32'] if peaks['fp32'] is not None else 'n/a'}, bf16 "
          f"{peaks['bf16'] if peaks['bf16'] is not None else 'n/a'} ({peaks_how})")

    with tempfile.TemporaryDirectory(prefix="scale_bench_") as scratch:
        work = Path(scratch)
        started = time.perf_counter()
        folder, label = encoder_folder(args.encoder, args.model_dir or work / "models", size)
        config = encoder_config(folder)
        flops = FlopModel(config, settings)
        total_params, front_end_params = parameter_counts(config)
        print(f"encoder: random-weight {label} ({config.num_hidden_layers} layers x "
              f"{config.hidden_size}, FFN {config.intermediate_size}, CNN {len(config.conv_dim)}"
              f" x {config.conv_dim[0]}, {config.feat_extract_norm}-norm front end; "
              f"{fmt_count(total_params)} parameters, {fmt_count(front_end_params)} frozen "
              f"CNN), written/loaded in {time.perf_counter() - started:.1f} s; freeze "
              f"{settings['stage0']['freeze_encoder']}, layerdrop "
              f"{settings['encoder']['layerdrop']}, SpecAugment "
              f"{settings['encoder']['apply_spec_augment']} (mask_time_prob "
              f"{settings['encoder']['mask_time_prob']})")
        print("fold (IEMOCAP-like durations, see docstring): "
              + ", ".join(f"{split} {len(d)} utts {d.sum() / 3600:.2f} h"
                          for split, d in splits.items()))
        batches = {}
        for stage in STAGE_FILES:
            length = args.max_batch_length or settings[stage]["max_batch_length"]
            batches[stage] = train_batches(splits["train"], length,
                                           settings[stage]["num_buckets"])
        first = batches["stage0"]
        padded = sum(len(b) * samples["train"][b].max() for b in first)
        print(f"training batches (DynamicBatchSampler, max_batch_length "
              f"{args.max_batch_length or settings['stage0']['max_batch_length']:g} s, "
              f"num_buckets {settings['stage0']['num_buckets']}): {len(first)} per epoch, "
              f"largest {max(len(b) * samples['train'][b].max() for b in first) / SAMPLE_RATE:.1f}"
              f" s padded, {100 * (1 - samples['train'].sum() / padded):.1f} % padding")

        rss_start = 1024 * (status_kb("VmRSS") or 0)
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

        extraction = {}
        extract_batches = sorted_batches(splits["train"], EXTRACTION_BATCH)
        for precision in args.precisions:
            extraction[precision] = measure_extraction(
                folder, settings, extract_batches, samples["train"], precision, args, flops,
                work, generator)
            progress(f"extraction {precision} measured")

        fold_train_frames = sum(n_frames(int(n)) for n in samples["train"])
        all_frames = sum(n_frames(int(n)) for split in samples for n in samples[split])
        fit_frames_real = min(fold_train_frames, settings["gmp"]["kmeans_max_frames"])
        fit_frames = min(args.kmeans_frames or fit_frames_real, fit_frames_real)
        kmeans_rows = measure_kmeans(config.hidden_size, settings["stage1"]["gmp_scales"],
                                     fit_frames, settings["gmp"]["kmeans_iterations"], args.seed)
        kmeans = {"rows": kmeans_rows, "scale": fit_frames_real / fit_frames,
                  "assign_scale": all_frames / fit_frames}
        progress("k-means measured")

    # ---- the FLOP count
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
    expected_layers = (1 - settings["encoder"]["layerdrop"]) * flops.layers
    for stage in STAGE_FILES:
        epoch_flop = sum(flops.train_step(stage, samples["train"][b].tolist(), expected_layers)
                         for b in batches[stage])
        print(f"  training {stage}: {epoch_flop / splits['train'].sum() / 1e9:.4f} GFLOP per "
              f"second of audio over an epoch's batches (padding and attention at their "
              f"lengths; {expected_layers:g} layers expected with LayerDrop)")
    for what, counted, analytic in checks:
        print(f"  cross-check FlopCounterMode, {what}: counted {counted / 1e9:.3f} GFLOP, "
              f"analytic {analytic / 1e9:.3f} GFLOP (ratio {counted / analytic:.4f})")

    # ---- measured tables
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
            rate = row["flop"] / row["time_s"] / 1e12
            mfu = f"{100 * rate / peaks[precision]:6.2f}" if peaks[precision] else "   n/a"
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
        memory_kind += f"; {fmt_bytes(rss_start)} resident before the first stage"
    print(f"peak mem: {memory_kind}, per (stage, precision)"
          + ("" if all(r is None or r["peak_reset"] for s in training.values()
                       for r in s.values()) else "; could not be reset: process peak so far"))
    print(f"checkpoint save (encoder + both Adam states, torch.save + fsync): "
          f"{checkpoint_s:.2f} s for {fmt_bytes(checkpoint_bytes)}")

    print(f"\nevaluation (valid/test: Brain.evaluate_batch, {eval_size} utterances per batch "
          f"sorted by duration, {args.eval_steps} timed batches):")
    print(f"| {'stage':<8} | {'prec':<4} | {'batches':>7} | {'audio s/s':>9} | {'TFLOP/s':>8} | "
          f"{'MFU %':>6} |")
    print(f"|{'-' * 10}|{'-' * 6}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 8}|")
    for stage in STAGE_FILES:
        for precision in args.precisions:
            row = evaluation[stage][precision]
            if row is None:
                continue
            rate = row["flop"] / row["time_s"] / 1e12
            mfu = f"{100 * rate / peaks[precision]:6.2f}" if peaks[precision] else "   n/a"
            print(f"| {stage:<8} | {precision:<4} | {row['batches']:>7} | "
                  f"{row['audio_s'] / row['time_s']:>9.2f} | {rate:>8.4f} | {mfu} |")

    layer = settings["encoder"]["gmp_layer"]
    print(f"\nGMP extraction (frozen encoder up to layer {layer} of {flops.layers}, one utterance "
          "at a time as extract_gmp.py encodes them, float16 cache):")
    print(f"| {'prec':<4} | {'batches':>7} | {'audio s/s':>9} | {'TFLOP/s':>8} | "
          f"{'cache write us/frame':>20} |")
    print(f"|{'-' * 6}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 22}|")
    for precision in args.precisions:
        row = extraction[precision]
        print(f"| {precision:<4} | {row['batches']:>7} | {row['audio_s'] / row['encode_s']:>9.2f}"
              f" | {row['flop'] / row['encode_s'] / 1e12:>8.4f} | "
              f"{1e6 * row['write_s'] / row['frames']:>20.2f} |")

    scaled = "" if fit_frames == fit_frames_real else (
        f"; fit times scaled x{kmeans['scale']:.2f} to the fold's {fit_frames_real} frames")
    print(f"\nk-means (faiss, {settings['gmp']['kmeans_iterations']} iterations, {fit_frames} x "
          f"{config.hidden_size} synthetic frames{scaled}; labels of all {all_frames} frames of "
          f"a fold, scaled from {fit_frames}):")
    print(f"| {'K':>5} | {'fit s (measured)':>16} | {'fit s (fold)':>12} | "
          f"{'labels frames/s':>15} | {'labels s (fold)':>15} |")
    print(f"|{'-' * 7}|{'-' * 18}|{'-' * 14}|{'-' * 17}|{'-' * 17}|")
    for k, row in kmeans_rows.items():
        print(f"| {k:>5} | {row['fit_s']:>16.2f} | {row['fit_s'] * kmeans['scale']:>12.1f} | "
              f"{fit_frames / row['assign_s']:>15,.0f} | "
              f"{row['assign_s'] * kmeans['assign_scale']:>15.1f} |")

    # ---- projection, disk
    cache = feature_cache_bytes(
        [{str(i): {"duration": float(d)} for i, d in enumerate(splits[split])}
         for split in splits], config.hidden_size, 1)
    lines, peak = plan(4, N_FOLDS, total_params, front_end_params, cache, hub_download=True,
                       keep_feature_cache=bool(settings["gmp"]["keep_feature_cache"]))
    totals = {}
    for precision in args.precisions:
        rows = projection(settings, splits, batches, flops, training, evaluation, extraction,
                          kmeans, checkpoint_s, precision)
        if rows is None:
            print(f"\nprojection, {precision}: n/a (a stage ran out of memory)")
            continue
        totals[precision] = print_projection(rows, precision)
    print(f"\ndisk (lobes.runner.disk.plan, {fmt_count(total_params)} encoder parameters, "
          f"run_cv.py --systems gmp_tl,baseline: 4 training steps per fold):")
    for line, size_bytes in lines:
        print(f"  {size_bytes / GB:8.3f} GB  {line}")
    print(f"  {peak / GB:8.3f} GB  at the peak, for the whole run")

    run_flop = 0.0
    for stage in STAGE_FILES:
        values = settings[stage]
        run_flop += values["number_of_epochs"] * sum(
            flops.train_step(stage, samples["train"][b].tolist(), expected_layers)
            for b in batches[stage])
        run_flop += sum(flops.forward(samples[split][b].tolist(), stage=stage)["total"]
                        * (values["number_of_epochs"] if split == "valid" else 1)
                        for split in ("valid", "test")
                        for b in sorted_batches(splits[split], values["eval_batch_size"]))
    run_flop = N_FOLDS * run_flop
    h100 = dict(PEAK_TFLOPS)["H100"]["bf16"] * 1e12
    print(f"\nESTIMATE, not a measurement: the run's training and evaluation cost "
          f"{run_flop / 1e15:.1f} PFLOP (analytic count above); at an H100 SXM's dense bf16 "
          f"peak ({h100 / 1e12:.0f} TFLOP/s) that is a floor of {run_flop / h100 / 3600:.3f} h, "
          f"at an assumed {100 * ASSUMED_GPU_MFU:.0f} % MFU "
          f"{run_flop / h100 / ASSUMED_GPU_MFU / 3600:.2f} h"
          f", plus the k-means, extraction and checkpoint writes. Real GPU figures need this "
          f"benchmark run on the GPU (--device cuda).")
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


if __name__ == "__main__":
    main()
