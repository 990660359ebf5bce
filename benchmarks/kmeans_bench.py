"""Benchmark: GMP k-means (faiss) against fairseq HuBERT's scikit-learn MiniBatchKMeans.

Both fit the same seeded synthetic frame features; the inertia of both models is
measured on those frames by the same function (``KMeansModel.inertia_of``). Then
the faiss model labels the frames streamed from an on-disk ``FeatureCache``, with
the peak of traced (numpy) memory during streaming compared to its bound.

Usage::

    python benchmarks/kmeans_bench.py [--n_frames 50000 --dim 256 --k 256 --sklearn_n_init 20]

Each fit runs in a fresh process, so that neither library's thread pools (faiss
and scikit-learn bring their own OpenMP/BLAS runtimes) slow the other down.

The last line printed is ``speedup=<sklearn time / faiss time> inertia_ratio=<faiss /
sklearn inertia>``.
"""

import argparse
import logging
import multiprocessing
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# The feature cache (which imports torch) is imported where used, keeping the fit
# processes free of torch's OpenMP runtime.
try:
    from lobes.gmp.kmeans import SKLEARN_DEFAULTS, KMeansModel, assign_labels_streaming, fit_kmeans
except ModuleNotFoundError:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lobes.gmp.kmeans import SKLEARN_DEFAULTS, KMeansModel, assign_labels_streaming, fit_kmeans

logger = logging.getLogger(__name__)

LAYER = 9


def synthetic_frames(n_frames, dim, n_components, seed=0):
    """Frames from an unbalanced mixture of anisotropic Gaussians, like encoder features.

    Component means lie near a low-dimensional subspace (decaying spectrum), each
    component has its own per-axis spread in a shared rotated basis, and component
    weights follow a Zipf-like law, as phone-like units do.

    Example
    -------
    >>> synthetic_frames(100, 8, 4).shape
    (100, 8)
    """
    rng = np.random.default_rng(seed)
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(dim))
    means = rng.normal(size=(n_components, dim)) * spectrum * 4.0
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    spreads = rng.lognormal(mean=-0.5, sigma=0.5, size=(n_components, dim))
    weights = 1.0 / np.arange(1, n_components + 1) ** 0.7
    members = rng.choice(n_components, size=n_frames, p=weights / weights.sum())
    noise = (rng.normal(size=(n_frames, dim)) * spreads[members]) @ rotation
    return (means[members] + noise).astype(np.float32)


def _fit_and_save(frames_path, model_path, n_clusters, backend, seed, n_iter, sklearn_options):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    frames = np.load(frames_path)
    # Start the thread pools before the timed fit: a one-off cost per process.
    fit_kmeans(frames[:2000], 8, backend=backend, sklearn_options={"n_init": 1})
    model = fit_kmeans(
        frames, n_clusters, backend=backend, seed=seed, n_iter=n_iter,
        sklearn_options=sklearn_options,
    )
    model.save(model_path)


