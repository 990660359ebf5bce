"""The results of a cross-validation run: ``results.json``, ``results.md`` and their figures.

Only runs whose ``settings.json`` digest is the one the runner expects are counted, so a result
made with other settings is never shown as new (it is listed as stale instead). Every system
records the settings its steps ran with. A run is one (fold, seed): its steps are in the fold
folder ``fold<K>`` for the default seed and ``fold<K>_seed<S>`` for another (``fold_folder``).
Beside the mean +- std over folds, the tables give the statistics of ``lobes.runner.statistics``
computed from every run's ``predictions.csv`` and the speakers of its test manifest.
"""

import csv
import json
from pathlib import Path

import numpy as np

from lobes.runner import statistics
from lobes.runner.settings import read_record
from lobes.training.metrics import plot_confusion, plot_learning_curves, read_train_log
from lobes.utils.io import atomic_write, write_json_atomic


class ResultsError(ValueError):
    """Test predictions that cannot be read or paired (the message names the file)."""


def fold_folder(fold, seed, default_seed):
    """The fold folder of the (fold, seed) run, relative to the output folder.

    Example
    -------
    >>> fold_folder(3, 1986, 1986), fold_folder(3, 7, 1986)
    ('fold3', 'fold3_seed7')
    """
    return f"fold{fold}" if seed == default_seed else f"fold{fold}_seed{seed}"


def _runs(runs, default_seed):
    """``[(fold, seed)]`` from (fold, seed) pairs or plain folds (one run each, default seed)."""
    pairs = [tuple(run) if isinstance(run, (tuple, list)) else (run, default_seed)
             for run in runs]
    if default_seed is None and any(isinstance(run, (tuple, list)) for run in runs):
        raise ValueError("(fold, seed) runs need default_seed: the seed whose runs are in "
                         "fold<K> folders")
    return pairs


def _expected_digest(expected, fold, seed, step, default_seed):
    """The digest planned for a step of a run: keys ``(fold, seed, step)``, or ``(fold, step)``
    for the default seed."""
    if (fold, seed, step) in expected:
        return expected[(fold, seed, step)]
    return expected.get((fold, step)) if seed == default_seed else None


def read_run_predictions(output_folder, folder, step, fold, seed):
    """The rows of one run's test predictions, with the speakers of its test manifest.

    Arguments
    ---------
    output_folder : str or Path
    folder : str
        The run's fold folder (``fold_folder``).
    step : str
        The step folder that wrote ``predictions.csv`` (columns ``id``, ``true``,
        ``predicted``, ``score_<class>``).
    fold, seed : int

    Returns
    -------
    (list, list)
        ``[(fold, seed, id, speaker, true, predicted)]`` and the classes (``score_<class>``
        columns, in order). The speakers are the ``spk`` field of ``<fold folder>/prepare/
        test.json``, or of ``fold<K>/prepare/test.json`` where the run's folder has no
        preparation of its own.
    """
    output_folder = Path(output_folder)
    path = output_folder / folder / step / "predictions.csv"
    if not path.exists():
        raise ResultsError(f"{path}: missing (the step wrote metrics.json, so it was removed "
                           "or the step did not finish): run the step again")
    manifests = [output_folder / folder / "prepare" / "test.json",
                 output_folder / f"fold{fold}" / "prepare" / "test.json"]
    manifest = next((candidate for candidate in manifests if candidate.exists()), None)
    if manifest is None:
        raise ResultsError(f"{manifests[0]}: missing; the speakers of {path} are read from it")
    speakers = {utt_id: entry.get("spk") for utt_id, entry in
                json.loads(manifest.read_text()).items()}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if not {"id", "true", "predicted"} <= set(fields):
            raise ResultsError(f"{path}: needs the columns id, true, predicted; has {fields}")
        classes = [field[len("score_"):] for field in fields if field.startswith("score_")]
        rows = [(fold, seed, row["id"], speakers.get(row["id"]), row["true"], row["predicted"])
                for row in reader]
    unknown = [row[2] for row in rows if row[3] is None]
    if unknown:
        raise ResultsError(f"{manifest}: no speaker (spk) for {len(unknown)} utterances of "
                           f"{path}, e.g. {unknown[0]!r}: the predictions are of another "
                           "preparation; run the step again")
    return rows, classes


