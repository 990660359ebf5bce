"""Disk: the plan of a whole run before it starts.

A training step keeps SpeechBrain checkpoints while it runs (the best and the latest, each with
the encoder and Adam's two moments: about 3.8 GB for hubert-large), so that it resumes exactly;
once it has finished it keeps one copy of its weights
(``lobes.training.checkpoints.finish_step``). ``plan`` estimates what a cross-validation run
needs at its peak, from the encoder's parameter count and the manifests.
"""

import logging
import shutil
from pathlib import Path

import torch
from transformers import AutoModel

from lobes.models.frames import n_frames

logger = logging.getLogger(__name__)

GB = 1e9
FLOAT32 = 4
FEATURE_BYTES = 2  # the feature cache holds float16
SAMPLE_RATE = 16000


def parameter_counts(config):
    """``(all, convolutional front end)`` parameter counts of an encoder, nothing allocated.

    Arguments
    ---------
    config : transformers.PretrainedConfig
        The encoder's configuration (``lobes.models.encoder.encoder_config(source)``).

    Example
    -------
    >>> import tempfile
    >>> from lobes.models.encoder import encoder_config
    >>> from lobes.fixtures.encoders import write_tiny_hubert
    >>> config = encoder_config(write_tiny_hubert(tempfile.mkdtemp(), 1, 8))
    >>> total, front_end = parameter_counts(config)
    >>> total > front_end > 0
    True
    """
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    total = sum(parameter.numel() for parameter in model.parameters())
    front_end = sum(parameter.numel() for parameter in model.feature_extractor.parameters())
    return total, front_end


def feature_cache_bytes(manifests, dim, n_layers):
    """Bytes of the float16 feature cache of a fold: every frame of every split and layer."""
    frames = sum(n_frames(round(entry["duration"] * SAMPLE_RATE))
                 for manifest in manifests for entry in manifest.values())
    return frames * dim * n_layers * FEATURE_BYTES


def plan(steps_per_fold, n_folds, total_params, front_end_params, cache_bytes,
         hub_download=True, keep_feature_cache=False, concurrent=1):
    """The disk a cross-validation run needs, as ``[(line, bytes)]`` and the peak in bytes.

    Kept: one encoder per training step of every fold (``n_folds`` counts every fold and seed
    run). At the peak, each of the ``concurrent`` jobs running at once is training with up to
    three checkpoints at once (SpeechBrain writes the new one before deleting the old best or
    latest), each with the encoder and Adam's two moments of its trainable parameters, or
    extracting with the feature cache of its fold, which exists only during its extraction
    unless kept.

    Example
    -------
    >>> lines, peak = plan(4, 5, 315_000_000, 4_000_000, 2_600_000_000)
    >>> round(peak / GB, 1)
    37.7
    """
    weights = total_params * FLOAT32
    trainable = (total_params - front_end_params) * FLOAT32
    checkpoint = weights + 2 * trainable
    kept = steps_per_fold * n_folds * weights
    training = concurrent * 3 * checkpoint
    cache = cache_bytes * (n_folds if keep_feature_cache else concurrent)
    at_once = "a step trains" if concurrent == 1 else f"{concurrent} steps train at once"
    caches = "one fold" if concurrent == 1 else f"{concurrent} folds"
    lines = [
        (f"weights kept: {n_folds} folds x {steps_per_fold} training steps x "
         f"{weights / GB:.2f} GB", kept),
        ("pre-trained encoder downloaded once" if hub_download
         else "pre-trained encoder: a local folder (nothing downloaded)",
         weights if hub_download else 0),
        (f"while {at_once}: up to 3 checkpoints x {checkpoint / GB:.2f} GB each "
         "(encoder + Adam moments)", training),
        ("feature cache of " + (f"{n_folds} folds (kept)" if keep_feature_cache
                                else f"{caches}, while it is clustered"), cache),
    ]
    peak = kept + lines[1][1] + max(training, cache if not keep_feature_cache else 0)
    if keep_feature_cache:
        peak += cache
    return lines, peak


def still_needed(total_params, front_end_params, cache_bytes, training_steps_left,
                 extractions_left, hub_download=True, keep_feature_cache=False, concurrent=1):
    """Bytes the unfinished part of a run still needs at its peak (``plan``'s rules).

    Example
    -------
    >>> round(still_needed(315_000_000, 4_000_000, 2_600_000_000, 1, 0) / GB, 1)
    13.8
    """
    weights = total_params * FLOAT32
    checkpoint = weights + 2 * (total_params - front_end_params) * FLOAT32
    need = training_steps_left * weights + (weights if hub_download else 0)
    if keep_feature_cache:
        need += extractions_left * cache_bytes
    cache = cache_bytes if extractions_left and not keep_feature_cache else 0
    in_flight = max(3 * checkpoint if training_steps_left else 0, cache)
    return need + min(concurrent, max(training_steps_left + extractions_left, 1)) * in_flight


class DiskSpaceError(OSError):
    """Less free disk than a run needs; the message says how much and what to do."""


def check_free_space(folder, needed, what="this run needs"):
    """Stop with a clear error when ``folder``'s file system has less than ``needed`` free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise DiskSpaceError(
            f"{what} about {needed / GB:.1f} GB of disk at its peak but {probe} has "
            f"{free / GB:.1f} GB free: free some space, choose another --output_folder, or run "
            "fewer folds or systems at a time (--skip_disk_check runs anyway)"
        )
    return free


def print_plan(values, n_folds, steps_per_fold, training_steps_left, extractions_left,
               check_folder=None, concurrent=1):
    """Print the disk plan of a cross-validation run and, with ``check_folder``, stop when its
    file system has less free space than the unfinished part still needs.

    ``values`` are the resolved hparams of a fold's GMP extraction (encoder, GMP layers,
    manifests, ``keep_feature_cache``), or of any step when the run extracts nothing.
    """
    from lobes.data.datasets import SPLITS, load_manifest
    from lobes.models.encoder import encoder_config

    total, front_end = parameter_counts(encoder_config(values["encoder_source"],
                                                       values["encoder_cache"]))
    manifests = [load_manifest(values[f"{split}_annotation"]) for split in SPLITS]
    with_extraction = values["step"] == "gmp"
    cache = feature_cache_bytes(manifests, values["encoder_dim"], len(values["gmp_layers"])) \
        if with_extraction else 0
    source = str(values["encoder_source"])
    downloaded = Path(values["encoder_cache"]) / f"models--{source.replace('/', '--')}"
    hub_download = not Path(source).exists() and not downloaded.exists()
    keep = bool(values.get("keep_feature_cache"))
    lines, peak = plan(steps_per_fold, n_folds, total, front_end, cache,
                       hub_download=not Path(source).exists(), keep_feature_cache=keep,
                       concurrent=concurrent)
    print(f"disk plan ({total / 1e6:.1f} M encoder parameters):")
    for line, size in lines:
        print(f"  {size / GB:7.2f} GB  {line}")
    print(f"  {peak / GB:7.2f} GB  at the peak, for the whole run")
    if check_folder is not None:
        needed = still_needed(total, front_end, cache, training_steps_left, extractions_left,
                              hub_download, keep, concurrent)
        free = check_free_space(check_folder, needed, "the remaining steps need")
        print(f"  {needed / GB:7.2f} GB  still needed; {free / GB:.2f} GB free in "
              f"{check_folder}", flush=True)
