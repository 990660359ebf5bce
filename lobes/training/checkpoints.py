"""Crash-safe, exactly resumable checkpoints: what SpeechBrain's ``Checkpointer`` lacks.

SpeechBrain's ``Checkpointer.save_checkpoint`` writes the checkpoint's ``CKPT.yaml`` first and
the parameter files after it. A job killed between the two (a SIGKILL, a preempted GPU node, a
full disk) leaves a folder that ``find_checkpoints`` takes for a checkpoint, and the next run
resumes from it and fails on a missing or truncated parameter file. ``AtomicCheckpointer``
writes the metadata under a pending name and renames it to ``CKPT.yaml`` once every parameter
file is on disk, so an interrupted save is invisible to recovery; the next save clears such
leftovers.

``RandomStates`` is a recoverable holding the state of every random generator a training step
draws from (Python, NumPy: HuBERT's time masking, torch CPU and CUDA), so that a run resumed
from an end-of-epoch checkpoint continues exactly as the uninterrupted run would have (bit for
bit on CPU). SpeechBrain's ``SaveableGenerator`` covers torch only.

Once a step has finished, ``finish_step`` keeps one copy of its weights: the exported
``encoder.ckpt`` is a hard link to the selected checkpoint's encoder file (a copy where the file
system has no hard links), the other checkpoints and every optimizer state are deleted, and the
heads of the selected checkpoint stay for ``gmptl-export``.
"""

import functools
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from lobes.utils.io import atomic_write, write_json_atomic

logger = logging.getLogger(__name__)

PENDING_META = f".{METAFNAME}.pending"


class AtomicCheckpointer(Checkpointer):
    """``Checkpointer`` with crash-safe saves (a drop-in: same arguments, same folders).

    Example
    -------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> layer = torch.nn.Linear(2, 2)
    >>> checkpointer = AtomicCheckpointer(folder, recoverables={"layer": layer})
    >>> checkpoint = checkpointer.save_checkpoint(meta={"UA": 0.5})
    >>> sorted(path.name for path in checkpoint.path.iterdir())
    ['CKPT.yaml', 'layer.ckpt']
    >>> checkpointer.find_checkpoint(max_key="UA").meta["UA"]
    0.5
    """

    def save_checkpoint(self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO):
        meta = meta or {}
        if if_main_process():
            self._remove_unfinished()
        checkpoint = super().save_checkpoint(meta, end_of_epoch, name, verbosity)
        ddp_barrier()  # under DDP every rank runs the savers: wait until all have written
        if checkpoint is not None:  # main process
            for path in checkpoint.paramfiles.values():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            os.replace(checkpoint.path / PENDING_META, checkpoint.path / METAFNAME)
        return checkpoint

    def _save_checkpoint_metafile(self, fpath, meta_to_include=None, end_of_epoch=True):
        return super()._save_checkpoint_metafile(
            fpath.with_name(PENDING_META), meta_to_include or {}, end_of_epoch
        )

    def _remove_unfinished(self):
        """Delete checkpoint folders that an interrupted save left without ``CKPT.yaml``."""
        if not self.checkpoints_dir.exists():
            return
        for folder in self.checkpoints_dir.glob(f"{CKPT_PREFIX}+*"):
            if folder.is_dir() and not (folder / METAFNAME).exists():
                logger.warning("removing %s: its save was interrupted", folder)
                shutil.rmtree(folder)


def _rank_and_world_size():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def rank_state_path(path, rank):
    """Where rank ``rank`` keeps its random states for the recoverable file ``path``.

    Rank 0 uses the recoverable's own file; the other ranks a file beside it, whose suffix
    (not ``.ckpt``) keeps it out of SpeechBrain's list of the checkpoint's parameter files.

    Example
    -------
    >>> rank_state_path("CKPT+x/random_states.ckpt", 0).name
    'random_states.ckpt'
    >>> rank_state_path("CKPT+x/random_states.ckpt", 3).name
    'random_states.ckpt.rank3'
    """
    path = Path(path)
    return path if rank == 0 else path.with_name(f"{path.name}.rank{rank}")


