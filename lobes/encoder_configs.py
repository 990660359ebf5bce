"""Hub configurations of the self-supervised speech encoders, and random-weight stand-ins.

Nothing here reaches the Hugging Face hub. ``HUB_CONFIGS`` holds, for each encoder the recipe can
load, the values of its hub ``config.json`` that a transformers 5 ``HubertModel`` /
``WavLMModel`` / ``Wav2Vec2Model`` reads, and its ``preprocessor_config.json``.
``write_random_encoder`` saves a random-weight model of that configuration (full size, or shrunk
in depth and width only) beside its feature extractor, so that the folder loads offline exactly
like a hub checkpoint (``AutoModel.from_pretrained(folder)``, SpeechBrain's HF wrappers).

Where each value was read
-------------------------
The hub itself cannot be reached from here. Values were read from stored copies of the hub's
pages and from files that re-save the hub configuration; each value carries a tag:

``[HB-orig]``
    huggingface.co/facebook/hubert-base-ls960/commit/9f09f231603036680b886349d4940a13c5a124e2
    (the original repository's "add model" diff, 2021-08-26: context lines 1-4 and 63-68).
``[HB-save]``
    huggingface.co/balaji1312/hubert_myst/commit/6795835e6acfcd791498e5d66541df2267d60057
    (a third-party ``HubertModel`` upload whose config re-saves facebook/hubert-base-ls960
    unchanged as far as seen: architectures, ctc keys at their defaults; lines 1-47).
``[HB-ft]``
    huggingface.co/danieleV9H/hubert-base-timit-demo-google-colab-ft30ep_v5/blame/
    b3aadc14f39e5b1958e88ec049205d322d61e018/config.json (a CTC fine-tune *derived* from
    facebook/hubert-base-ls960; it agrees with [HB-save] wherever both show a value).
``[HL-orig]``
    huggingface.co/facebook/hubert-large-ll60k/commit/c094cc2898ae2b1383418570799c2ecbe14c0f79
    (original "add hubert large", lines 1-47) and
    huggingface.co/facebook/hubert-large-ll60k/commit/a245e38d36474c2325955d3569c625f41357de4a
    (original "add model", context lines 70-75).
``[HL-superb]``
    huggingface.co/superb/hubert-large-superb-er/blame/main/config.json (HF's SUPERB port,
    initialised from facebook/hubert-large-ll60k; agrees with [HL-orig] on lines 1-47).
``[HL-ft]``
    huggingface.co/r-sharma-coder/hubert-large-ll60k-librispeech-multi-gpu/blame/main/config.json
    (a fine-tune *derived* from hubert-large-ll60k; used for SpecAugment values only).
``[WBP-save]``
    github.com/ngclara07/CM3070-Final-Project @630dab66, models/wavlm-base-plus/config.json
    (a transformers-5.5.4 ``save_pretrained`` of microsoft/wavlm-base-plus, whole file; it still
    carries the hub file's legacy keys ``mask_channel_*`` and ``tokenizer_class``).
``[WL-orig]``
    huggingface.co/microsoft/wavlm-large/blame/0dbabc6a27851369dce2818822de5b5577c4b010/config.json
    (original, lines 1-50) and
    huggingface.co/microsoft/wavlm-large/commit/38b04afdf061607fdccc24c4ca4e8c3ae339012f
    (original "correct", giving the current file: lines 74-80 and 91-97).
``[WL-copy]``
    huggingface.co/spaces/SalahZa/Code-Switched-Tunisian-SpeechToText/blob/main/wavlm-large/
    config.json (verbatim copy of the current file, ``"./wavlm-large/"``; lines 1-50 agree with
    [WL-orig]).
``[W2L-save]``
    github.com/FlemmeFacile/khanty_audio @5e4e1d0b, wav2vec2-large-lv60/config.json (a
    transformers-4.57.3 ``save_pretrained`` of facebook/wav2vec2-large-lv60, whole file; the
    legacy keys ``hidden_dropout_prob`` and ``feat_extract_dropout`` are still there).
``[W2L-orig]``
    huggingface.co/facebook/wav2vec2-large-lv60/commit/af3fc8a7ec274159bd4d7c6ddbd7f11e0f07b05d
    (original, lines 44-50).
``[hf-default]``
    not read on any copy of the hub file: the transformers 5.23 config-class default, believed
    to match (an assumption, said so at the value).
``[param-count]``
    the full-size parameter count computed here matches the published size within 1 % (see
    ``parameter_count``), which corroborates depth, width and the positional convolution, not
    the dropouts or flags.

Keys of the hub files that no transformers 5 base model reads are left out: legacy
``mask_channel_*``, ``mask_time_other/selection/min_space``, ``hidden_dropout_prob``,
``feat_extract_dropout``, ``gradient_checkpointing``, ``tokenizer_class``, the CTC, pre-training
(quantizer, ``num_negatives``...), x-vector and adapter head keys, and the token ids.

Feature extractors: no copy of any of the five ``preprocessor_config.json`` files could be read.
Their values are from memory of the hub files (**unverified**), only partly corroborated by the
file sizes that the hub's tree pages show (see ``_FE_NOTES``).
"""

