"""Queue a study's jobs on a Slurm cluster through submitit, and read their states back.

A job is a plain dict; the jobs of a study are given in dependency order::

    {"key": "fold_1/gmp_tl/train",           # unique in the study
     "command": ["python", "train.py", ...],  # argv, already a torchrun command when nproc > 1
     "log_dir": Path("results/fold_1/..."),   # the job's own folder for its Slurm log
     "needs": ["fold_1/gmp"],                 # keys of the jobs it reads
     "gpus": 1, "nproc": 1}

``submit_study`` queues the whole graph at once, each job with ``--dependency=afterok:<ids of
its needs>`` (a need that is not among the jobs given counts as done), and records key -> Slurm
job id in ``<folder>/slurm_jobs.json``; nothing has to stay alive after it returns. ``status``
reads the states back (squeue for what the controller still holds, sacct for the rest),
``wait`` polls until every job has ended, and ``submit_study`` on the same folder again queues
what failed or was cancelled, leaving finished, queued and running jobs alone.

Each job runs its command inside a submitit job (``SlurmStep``); the command's output and
submitit's own lines go to ``<log_dir>/slurm/<cluster>/<job id>_0_log.out``. A job that reaches
its time limit or is preempted is requeued by submitit (``SlurmStep.checkpoint``) and its
command starts again, resuming from the step's own SpeechBrain checkpoint.

A restarted cluster numbers its jobs from 1 again: the submitit folders and the record carry the
cluster's name (``ClusterName``), and a job recorded on another cluster is never taken for one
of the current cluster.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from lobes.utils.io import write_json_atomic

RECORD = "slurm_jobs.json"
STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE = frozenset({"queued", "running"})

# Slurm's job states (squeue %T, sacct State) in the five states of a study's job.
_SLURM_STATES = {
    "PENDING": "queued",
    "REQUEUED": "queued",
    "REQUEUE_HOLD": "queued",
    "REQUEUE_FED": "queued",
    "RESV_DEL_HOLD": "queued",
    "CONFIGURING": "queued",
    "RUNNING": "running",
    "COMPLETING": "running",
    "STAGE_OUT": "running",
    "SIGNALING": "running",
    "RESIZING": "running",
    "SUSPENDED": "running",
    "COMPLETED": "finished",
    "FAILED": "failed",
    "TIMEOUT": "failed",
    "OUT_OF_MEMORY": "failed",
    "NODE_FAIL": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
    "PREEMPTED": "failed",
    "CANCELLED": "cancelled",
    "REVOKED": "cancelled",
}
# sbatch options the launcher sets itself: a --slurm_option may not replace them.
_RESERVED = {"dependency", "output", "error", "array", "open-mode", "job-name", "signal"}


class SlurmError(RuntimeError):
    """Slurm unreachable, a job refused by sbatch, or an unusable option; one-line message."""


class JobStatus(NamedTuple):
    """Where a job stands: ``state`` (one of ``STATES``), its Slurm ``job_id`` and ``log`` path."""

    state: str
    job_id: str
    log: Path


@dataclasses.dataclass
class SlurmOptions:
    """What every job of a study asks Slurm for (the ``--slurm_*`` options of the runner).

    ``None`` leaves the choice to the cluster's defaults.

    Parameters
    ----------
    partition, account, qos : str or None
        ``--partition``, ``--account``, ``--qos``.
    gpus_per_job : int or None
        GPUs of a one-process job; a job with ``nproc`` N gets N times as many. ``None``: the
        job's own ``gpus``.
    cpus_per_job : int or None
        CPUs of a one-process job (``--cpus-per-task``), N times as many for ``nproc`` N.
    mem_gb : float or None
        Memory of a job (``--mem``); ``None``: the cluster's default per CPU.
    time_min : int
        Time limit of a job in minutes; a step that needs longer is requeued and resumes from
        its checkpoint.
    max_requeues : int
        How many times a job is requeued after reaching its time limit (preemptions do not
        count), submitit's ``max_num_timeout``.
    extra : dict
        Any other sbatch option, ``{"constraint": "a100", "exclusive": True}`` (from
        ``--slurm_option KEY=VALUE``, see ``parse_slurm_option``).

    Example
    -------
    >>> SlurmOptions(partition="gpu", time_min=60).partition
    'gpu'
    """

    partition: str | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    mem_gb: float | None = None
    # 4 h (our choice): within most partitions' MaxTime; longer steps are requeued and resume.
    time_min: int = 240
    # submitit's own default: a step gets 4 time slots in all before it is reported failed.
    max_requeues: int = 3
    account: str | None = None
    qos: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)


def parse_slurm_option(text):
    """One ``--slurm_option KEY=VALUE`` as ``(key, value)``; ``KEY`` alone is a bare flag.

    Example
    -------
    >>> parse_slurm_option("constraint=a100")
    ('constraint', 'a100')
    >>> parse_slurm_option("--exclusive")
    ('exclusive', True)
    """
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-")
    if not key:
        raise SlurmError(f"--slurm_option {text!r}: expected KEY=VALUE, e.g. constraint=a100")
    if key.replace("_", "-") in _RESERVED:
        raise SlurmError(f"--slurm_option {key}: set by the launcher itself, it cannot be "
                         f"changed (reserved: {', '.join(sorted(_RESERVED))})")
    return key, (value if sep else True)


def slurm_parameters(job, options):
    """The submitit ``SlurmExecutor`` parameters of one job (its sbatch options).

    Example
    -------
    >>> job = {"key": "fold_1/train", "command": ["true"], "log_dir": "logs", "needs": [],
    ...        "gpus": 1, "nproc": 2}
    >>> params = slurm_parameters(job, SlurmOptions(partition="gpu", cpus_per_job=4))
    >>> params["gpus_per_node"], params["cpus_per_task"], params["partition"], params["time"]
    (2, 8, 'gpu', 240)
    """
    nproc = max(1, int(job.get("nproc", 1)))
    gpus = job.get("gpus", 0) if options.gpus_per_job is None else options.gpus_per_job * nproc
    # A job with nproc > 1 runs torchrun inside one Slurm task: it needs every GPU on one node.
    gpus = max(gpus, nproc) if gpus else 0
    params = {"job_name": job["key"], "time": int(options.time_min), "nodes": 1,
              "ntasks_per_node": 1, "stderr_to_stdout": True}
    if gpus:
        params["gpus_per_node"] = gpus
    if options.cpus_per_job is not None or nproc > 1:
        params["cpus_per_task"] = (options.cpus_per_job or 1) * nproc
    if options.mem_gb is not None:
        params["mem"] = f"{round(float(options.mem_gb) * 1024)}M"
    for name in ("partition", "account", "qos"):
        if getattr(options, name) is not None:
            params[name] = getattr(options, name)
    extra = dict(parse_slurm_option(f"{k}={v}") if v is not True else parse_slurm_option(k)
                 for k, v in options.extra.items())
    if extra:
        params["additional_parameters"] = extra
    return params


class SlurmStep:
    """The callable that submitit runs in a Slurm job: one command, failing when it fails.

    ``checkpoint`` is what submitit calls when the job reaches its time limit or is preempted:
    it hands back the same step, which submitit requeues; the command then starts again and
    resumes from the step's own checkpoint.

    Example
    -------
    >>> SlurmStep("demo", ["true"], ".")()
    demo: true
    0
    """

    def __init__(self, key, command, cwd):
        self.key = key
        self.command = [str(arg) for arg in command]
        self.cwd = str(cwd)

    def __call__(self):
        print(f"{self.key}: {shlex.join(self.command)}", flush=True)
        # Slurm signals every process of the job near its time limit (submitit's --signal,
        # SIGUSR2): the command ignores it so that only submitit's handler in this process acts
        # (checkpoint, requeue), instead of the command dying first and the job counting failed.
        with subprocess.Popen(self.command, cwd=self.cwd, preexec_fn=_ignore_usr2) as process:
            try:
                returncode = process.wait()
            except BaseException:  # the requeue handler's exit: the command resumes when requeued
                process.kill()
                raise
        if returncode != 0:
            raise SlurmError(f"{self.key}: the command ended with exit status {returncode}")
        return 0

    def checkpoint(self, *args, **kwargs):
        """The same step, for submitit to requeue."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _ignore_usr2():
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def cluster_name():
    """The ``ClusterName`` of the cluster that ``sbatch`` reaches (``SLURM_CONF`` or the system's).

    Raises ``SlurmError`` when no controller answers.
    """
    out = _slurm(["scontrol", "show", "config"], "read the cluster's configuration")
    for line in out.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "ClusterName":
            return value.strip()
    raise SlurmError("scontrol show config names no ClusterName: cannot tell clusters apart")


