"""What the recipe's steps cost in FLOP, counted analytically, and what a device can do.

``FlopModel`` counts the matrix products and convolutions of the encoder and heads at a batch's
padded shape; ``device_peaks`` gives the peak that MFU divides by. The counting rules, the
cross-checks against ``torch.utils.flop_counter.FlopCounterMode`` and the peaks' sources are in
docs/reference.md (Benchmarks, ``scale_bench.py``).
"""

import contextlib
import math
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16")
FLOP_CHECK_SECONDS = 4.0
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


def embedding_size(value, hidden):
    """Stage 2's ``embedding_size``: null (no embedding), ``!ref <encoder_dim>`` or an int."""
    if value in (None, "None", "null"):
        return None
    return hidden if value == "<encoder_dim>" else int(value)


class FlopModel:
    """Analytic FLOP count of the encoder and heads (the rules: docs/reference.md, Benchmarks).

    Arguments
    ---------
    config : transformers.PretrainedConfig
        The encoder's configuration (``config.json``).
    settings : dict
        ``recipe_settings(...)``: heads' sizes.

    Example
    -------
    >>> from scale_fold import SAMPLE_RATE, recipe_settings
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