import copy
import tempfile
from functools import cache
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

from lobes.disk import parameter_counts

__all__ = [
    "HUB_CONFIGS",
    "SHRUNK_SIZE",
    "SIZE_FIELDS",
    "hub_config",
    "parameter_count",
    "shrunk",
    "write_random_encoder",
]

# The convolutional front end shared by all five (verified on every source above): 7 layers,
# receptive field 400 samples, stride 320 (one frame per 20 ms at 16 kHz).
_CONV_KERNEL = [10, 3, 3, 3, 3, 2, 2]
_CONV_STRIDE = [5, 2, 2, 2, 2, 2, 2]

HUB_CONFIGS = {
    "hubert_base": {
        "hub_id": "facebook/hubert-base-ls960",
        "config": {
            "model_type": "hubert",  # [HB-save] [HB-ft]
            "hidden_size": 768,  # [HB-ft]; [param-count] 94.37 M
            "num_hidden_layers": 12,  # [HB-orig]
            "num_attention_heads": 12,  # [HB-ft]
            "intermediate_size": 3072,  # [HB-ft]
            "hidden_act": "gelu",  # [HB-ft]
            "layer_norm_eps": 1e-05,  # [HB-ft]
            "initializer_range": 0.02,  # [HB-ft]
            "conv_dim": [512] * 7,  # [HB-save]
            "conv_kernel": _CONV_KERNEL,  # [HB-save]
            "conv_stride": _CONV_STRIDE,  # [HB-save]
            "conv_bias": False,  # [HB-save]
            "feat_extract_norm": "group",  # [HB-save]
            "feat_extract_activation": "gelu",  # [HB-save]
            # Absent from the 2021 hub file ([HB-orig] context ends at "architectures"); the
            # HubertConfig default True applies on load, and [HB-save] (written by a newer
            # transformers) shows true.
            "feat_proj_layer_norm": True,
            "conv_pos_batch_norm": False,  # absent from the hub file: [hf-default], assumed
            "do_stable_layer_norm": False,  # [HB-save]
            "num_conv_pos_embeddings": 128,  # [HB-ft]; [param-count]
            "num_conv_pos_embedding_groups": 16,  # [HB-ft]; [param-count]
            "hidden_dropout": 0.1,  # [HB-ft]
            "attention_dropout": 0.1,  # [HB-save]
            "activation_dropout": 0.1,  # [HB-orig]
            "feat_proj_dropout": 0.1,  # [HB-save] (the HubertConfig default is 0.0)
            "final_dropout": 0.1,  # [HB-ft] (CTC head only)
            "layerdrop": 0.1,  # [HB-ft]
            "apply_spec_augment": True,  # [HB-orig]
            "mask_time_prob": 0.05,  # [HB-ft]
            "mask_time_length": 10,  # [HB-ft]
            "mask_time_min_masks": 2,  # [HB-ft]; absent from the 2021 file, default 2
            "mask_feature_prob": 0.0,  # [HB-ft]
            "mask_feature_length": 10,  # [HB-ft]
            "mask_feature_min_masks": 0,  # [HB-ft]; absent from the 2021 file, default 0
        },
        # UNVERIFIED (memory of the hub file). Note fairseq trained HuBERT Base on
        # unnormalised waveforms; check do_normalize against the hub before relying on it.
        "feature_extractor": {
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "do_normalize": True,
            "return_attention_mask": False,
        },
        "verified": (
            "config: original-repo diff 9f09f23 (layers, activation_dropout, apply_spec_augment), "
            "HubertModel re-save balaji1312/hubert_myst@6795835 (front end, flags, "
            "attention/feat_proj dropouts), derived fine-tune danieleV9H/...ft30ep_v5 (width, "
            "heads, hidden dropout, layerdrop, SpecAugment); the original repo's two config "
            "updates of 2021-10-20 (790df31, e16f1b6) were not seen. feature_extractor: "
            "unverified"
        ),
    },
    "hubert_large": {
        "hub_id": "facebook/hubert-large-ll60k",
        "config": {
            "model_type": "hubert",  # [HL-superb]
            "hidden_size": 1024,  # [HL-superb]; [param-count] 315.44 M
            "num_hidden_layers": 24,  # [HL-orig] (a245e38)
            "num_attention_heads": 16,  # [param-count]; not seen on a hub copy
            "intermediate_size": 4096,  # [HL-superb]
            "hidden_act": "gelu",  # [HL-orig]
            "layer_norm_eps": 1e-05,  # [HL-superb]
            "initializer_range": 0.02,  # [HL-superb]
            "conv_dim": [512] * 7,  # [HL-orig]
            "conv_kernel": _CONV_KERNEL,  # [HL-orig]
            "conv_stride": _CONV_STRIDE,  # [HL-orig]
            # The hub says true although the fairseq checkpoint's cfg says conv_bias False
            # (github.com/nii-yamagishilab/AntiDeepfake models/HBT_configs.py); mirrored as on
            # the hub.
            "conv_bias": True,  # [HL-orig]
            "feat_extract_norm": "layer",  # [HL-orig]
            "feat_extract_activation": "gelu",  # [HL-orig]
            "feat_proj_layer_norm": True,  # absent from the 2021 file: HubertConfig default
            "conv_pos_batch_norm": False,  # absent from the hub file: [hf-default], assumed
            "do_stable_layer_norm": True,  # [HL-orig]
            "num_conv_pos_embeddings": 128,  # [param-count]; [hf-default]
            "num_conv_pos_embedding_groups": 16,  # [param-count]; [hf-default]
            "hidden_dropout": 0.1,  # [HL-superb]
            "attention_dropout": 0.1,  # [HL-orig]
            "activation_dropout": 0.0,  # [HL-orig]
            "feat_proj_dropout": 0.1,  # [HL-orig]
            "final_dropout": 0.0,  # [HL-orig] (CTC head only)
            "layerdrop": 0.1,  # [HL-superb]
            "apply_spec_augment": True,  # [HL-orig]
            "mask_time_prob": 0.05,  # [HL-ft] (derived fine-tune) / [hf-default]
            "mask_time_length": 10,  # [HL-superb]
            "mask_time_min_masks": 2,  # [HL-ft]; absent from the 2021 file, default 2
            "mask_feature_prob": 0.0,  # [HL-superb]
            "mask_feature_length": 10,  # [HL-superb]
            "mask_feature_min_masks": 0,  # [HL-ft]; absent from the 2021 file, default 0
        },
        # UNVERIFIED (memory of the hub file).
        "feature_extractor": {
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "do_normalize": True,
            "return_attention_mask": True,
        },
        "verified": (
            "config: original-repo diffs c094cc2 (front end, flags, dropouts but hidden) and "
            "a245e38 (24 layers), SUPERB port superb/hubert-large-superb-er (width, hidden "
            "dropout, layerdrop, mask lengths); heads, positional conv and mask_time_prob only "
            "from derived fine-tunes / parameter count; the original repo's config updates of "
            "2021-10-20 (b6bfc70, fa4264f) were not seen. feature_extractor: unverified"
        ),
    },
    "wavlm_base_plus": {
        "hub_id": "microsoft/wavlm-base-plus",
        "config": {
            # Every value below: [WBP-save] (whole file); width and depth also [param-count]
            # 94.38 M.
            "model_type": "wavlm",
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-05,
            "initializer_range": 0.02,
            "conv_dim": [512] * 7,
            "conv_kernel": _CONV_KERNEL,
            "conv_stride": _CONV_STRIDE,
            "conv_bias": False,
            "feat_extract_norm": "group",
            "feat_extract_activation": "gelu",
            "do_stable_layer_norm": False,
            "num_conv_pos_embeddings": 128,
            "num_conv_pos_embedding_groups": 16,
            "num_buckets": 320,
            "max_bucket_distance": 800,
            "hidden_dropout": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.0,
            "feat_proj_dropout": 0.1,
            "final_dropout": 0.0,
            "layerdrop": 0.05,
            "apply_spec_augment": True,
            "mask_time_prob": 0.05,
            "mask_time_length": 10,
            "mask_time_min_masks": 2,
            "mask_feature_prob": 0.0,
            "mask_feature_length": 10,
            "mask_feature_min_masks": 0,
            "add_adapter": False,
        },
        # UNVERIFIED (memory): the hub tree page shows 215 bytes, which for this 7-key file
        # means exactly one of do_normalize / return_attention_mask is false (consistent).
        "feature_extractor": {
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "do_normalize": False,
            "return_attention_mask": True,
        },
        "verified": (
            "config: whole-file transformers-5.5.4 re-save of the hub model "
            "(github.com/ngclara07/CM3070-Final-Project@630dab66 models/wavlm-base-plus/"
            "config.json); first half also on Xenova/wavlm-base-plus. feature_extractor: "
            "unverified (size-consistent)"
        ),
    },
    "wavlm_large": {
        "hub_id": "microsoft/wavlm-large",
        "config": {
            "model_type": "wavlm",  # [WL-orig] (38b04af)
            "hidden_size": 1024,  # [WL-orig]; [param-count] 315.45 M
            "num_hidden_layers": 24,  # [param-count]; not seen on a hub copy
            "num_attention_heads": 16,  # [WL-orig] (38b04af)
            "intermediate_size": 4096,  # [WL-orig]
            "hidden_act": "gelu",  # [WL-orig]
            "layer_norm_eps": 1e-05,  # [WL-orig]
            "initializer_range": 0.02,  # [WL-orig]
            "conv_dim": [512] * 7,  # [WL-orig]
            "conv_kernel": _CONV_KERNEL,  # [WL-orig]
            "conv_stride": _CONV_STRIDE,  # [WL-orig]
            "conv_bias": False,  # [WL-orig]
            "feat_extract_norm": "layer",  # [WL-orig]
            "feat_extract_activation": "gelu",  # [WL-orig]
            "do_stable_layer_norm": True,  # [WL-orig]
            "num_conv_pos_embeddings": 128,  # [param-count]; [hf-default]
            "num_conv_pos_embedding_groups": 16,  # [param-count]; [hf-default]
            "num_buckets": 320,  # [hf-default]; not seen on a hub copy (assumed)
            "max_bucket_distance": 800,  # [WL-orig] (added by 38b04af)
            "hidden_dropout": 0.1,  # [WL-orig]
            "attention_dropout": 0.1,  # [WL-orig]
            "activation_dropout": 0.0,  # [WL-orig]
            "feat_proj_dropout": 0.1,  # [WL-orig]
            "final_dropout": 0.0,  # [WL-orig] (CTC head only)
            "layerdrop": 0.1,  # [WL-orig] [WL-copy]
            "apply_spec_augment": True,  # [WL-orig]
            "mask_time_prob": 0.075,  # [WL-orig] (38b04af, current file)
            "mask_time_length": 10,  # [hf-default]; not seen on a hub copy (assumed)
            "mask_time_min_masks": 2,  # [hf-default]; not seen on a hub copy (assumed)
            "mask_feature_prob": 0.0,  # [hf-default]; not seen on a hub copy (assumed)
            "mask_feature_length": 10,  # [WL-orig]
            "mask_feature_min_masks": 0,  # [WL-copy]
            "add_adapter": False,  # [WL-orig]
        },
        # UNVERIFIED (memory): the hub tree page shows 214 bytes, which for this 7-key file
        # means both flags are true (consistent).
        "feature_extractor": {
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "do_normalize": True,
            "return_attention_mask": True,
        },
        "verified": (
            "config: original repo, blame@0dbabc6 (lines 1-50) and commit 38b04af (current file: "
            "mask_time_prob 0.075, max_bucket_distance 800, 16 heads), verbatim copy in space "
            "SalahZa/Code-Switched-Tunisian-SpeechToText; depth, positional conv, num_buckets, "
            "mask_time_length/min_masks, mask_feature_prob not seen (defaults, depth by "
            "parameter count). feature_extractor: unverified (size-consistent)"
        ),
    },
    "wav2vec2_large": {
        "hub_id": "facebook/wav2vec2-large-lv60",
        "config": {
            # Every value below: [W2L-save] (whole file); the dropouts of lines 44-50 also
            # [W2L-orig]; width and depth also [param-count] 315.44 M.
            "model_type": "wav2vec2",
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-05,
            "initializer_range": 0.02,
            "conv_dim": [512] * 7,
            "conv_kernel": _CONV_KERNEL,
            "conv_stride": _CONV_STRIDE,
            "conv_bias": True,
            "feat_extract_norm": "layer",
            "feat_extract_activation": "gelu",
            "do_stable_layer_norm": True,
            "num_conv_pos_embeddings": 128,
            "num_conv_pos_embedding_groups": 16,
            "hidden_dropout": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.1,
            "feat_proj_dropout": 0.1,
            "final_dropout": 0.1,
            "layerdrop": 0.0,
            "apply_spec_augment": True,
            "mask_time_prob": 0.05,
            "mask_time_length": 10,
            "mask_time_min_masks": 2,
            "mask_feature_prob": 0.0,
            "mask_feature_length": 10,
            "mask_feature_min_masks": 0,
            "add_adapter": False,
            "adapter_attn_dim": None,
        },
        # UNVERIFIED (memory): the hub tree page shows 158 bytes for this 2021 file (no
        # feature_extractor_type key), which matches both flags true with padding_value 0.0.
        "feature_extractor": {
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "do_normalize": True,
            "return_attention_mask": True,
        },
        "verified": (
            "config: whole-file transformers-4.57.3 re-save of the hub model "
            "(github.com/FlemmeFacile/khanty_audio@5e4e1d0b wav2vec2-large-lv60/config.json); "
            "dropouts also on the original repo's commit af3fc8a; layerdrop 0.0 only from the "
            "re-save. feature_extractor: unverified (size-consistent)"
        ),
    },
}