def pooled_predictions(output_folder, runs_by_system):
    """``{system: statistics.Predictions}`` of the given runs.

    Arguments
    ---------
    runs_by_system : dict
        ``{system: (step folder, [(fold, seed, fold folder), ...])}``.
    """
    pooled = {}
    for system, (step, runs) in runs_by_system.items():
        rows, classes = [], None
        for fold, seed, folder in runs:
            run_rows, run_classes = read_run_predictions(output_folder, folder, step, fold, seed)
            if classes is not None and run_classes != classes:
                raise ResultsError(f"{Path(output_folder) / folder / step / 'predictions.csv'}: "
                                   f"classes {run_classes}, other runs of {system} have "
                                   f"{classes}")
            rows, classes = rows + run_rows, run_classes
        try:
            pooled[system] = statistics.Predictions.from_rows(rows, classes)
        except ValueError as error:
            raise ResultsError(f"{output_folder}: the predictions of {system}: {error}") from None
    return pooled


def run_statistics(pooled, reference="baseline", resamples=statistics.RESAMPLES,
                   seed=statistics.SEED):
    """``statistics.study_statistics`` of pooled predictions, its errors as ``ResultsError``."""
    try:
        return statistics.study_statistics(pooled, reference, resamples, seed)
    except ValueError as error:
        raise ResultsError(str(error)) from None


