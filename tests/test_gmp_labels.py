"""GMP label files (write, read, checks against a manifest) and the cluster report."""

import numpy as np
import pytest

import lobes.gmp.labels as gmp_labels
from lobes.gmp.cluster_report import cluster_report, report_to_markdown
from lobes.gmp.labels import (
    LabelMismatchError,
    check_labels_against_manifest,
    expected_frame_counts,
    fit_labels_to_frames,
    meta_path_of,
    read_label_file,
    read_label_meta,
    write_label_file,
)

META = {"layer": 9, "k": 64, "kmeans_model": "gmp/kmeans_layer9_k64.npz", "split": "train"}


@pytest.fixture
def manifest():
    return {
        "Ses01F_impro01_F000": {"duration": 2.0},
        "Ses01M_script01_1_M003": {"duration": 0.51},
        "Ses02F_impro03_F011": {"duration": 1.2345},
    }


@pytest.fixture
def labels(manifest):
    rng = np.random.default_rng(0)
    return {
        utt_id: rng.integers(0, 64, count)
        for utt_id, count in expected_frame_counts(manifest).items()
    }


def test_round_trip_with_metadata(tmp_path, labels):
    path = tmp_path / "train_k64.km"
    write_label_file(path, labels, META)
    read_back = read_label_file(path)
    assert list(read_back) == list(labels)
    for utt_id, frame_labels in labels.items():
        assert read_back[utt_id].dtype == np.int64
        assert np.array_equal(read_back[utt_id], frame_labels)
    first_line = path.read_text().splitlines()[0].split()
    assert first_line[0] == "Ses01F_impro01_F000" and len(first_line) == 1 + 99
    meta = read_label_meta(path)
    assert meta_path_of(path) == tmp_path / "train_k64.json"
    assert meta == {
        **META,
        "n_utterances": 3,
        "n_frames": sum(len(frame_labels) for frame_labels in labels.values()),
    }


def test_write_refuses_bad_input(tmp_path, labels):
    with pytest.raises(ValueError, match="kmeans_model"):
        write_label_file(tmp_path / "a.km", labels, {"layer": 9, "k": 64})
    with pytest.raises(ValueError, match="outside 0..7"):
        write_label_file(tmp_path / "a.km", labels, {**META, "k": 8})
    with pytest.raises(ValueError, match="not ints"):
        write_label_file(tmp_path / "a.km", {"a": np.array([1.0])}, META)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_old_files_intact(tmp_path, labels, monkeypatch):
    path = tmp_path / "train_k64.km"
    write_label_file(path, labels, META)
    old_labels, old_meta = path.read_bytes(), meta_path_of(path).read_bytes()

    def broken_labels():
        yield from list(labels.items())[:1]
        raise RuntimeError("disk full")

    class BrokenDict(dict):
        def items(self):
            return broken_labels()

    with pytest.raises(RuntimeError, match="disk full"):
        write_label_file(path, BrokenDict(labels), {**META, "layer": 3})
    assert path.read_bytes() == old_labels
    assert meta_path_of(path).read_bytes() == old_meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_k64.json", "train_k64.km"]

    # The metadata goes after the labels: a failure there leaves the new label
    # file with its old metadata, never metadata describing unwritten labels.
    def failing_json(path, obj):
        raise OSError("no space left")

    monkeypatch.setattr(gmp_labels, "write_json_atomic", failing_json)
    with pytest.raises(OSError):
        write_label_file(path, {"x": np.array([1])}, META)
    assert {k: v.tolist() for k, v in read_label_file(path).items()} == {"x": [1]}
    assert meta_path_of(path).read_bytes() == old_meta


@pytest.mark.parametrize(
    "content, problem",
    [
        ("a 1 2\nb\n", "line 2: b has no labels"),
        ("a 1 2\nb 1 x\n", "line 2: labels of b are not all integers"),
        ("a 1\na 2\n", "line 2: a appears twice"),
        ("a 1 -2\n", "line 1: negative label"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, content, problem):
    path = tmp_path / "bad.km"
    path.write_text(content)
    with pytest.raises(LabelMismatchError, match=problem) as error:
        read_label_file(path)
    assert str(path) in str(error.value)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="re-run extract_gmp.py"):
        read_label_file(tmp_path / "none.km")
    with pytest.raises(FileNotFoundError, match="re-run extract_gmp.py"):
        read_label_meta(tmp_path / "none.km")


def test_missing_utterance_raises(manifest, labels):
    labels.pop("Ses01M_script01_1_M003")
    with pytest.raises(LabelMismatchError) as error:
        check_labels_against_manifest(labels, manifest, "gmp/train_k64.km")
    message = str(error.value)
    assert "gmp/train_k64.km" in message
    assert "Ses01M_script01_1_M003 (1 in all)" in message
    assert "re-run extract_gmp.py" in message


def test_frame_count_off_by_two_raises(manifest, labels):
    utt_id = "Ses02F_impro03_F011"
    expected = expected_frame_counts(manifest)[utt_id]
    labels[utt_id] = labels[utt_id][:-2]
    with pytest.raises(LabelMismatchError) as error:
        check_labels_against_manifest(labels, manifest, "gmp/train_k64.km")
    message = str(error.value)
    assert "gmp/train_k64.km" in message
    assert f"{utt_id} (expected {expected} frames, found {expected - 2})" in message


def test_off_by_one_is_accepted_and_fitted(manifest, labels):
    utt_id = "Ses02F_impro03_F011"
    expected = expected_frame_counts(manifest)[utt_id]
    short, long = labels[utt_id][:-1], np.append(labels[utt_id], 5)
    for off_by_one in (short, long):
        check_labels_against_manifest({**labels, utt_id: off_by_one}, manifest, "x.km")
        fitted = fit_labels_to_frames(off_by_one, expected)
        assert len(fitted) == expected
        assert np.array_equal(fitted[: expected - 1], labels[utt_id][:-1])
    assert fit_labels_to_frames(short, expected)[-1] == short[-1]
    with pytest.raises(LabelMismatchError):
        fit_labels_to_frames(labels[utt_id][:-2], expected)


def test_cluster_report_nmi():
    rng = np.random.default_rng(0)
    emotions = ["neu", "hap", "ang", "sad"]
    utt_emo = {f"u{i}": emotions[i % 4] for i in range(200)}
    utt_gender = {f"u{i}": "FM"[(i // 4) % 2] for i in range(200)}
    lengths = {utt_id: int(rng.integers(20, 80)) for utt_id in utt_emo}
    emotion_clusters = {
        utt_id: np.full(lengths[utt_id], emotions.index(utt_emo[utt_id])) for utt_id in utt_emo
    }
    random_clusters = {utt_id: rng.integers(0, 8, lengths[utt_id]) for utt_id in utt_emo}
    aligned = cluster_report(emotion_clusters, utt_emo, utt_gender, n_clusters=8)
    random = cluster_report(random_clusters, utt_emo, utt_gender, n_clusters=8)
    assert aligned["nmi_emotion"] == pytest.approx(1.0)
    assert aligned["purity_emotion"] == pytest.approx(1.0)
    assert aligned["nmi_gender"] < 0.01
    assert aligned["clusters_used"] == 4 and aligned["frames_per_cluster"]["min"] == 0
    assert random["nmi_emotion"] < 0.01
    assert random["purity_emotion"] < 0.3
    assert random["clusters_used"] == 8
    assert aligned["n_frames"] == random["n_frames"] == sum(lengths.values())
    table = report_to_markdown({"k8 aligned": aligned, "k8 random": random})
    assert table.count("\n") == 3 and "| k8 aligned | 8 | 4 |" in table
