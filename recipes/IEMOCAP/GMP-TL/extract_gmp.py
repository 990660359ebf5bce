#!/usr/bin/env python3
"""GMP extraction: multi-scale k-means pseudo-labels from the stage-0 encoder.

1. One pass of the stage-0 encoder over train, valid and test writes the frame features of every
   layer in ``gmp_layers`` (padding excluded) to a float16 memory-mapped cache; every scale
   reuses it. Under ``torchrun`` each rank encodes its share of the utterances.
2. For every (layer, K) in ``gmp_layers`` x ``gmp_scales``: k-means is fitted on a seeded sample
   of **training** frames only (``kmeans_max_frames``), with the ``faiss`` (default) or
   ``sklearn`` backend, then every frame of every split is labelled, streaming.
3. Writes ``<gmp_folder>/<split>_L<layer>_K<k>.km`` (a line per utterance: id, then its frame
   labels) with its ``.json`` metadata, the k-means models ``kmeans_L<layer>_K<k>.npz`` (+ a
   ``.json`` record of what the fit was given), and the cluster report on the validation split
   (``cluster_report.json`` and ``.md``, written last: they mark the extraction complete).

A re-run skips finished pieces: cached splits are not encoded again, finished scales are not
fitted again.

Usage::

    python extract_gmp.py hparams/gmp.yaml --data_folder=PATH/IEMOCAP_full_release
"""

import logging
import shutil
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.autocast import AMPConfig, TorchAutocast
from steps import TABLE
from tqdm import tqdm

from lobes.data.datasets import SPLITS, audio_dataset, load_manifest, screen_audio
from lobes.gmp.cluster_report import cluster_report, report_to_markdown
from lobes.gmp.feature_cache import FeatureCache, FeatureCacheWriter
from lobes.gmp.kmeans import assign_labels_streaming, fit_kmeans
from lobes.gmp.labels import (
    expected_frame_counts,
    fit_labels_to_frames,
    meta_path_of,
    read_label_file,
    write_label_file,
)
from lobes.runner.recipe import load_recipe, run_main
from lobes.training.brain import load_encoder_weights
from lobes.utils.errors import HparamsError
from lobes.utils.io import atomic_write, write_json_atomic

logger = logging.getLogger(__name__)
GENDERS = ("F", "M")


def load_stage0_encoder(hparams, device):
    """The stage-0 encoder, frozen, returning the ``gmp_layers`` (later layers dropped)."""
    encoder = hparams["encoder"]
    encoder.output_layers = [encoder.resolve_layer(layer) for layer in hparams["gmp_layers"]]
    load_encoder_weights(encoder, Path(hparams["stage0_folder"]) / "encoder.ckpt")
    encoder.drop_layers_after(max(encoder.output_layers))
    return encoder.to(device).eval()


def extract_features(hparams, manifests, device, rank, world_size):
    """Encode every split once into the feature cache (this rank's share); resumable."""
    encoder = None
    for split in SPLITS:
        if FeatureCache.is_complete(hparams["cache_folder"], split):
            continue
        manifest = manifests[split]
        utt_ids = list(manifest)
        planned_counts = expected_frame_counts(manifest)
        writer = FeatureCacheWriter(
            hparams["cache_folder"], split, list(hparams["gmp_layers"]), hparams["encoder_dim"],
            utt_ids, [planned_counts[utt_id] for utt_id in utt_ids],
            durations=[manifest[utt_id]["duration"] for utt_id in utt_ids],
            rank=rank, world_size=world_size, progress_every=hparams["cache_flush_every"],
        )
        pending = writer.pending_ids
        if pending:
            encoder = encoder or load_stage0_encoder(hparams, device)
            dataset = audio_dataset({utt_id: manifest[utt_id] for utt_id in pending})
            # one utterance at a time: its features, and so the GMPs, never depend on what else
            # would share a batch (float rounding of a batch shape moves frames across cluster
            # boundaries); one pass over the corpus is a small part of a run
            loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=1, shuffle=False)
            for batch in tqdm(loader, desc=f"encoding {split} (rank {rank})",
                              dynamic_ncols=True):
                wavs, wav_lens = batch.sig
                with torch.no_grad():
                    hidden, frame_counts = encoder(wavs.to(device), wav_lens.to(device))
                hidden = hidden.float().cpu().numpy()
                for index, utt_id in enumerate(batch.id):
                    count = int(frame_counts[index])
                    planned = planned_counts[utt_id]
                    rows = fit_labels_to_frames(np.arange(count), planned)  # +-1 frame at most
                    writer.write(utt_id, {
                        layer: hidden[position, index, rows]
                        for position, layer in enumerate(hparams["gmp_layers"])
                    })
        writer.finalize()


