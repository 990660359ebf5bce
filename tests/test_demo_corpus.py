"""The synthetic demo corpus: deterministic, in the real release's layout, with audible cues."""

import json
import re
import time
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
import soundfile
from recipe_helpers import recipe_module

ANNOTATION_LINE = re.compile(r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(\S+)\t(\w+)\t\[[\d., ]+\]$")
UTTERANCE_ID = re.compile(r"^Ses0([1-5])([FM])_(impro\d\d|script\d\d_\d)_([FM])\d{3}$")

make_demo_corpus = recipe_module("make_demo_corpus").make_demo_corpus


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory):
    """The default demo corpus (30 kept utterances per speaker), with its generation time."""
    start = time.perf_counter()
    corpus = make_demo_corpus(tmp_path_factory.mktemp("demo_default"), seed=0)
    return corpus, time.perf_counter() - start


@pytest.fixture(scope="module")
def truth(default_corpus):
    corpus, _ = default_corpus
    return json.loads((corpus / "demo_truth.json").read_text())


def _wav_path(corpus, utt_id, entry):
    return corpus / f"Session{entry['session']}" / "sentences" / "wav" / entry["dialog"] / (
        f"{utt_id}.wav"
    )


def _all_files(folder):
    return {
        path.relative_to(folder): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }


def test_generation_is_fast(default_corpus):
    _, seconds = default_corpus
    assert seconds < 30


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    first = _all_files(make_demo_corpus(tmp_path / "a", seed=3, utts_per_speaker=3))
    second = _all_files(make_demo_corpus(tmp_path / "b", seed=3, utts_per_speaker=3))
    other = _all_files(make_demo_corpus(tmp_path / "c", seed=4, utts_per_speaker=3))

    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)
    shared_wavs = [name for name in first if name.suffix == ".wav" and name in other]
    assert shared_wavs and all(first[name] != other[name] for name in shared_wavs)


def test_counts_and_class_balance(truth):
    kept = [entry for entry in truth.values() if entry["kept"]]
    assert len(kept) == 300
    per_speaker = Counter(entry["spk"] for entry in kept)
    assert len(per_speaker) == 10 and set(per_speaker.values()) == {30}
    per_class = Counter(entry["emo"] for entry in kept)
    assert set(per_class) == {"neu", "hap", "ang", "sad"}
    assert all(60 <= count <= 90 for count in per_class.values())
    labels = Counter(entry["label"] for entry in truth.values())
    assert labels["exc"] > 0 and labels["hap"] > 0
    dropped = {entry["label"] for entry in truth.values() if not entry["kept"]}
    assert dropped == {"fru", "xxx", "sur"}
    for entry in truth.values():
        assert entry["kept"] == (entry["emo"] is not None)
        if entry["kept"]:
            assert entry["emo"] == {"exc": "hap"}.get(entry["label"], entry["label"])


def test_layout_matches_the_real_release(default_corpus, truth):
    corpus, _ = default_corpus
    assert sorted(path.name for path in corpus.iterdir() if path.is_dir()) == [
        f"Session{session}" for session in range(1, 6)
    ]
    dialog_kinds = set()
    for utt_id, entry in truth.items():
        id_match = UTTERANCE_ID.match(utt_id)
        assert id_match, utt_id
        assert int(id_match[1]) == entry["session"] and id_match[4] == entry["gender"]
        assert entry["dialog"] == utt_id.rsplit("_", 1)[0]
        assert entry["spk"] == f"Ses0{entry['session']}_{entry['gender']}"
        dialog_kinds.add(id_match[3][:5])
        info = soundfile.info(str(_wav_path(corpus, utt_id, entry)))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == round(entry["duration"] * 16000)
        assert 1.0 <= entry["duration"] <= 2.2
    assert dialog_kinds == {"impro", "scrip"}
    genders_per_dialog = {}
    for entry in truth.values():
        genders_per_dialog.setdefault(entry["dialog"], set()).add(entry["gender"])
    assert all(genders == {"F", "M"} for genders in genders_per_dialog.values())

    for session in range(1, 6):
        annotation_folder = corpus / f"Session{session}" / "dialog" / "EmoEvaluation"
        assert list((annotation_folder / "Categorical").glob("*.txt"))
        annotation_dialogs = {path.stem for path in annotation_folder.glob("Ses*.txt")}
        assert annotation_dialogs == {
            entry["dialog"] for entry in truth.values() if entry["session"] == session
        }
    junk = corpus / "Session1" / "dialog" / "EmoEvaluation" / "._Ses01F_impro01.txt"
    with pytest.raises(UnicodeDecodeError):  # binary, like the release's macOS resource forks
        junk.read_bytes().decode("utf-8")


