"""k-means backends, the model's labels, inertia, persistence and streaming assignment."""

import numpy as np
import pytest

from lobes.gmp.kmeans import KMeansModel, assign_labels_streaming, fit_kmeans


def mixture(n_frames=5000, dim=32, n_true_clusters=64, seed=0):
    """Overlapping Gaussian clusters with per-dimension (anisotropic) noise.

    More true clusters than fitted ones and overlap, like encoder features: with
    exactly K well-separated clusters a single random-init run lands in local
    minima that sklearn's 20 k-means++ restarts avoid.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (n_true_clusters, dim))
    scales = rng.uniform(0.3, 1.5, (n_true_clusters, dim))
    members = rng.integers(0, n_true_clusters, n_frames)
    noise = rng.normal(size=(n_frames, dim)) * scales[members]
    return (centers[members] + noise).astype(np.float32)


def brute_force_distances(features, centroids):
    differences = features[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)
    return (differences**2).sum(axis=2)


@pytest.fixture(scope="module")
def frames():
    return mixture()


@pytest.fixture(scope="module")
def models(frames):
    return {
        backend: fit_kmeans(frames, 16, backend=backend, seed=0)
        for backend in ("faiss", "sklearn")
    }


def test_backends_reach_similar_inertia(frames, models):
    faiss_inertia = models["faiss"].inertia
    sklearn_inertia = models["sklearn"].inertia
    assert abs(faiss_inertia - sklearn_inertia) / sklearn_inertia < 0.05
    for model in models.values():
        assert model.centroids.shape == (16, 32)
        assert model.centroids.dtype == np.float32
        assert model.n_train_frames == len(frames)
        assert model.inertia == pytest.approx(model.inertia_of(frames))
    # A k-means fit must beat random centroids by far.
    random_centroids = KMeansModel(frames[:16], "faiss", 0.0, 16)
    assert faiss_inertia < 0.8 * random_centroids.inertia_of(frames)


def test_inertia_is_sum_of_squared_nearest_distances(frames, models):
    for model in models.values():
        distances = brute_force_distances(frames[:500], model.centroids)
        assert model.inertia_of(frames[:500]) == pytest.approx(distances.min(axis=1).sum(), 1e-6)


def test_predict_matches_brute_force(frames, models):
    for model in models.values():
        labels = model.predict(frames)
        assert labels.dtype == np.int64
        distances = brute_force_distances(frames, model.centroids)
        nearest = distances.argmin(axis=1)
        chosen = distances[np.arange(len(frames)), labels]
        # Equal except where two centroids are (float32-)equally near.
        assert np.allclose(chosen, distances.min(axis=1), rtol=1e-5, atol=1e-5)
        assert (labels == nearest).mean() > 0.999


def test_too_few_frames_raises():
    with pytest.raises(ValueError, match="only 10 training frames for 16 clusters"):
        fit_kmeans(np.zeros((10, 4), np.float32), 16)


def test_unknown_backend_raises(frames):
    with pytest.raises(ValueError, match="unknown k-means backend"):
        fit_kmeans(frames, 4, backend="torch")


def test_faiss_trains_on_every_frame():
    # faiss would subsample to 256 frames per centroid by default; then the centroids
    # would be means of a sample, off the full-data means by ~ 1 / sqrt(256).
    rng = np.random.default_rng(1)
    frames = np.concatenate([rng.normal(0, 1, (20000, 2)), rng.normal(50, 1, (20000, 2))])
    frames = frames.astype(np.float32)
    model = fit_kmeans(frames, 2, backend="faiss", seed=0)
    labels = model.predict(frames)
    for cluster in range(2):
        full_mean = frames[labels == cluster].mean(axis=0)
        assert np.allclose(model.centroids[cluster], full_mean, atol=1e-3)


def test_save_load_round_trip(tmp_path, models, frames):
    for backend, model in models.items():
        path = tmp_path / f"km_{backend}.npz"
        model.layer = 6
        model.save(path)
        loaded = KMeansModel.load(path)
        assert np.array_equal(loaded.centroids, model.centroids)
        assert loaded.backend == backend
        assert loaded.layer == 6
        assert loaded.inertia == model.inertia
        assert loaded.n_train_frames == model.n_train_frames
        assert loaded.meta["options"] == model.meta["options"]
        assert np.array_equal(loaded.predict(frames), model.predict(frames))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["km_faiss.npz", "km_sklearn.npz"]


def test_dim_mismatch_names_the_model(tmp_path, models):
    path = tmp_path / "km.npz"
    models["faiss"].save(path)
    with pytest.raises(ValueError, match=r"km\.npz was fitted on 32-dim features, got 24"):
        KMeansModel.load(path, expected_dim=24)
    with pytest.raises(ValueError, match="another layer/encoder; re-run the GMP extraction"):
        KMeansModel.load(path).predict(np.zeros((3, 24), np.float32))


def test_streaming_assignment_matches_predict(frames, models):
    model = models["faiss"]
    lengths = np.array([7, 1, 300, 92, 100])
    utt_ids = [f"u{i}" for i in range(len(lengths))]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    batches = [
        (utt_ids[:2], frames[: offsets[2]], lengths[:2]),
        (utt_ids[2:], frames[offsets[2] : offsets[-1]], lengths[2:]),
    ]
    assigned = dict(assign_labels_streaming(model, iter(batches)))
    assert list(assigned) == utt_ids
    expected = model.predict(frames[: offsets[-1]])
    for i, utt_id in enumerate(utt_ids):
        assert np.array_equal(assigned[utt_id], expected[offsets[i] : offsets[i + 1]])


def test_faiss_options_reach_faiss(frames):
    model = fit_kmeans(frames, 16, faiss_options={"init_method": "k-means++", "nredo": 2})
    assert model.meta["options"]["init_method"] == "k-means++"
    assert model.meta["options"]["nredo"] == 2
    with pytest.raises(ValueError, match="unknown faiss init_method"):
        fit_kmeans(frames, 16, faiss_options={"init_method": "kmeans++"})
