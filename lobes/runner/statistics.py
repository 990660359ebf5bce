"""Statistics of pooled test predictions: metrics, intervals and paired comparisons of systems.

Pure functions on the test predictions of a study (every system, every (fold, seed) run, one row
per test utterance: utterance id, speaker, true and predicted label), used by the runner's
``results.md`` / ``results.json`` (``lobes.runner.results``) and by ``gmptl-compare``
(``lobes.runner.compare_cli``):

- per system, on the predictions of all its runs pooled: WA, UA, macro-F1 and per-class recall
  (scikit-learn's metrics), each with a 95 % percentile-bootstrap interval over **speakers**
  (resample the test speakers with replacement and take all their utterances: a speaker's
  utterances are not independent) and, beside it, the narrower interval over utterances;
  mean +- std over folds and, apart, over seeds;
- per system against a reference system: the difference in pooled UA on the same test
  utterances, its paired bootstrap interval over speakers, the p-value of a two-sided paired
  permutation test that swaps the two systems' predictions speaker by speaker (exact when the
  ``2 ** speakers`` swaps are at most the number of resamples), and the number of (fold, seed)
  runs it wins.

The bootstrap and permutation machinery is ``scipy.stats.bootstrap`` and
``scipy.stats.permutation_test``, seeded with numpy's ``Generator``: the same predictions give
bit-identical tables. Inside the resampling loops the metrics are computed from confusion
matrices (a resample of speakers is a sum of their confusion matrices), with the same
definitions as scikit-learn's (``classification_metrics``; the tests check they agree).
"""

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, recall_score

METRICS = ("WA", "UA", "macro_F1")
CONFIDENCE = 0.95
RESAMPLES = 10000  # our choice: percentile bounds stable to about 0.1 point of UA
SEED = 0  # our choice: any fixed seed makes the tables reproducible
_DRAWS_PER_BATCH = 2 ** 22  # resampled indices held at once (memory bound, not a result)