def submit_study(jobs, folder, options=None):
    """Queue every job of a study at once; return ``{key: Slurm job id}``.

    Jobs already recorded in ``folder`` on this cluster and finished, queued or running are
    left as they are (their ids are returned); the others, and those whose needs are queued
    again now, are queued. The record ``<folder>/slurm_jobs.json`` is rewritten after each
    sbatch. If sbatch refuses a job, the jobs queued by this call are cancelled and
    ``SlurmError`` says which job and why.

    Parameters
    ----------
    jobs : list of dict
        ``key``, ``command``, ``log_dir``, ``needs``, ``gpus``, ``nproc`` (module docstring), in
        dependency order.
    folder : path
        The study's folder, where the record is kept.
    options : SlurmOptions or dict, optional
        What each job asks for.

    Example
    -------
    >>> import tempfile
    >>> submit_study([], tempfile.mkdtemp())   # a study with nothing left to run queues nothing
    {}
    """
    options = _as_options(options)
    jobs = list(jobs)
    if not jobs:
        return {}
    _check_graph(jobs)
    folder = Path(folder)
    cluster = cluster_name()
    with _locked(folder):
        return _submit_all(jobs, folder, cluster, options)


def status(folder):
    """Where each recorded job of ``folder`` stands: ``{key: JobStatus(state, job_id, log)}``.

    Example
    -------
    >>> import tempfile
    >>> status(tempfile.mkdtemp())   # nothing queued from this folder yet
    {}
    """
    record = _read_record(Path(folder))
    if not record["jobs"]:
        return {}
    return _states(record["jobs"], cluster_name())


