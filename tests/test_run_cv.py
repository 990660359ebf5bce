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
from recipe_helpers import RECIPE_DIR, TINY_ENCODER_HPARAMS, recipe_module, run_cv, tiny_encoder

from lobes.gmp.labels import read_label_file

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
        str(overrides),
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
