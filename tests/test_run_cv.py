"""The cross-validation runner: results files, resuming after a kill, DDP with two processes."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from recipe_helpers import RECIPE_DIR, recipe_module, run_cv

SYSTEM_FOLDERS = {"gmp_tl": "stage2", "baseline": "baseline"}


def logged_test_stats(train_log):
    """WA and UA of the test line of a SpeechBrain train log (3 significant digits)."""
    line = [line for line in train_log.read_text().splitlines() if "test WA" in line][-1]
    return {key: float(re.search(rf"test {key}: ([-+.\deE]+)", line).group(1))
            for key in ("WA", "UA")}


def test_two_fold_results_files_match_the_runs(cv_run):
    results = json.loads((cv_run / "results.json").read_text())
    assert set(results["systems"]) == {"gmp_tl", "baseline"}
    for system, folder in SYSTEM_FOLDERS.items():
        summary = results["systems"][system]
        assert set(summary["folds"]) == {"1", "2"}
        for fold, values in summary["folds"].items():
            run_folder = cv_run / f"fold{fold}" / folder
            metrics = json.loads((run_folder / "metrics.json").read_text())
            assert values == {"WA": metrics["WA"], "UA": metrics["UA"]}
            logged = logged_test_stats(run_folder / "train_log.txt")
            for key in ("WA", "UA"):
                assert values[key] == pytest.approx(logged[key], abs=6e-3)
            assert (run_folder / "predictions.csv").exists()
        for key in ("WA", "UA"):
            fold_values = [summary["folds"][fold][key] for fold in ("1", "2")]
            assert summary["mean"][key] == pytest.approx(sum(fold_values) / 2)
            assert summary["std"][key] == pytest.approx(abs(fold_values[0] - fold_values[1]) / 2)
        assert sum(map(sum, summary["confusion"])) == sum(
            json.loads((cv_run / f"fold{fold}" / folder / "metrics.json").read_text())[
                "n_utterances"] for fold in ("1", "2"))
        assert (cv_run / f"confusion_{system}.png").stat().st_size > 1000
    markdown = (cv_run / "results.md").read_text()
    assert re.search(r"\| GMP-TL \(paper, reported\) \| 80\.0 \| 82\.0 \|.*reported", markdown)
    gmp_tl = results["systems"]["gmp_tl"]
    row = (f"| gmp_tl | {100 * gmp_tl['mean']['WA']:.1f} ± {100 * gmp_tl['std']['WA']:.1f} "
           f"| {100 * gmp_tl['mean']['UA']:.1f} ± {100 * gmp_tl['std']['UA']:.1f} |")
    assert row in markdown
    assert re.search(r"^\| baseline \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \|", markdown, re.M)
    # each step of each fold has its folder
    for fold in (1, 2):
        for step in ("prepare", "stage0", "gmp", "stage1", "stage2", "baseline"):
            assert (cv_run / f"fold{fold}" / step).is_dir()


def test_misspelled_override_key_stops_before_any_work(tmp_path, demo_corpus_dir,
                                                       demo_hubert_dir):
    completed = run_cv(tmp_path / "out", demo_corpus_dir, demo_hubert_dir, "--folds", "1",
                       overrides_text="number_of_epoch: 1\n", check=False)
    assert completed.returncode != 0
    assert "number_of_epoch" in completed.stderr and "spelling" in completed.stderr
    assert not (tmp_path / "out" / "fold1" / "stage0").exists()


def test_killed_ddp_runner_resumes_without_redoing_finished_steps(
    tmp_path_factory, demo_hubert_dir
):
    """Two processes per step (torchrun, gloo); SIGKILL during stage 1, then run again."""
    make_demo_corpus = recipe_module("make_demo_corpus").make_demo_corpus
    corpus = make_demo_corpus(tmp_path_factory.mktemp("small"), seed=3, utts_per_speaker=8)
    output = tmp_path_factory.mktemp("killed") / "out"
    overrides = output.parent / "overrides.yaml"
    overrides.write_text("number_of_epochs: 2\n")
    command = [
        sys.executable, str(RECIPE_DIR / "run_cv.py"), "--data_folder", str(corpus),
        "--output_folder", str(output), "--hubert_source", str(demo_hubert_dir),
        "--expected_utterances", "0", "--folds", "1", "--systems", "gmp_tl", "--nproc", "2",
        "--overrides", str(RECIPE_DIR / "hparams" / "demo.yaml"), str(overrides),
    ]
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True, text=True)
    stage1_log = output / "fold1" / "stage1" / "log.txt"
    deadline = time.time() + 400
    while not stage1_log.exists() and time.time() < deadline and runner.poll() is None:
        time.sleep(0.5)
    assert stage1_log.exists(), runner.communicate()[0][-3000:]
    time.sleep(3)
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    assert not (output / "fold1" / "stage1" / "encoder.ckpt").exists()
    stage0_mtime = (output / "fold1" / "stage0" / "encoder.ckpt").stat().st_mtime_ns
    labels_mtime = (output / "fold1" / "gmp" / "train_L2_K8.km").stat().st_mtime_ns

    completed = subprocess.run(command, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "fold 1 | stage0: complete, skipped" in completed.stdout
    assert "fold 1 | gmp: complete, skipped" in completed.stdout
    assert "fold 1 | stage1: done" in completed.stdout
    assert (output / "fold1" / "stage0" / "encoder.ckpt").stat().st_mtime_ns == stage0_mtime
    assert (output / "fold1" / "gmp" / "train_L2_K8.km").stat().st_mtime_ns == labels_mtime
    results = json.loads((output / "results.json").read_text())
    assert set(results["systems"]["gmp_tl"]["folds"]) == {"1"}
    # the GMP extraction ran as two ranks: one cache shard per rank and split
    cache = output / "fold1" / "gmp" / "cache"
    shards = sorted(path.name for path in cache.glob("train_*index*"))
    assert len(shards) == 2, shards
    # stage 1 ran under DDP (SpeechBrain logs the world size of the process group)
    stage1_run_log = (output / "fold1" / "stage1" / "run.log").read_text()
    assert "torch.distributed.run" in stage1_run_log and "--nproc_per_node=2" in stage1_run_log
