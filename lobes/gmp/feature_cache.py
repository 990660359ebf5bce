"""On-disk cache of encoder frame features, in the fairseq ``simple_kmeans`` layout.

For one split, every rank of an extraction run writes one shard: per layer a flat
float16 ``.npy`` (memory-mapped) holding the frames of its utterances back to back,
and one JSON index of those utterances (ids, frame counts, durations). Any
utterance is then an offset slice, and the reader presents all shards as one cache.

Files in ``folder`` for ``split``, rank ``r`` of ``w``::

    {split}_layer{L}_{r}_{w}.npy      frames of layer L, shape (frames of the shard, dim)
    {split}_{r}_{w}.plan.json         what the shard will hold (written first)
    {split}_{r}_{w}.progress.npy      which utterances are safely on disk (while writing)
    {split}_{r}_{w}.index.json        the index, written last: its presence marks the
                                      shard complete

Utterance ``i`` of the writer's list goes to rank ``i % world_size``.
"""

import contextlib
import json
import logging
import re
from pathlib import Path

import numpy as np

from lobes.gmp.labels import expected_frame_counts
from lobes.utils.io import atomic_write, write_json_atomic

logger = logging.getLogger(__name__)

CACHE_DTYPE = np.float16
FORMAT_VERSION = 1


class IncompleteCacheError(RuntimeError):
    """Raised when a feature cache is missing, unfinished or holds mixed shardings."""


class CacheMismatchError(ValueError):
    """Raised when a feature cache was built for other utterances than the manifest's."""


def _shard_prefix(split, rank, world_size):
    return f"{split}_{rank}_{world_size}"


def _layer_path(folder, split, layer, rank, world_size):
    return Path(folder) / f"{split}_layer{layer}_{rank}_{world_size}.npy"


def _index_path(folder, split, rank, world_size):
    return Path(folder) / f"{_shard_prefix(split, rank, world_size)}.index.json"


def _plan_path(folder, split, rank, world_size):
    return Path(folder) / f"{_shard_prefix(split, rank, world_size)}.plan.json"


def _progress_path(folder, split, rank, world_size):
    return Path(folder) / f"{_shard_prefix(split, rank, world_size)}.progress.npy"


def _shard_files(folder, split, kind):
    """Map ``(rank, world_size)`` to the path of every ``kind`` file of ``split``."""
    pattern = re.compile(rf"^{re.escape(split)}_(\d+)_(\d+)\.{kind}$")
    found = {}
    for path in Path(folder).glob(f"{split}_*.{kind}"):
        match = pattern.match(path.name)
        if match:
            found[(int(match.group(1)), int(match.group(2)))] = path
    return found


def _first_few(ids, count=5):
    ids = list(ids)
    shown = ", ".join(str(utt_id) for utt_id in ids[:count])
    return f"{shown}{' ...' if len(ids) > count else ''} ({len(ids)} in all)"


