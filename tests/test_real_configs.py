"""Every step of the recipe through every real encoder configuration, and one full-size run.

The encoders are random-weight models in the hub configurations of hubert-base-ls960,
hubert-large-ll60k, wavlm-base-plus, wavlm-large and wav2vec2-large-lv60 (lobes.fixtures.encoders),
shrunk in depth and width with every behaviour flag kept, run with the recipe's own encoder
fragment (hparams/encoders/<name>.yaml: LayerDrop and SpecAugment on). Stage 0, the GMP
extraction, stages 1 and 2, the baseline, the export and gmptl-classify run in turn; two of the
configurations train and evaluate in bf16 autocast (on the CPU: the plumbing, not the speed).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from recipe_helpers import RECIPE_DIR, REPO, recipe_module

from lobes.deploy import classify_cli
from lobes.deploy.export import export_run
from lobes.deploy.inference import EmotionRecognizer
from lobes.fixtures.encoders import HUB_CONFIGS, shrunk, write_random_encoder
from lobes.gmp.labels import read_label_file
from lobes.models.frames import n_frames

NAMES = sorted(HUB_CONFIGS)
BF16 = {"hubert_large", "wavlm_base_plus"}
GMP_OPTIONS = ["--gmp_scales=[4, 8]", "--gmp_scale_weights=[1.0, 1.0]"]
STEPS = [("train_mtl", "stage0_mtl.yaml"), ("extract_gmp", "gmp.yaml"), ("train", "stage1.yaml"),
         ("train", "stage2.yaml"), ("train", "baseline.yaml")]


@pytest.fixture(scope="module")
def full_size_corpus(tmp_path_factory):
    """20 demo utterances (2 per speaker): with valid_ratio 0.5, fold 1 trains on 8."""
    make_demo_corpus = recipe_module("make_demo_corpus").make_demo_corpus
    return make_demo_corpus(tmp_path_factory.mktemp("two"), seed=6, utts_per_speaker=2)


@pytest.fixture(scope="module")
def micro_corpus(tmp_path_factory):
    """40 demo utterances (4 per speaker): fold 1 trains on 28, validates on 4, tests on 8."""
    make_demo_corpus = recipe_module("make_demo_corpus").make_demo_corpus
    return make_demo_corpus(tmp_path_factory.mktemp("micro"), seed=5, utts_per_speaker=4)


def run_steps(corpus, encoder_source, fragment, root, *extra, gmp_layer=1, steps=STEPS,
              valid_ratio=0.15):
    arguments = [f"--data_folder={corpus}", "--overrides", str(fragment),
                 str(RECIPE_DIR / "hparams" / "demo.yaml"), f"--encoder_source={encoder_source}",
                 f"--output_root={root}", "--number_of_epochs=1", f"--gmp_layer={gmp_layer}",
                 f"--valid_ratio={valid_ratio}", *GMP_OPTIONS, *extra]
    for script, hparams in steps:
        recipe_module(script).main([str(RECIPE_DIR / "hparams" / hparams), *arguments])


@pytest.mark.parametrize("name", NAMES)
def test_every_step_runs_through_the_real_configuration(name, micro_corpus, tmp_path):
    encoder_source = shrunk(name, tmp_path / "encoder")
    root = tmp_path / "fold1"
    precision = ["--precision=bf16", "--eval_precision=bf16"] if name in BF16 else []
    run_steps(micro_corpus, encoder_source, REPO / "hparams" / "encoders" / f"{name}.yaml",
              root, *precision)

    for step in ("stage0", "stage1", "stage2", "baseline"):
        assert (root / step / "encoder.ckpt").exists(), step
        settings = json.loads((root / step / "settings.json").read_text())["settings"]
        assert settings["layerdrop"] > 0 and settings["apply_spec_augment"] is True
        assert settings["run_option:precision"] == ("bf16" if name in BF16 else "fp32")
    manifest = json.loads((root / "prepare" / "test.json").read_text())
    labels = read_label_file(root / "gmp" / "test_L1_K8.km")
    for utt_id, entry in manifest.items():
        assert len(labels[utt_id]) == n_frames(round(entry["duration"] * 16000))
    assert not (root / "gmp" / "cache").exists()  # deleted once the labels are written

    model = export_run(root / "stage2", tmp_path / "model")
    recognizer = EmotionRecognizer.from_hparams(source=model, savedir=tmp_path / "cache")
    wavs = [entry["wav"] for entry in manifest.values()][:3]
    predictions = [recognizer.classify_file(wav) for wav in wavs]
    for prediction in predictions:
        assert prediction.label in recognizer.classes
        assert abs(float(prediction.probabilities.sum()) - 1) < 1e-5
    # the test-time scores of training, reproduced by the exported model
    scores = {row.split(",")[0]: [float(x) for x in row.split(",")[3:]] for row in
              (root / "stage2" / "predictions.csv").read_text().splitlines()[1:]}
    tolerance = 0.05 if name in BF16 else 1e-4
    for wav, prediction in zip(wavs, predictions, strict=True):
        utt_id = wav.rsplit("/", 1)[1][:-4]
        assert prediction.probabilities.tolist() == pytest.approx(scores[utt_id], abs=tolerance)
    classify_cli.main([model, *wavs[:1], "--json"])


@pytest.mark.parametrize("name", ["hubert_base", "hubert_large"])
def test_gmp_labels_and_scores_do_not_depend_on_the_batch(name, micro_corpus, tmp_path):
    """One front end of each type (group norm, layer norm): the label files of two ranks that
    encode different utterances equal one process's, and gmptl-classify gives the same scores
    for an utterance alone and in a padded batch."""
    encoder_source = shrunk(name, tmp_path / "encoder")
    fragment = REPO / "hparams" / "encoders" / f"{name}.yaml"
    run_steps(micro_corpus, encoder_source, fragment, tmp_path / "fold1",
              steps=[STEPS[0], STEPS[1], STEPS[4]])  # stage 0, the extraction, the baseline
    two_ranks = tmp_path / "two_ranks_gmp"
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(RECIPE_DIR / "extract_gmp.py"), str(RECIPE_DIR / "hparams" / "gmp.yaml"),
         f"--data_folder={micro_corpus}", "--overrides", str(fragment),
         str(RECIPE_DIR / "hparams" / "demo.yaml"), f"--encoder_source={encoder_source}",
         f"--output_root={tmp_path / 'fold1'}", f"--output_folder={two_ranks}", *GMP_OPTIONS,
         "--gmp_layer=1", "--valid_ratio=0.15",
         "--distributed_backend=gloo"],
        check=True, capture_output=True)
    for split in ("train", "valid", "test"):
        for k in (4, 8):
            alone = read_label_file(tmp_path / "fold1" / "gmp" / f"{split}_L1_K{k}.km")
            ranks = read_label_file(two_ranks / f"{split}_L1_K{k}.km")
            assert alone.keys() == ranks.keys()
            assert all(np.array_equal(alone[u], ranks[u]) for u in alone), (split, k)
    model = export_run(tmp_path / "fold1" / "baseline", tmp_path / "model")
    recognizer = EmotionRecognizer.from_hparams(source=model, savedir=tmp_path / "cache")
    manifest = json.loads((tmp_path / "fold1" / "prepare" / "test.json").read_text())
    waveforms = [recognizer.load_audio(entry["wav"]) for entry in manifest.values()]
    lengths = torch.tensor([len(wave) for wave in waveforms])
    padded = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)
    together = recognizer.classify_batch(padded, lengths / lengths.max()).probabilities
    for row, waveform in enumerate(waveforms):
        alone = recognizer.classify_batch(waveform[None]).probabilities[0]
        torch.testing.assert_close(alone, together[row], atol=1e-5, rtol=1e-4)


def test_full_size_hubert_base_runs_one_step_of_every_stage(full_size_corpus, tmp_path):
    """The hubert-base-ls960 configuration at full size (94 M parameters): one training step of
    each stage (one batch an epoch, one epoch), the extraction and the export."""
    encoder_source = write_random_encoder("hubert_base", tmp_path / "encoder")
    root = tmp_path / "fold1"
    run_steps(full_size_corpus, encoder_source,
              REPO / "hparams" / "encoders" / "hubert_base.yaml", root, "--num_buckets=1",
              "--max_batch_length=600", "--freeze_encoder=cnn", "--eval_batch_size=8",
              gmp_layer=6, valid_ratio=0.5)
    for step in ("stage0", "stage1", "stage2", "baseline"):
        log = (root / step / "train_log.txt").read_text()
        assert "epoch: 1" in log, step
        checkpoints = list((root / step / "save").glob("CKPT+*"))
        assert len(checkpoints) == 1
        assert not list(checkpoints[0].glob("optimizer*"))  # no optimizer state once finished
        assert (root / step / "encoder.ckpt").samefile(checkpoints[0] / "encoder.ckpt")
    assert read_label_file(root / "gmp" / "test_L6_K8.km")
    export_run(root / "stage2", tmp_path / "model")
