"""The on-disk frame-feature cache: round trip, shards, streaming, sampling, resume, checks."""

import numpy as np
import pytest

from lobes.gmp.feature_cache import (
    CacheMismatchError,
    FeatureCache,
    FeatureCacheWriter,
    IncompleteCacheError,
)
from lobes.gmp.labels import expected_frame_counts

LAYERS = [3, 6]
DIM = 8


def make_manifest(n_utterances=11, seed=0):
    rng = np.random.default_rng(seed)
    durations = rng.uniform(0.2, 1.5, n_utterances).round(4)
    return {
        f"Ses01F_impro01_F{i:03d}": {"duration": float(duration), "emo": "neu", "gender": "F"}
        for i, duration in enumerate(durations)
    }


def make_features(manifest, seed=1):
    """Per utterance, per layer, random frames of the manifest-implied length."""
    rng = np.random.default_rng(seed)
    counts = expected_frame_counts(manifest)
    return {
        utt_id: {layer: rng.normal(0, 3, (counts[utt_id], DIM)) for layer in LAYERS}
        for utt_id in manifest
    }


def open_writer(folder, manifest, rank=0, world_size=1, progress_every=100):
    counts = expected_frame_counts(manifest)
    return FeatureCacheWriter(
        folder,
        "train",
        LAYERS,
        DIM,
        list(manifest),
        [counts[utt_id] for utt_id in manifest],
        durations=[entry["duration"] for entry in manifest.values()],
        rank=rank,
        world_size=world_size,
        progress_every=progress_every,
    )


def build_cache(folder, manifest, features, world_size=1):
    for rank in range(world_size):
        writer = open_writer(folder, manifest, rank, world_size)
        for utt_id in writer.pending_ids:
            writer.write(utt_id, features[utt_id])
        writer.finalize()
    return FeatureCache(folder, "train")


@pytest.fixture
def manifest():
    return make_manifest()


@pytest.fixture
def features(manifest):
    return make_features(manifest)


def test_round_trip(tmp_path, manifest, features):
    cache = build_cache(tmp_path, manifest, features)
    assert cache.utt_ids == list(manifest)
    assert cache.layers == LAYERS
    assert cache.dim == DIM
    counts = expected_frame_counts(manifest)
    assert cache.frame_counts.tolist() == [counts[utt_id] for utt_id in manifest]
    for utt_id in manifest:
        for layer in LAYERS:
            stored = cache.features(layer, utt_id)
            assert stored.dtype == np.float32
            np.testing.assert_allclose(stored, features[utt_id][layer], rtol=1e-3, atol=1e-3)
    assert FeatureCache.is_complete(tmp_path, "train")
    cache.check_matches(manifest)


@pytest.mark.parametrize("world_size", [1, 3])
def test_iter_batches_covers_every_frame_once(tmp_path, manifest, features, world_size):
    cache = build_cache(tmp_path, manifest, features, world_size)
    max_frames = 60
    seen_ids, seen_frames = [], []
    for utt_ids, frames, lengths in cache.iter_batches(6, max_frames):
        assert len(frames) == lengths.sum()
        assert len(frames) <= max_frames or len(utt_ids) == 1
        seen_ids += utt_ids
        seen_frames.append(frames)
    assert seen_ids == list(manifest)
    expected = np.concatenate([features[utt_id][6] for utt_id in manifest])
    np.testing.assert_allclose(np.concatenate(seen_frames), expected, rtol=1e-3, atol=1e-3)


def test_sharded_writes_read_as_one(tmp_path, manifest, features):
    whole = build_cache(tmp_path / "whole", manifest, features)
    sharded = build_cache(tmp_path / "sharded", manifest, features, world_size=4)
    assert sharded.world_size == 4
    assert sharded.utt_ids == whole.utt_ids
    assert np.array_equal(sharded.frame_counts, whole.frame_counts)
    for utt_id in manifest:
        assert np.array_equal(sharded.features(3, utt_id), whole.features(3, utt_id))
    sharded.check_matches(manifest)
    # The k-means training sample must not depend on how many ranks extracted.
    for max_frames in (37, 10**6):
        assert np.array_equal(
            sharded.sample_frames(6, max_frames, seed=5), whole.sample_frames(6, max_frames, seed=5)
        )
    everything = sharded.sample_frames(6, 10**6, chunk_frames=7)
    assert np.array_equal(everything, np.concatenate([whole.features(6, u) for u in manifest]))