# Why the feature-extractor values are believed (none could be read, see the module docstring).
_FE_NOTES = {
    "hubert_base": "memory only",
    "hubert_large": "memory only",
    "wavlm_base_plus": "memory; hub tree page: 215 bytes (one flag false)",
    "wavlm_large": "memory; hub tree page: 214 bytes (both flags true)",
    "wav2vec2_large": "memory; hub tree page: 158 bytes (both flags true)",
}

# The preset test size of ``shrunk``.
SHRUNK_SIZE = {"n_layers": 2, "hidden_size": 32, "conv_dim": 16}

# Fields that ``write_random_encoder`` may change when it shrinks a model; every other field of
# ``HUB_CONFIGS[name]["config"]`` is kept as on the hub.
SIZE_FIELDS = frozenset(
    {
        "num_hidden_layers",
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "conv_dim",
        "num_conv_pos_embeddings",
        "num_conv_pos_embedding_groups",
    }
)

# Kernel of the positional convolution of a width-shrunk model (even, like the hub's 128, so
# the same "remove one padded frame" path runs).
_SHRUNK_POS_CONV_KERNEL = 16


def _largest_divisor(n, at_most):
    """Largest divisor of ``n`` not above ``at_most``."""
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def _entry(name):
    if name not in HUB_CONFIGS:
        raise KeyError(f"unknown encoder {name!r}; known: {sorted(HUB_CONFIGS)}")
    return HUB_CONFIGS[name]


