"""The results of a cross-validation run: ``results.json``, ``results.md`` and their figures.

Only runs whose ``settings.json`` digest is the one the runner expects are counted, so a result
made with other settings is never shown as new (it is listed as stale instead). Every system
records the settings its steps ran with.
"""

import json
from pathlib import Path

import numpy as np

from lobes.runner.settings import read_record
from lobes.training.metrics import plot_confusion, plot_learning_curves, read_train_log
from lobes.utils.io import atomic_write, write_json_atomic


def collect_results(output_folder, folds, systems, expected, reported=None, overrides=None):
    """The results dictionary of the finished, current runs.

    Arguments
    ---------
    output_folder : str or Path
        The runner's output folder (``fold<K>/<step folder>/``).
    folds : list of int
    systems : dict
        ``{system: [step folder, ...]}``, the last step giving the metrics.
    expected : dict
        ``{(fold, step folder): digest}`` the runner expects.
    reported : dict, optional
        A reported result to show beside (``name``, ``WA``, ``UA``).
    overrides : dict, optional
        The overrides of the shipped hparams the run was given.

    Returns
    -------
    dict
        ``{"systems": {name: {"folds": {fold: {"WA", "UA"}}, "mean", "std", "confusion",
        "classes", "settings": {step: settings}, "digests": {fold: {step: digest}}}},
        "stale": [...], "overrides": {...}, "reported": {...}}``; values as fractions, the
        std over folds is the population std.
    """
    output_folder = Path(output_folder)
    results = {"systems": {}, "stale": [], "overrides": overrides or {}}
    if reported:
        results["reported"] = reported
    for system, steps in systems.items():
        per_fold, confusion, classes, settings, digests = {}, None, None, {}, {}
        for fold in folds:
            folder = output_folder / f"fold{fold}" / steps[-1]
            if not (folder / "metrics.json").exists():
                continue
            record = read_record(folder)
            if record is None or record["digest"] != expected.get((fold, steps[-1])):
                results["stale"].append(f"fold{fold}/{steps[-1]}")
                continue
            metrics = json.loads((folder / "metrics.json").read_text())
            per_fold[str(fold)] = {"WA": metrics["WA"], "UA": metrics["UA"]}
            fold_confusion = np.asarray(metrics["confusion"])
            confusion = fold_confusion if confusion is None else confusion + fold_confusion
            classes = metrics["classes"]
            digests[str(fold)] = {}
            for step in steps:
                step_record = read_record(output_folder / f"fold{fold}" / step) or {}
                digests[str(fold)][step] = step_record.get("digest")
                settings.setdefault(step, {key: value for key, value in
                                           step_record.get("settings", {}).items()
                                           if key != "test_session"})
        if not per_fold:
            continue
        summary = {"folds": per_fold}
        for stat, function in (("mean", np.mean), ("std", np.std)):
            summary[stat] = {
                key: float(function([fold_values[key] for fold_values in per_fold.values()]))
                for key in ("WA", "UA")
            }
        summary.update(confusion=confusion.tolist(), classes=classes, settings=settings,
                       digests=digests)
        results["systems"][system] = summary
    return results


def results_markdown(results, folds):
    """The results tables as markdown: the split (when named), systems, per fold, settings,
    figures."""
    lines = [f"Split: {results['split']}", ""] if results.get("split") else []
    lines += ["| system | WA (%) | UA (%) | folds |", "|---|---|---|---|"]
    if "reported" in results:
        reported = results["reported"]
        lines.append(f"| {reported['name']} | {100 * reported['WA']:.1f} "
                     f"| {100 * reported['UA']:.1f} | 5 (reported, not run here) |")
    for system, summary in results["systems"].items():
        mean, std = summary["mean"], summary["std"]
        lines.append(
            f"| {system} | {100 * mean['WA']:.1f} ± {100 * std['WA']:.1f} "
            f"| {100 * mean['UA']:.1f} ± {100 * std['UA']:.1f} "
            f"| {', '.join(summary['folds'])} of {', '.join(map(str, folds))} |"
        )
    lines += ["", "Mean ± standard deviation (population) over the folds run. Per fold:", ""]
    lines += ["| system | fold | WA (%) | UA (%) |", "|---|---|---|---|"]
    for system, summary in results["systems"].items():
        for fold, values in summary["folds"].items():
            lines.append(
                f"| {system} | {fold} | {100 * values['WA']:.1f} | {100 * values['UA']:.1f} |"
            )
    overrides = ", ".join(f"{key}: {value}" for key, value in results["overrides"].items())
    lines += ["", "Settings: the recipe's shipped hparams with "
              f"{overrides or 'no overrides'}. Every step's settings are in results.json "
              "(`systems.<system>.settings`) and in its folder's settings.json."]
    if results["stale"]:
        lines += ["", "Not counted (made with other settings than this run's): "
                  + ", ".join(results["stale"])]
    lines += ["", "Confusion matrices summed over the folds:", ""]
    lines += [f"![{system}](confusion_{system}.png)" for system in results["systems"]]
    lines += ["", "Learning curves of every training step (valid set; one line per fold):", ""]
    lines += [f"![{system} curves](curves_{system}.png)" for system in results["systems"]]
    return "\n".join(lines) + "\n"


def learning_curves(output_folder, folds, steps):
    """``{step folder: {fold: read_train_log(...)}}`` of a system's training steps."""
    runs = {}
    for step in steps:
        logs = {fold: Path(output_folder) / f"fold{fold}" / step / "train_log.txt"
                for fold in folds}
        folds_run = {fold: read_train_log(log) for fold, log in logs.items() if log.exists()}
        if any(folds_run.values()):
            runs[step] = folds_run
    return runs


def write_results(output_folder, folds, systems, expected, reported=None, overrides=None,
                  split=None):
    """Write ``results.json``, ``results.md``, and per system the summed confusion matrix
    (``confusion_<system>.png``) and the learning curves (``curves_<system>.png``).

    ``split`` names a published split the folds follow (``lobes.data.corpora.corpus_split_name``,
    e.g. ``EmoBox iemocap fold 1-5``): recorded as ``split`` and heading the tables.
    Returns the markdown.
    """
    output_folder = Path(output_folder)
    results = collect_results(output_folder, folds, systems, expected, reported, overrides)
    if split:
        results["split"] = split
    write_json_atomic(output_folder / "results.json", results)
    markdown = results_markdown(results, folds)
    with atomic_write(output_folder / "results.md") as handle:
        handle.write(markdown)
    for system, summary in results["systems"].items():
        plot_confusion(summary["confusion"], summary["classes"],
                       output_folder / f"confusion_{system}.png",
                       title=f"{system}: folds {', '.join(summary['folds'])}")
        plot_learning_curves(learning_curves(output_folder, folds, systems[system]),
                             output_folder / f"curves_{system}.png", title=system)
    return markdown
