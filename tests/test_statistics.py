"""Statistics of the results tables: metrics, intervals over speakers, paired comparisons, the
runner's results files with seeds, and gmptl-compare. Synthetic predictions, no training."""

import json
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from lobes.runner import compare_cli, statistics
from lobes.runner.results import collect_results, fold_folder, write_results
from lobes.runner.settings import write_record
from lobes.runner.statistics import Predictions
from lobes.training.metrics import EmotionReport, emotion_metrics

CLASSES = ("neu", "hap", "ang", "sad")
STEPS = {"gmp_tl": "stage2", "baseline": "baseline"}
CHAINS = {system: [step] for system, step in STEPS.items()}  # the final steps are enough here
DEFAULT_SEED = 1986


def synthetic(accuracy, n_speakers=10, per_class=3, n_folds=5, seeds=(DEFAULT_SEED,),
              speaker_effect=0.0, seed=0):
    """Rows ``(fold, seed, id, speaker, true, predicted)``: every speaker has ``per_class``
    utterances of each class and is in fold ``speaker % n_folds + 1``; an utterance is right
    with probability ``accuracy`` plus its speaker's share of ``speaker_effect`` (the speakers'
    accuracies spread evenly over +- speaker_effect), else the next class is predicted."""
    rng = np.random.default_rng(seed)
    shifts = np.linspace(-speaker_effect, speaker_effect, n_speakers)
    rows = []
    for run_seed in seeds:
        for speaker in range(n_speakers):
            for label in range(len(CLASSES)):
                for index in range(per_class):
                    right = rng.random() < accuracy + shifts[speaker]
                    predicted = label if right else (label + 1) % len(CLASSES)
                    rows.append((speaker % n_folds + 1, run_seed, f"s{speaker}_{label}_{index}",
                                 f"s{speaker}", CLASSES[label], CLASSES[predicted]))
    return rows


def predictions(rows):
    return Predictions.from_rows(rows, CLASSES)


def test_metrics_are_scikit_learns_and_the_resampling_loops_agree():
    """classification_metrics (scikit-learn) = confusion_metrics (the resampling loops) = the
    project's emotion_metrics for WA and UA, with a class never predicted and one absent."""
    rng = np.random.default_rng(1)
    for n_classes, absent in ((4, None), (5, 3)):
        true = rng.integers(0, n_classes, 60)
        if absent is not None:
            true[true == absent] = 0
        predicted = np.where(rng.random(60) < 0.5, true, rng.integers(0, n_classes, 60))
        predicted[predicted == 2] = 1
        mine = statistics.classification_metrics(true, predicted, n_classes)
        confusion = emotion_metrics(true, predicted, n_classes)
        assert mine["WA"] == pytest.approx(accuracy_score(true, predicted))
        with warnings.catch_warnings():  # "y_pred contains classes not in y_true"
            warnings.simplefilter("ignore", UserWarning)
            assert mine["UA"] == pytest.approx(balanced_accuracy_score(true, predicted))
        assert mine["macro_F1"] == pytest.approx(f1_score(true, predicted, average="macro"))
        assert mine["UA"] == pytest.approx(confusion["UA"])
        assert np.allclose(mine["recall"], confusion["recall"], equal_nan=True)
        vectorised = statistics.confusion_metrics(np.asarray(confusion["confusion"]))
        assert vectorised == pytest.approx([mine[metric] for metric in statistics.METRICS])


def naive_speaker_bootstrap(rows, resamples, seed):
    """A plain loop: draw speakers with replacement, pool all their rows, UA; percentiles."""
    rng = np.random.default_rng(seed)
    by_speaker = {}
    for row in rows:
        by_speaker.setdefault(row[3], []).append(row)
    speakers = sorted(by_speaker)
    values = []
    for _ in range(resamples):
        drawn = [row for index in rng.integers(0, len(speakers), len(speakers))
                 for row in by_speaker[speakers[index]]]
        true = [CLASSES.index(row[4]) for row in drawn]
        predicted = [CLASSES.index(row[5]) for row in drawn]
        values.append(emotion_metrics(true, predicted, 4)["UA"])
    return np.percentile(values, [2.5, 97.5])


