"""Using a trained model: export (gmptl-export), EmotionRecognizer, the gmptl-classify command.

Every test uses the fold-1 models of the shared two-fold demo run (``cv_run``), exported once.
"""

import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from recipe_helpers import RECIPE_DIR

from lobes.data.audio import read_audio
from lobes.deploy import classify_cli
from lobes.deploy.export import export_run
from lobes.deploy.inference import EmotionRecognizer, frame_times
from lobes.models.frames import n_frames

SYSTEMS = ("stage2", "baseline")
PROBABILITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run this module's models on one thread: with other jobs on the two shared cores, two
    intra-op threads were measured 30 times slower (11-18 s against 0.4 s for 16 utterances)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_folders(cv_run, tmp_path_factory):
    """The fold-1 stage-2 and baseline runs, exported: ``{system: model folder}``."""
    root = tmp_path_factory.mktemp("models")
    return {system: Path(export_run(cv_run / "fold1" / system, root / system))
            for system in SYSTEMS}


@pytest.fixture(scope="module")
def recognizers(model_folders, tmp_path_factory):
    return {
        system: EmotionRecognizer.from_hparams(
            source=str(folder), savedir=str(tmp_path_factory.mktemp(f"{system}_savedir"))
        )
        for system, folder in model_folders.items()
    }


@pytest.fixture(scope="module")
def test_wavs(cv_run):
    """``{utterance id: wav path}`` of the fold-1 test set."""
    manifest = json.loads((cv_run / "fold1" / "prepare" / "test.json").read_text())
    return {utt_id: entry["wav"] for utt_id, entry in manifest.items()}