class FeatureCacheWriter:
    """Write (or resume writing) one rank's shard of a split's feature cache.

    The writer preallocates the flat arrays of its shard, so utterances may be
    written in any order. Every ``progress_every`` writes it flushes the arrays and
    then records which utterances are on disk; a writer created again on the same
    folder with the same plan reopens the arrays and lists in ``pending_ids`` only
    what is still missing. ``finalize`` writes the index last.

    Arguments
    ---------
    folder : str or Path
        Cache folder (created if needed).
    split : str
        Split name, e.g. ``"train"``.
    layers : list of int
        Encoder layers cached (HF ``hidden_states`` indexing).
    dim : int
        Feature dimension.
    utt_ids : list of str
        All utterances of the split, in a fixed order shared by every rank.
    frame_counts : list of int
        Frames of each utterance, aligned with ``utt_ids``.
    durations : list of float, optional
        Manifest durations, aligned with ``utt_ids``; stored so that
        ``FeatureCache.check_matches`` can detect a changed utterance exactly.
    rank, world_size : int
        This writer writes utterances ``i`` with ``i % world_size == rank``.
    progress_every : int
        Writes between two progress flushes.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> writer = FeatureCacheWriter(folder, "train", [6], 4, ["a", "b"], [2, 3])
    >>> writer.pending_ids
    ['a', 'b']
    >>> writer.write("a", {6: np.ones((2, 4))})
    >>> writer.write("b", {6: np.zeros((3, 4))})
    >>> writer.finalize()
    >>> float(FeatureCache(folder, "train").features(6, "a").sum())
    8.0
    """

    def __init__(
        self,
        folder,
        split,
        layers,
        dim,
        utt_ids,
        frame_counts,
        durations=None,
        rank=0,
        world_size=1,
        progress_every=100,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        if len(utt_ids) != len(frame_counts):
            raise ValueError(
                f"{len(utt_ids)} utterance ids but {len(frame_counts)} frame counts"
            )
        if durations is not None and len(durations) != len(utt_ids):
            raise ValueError(f"{len(utt_ids)} utterance ids but {len(durations)} durations")
        if len(set(utt_ids)) != len(utt_ids):
            raise ValueError("utterance ids must be unique")
        self.folder = Path(folder)
        self.split = split
        self.rank = rank
        self.world_size = world_size
        self.progress_every = progress_every
        shard_positions = range(rank, len(utt_ids), world_size)
        self.plan = {
            "format_version": FORMAT_VERSION,
            "split": split,
            "rank": rank,
            "world_size": world_size,
            "n_utterances_total": len(utt_ids),
            "layers": [int(layer) for layer in layers],
            "dim": int(dim),
            "dtype": np.dtype(CACHE_DTYPE).name,
            "utt_ids": [str(utt_ids[i]) for i in shard_positions],
            "frame_counts": [int(frame_counts[i]) for i in shard_positions],
            "durations": (
                None if durations is None else [float(durations[i]) for i in shard_positions]
            ),
        }
        counts = np.asarray(self.plan["frame_counts"], dtype=np.int64)
        if (counts < 1).any():
            raise ValueError("every utterance needs at least one frame")
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._position_of = {utt_id: i for i, utt_id in enumerate(self.plan["utt_ids"])}
        self._writes_since_flush = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self._refuse_other_shardings()
        self._open()

    def _refuse_other_shardings(self):
        for kind in ("plan.json", "index.json"):
            for _rank, world_size in _shard_files(self.folder, self.split, kind):
                if world_size != self.world_size:
                    raise IncompleteCacheError(
                        f"feature cache {self.folder} holds split '{self.split}' written by "
                        f"{world_size} ranks, this run has {self.world_size}: run with "
                        f"{world_size} ranks to resume it, or delete {self.folder} to start over"
                    )

    def _paths(self):
        args = (self.folder, self.split, self.rank, self.world_size)
        return _index_path(*args), _plan_path(*args), _progress_path(*args)

    def _open(self):
        index_path, plan_path, progress_path = self._paths()
        self._arrays = {}
        if index_path.exists():
            if _read_json(index_path)["plan"] != self.plan:
                raise CacheMismatchError(
                    f"feature cache {self.folder} already holds a complete shard "
                    f"{index_path.name} for other utterances, layers or dim: "
                    f"delete {self.folder} to rebuild it"
                )
            self.written = np.ones(len(self.plan["utt_ids"]), dtype=bool)
            self.complete = True
            return
        self.complete = False
        if plan_path.exists() and _read_json(plan_path) == self.plan and self._arrays_fit():
            self._arrays = {
                layer: np.lib.format.open_memmap(self._layer_path(layer), mode="r+")
                for layer in self.plan["layers"]
            }
            self.written = (
                np.load(progress_path)
                if progress_path.exists()
                else np.zeros(len(self.plan["utt_ids"]), dtype=bool)
            )
            logger.info(
                "resuming feature cache %s shard %d/%d: %d of %d utterances already written",
                self.folder, self.rank, self.world_size, self.written.sum(), len(self.written),
            )
            return
        if plan_path.exists():
            logger.warning(
                "feature cache %s: unfinished shard %s was planned for other utterances; "
                "starting it over", self.folder, plan_path.name,
            )
        with contextlib.suppress(FileNotFoundError):
            progress_path.unlink()
        shape = (int(self._offsets[-1]), self.plan["dim"])
        self._arrays = {
            layer: np.lib.format.open_memmap(
                self._layer_path(layer), mode="w+", dtype=CACHE_DTYPE, shape=shape
            )
            for layer in self.plan["layers"]
        }
        # The plan goes down after the arrays exist, so a plan on disk always has them.
        write_json_atomic(plan_path, self.plan)
        self.written = np.zeros(len(self.plan["utt_ids"]), dtype=bool)

    def _layer_path(self, layer):
        return _layer_path(self.folder, self.split, layer, self.rank, self.world_size)

    def _arrays_fit(self):
        shape = (int(self._offsets[-1]), self.plan["dim"])
        for layer in self.plan["layers"]:
            try:
                array = np.load(self._layer_path(layer), mmap_mode="r")
            except (OSError, ValueError):
                return False
            if array.shape != shape or array.dtype != CACHE_DTYPE:
                return False
        return True

    @property
    def pending_ids(self):
        """Utterance ids of this shard not yet safely written, in shard order."""
        return [utt_id for utt_id, done in zip(self.plan["utt_ids"], self.written, strict=True)
                if not done]

    def write(self, utt_id, features_by_layer):
        """Store one utterance's frames for every cached layer.

        Arguments
        ---------
        utt_id : str
            An utterance of this shard.
        features_by_layer : dict
            ``{layer: array (n_frames, dim)}`` with exactly the planned frame count.
        """
        if self.complete:
            raise RuntimeError(f"feature cache {self.folder} shard is already finalized")
        if utt_id not in self._position_of:
            raise KeyError(
                f"utterance {utt_id} is not in shard {self.rank}/{self.world_size} of "
                f"split '{self.split}'"
            )
        if sorted(features_by_layer) != sorted(self.plan["layers"]):
            raise ValueError(
                f"{utt_id}: got layers {sorted(features_by_layer)}, the cache holds "
                f"{self.plan['layers']}"
            )
        position = self._position_of[utt_id]
        start, stop = self._offsets[position], self._offsets[position + 1]
        expected_shape = (int(stop - start), self.plan["dim"])
        for layer, features in features_by_layer.items():
            features = np.asarray(features)
            if features.shape != expected_shape:
                raise ValueError(
                    f"{utt_id} layer {layer}: features of shape {features.shape}, expected "
                    f"{expected_shape} (frames from the manifest duration, cache dim)"
                )
            with np.errstate(over="ignore"):
                features_half = features.astype(CACHE_DTYPE)
            if not np.isfinite(features_half).all():
                raise ValueError(
                    f"{utt_id} layer {layer}: features overflow float16 (|x| > 65504) or "
                    "are not finite"
                )
            self._arrays[layer][start:stop] = features_half
        self.written[position] = True
        self._writes_since_flush += 1
        if self._writes_since_flush >= self.progress_every:
            self.flush()

    def flush(self):
        """Push written frames to disk, then record them as written."""
        if self.complete:
            return
        for array in self._arrays.values():
            array.flush()
        progress_path = self._paths()[2]
        with atomic_write(progress_path, "wb") as handle:
            np.save(handle, self.written)
        self._writes_since_flush = 0

    def finalize(self):
        """Flush, then write the shard index; raises if utterances are missing."""
        if self.complete:
            return
        pending = self.pending_ids
        if pending:
            raise IncompleteCacheError(
                f"feature cache {self.folder} shard {self.rank}/{self.world_size}: "
                f"{_first_few(pending)} utterances not written yet"
            )
        self.flush()
        index_path, plan_path, progress_path = self._paths()
        self._arrays = {}
        write_json_atomic(index_path, {"plan": self.plan})
        for path in (plan_path, progress_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.complete = True
        logger.info(
            "feature cache %s: shard %d/%d of '%s' complete (%d utterances, %d frames)",
            self.folder, self.rank, self.world_size, self.split,
            len(self.plan["utt_ids"]), self._offsets[-1],
        )


def _read_json(path):
    with open(path) as handle:
        return json.load(handle)


class FeatureCache:
    """Read every shard of a split's complete feature cache as one.

    Arguments
    ---------
    folder : str or Path
        Cache folder.
    split : str
        Split name.

    Raises
    ------
    IncompleteCacheError
        If a shard is missing or unfinished.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for rank in range(2):
    ...     writer = FeatureCacheWriter(folder, "valid", [3], 2, ["a", "b", "c"], [1, 2, 3],
    ...                                 rank=rank, world_size=2)
    ...     for utt_id in writer.pending_ids:
    ...         n = {"a": 1, "b": 2, "c": 3}[utt_id]
    ...         writer.write(utt_id, {3: np.full((n, 2), n)})
    ...     writer.finalize()
    >>> cache = FeatureCache(folder, "valid")
    >>> cache.utt_ids, cache.frame_counts.tolist(), cache.layers, cache.dim
    (['a', 'b', 'c'], [1, 2, 3], [3], 2)
    >>> [lengths.tolist() for _, _, lengths in cache.iter_batches(3, max_frames=3)]
    [[1, 2], [3]]
    """

    def __init__(self, folder, split):
        self.folder = Path(folder)
        self.split = split
        indexes = _shard_files(self.folder, split, "index.json")
        if not indexes:
            raise IncompleteCacheError(
                f"no complete feature cache for split '{split}' in {self.folder}: "
                "run (or finish) the GMP feature extraction"
            )
        world_sizes = {world_size for _, world_size in indexes}
        if len(world_sizes) > 1:
            raise IncompleteCacheError(
                f"feature cache {self.folder} holds split '{split}' shards of several runs "
                f"(world sizes {sorted(world_sizes)}): delete {self.folder} and extract again"
            )
        world_size = world_sizes.pop()
        missing_ranks = sorted(set(range(world_size)) - {rank for rank, _ in indexes})
        if missing_ranks:
            raise IncompleteCacheError(
                f"feature cache {self.folder}, split '{split}': shards of ranks {missing_ranks} "
                f"of {world_size} are unfinished: re-run the extraction to resume them"
            )
        self.shards = [
            _read_json(indexes[(rank, world_size)])["plan"] for rank in range(world_size)
        ]
        first = self.shards[0]
        shared_keys = ("layers", "dim", "dtype", "n_utterances_total", "format_version")
        for shard in self.shards[1:]:
            if any(shard[key] != first[key] for key in shared_keys):
                raise IncompleteCacheError(
                    f"feature cache {self.folder}, split '{split}': shards disagree on "
                    f"{shared_keys}: delete {self.folder} and extract again"
                )
        self.layers = first["layers"]
        self.dim = first["dim"]
        self.world_size = world_size
        n_total = first["n_utterances_total"]
        # Utterance i of the writers' list lives in shard i % world_size at position
        # i // world_size: rebuild that order so every rank's shards read as one list.
        self.utt_ids = [
            self.shards[i % world_size]["utt_ids"][i // world_size] for i in range(n_total)
        ]
        self.frame_counts = np.array(
            [self.shards[i % world_size]["frame_counts"][i // world_size] for i in range(n_total)],
            dtype=np.int64,
        )
        has_durations = first["durations"] is not None
        self.durations = (
            [self.shards[i % world_size]["durations"][i // world_size] for i in range(n_total)]
            if has_durations
            else None
        )
        self._shard_offsets = [
            np.concatenate([[0], np.cumsum(shard["frame_counts"])]).astype(np.int64)
            for shard in self.shards
        ]
        self._location = {
            utt_id: (i % world_size, i // world_size) for i, utt_id in enumerate(self.utt_ids)
        }
        self._arrays = {}

    @staticmethod
    def is_complete(folder, split):
        """True when every shard of ``split`` in ``folder`` is finalized.

        Example
        -------
        >>> import tempfile
        >>> FeatureCache.is_complete(tempfile.mkdtemp(), "train")
        False
        """
        try:
            FeatureCache(folder, split)
        except (IncompleteCacheError, FileNotFoundError):
            return False
        return True

    @property
    def n_frames_total(self):
        """Frames of all utterances together."""
        return int(self.frame_counts.sum())

    def _array(self, layer, shard):
        if layer not in self.layers:
            raise KeyError(f"feature cache {self.folder} holds layers {self.layers}, not {layer}")
        key = (layer, shard)
        if key not in self._arrays:
            path = _layer_path(self.folder, self.split, layer, shard, self.world_size)
            array = np.load(path, mmap_mode="r")
            expected = (int(self._shard_offsets[shard][-1]), self.dim)
            if array.shape != expected:
                raise IncompleteCacheError(
                    f"{path} has shape {array.shape}, its index says {expected}: "
                    f"delete {self.folder} and extract again"
                )
            self._arrays[key] = array
        return self._arrays[key]

    def features(self, layer, utt_id):
        """Frames ``(n_frames, dim)`` of one utterance, as float32."""
        shard, position = self._location[utt_id]
        offsets = self._shard_offsets[shard]
        frames = self._array(layer, shard)[offsets[position]:offsets[position + 1]]
        return np.asarray(frames, dtype=np.float32)

    def iter_batches(self, layer, max_frames):
        """Stream the whole split in cache order, ``max_frames`` frames at most per batch.

        An utterance longer than ``max_frames`` forms a batch of its own.

        Yields
        ------
        utt_ids : list of str
        frames : np.ndarray
            ``(sum(lengths), dim)`` float32, the utterances' frames back to back.
        lengths : np.ndarray
            Frames per utterance (int64).
        """
        batch_ids = []
        batch_frames = 0
        for utt_id, count in zip(self.utt_ids, self.frame_counts, strict=True):
            if batch_ids and batch_frames + count > max_frames:
                yield self._batch(layer, batch_ids)
                batch_ids, batch_frames = [], 0
            batch_ids.append(utt_id)
            batch_frames += int(count)
        if batch_ids:
            yield self._batch(layer, batch_ids)

    def _batch(self, layer, batch_ids):
        lengths = np.array([self.frame_counts_of(utt_id) for utt_id in batch_ids], dtype=np.int64)
        frames = np.empty((int(lengths.sum()), self.dim), dtype=np.float32)
        start = 0
        for utt_id, length in zip(batch_ids, lengths, strict=True):
            frames[start:start + length] = self.features(layer, utt_id)
            start += length
        return batch_ids, frames, lengths

    def frame_counts_of(self, utt_id):
        """Frame count of one utterance."""
        shard, position = self._location[utt_id]
        return self.shards[shard]["frame_counts"][position]

    def sample_frames(self, layer, max_frames, seed=0, chunk_frames=65536):
        """A seeded uniform sample of ``max_frames`` frames (all frames if fewer), float32.

        Frames are numbered in cache utterance order, whatever the sharding, so the
        same seed gives the same sample however many ranks wrote the cache. Memory
        stays at the sample plus a few integers per sampled frame.

        Example
        -------
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> writer = FeatureCacheWriter(folder, "s", [1], 2, ["a"], [10])
        >>> writer.write("a", {1: np.arange(20).reshape(10, 2)})
        >>> writer.finalize()
        >>> FeatureCache(folder, "s").sample_frames(1, 4, seed=0).shape
        (4, 2)
        """
        total = self.n_frames_total
        rng = np.random.default_rng(seed)
        if total <= max_frames:
            chosen = np.arange(total, dtype=np.int64)
        else:
            chosen = np.sort(rng.choice(total, size=max_frames, replace=False))
        utt_starts = np.concatenate([[0], np.cumsum(self.frame_counts)[:-1]])
        utt_of_frame = np.searchsorted(utt_starts, chosen, side="right") - 1
        shard_of_frame = utt_of_frame % self.world_size
        sample = np.empty((len(chosen), self.dim), dtype=np.float32)
        for shard in range(self.world_size):
            in_shard = np.flatnonzero(shard_of_frame == shard)
            utt_positions = utt_of_frame[in_shard] // self.world_size
            # Increasing within a shard: shard order follows cache order.
            rows = (
                self._shard_offsets[shard][utt_positions]
                + chosen[in_shard]
                - utt_starts[utt_of_frame[in_shard]]
            )
            array = self._array(layer, shard)
            for chunk_start in range(0, len(rows), chunk_frames):
                chunk = slice(chunk_start, chunk_start + chunk_frames)
                sample[in_shard[chunk]] = array[rows[chunk]]
        return sample

    def check_matches(self, manifest, tolerance=1):
        """Raise ``CacheMismatchError`` unless the cache holds exactly the manifest's utterances.

        Ids must be the same set; each frame count must lie within ``tolerance`` of
        the count the manifest duration implies, and stored durations must equal
        the manifest's.

        Arguments
        ---------
        manifest : dict
            SpeechBrain manifest ``{utt_id: {"duration": seconds, ...}}``.
        tolerance : int
            Frames of slack between cached and duration-implied counts.
        """
        fix = f"delete the cache folder {self.folder} and run the extraction again"
        cached = set(self.utt_ids)
        missing = [utt_id for utt_id in manifest if utt_id not in cached]
        extra = [utt_id for utt_id in self.utt_ids if utt_id not in manifest]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"manifest utterances not cached: {_first_few(missing)}")
            if extra:
                parts.append(f"cached utterances not in the manifest: {_first_few(extra)}")
            raise CacheMismatchError(
                f"feature cache {self.folder} (split '{self.split}') was built for other "
                f"utterances; {'; '.join(parts)}: {fix}"
            )
        expected = expected_frame_counts(manifest)
        wrong = []
        for i, (utt_id, count) in enumerate(zip(self.utt_ids, self.frame_counts, strict=True)):
            changed_duration = self.durations is not None and not np.isclose(
                self.durations[i], float(manifest[utt_id]["duration"]), rtol=0, atol=1e-6
            )
            if changed_duration or abs(int(count) - expected[utt_id]) > tolerance:
                wrong.append(
                    f"{utt_id} (cached {count} frames, manifest implies {expected[utt_id]})"
                )
        if wrong:
            raise CacheMismatchError(
                f"feature cache {self.folder} (split '{self.split}') does not match the "
                f"manifest durations for {_first_few(wrong, 3)}: {fix}"
            )
