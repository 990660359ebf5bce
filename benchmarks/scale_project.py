"""Projecting ``scale_bench.py``'s measurements onto the five folds of the real run.

Per fold, every stage runs its epochs (every training batch, one validation pass and one
checkpoint save each) and one test pass, the GMP extraction encodes the three splits once and
k-means fits each scale once and labels every frame; a step's time is its FLOP over the
measured FLOP rate, so every batch shape of an epoch counts, not only the timed ones. What is
and is not counted: docs/reference.md (Benchmarks, ``scale_bench.py``).
"""

from scale_fold import EXTRACTION_BATCH, N_FOLDS, STAGE_FILES, sorted_batches, to_samples

# run_cv.py --systems gmp_tl,baseline: stage 0, stage 1, stage 2 and the baseline in each fold
TRAINING_STEPS_PER_FOLD = 4


def expected_layers(settings, flops):
    """The transformer layers a training step runs on average: ``(1 - layerdrop) * L``."""
    return (1 - settings["encoder"]["layerdrop"]) * flops.layers


def epoch_flop(flops, stage, batches, samples, layers):
    """Training FLOP of one epoch of ``stage``: every batch of ``batches`` (indices into the
    ``samples`` counts), ``layers`` transformer layers run per step."""
    return sum(flops.train_step(stage, samples[b].tolist(), layers) for b in batches)


def projection(settings, splits, batches, flops, measured, precision):
    """``[(row name, runs per fold, {part: hours for 5 folds})]`` for ``precision``, from the
    rates of ``measured`` (``scale_measure.Measurements``); None where a step of that precision
    ran out of memory."""
    samples = {split: to_samples(d) for split, d in splits.items()}
    hours = 3600.0
    rows = []
    for stage in STAGE_FILES:
        values = settings[stage]
        train = measured.training[stage][precision]
        ev = measured.evaluation[stage][precision]
        if train is None or ev is None or not train["steps"]:
            return None
        stage_flop = epoch_flop(flops, stage, batches[stage], samples["train"],
                                expected_layers(settings, flops))
        rate = train["flop"] / (train["time_s"] - train["optimizer_s"])
        train_s = len(batches[stage]) * train["optimizer_s"] / train["steps"] + stage_flop / rate
        eval_rate = ev["flop"] / ev["time_s"]

        valid_s, test_s = (
            sum(flops.forward(samples[split][b].tolist(), stage=stage)["total"]
                for b in sorted_batches(splits[split], values["eval_batch_size"])) / eval_rate
            for split in ("valid", "test"))
        epochs = values["number_of_epochs"]
        parts = {"train": epochs * train_s, "valid": epochs * valid_s, "test": test_s,
                 "checkpoints": epochs * measured.checkpoint_s, "gmp": 0.0}
        rows.append((stage, f"{epochs} epochs", {k: N_FOLDS * v / hours
                                                 for k, v in parts.items()}))
        if stage == "stage0":
            ex = measured.extraction[precision]
            if ex is None:
                return None
            layer = settings["encoder"]["gmp_layer"]
            extract_flop = sum(
                flops.forward(samples[split][b].tolist(), layers=layer)["total"]
                for split in splits
                for b in sorted_batches(splits[split], EXTRACTION_BATCH))
            extract_s = (extract_flop / (ex["flop"] / ex["encode_s"])
                         + measured.all_frames * ex["write_s"] / ex["frames"])
            rows.append(("gmp extraction", "1 pass", {"train": 0.0, "valid": 0.0, "test": 0.0,
                                                      "checkpoints": 0.0,
                                                      "gmp": N_FOLDS * extract_s / hours}))
            kmeans = measured.kmeans
            kmeans_s = sum(row["fit_s"] * kmeans["scale"] + row["assign_s"] * kmeans["assign_scale"]
                           for row in kmeans["rows"].values())
            scales = "/".join(str(k) for k in kmeans["rows"])
            rows.append((f"k-means K={scales}", "fit + labels", {
                "train": 0.0, "valid": 0.0, "test": 0.0, "checkpoints": 0.0,
                "gmp": N_FOLDS * kmeans_s / hours}))
    return rows


def run_flop(settings, splits, batches, flops):
    """The training and evaluation FLOP of the whole run (every stage's epochs, validation and
    test passes, five folds)."""
    samples = {split: to_samples(d) for split, d in splits.items()}
    layers = expected_layers(settings, flops)
    total = 0.0
    for stage in STAGE_FILES:
        values = settings[stage]
        total += values["number_of_epochs"] * epoch_flop(flops, stage, batches[stage],
                                                         samples["train"], layers)
        total += sum(flops.forward(samples[split][b].tolist(), stage=stage)["total"]
                     * (values["number_of_epochs"] if split == "valid" else 1)
                     for split in ("valid", "test")
                     for b in sorted_batches(splits[split], values["eval_batch_size"]))
    return N_FOLDS * total


def disk_plan(splits, dim, total_params, front_end_params, settings):
    """``lobes.runner.disk.plan`` of the run, as ``run_cv.py`` prints it: ``(lines, peak
    bytes)``, with one fold's float16 feature cache of ``dim``-wide frames."""
    from lobes.runner.disk import feature_cache_bytes, plan

    cache = feature_cache_bytes(
        [{str(i): {"duration": float(d)} for i, d in enumerate(splits[split])}
         for split in splits], dim, 1)
    return plan(TRAINING_STEPS_PER_FOLD, N_FOLDS, total_params, front_end_params, cache,
                hub_download=True, keep_feature_cache=bool(settings["gmp"]["keep_feature_cache"]))