@dataclass(frozen=True)
class Predictions:
    """The test predictions of one system, rows sorted by (fold, seed, utterance id).

    Build it with ``Predictions.from_rows``. ``true`` and ``predicted`` are indices into
    ``classes``.
    """

    classes: tuple
    fold: np.ndarray
    seed: np.ndarray
    utterance: np.ndarray
    speaker: np.ndarray
    true: np.ndarray
    predicted: np.ndarray

    @classmethod
    def from_rows(cls, rows, classes):
        """From rows ``(fold, seed, utterance id, speaker, true label, predicted label)``.

        Example
        -------
        >>> p = Predictions.from_rows([(2, 7, "b", "s2", "sad", "neu"),
        ...                            (1, 7, "a", "s1", "neu", "neu")], ["neu", "sad"])
        >>> p.utterance.tolist(), p.true.tolist(), p.predicted.tolist()
        (['a', 'b'], [0, 1], [0, 0])
        """
        classes = tuple(classes)
        index = {name: position for position, name in enumerate(classes)}
        rows = sorted(rows, key=lambda row: (int(row[0]), int(row[1]), str(row[2])))
        keys = [(int(row[0]), int(row[1]), str(row[2])) for row in rows]
        if len(set(keys)) != len(keys):
            raise ValueError("an utterance appears twice in the same (fold, seed) run")
        unknown = sorted({label for row in rows for label in row[4:6]} - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")

        def column(position, dtype):
            return np.array([row[position] for row in rows], dtype=dtype)

        return cls(classes, column(0, np.int64), column(1, np.int64), column(2, str),
                   column(3, str), np.array([index[row[4]] for row in rows], dtype=np.int64),
                   np.array([index[row[5]] for row in rows], dtype=np.int64))

    def __len__(self):
        return len(self.true)

    def runs(self):
        """The (fold, seed) runs, sorted."""
        return sorted(set(zip(self.fold.tolist(), self.seed.tolist(), strict=True)))

    def select(self, mask):
        """The rows where ``mask`` is true."""
        return Predictions(self.classes, self.fold[mask], self.seed[mask], self.utterance[mask],
                           self.speaker[mask], self.true[mask], self.predicted[mask])

    def of_runs(self, runs):
        """The rows of the given (fold, seed) runs."""
        keys = {(int(fold), int(seed)) for fold, seed in runs}
        return self.select(np.array([key in keys for key in zip(
            self.fold.tolist(), self.seed.tolist(), strict=True)], dtype=bool))


def classification_metrics(true, predicted, n_classes):
    """WA, UA, macro-F1 and per-class recall with scikit-learn's definitions.

    UA is the mean recall over the classes present in ``true`` (``recall_score``, macro);
    macro-F1 averages the F1 of the classes present in ``true`` or ``predicted`` (``f1_score``,
    macro, a class never right scores 0); recall is ``nan`` for a class absent from ``true``.

    Example
    -------
    >>> m = classification_metrics([0, 0, 0, 1], [0, 0, 1, 1], 2)
    >>> m["WA"], round(m["UA"], 4), round(m["macro_F1"], 4), [round(r, 4) for r in m["recall"]]
    (0.75, 0.8333, 0.7333, [0.6667, 1.0])
    """
    true, predicted = np.asarray(true), np.asarray(predicted)
    present = np.unique(true)
    recall = recall_score(true, predicted, labels=np.arange(n_classes), average=None,
                          zero_division=np.nan)
    return {
        "WA": float(accuracy_score(true, predicted)),
        "UA": float(recall_score(true, predicted, labels=present, average="macro")),
        "macro_F1": float(f1_score(true, predicted, average="macro", zero_division=0)),
        "recall": [float(value) for value in recall],
    }


def confusion_metrics(confusion):
    """WA, UA and macro-F1 of confusion matrices ``(..., C, C)`` (rows true), vectorised.

    The definitions of ``classification_metrics``, for the resampling loops.

    Example
    -------
    >>> [round(float(v), 4) for v in confusion_metrics(np.array([[2, 1], [0, 1]]))]
    [0.75, 0.8333, 0.7333]
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    correct = np.diagonal(confusion, axis1=-2, axis2=-1)
    support, predicted = confusion.sum(axis=-1), confusion.sum(axis=-2)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, correct / support, 0.0)
        labelled = present | (predicted > 0)
        f1 = np.where(labelled, 2 * correct / (support + predicted), 0.0)
        wa = correct.sum(axis=-1) / support.sum(axis=-1)
        ua = recall.sum(axis=-1) / present.sum(axis=-1)
        macro_f1 = f1.sum(axis=-1) / labelled.sum(axis=-1)
    return np.stack([wa, ua, macro_f1])


def _confusions(groups, predictions):
    """One confusion matrix per group (``groups``: a group index per row), ``(G, C, C)``."""
    n_classes = len(predictions.classes)
    cells = (groups * n_classes + predictions.true) * n_classes + predictions.predicted
    counts = np.bincount(cells, minlength=(groups.max() + 1) * n_classes * n_classes)
    return counts.reshape(-1, n_classes, n_classes)


def _speaker_groups(predictions):
    speakers, groups = np.unique(predictions.speaker, return_inverse=True)
    return speakers, groups


def _summed(unit_confusions, indices):
    """``unit_confusions[indices].sum(axis=-3)`` for indices ``(..., k)`` into ``(units, ...)``
    confusions, without a copy of a confusion matrix per index: how often each unit is drawn,
    times the units' confusions."""
    n_units = len(unit_confusions)
    rows = indices.reshape(-1, indices.shape[-1])
    offsets = np.arange(len(rows))[:, None] * n_units
    counts = np.bincount((rows + offsets).ravel(), minlength=len(rows) * n_units)
    # float64 for BLAS; the counts are integers, so the sums are exact whatever the order of
    # summation (and the tables bit-identical on any machine)
    flat = unit_confusions.reshape(n_units, -1).astype(np.float64)
    summed = counts.reshape(len(rows), n_units).astype(np.float64) @ flat
    return summed.reshape(*indices.shape[:-1], *unit_confusions.shape[1:])


def _bootstrap(unit_confusions, metric_rows, resamples, seed, confidence):
    """Percentile bootstrap of metrics of sums of ``unit_confusions`` ``(units, ...)``.

    ``metric_rows(summed confusions) -> (k, ...)`` values. Returns ``[(low, high)] * k``, or
    ``None`` for fewer than two units.
    """
    n_units = len(unit_confusions)
    if n_units < 2:
        return None

    def statistic(indices, axis=-1):
        return metric_rows(_summed(unit_confusions, indices))

    result = stats.bootstrap(
        (np.arange(n_units),), statistic, vectorized=True, n_resamples=resamples,
        batch=max(1, _DRAWS_PER_BATCH // n_units), method="percentile",
        confidence_level=confidence, rng=np.random.default_rng(seed),
    )
    low, high = np.atleast_1d(result.confidence_interval.low), np.atleast_1d(
        result.confidence_interval.high)
    return [(float(lo), float(hi)) for lo, hi in zip(low, high, strict=True)]


def metric_intervals(predictions, unit="speaker", resamples=RESAMPLES, seed=SEED,
                     confidence=CONFIDENCE):
    """Percentile-bootstrap intervals of pooled WA, UA and macro-F1.

    Arguments
    ---------
    predictions : Predictions
    unit : str
        ``"speaker"``: resample speakers with replacement, each with all its utterances (of all
        runs); ``"utterance"``: resample the rows independently.
    resamples, seed, confidence
        Bootstrap resamples, the seed of its ``numpy.random.Generator``, the coverage.

    Returns
    -------
    dict or None
        ``{"WA": [low, high], "UA": ..., "macro_F1": ...}`` (fractions); ``None`` with fewer
        than two units.

    Example
    -------
    >>> rows = [(1, 1, f"{s}{i}", s, "ab"[i % 2], "ab"[(i + (s == "s3")) % 2])
    ...         for s in ("s1", "s2", "s3") for i in range(4)]
    >>> intervals = metric_intervals(Predictions.from_rows(rows, "ab"), resamples=200)
    >>> intervals["WA"]
    [0.0, 1.0]
    """
    if unit == "speaker":
        _, groups = _speaker_groups(predictions)
    elif unit == "utterance":
        groups = np.arange(len(predictions))
    else:
        raise ValueError(f"unit is 'speaker' or 'utterance', not {unit!r}")
    bounds = _bootstrap(_confusions(groups, predictions), confusion_metrics, resamples, seed,
                        confidence)
    if bounds is None:
        return None
    return {metric: list(bound) for metric, bound in zip(METRICS, bounds, strict=True)}


def run_metrics(predictions):
    """``[{"fold", "seed", "WA", "UA", "macro_F1"}]``, one per (fold, seed) run."""
    values = []
    for fold, seed in predictions.runs():
        run = predictions.select((predictions.fold == fold) & (predictions.seed == seed))
        metrics = classification_metrics(run.true, run.predicted, len(run.classes))
        values.append({"fold": fold, "seed": seed,
                       **{metric: metrics[metric] for metric in METRICS}})
    return values


def spread(runs, over):
    """Mean and population std of the run metrics ``over`` ``"fold"`` or ``"seed"``.

    Each fold's value is the mean over its seeds (``over="fold"``: the spread of session
    difficulty); each seed's the mean over its folds (``over="seed"``: the spread of training
    luck in the cross-validated figure).

    Example
    -------
    >>> runs = [{"fold": f, "seed": s, "WA": 0.5 + 0.1 * f + 0.01 * s, "UA": 0.5, "macro_F1": 0.5}
    ...         for f in (1, 2) for s in (1, 2)]
    >>> s = spread(runs, "seed")
    >>> s["n"], round(s["mean"]["WA"], 4), round(s["std"]["WA"], 4)
    (2, 0.665, 0.005)
    """
    other = "seed" if over == "fold" else "fold"
    keys = sorted({run[over] for run in runs})
    values = {}
    for key in keys:
        members = [run for run in runs if run[over] == key]
        values[str(key)] = {metric: float(np.mean([run[metric] for run in members]))
                            for metric in METRICS}
        values[str(key)][f"n_{other}s"] = len(members)
    columns = {metric: [value[metric] for value in values.values()] for metric in METRICS}
    return {
        "n": len(keys),
        "values": values,
        "mean": {metric: float(np.mean(column)) for metric, column in columns.items()},
        "std": {metric: float(np.std(column)) for metric, column in columns.items()},
    }


def system_summary(predictions, resamples=RESAMPLES, seed=SEED, confidence=CONFIDENCE):
    """Everything the tables show of one system.

    Returns
    -------
    dict
        ``n_utterances`` (rows: utterances x runs), ``n_speakers``, ``runs`` (``run_metrics``),
        ``pooled`` (``WA``, ``UA``, ``macro_F1`` of all rows; ``recall`` by class name,
        ``None`` for a class absent from the test labels), ``ci_speaker`` and ``ci_utterance``
        (``metric_intervals``), ``over_folds`` and ``over_seeds`` (``spread``).
    """
    pooled = classification_metrics(predictions.true, predictions.predicted,
                                    len(predictions.classes))
    runs = run_metrics(predictions)
    return {
        "n_utterances": len(predictions),
        "n_speakers": len(np.unique(predictions.speaker)),
        "runs": runs,
        "pooled": {**{metric: pooled[metric] for metric in METRICS},
                   "recall": {name: None if np.isnan(value) else value
                              for name, value in zip(predictions.classes, pooled["recall"],
                                                     strict=True)}},
        "ci_speaker": metric_intervals(predictions, "speaker", resamples, seed, confidence),
        "ci_utterance": metric_intervals(predictions, "utterance", resamples, seed, confidence),
        "over_folds": spread(runs, "fold"),
        "over_seeds": spread(runs, "seed"),
    }


def _check_paired(system, reference):
    """Stop unless both hold the same utterances with the same labels and speakers."""
    keys = [list(zip(p.fold.tolist(), p.seed.tolist(), p.utterance.tolist(), strict=True))
            for p in (system, reference)]
    if keys[0] != keys[1]:
        only = sorted(set(keys[0]) ^ set(keys[1]))[:3]
        raise ValueError(
            "the two systems were not tested on the same (fold, seed, utterance) set "
            f"({len(keys[0])} and {len(keys[1])} rows; e.g. {only} in only one): a paired "
            "comparison needs the same test utterances"
        )
    if system.classes != reference.classes:
        raise ValueError(f"the two systems have other classes: {list(system.classes)} and "
                         f"{list(reference.classes)}")
    for field in ("true", "speaker"):
        if not np.array_equal(getattr(system, field), getattr(reference, field)):
            raise ValueError(f"the two systems' predictions differ in their {field} labels of "
                             "the same utterances: they were tested on other manifests")


def paired_comparison(system, reference, resamples=RESAMPLES, seed=SEED, confidence=CONFIDENCE):
    """UA of ``system`` minus UA of ``reference`` on the same test utterances.

    Arguments
    ---------
    system, reference : Predictions
        Of the same (fold, seed, utterance id) rows, with the same labels and speakers (else
        ``ValueError``).
    resamples, seed, confidence
        As in ``metric_intervals``; ``resamples`` also bounds the permutations.

    Returns
    -------
    dict
        ``UA_difference`` (pooled UA difference, a fraction), ``ci_speaker`` (``[low, high]``,
        paired percentile bootstrap over speakers; ``None`` with one speaker), ``p_value``
        (two-sided paired permutation test: under the null hypothesis the two systems'
        predictions of a speaker are exchangeable, so each speaker's predictions are swapped
        between the systems or not; exact over all ``2 ** speakers`` swaps when that is at most
        ``resamples``, else ``resamples`` random swaps), ``permutations`` (how many; ``exact``),
        ``wins``, ``ties``, ``runs`` (runs of higher / equal UA, runs compared).

    Example
    -------
    >>> rows = [(1, 1, f"{s}{i}", s, "ab"[i % 2], "ab"[i % 2]) for s in "pqr" for i in range(4)]
    >>> same = Predictions.from_rows(rows, "ab")
    >>> c = paired_comparison(same, same, resamples=100)
    >>> c["UA_difference"], c["ci_speaker"], c["p_value"], c["wins"], c["runs"]
    (0.0, [0.0, 0.0], 1.0, 0, 1)
    """
    _check_paired(system, reference)
    _, groups = _speaker_groups(system)
    stacked = np.concatenate([_confusions(groups, system), _confusions(groups, reference)])
    n_speakers = len(stacked) // 2

    def ua_difference(confusions_a, confusions_b):
        return confusion_metrics(confusions_a)[1] - confusion_metrics(confusions_b)[1]

    def swapped(indices_a, indices_b, axis=-1):
        return ua_difference(_summed(stacked, indices_a), _summed(stacked, indices_b))

    observed = float(ua_difference(stacked[:n_speakers].sum(axis=0),
                                   stacked[n_speakers:].sum(axis=0)))
    pairs = np.stack([stacked[:n_speakers], stacked[n_speakers:]], axis=1)  # (speakers, 2, C, C)
    bounds = _bootstrap(pairs, lambda summed: ua_difference(summed[..., 0, :, :],
                                                            summed[..., 1, :, :])[None],
                        resamples, seed, confidence)
    speakers = np.arange(n_speakers)
    test = stats.permutation_test(
        (speakers, speakers + n_speakers), swapped, permutation_type="samples", vectorized=True,
        n_resamples=resamples, batch=max(1, _DRAWS_PER_BATCH // len(stacked)),
        alternative="two-sided", rng=np.random.default_rng(seed),
    )
    exact = 2 ** n_speakers <= resamples
    runs_a, runs_b = run_metrics(system), run_metrics(reference)
    wins = sum(a["UA"] > b["UA"] for a, b in zip(runs_a, runs_b, strict=True))
    ties = sum(a["UA"] == b["UA"] for a, b in zip(runs_a, runs_b, strict=True))
    return {
        "UA_difference": observed,
        "ci_speaker": list(bounds[0]) if bounds else None,
        "p_value": float(test.pvalue),
        "permutations": "exact" if exact else resamples,
        "n_permutations": 2 ** n_speakers if exact else resamples,
        "wins": int(wins),
        "ties": int(ties),
        "runs": len(runs_a),
        "n_speakers": n_speakers,
    }


def study_statistics(systems, reference="baseline", resamples=RESAMPLES, seed=SEED,
                     confidence=CONFIDENCE):
    """The statistics of every system and the comparison of every other one with ``reference``.

    Arguments
    ---------
    systems : dict
        ``{name: Predictions}``.
    reference : str
        The system the others are compared with; no comparisons when it is not in ``systems``.

    Returns
    -------
    dict
        ``{"settings": {...}, "systems": {name: system_summary}, "comparisons": {name:
        paired_comparison + "reference", "common_runs", "all_runs"}}``. A system is compared on
        the (fold, seed) runs both it and the reference have (``common_runs`` of ``all_runs``,
        the union); one that cannot be (no run in common, other utterances, other classes) gets
        ``{"reference", "error"}``.
    """
    settings = {
        "confidence": confidence, "resamples": resamples, "seed": seed,
        "interval": "percentile bootstrap (scipy.stats.bootstrap)",
        "test": "two-sided paired permutation test over speakers (scipy.stats.permutation_test)",
        "reference": reference,
    }
    summaries = {name: system_summary(predictions, resamples, seed, confidence)
                 for name, predictions in systems.items()}
    comparisons = {}
    if reference in systems:
        for name, predictions in systems.items():
            if name == reference:
                continue
            comparisons[name] = compare_on_common_runs(predictions, systems[reference],
                                                       reference, resamples, seed, confidence)
    return {"settings": settings, "systems": summaries, "comparisons": comparisons}


def compare_on_common_runs(system, reference, reference_name, resamples=RESAMPLES, seed=SEED,
                           confidence=CONFIDENCE):
    """``paired_comparison`` on the (fold, seed) runs both have, or the reason it cannot be."""
    mine, theirs = system.runs(), reference.runs()
    common = sorted(set(mine) & set(theirs))
    entry = {"reference": reference_name, "common_runs": len(common),
             "all_runs": len(set(mine) | set(theirs))}
    if not common:
        return {**entry, "error": "no (fold, seed) run in common"}
    try:
        entry.update(paired_comparison(system.of_runs(common), reference.of_runs(common),
                                       resamples, seed, confidence))
    except ValueError as error:
        entry["error"] = str(error)
    return entry


def _points(value, signed=False):
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _interval(bounds, signed=False):
    if bounds is None:
        return "—"
    return f"[{_points(bounds[0], signed)}, {_points(bounds[1], signed)}]"


def _p_value(p_value):
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def comparison_line(name, comparison):
    """One line of a comparison, in points of UA.

    Example
    -------
    >>> comparison_line("gmp_tl", {"reference": "baseline", "UA_difference": 0.041,
    ...     "ci_speaker": [0.012, 0.07], "p_value": 0.0039, "wins": 14, "ties": 0, "runs": 15,
    ...     "common_runs": 15, "all_runs": 15})
    'gmp_tl vs baseline: UA +4.1 [+1.2, +7.0], p = 0.004, wins 14/15'
    """
    head = f"{name} vs {comparison['reference']}"
    if "error" in comparison:
        return f"{head}: not compared: {comparison['error']}"
    line = (f"{head}: UA {_points(comparison['UA_difference'], True)} "
            f"{_interval(comparison['ci_speaker'], True)}, {_p_value(comparison['p_value'])}, "
            f"wins {comparison['wins']}/{comparison['runs']}")
    notes = [f"{comparison['ties']} tied"] if comparison["ties"] else []
    if comparison["common_runs"] < comparison["all_runs"]:
        notes.append(f"on the {comparison['common_runs']} of {comparison['all_runs']} runs "
                     "both have")
    return line + (f" ({'; '.join(notes)})" if notes else "")


def _mean_std(spread_entry, metric):
    if spread_entry["n"] < 2:
        return f"{_points(spread_entry['mean'][metric])} (1)"
    return (f"{_points(spread_entry['mean'][metric])} ± {_points(spread_entry['std'][metric])} "
            f"({spread_entry['n']})")


def _comparison_lines(statistics):
    settings, comparisons = statistics["settings"], statistics["comparisons"]
    if not comparisons:
        if settings["reference"] in statistics["systems"]:
            return []
        return [f"No paired comparisons: the reference system {settings['reference']} is not "
                "among the results.", ""]
    lines = [f"Paired comparisons with {settings['reference']}: the UA difference in points on "
             f"the same test utterances, its {round(100 * settings['confidence'])} % paired "
             "bootstrap interval over speakers, the two-sided p of a paired permutation test "
             "that swaps the two systems' predictions speaker by speaker, and the (fold, seed) "
             "runs of higher UA:", ""]
    lines += [f"- {comparison_line(name, comparison)}" for name, comparison in comparisons.items()]
    counts = {comparison["n_permutations"] for comparison in comparisons.values()
              if comparison.get("permutations") == "exact"}
    randomised = any(comparison.get("permutations") not in (None, "exact")
                     for comparison in comparisons.values())
    if counts:
        smallest = ", ".join(f"{2 / count:.3g}" for count in sorted(counts))
        lines += ["", "p exact: all " + " / ".join(map(str, sorted(counts))) + " ways of "
                  f"swapping the speakers' predictions evaluated (the smallest p possible: "
                  f"{smallest})"
                  + (f"; elsewhere {settings['resamples']} random swaps." if randomised else ".")]
    elif randomised:
        lines += ["", f"p from {settings['resamples']} random swaps of the speakers' "
                  "predictions."]
    return lines + [""]


def statistics_markdown(statistics):
    """The tables of ``study_statistics`` as markdown: the comparisons, the pooled metrics with
    their intervals and spreads, the recall per class.

    Example
    -------
    >>> rows = [(1, 1, f"{s}{i}", s, "ab"[i % 2], "ab"[i % 3 % 2]) for s in "pqr" for i in range(6)]
    >>> study = study_statistics({"one": Predictions.from_rows(rows, "ab")}, resamples=100)
    >>> print(statistics_markdown(study).splitlines()[4])
    | one | WA | 50.0 | [50.0, 50.0] | [22.2, 72.2] | 50.0 (1) | 50.0 (1) |
    """
    settings = statistics["settings"]
    level = round(100 * settings["confidence"])
    lines = _comparison_lines(statistics)
    lines += [f"| system | metric | pooled (%) | {level} % CI, speakers | {level} % CI, utterances "
              "| mean ± std over folds (n) | mean ± std over seeds (n) |",
              "|---|---|---|---|---|---|---|"]
    names = {"WA": "WA", "UA": "UA", "macro_F1": "macro-F1"}
    for system, summary in statistics["systems"].items():
        for metric in METRICS:
            by_speaker, by_utterance = summary["ci_speaker"], summary["ci_utterance"]
            lines.append(
                f"| {system} | {names[metric]} | {_points(summary['pooled'][metric])} "
                f"| {_interval(by_speaker and by_speaker[metric])} "
                f"| {_interval(by_utterance and by_utterance[metric])} "
                f"| {_mean_std(summary['over_folds'], metric)} "
                f"| {_mean_std(summary['over_seeds'], metric)} |")
    lines += ["", (
        f"Pooled: all test predictions of a system's (fold, seed) runs together. {level} % "
        f"intervals: percentile bootstrap, {settings['resamples']} resamples, seed "
        f"{settings['seed']}; \"speakers\" resamples the test speakers with replacement, each "
        "with all its utterances (the interval to read: a speaker's utterances are not "
        "independent); \"utterances\" resamples utterances one by one, as if they were "
        "independent (shown for comparison only). Over folds: each fold's mean over its "
        "seeds; over seeds: each seed's mean over its folds; population std; n in brackets.")]
    classes = list(dict.fromkeys(name for summary in statistics["systems"].values()
                                 for name in summary["pooled"]["recall"]))
    lines += ["", "Recall per class, pooled (%):", "",
              "| system | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for system, summary in statistics["systems"].items():
        recall = summary["pooled"]["recall"]
        cells = ["—" if recall.get(name) is None else _points(recall[name]) for name in classes]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