def test_unfinished_shard_is_incomplete(tmp_path, manifest, features):
    writer = open_writer(tmp_path, manifest, rank=0, world_size=2)
    for utt_id in writer.pending_ids:
        writer.write(utt_id, features[utt_id])
    writer.finalize()
    assert not FeatureCache.is_complete(tmp_path, "train")
    with pytest.raises(IncompleteCacheError, match=r"ranks \[1\] of 2 are unfinished"):
        FeatureCache(tmp_path, "train")
    with pytest.raises(IncompleteCacheError, match="written by 2 ranks, this run has 1"):
        open_writer(tmp_path, manifest)


def test_finalize_refuses_missing_utterances(tmp_path, manifest, features):
    writer = open_writer(tmp_path, manifest)
    writer.write(next(iter(manifest)), features[next(iter(manifest))])
    with pytest.raises(IncompleteCacheError, match="10 in all"):
        writer.finalize()
    assert not FeatureCache.is_complete(tmp_path, "train")


def test_resume_after_interruption_equals_uninterrupted(tmp_path, manifest, features):
    build_cache(tmp_path / "straight", manifest, features)
    folder = tmp_path / "resumed"
    writer = open_writer(folder, manifest, progress_every=3)
    utt_ids = list(manifest)
    for utt_id in utt_ids[:7]:
        writer.write(utt_id, features[utt_id])
    del writer  # a crash: no finalize, the 7th write was never recorded
    resumed = open_writer(folder, manifest, progress_every=3)
    assert resumed.pending_ids == utt_ids[6:]
    for utt_id in resumed.pending_ids:
        resumed.write(utt_id, features[utt_id])
    resumed.finalize()
    for name in sorted(p.name for p in (tmp_path / "straight").iterdir()):
        assert (folder / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (tmp_path / "straight").iterdir()
    )
    assert open_writer(folder, manifest).pending_ids == []


def test_changed_plan_restarts_an_unfinished_shard(tmp_path, manifest, features):
    writer = open_writer(tmp_path, manifest, progress_every=1)
    writer.write(next(iter(manifest)), features[next(iter(manifest))])
    smaller = dict(list(manifest.items())[:5])
    assert open_writer(tmp_path, smaller).pending_ids == list(smaller)


def test_write_checks_frames(tmp_path, manifest, features):
    writer = open_writer(tmp_path, manifest)
    utt_id = next(iter(manifest))
    too_long = {layer: np.vstack([x, x[:1]]) for layer, x in features[utt_id].items()}
    with pytest.raises(ValueError, match="expected"):
        writer.write(utt_id, too_long)
    with pytest.raises(ValueError, match="overflow float16"):
        writer.write(utt_id, {layer: frames * 1e6 for layer, frames in features[utt_id].items()})
    with pytest.raises(ValueError, match="got layers"):
        writer.write(utt_id, {3: features[utt_id][3]})


def test_sample_frames(tmp_path, manifest, features):
    cache = build_cache(tmp_path, manifest, features, world_size=2)
    all_frames = np.concatenate([cache.features(6, utt_id) for utt_id in cache.utt_ids])
    sample = cache.sample_frames(6, 50, seed=3)
    assert sample.shape == (50, DIM) and sample.dtype == np.float32
    assert np.array_equal(sample, cache.sample_frames(6, 50, seed=3))
    assert not np.array_equal(sample, cache.sample_frames(6, 50, seed=4))
    rows = {row.tobytes() for row in all_frames}
    assert all(row.tobytes() in rows for row in sample)
    assert len({row.tobytes() for row in sample}) == 50  # without replacement
    everything = cache.sample_frames(6, 10**6, seed=0, chunk_frames=7)
    assert sorted(map(bytes, everything)) == sorted(map(bytes, all_frames))


def test_mismatch_against_manifest_raises(tmp_path, manifest, features):
    cache = build_cache(tmp_path, manifest, features)
    missing_one = dict(manifest)
    missing_one.pop(next(iter(manifest)))
    with pytest.raises(CacheMismatchError, match="cached utterances not in the manifest") as error:
        cache.check_matches(missing_one)
    assert str(tmp_path) in str(error.value) and "delete the cache folder" in str(error.value)
    extra = {**manifest, "Ses05M_new_M000": {"duration": 1.0}}
    with pytest.raises(CacheMismatchError, match="Ses05M_new_M000"):
        cache.check_matches(extra)
    changed = {utt_id: dict(entry) for utt_id, entry in manifest.items()}
    last = list(manifest)[-1]
    changed[last]["duration"] += 0.001  # a few samples: same frame count, other audio
    with pytest.raises(CacheMismatchError, match=last):
        cache.check_matches(changed)
