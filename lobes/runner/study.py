"""A study as a graph of jobs: one job per (fold, seed, step), each after the jobs it reads.

``lobes.runner.cv`` plans every step of every run (fold x seed) before any work; ``jobs`` turns
the plan into jobs whose dependencies come from the recipe's table of steps (the outputs a
step reads, ``lobes.runner.recipe.previous_steps``): a step two systems share (stage 0 and the
GMPs of ``gmp_tl`` and ``single_scale``) is one job. A launcher (``lobes.runner.launchers``)
runs the jobs that are not finished yet: in parallel on the machine at hand, or queued on a
Slurm cluster.
"""

from dataclasses import dataclass
from pathlib import Path

from lobes.runner import cv, recipe
from lobes.runner.settings import read_record
from lobes.training.checkpoints import finish_step
from lobes.utils.io import atomic_write

LOG_FILE = "run.log"
OVERRIDES_FILE = "run_overrides.yaml"


@dataclass
class Job:
    """One step of one run: its command, its folder and the jobs it waits for.

    Arguments
    ---------
    planned : lobes.runner.cv.Planned
        The step as planned (run, step, overrides, values, settings record).
    command : list of str
        Its command line (a stage script, under ``torchrun`` with ``--nproc`` above 1).
    folder : pathlib.Path
        Its output folder (``<output>/<run>/<step folder>``); the log is ``run.log`` there.
    needs : list of str
        The keys of the jobs whose outputs it reads.
    done : bool
        Finished with the planned settings already (skipped by every launcher).
    """

    planned: cv.Planned
    command: list
    folder: Path
    needs: list
    done: bool = False

    @property
    def key(self):
        return self.planned.key

    @property
    def label(self):
        return self.planned.label

    @property
    def log(self):
        return self.folder / LOG_FILE


def jobs(planned, table, args):
    """The jobs of a planned study, in an order where every job comes after those it needs.

    Finished steps (their marker and a settings record with the planned digest) are marked
    ``done``; a kill that interrupted the pruning of a finished step's checkpoints is finished
    here. The command line of each job to run is written with its overrides file.
    """
    by_folder = {entry.folder(args.output_folder).resolve(): entry.key for entry in planned}
    graph = []
    for entry in planned:
        folder = entry.folder(args.output_folder)
        needs = [by_folder[Path(path).resolve()]
                 for _, path, _ in recipe.previous_steps(table, entry.values)
                 if Path(path).resolve() in by_folder]
        spec = table[entry.record["step"]]
        record = read_record(folder)
        done = entry.finished(args.output_folder, table) and record is not None \
            and record["digest"] == entry.record["digest"]
        if done and spec.trains:  # finish a pruning a kill interrupted
            finish_step(folder / "save", folder / spec.marker, None)
        overrides_file = folder / OVERRIDES_FILE
        graph.append(Job(entry, cv.step_command(entry.step, overrides_file, args, table),
                         folder, needs, done))
    return graph


def write_overrides(job):
    """Create the job's folder and write the overrides its command reads (atomically: a queued
    job may start while the runner is run again)."""
    job.folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(job.folder / OVERRIDES_FILE) as handle:
        handle.write(recipe.overrides_text(job.planned.overrides))


def dependents(graph, failed_keys):
    """The keys of every job that needs, directly or not, one of ``failed_keys``.

    Example
    -------
    >>> class J:
    ...     def __init__(self, key, needs):
    ...         self.key, self.needs = key, needs
    >>> graph = [J("a", []), J("b", ["a"]), J("c", ["b"]), J("d", [])]
    >>> sorted(dependents(graph, {"a"}))
    ['b', 'c']
    """
    blocked, changed = set(), True
    while changed:
        changed = False
        for job in graph:
            if job.key not in blocked and set(job.needs) & (set(failed_keys) | blocked):
                blocked.add(job.key)
                changed = True
    return blocked