def test_speaker_interval_is_a_cluster_bootstrap():
    rows = synthetic(0.6, speaker_effect=0.3, seed=2)
    ours = statistics.metric_intervals(predictions(rows), "speaker", resamples=4000)["UA"]
    plain = naive_speaker_bootstrap(rows, 1000, seed=5)
    assert ours == pytest.approx(plain, abs=0.02)


def test_speaker_intervals_are_wider_than_utterance_ones_when_speakers_differ():
    correlated = predictions(synthetic(0.6, speaker_effect=0.35, per_class=6, seed=3))
    independent = predictions(synthetic(0.6, speaker_effect=0.0, per_class=6, seed=3))

    def widths(data):
        return [np.diff(statistics.metric_intervals(data, unit, resamples=3000)["UA"])[0]
                for unit in ("speaker", "utterance")]

    speaker, utterance = widths(correlated)
    assert speaker > 1.6 * utterance
    speaker, utterance = widths(independent)
    assert speaker < 1.3 * utterance  # without a speaker effect the two agree roughly


def test_a_system_compared_with_itself():
    rows = synthetic(0.7, seeds=(DEFAULT_SEED, 7), seed=4)
    comparison = statistics.paired_comparison(predictions(rows), predictions(rows))
    assert comparison["UA_difference"] == 0
    assert comparison["ci_speaker"] == [0.0, 0.0]
    assert comparison["p_value"] == 1.0
    assert (comparison["wins"], comparison["ties"], comparison["runs"]) == (0, 10, 10)
    assert comparison["permutations"] == "exact" and comparison["n_permutations"] == 2 ** 10


def test_a_large_gap_is_significant_with_an_interval_excluding_zero():
    better = predictions(synthetic(0.9, n_speakers=12, n_folds=4, seed=5))
    worse = predictions(synthetic(0.45, n_speakers=12, n_folds=4, seed=6))
    comparison = statistics.paired_comparison(better, worse)
    low, high = comparison["ci_speaker"]
    assert 0 < low < comparison["UA_difference"] < high
    assert comparison["UA_difference"] == pytest.approx(
        statistics.classification_metrics(better.true, better.predicted, 4)["UA"]
        - statistics.classification_metrics(worse.true, worse.predicted, 4)["UA"])
    assert comparison["p_value"] < 0.01
    assert comparison["wins"] == comparison["runs"] == 4
    line = statistics.comparison_line("gmp_tl", {**comparison, "reference": "baseline",
                                                 "common_runs": 4, "all_runs": 4})
    assert re.fullmatch(r"gmp_tl vs baseline: UA \+\d+\.\d \[\+\d+\.\d, \+\d+\.\d\], "
                        r"p (=|<) 0\.0\d\d, wins 4/4", line), line
    # the reverse comparison mirrors it
    reverse = statistics.paired_comparison(worse, better)
    assert reverse["UA_difference"] == -comparison["UA_difference"]
    assert reverse["p_value"] == comparison["p_value"]


def test_exact_permutation_p_value():
    """Balanced speakers, the better system ahead on every speaker: the observed difference is
    the largest of the 2**8 swaps and its negation the smallest, so p = 2 / 2**8 exactly."""
    rows = synthetic(0.5, n_speakers=8, per_class=4, seed=7)
    better = [(*row[:5], row[4]) for row in rows]  # always right
    comparison = statistics.paired_comparison(predictions(better), predictions(rows))
    assert comparison["p_value"] == pytest.approx(2 / 2 ** 8)
    randomised = statistics.paired_comparison(predictions(better), predictions(rows),
                                              resamples=200)
    assert randomised["permutations"] == 200
    assert 2 / 201 <= randomised["p_value"] < 0.05  # (1 + hits) / (1 + draws), two-sided


