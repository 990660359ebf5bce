"""A study as a graph of jobs: one job per (fold, seed, step), each after the jobs it reads.

``lobes.runner.cv`` plans every step of every run (fold x seed) before any work; ``jobs`` turns
the plan into jobs whose dependencies come from the recipe's table of steps (the outputs a
step reads, ``lobes.runner.recipe.previous_steps``): a step two systems share (stage 0 and the
GMPs of ``gmp_tl`` and ``single_scale``) is one job. A launcher (``lobes.runner.launchers``)
runs the jobs that are not finished yet: in parallel on the machine at hand, or queued on a
Slurm cluster (``run_on_slurm``: what the runner queues, shows and reports, through
``lobes.runner.launchers.slurm``).
"""

import time
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


def run_on_slurm(args, graph, write_results):
    """Queue the jobs not finished yet on the Slurm cluster (those queued or running already
    keep their Slurm job), then, unless ``--no_wait``, wait for them and write the results.

    ``args`` are the runner's options (``output_folder``, ``device``, ``nproc``, ``no_wait`` and
    the ``slurm_*`` ones); ``write_results()`` writes the study's tables and returns them.
    """
    from lobes.runner.launchers import slurm

    options = slurm.SlurmOptions(
        partition=args.slurm_partition, gpus_per_job=args.slurm_gpus_per_job,
        cpus_per_job=args.slurm_cpus_per_job, mem_gb=args.slurm_mem_gb,
        account=args.slurm_account, qos=args.slurm_qos,
        extra=dict(slurm.parse_slurm_option(option) for option in args.slurm_option),
        **({"time_min": args.slurm_time_min} if args.slurm_time_min else {}))
    todo = [job for job in graph if not job.done]
    labels = {job.key: job.label for job in graph}
    gpus = 0 if args.device == "cpu" else args.nproc
    before = slurm.status(args.output_folder)
    on_cluster = {key for key, state in before.items()
                  if state.state in slurm.ACTIVE | {"finished"}}
    for job in todo:  # a job queued or running already keeps the overrides it was queued with
        if job.key not in on_cluster:
            write_overrides(job)
    ids = slurm.submit_study(
        [{"key": job.key, "command": job.command, "log_dir": job.folder, "needs": job.needs,
          "gpus": gpus, "nproc": args.nproc} for job in todo], args.output_folder, options)

    def show(key, state):
        print(f"[{time.strftime('%H:%M:%S')}] {labels.get(key, key)}: {state.state} (Slurm job "
              f"{state.job_id}; log {state.log})", flush=True)

    for job in graph:
        if job.done and job.key in before:
            show(job.key, before[job.key])
        elif job.done:
            print(f"{job.label}: complete, skipped", flush=True)
        elif job.key in before and before[job.key].job_id != ids.get(job.key):
            old = before[job.key]
            print(f"{job.label}: {old.state} (Slurm job {old.job_id}; log {old.log}), queued "
                  f"again as Slurm job {ids[job.key]}", flush=True)
    if args.no_wait:
        states = slurm.status(args.output_folder)
        for job in todo:
            show(job.key, states[job.key])
        print(f"\n{len(todo)} jobs on the cluster; run the same command again to see their "
              "state, and once all have finished, the results")
        return
    final = slurm.wait(args.output_folder, on_change=show)
    ended = {key: state for key, state in final.items() if key in ids}
    unfinished = {key: state for key, state in ended.items() if state.state != "finished"}
    markdown = write_results()
    if unfinished:
        from lobes.runner.launchers.local import Failures

        raise Failures("\n".join(
            f"{labels.get(key, key)}: {state.state} (Slurm job {state.job_id}); log: {state.log}"
            for key, state in unfinished.items())
            + "\nfix the cause and run the same command again: finished steps are kept, the "
              "failed and cancelled jobs are queued again")
    print(f"\nall jobs done; results in {Path(args.output_folder) / 'results.md'}\n")
    print(markdown)