def read_predictions(path):
    with open(path, newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def run_classify(*args, cwd):
    """``gmptl-classify`` in a fresh process (the module, so no install step is needed)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "lobes.deploy.classify_cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )


def test_moved_model_in_fresh_process_matches_training_evaluation(
    cv_run, model_folders, test_wavs, tmp_path
):
    training_tree = cv_run / "fold1"
    predictions = read_predictions(training_tree / "stage2" / "predictions.csv")
    assert set(predictions) == set(test_wavs)
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(model_folders["stage2"], moved)
    for path in moved.rglob("*"):
        if path.suffix in (".yaml", ".json", ".txt", ".md"):
            text = path.read_text()
            assert str(training_tree) not in text and str(training_tree.resolve()) not in text, \
                f"{path.name} refers to the training tree"

    # the training tree is out of reach while the moved model runs (renamed, then restored)
    away = training_tree.with_name("fold1_moved_away")
    training_tree.rename(away)
    try:
        completed = run_classify(moved, *test_wavs.values(), "--json", cwd=tmp_path)
    finally:
        away.rename(training_tree)
    assert completed.returncode == 0, completed.stderr
    results = [json.loads(line) for line in completed.stdout.splitlines()]
    assert len(results) == len(test_wavs)
    for result in results:
        expected = predictions[Path(result["file"]).stem]
        assert result["label"] == expected["predicted"]
        for emotion, probability in result["probabilities"].items():
            assert probability == pytest.approx(
                float(expected[f"score_{emotion}"]), abs=PROBABILITY_TOLERANCE
            )


def test_baseline_model_matches_training_evaluation(cv_run, recognizers, test_wavs):
    recognizer = recognizers["baseline"]
    predictions = read_predictions(cv_run / "fold1" / "baseline" / "predictions.csv")
    for utt_id in list(test_wavs)[:12]:
        prediction = recognizer.classify_file(test_wavs[utt_id])
        expected = predictions[utt_id]
        assert prediction.label == expected["predicted"]
        expected_probabilities = [float(expected[f"score_{c}"]) for c in recognizer.classes]
        assert prediction.probabilities.tolist() == pytest.approx(
            expected_probabilities, abs=PROBABILITY_TOLERANCE
        )


@pytest.mark.parametrize("system", SYSTEMS)
def test_frame_track_is_on_the_utterance_score_scale(recognizers, test_wavs, system):
    recognizer = recognizers[system]
    waveform = read_audio(next(iter(test_wavs.values())))
    # a one-frame utterance: mean pooling gives that frame, so frame and utterance agree
    one_frame = recognizer.classify_batch(waveform[None, 1000:1400])
    assert one_frame.frame_counts.tolist() == [1]
    assert one_frame.frame_scores[0, 0].softmax(-1).tolist() == pytest.approx(
        one_frame.probabilities[0].tolist(), abs=1e-5
    )
    prediction = recognizer.classify_batch(waveform).per_utterance()[0]
    assert prediction.frame_scores.shape == (n_frames(len(waveform)), len(recognizer.classes))
    if system == "baseline":
        # a linear head commutes with mean pooling: utterance logits = mean of frame logits
        assert prediction.frame_scores.mean(0).softmax(-1).tolist() == pytest.approx(
            prediction.probabilities.tolist(), abs=1e-5
        )
    else:
        scale = recognizer.hparams.emotion_loss.scale
        assert prediction.frame_scores.abs().max() <= scale + 1e-4
        assert prediction.frame_scores.abs().max() > 1.0  # scaled cosines, not bare ones


def test_resampled_stereo_file_gives_the_same_result(recognizers, test_wavs, tmp_path):
    """A 44.1 kHz stereo file and its 16 kHz mono version (the mixdown, converted by the
    project's loader) give the same result. The probabilities of the demo models move by up
    to 0.03 between two resampling paths of the same audio, so the 16 kHz version is made by
    ``read_audio`` itself rather than compared with the original recording."""
    recognizer = recognizers["stage2"]
    generator = torch.Generator().manual_seed(0)
    for utt_id in list(test_wavs)[:4]:
        mixdown = torchaudio.functional.resample(read_audio(test_wavs[utt_id]), 16000, 44100)
        # channels that differ strongly but average to the signal: only a mixdown recovers it
        disturbance = 0.5 * torch.randn(len(mixdown), generator=generator)
        stereo_path = tmp_path / f"{utt_id}_44k_stereo.wav"
        soundfile.write(stereo_path, torch.stack([mixdown + disturbance, mixdown - disturbance],
                                                 dim=1).numpy(), 44100, subtype="FLOAT")
        mixdown_path = tmp_path / f"{utt_id}_44k_mono.wav"
        soundfile.write(mixdown_path, mixdown.numpy(), 44100, subtype="FLOAT")
        mono_path = tmp_path / f"{utt_id}_16k_mono.wav"
        soundfile.write(mono_path, read_audio(mixdown_path).numpy(), 16000, subtype="FLOAT")

        from_stereo = recognizer.classify_file(stereo_path)
        from_mono = recognizer.classify_file(mono_path)
        assert soundfile.info(str(mono_path)).samplerate == 16000
        assert from_stereo.label == from_mono.label
        assert from_stereo.probabilities.tolist() == pytest.approx(
            from_mono.probabilities.tolist(), abs=PROBABILITY_TOLERANCE
        )
        # scores are scaled cosines (up to 30): float rounding of the mixdown shows at 1e-3
        assert torch.allclose(from_stereo.frame_scores, from_mono.frame_scores, atol=0.01)


def test_unusable_files_are_reported_and_the_others_classified(
    model_folders, test_wavs, tmp_path
):
    inputs = tmp_path / "inputs"
    good = [inputs / "good_a.wav", inputs / "nested" / "good_b.wav"]
    for source, target in zip(list(test_wavs.values())[:2], good, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (inputs / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    soundfile.write(inputs / "empty.wav", np.zeros(0), 16000)
    soundfile.write(inputs / "short.wav", np.zeros(300), 16000)
    (inputs / "notes.txt").write_text("not audio, not searched")
    plot = tmp_path / "plots" / "track.png"

    completed = run_classify(model_folders["baseline"], inputs, "--json", "--plot", plot,
                             cwd=tmp_path)

    assert completed.returncode != 0
    for name in ("corrupt.wav", "empty.wav", "short.wav"):
        assert name in completed.stderr
    assert "notes.txt" not in completed.stderr
    results = [json.loads(line) for line in completed.stdout.splitlines()]
    assert sorted(Path(result["file"]).name for result in results) == ["good_a.wav", "good_b.wav"]
    assert sorted(path.name for path in plot.parent.iterdir()) == [
        "track_good_a.png", "track_good_b.png"
    ]


@pytest.mark.parametrize("system", SYSTEMS)
def test_frame_track_is_aligned_in_time(model_folders, test_wavs, system):
    """With a chunk boundary where B starts, the track of A + B is A's track, then B's.

    Chunks are encoded apart, so each part's frames must come out exactly as when that part
    is classified alone: a track that is shifted, reversed, pooled or taken from the wrong
    chunk fails here, whatever the model has learnt.
    """
    first, second = sorted((read_audio(path) for path in list(test_wavs.values())[:2]), key=len,
                           reverse=True)
    n_shifts = len(first) // 320
    # the first chunk covers n_shifts * 320 + 80 samples; those last 80 are silence in both
    part_a = torch.cat([first[: n_shifts * 320], torch.zeros(80)])
    part_b = torch.cat([torch.zeros(80), second])
    joined = torch.cat([part_a[:-80], part_b])
    recognizer = EmotionRecognizer.from_hparams(
        source=str(model_folders[system]), overrides={"chunk_seconds": n_shifts * 0.02}
    )
    track = recognizer.classify_batch(joined).per_utterance()[0].frame_scores
    track_a = recognizer.classify_batch(part_a).per_utterance()[0].frame_scores
    track_b = recognizer.classify_batch(part_b).per_utterance()[0].frame_scores

    assert len(track_a) == n_shifts and len(track) == n_frames(len(joined))
    assert torch.allclose(track[:n_shifts], track_a, atol=1e-4)
    assert torch.allclose(track[n_shifts:], track_b, atol=1e-4)
    assert not torch.allclose(track_a.mean(0), track_b.mean(0), atol=0.1)


def part_contrast(recognizer, first, second, class_x, class_y, guard=0.1):
    """Classify ``first`` then ``second`` joined into one waveform: how much more the frame
    track favours ``class_x`` over ``class_y`` before the junction than after it.

    Frames within ``guard`` seconds of the junction are left out: the transformer's context
    smears a change over a few frames.
    """
    track = recognizer.classify_batch(torch.cat([first, second])).per_utterance()[0]
    times = frame_times(len(track.frame_scores))
    junction = len(first) / 16000
    margin = track.frame_scores[:, class_x] - track.frame_scores[:, class_y]
    return float(margin[times < junction - guard].mean() - margin[times > junction + guard].mean())


def test_baseline_frame_track_follows_a_change_of_emotion_midway(recognizers, test_wavs):
    """Two test utterances joined: the baseline's track favours each one's emotion on its side.

    The demo models do not see the short neutral lead-in of the demo corpus's own
    emotion-changing utterances (a stage-2 model with test UA 0.70 calls the lead-in alone
    neu in 3 of those 16, and its frame neu probability drops after the change point in 8 of
    16), so the change is built from what the model does tell apart: for the pairs of
    utterances whose scores differ most (classes x and y), A + B must favour x over y more
    before the junction than after it, and B + A the other way round (both orders, so that a
    drift of the track along time cannot pass). Measured: 10 of 10 for every baseline run
    seen. Not asserted for stage 2: one demo stage-2 encoder (test UA 0.70) mixes the two
    parts through self-attention so that the track inverts (3 of 10), although each part
    encoded alone is classified right (10 of 10); see test_frame_track_is_aligned_in_time.
    """
    recognizer = recognizers["baseline"]
    waveforms = {utt_id: read_audio(path) for utt_id, path in test_wavs.items()}
    log_probabilities = {utt_id: recognizer.classify_batch(waveform).probabilities[0].log()
                         for utt_id, waveform in waveforms.items()}
    pairs = []
    for utt_a, utt_b in itertools.permutations(waveforms, 2):
        difference = log_probabilities[utt_a] - log_probabilities[utt_b]
        class_x, class_y = int(difference.argmax()), int(difference.argmin())
        pairs.append((float(difference[class_x] - difference[class_y]), utt_a, utt_b,
                      class_x, class_y))
    contrasts, used = [], set()
    for _, utt_a, utt_b, class_x, class_y in sorted(pairs, reverse=True):
        if {utt_a, utt_b} & used:
            continue
        used |= {utt_a, utt_b}
        a_then_b = part_contrast(recognizer, waveforms[utt_a], waveforms[utt_b], class_x, class_y)
        b_then_a = part_contrast(recognizer, waveforms[utt_b], waveforms[utt_a], class_x, class_y)
        contrasts.append(a_then_b - b_then_a)
        if len(contrasts) == 10:
            break
    contrasts = np.array(contrasts)
    assert (contrasts > 0).sum() >= 8, f"contrasts: {np.round(contrasts, 3).tolist()}"
    assert contrasts.mean() > 0


def test_long_input_is_encoded_in_bounded_chunks(model_folders, test_wavs):
    recognizer = EmotionRecognizer.from_hparams(
        source=str(model_folders["stage2"]), overrides={"chunk_seconds": 0.5}
    )
    encoder_input_lengths = []
    recognizer.mods.encoder.register_forward_pre_hook(
        lambda module, args: encoder_input_lengths.append(args[0].shape[1])
    )
    waveforms = [read_audio(path) for path in list(test_wavs.values())[:3]]
    long_waveform = torch.cat(waveforms)
    short_waveform = waveforms[0][:6000]
    batch = torch.nn.utils.rnn.pad_sequence([long_waveform, short_waveform], batch_first=True)
    result = recognizer.classify_batch(batch, torch.tensor([1.0, 6000 / len(long_waveform)]))

    assert max(encoder_input_lengths) <= 0.5 * 16000 + 80
    assert result.frame_counts.tolist() == [n_frames(len(long_waveform)), n_frames(6000)]
    assert bool((result.frame_scores[1, n_frames(6000):] == 0).all())
    # the short utterance is encoded whole, as without chunking
    alone = recognizer.classify_batch(short_waveform)
    assert result.probabilities[1].tolist() == pytest.approx(
        alone.probabilities[0].tolist(), abs=1e-5
    )


def test_smaller_mistakes_of_export_classify_and_the_scripts(cv_run, tmp_path, capsys):
    """README, "Mistakes and what they say": --frames without --json, exporting a stage-0
    folder, the model card's fold wording, the stage scripts' --help, no torchvision warning."""
    with pytest.raises(SystemExit):
        classify_cli.main([str(tmp_path), "a.wav", "--frames"])
    assert "--frames adds the per-frame scores to the JSON records" in capsys.readouterr().err
    with pytest.raises(ValueError, match="is a stage0 run .* export the output folder of a "
                                         "stage-2 or baseline run"):
        export_run(cv_run / "fold1" / "stage0", tmp_path / "model")
    model = export_run(cv_run / "fold1" / "stage2", tmp_path / "model")
    card = (tmp_path / "model" / "README.md").read_text()
    assert model and "test session 1 (leave-one-session-out)" in card
    helped = subprocess.run([sys.executable, str(RECIPE_DIR / "train.py"), "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0
    assert "usage: python train.py HPARAMS.yaml [--overrides FILE" in helped.stdout
    assert "--precision" in helped.stdout
    log = (cv_run / "fold1" / "stage2" / "run.log").read_text()
    assert "torchvision" not in log


def test_onnx_export_of_the_trained_model_matches_training_evaluation(
    cv_run, test_wavs, tmp_path, capsys
):
    """gmptl-export --onnx on the demo's stage-2 run: onnxruntime alone reproduces the
    training-time evaluation (labels, probabilities within 1e-4) of the trained model."""
    from lobes.deploy.export import main as export_main
    from lobes.deploy.onnx_runtime import OnnxEmotionRecognizer

    export_main([str(cv_run / "fold1" / "stage2"), str(tmp_path / "model"), "--onnx"])
    assert "model.onnx written (torch.onnx.export" in capsys.readouterr().out
    assert "## ONNX" in (tmp_path / "model" / "README.md").read_text()
    predictions = read_predictions(cv_run / "fold1" / "stage2" / "predictions.csv")
    recognizer = OnnxEmotionRecognizer(tmp_path / "model", threads=1)
    for utt_id in list(test_wavs)[:12]:
        prediction = recognizer.classify_file(test_wavs[utt_id])
        expected = predictions[utt_id]
        assert prediction.label == expected["predicted"]
        assert prediction.probabilities.tolist() == pytest.approx(
            [float(expected[f"score_{c}"]) for c in recognizer.classes], abs=PROBABILITY_TOLERANCE
        )