def test_paired_comparison_needs_the_same_utterances():
    rows = synthetic(0.7, seed=8)
    with pytest.raises(ValueError, match="same \\(fold, seed, utterance\\) set"):
        statistics.paired_comparison(predictions(rows[1:]), predictions(rows))
    relabelled = [(*row[:4], CLASSES[(CLASSES.index(row[4]) + 1) % 4], row[5]) for row in rows]
    with pytest.raises(ValueError, match="true labels"):
        statistics.paired_comparison(predictions(relabelled), predictions(rows))
    other_seed = [(row[0], 7, *row[2:]) for row in rows]
    entry = statistics.compare_on_common_runs(predictions(other_seed), predictions(rows), "b")
    assert entry["error"] == "no (fold, seed) run in common"
    assert "not compared: no (fold, seed) run in common" in statistics.comparison_line("a", entry)
    half = [row for row in rows if row[0] <= 2]
    entry = statistics.compare_on_common_runs(predictions(half), predictions(rows), "b")
    assert (entry["common_runs"], entry["all_runs"], entry["runs"]) == (2, 5, 2)
    assert statistics.comparison_line("a", entry).endswith(
        "wins 0/2 (2 tied; on the 2 of 5 runs both have)")


def test_spreads_over_folds_and_over_seeds_are_apart():
    rows = synthetic(0.6, n_speakers=6, n_folds=3, seeds=(1, 2), speaker_effect=0.3, seed=9)
    summary = statistics.system_summary(predictions(rows), resamples=200)
    runs = {(run["fold"], run["seed"]): run["UA"] for run in summary["runs"]}
    assert len(runs) == 6
    folds = [np.mean([runs[(fold, seed)] for seed in (1, 2)]) for fold in (1, 2, 3)]
    seeds = [np.mean([runs[(fold, seed)] for fold in (1, 2, 3)]) for seed in (1, 2)]
    assert summary["over_folds"]["n"] == 3 and summary["over_seeds"]["n"] == 2
    assert summary["over_folds"]["std"]["UA"] == pytest.approx(np.std(folds))
    assert summary["over_seeds"]["std"]["UA"] == pytest.approx(np.std(seeds))
    assert summary["over_folds"]["mean"]["UA"] == pytest.approx(np.mean(list(runs.values())))
    assert summary["n_utterances"] == len(rows) and summary["n_speakers"] == 6


def test_tables_are_bit_identical_whatever_the_row_order():
    rows = synthetic(0.7, seed=10)
    shuffled = [rows[index] for index in np.random.default_rng(0).permutation(len(rows))]
    first, second = ({"baseline": predictions(synthetic(0.5, seed=11)),
                      "gmp_tl": predictions(data)} for data in (rows, shuffled))
    tables = [statistics.study_statistics(systems, resamples=500) for systems in (first, second)]
    assert json.dumps(tables[0]) == json.dumps(tables[1])
    assert statistics.statistics_markdown(tables[0]) == statistics.statistics_markdown(tables[1])
    other_seed = statistics.study_statistics(first, resamples=500, seed=1)
    assert other_seed["systems"]["gmp_tl"]["ci_speaker"] != tables[0]["systems"]["gmp_tl"][
        "ci_speaker"]


# ---------------------------------------------------------------- output folders of the runner

