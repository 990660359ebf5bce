"""The recipe's settings and one fold's utterances and batches, as ``scale_bench.py`` runs them.

Every recipe value (epochs, ``max_batch_length``, ``num_buckets``, batch sizes, learning rates,
GMP layer and scales, k-means settings) is read from the shipped hparams files; the fold is an
IEMOCAP-like duration set batched by the recipe's own sampler (docs/reference.md, Benchmarks,
``scale_bench.py``).
"""

import numpy as np
from batching_bench import duration_dataset, iemocap_like_durations
from bench_utils import REPO, default_seed, recipe_module

TABLE = recipe_module("steps").TABLE  # the recipe's table of steps
# {training step: its hparams file}: stage0, stage1, stage2, baseline
STAGE_FILES = {spec.name: spec.hparams for spec in TABLE if spec.trains}
SAMPLE_RATE = 16000
N_FOLDS = 5
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
        values = raw_values(compose(TABLE.hparams_folder / file_name))
        settings[stage] = {key: _plain(value) for key, value in values.items()
                           if _tag(value) is None or key == "embedding_size"}
    gmp = raw_values(compose(TABLE.hparams_folder / TABLE["gmp"].hparams))
    settings["gmp"] = {key: _plain(gmp[key]) for key in (
        "kmeans_max_frames", "kmeans_iterations", "kmeans_backend",
        "keep_feature_cache", "gmp_scales", "valid_ratio", "expected_utterances")}
    fragment = raw_values((REPO / "hparams" / "encoders" / f"{encoder_name}.yaml").read_text())
    settings["encoder"] = {key: _plain(fragment[key]) for key in (
        "gmp_layer", "layerdrop", "apply_spec_augment", "mask_time_prob")}
    return settings


def shrink_gmp_layer(settings, encoder_name, n_layers):
    """Put the GMP layer of ``settings`` at the same relative depth of a shrunk encoder.

    Example
    -------
    >>> settings = {"encoder": {"gmp_layer": 12}}
    >>> shrink_gmp_layer(settings, "hubert_large", 2)["encoder"]["gmp_layer"]
    1
    """
    from lobes.fixtures.encoders import HUB_CONFIGS

    hub_layers = HUB_CONFIGS[encoder_name]["config"]["num_hidden_layers"]
    settings["encoder"]["gmp_layer"] = max(
        1, round(settings["encoder"]["gmp_layer"] * n_layers / hub_layers))
    return settings


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
               "num_buckets": int(num_buckets), "batch_size": 4, "seed": default_seed()}
    sampler = train_loader_options(hparams, duration_dataset(durations))["batch_sampler"]
    sampler.set_epoch(epoch)
    return [[int(index) for index in batch] for batch in sampler]



def fold_batches(durations, settings, max_batch_length=None):
    """One epoch of training batches of every stage, at the stage's ``max_batch_length`` (or
    ``max_batch_length`` when given) and ``num_buckets``."""
    return {stage: train_batches(durations, max_batch_length
                                 or settings[stage]["max_batch_length"],
                                 settings[stage]["num_buckets"])
            for stage in STAGE_FILES}


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