def training_frames(cache, layer, utt_ids, max_frames, seed):
    """A seeded sample of at most ``max_frames`` frames of the utterances ``utt_ids``.

    Only these utterances' frames can be drawn; memory holds the sample only.
    """
    if set(utt_ids) == set(cache.utt_ids):
        return cache.sample_frames(layer, max_frames, seed=seed)
    counts = np.array([cache.frame_counts_of(utt_id) for utt_id in utt_ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    rng = np.random.default_rng(seed)
    chosen = np.arange(offsets[-1])
    if offsets[-1] > max_frames:
        chosen = np.sort(rng.choice(offsets[-1], size=max_frames, replace=False))
    owners = np.searchsorted(offsets, chosen, side="right") - 1
    frames = []
    for owner in np.unique(owners):
        rows = chosen[owners == owner] - offsets[owner]
        frames.append(cache.features(layer, utt_ids[owner])[rows])
    return np.concatenate(frames)


def fit_scale(hparams, caches, manifests, layer, k, model_path):
    """Fit the k-means of one (layer, K) on training frames: one model, or one per gender."""
    train_manifest = manifests["train"]
    groups = {"all": list(train_manifest)}
    if hparams["gmp_gender_split"]:
        groups = {
            gender: [u for u, entry in train_manifest.items() if entry["gender"] == gender]
            for gender in GENDERS
        }
    models = {}
    for offset_index, (group, utt_ids) in enumerate(groups.items()):
        frames = training_frames(caches["train"], layer, utt_ids, hparams["kmeans_max_frames"],
                                 hparams["seed"])
        if len(frames) < k:
            raise ValueError(
                f"only {len(frames)} training frames ({group}) for K={k} clusters at layer "
                f"{layer}: lower gmp_scales or use more training data"
            )
        logger.info("fitting k-means L%d K%d (%s) on %d training frames", layer, k, group,
                    len(frames))
        model = fit_kmeans(frames, k, backend=hparams["kmeans_backend"], seed=hparams["seed"],
                           n_iter=hparams["kmeans_iterations"],
                           sklearn_options=hparams["sklearn_options"], layer=layer)
        path = model_path if group == "all" else model_path.with_name(
            f"{model_path.stem}_{group}{model_path.suffix}")
        model.save(path)
        write_json_atomic(path.with_suffix(".json"), {
            "layer": layer, "k": k, "group": group, "label_offset": offset_index * k,
            "fit_split": "train", "n_fit_frames": len(frames),
            "n_fit_utterances": len(utt_ids),
            "fit_sessions": sorted({train_manifest[u].get("session") for u in utt_ids}),
            "backend": model.backend, "inertia": model.inertia,
        })
        models[group] = (model, offset_index * k, str(path))
    return models


def label_split(cache, manifest, models, layer, gender_split):
    """Frame labels of every utterance of a split (ids of the second gender offset by K)."""
    labels = {}
    for group, (model, offset, _) in models.items():
        selected = set(manifest) if not gender_split else {
            u for u, entry in manifest.items() if entry["gender"] == group
        }
        batches = (
            batch for batch in cache.iter_batches(layer, max_frames=200_000)
            if any(utt_id in selected for utt_id in batch[0])
        )
        for utt_id, frame_labels in assign_labels_streaming(
            model, batches, desc=f"labelling L{layer} K{model.n_clusters} ({group})"
        ):
            if utt_id in selected:
                labels[utt_id] = frame_labels + offset
    return {utt_id: labels[utt_id] for utt_id in manifest}


def label_path(gmp_folder, split, layer, k):
    return Path(gmp_folder) / f"{split}_L{layer}_K{k}.km"


def check_gender_split(gender_split, manifests):
    """Refuse per-gender clustering when some utterances have no known gender.

    Example
    -------
    >>> check_gender_split(True, {"train": {"u1": {"gender": "F"}}})
    >>> try:
    ...     check_gender_split(True, {"train": {"u1": {"gender": "unknown"}}, "test": {}})
    ... except HparamsError as error:
    ...     print(str(error)[:60])
    gmp_gender_split: True clusters each gender apart, but 1 tra
    """
    if not gender_split:
        return
    unknown = {split: sum(entry["gender"] not in GENDERS for entry in manifest.values())
               for split, manifest in manifests.items()}
    if any(unknown.values()):
        listing = ", ".join(f"{n} {split}" for split, n in unknown.items() if n)
        raise HparamsError(
            f"gmp_gender_split: True clusters each gender apart, but {listing} utterances have "
            "no known gender (the corpus does not give it); set gmp_gender_split: False"
        )


def cluster_scales(hparams, manifests):
    """Fit and label every (layer, K) not finished yet; return the valid-split reports."""
    gmp_folder = Path(hparams["output_folder"])
    caches = {split: FeatureCache(hparams["cache_folder"], split) for split in SPLITS}
    for split in SPLITS:
        caches[split].check_matches(manifests[split])
    reports = {}
    for layer in hparams["gmp_layers"]:
        for k in hparams["gmp_scales"]:
            paths = {split: label_path(gmp_folder, split, layer, k) for split in SPLITS}
            finished = all(meta_path_of(path).exists() for path in paths.values())
            if finished:
                logger.info("L%d K%d: label files complete, skipped", layer, k)
            else:
                models = fit_scale(hparams, caches, manifests, layer, k,
                                   gmp_folder / f"kmeans_L{layer}_K{k}.npz")
                for split in SPLITS:
                    labels = label_split(caches[split], manifests[split], models, layer,
                                         hparams["gmp_gender_split"])
                    n_label_ids = k * len(models)
                    write_label_file(paths[split], labels, {
                        "layer": layer, "k": n_label_ids, "clusters_per_group": k,
                        "gender_split": bool(hparams["gmp_gender_split"]),
                        "kmeans_model": [path for _, _, path in models.values()],
                        "split": split, "encoder_source": str(hparams["encoder_source"]),
                        "stage0_encoder": str(Path(hparams["stage0_folder"]) / "encoder.ckpt"),
                    })
            valid_labels = read_label_file(paths["valid"])
            valid = manifests["valid"]
            reports[f"L{layer}_K{k}"] = cluster_report(
                valid_labels, {u: e["emo"] for u, e in valid.items()},
                {u: e["gender"] for u, e in valid.items() if e["gender"] in GENDERS},
                k * (2 if hparams["gmp_gender_split"] else 1),
            )
    return reports


def main(argv=None):
    hparams, run_opts = load_recipe(TABLE, __file__, argv)
    if hparams is None:  # finished earlier with the same settings
        return
    distributed = torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world_size = torch.distributed.get_world_size() if distributed else 1
    device = run_opts.get("device") or "cpu"
    if torch.cuda.is_available() and not run_opts.get("device"):
        device = f"cuda:{sb.utils.distributed.get_local_rank() or 0}"
    manifests = {
        split: screen_audio(load_manifest(hparams[f"{split}_annotation"]), split,
                            hparams["bad_audio"])
        for split in SPLITS
    }
    check_gender_split(hparams["gmp_gender_split"], manifests)
    precision = AMPConfig.from_name(run_opts.get("eval_precision") or "fp32").dtype
    with TorchAutocast(device_type=torch.device(device).type, dtype=precision):
        extract_features(hparams, manifests, device, rank, world_size)
    sb.utils.distributed.ddp_barrier()
    if not sb.utils.distributed.if_main_process():
        return
    reports = cluster_scales(hparams, manifests)
    gmp_folder = Path(hparams["output_folder"])
    with atomic_write(gmp_folder / "cluster_report.md") as handle:
        handle.write(report_to_markdown(reports))
    write_json_atomic(gmp_folder / "cluster_report.json", reports)
    logger.info("GMP extraction complete: %s", gmp_folder / "cluster_report.md")
    if not hparams["keep_feature_cache"]:
        shutil.rmtree(hparams["cache_folder"], ignore_errors=True)
        logger.info("feature cache deleted (keep_feature_cache: False)")


if __name__ == "__main__":
    run_main(main)