def hub_config(name, n_layers=None, hidden_size=None, conv_dim=None):
    """Return the ``config.json`` values of encoder ``name``, optionally shrunk.

    Shrinking changes depth and width only (the fields in ``SIZE_FIELDS``): ``intermediate_size``
    keeps the hub's ratio to ``hidden_size``, ``num_attention_heads`` becomes the largest divisor
    of ``hidden_size`` not above the hub's, and the positional convolution gets kernel 16 and the
    largest group count dividing ``hidden_size`` not above the hub's. Every behaviour flag
    (dropouts, layerdrop, SpecAugment, norms, conv bias, kernels and strides, relative-position
    buckets) stays as on the hub.

    Arguments
    ---------
    name : str
        A key of ``HUB_CONFIGS``.
    n_layers : int, optional
        Transformer layers (at most the hub's).
    hidden_size : int, optional
        Model width (at most the hub's).
    conv_dim : int, optional
        Channels of each of the seven convolutional layers (at most the hub's).

    Returns
    -------
    dict
        A new dict, ``model_type`` included.

    Example
    -------
    >>> cfg = hub_config("wavlm_large", n_layers=2, hidden_size=40, conv_dim=16)
    >>> cfg["num_attention_heads"], cfg["intermediate_size"], cfg["num_conv_pos_embedding_groups"]
    (10, 160, 10)
    >>> cfg["mask_time_prob"], cfg["do_stable_layer_norm"], cfg["conv_stride"]
    (0.075, True, [5, 2, 2, 2, 2, 2, 2])
    """
    hub = _entry(name)["config"]
    cfg = copy.deepcopy(hub)
    for label, value, hub_value in (
        ("n_layers", n_layers, hub["num_hidden_layers"]),
        ("hidden_size", hidden_size, hub["hidden_size"]),
        ("conv_dim", conv_dim, max(hub["conv_dim"])),
    ):
        if value is not None and not (isinstance(value, int) and 1 <= value <= hub_value):
            raise ValueError(
                f"{label} must be an int in [1, {hub_value}] for {name}, got {value!r}"
            )
    if n_layers is not None:
        cfg["num_hidden_layers"] = n_layers
    if conv_dim is not None:
        cfg["conv_dim"] = [conv_dim] * len(hub["conv_dim"])
    if hidden_size is not None and hidden_size != hub["hidden_size"]:
        ratio = hub["intermediate_size"] / hub["hidden_size"]
        cfg["hidden_size"] = hidden_size
        cfg["intermediate_size"] = max(1, round(hidden_size * ratio))
        cfg["num_attention_heads"] = _largest_divisor(hidden_size, hub["num_attention_heads"])
        cfg["num_conv_pos_embeddings"] = min(
            _SHRUNK_POS_CONV_KERNEL, hub["num_conv_pos_embeddings"]
        )
        cfg["num_conv_pos_embedding_groups"] = _largest_divisor(
            hidden_size, hub["num_conv_pos_embedding_groups"]
        )
    return cfg