def test_truth_agrees_with_the_annotation_files(default_corpus, truth):
    corpus, _ = default_corpus
    annotated = {}
    for annotation_file in corpus.glob("Session*/dialog/EmoEvaluation/Ses*.txt"):
        lines = annotation_file.read_text().split("\n")
        assert lines[0].startswith("%")
        for index, line in enumerate(lines):
            match = ANNOTATION_LINE.match(line)
            if not match:
                continue
            start_s, end_s, utt_id, label = match.groups()
            annotated[utt_id] = label
            assert abs(float(end_s) - float(start_s) - truth[utt_id]["duration"]) < 2e-4
            # Annotator lines follow, then one blank line closes the block.
            block = lines[index + 1 : lines.index("", index)]
            assert block and all(re.match(r"^[CA]-[EF]\d:\t", entry) for entry in block)
            assert any(entry.startswith("C-E1:\t") for entry in block)
            assert any(entry.startswith("A-E2:\t") for entry in block)
    assert annotated == {utt_id: entry["label"] for utt_id, entry in truth.items()}


def test_segments_cover_each_utterance(truth):
    changing = 0
    kept_not_neutral = 0
    for entry in truth.values():
        segments = entry["segments"]
        assert segments[0][0] == 0.0 and abs(segments[-1][1] - entry["duration"]) < 1e-3
        assert all(first[1] == second[0] for first, second in pairwise(segments))
        if entry["kept"]:
            assert segments[-1][2] == entry["emo"]
            kept_not_neutral += entry["emo"] != "neu"
        if len(segments) == 2:
            changing += 1
            assert entry["kept"] and segments[0][2] == "neu"
            assert 0.4 <= segments[0][1] <= 0.9
    kept = sum(entry["kept"] for entry in truth.values())
    assert 0.05 * kept <= changing <= 0.3 * kept
    assert changing <= kept_not_neutral


def _active_rms(samples):
    frames = samples[: len(samples) // 320 * 320].reshape(-1, 320)
    frame_rms = np.sqrt((frames**2).mean(axis=1))
    return float(np.sqrt(np.mean(frame_rms[frame_rms > 0.3 * frame_rms.max()] ** 2)))


def _median_f0(samples, sample_rate=16000):
    """Median autocorrelation F0 over the loud 40 ms frames."""
    frame_length = 640
    frames = np.lib.stride_tricks.sliding_window_view(samples, frame_length)[::320]
    frame_rms = np.sqrt((frames**2).mean(axis=1))
    min_lag, max_lag = sample_rate // 400, sample_rate // 70
    f0_values = []
    for frame in frames[frame_rms > 0.3 * frame_rms.max()]:
        frame = frame - frame.mean()
        autocorrelation = np.correlate(frame, frame, "full")[frame_length - 1 :]
        lag = min_lag + int(np.argmax(autocorrelation[min_lag:max_lag]))
        if autocorrelation[lag] > 0.3 * autocorrelation[0]:
            f0_values.append(sample_rate / lag)
    return float(np.median(f0_values))


def _high_band_share(samples, sample_rate=16000):
    power = np.abs(np.fft.rfft(samples)) ** 2
    frequencies = np.fft.rfftfreq(len(samples), 1 / sample_rate)
    return float(power[frequencies > 2000].sum() / power.sum())


@pytest.fixture(scope="module")
def measured(default_corpus, truth):
    """Median F0, active RMS and high-band share per (emotion, gender), one-emotion clips only."""
    corpus, _ = default_corpus
    values = {}
    for utt_id, entry in truth.items():
        if not entry["kept"] or len(entry["segments"]) > 1:
            continue
        samples, _ = soundfile.read(_wav_path(corpus, utt_id, entry))
        values.setdefault((entry["emo"], entry["gender"]), []).append(
            (_median_f0(samples), _active_rms(samples), _high_band_share(samples))
        )
    return {key: np.median(np.array(rows), axis=0) for key, rows in values.items()}


def test_female_voices_are_higher(measured):
    for emo in ("neu", "hap", "ang", "sad"):
        assert measured[(emo, "F")][0] > 1.4 * measured[(emo, "M")][0]
    assert 170 < measured[("neu", "F")][0] < 250
    assert 90 < measured[("neu", "M")][0] < 145


@pytest.mark.parametrize("gender", ["F", "M"])
def test_emotions_differ_in_the_expected_direction(measured, gender):
    f0 = {emo: measured[(emo, gender)][0] for emo in ("neu", "hap", "ang", "sad")}
    level = {emo: measured[(emo, gender)][1] for emo in ("neu", "hap", "ang", "sad")}
    high_band = {emo: measured[(emo, gender)][2] for emo in ("neu", "hap", "ang", "sad")}
    assert f0["hap"] > f0["neu"] > f0["sad"] and f0["ang"] > f0["neu"]
    assert level["ang"] > level["hap"] > level["neu"] > level["sad"]
    assert high_band["ang"] > high_band["neu"] > high_band["sad"]


def test_emotion_changes_inside_an_utterance_are_audible(default_corpus, truth):
    corpus, _ = default_corpus
    louder = []
    for utt_id, entry in truth.items():
        if len(entry["segments"]) == 2 and entry["emo"] == "ang":
            samples, _ = soundfile.read(_wav_path(corpus, utt_id, entry))
            boundary = round(entry["segments"][0][1] * 16000)
            louder.append(_active_rms(samples[boundary:]) > _active_rms(samples[:boundary]))
    assert louder and all(louder)
