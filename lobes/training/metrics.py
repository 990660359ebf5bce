"""Emotion metrics: WA (overall accuracy), UA (mean per-class recall), confusion matrix.

The one metrics function of the project (``emotion_metrics``) and the one writer of a run's
test report (``EmotionReport``): ``predictions.csv``, the confusion matrix as text and PNG, and
``metrics.json``. And the learning curves of a training run, read from its SpeechBrain train
log (``read_train_log``, ``plot_learning_curves``).
"""

import csv
import json
import re
from pathlib import Path

import numpy as np
import torch

from lobes.utils.io import atomic_write, save_figure, write_json_atomic


def emotion_metrics(true_ids, predicted_ids, n_classes):
    """Weighted accuracy, unweighted accuracy, per-class recall and confusion matrix.

    Kept rather than SpeechBrain's ``ClassificationStats``, whose confusion matrix has only the
    labels seen (sorted, absent classes dropped) and whose per-class recall is float32.

    Arguments
    ---------
    true_ids, predicted_ids : sequence of int
        Class indices.
    n_classes : int
        Number of classes (rows/columns of the confusion matrix).

    Returns
    -------
    dict
        ``WA``, ``UA`` (mean recall over classes present in ``true_ids``), ``recall`` (list,
        ``nan`` for absent classes) and ``confusion`` (rows = true, columns = predicted).

    Example
    -------
    >>> m = emotion_metrics([0, 0, 0, 1], [0, 0, 1, 1], 2)
    >>> m["WA"], round(m["UA"], 4), m["confusion"]
    (0.75, 0.8333, [[2, 1], [0, 1]])
    """
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (np.asarray(true_ids, int), np.asarray(predicted_ids, int)), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, np.diag(confusion) / support, np.nan)
    total = confusion.sum()
    return {
        "WA": float(np.trace(confusion) / total) if total else float("nan"),
        "UA": float(np.nanmean(recall)) if (support > 0).any() else float("nan"),
        "recall": [float(r) for r in recall],
        "confusion": confusion.tolist(),
    }


def format_confusion(confusion, classes):
    """The confusion matrix as a text table (rows = true, columns = predicted).

    Example
    -------
    >>> print(format_confusion([[2, 1], [0, 1]], ["neu", "sad"]))
    true\\pred    neu   sad
    neu            2     1
    sad            0     1
    """
    width = max(6, *(len(c) + 2 for c in classes))
    lines = ["true\\pred " + "".join(f"{c:>{width}}" for c in classes)]
    for name, row in zip(classes, confusion, strict=True):
        lines.append(f"{name:<10}" + "".join(f"{int(v):>{width}}" for v in row))
    return "\n".join(lines)


def plot_confusion(confusion, classes, path, title=""):
    """Save the confusion matrix, with row-normalised shading and counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.2 * len(classes) + 1.5))
    ax.imshow(confusion / rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            share = confusion[i, j] / rows[i, 0]
            ax.text(j, i, f"{confusion[i, j]}\n{share:.0%}", ha="center", va="center",
                    color="white" if share > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def read_train_log(path):
    """The per-epoch statistics of a SpeechBrain ``train_log.txt``.

    A resumed run logs an epoch again: the last line of each epoch wins.

    Returns
    -------
    dict
        ``{epoch: {"train loss": x, "valid loss": x, "valid UA": x, ...}}``, epochs in order.

    Example
    -------
    >>> import tempfile, pathlib
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "train_log.txt"
    >>> _ = log.write_text(
    ...     "epoch: 1, lr: 1.00e-03 - train loss: 6.95 - valid loss: 5.62, valid UA: 6.25e-01\\n"
    ...     "epoch: 2, lr: 1.00e-03 - train loss: 5.37 - valid loss: 4.05, valid UA: 7.00e-01\\n"
    ...     "Epoch loaded: 2 - test loss: 4.10, test UA: 6.50e-01\\n")
    >>> read_train_log(log)[2]
    {'train loss': 5.37, 'valid loss': 4.05, 'valid UA': 0.7}
    """
    epochs = {}
    for line in Path(path).read_text().splitlines():
        match = re.match(r"epoch: (\d+),", line)
        if match:
            epochs[int(match.group(1))] = {
                f"{stage} {name}": float(value)
                for stage, name, value in re.findall(r"(train|valid) (\w+): ([-+.\deE]+)", line)
            }
    return dict(sorted(epochs.items()))


def plot_learning_curves(runs, path, title=""):
    """Save the learning curves of several training steps over folds as one PNG.

    One row per step: train and valid loss on the left; on the right the valid UA, or for a
    step without utterance labels (stage 1) its valid frame accuracy. One line per fold.

    Arguments
    ---------
    runs : dict
        ``{step name: {fold: read_train_log(...)}}``.
    path : str or pathlib.Path
        The PNG to write.
    title : str
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 2.8 * len(runs) + 0.6), squeeze=False)
    for (step, folds), (loss_axis, score_axis) in zip(runs.items(), axes, strict=True):
        for index, (fold, epochs) in enumerate(folds.items()):
            color = f"C{index % 10}"
            numbers = list(epochs)
            for key, style in (("train loss", ":"), ("valid loss", "-")):
                values = [epochs[epoch].get(key, np.nan) for epoch in numbers]
                loss_axis.plot(numbers, values, style, color=color,
                               label=f"fold {fold}" if key == "valid loss" else None)
            score = "valid UA" if any("valid UA" in e for e in epochs.values()) else (
                "valid frame_acc")
            score_axis.plot(numbers, [epochs[epoch].get(score, np.nan) for epoch in numbers],
                            "-o", color=color, markersize=3, label=f"fold {fold}")
            score_axis.set_ylabel(score)
        loss_axis.set_ylabel(f"{step}: loss")
        loss_axis.set_title("loss (solid: valid, dotted: train)", fontsize=9)
        loss_axis.legend(fontsize=7)
        score_axis.legend(fontsize=7)
        for axis in (loss_axis, score_axis):
            axis.set_xlabel("epoch")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