def collect_results(output_folder, runs, systems, expected, reported=None, overrides=None, *,
                    default_seed=None, reference="baseline", resamples=statistics.RESAMPLES,
                    statistics_seed=statistics.SEED):
    """The results dictionary of the finished, current runs.

    Arguments
    ---------
    output_folder : str or Path
        The runner's output folder (``<fold folder>/<step folder>/``).
    runs : list
        ``(fold, seed)`` pairs, or plain folds (one run each, with ``default_seed``).
    systems : dict
        ``{system: [step folder, ...]}``, the last step giving the metrics.
    expected : dict
        ``{(fold, seed, step folder): digest}`` the runner expects (``(fold, step folder)``
        keys are the default seed's).
    reported : dict, optional
        A reported result to show beside (``name``, ``WA``, ``UA``).
    overrides : dict, optional
        The overrides of the shipped hparams the run was given.
    default_seed : int, optional
        The seed whose runs are in ``fold<K>`` (``fold_folder``). Where it is not given, the
        seed of such a run is read from its final step's settings (``seed``).
    reference, resamples, statistics_seed
        The system the others are compared with, the bootstrap resamples and their seed
        (``lobes.runner.statistics.study_statistics``).

    Returns
    -------
    dict
        ``{"systems": {name: {"folds": {fold: {"WA", "UA"}}, "mean", "std", "step",
        "runs", "confusion", "classes", "settings": {step: settings}, "digests": {fold folder:
        {step: digest}}, + system_summary}}, "comparisons": {...}, "statistics": {...},
        "stale": [...], "overrides": {...}, "reported": {...}}``; values as fractions; a fold's
        WA and UA are the means over its seeds (its run's values with one seed), ``mean`` and
        ``std`` (population) are over those folds.
    """
    output_folder = Path(output_folder)
    runs = _runs(runs, default_seed)
    results = {"systems": {}, "stale": [], "overrides": overrides or {}}
    if reported:
        results["reported"] = reported
    to_pool = {}
    for system, steps in systems.items():
        per_run, confusion, classes, settings, digests, folders = {}, None, None, {}, {}, []
        for fold, seed in runs:
            name = fold_folder(fold, seed, default_seed)
            folder = output_folder / name / steps[-1]
            if not (folder / "metrics.json").exists():
                continue
            record = read_record(folder)
            if record is None or record["digest"] != _expected_digest(
                    expected, fold, seed, steps[-1], default_seed):
                results["stale"].append(f"{name}/{steps[-1]}")
                continue
            if seed is None:
                seed = record["settings"].get("seed", 0)
            metrics = json.loads((folder / "metrics.json").read_text())
            per_run[(fold, seed)] = {"WA": metrics["WA"], "UA": metrics["UA"]}
            folders.append((fold, seed, name))
            fold_confusion = np.asarray(metrics["confusion"])
            confusion = fold_confusion if confusion is None else confusion + fold_confusion
            classes = metrics["classes"]
            digests[name] = {}
            for step in steps:
                step_record = read_record(output_folder / name / step) or {}
                digests[name][step] = step_record.get("digest")
                settings.setdefault(step, {key: value for key, value in
                                           step_record.get("settings", {}).items()
                                           if key != "test_session"})
        if not per_run:
            continue
        per_fold = {}
        for fold in dict.fromkeys(fold for fold, _ in per_run):
            values = [value for (run_fold, _), value in per_run.items() if run_fold == fold]
            per_fold[str(fold)] = values[0] if len(values) == 1 else {
                key: float(np.mean([value[key] for value in values])) for key in ("WA", "UA")}
        summary = {"folds": per_fold, "step": steps[-1]}
        for stat, function in (("mean", np.mean), ("std", np.std)):
            summary[stat] = {
                key: float(function([fold_values[key] for fold_values in per_fold.values()]))
                for key in ("WA", "UA")
            }
        summary.update(confusion=confusion.tolist(), classes=classes, settings=settings,
                       digests=digests)
        results["systems"][system] = summary
        to_pool[system] = (steps[-1], folders)
    tables = run_statistics(pooled_predictions(output_folder, to_pool), reference, resamples,
                            statistics_seed)
    for system, summary in results["systems"].items():
        extra = tables["systems"][system]
        for stat in ("mean", "std"):
            summary[stat]["macro_F1"] = extra["over_folds"][stat]["macro_F1"]
        names = {(fold, seed): name for fold, seed, name in to_pool[system][1]}
        extra["runs"] = [{**run, "folder": names[(run["fold"], run["seed"])]}
                         for run in extra["runs"]]
        summary.update(extra)
    results["comparisons"] = tables["comparisons"]
    results["statistics"] = tables["settings"]
    return results


def _folds_run(summary, folds):
    seeds = sorted({run["seed"] for run in summary["runs"]})
    text = f"{', '.join(summary['folds'])} of {', '.join(map(str, folds))}"
    return text if len(seeds) == 1 else f"{text} × seeds {', '.join(map(str, seeds))}"


