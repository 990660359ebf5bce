"""The cross-validation runner: results files, resuming after a kill, DDP with two processes."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from recipe_helpers import (
    RECIPE_DIR,
    TINY_ENCODER_HPARAMS,
    interruptible,
    recipe_module,
    run_cv,
    tiny_encoder,
)
from slurm_cluster import slurm_cluster  # noqa: F401 (the fixture)

from lobes.gmp.labels import read_label_file
from lobes.runner.launchers.slurm import status as slurm_status

SYSTEM_FOLDERS = {"gmp_tl": "stage2", "baseline": "baseline"}
SHORT = "number_of_epochs: 1\n"


def logged_test_stats(train_log):
    """WA and UA of the test line of a SpeechBrain train log (3 significant digits)."""
    line = [line for line in train_log.read_text().splitlines() if "test WA" in line][-1]
    return {key: float(re.search(rf"test {key}: ([-+.\deE]+)", line).group(1))
            for key in ("WA", "UA")}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    make_demo_corpus = recipe_module("make_demo_corpus").make_demo_corpus
    return make_demo_corpus(tmp_path_factory.mktemp("small"), seed=3, utts_per_speaker=8)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, small_corpus, demo_hubert_dir):
    """Two folds of gmp_tl and baseline, SIGKILLed during fold 2's stage 1, then run again."""
    output = tmp_path_factory.mktemp("killed") / "out"
    overrides = output.parent / "overrides.yaml"
    overrides.write_text(SHORT)
    command = [
        sys.executable, str(RECIPE_DIR / "run_cv.py"), "--data_folder", str(small_corpus),
        "--output_folder", str(output), "--encoder_source", str(demo_hubert_dir),
        "--expected_utterances", "0", "--folds", "1,2", "--systems", "gmp_tl,baseline",
        "--overrides", str(TINY_ENCODER_HPARAMS), str(RECIPE_DIR / "hparams" / "demo.yaml"),
        str(overrides), "--jobs", "1",
    ]
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True, text=True)
    stage1_log = output / "fold2" / "stage1" / "log.txt"

    def training_started():
        return stage1_log.exists() and "Going into epoch" in stage1_log.read_text()

    deadline = time.time() + 600
    while not training_started() and time.time() < deadline and runner.poll() is None:
        time.sleep(0.1)
    assert training_started(), runner.communicate()[0][-3000:]
    os.killpg(runner.pid, signal.SIGKILL)  # mid-epoch: an epoch, valid and test take seconds
    runner.wait()
    before = {
        path: path.stat().st_mtime_ns
        for path in [output / "fold1" / step / "encoder.ckpt"
                     for step in ("stage0", "stage1", "stage2", "baseline")]
        + [output / "fold2" / "stage0" / "encoder.ckpt",
           output / "fold2" / "gmp" / "train_L2_K8.km"]
    }
    assert not (output / "fold2" / "stage1" / "encoder.ckpt").exists()
    completed = subprocess.run(command, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return output, completed.stdout, before


def test_killed_runner_resumes_without_redoing_finished_steps(killed_and_resumed):
    output, stdout, before = killed_and_resumed
    for step in ("stage0", "gmp", "stage1", "stage2", "baseline"):
        assert f"fold 1 | {step}: complete, skipped" in stdout
    assert "fold 2 | stage0: complete, skipped" in stdout
    assert "fold 2 | gmp: complete, skipped" in stdout
    for step in ("stage1", "stage2", "baseline"):
        assert f"fold 2 | {step}: done" in stdout
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was written again"
    # the interrupted stage finished with its planned number of epochs
    epochs = re.findall(r"^epoch: (\d+)", (output / "fold2" / "stage1" / "train_log.txt")
                        .read_text(), re.MULTILINE)
    assert epochs and epochs[-1] == "1"


def test_two_fold_results_files_match_the_runs(killed_and_resumed):
    output, _, _ = killed_and_resumed
    results = json.loads((output / "results.json").read_text())
    assert set(results["systems"]) == {"gmp_tl", "baseline"}
    for system, folder in SYSTEM_FOLDERS.items():
        summary = results["systems"][system]
        assert set(summary["folds"]) == {"1", "2"}
        n_utterances = 0
        for fold, values in summary["folds"].items():
            run_folder = output / f"fold{fold}" / folder
            metrics = json.loads((run_folder / "metrics.json").read_text())
            n_utterances += metrics["n_utterances"]
            assert values == {"WA": metrics["WA"], "UA": metrics["UA"]}
            logged = logged_test_stats(run_folder / "train_log.txt")
            for key in ("WA", "UA"):
                assert values[key] == pytest.approx(logged[key], abs=6e-3)
            assert (run_folder / "predictions.csv").exists()
        for key in ("WA", "UA"):
            fold_values = [summary["folds"][fold][key] for fold in ("1", "2")]
            assert summary["mean"][key] == pytest.approx(sum(fold_values) / 2)
            assert summary["std"][key] == pytest.approx(abs(fold_values[0] - fold_values[1]) / 2)
        assert sum(map(sum, summary["confusion"])) == n_utterances
        assert (output / f"confusion_{system}.png").stat().st_size > 1000
        assert (output / f"curves_{system}.png").stat().st_size > 1000
        assert f"![{system} curves](curves_{system}.png)" in (output / "results.md").read_text()
    markdown = (output / "results.md").read_text()
    assert re.search(r"\| GMP-TL \(paper, reported\) \| 80\.0 \| 82\.0 \|.*reported", markdown)
    gmp_tl = results["systems"]["gmp_tl"]
    row = (f"| gmp_tl | {100 * gmp_tl['mean']['WA']:.1f} ± {100 * gmp_tl['std']['WA']:.1f} "
           f"| {100 * gmp_tl['mean']['UA']:.1f} ± {100 * gmp_tl['std']['UA']:.1f} |")
    assert row in markdown
    assert re.search(r"^\| baseline \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \|", markdown, re.M)
    # the statistics: every fold's predictions.csv, with the speakers of its test manifest
    assert gmp_tl["n_utterances"] == sum(map(sum, gmp_tl["confusion"]))
    assert gmp_tl["n_speakers"] == 4 and results["comparisons"]["gmp_tl"]["runs"] == 2
    assert gmp_tl["pooled"]["WA"] == pytest.approx(
        np.trace(gmp_tl["confusion"]) / gmp_tl["n_utterances"])
    assert re.search(r"^- gmp_tl vs baseline: UA [+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\], "
                     r"p = [01]\.\d{3}, wins [012]/2", markdown, re.M)
    for fold in (1, 2):
        for step in ("prepare", "stage0", "gmp", "stage1", "stage2", "baseline"):
            assert (output / f"fold{fold}" / step).is_dir()


def test_two_processes_ddp_extraction_and_training(killed_and_resumed, small_corpus,
                                                   demo_hubert_dir, tmp_path):
    """torchrun --nproc_per_node=2 with gloo: GMP extraction split over ranks, DDP training."""
    output, _, _ = killed_and_resumed
    fold_dir = output / "fold1"
    common = [f"--data_folder={small_corpus}", *tiny_encoder(demo_hubert_dir),
              "--expected_utterances=0", "--skip_prep=True",
              f"--output_root={fold_dir}", "--distributed_backend=gloo"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    gmp_folder = tmp_path / "gmp_ddp"
    subprocess.run(
        [*torchrun, str(RECIPE_DIR / "extract_gmp.py"), str(RECIPE_DIR / "hparams" / "gmp.yaml"),
         *common, f"--output_folder={gmp_folder}", "--gmp_layer=2", "--gmp_scales=[8, 16, 32]",
         "--keep_feature_cache=True"],
        check=True, capture_output=True,
    )
    shards = sorted(path.name for path in (gmp_folder / "cache").glob("train_*.index.json"))
    assert len(shards) == 2, shards
    # two ranks give the GMPs of one process: every utterance is encoded alone, so the features,
    # the k-means fits and the labels are the same whichever rank encoded what
    for split in ("train", "valid", "test"):
        single = read_label_file(fold_dir / "gmp" / f"{split}_L2_K16.km")
        ranks = read_label_file(gmp_folder / f"{split}_L2_K16.km")
        assert ranks.keys() == single.keys()
        assert [len(ranks[u]) for u in single] == [len(labels) for labels in single.values()]
        assert all(np.array_equal(ranks[u], single[u]) for u in single), split
    baseline_folder = tmp_path / "baseline_ddp"
    completed = subprocess.run(
        [*torchrun, str(RECIPE_DIR / "train.py"), str(RECIPE_DIR / "hparams" / "baseline.yaml"),
         *common, f"--output_folder={baseline_folder}", "--number_of_epochs=1",
         "--max_batch_length=20"],
        capture_output=True, text=True,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads((baseline_folder / "metrics.json").read_text())["n_utterances"] > 0
    assert (baseline_folder / "encoder.ckpt").exists()


def test_changed_settings_stop_the_runner_then_rerun_only_what_they_change(
        killed_and_resumed, small_corpus, demo_hubert_dir, tmp_path):
    """A copy of the killed-and-resumed run's fold 1: the same settings plan nothing to run;
    gmp_layer 3 stops before any work naming the changed keys of the steps it changes (not
    stage 0, not the baseline, which read no GMP key); --rerun_changed runs those again and
    results.json records the new layer."""
    output = tmp_path / "cv"
    shutil.copytree(killed_and_resumed[0] / "fold1", output / "fold1")

    def runner(*extra, overrides=SHORT):
        return run_cv(output, small_corpus, demo_hubert_dir, "--folds", "1", *extra,
                      overrides_text=overrides, check=False)

    same = runner("--plan_only")
    assert same.returncode == 0, same.stderr[-2000:]
    assert "to run" not in same.stdout and same.stdout.count(": complete (") == 5
    before = {path: path.stat().st_mtime_ns for path in output.rglob("*.ckpt")}
    changed = runner(overrides=SHORT + "gmp_layer: 3\n")
    assert changed.returncode != 0
    message = changed.stderr
    assert "gmp_layer: 2 -> 3" in message and "gmp_layers: [2] -> [3]" in message
    for step in ("gmp", "stage1", "stage2"):
        assert str(output / "fold1" / step) in message
    assert "input gmp_folder" in message and "input stage1_folder" in message
    assert str(output / "fold1" / "stage0") not in message
    assert str(output / "fold1" / "baseline") not in message
    assert "--rerun_changed" in message
    assert before == {path: path.stat().st_mtime_ns for path in output.rglob("*.ckpt")}

    rerun = runner("--rerun_changed", overrides=SHORT + "gmp_layer: 3\n")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for step in ("stage0", "baseline"):
        assert f"fold 1 | {step}: complete, skipped" in rerun.stdout
    for step in ("gmp", "stage1", "stage2"):
        assert f"fold 1 | {step}: done" in rerun.stdout
    assert (output / "fold1" / "gmp" / "train_L3_K8.km").exists()
    results = json.loads((output / "results.json").read_text())
    assert results["systems"]["gmp_tl"]["settings"]["gmp"]["gmp_layer"] == 3
    assert results["systems"]["gmp_tl"]["settings"]["stage2"]["am_margin"] == 0.2
    assert results["overrides"]["gmp_layer"] == 3 and not results["stale"]


def test_misspelled_override_key_stops_before_any_work(tmp_path, small_corpus,
                                                       demo_hubert_dir):
    completed = run_cv(tmp_path / "out", small_corpus, demo_hubert_dir, "--folds", "1",
                       overrides_text="number_of_epoch: 1\n", check=False)
    assert completed.returncode != 0
    assert "'number_of_epoch' (did you mean 'number_of_epochs'?)" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out" / "fold1" / "stage0").exists()


# ---- the study as parallel jobs (lobes.runner.study, lobes.runner.launchers.local) ----

FINAL_STEPS = ("stage0", "gmp", "stage1", "stage2", "baseline")


@pytest.fixture(scope="module")
def parallel_with_a_failed_fold(tmp_path_factory, small_corpus, demo_hubert_dir):
    """The killed-and-resumed study again, two jobs at once, with fold 2's test manifest naming
    a wav that is gone (every step of fold 2 stops at its start); then repaired and run again."""
    output = tmp_path_factory.mktemp("parallel") / "out"

    def study(*extra):
        return run_cv(output, small_corpus, demo_hubert_dir, "--folds", "1,2",
                      "--systems", "gmp_tl,baseline", "--jobs", "2", *extra,
                      overrides_text=SHORT, check=False)

    assert study("--plan_only").returncode == 0
    manifest = output / "fold2" / "prepare" / "test.json"
    intact = manifest.read_text()
    entries = json.loads(intact)
    first = next(iter(entries))
    entries[first]["wav"] = entries[first]["wav"] + ".gone"
    manifest.write_text(json.dumps(entries))
    failed = study()
    failed.folders = sorted(path.name for path in (output / "fold2").iterdir())
    failed.results = json.loads((output / "results.json").read_text())
    manifest.write_text(intact)
    resumed = study()
    return output, failed, resumed


def test_a_failed_job_stops_its_chain_the_others_go_on(parallel_with_a_failed_fold):
    output, failed, _ = parallel_with_a_failed_fold
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    for step in ("stage0", "baseline"):
        assert f"fold 2 | {step}: FAILED" in failed.stdout
        log = output / "fold2" / step / "run.log"
        assert f"{log}" in failed.stderr and ".gone" in log.read_text()
    for step in ("gmp", "stage1", "stage2"):
        assert f"fold 2 | {step}: not run (needs fold 2 | " in failed.stdout
    assert failed.folders == ["baseline", "prepare", "stage0"]
    assert "run the same command again" in failed.stderr
    for step in FINAL_STEPS:
        assert f"fold 1 | {step}: done" in failed.stdout
    # the finished fold is in the results already
    assert set(failed.results["systems"]["gmp_tl"]["folds"]) == {"1"}


def test_the_same_command_resumes_and_parallel_equals_serial(parallel_with_a_failed_fold,
                                                               killed_and_resumed):
    output, _, resumed = parallel_with_a_failed_fold
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for step in FINAL_STEPS:
        assert f"fold 1 | {step}: complete, skipped" in resumed.stdout
        assert f"fold 2 | {step}: done" in resumed.stdout
    # one progress line per state change, never a job's own output
    assert all(line.startswith(("[", "fold ", "disk plan", "  ", "|", "", "all jobs", "Mean",
                                "Settings", "Confusion", "Learning", "!["))
               for line in resumed.stdout.splitlines()), resumed.stdout
    serial = killed_and_resumed[0]
    for fold in (1, 2):
        for step in ("stage2", "baseline"):
            assert (output / f"fold{fold}" / step / "metrics.json").read_bytes() == \
                (serial / f"fold{fold}" / step / "metrics.json").read_bytes(), (fold, step)
        assert (output / f"fold{fold}" / "gmp" / "train_L2_K16.km").read_bytes() == \
            (serial / f"fold{fold}" / "gmp" / "train_L2_K16.km").read_bytes()


def child_pids(pid):
    """The pids of a process's children (Linux /proc)."""
    found = []
    for task in (f"/proc/{pid}/task/{tid}/children" for tid in os.listdir(f"/proc/{pid}/task")):
        try:
            found += [int(child) for child in open(task).read().split()]
        except OSError:
            pass
    return found


def test_ctrl_c_stops_every_job_and_says_how_to_resume(tmp_path, small_corpus, demo_hubert_dir):
    command = [
        sys.executable, str(RECIPE_DIR / "run_cv.py"), "--data_folder", str(small_corpus),
        "--output_folder", str(tmp_path / "out"), *tiny_encoder(demo_hubert_dir),
        "--expected_utterances", "0", "--folds", "1,2", "--systems", "baseline", "--jobs", "2",
    ]
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True, preexec_fn=interruptible)
    deadline, jobs = time.time() + 300, []
    while len(jobs) < 2 and time.time() < deadline and runner.poll() is None:
        time.sleep(0.2)
        jobs = child_pids(runner.pid)
    assert len(jobs) == 2, runner.communicate()
    os.kill(runner.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends the runner
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130, stderr
    assert "interrupted: every job was stopped; run the same command again" in stderr
    assert "Traceback" not in stderr
    for pid in jobs:
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split()[2] == "Z", f"job {pid} still runs"


def test_an_unreachable_encoder_ends_the_study_in_one_line(tmp_path, small_corpus):
    completed = subprocess.run(
        [sys.executable, str(RECIPE_DIR / "run_cv.py"), "--data_folder", str(small_corpus),
         "--output_folder", str(tmp_path / "out"), "--expected_utterances", "0",
         "--plan_only"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "facebook/hubert-large-ll60k" in lines[0]
    assert "--encoder_source" in lines[0]
    assert "Traceback" not in completed.stderr and len(lines) <= 2


# ---- the same study queued on the test Slurm cluster (.ci/slurm-up) ----


@pytest.fixture(scope="module")
def slurm_study(slurm_cluster, tmp_path_factory, small_corpus, demo_hubert_dir):  # noqa: F811
    """The killed-and-resumed study queued on Slurm with ``--no_wait``; then, while it runs,
    fold 2's stage-1 overrides corrupted and fold 2's baseline cancelled with ``scancel``; the
    status; once fold 2's stage 1 has failed (and Slurm cancelled its stage 2), the same
    command, which reports them and runs them again to the end."""
    output = tmp_path_factory.mktemp("slurm") / "out"

    def study(*extra):
        return run_cv(output, small_corpus, demo_hubert_dir, "--folds", "1,2",
                      "--systems", "gmp_tl,baseline", "--launcher", "slurm", "--device", "cpu",
                      *extra, overrides_text=SHORT, check=False)

    queued = study("--no_wait")
    assert queued.returncode == 0, queued.stderr[-3000:]
    (output / "fold2" / "stage1" / "run_overrides.yaml").write_text("gmp_scales: [8, 16\n")
    record = json.loads((output / "slurm_jobs.json").read_text())["jobs"]
    subprocess.run(["scancel", str(record["fold2/baseline"]["job_id"])], check=True)
    status = study("--no_wait")
    deadline = time.time() + 600
    while time.time() < deadline:
        states = {key: state.state for key, state in slurm_status(output).items()}
        if states["fold2/stage1"] == "failed" and states["fold2/stage2"] == "cancelled":
            break
        time.sleep(1)
    stage2_trained = (output / "fold2" / "stage2" / "train_log.txt").exists()
    finished = study()
    return output, queued, status, (finished, states, stage2_trained), finished


def test_a_slurm_study_queues_every_job_at_once_and_shows_their_states(slurm_study):
    output, queued, status, _, _ = slurm_study
    ids = re.findall(r"^\[.*\] (fold \d \| \w+): \w+ \(Slurm job (\d+); log (\S+)\)$",
                     queued.stdout, re.M)
    assert len(ids) == 10 and "run the same command again" in queued.stdout
    assert re.search(r"fold 2 \| baseline: cancelled \(Slurm job \d+; log \S+\), queued again "
                     r"as Slurm job \d+", status.stdout)
    # the status call queued nothing new: every other job kept its Slurm job id
    for label, job_id, _ in ids:
        if label != "fold 2 | baseline":
            assert re.search(rf"{re.escape(label)}: \w+ \(Slurm job {job_id};", status.stdout)


def test_a_failed_slurm_job_is_reported_with_its_log_and_its_dependents_do_not_run(
        slurm_study):
    output, _, _, (rerun, states, stage2_trained), _ = slurm_study
    assert states["fold2/stage1"] == "failed" and states["fold2/stage2"] == "cancelled"
    assert not stage2_trained
    assert "Traceback" not in rerun.stderr
    match = re.search(r"fold 2 \| stage1: failed \(Slurm job \d+; log (\S+)\), queued again",
                      rerun.stdout)
    assert match and "gmp_scales" in open(match.group(1)).read()
    assert re.search(r"fold 2 \| stage2: cancelled \(Slurm job \d+; log \S+\), queued again",
                     rerun.stdout)


def test_the_same_command_finishes_the_slurm_study_as_the_local_one(slurm_study,
                                                                    killed_and_resumed):
    output, _, _, _, finished = slurm_study
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "all jobs done" in finished.stdout
    serial = killed_and_resumed[0]
    for fold in (1, 2):
        for step in ("stage2", "baseline"):
            assert (output / f"fold{fold}" / step / "metrics.json").read_bytes() == \
                (serial / f"fold{fold}" / step / "metrics.json").read_bytes(), (fold, step)
    assert json.loads((output / "results.json").read_text())["systems"]["gmp_tl"]["folds"]