class EmotionReport:
    """Collect utterance scores during evaluation, then compute and write the test report.

    Kept rather than SpeechBrain's ``ClassificationStats`` (see ``emotion_metrics``), which also
    keeps no scores, so it could not write the ``score_<class>`` columns of ``predictions.csv``.

    Arguments
    ---------
    classes : list of str
        Class names in index order.

    Example
    -------
    >>> import tempfile
    >>> report = EmotionReport(["neu", "sad"])
    >>> report.append(["u1", "u2"], torch.tensor([[2.0, 0.1], [0.3, 0.9]]), torch.tensor([0, 0]))
    >>> report.metrics()["WA"]
    0.5
    >>> folder = tempfile.mkdtemp()
    >>> report.write(folder)["UA"]
    0.5
    >>> sorted(p.name for p in Path(folder).iterdir())
    ['confusion.png', 'metrics.json', 'predictions.csv']
    """

    def __init__(self, classes):
        self.classes = list(classes)
        self.ids, self.scores, self.targets = [], [], []

    def append(self, ids, scores, targets):
        """Add a batch: utterance ids, ``(batch, n_classes)`` scores, ``(batch,)`` class ids."""
        self.ids.extend(ids)
        self.scores.append(scores.detach().float().cpu())
        self.targets.append(targets.detach().reshape(-1).long().cpu())

    def metrics(self):
        """WA, UA, per-class recall and confusion of what was appended."""
        scores = torch.cat(self.scores)
        return emotion_metrics(
            torch.cat(self.targets).numpy(), scores.argmax(dim=1).numpy(), len(self.classes)
        )

    def write(self, folder, title=""):
        """Write ``predictions.csv``, ``confusion.png`` and ``metrics.json``; return metrics.

        ``predictions.csv`` has columns ``id``, ``true``, ``predicted``, then
        ``score_<class>`` (softmax probabilities) for each class.
        """
        folder = Path(folder)
        scores = torch.cat(self.scores)
        probabilities = torch.softmax(scores, dim=1).numpy()
        targets = torch.cat(self.targets).numpy()
        predicted = scores.argmax(dim=1).numpy()
        with atomic_write(folder / "predictions.csv", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "true", "predicted", *(f"score_{c}" for c in self.classes)])
            for utt_id, true, pred, probs in zip(
                self.ids, targets, predicted, probabilities, strict=True
            ):
                writer.writerow([utt_id, self.classes[true], self.classes[pred],
                                 *(f"{p:.6f}" for p in probs)])
        metrics = emotion_metrics(targets, predicted, len(self.classes))
        metrics["classes"] = self.classes
        metrics["n_utterances"] = len(self.ids)
        plot_confusion(metrics["confusion"], self.classes, folder / "confusion.png", title)
        write_json_atomic(folder / "metrics.json", metrics)
        return metrics


def read_metrics(folder):
    """Read the ``metrics.json`` a run wrote into ``folder``."""
    return json.loads((Path(folder) / "metrics.json").read_text())