def results_markdown(results, folds):
    """The results tables as markdown: the split (when named), systems, comparisons and
    intervals, per run, settings, figures."""
    lines = [f"Split: {results['split']}", ""] if results.get("split") else []
    lines += ["| system | WA (%) | UA (%) | macro-F1 (%) | folds |", "|---|---|---|---|---|"]
    if "reported" in results:
        reported = results["reported"]
        lines.append(f"| {reported['name']} | {100 * reported['WA']:.1f} "
                     f"| {100 * reported['UA']:.1f} | — | 5 (reported, not run here) |")
    for system, summary in results["systems"].items():
        mean, std = summary["mean"], summary["std"]
        lines.append(
            f"| {system} | {100 * mean['WA']:.1f} ± {100 * std['WA']:.1f} "
            f"| {100 * mean['UA']:.1f} ± {100 * std['UA']:.1f} "
            f"| {100 * mean['macro_F1']:.1f} ± {100 * std['macro_F1']:.1f} "
            f"| {_folds_run(summary, folds)} |"
        )
    lines += ["", "Mean ± standard deviation (population) over the folds run (a fold's value: "
              "the mean over its seeds).", ""]
    if results["systems"]:
        lines.append(statistics.statistics_markdown({
            "settings": results["statistics"], "comparisons": results["comparisons"],
            "systems": {name: summary for name, summary in results["systems"].items()},
        }).rstrip("\n"))
    lines += ["", "Per run:", "", "| system | fold | seed | WA (%) | UA (%) | macro-F1 (%) |",
              "|---|---|---|---|---|---|"]
    for system, summary in results["systems"].items():
        for run in summary["runs"]:
            lines.append(f"| {system} | {run['fold']} | {run['seed']} | {100 * run['WA']:.1f} "
                         f"| {100 * run['UA']:.1f} | {100 * run['macro_F1']:.1f} |")
    overrides = ", ".join(f"{key}: {value}" for key, value in results["overrides"].items())
    lines += ["", "Settings: the recipe's shipped hparams with "
              f"{overrides or 'no overrides'}. Every step's settings are in results.json "
              "(`systems.<system>.settings`) and in its folder's settings.json."]
    if results["stale"]:
        lines += ["", "Not counted (made with other settings than this run's): "
                  + ", ".join(results["stale"])]
    lines += ["", "Confusion matrices summed over the runs:", ""]
    lines += [f"![{system}](confusion_{system}.png)" for system in results["systems"]]
    lines += ["", "Learning curves of every training step (valid set; one line per run):", ""]
    lines += [f"![{system} curves](curves_{system}.png)" for system in results["systems"]]
    return "\n".join(lines) + "\n"


def learning_curves(output_folder, runs, steps, default_seed=None):
    """``{step folder: {run label: read_train_log(...)}}`` of a system's training steps; the
    label of a run is its fold, with `` seed S`` for another seed than the default."""
    curves = {}
    for step in steps:
        logs = {}
        for fold, seed in _runs(runs, default_seed):
            label = str(fold) if seed == default_seed else f"{fold} seed {seed}"
            logs[label] = Path(output_folder) / fold_folder(fold, seed, default_seed) / step / (
                "train_log.txt")
        found = {label: read_train_log(log) for label, log in logs.items() if log.exists()}
        if any(found.values()):
            curves[step] = found
    return curves


def write_results(output_folder, runs, systems, expected, reported=None, overrides=None, *,
                  default_seed=None, reference="baseline", resamples=statistics.RESAMPLES,
                  statistics_seed=statistics.SEED, split=None):
    """Write ``results.json``, ``results.md``, and per system the summed confusion matrix
    (``confusion_<system>.png``) and the learning curves (``curves_<system>.png``).

    The arguments are ``collect_results``'s, and ``split``, which names a published split the
    folds follow (``lobes.data.corpora.corpus_split_name``, e.g. ``EmoBox iemocap fold 1-5``):
    recorded as ``split`` and heading the tables. Returns the markdown.
    """
    output_folder = Path(output_folder)
    results = collect_results(output_folder, runs, systems, expected, reported, overrides,
                              default_seed=default_seed, reference=reference,
                              resamples=resamples, statistics_seed=statistics_seed)
    if split:
        results["split"] = split
    write_json_atomic(output_folder / "results.json", results)
    folds = list(dict.fromkeys(fold for fold, _ in _runs(runs, default_seed)))
    markdown = results_markdown(results, folds)
    with atomic_write(output_folder / "results.md") as handle:
        handle.write(markdown)
    for system, summary in results["systems"].items():
        n_seeds = len({run["seed"] for run in summary["runs"]})
        plot_confusion(summary["confusion"], summary["classes"],
                       output_folder / f"confusion_{system}.png",
                       title=f"{system}: folds {', '.join(summary['folds'])}"
                       + (f" × {n_seeds} seeds" if n_seeds > 1 else ""))
        plot_learning_curves(learning_curves(output_folder, runs, systems[system], default_seed),
                             output_folder / f"curves_{system}.png", title=system)
    return markdown