def _auto_config(cfg):
    kwargs = {k: v for k, v in cfg.items() if k != "model_type"}
    return AutoConfig.for_model(cfg["model_type"], **kwargs)


def write_random_encoder(name, out_dir, n_layers=None, hidden_size=None, conv_dim=None, seed=0):
    """Save a random-weight encoder of hub configuration ``name`` and its feature extractor.

    The folder holds ``config.json``, ``model.safetensors`` and ``preprocessor_config.json``, and
    loads offline like the hub checkpoint (``transformers.AutoModel.from_pretrained``,
    ``Wav2Vec2FeatureExtractor.from_pretrained``, SpeechBrain's HF wrappers). Without size
    arguments the model is full size; with them it is shrunk in depth and width only (see
    ``hub_config``), every behaviour flag staying as on the hub.

    Arguments
    ---------
    name : str
        A key of ``HUB_CONFIGS``.
    out_dir : str or Path
        Destination folder (created).
    n_layers, hidden_size, conv_dim : int, optional
        Shrunk sizes, see ``hub_config``.
    seed : int
        Seed of the random weights.

    Returns
    -------
    str
        ``out_dir``.

    Example
    -------
    >>> import tempfile
    >>> from transformers import AutoModel
    >>> folder = write_random_encoder(
    ...     "hubert_large", tempfile.mkdtemp(), n_layers=2, hidden_size=32, conv_dim=16
    ... )
    >>> sorted(p.name for p in Path(folder).iterdir())
    ['config.json', 'model.safetensors', 'preprocessor_config.json']
    >>> model = AutoModel.from_pretrained(folder).eval()
    >>> type(model).__name__, model.config.do_stable_layer_norm, model.config.layerdrop
    ('HubertModel', True, 0.1)
    >>> with torch.no_grad():
    ...     model(torch.zeros(1, 16000)).last_hidden_state.shape
    torch.Size([1, 49, 32])
    """
    entry = _entry(name)
    cfg = hub_config(name, n_layers=n_layers, hidden_size=hidden_size, conv_dim=conv_dim)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModel.from_config(_auto_config(cfg))
    model.save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(**entry["feature_extractor"]).save_pretrained(out_dir)
    return str(out_dir)


