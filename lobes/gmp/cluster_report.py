"""How GMP clusters relate to emotion and gender: usage, NMI and purity per scale."""

import numpy as np
from sklearn.metrics import normalized_mutual_info_score


def _purity(frame_clusters, frame_classes):
    """Share of frames whose class is their cluster's majority class."""
    _, class_ids = np.unique(frame_classes, return_inverse=True)
    _, cluster_ids = np.unique(frame_clusters, return_inverse=True)
    counts = np.zeros((cluster_ids.max() + 1, class_ids.max() + 1), dtype=np.int64)
    np.add.at(counts, (cluster_ids, class_ids), 1)
    return float(counts.max(axis=1).sum() / len(frame_clusters))


def cluster_report(frame_labels_per_utt, utt_emo, utt_gender, n_clusters):
    """Summarise one scale of GMP labels against the utterances' emotion and gender.

    Each frame inherits its utterance's emotion and gender.

    Arguments
    ---------
    frame_labels_per_utt : dict
        ``{utt_id: int array of frame cluster ids}``.
    utt_emo : dict
        ``{utt_id: label}`` for every utterance of ``frame_labels_per_utt``.
    utt_gender : dict
        ``{utt_id: gender}`` for the utterances whose gender is known; the gender figures are
        over their frames only (None when no gender is known).
    n_clusters : int
        K of this scale (unused clusters count as holding 0 frames).

    Returns
    -------
    dict
        ``n_clusters``, ``clusters_used``, ``n_frames``, ``frames_per_cluster``
        (``min``/``median``/``max`` over all K clusters), ``nmi_emotion``,
        ``nmi_gender`` (normalised mutual information between frame cluster id and
        the class), ``purity_emotion`` and ``purity_gender`` (frame-weighted share
        of each cluster's majority class).

    Example
    -------
    >>> labels = {"a": np.array([0, 0]), "b": np.array([1, 1, 1])}
    >>> report = cluster_report(labels, {"a": "ang", "b": "sad"}, {"a": "F", "b": "F"}, 4)
    >>> report["clusters_used"], report["nmi_emotion"], report["purity_emotion"]
    (2, 1.0, 1.0)
    >>> report["frames_per_cluster"]
    {'min': 0, 'median': 1.0, 'max': 3}
    >>> cluster_report(labels, {"a": "ang", "b": "sad"}, {}, 4)["nmi_gender"] is None
    True
    """
    missing = [utt_id for utt_id in frame_labels_per_utt if utt_id not in utt_emo]
    if missing:
        raise ValueError(
            f"cluster report: no emotion for {len(missing)} utterances (e.g. {missing[:3]})"
        )
    utt_ids = list(frame_labels_per_utt)
    frame_clusters = np.concatenate(
        [np.asarray(frame_labels_per_utt[utt_id], dtype=np.int64) for utt_id in utt_ids]
    )
    lengths = [len(frame_labels_per_utt[utt_id]) for utt_id in utt_ids]
    frame_emotions = np.repeat([str(utt_emo[utt_id]) for utt_id in utt_ids], lengths)
    frame_genders = np.repeat([str(utt_gender.get(utt_id, "")) for utt_id in utt_ids], lengths)
    known = frame_genders != ""
    gender_clusters, frame_genders = frame_clusters[known], frame_genders[known]
    frames_per_cluster = np.bincount(frame_clusters, minlength=n_clusters)
    return {
        "n_clusters": int(n_clusters),
        "clusters_used": int((frames_per_cluster > 0).sum()),
        "n_frames": int(len(frame_clusters)),
        "frames_per_cluster": {
            "min": int(frames_per_cluster.min()),
            "median": float(np.median(frames_per_cluster)),
            "max": int(frames_per_cluster.max()),
        },
        "nmi_emotion": float(normalized_mutual_info_score(frame_emotions, frame_clusters)),
        "nmi_gender": float(normalized_mutual_info_score(frame_genders, gender_clusters))
        if known.any() else None,
        "purity_emotion": _purity(frame_clusters, frame_emotions),
        "purity_gender": _purity(gender_clusters, frame_genders) if known.any() else None,
    }


def report_to_markdown(reports):
    """A markdown table of ``{scale_name: cluster_report(...)}``, one row per scale.

    Example
    -------
    >>> labels = {"a": np.array([0, 0]), "b": np.array([1, 1, 1])}
    >>> report = cluster_report(labels, {"a": "ang", "b": "sad"}, {"a": "F", "b": "M"}, 2)
    >>> print(report_to_markdown({"k2": report}))
    | scale | K | used | frames/cluster min / median / max | NMI emo | NMI gender | purity emo |
    |---|---|---|---|---|---|---|
    | k2 | 2 | 2 | 2 / 2.5 / 3 | 1.000 | 1.000 | 1.000 |
    """
    def figure(value):
        return "-" if value is None else f"{value:.3f}"

    lines = [
        "| scale | K | used | frames/cluster min / median / max | NMI emo | NMI gender "
        "| purity emo |",
        "|---|---|---|---|---|---|---|",
    ]
    for scale_name, report in reports.items():
        sizes = report["frames_per_cluster"]
        lines.append(
            f"| {scale_name} | {report['n_clusters']} | {report['clusters_used']} "
            f"| {sizes['min']} / {sizes['median']:g} / {sizes['max']} "
            f"| {report['nmi_emotion']:.3f} | {figure(report['nmi_gender'])} "
            f"| {report['purity_emotion']:.3f} |"
        )
    return "\n".join(lines)
