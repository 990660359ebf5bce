"""Run a study's jobs on the machine at hand, up to ``--jobs`` at once.

A job starts when every job it needs has finished (one job at a time: in the planned order, fold
by fold; several: the ready job with the longest chain after it first, so that the last chains
do not run alone at the end); a failed job stops the jobs that need it while the other chains
go on. Each job runs in its own process group, so that a Ctrl-C, or an error of the runner,
stops every process it started, ``torchrun`` workers included; a job also dies with the runner
(Linux's parent-death signal), so a killed runner leaves no orphans. Its whole output goes to
its folder's ``run.log``; the console gets one line per change of a job's state, so the output
of parallel jobs never interleaves.

Start-up: on a CPU-only machine a job that runs one process is forked from the runner, which
has torch, SpeechBrain and transformers loaded already, and runs its script there (``runpy``):
each step saves the seconds of importing them again, which is most of a short step's cost. Jobs
on GPUs, and ``torchrun`` jobs, start as new processes (CUDA does not survive a fork).

Devices: with GPUs, each job sees only its own (``CUDA_VISIBLE_DEVICES``: ``nproc`` GPUs per
job, so ``--jobs`` defaults to the GPUs divided by ``--nproc``); on a CPU-only machine one job
per core, the cores shared out as threads (``OMP_NUM_THREADS``) unless the environment sets
``OMP_NUM_THREADS`` itself, which then holds for every job (so that results do not depend on
``--jobs``).
"""

import ctypes
import os
import runpy
import shlex
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field

from lobes.runner.study import dependents, write_overrides

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 10  # after a Ctrl-C, the time jobs get to stop before they are killed


def stamp():
    return time.strftime("%H:%M:%S")


def available_cores():
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def visible_gpus():
    """Indices of the GPUs this process sees (``CUDA_VISIBLE_DEVICES`` first, then torch)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [index for index in visible.split(",") if index.strip() and index != "-1"]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


@dataclass
class Slots:
    """What each parallel job gets: a GPU set, or a share of the CPU threads.

    Example
    -------
    >>> slots = Slots.for_machine(jobs=None, nproc=1, gpus=["0", "1", "2"], cores=8)
    >>> slots.jobs, slots.gpu_sets
    (3, [['0'], ['1'], ['2']])
    >>> cpu = Slots.for_machine(jobs=None, nproc=1, gpus=[], cores=4, threads_env=None)
    >>> cpu.jobs, cpu.environment(0)["OMP_NUM_THREADS"]
    (4, '1')
    >>> Slots.for_machine(jobs=2, nproc=1, gpus=[], cores=8, threads_env=None).threads
    4
    """

    jobs: int
    gpu_sets: list = field(default_factory=list)
    threads: int = 0

    @classmethod
    def for_machine(cls, jobs, nproc, gpus, cores, threads_env="unset"):
        if threads_env == "unset":
            threads_env = os.environ.get("OMP_NUM_THREADS")
        if gpus:
            sets = [gpus[start:start + nproc] for start in range(0, len(gpus), nproc)]
            sets = [gpu_set for gpu_set in sets if len(gpu_set) == nproc]
            if not sets:
                raise ValueError(f"--nproc {nproc} needs {nproc} GPUs per job but "
                                 f"{len(gpus)} are visible")
            jobs = min(jobs or len(sets), len(sets))
            return cls(jobs, sets[:jobs])
        jobs = jobs or max(1, cores // nproc)
        threads = int(threads_env) if threads_env else max(1, cores // (jobs * nproc))
        return cls(jobs, [], threads)

    def environment(self, slot):
        """The environment variables of a job running in ``slot``."""
        if self.gpu_sets:
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpu_sets[slot])}
        return {"OMP_NUM_THREADS": str(self.threads), "CUDA_VISIBLE_DEVICES": ""}


def die_with_parent():
    """In a child before ``exec``: be killed when the runner dies (Linux ``PR_SET_PDEATHSIG``)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def chain_lengths(graph):
    """``{key: jobs in the longest chain from this job to the end}``, the scheduling priority.

    Example
    -------
    >>> class J:
    ...     def __init__(self, key, needs):
    ...         self.key, self.needs = key, needs
    >>> chain_lengths([J("a", []), J("b", ["a"]), J("c", ["b"]), J("d", [])])
    {'a': 3, 'b': 2, 'c': 1, 'd': 1}
    """
    lengths = {job.key: 1 for job in graph}
    for job in reversed(graph):  # every job comes after the jobs it needs
        for need in job.needs:
            lengths[need] = max(lengths[need], lengths[job.key] + 1)
    return lengths


class Failures(Exception):
    """Jobs of the study failed (or could not run); the message lists each with its log."""