@functools.partial(register_checkpoint_hooks, save_on_main_only=False)
class RandomStates:
    """The Python, NumPy and torch (CPU and CUDA) random states, as a checkpoint recoverable.

    Saved as JSON (no pickle). CUDA states are restored only onto as many devices as the
    checkpoint holds.

    Under DDP every rank saves and restores its own states (registered with
    ``save_on_main_only=False``, so SpeechBrain runs the saver on every rank): rank 0 in the
    recoverable's file, which also records the number of ranks, rank ``r`` in
    ``<file>.rank<r>`` (``rank_state_path``). Resumed with another number of ranks, each rank
    that has a saved state restores it, the others keep their current states, with a warning:
    the run then continues, but not exactly as the uninterrupted one would have.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rng.ckpt"
    >>> states = RandomStates()
    >>> states.save(path)
    >>> first = (random.random(), np.random.rand(), torch.rand(1).item())
    >>> states.load(path)
    >>> (random.random(), np.random.rand(), torch.rand(1).item()) == first
    True
    """

    @mark_as_saver
    def save(self, path):
        rank, world_size = _rank_and_world_size()
        version, python_state, gauss = random.getstate()
        name, keys, position, has_gauss, cached = np.random.get_state()
        states = {
            "python": [version, list(python_state), gauss],
            "numpy": [name, keys.tolist(), position, has_gauss, cached],
            "torch": torch.get_rng_state().tolist(),
            "cuda": [state.tolist() for state in torch.cuda.get_rng_state_all()]
            if torch.cuda.is_available() else [],
        }
        if rank == 0:
            states["world_size"] = world_size
        write_json_atomic(rank_state_path(path, rank), states)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        rank, world_size = _rank_and_world_size()
        with open(path) as handle:
            states = json.load(handle)
        saved_world_size = int(states.get("world_size", 1))  # without the key: one process
        if saved_world_size != world_size and rank == 0:
            logger.warning(
                "%s holds the random states of %d process(es), this run has %d: ranks below "
                "%d restore their own, the others keep their current states; the resumed run "
                "is not an exact continuation", path, saved_world_size, world_size,
                min(saved_world_size, world_size),
            )
        if rank >= saved_world_size:
            return
        if rank > 0:
            with open(rank_state_path(path, rank)) as handle:
                states = json.load(handle)
        version, python_state, gauss = states["python"]
        random.setstate((version, tuple(python_state), gauss))
        name, keys, position, has_gauss, cached = states["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
        torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
        if states["cuda"] and torch.cuda.is_available():
            for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(torch.tensor(state, dtype=torch.uint8), device)


def _same_file(first, second):
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def export_weights(source, destination):
    """Publish ``source`` as ``destination`` atomically: a hard link, or a copy without one."""
    destination = Path(destination)
    temporary = destination.with_name(f".{destination.name}.linking")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
        os.replace(temporary, destination)
    except OSError:
        temporary.unlink(missing_ok=True)
        with open(source, "rb") as reader, atomic_write(destination, "wb") as writer:
            shutil.copyfileobj(reader, writer)


def finish_step(save_folder, exported, selected):
    """Keep one copy of a finished step's weights and no optimizer state.

    Arguments
    ---------
    save_folder : str or Path
        The step's checkpoint folder.
    exported : str or Path
        The step's ``encoder.ckpt`` (written first, by ``export_weights``).
    selected : speechbrain.utils.checkpoints.Checkpoint or None
        The checkpoint the test used; None finds the one whose encoder file ``exported`` is.

    Returns
    -------
    int
        Bytes freed.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> layer = torch.nn.Linear(2, 2)
    >>> optimizer = torch.optim.Adam(layer.parameters())
    >>> checkpointer = Checkpointer(folder / "save", {"encoder": layer, "optimizer": optimizer})
    >>> first = checkpointer.save_checkpoint(meta={"UA": 0.5})
    >>> second = checkpointer.save_checkpoint(meta={"UA": 0.4})
    >>> export_weights(first.paramfiles["encoder"], folder / "encoder.ckpt")
    >>> finish_step(folder / "save", folder / "encoder.ckpt", None) > 0
    True
    >>> [sorted(p.name for p in c.path.iterdir()) for c in checkpointer.list_checkpoints()]
    [['CKPT.yaml', 'encoder.ckpt']]
    """
    checkpoints = Checkpointer(save_folder).list_checkpoints()
    if selected is None:
        selected = next((checkpoint for checkpoint in checkpoints
                         if _same_file(checkpoint.paramfiles.get("encoder", ""), exported)), None)
    if selected is None:  # exported as a copy: nothing says which checkpoint it came from
        logger.warning("%s: cannot tell the selected checkpoint; kept all", save_folder)
        return 0
    freed = 0
    for checkpoint in checkpoints:
        if checkpoint.path == selected.path:
            continue
        freed += sum(path.stat().st_size for path in checkpoint.path.iterdir())
        shutil.rmtree(checkpoint.path)
    for name, path in selected.paramfiles.items():
        if name.startswith("optimizer") and Path(path).exists():
            freed += Path(path).stat().st_size
            Path(path).unlink()
    if freed:
        logger.info("%s: kept the selected checkpoint's weights; freed %.2f GB", save_folder,
                    freed / 1e9)
    return freed