def fit_in_fresh_process(frames_path, model_path, *fit_args):
    """Fit k-means in a new process; return the model (its ``meta["fit_seconds"]``)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        pool.submit(_fit_and_save, frames_path, model_path, *fit_args).result()
    return KMeansModel.load(model_path)


def write_cache(folder, frames, seed=0):
    """Cut ``frames`` into utterances of 50..500 frames and cache them as one split."""
    from lobes.gmp.feature_cache import FeatureCache, FeatureCacheWriter

    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < len(frames):
        lengths.append(int(min(rng.integers(50, 501), len(frames) - sum(lengths))))
    utt_ids = [f"utt{i:05d}" for i in range(len(lengths))]
    writer = FeatureCacheWriter(folder, "bench", [LAYER], frames.shape[1], utt_ids, lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for i, utt_id in enumerate(utt_ids):
        writer.write(utt_id, {LAYER: frames[offsets[i]:offsets[i + 1]]})
    writer.finalize()
    return FeatureCache(folder, "bench")


def time_streaming(model, cache, max_frames):
    """Label the cached split in batches; return seconds, traced peak bytes and labels."""
    n_batches = sum(1 for _ in cache.iter_batches(LAYER, max_frames))
    tracemalloc.start()
    started = time.perf_counter()
    labels = {}
    for utt_id, frame_labels in assign_labels_streaming(
        model, cache.iter_batches(LAYER, max_frames), total=n_batches
    ):
        labels[utt_id] = frame_labels
    seconds = time.perf_counter() - started
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak_bytes, labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_frames", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--n_components", type=int, default=None,
                        help="mixture components (default 4 * k)")
    parser.add_argument("--n_iter", type=int, default=20, help="faiss iterations")
    parser.add_argument("--sklearn_n_init", type=int, default=SKLEARN_DEFAULTS["n_init"],
                        help="MiniBatchKMeans n_init (fairseq: 20)")
    parser.add_argument("--stream_max_frames", type=int, default=8192,
                        help="frames per batch when streaming label assignment")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    n_components = args.n_components or 4 * args.k
    frames = synthetic_frames(args.n_frames, args.dim, n_components, args.seed)
    print(f"features: {args.n_frames} x {args.dim} float32, {n_components} mixture "
          f"components, K={args.k}")

    sklearn_options = {"n_init": args.sklearn_n_init}
    with tempfile.TemporaryDirectory() as folder:
        frames_path = Path(folder) / "frames.npy"
        np.save(frames_path, frames)
        fit_args = (args.k, args.seed, args.n_iter, sklearn_options)
        ours = fit_in_fresh_process(
            frames_path, Path(folder) / "faiss.npz", fit_args[0], "faiss", *fit_args[1:]
        )
        reference = fit_in_fresh_process(
            frames_path, Path(folder) / "sklearn.npz", fit_args[0], "sklearn", *fit_args[1:]
        )
        if args.sklearn_n_init != SKLEARN_DEFAULTS["n_init"]:
            print(f"note: sklearn n_init={args.sklearn_n_init} (fairseq uses "
                  f"{SKLEARN_DEFAULTS['n_init']})")
        ours_seconds = ours.meta["fit_seconds"]
        reference_seconds = reference.meta["fit_seconds"]
        # The same function on the same frames for both models.
        ours_inertia, reference_inertia = ours.inertia_of(frames), reference.inertia_of(frames)

        cache = write_cache(Path(folder) / "cache", frames, args.seed)
        stream_seconds, peak_bytes, streamed = time_streaming(
            ours, cache, args.stream_max_frames
        )
        cached_frames = np.concatenate([cache.features(LAYER, u) for u in cache.utt_ids])
        direct = ours.predict(cached_frames)
        agree = np.array_equal(np.concatenate(list(streamed.values())), direct)
        n_utterances = len(cache.utt_ids)

    batch_bytes = args.stream_max_frames * args.dim * 4
    rows = [
        ("faiss k-means (ours)", f"niter={args.n_iter}", ours_seconds, ours_inertia),
        ("sklearn MiniBatchKMeans", f"n_init={args.sklearn_n_init}, fairseq settings",
         reference_seconds, reference_inertia),
    ]
    print()
    print(f"| {'method':<24} | {'settings':<28} | {'fit s':>7} | {'inertia':>12} |")
    print(f"|{'-' * 26}|{'-' * 30}|{'-' * 9}|{'-' * 14}|")
    for name, settings, seconds, inertia in rows:
        print(f"| {name:<24} | {settings:<28} | {seconds:>7.2f} | {inertia:>12.5g} |")
    print()
    print(f"streaming label assignment: {n_utterances} utterances, {args.n_frames} frames in "
          f"{stream_seconds:.2f} s ({args.n_frames / stream_seconds:,.0f} frames/s); batches "
          f"of <= {args.stream_max_frames} frames")
    print(f"  traced peak memory {peak_bytes / 2**20:.1f} MiB (one float32 batch "
          f"{batch_bytes / 2**20:.1f} MiB; all features {frames.nbytes / 2**20:.1f} MiB); "
          f"labels equal direct predict: {agree}")
    print(f"speedup={reference_seconds / ours_seconds:.1f} "
          f"inertia_ratio={ours_inertia / reference_inertia:.4f}")


if __name__ == "__main__":
    main()