def wait(folder, poll_s=2.0, on_change=None, timeout_s=None):
    """Poll ``status(folder)`` until no job is queued or running; return the final states.

    ``on_change(key, JobStatus)`` is called once per job and state change (progress lines).
    With ``timeout_s``, ``SlurmError`` names the jobs still queued or running by then (they
    go on; ``status`` and ``wait`` can be called again).

    Example
    -------
    >>> import tempfile
    >>> wait(tempfile.mkdtemp())
    {}
    """
    seen = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        current = status(folder)
        for key, job in current.items():
            if on_change is not None and seen.get(key) != job.state:
                on_change(key, job)
            seen[key] = job.state
        active = [f"{key} ({job.state}, job {job.job_id})" for key, job in current.items()
                  if job.state in ACTIVE]
        if not active:
            return current
        if deadline is not None and time.monotonic() > deadline:
            raise SlurmError(f"after {timeout_s} s still queued or running: {', '.join(active)}")
        time.sleep(poll_s)


# --- internals -------------------------------------------------------------------------------

def _as_options(options):
    if options is None:
        return SlurmOptions()
    if isinstance(options, SlurmOptions):
        return options
    unknown = set(options) - {f.name for f in dataclasses.fields(SlurmOptions)}
    if unknown:
        raise SlurmError(f"unknown Slurm option(s) {sorted(unknown)}; known: "
                         f"{[f.name for f in dataclasses.fields(SlurmOptions)]}")
    return SlurmOptions(**options)


def _submit_all(jobs, folder, cluster, options):
    record = _read_record(folder)
    before = dict(record["jobs"])
    known = _states(record["jobs"], cluster)
    ids, states, queued_now = {}, {}, []
    try:
        for job in jobs:
            key = job["key"]
            needs = [n for n in job.get("needs", []) if n in states]
            previous = known.get(key)
            requeued_need = any(n in queued_now for n in needs)
            if previous is not None and previous.state in ACTIVE | {"finished"} and not (
                    requeued_need and previous.state == "queued"):
                ids[key], states[key] = previous.job_id, previous.state
                continue
            if previous is not None and previous.state == "queued":
                # It waits on a need that is queued again now: it would never start.
                subprocess.run(["scancel", previous.job_id], capture_output=True)
            after = [ids[n] for n in needs if states[n] != "finished"]
            ids[key] = _submit(job, folder, cluster, options, after, record)
            states[key] = "queued"
            queued_now.append(key)
    except SlurmError:
        if queued_now:
            subprocess.run(["scancel", *[ids[k] for k in queued_now]], capture_output=True)
            for key in queued_now:
                if key in before:
                    record["jobs"][key] = before[key]
                else:
                    record["jobs"].pop(key, None)
            write_json_atomic(folder / RECORD, record)
        raise
    return ids