def shrunk(name, out_dir=None, seed=0):
    """Write the preset test-size encoder ``name`` (``SHRUNK_SIZE``) with ``write_random_encoder``.

    Arguments
    ---------
    name : str
        A key of ``HUB_CONFIGS``.
    out_dir : str or Path, optional
        Destination folder; a new temporary folder when omitted.
    seed : int
        Seed of the random weights.

    Returns
    -------
    str
        The folder.

    Example
    -------
    >>> import json
    >>> folder = shrunk("wavlm_base_plus")
    >>> cfg = json.loads((Path(folder) / "config.json").read_text())
    >>> cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_buckets"], cfg["layerdrop"]
    (2, 32, 320, 0.05)
    """
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix=f"{name}-shrunk-")
    return write_random_encoder(name, out_dir, seed=seed, **SHRUNK_SIZE)


@cache
def parameter_count(name):
    """Count the parameters of the full-size base model ``name`` without allocating it.

    The count is that of the transformers base model (``HubertModel`` / ``WavLMModel`` /
    ``Wav2Vec2Model``), weight-normed positional convolution and ``masked_spec_embed``
    included, no pre-training or CTC head (``lobes.disk.parameter_counts``).

    Example
    -------
    >>> round(parameter_count("hubert_base") / 1e6, 1)
    94.4
    """
    return parameter_counts(_auto_config(hub_config(name)))[0]
