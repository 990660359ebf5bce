"""k-means for GMP pseudo-labels: faiss (fast, default) or scikit-learn MiniBatchKMeans.

Both backends give a ``KMeansModel`` whose labels and inertia are computed by the
same code, so models of either backend are interchangeable and comparable.
"""

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lobes.utils.io import atomic_write

logger = logging.getLogger(__name__)
# faiss logs every CPU-specific build it tries before the one it loads, at INFO: noise in every
# stage log, not a problem
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

BACKENDS = ("faiss", "sklearn")

# fairseq examples/hubert/simple_kmeans/learn_kmeans.py defaults.
SKLEARN_DEFAULTS = {
    "init": "k-means++",
    "max_iter": 100,
    "batch_size": 10000,
    "tol": 0.0,
    "max_no_improvement": 100,
    "n_init": 20,
    "reassignment_ratio": 0.0,
}

# faiss warns below this many training frames per centroid (its own threshold).
FEW_FRAMES_PER_CLUSTER = 39
ASSIGN_BATCH_FRAMES = 65536


def _as_float32_matrix(features):
    return np.ascontiguousarray(np.asarray(features), dtype=np.float32)


@dataclass(eq=False)
class KMeansModel:
    """Centroids of a fitted k-means, with how they were fitted.

    Arguments
    ---------
    centroids : np.ndarray
        ``(n_clusters, dim)`` float32.
    backend : str
        ``"faiss"`` or ``"sklearn"``.
    inertia : float
        Sum of squared distances of the training frames to their nearest centroid.
    n_train_frames : int
        Frames the model was fitted on.
    layer : int, optional
        Encoder layer of the features.
    meta : dict
        Any further JSON-able facts (seed, options, source).
    path : str, optional
        Where the model was loaded from or saved to (named in errors).

    Example
    -------
    >>> model = KMeansModel(np.array([[0.0, 0.0], [10.0, 10.0]]), "faiss", 0.0, 2)
    >>> model.predict(np.array([[1.0, 1.0], [9.0, 8.0]]))
    array([0, 1])
    >>> model.inertia_of(np.array([[1.0, 1.0]]))
    2.0
    """

    centroids: np.ndarray
    backend: str
    inertia: float
    n_train_frames: int
    layer: int = None
    meta: dict = field(default_factory=dict)
    path: str = None

    def __post_init__(self):
        self.centroids = _as_float32_matrix(self.centroids)
        self._index = None

    @property
    def n_clusters(self):
        """Number of centroids."""
        return self.centroids.shape[0]

    @property
    def dim(self):
        """Feature dimension the model was fitted on."""
        return self.centroids.shape[1]

    def check_dim(self, dim):
        """Raise ``ValueError`` unless features of ``dim`` dimensions fit this model."""
        if int(dim) != self.dim:
            raise ValueError(
                f"k-means model {self.path or '(in memory)'} was fitted on {self.dim}-dim "
                f"features, got {dim}: it comes from another layer/encoder; re-run the GMP "
                "extraction"
            )

    def _search(self, features):
        import faiss

        features = _as_float32_matrix(features)
        if features.ndim != 2:
            raise ValueError(f"expected features (n_frames, dim), got shape {features.shape}")
        self.check_dim(features.shape[1])
        if self._index is None:
            self._index = faiss.IndexFlatL2(self.dim)
            self._index.add(self.centroids)
        labels = np.empty(len(features), dtype=np.int64)
        for start in range(0, len(features), ASSIGN_BATCH_FRAMES):
            chunk = features[start:start + ASSIGN_BATCH_FRAMES]
            _, nearest = self._index.search(chunk, 1)
            labels[start:start + len(chunk)] = nearest[:, 0]
        return features, labels

    def predict(self, features):
        """Nearest-centroid label (int64) of each frame of ``features (n_frames, dim)``."""
        return self._search(features)[1]

    def inertia_of(self, features):
        """Sum of squared distances of ``features`` to their nearest centroid (float64)."""
        features, labels = self._search(features)
        total = 0.0
        # Exact differences, not faiss's |x|^2 + |c|^2 - 2xc, so that the value
        # does not depend on the backend's rounding.
        for start in range(0, len(features), ASSIGN_BATCH_FRAMES):
            stop = start + ASSIGN_BATCH_FRAMES
            residual = features[start:stop].astype(np.float64)
            residual -= self.centroids[labels[start:stop]]
            total += float(np.einsum("ij,ij->", residual, residual))
        return total

    def save(self, path):
        """Write the model atomically to ``path`` (a ``.npz``; no pickle)."""
        path = Path(path)
        header = {
            "backend": self.backend,
            "inertia": self.inertia,
            "n_train_frames": self.n_train_frames,
            "layer": self.layer,
            "meta": self.meta,
        }
        with atomic_write(path, "wb") as handle:
            header_json = np.array(json.dumps(header, sort_keys=True))
            np.savez(handle, centroids=self.centroids, header=header_json)
        self.path = str(path)

    @classmethod
    def load(cls, path, expected_dim=None):
        """Read a model written by ``save``; check its dim against ``expected_dim`` if given.

        Example
        -------
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "km.npz"
        >>> KMeansModel(np.eye(2), "faiss", 1.5, 10, layer=6).save(path)
        >>> model = KMeansModel.load(path)
        >>> model.n_clusters, model.layer, model.inertia
        (2, 6, 1.5)
        >>> KMeansModel.load(path, expected_dim=3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: k-means model ...km.npz was fitted on 2-dim features, got 3: ...
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"k-means model {path} does not exist: run the GMP extraction")
        with np.load(path, allow_pickle=False) as archive:
            centroids = archive["centroids"]
            header = json.loads(str(archive["header"]))
        model = cls(centroids=centroids, path=str(path), **header)
        if expected_dim is not None:
            model.check_dim(expected_dim)
        return model


def _faiss_init_method(name):
    import faiss

    methods = {
        "random": faiss.ClusteringInitMethod_RANDOM,
        "k-means++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
        "afk-mc2": faiss.ClusteringInitMethod_AFK_MC2,
    }
    if name not in methods:
        raise ValueError(f"unknown faiss init_method {name!r}: use one of {list(methods)}")
    return methods[name]


def fit_kmeans(
    features,
    n_clusters,
    backend="faiss",
    seed=0,
    n_iter=20,
    faiss_options=None,
    sklearn_options=None,
    layer=None,
):
    """Fit k-means on frames ``features (N, D)`` and return a ``KMeansModel``.

    Arguments
    ---------
    features : np.ndarray
        Training frames (padding excluded), converted to float32.
    n_clusters : int
        Number of clusters K.
    backend : str
        ``"faiss"``: ``faiss.Kmeans`` with ``n_iter`` Lloyd iterations, trained on
        every given frame (faiss's own subsampling to 256 frames per centroid is
        switched off: bound N upstream, e.g. with ``FeatureCache.sample_frames``).
        ``"sklearn"``: ``MiniBatchKMeans`` with fairseq HuBERT's settings
        (``SKLEARN_DEFAULTS``), updated by ``sklearn_options`` (e.g. ``{"n_init": 3}``).
    seed : int
        Random seed of either backend.
    n_iter : int
        faiss iterations.
    faiss_options : dict, optional
        Further ``faiss.ClusteringParameters`` fields, e.g. ``{"nredo": 3}`` (best
        of 3 runs) or ``{"init_method": "k-means++"}`` (default: faiss's random
        init; ``"k-means++"`` and ``"afk-mc2"`` help on well-separated data).
    sklearn_options : dict, optional
        Overrides of ``SKLEARN_DEFAULTS``.
    layer : int, optional
        Encoder layer, stored in the model.

    Raises
    ------
    ValueError
        If there are fewer frames than clusters, or for an unknown backend.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> frames = np.concatenate([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    >>> model = fit_kmeans(frames, 2, backend="faiss")
    >>> sorted(np.bincount(model.predict(frames)).tolist())
    [50, 50]
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}: use one of {BACKENDS}")
    features = _as_float32_matrix(features)
    if features.ndim != 2:
        raise ValueError(f"expected features (n_frames, dim), got shape {features.shape}")
    n_train_frames, dim = features.shape
    if n_train_frames < n_clusters:
        raise ValueError(
            f"only {n_train_frames} training frames for {n_clusters} clusters: lower the "
            "scale or add data"
        )
    if n_train_frames < FEW_FRAMES_PER_CLUSTER * n_clusters:
        logger.warning(
            "k-means: %d frames for %d clusters (fewer than %d per cluster); clusters will be "
            "noisy", n_train_frames, n_clusters, FEW_FRAMES_PER_CLUSTER,
        )
    started = time.perf_counter()
    if backend == "faiss":
        import faiss

        options = {"niter": n_iter, "seed": seed, **(faiss_options or {})}
        clustering_parameters = dict(options)
        if "init_method" in clustering_parameters:
            clustering_parameters["init_method"] = _faiss_init_method(
                clustering_parameters["init_method"]
            )
        kmeans = faiss.Kmeans(
            dim,
            n_clusters,
            verbose=False,
            spherical=False,
            # faiss would otherwise silently train on 256 frames per centroid at most.
            max_points_per_centroid=math.ceil(n_train_frames / n_clusters) + 1,
            min_points_per_centroid=1,
            **clustering_parameters,
        )
        kmeans.train(features)
        centroids = kmeans.centroids
    else:
        from sklearn.cluster import MiniBatchKMeans

        options = {**SKLEARN_DEFAULTS, **(sklearn_options or {})}
        kmeans = MiniBatchKMeans(
            n_clusters=n_clusters,
            random_state=seed,
            compute_labels=False,
            init_size=None,
            verbose=0,
            **options,
        )
        kmeans.fit(features)
        centroids = kmeans.cluster_centers_
        options = {**options, "seed": seed}
    fit_seconds = time.perf_counter() - started
    model = KMeansModel(
        centroids=centroids,
        backend=backend,
        inertia=0.0,
        n_train_frames=n_train_frames,
        layer=layer,
        meta={"options": options, "fit_seconds": fit_seconds},
    )
    model.inertia = model.inertia_of(features)
    logger.info(
        "k-means %s K=%d on %d x %d frames%s: %.1f s, inertia %.4g (%.4g per frame)",
        backend, n_clusters, n_train_frames, dim,
        "" if layer is None else f" of layer {layer}",
        fit_seconds, model.inertia, model.inertia / n_train_frames,
    )
    return model


def assign_labels_streaming(model, batches, total=None, desc="assigning GMP labels"):
    """Label the frames of each utterance, one batch in memory at a time.

    Arguments
    ---------
    model : KMeansModel
        Fitted model.
    batches : iterable
        ``(utt_ids, frames (sum(lengths), dim), lengths)`` tuples, such as
        ``FeatureCache.iter_batches``.
    total : int, optional
        Number of batches, for the progress bar.
    desc : str
        Progress bar label.

    Yields
    ------
    utt_id : str
    frame_labels : np.ndarray
        int64 cluster id of each frame.

    Example
    -------
    >>> model = KMeansModel(np.array([[0.0], [1.0]]), "faiss", 0.0, 2)
    >>> batches = [(["a", "b"], np.array([[0.1], [0.9], [0.8]]), np.array([1, 2]))]
    >>> [(utt_id, labels.tolist()) for utt_id, labels in assign_labels_streaming(model, batches)]
    [('a', [0]), ('b', [1, 1])]
    """
    from tqdm import tqdm

    for utt_ids, frames, lengths in tqdm(batches, total=total, desc=desc, leave=False):
        labels = model.predict(frames)
        if len(labels) != int(np.sum(lengths)):
            raise ValueError(f"batch of {len(labels)} frames but lengths sum to {np.sum(lengths)}")
        yield from zip(utt_ids, np.split(labels, np.cumsum(lengths)[:-1]), strict=True)
