"""The Slurm launcher on a real cluster (`.ci/slurm-up`: slurmctld, slurmd, slurmdbd on
localhost): no mock of Slurm or submitit. The jobs are one-line Python commands."""

import json
import subprocess
import sys
import time

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401 (the fixture)

from lobes.runner.launchers.slurm import RECORD, SlurmError, status, submit_study, wait

WAIT_S = 120  # generous for a loaded 2-core machine; a job starts about 1 s after it may


def job(folder, key, code, needs=(), gpus=0):
    return {"key": key, "command": [sys.executable, "-c", code], "log_dir": folder / "logs" / key,
            "needs": list(needs), "gpus": gpus, "nproc": 1}


def write_after(out, key, previous=None):
    """Code that writes out/key, failing if the job it needs has not written its file."""
    check = f"assert pathlib.Path({str(out / previous)!r}).exists(); " if previous else ""
    return (f"import pathlib, time; {check}time.sleep(0.5); "
            f"pathlib.Path({str(out / key)!r}).write_text({key!r})")


def states(statuses):
    return {key: s.state for key, s in statuses.items()}


def wait_until(folder, key, state):
    deadline = time.monotonic() + WAIT_S
    while (current := status(folder)[key].state) != state:
        assert time.monotonic() < deadline, f"{key} still {current} after {WAIT_S} s"
        time.sleep(0.3)


def test_chain_runs_in_order_and_status_after_queueing(slurm_cluster, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    jobs = [job(tmp_path, "a", write_after(out, "a")),
            job(tmp_path, "b", write_after(out, "b", "a"), ["a"]),
            job(tmp_path, "c", write_after(out, "c", "b"), ["b"])]
    ids = submit_study(jobs, tmp_path)
    assert len(set(ids.values())) == 3

    # what --no_wait leaves: everything queued at once, the last job waiting on the others
    first = status(tmp_path)
    assert {key: s.job_id for key, s in first.items()} == ids
    assert first["c"].state == "queued"
    assert set(states(first).values()) <= {"queued", "running"}
    record = json.loads((tmp_path / RECORD).read_text())["jobs"]
    assert record["b"]["after"] == [ids["a"]] and record["c"]["after"] == [ids["b"]]
    assert {entry["cluster"] for entry in record.values()} == {slurm_cluster}
    # the same call again while they are queued or running queues nothing more
    assert submit_study(jobs, tmp_path) == ids

    final = wait(tmp_path, poll_s=0.5, timeout_s=WAIT_S)
    assert states(final) == {"a": "finished", "b": "finished", "c": "finished"}
    assert sorted(path.name for path in out.iterdir()) == ["a", "b", "c"]
    assert final["c"].log == tmp_path / "logs" / "c" / "slurm" / slurm_cluster / \
        f"{ids['c']}_0_log.out"
    assert "c: " in final["c"].log.read_text()


def test_failed_job_reported_with_its_log_and_dependents_not_run(slurm_cluster, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    fail = "import sys; print('boom: corrupted hparams', file=sys.stderr); sys.exit(3)"
    jobs = [job(tmp_path, "a", write_after(out, "a")),
            job(tmp_path, "b", fail, ["a"]),
            job(tmp_path, "c", write_after(out, "c", "b"), ["b"]),
            job(tmp_path, "d", write_after(out, "d"))]
    submit_study(jobs, tmp_path)
    final = wait(tmp_path, poll_s=0.5, timeout_s=WAIT_S)
    assert states(final) == {"a": "finished", "b": "failed", "c": "cancelled", "d": "finished"}
    log = final["b"].log.read_text()
    assert "boom: corrupted hparams" in log and "exit status 3" in log
    assert not final["c"].log.exists() and not (out / "c").exists()


def test_cancelled_job_is_queued_again_by_a_second_call(slurm_cluster, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    go = tmp_path / "go"
    slow = f"import os, time; time.sleep(0 if os.path.exists({str(go)!r}) else 300)"
    jobs = [job(tmp_path, "x", write_after(out, "x")),
            job(tmp_path, "a", slow, ["x"]),
            job(tmp_path, "b", write_after(out, "b"), ["a"])]
    ids = submit_study(jobs, tmp_path)
    wait_until(tmp_path, "a", "running")
    subprocess.run(["scancel", ids["a"]], check=True)
    cancelled = wait(tmp_path, poll_s=0.5, timeout_s=WAIT_S)
    assert states(cancelled) == {"x": "finished", "a": "cancelled", "b": "cancelled"}

    go.touch()
    again = submit_study(jobs, tmp_path)
    assert again["x"] == ids["x"]  # finished: not queued again
    assert again["a"] != ids["a"] and again["b"] != ids["b"]
    record = json.loads((tmp_path / RECORD).read_text())["jobs"]
    assert record["a"]["after"] == [] and record["b"]["after"] == [again["a"]]
    final = wait(tmp_path, poll_s=0.5, timeout_s=WAIT_S)
    assert states(final) == {"x": "finished", "a": "finished", "b": "finished"}
    assert (out / "b").exists()


def test_job_signalled_at_its_time_limit_is_requeued_and_runs_again(slurm_cluster, tmp_path):  # noqa: F811
    # SIGUSR2 is what Slurm sends before the time limit (submitit's --signal); the first run
    # waits for it, the requeued run (same Slurm job) finds its attempt recorded and ends.
    attempts = tmp_path / "attempts"
    code = (f"import pathlib, time; p = pathlib.Path({str(attempts)!r}); "
            "n = len(p.read_text()) if p.exists() else 0; p.write_text('x' * (n + 1)); "
            "time.sleep(300 if n == 0 else 0)")
    ids = submit_study([job(tmp_path, "a", code)], tmp_path)
    wait_until(tmp_path, "a", "running")
    deadline = time.monotonic() + WAIT_S
    while not attempts.exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", ids["a"]], check=True)
    final = wait(tmp_path, poll_s=0.5, timeout_s=WAIT_S)
    assert final["a"] == (final["a"].state, ids["a"], final["a"].log)
    assert final["a"].state == "finished" and attempts.read_text() == "xx"
    assert "Requeued job" in final["a"].log.read_text()


def test_refused_job_cancels_what_the_call_queued(slurm_cluster, tmp_path):  # noqa: F811
    # the test node has no GPU: sbatch refuses the second job, the first must not run alone
    first = f"sleeper-{tmp_path.name}"
    jobs = [job(tmp_path, first, "import time; time.sleep(300)"),
            job(tmp_path, "b", "pass", [first], gpus=1)]
    with pytest.raises(SlurmError, match="sbatch refused job 'b'"):
        submit_study(jobs, tmp_path)
    assert status(tmp_path) == {}
    live = subprocess.run(["squeue", "-h", "-o", "%j", "--states=PENDING,RUNNING"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert first not in live


def test_jobs_out_of_dependency_order_are_refused_before_queueing(tmp_path):
    jobs = [job(tmp_path, "b", "pass", ["a"]), job(tmp_path, "a", "pass")]
    with pytest.raises(SlurmError, match="give the jobs in dependency order"):
        submit_study(jobs, tmp_path)
    assert not (tmp_path / RECORD).exists()