@contextlib.contextmanager
def _locked(folder):
    """One submit_study at a time per study folder (two at once would queue jobs twice)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{RECORD}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_graph(jobs):
    seen = set()
    for job in jobs:
        key = job["key"]
        if key in seen:
            raise SlurmError(f"job {key!r} is given twice: keys must be unique in a study")
        if key in job.get("needs", []):
            raise SlurmError(f"job {key!r} needs itself")
        seen.add(key)
    order = {job["key"]: i for i, job in enumerate(jobs)}
    for i, job in enumerate(jobs):
        for need in job.get("needs", []):
            if order.get(need, -1) > i:
                raise SlurmError(f"job {job['key']!r} needs {need!r}, which comes after it: "
                                 "give the jobs in dependency order")


def _slurm(command, what):
    """Run a Slurm client command; its output, or SlurmError with its last line of stderr."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SlurmError(f"{command[0]} not found: no Slurm client on this machine (a test "
                         "cluster: .ci/slurm-up, then export SLURM_CONF as it prints)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{shlex.join(command)} did not answer in 60 s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SlurmError(f"could not {what} ({shlex.join(command)}: {last}); is a cluster "
                         "reachable? (a test cluster: .ci/slurm-up, then export SLURM_CONF)")
    return done.stdout


def _read_record(folder):
    path = folder / RECORD
    if not path.exists():
        return {"jobs": {}}
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SlurmError(f"{path}: not valid JSON ({error}); remove it to queue the study "
                         "afresh") from None
    record.setdefault("jobs", {})
    return record


def _submit(job, folder, cluster, options, after, record):
    """sbatch one job through submitit; record it; return its Slurm job id."""
    try:
        import submitit
    except ImportError:
        raise SlurmError("the Slurm launcher needs submitit: pip install submitit==1.5.4") from None
    key = job["key"]
    # A cluster restarted from scratch numbers jobs from 1 again: one submitit folder per cluster.
    job_folder = Path(job["log_dir"]).resolve() / "slurm" / cluster
    executor = submitit.SlurmExecutor(folder=job_folder, max_num_timeout=options.max_requeues)
    params = slurm_parameters(job, options)
    if after:
        params["dependency"] = "afterok:" + ":".join(after)
    executor.update_parameters(**params)
    try:
        submitted = executor.submit(SlurmStep(key, job["command"], os.getcwd()))
    except Exception as error:  # submitit's FailedJobError carries sbatch's own message
        lines = [line for line in str(error).splitlines() if "error" in line.lower()]
        message = (lines or str(error).strip().splitlines() or ["no message"])[-1].strip()
        raise SlurmError(f"sbatch refused job {key!r}: {message}") from None
    record["jobs"][key] = {
        "job_id": submitted.job_id,
        "cluster": cluster,
        "log": str(submitted.paths.stdout),
        "result": str(submitted.paths.result_pickle),
        "command": [str(arg) for arg in job["command"]],
        "needs": list(job.get("needs", [])),
        "after": list(after),
        "submitted": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(folder / RECORD, record)
    return submitted.job_id


def _states(recorded, cluster):
    """JobStatus of each recorded job; jobs of another cluster only through their result."""
    ids = [entry["job_id"] for entry in recorded.values() if entry["cluster"] == cluster]
    slurm = _query(ids) if ids else {}
    states = {}
    for key, entry in recorded.items():
        state = slurm.get(entry["job_id"]) if entry["cluster"] == cluster else None
        if state is None:
            state = _state_from_result(Path(entry["result"]))
        states[key] = JobStatus(state, entry["job_id"], Path(entry["log"]))
    return states


def _query(ids):
    """{job id: state} from squeue (jobs the controller holds) and sacct (all others)."""
    found = {}
    joined = ",".join(ids)
    # sacct with -j looks back to the start of accounting, not just today.
    try:
        out = _slurm(["sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-j", joined],
                     "read job states from accounting")
    except SlurmError:
        out = ""  # no accounting: squeue and the result files still tell most states
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        if job_id in ids and state:
            found[job_id] = _SLURM_STATES.get(state.split()[0], "failed")
    # squeue is the controller's own view, ahead of accounting for jobs just queued or ended.
    done = subprocess.run(["squeue", "-h", "-o", "%i|%T", "--states=all", "-j", joined],
                          capture_output=True, text=True, timeout=60)
    for line in done.stdout.splitlines():
        job_id, _, state = line.partition("|")
        if job_id in ids and state:
            found[job_id] = _SLURM_STATES.get(state.strip(), "failed")
    return found


def _state_from_result(result_path):
    """A job neither squeue nor sacct knows: its submitit result tells how it ended; with no
    result Slurm ended it (or its cluster is gone), so it is queued again like a cancelled one."""
    if not result_path.exists():
        return "cancelled"
    try:
        import cloudpickle

        with open(result_path, "rb") as handle:
            outcome = cloudpickle.load(handle)[0]
    except Exception:
        return "failed"
    return "finished" if outcome == "success" else "failed"
