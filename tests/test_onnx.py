"""ONNX export (``gmptl-export --onnx``) and the torch-free onnxruntime path
(``gmptl-classify --backend onnx``) on every encoder family of ``hparams/encoders/``, shrunk.

The export checks itself against torch on its own generated clips; these tests add clips it did
not see, the command line in a fresh process (no torch imported, same output as torch), and a
check that does catch a graph that disagrees. The trained demo model is exported in
tests/test_inference.py.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from lobes.deploy import classify_cli
from lobes.deploy.export import write_model_folder
from lobes.deploy.inference import EmotionRecognizer, quiet_library_logs
from lobes.deploy.onnx_export import (
    EXPORTER,
    OPSET,
    OnnxCheckError,
    compare_backends,
    export_onnx,
)
from lobes.deploy.onnx_runtime import OnnxEmotionRecognizer
from lobes.fixtures.encoders import HUB_CONFIGS, shrunk

CLASSES = ["neu", "hap", "ang", "sad"]
TOLERANCE = 1e-4
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads, environment = torch.get_num_threads(), dict(os.environ)
    torch.set_num_threads(1)
    quiet_library_logs()
    yield
    torch.set_num_threads(threads)
    # quiet_library_logs sets SB_LOG_LEVEL for the process: later tests' subprocesses must not
    # inherit it (their SpeechBrain logs are read)
    os.environ.clear()
    os.environ.update(environment)


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    """``{encoder name: (model folder with its ONNX graphs, export report)}``, shrunk encoders
    with random weights (seed 0)."""
    models = {}
    for name in sorted(HUB_CONFIGS):
        root = tmp_path_factory.mktemp(name)
        folder = write_model_folder(root / "model", shrunk(name, root / "encoder"), CLASSES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings on HF's Python checks
            models[name] = (Path(folder), export_onnx(folder))
    return models


@pytest.mark.parametrize("name", sorted(HUB_CONFIGS))
def test_onnxruntime_agrees_with_torch_for_every_encoder_family(onnx_models, name):
    folder, report = onnx_models[name]
    assert report["n_utterances"] == 5
    assert report["max_probability_difference"] <= TOLERANCE
    card = (folder / "README.md").read_text()
    assert f"opset {OPSET}" in card and EXPORTER in card
    # clips the export's check did not see: another batch size, other lengths, silence, and
    # with 1 s chunks one long clip chunked while the short ones are batched
    rng = np.random.default_rng(7)
    waveforms = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (401, 5000, 31111)]
    waveforms.append(np.zeros(7000, np.float32))
    ours = OnnxEmotionRecognizer(folder, threads=1, chunk_seconds=1.0).classify_waveforms(
        waveforms)
    theirs = EmotionRecognizer.from_hparams(
        source=str(folder), overrides={"chunk_seconds": 1.0}).classify_waveforms(waveforms)
    for got, expected in zip(ours, theirs, strict=True):
        assert got.frame_scores.shape == tuple(expected.frame_scores.shape)
        np.testing.assert_allclose(got.probabilities, expected.probabilities.numpy(),
                                   atol=TOLERANCE)
        # scaled cosines (up to 30): float32 rounding shows at 1e-4
        np.testing.assert_allclose(got.frame_scores, expected.frame_scores.numpy(), atol=1e-3)


def test_the_check_names_a_graph_that_disagrees(onnx_models, tmp_path):
    """Another model's graph (other random weights) in place of the folder's own."""
    folder, _ = onnx_models["hubert_base"]
    other = write_model_folder(tmp_path / "other", shrunk("hubert_base", tmp_path / "enc",
                                                          seed=1), CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(other)
    with pytest.raises(OnnxCheckError, match=r"generated clip of \d+ samples: .*(differ by|says)"):
        compare_backends(EmotionRecognizer.from_hparams(source=str(folder)),
                         OnnxEmotionRecognizer(other))


def test_the_check_stops_a_graph_whose_group_norm_sees_the_padding(tmp_path, monkeypatch):
    """Without the per-utterance mask, a group-norm front end (hubert_base) normalises padded
    utterances over their padding too: the export's own check must refuse that graph."""
    from lobes.deploy import onnx_export

    def batched_front_end(feature_encoder, encoder, input_values):
        hidden = input_values[:, None]
        for layer in feature_encoder.conv_layers:
            hidden = layer(hidden)
        return hidden

    monkeypatch.setattr(onnx_export, "_masked_group_norm_front_end", batched_front_end)
    folder = write_model_folder(tmp_path / "model", shrunk("hubert_base", tmp_path / "enc"),
                                CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(OnnxCheckError, match=r"generated clip of \d+ samples: "):
            export_onnx(folder)
    assert not (Path(folder) / "model.onnx").exists()


def write_inputs(folder):
    """A 44.1 kHz stereo clip, a 16 kHz one, a corrupt file and a too short one."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    soundfile.write(folder / "stereo_44k.wav", 0.1 * rng.standard_normal((44100, 2)), 44100)
    soundfile.write(folder / "mono_16k.wav", 0.1 * rng.standard_normal(20000), 16000)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    soundfile.write(folder / "short.wav", np.zeros(300), 16000)
    return folder


def test_onnx_command_line_imports_no_torch_and_prints_what_torch_prints(
    onnx_models, tmp_path, capsys
):
    folder, _ = onnx_models["wavlm_base_plus"]
    inputs = write_inputs(tmp_path / "inputs")
    plot = tmp_path / "plots" / "track.png"
    script = ("import sys\nfrom lobes.deploy import classify_cli\ntry:\n"
              "    classify_cli.main(sys.argv[1:])\nfinally:\n"
              "    print('torch imported' if 'torch' in sys.modules else 'no torch', "
              "file=sys.stderr)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(inputs), "--backend", "onnx", "--json",
         "--frames", "--plot", str(plot)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert completed.stderr.strip().endswith("no torch"), completed.stderr
    assert completed.returncode == 1  # two files failed, the others are classified
    onnx_records = [json.loads(line) for line in completed.stdout.splitlines()]
    assert sorted(path.name for path in plot.parent.iterdir()) == [
        "track_mono_16k.png", "track_stereo_44k.png"]

    with pytest.raises(SystemExit):
        classify_cli.main([str(folder), str(inputs), "--json", "--frames"])
    captured = capsys.readouterr()
    torch_records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["file"] for r in onnx_records] == [r["file"] for r in torch_records]
    assert len(onnx_records) == 2
    for ours, theirs in zip(onnx_records, torch_records, strict=True):
        assert ours["label"] == theirs["label"] and ours["n_frames"] == theirs["n_frames"]
        for name in CLASSES:
            assert ours["probabilities"][name] == pytest.approx(theirs["probabilities"][name],
                                                                abs=TOLERANCE)
        np.testing.assert_allclose(ours["frame_scores"], theirs["frame_scores"], atol=2e-3)
    # the same refusals, word for word
    skipped = sorted(line for line in completed.stderr.splitlines() if "skipped" in line)
    assert len(skipped) == 2
    assert skipped == sorted(line for line in captured.err.splitlines() if "skipped" in line)


def test_onnx_backend_without_an_onnx_export_says_how_to_get_one(tmp_path, capsys):
    folder = write_model_folder(tmp_path / "model", shrunk("hubert_large", tmp_path / "enc"),
                                CLASSES)
    clip = tmp_path / "a.wav"
    soundfile.write(clip, np.zeros(16000), 16000)
    with pytest.raises(SystemExit, match=r"model.onnx not found: export the run with "
                                         r"`gmptl-export RUN_FOLDER .* --onnx`"):
        classify_cli.main([folder, str(clip), "--backend", "onnx"])
    with pytest.raises(SystemExit):
        classify_cli.main([folder, str(clip), "--backend", "onnx", "--device", "cuda:0"])
    assert "--device and --precision choose how torch runs" in capsys.readouterr().err