def write_study(output, system_rows, default_seed=DEFAULT_SEED):
    """An output folder as the runner leaves it: per (fold, seed) run its fold folder with the
    test manifest and, per system, the final step's settings.json, predictions.csv (written by
    EmotionReport), metrics.json and train log. Returns the planned digests."""
    expected = {}
    for system, rows in system_rows.items():
        step = STEPS[system]
        for fold, seed in sorted({(row[0], row[1]) for row in rows}):
            run = [row for row in rows if row[:2] == (fold, seed)]
            fold_dir = output / fold_folder(fold, seed, default_seed)
            manifest = {row[2]: {"spk": row[3], "emo": row[4]} for row in run}
            (fold_dir / "prepare").mkdir(parents=True, exist_ok=True)
            (fold_dir / "prepare" / "test.json").write_text(json.dumps(manifest))
            report = EmotionReport(CLASSES)
            scores = torch.zeros(len(run), len(CLASSES))
            scores[torch.arange(len(run)), [CLASSES.index(row[5]) for row in run]] = 3.0
            report.append([row[2] for row in run], scores,
                          torch.tensor([CLASSES.index(row[4]) for row in run]))
            report.write(fold_dir / step)
            record = write_record(fold_dir / step, step, {"seed": seed, "system": system}, {})
            (fold_dir / step / "train_log.txt").write_text(
                "epoch: 1, lr: 1.00e-03 - train loss: 1.2 - valid loss: 1.1, valid UA: 5.00e-01\n")
            expected[(fold, seed, step)] = record["digest"]
    return expected


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two folds x two seeds of gmp_tl and baseline (4 speakers), and a second study whose
    gmp_tl differs; resampling kept small."""
    base = tmp_path_factory.mktemp("studies")
    seeds = (DEFAULT_SEED, 7)
    first = {"gmp_tl": synthetic(0.85, n_speakers=4, n_folds=2, per_class=2, seeds=seeds, seed=1),
             "baseline": synthetic(0.5, n_speakers=4, n_folds=2, per_class=2, seeds=seeds, seed=2)}
    second = {**first, "gmp_tl": synthetic(0.6, n_speakers=4, n_folds=2, per_class=2,
                                           seeds=seeds, seed=3)}
    runs = [(fold, seed) for fold in (1, 2) for seed in seeds]
    folders = {}
    for name, rows in (("A", first), ("B", second)):
        expected = write_study(base / name, rows)
        write_results(base / name, runs, CHAINS, expected, default_seed=DEFAULT_SEED,
                      resamples=300)
        folders[name] = base / name
    return base, folders, runs, first


def test_results_files_hold_the_statistics_recomputed_from_predictions_csv(study):
    base, folders, runs, rows = study
    results = json.loads((folders["A"] / "results.json").read_text())
    direct = statistics.study_statistics({system: predictions(data) for system, data in
                                          rows.items()}, resamples=300)
    for system in STEPS:
        summary = results["systems"][system]
        for key in ("pooled", "ci_speaker", "ci_utterance", "over_folds", "over_seeds",
                    "n_utterances", "n_speakers"):
            assert summary[key] == json.loads(json.dumps(direct["systems"][system][key])), key
        assert [run["folder"] for run in summary["runs"]] == [  # (fold, seed) order
            "fold1_seed7", "fold1", "fold2_seed7", "fold2"]
        assert set(summary["digests"]) == {"fold1", "fold1_seed7", "fold2", "fold2_seed7"}
        # a fold's WA and UA: the mean of its seeds' metrics.json
        for fold in ("1", "2"):
            values = [json.loads((folders["A"] / folder / STEPS[system] / "metrics.json")
                                 .read_text())["UA"] for folder in (f"fold{fold}",
                                                                    f"fold{fold}_seed7")]
            assert summary["folds"][fold]["UA"] == pytest.approx(np.mean(values))
    comparison = results["comparisons"]["gmp_tl"]
    assert comparison == json.loads(json.dumps({**direct["comparisons"]["gmp_tl"]}))
    assert results["statistics"]["resamples"] == 300 and results["statistics"]["seed"] == 0
    markdown = (folders["A"] / "results.md").read_text()
    assert f"- {statistics.comparison_line('gmp_tl', comparison)}\n" in markdown
    assert "wins 4/4" in markdown and "95 % CI, speakers" in markdown
    assert "| gmp_tl | 2 | 7 |" in markdown  # the per-run table
    assert re.search(r"^\| gmp_tl \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ "
                     r"\| 1, 2 of 1, 2 × seeds 7, 1986 \|$", markdown, re.M)


def test_results_files_are_bit_identical_when_written_again(study, tmp_path):
    base, folders, runs, rows = study
    copy = tmp_path / "A"
    shutil.copytree(folders["A"], copy)
    expected = {(fold, seed, step): json.loads((copy / fold_folder(fold, seed, DEFAULT_SEED)
                                                / step / "settings.json").read_text())["digest"]
                for fold, seed in runs for step in STEPS.values()}
    write_results(copy, runs, CHAINS, expected, default_seed=DEFAULT_SEED, resamples=300)
    for name in ("results.json", "results.md"):
        assert (copy / name).read_bytes() == (folders["A"] / name).read_bytes()


def test_stale_runs_and_the_one_seed_call(study, tmp_path):
    """Digests are keyed by (fold, seed, step); the call without seeds (plain folds, (fold,
    step) keys) counts the default seed's folders only, its seed read from settings.json."""
    base, folders, runs, rows = study
    output = folders["A"]
    expected = {(fold, seed, step): json.loads((output / fold_folder(fold, seed, DEFAULT_SEED)
                                                / step / "settings.json").read_text())["digest"]
                for fold, seed in runs for step in STEPS.values()}
    expected[(2, 7, "stage2")] = "another"
    results = collect_results(output, runs, CHAINS, expected, default_seed=DEFAULT_SEED,
                              resamples=100)
    assert results["stale"] == ["fold2_seed7/stage2"]
    gmp_tl = results["systems"]["gmp_tl"]
    assert len(gmp_tl["runs"]) == 3 and gmp_tl["over_seeds"]["values"]["7"]["n_folds"] == 1
    assert results["comparisons"]["gmp_tl"]["common_runs"] == 3
    legacy = {(fold, step): digest for (fold, seed, step), digest in expected.items()
              if seed == DEFAULT_SEED}
    one_seed = collect_results(output, [1, 2], CHAINS, legacy, resamples=100)
    with_seed = collect_results(output, [(1, DEFAULT_SEED), (2, DEFAULT_SEED)], CHAINS, expected,
                                default_seed=DEFAULT_SEED, resamples=100)
    assert one_seed == with_seed
    with pytest.raises(ValueError, match="default_seed"):
        collect_results(output, runs, CHAINS, expected)
    assert [run["seed"] for run in one_seed["systems"]["baseline"]["runs"]] == [DEFAULT_SEED] * 2