class ForkedJob:
    """A job forked from the runner, with the part of ``subprocess.Popen`` the launcher uses."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode


def run_forked(command, log, environment):
    """In the forked child: run the stage script of ``command`` as ``__main__``; never return."""
    code = 1
    try:
        os.setsid()
        die_with_parent()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        os.environ.update(environment)
        import torch

        torch.set_num_threads(int(environment["OMP_NUM_THREADS"]))
        sys.argv = list(command[1:])
        runpy.run_path(command[1], run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, int | None):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (the job's error goes to its log, as a process's would)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def start(job, slot, slots):
    """Start one job in its own process group, its output appended to its log."""
    write_overrides(job)
    log = open(job.log, "a")  # noqa: SIM115  (closed when the job ends)
    log.write(f"$ {shlex.join(job.command)}\n")
    log.flush()
    environment = slots.environment(slot)
    if not slots.gpu_sets and job.command[0] == sys.executable and \
            job.command[1].endswith(".py"):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_forked(job.command, log, environment)
        return ForkedJob(pid), log
    process = subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True,
                               preexec_fn=die_with_parent, env={**os.environ, **environment})
    return process, log


def stop_all(running):
    """Stop every running job's process group: SIGINT, then SIGKILL after a grace period."""
    for process, _, _, _ in running.values():
        try:
            os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.time() + STOP_GRACE_SECONDS
    for process, log, _, _ in running.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever the group left behind
        except ProcessLookupError:
            pass
        process.wait()
        log.close()


def run_jobs(graph, slots, on_done=None, tail_lines=15):
    """Run the jobs of ``graph`` not yet done, up to ``slots.jobs`` at once.

    ``on_done(job)`` is called after each job that finishes (the runner updates its results).

    Returns
    -------
    dict
        ``{key: "done" | "skipped"}`` when every job finished.

    Raises
    ------
    Failures
        After every job that could run has run, listing each failed job with its log and the
        jobs that did not run because of it.
    KeyboardInterrupt
        After stopping every process the runner started.
    """
    states = {job.key: "skipped" if job.done else "waiting" for job in graph}
    for job in graph:
        if job.done:
            print(f"[{stamp()}] {job.label}: complete, skipped", flush=True)
    by_key = {job.key: job for job in graph}
    order = {job.key: index for index, job in enumerate(graph)}
    lengths = chain_lengths(graph) if slots.jobs > 1 else dict.fromkeys(order, 0)
    running, free_slots, failed = {}, list(range(slots.jobs)), []
    try:
        while True:
            for key, (process, log, slot, started) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[key]
                free_slots.append(slot)
                elapsed = time.time() - started
                if process.returncode == 0:
                    states[key] = "done"
                    print(f"[{stamp()}] {by_key[key].label}: done in {elapsed:.1f} s",
                          flush=True)
                    if on_done:
                        on_done(by_key[key])
                else:
                    states[key] = "failed"
                    failed.append((key, process.returncode, elapsed))
                    print(f"[{stamp()}] {by_key[key].label}: FAILED (exit "
                          f"{process.returncode}) after {elapsed:.1f} s; log: "
                          f"{by_key[key].log}", flush=True)
                    for blocked in sorted(dependents(graph, {key}) & {
                            k for k, state in states.items() if state == "waiting"}):
                        states[blocked] = "blocked"
                        print(f"[{stamp()}] {by_key[blocked].label}: not run (needs "
                              f"{by_key[key].label}, which failed)", flush=True)
            ready = sorted((job for job in graph if states[job.key] == "waiting"
                            and all(states[need] in ("done", "skipped") for need in job.needs)),
                           key=lambda job: (-lengths[job.key], order[job.key]))
            for job in ready[:len(free_slots)]:
                slot = free_slots.pop(0)
                process, log = start(job, slot, slots)
                running[job.key] = (process, log, slot, time.time())
                states[job.key] = "running"
                where = f", GPU {','.join(slots.gpu_sets[slot])}" if slots.gpu_sets else ""
                print(f"[{stamp()}] {job.label}: running{where}", flush=True)
            if not running:
                break
            time.sleep(POLL_SECONDS)
    except BaseException:
        stop_all(running)
        raise
    if failed:
        lines = []
        for key, code, elapsed in failed:
            log = by_key[key].log
            tail = "".join(log.read_text().splitlines(keepends=True)[-tail_lines:])
            lines.append(f"{by_key[key].label} failed (exit {code}) after {elapsed:.1f} s; "
                         f"full log: {log}\n--- last lines ---\n{tail.rstrip()}\n---")
        blocked = [by_key[key].label for key, state in states.items() if state == "blocked"]
        if blocked:
            lines.append(f"not run because of them: {', '.join(blocked)}")
        raise Failures("\n".join(lines))
    return states
