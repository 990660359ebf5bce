"""``gmptl-compare``: the statistics tables of finished cross-validation output folders.

Usage::

    gmptl-compare OUT_A [OUT_B ...] [--reference SYSTEM] [--resamples N] [--seed N]
                  [--json FILE]

Recomputes, from the ``predictions.csv`` of every run a folder's ``results.json`` counts and the
speakers of the fold's test manifest, the tables of ``results.md`` (``lobes.runner.statistics``):
per system the pooled WA, UA and macro-F1 with their 95 % intervals over speakers and over
utterances, the spreads over folds and over seeds, the recall per class, and every system
against the reference (paired bootstrap interval, permutation p-value, runs won). With several
folders the systems are named ``<folder>:<system>`` as the folders were given, so that two
studies (two encoders, two settings) are compared with the same statistics; a paired comparison
needs the same (fold, seed) runs and test utterances, and says so where they differ.
"""

import argparse
import json
import sys
from pathlib import Path

from lobes.runner import statistics
from lobes.runner.results import ResultsError, pooled_predictions, run_statistics
from lobes.runner.settings import read_record
from lobes.utils.io import write_json_atomic


def finished_runs(output_folder):
    """``{system: (step folder, [(fold, seed, fold folder)])}`` of a folder's ``results.json``.

    Stops with a message naming the folder when it has no results, results of an older version
    without the runs listed, or a run folder changed since the results were written.
    """
    output_folder = Path(output_folder)
    path = output_folder / "results.json"
    if not path.exists():
        raise ResultsError(f"{output_folder}: no results.json; gmptl-compare reads the output "
                           "folders of finished run_cv.py runs")
    results = json.loads(path.read_text())
    if not results.get("systems"):
        raise ResultsError(f"{path}: no finished system; let run_cv.py finish a fold first")
    runs = {}
    for system, summary in results["systems"].items():
        if "runs" not in summary or "step" not in summary:
            raise ResultsError(f"{path}: written by an older version that lists no runs; run "
                               "the same run_cv.py command again (finished steps are skipped) "
                               "to rewrite it")
        step = summary["step"]
        for run in summary["runs"]:
            record = read_record(output_folder / run["folder"] / step)
            if record is None or record["digest"] != summary["digests"][run["folder"]][step]:
                raise ResultsError(
                    f"{output_folder / run['folder'] / step}: not the run results.json counts "
                    "(other settings, or removed, since); run run_cv.py again to rewrite it")
        runs[system] = (step, [(run["fold"], run["seed"], run["folder"])
                               for run in summary["runs"]])
    return runs


def folder_systems(folders):
    """``{name: Predictions}`` of the folders' systems: ``system``, or ``<folder>:<system>``
    with several folders."""
    labels = [str(folder).rstrip("/") or "/" for folder in folders]
    if len(set(labels)) < len(labels):
        raise ResultsError(f"a folder is given twice: {' '.join(labels)}")
    systems = {}
    for folder, label in zip(folders, labels, strict=True):
        pooled = pooled_predictions(folder, finished_runs(folder))
        for system, predictions in pooled.items():
            systems[system if len(folders) == 1 else f"{label}:{system}"] = predictions
    return systems


def resolve_reference(reference, names):
    """The system name ``reference`` means: itself, or the first folder's system of that name.

    Example
    -------
    >>> resolve_reference("baseline", ["a:gmp_tl", "a:baseline", "b:baseline"])
    'a:baseline'
    """
    if reference in names:
        return reference
    matches = [name for name in names if name.rsplit(":", 1)[-1] == reference]
    if not matches:
        raise ResultsError(f"--reference {reference}: no such system; the systems are "
                           f"{', '.join(names)}")
    return matches[0]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="gmptl-compare",
        description="The statistics tables (intervals over speakers, paired comparisons) of "
                    "finished run_cv.py output folders, recomputed from their predictions.")
    parser.add_argument("folders", nargs="+", type=Path,
                        help="output folders of run_cv.py (each with its results.json)")
    parser.add_argument("--reference", default="baseline",
                        help="the system the others are compared with (default: baseline; "
                             "with several folders, the first folder's unless named FOLDER:NAME)")
    parser.add_argument("--resamples", type=int, default=statistics.RESAMPLES,
                        help=f"bootstrap resamples and random permutations "
                             f"(default {statistics.RESAMPLES})")
    parser.add_argument("--seed", type=int, default=statistics.SEED,
                        help=f"seed of the resampling (default {statistics.SEED})")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error("--resamples must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        systems = folder_systems(args.folders)
        reference = resolve_reference(args.reference, list(systems))
        tables = run_statistics(systems, reference, args.resamples, args.seed)
    except ResultsError as error:
        raise SystemExit(f"gmptl-compare: {error}") from None
    print(f"Test predictions of {', '.join(map(str, args.folders))}:\n")
    print(statistics.statistics_markdown(tables), end="")
    if args.json:
        write_json_atomic(args.json, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