def compare(capsys, *args):
    """gmptl-compare in this process: (exit message or None, stdout)."""
    try:
        compare_cli.main([str(arg) for arg in args])
    except SystemExit as stop:
        return str(stop), capsys.readouterr().out
    return None, capsys.readouterr().out


def test_gmptl_compare_recomputes_the_runner_tables_and_compares_two_folders(study, tmp_path,
                                                                            capsys):
    base, folders, runs, rows = study
    error, out = compare(capsys, folders["A"], "--resamples", "300", "--json", tmp_path / "a.json")
    assert error is None
    runner = json.loads((folders["A"] / "results.json").read_text())
    tables = json.loads((tmp_path / "a.json").read_text())
    assert tables["comparisons"] == runner["comparisons"]
    for system in STEPS:
        assert tables["systems"][system]["ci_speaker"] == runner["systems"][system]["ci_speaker"]
    assert f"- {statistics.comparison_line('gmp_tl', runner['comparisons']['gmp_tl'])}" in out

    a, b = (str(folders[name]) for name in ("A", "B"))
    error, out = compare(capsys, a, b, "--resamples", "300", "--json", tmp_path / "ab.json")
    assert error is None
    tables = json.loads((tmp_path / "ab.json").read_text())
    assert list(tables["systems"]) == [f"{a}:gmp_tl", f"{a}:baseline", f"{b}:gmp_tl",
                                       f"{b}:baseline"]
    assert tables["settings"]["reference"] == f"{a}:baseline"
    # B's baseline is A's (same predictions): a difference of 0, p = 1
    same = tables["comparisons"][f"{b}:baseline"]
    assert (same["UA_difference"], same["p_value"]) == (0.0, 1.0)
    assert tables["comparisons"][f"{a}:gmp_tl"] == runner["comparisons"]["gmp_tl"] | {
        "reference": f"{a}:baseline"}
    assert f"{b}:gmp_tl vs {a}:baseline: UA " in out
    error, out = compare(capsys, a, b, "--reference", f"{b}:gmp_tl", "--resamples", "50")
    assert error is None and f"{a}:gmp_tl vs {b}:gmp_tl: UA " in out


def test_gmptl_compare_refuses_folders_without_results(study, tmp_path, capsys):
    base, folders, runs, rows = study
    completed = subprocess.run(  # the module as a command: a message, no traceback
        [sys.executable, "-m", "lobes.runner.compare_cli", str(tmp_path), str(folders["A"])],
        capture_output=True, text=True)
    assert completed.returncode != 0
    assert f"{tmp_path}: no results.json" in completed.stderr
    assert "Traceback" not in completed.stderr
    error, _ = compare(capsys, folders["A"], "--reference", "nothing")
    assert "--reference nothing: no such system" in error
    changed = tmp_path / "changed"
    shutil.copytree(folders["A"], changed)
    write_record(changed / "fold1" / "stage2", "stage2", {"seed": 1}, {})
    error, _ = compare(capsys, changed)
    assert "fold1/stage2: not the run results.json counts" in error
