"""The shared lobes: frame arithmetic, the encoder lobe's basics, pooling, heads, AM-Softmax
(the encoder in every real configuration: test_encoder.py)."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import HubertModel

from lobes.models.encoder import SSLEncoder
from lobes.models.frames import TooShortError, n_frames
from lobes.models.heads import (
    AMSoftmaxLoss,
    CosineHead,
    MultiScaleFrameHead,
    multi_scale_frame_loss,
)
from lobes.models.pooling import MaskedPooling


@pytest.fixture(scope="module")
def encoder(tiny_hubert_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = SSLEncoder(tiny_hubert_dir, tmp_path_factory.mktemp("save"),
                          output_layers=[0, 1, 2, 3], freeze="none")
    return model.eval()


def test_n_frames_formula_matches_hf_for_every_length(tiny_hubert_dir):
    hf_model = HubertModel.from_pretrained(tiny_hubert_dir)
    lengths = torch.arange(400, 80001)
    expected = hf_model._get_feat_extract_output_lengths(lengths)
    assert torch.equal(n_frames(lengths), expected.long())


def test_n_frames_matches_real_model_output_at_edges(encoder):
    edges = [400, 401, 719, 720, 721, 1039, 1040, 16000, 16079, 16080, 80000]
    for n_samples in edges:
        hidden, frame_counts = encoder(torch.randn(1, n_samples))
        assert hidden.shape[2] == n_frames(n_samples) == int(frame_counts[0]), n_samples


def test_too_short_clip_is_a_clear_error(encoder):
    with pytest.raises(TooShortError, match="399 samples is shorter than one HuBERT frame"):
        encoder(torch.randn(1, 399))
    with pytest.raises(TooShortError):
        n_frames(10)


def test_negative_and_invalid_layers(tiny_hubert_dir, tmp_path):
    model = SSLEncoder(tiny_hubert_dir, tmp_path, output_layers=[-1, 1])
    assert model.output_layers == [3, 1]
    with pytest.raises(ValueError, match="valid indices are 0..3"):
        SSLEncoder(tiny_hubert_dir, tmp_path, output_layers=[4])


def test_padding_content_changes_neither_pooling_nor_frame_loss(encoder):
    torch.manual_seed(1)
    long_wav, short_wav = torch.randn(16000), torch.randn(9000)
    batch_zero = torch.zeros(2, 16000)
    batch_zero[0], batch_zero[1, :9000] = long_wav, short_wav
    batch_noise = batch_zero.clone()
    batch_noise[1, 9000:] = 5 * torch.randn(7000)
    wav_lens = torch.tensor([1.0, 9000 / 16000])
    head = MultiScaleFrameHead(32, [4, 8])
    poolings = [MaskedPooling("mean"), MaskedPooling("stats"), MaskedPooling("attentive", 32)]
    gmp_labels = [torch.randint(0, 4, (2, 49)), torch.randint(0, 8, (2, 49))]
    outputs = []
    with torch.no_grad():
        for batch in (batch_zero, batch_noise):
            hidden, counts = encoder(batch, wav_lens)
            frames = hidden[-1]
            pooled = [pool(frames, counts) for pool in poolings]
            loss = multi_scale_frame_loss(head(frames), gmp_labels, counts, [1.0, 0.5])
            outputs.append((pooled, loss, counts))
        alone, _ = encoder(short_wav[None])
    assert outputs[0][2].tolist() == [49, n_frames(9000)]
    for pooled_zero, pooled_noise in zip(outputs[0][0], outputs[1][0], strict=True):
        torch.testing.assert_close(pooled_zero, pooled_noise, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs[0][1], outputs[1][1], atol=1e-5, rtol=1e-5)
    # the padded utterance's real frames equal those of the utterance encoded alone
    real = n_frames(9000)
    with torch.no_grad():
        padded, _ = encoder(batch_noise, wav_lens)
    torch.testing.assert_close(padded[-1, 1, :real], alone[-1, 0], atol=1e-4, rtol=1e-4)
    # and changing a real sample does change the outputs (the test can fail)
    batch_noise[1, 100] += 3.0
    with torch.no_grad():
        changed, counts = encoder(batch_noise, wav_lens)
    assert not torch.allclose(MaskedPooling("mean")(changed[-1], counts)[1],
                              outputs[0][0][0][1], atol=1e-5)


def test_frame_loss_ignores_labels_on_padding():
    logits = torch.randn(2, 6, 5)
    labels = torch.randint(0, 5, (2, 6))
    counts = torch.tensor([6, 3])
    changed = labels.clone()
    changed[1, 3:] = (labels[1, 3:] + 1) % 5
    head_loss = multi_scale_frame_loss([logits], [labels], counts, [1.0])
    assert torch.equal(head_loss, multi_scale_frame_loss([logits], [changed], counts, [1.0]))
    changed[1, 0] = (labels[1, 0] + 1) % 5
    assert not torch.equal(head_loss, multi_scale_frame_loss([logits], [changed], counts, [1.0]))


def test_am_softmax_margin_in_training_loss_only():
    torch.manual_seed(0)
    head = CosineHead(8, 4)
    cosines = head(torch.randn(5, 8))
    targets = torch.tensor([0, 1, 2, 3, 0])
    with_margin = AMSoftmaxLoss(margin=0.2, scale=30.0)
    without = AMSoftmaxLoss(margin=0.0, scale=30.0)
    assert with_margin(cosines, targets) > without(cosines, targets)
    expected = torch.nn.functional.cross_entropy(30.0 * cosines, targets)
    torch.testing.assert_close(without(cosines, targets), expected)
    torch.testing.assert_close(with_margin.scores(cosines), 30.0 * cosines)
    torch.testing.assert_close(with_margin.scores(cosines), without.scores(cosines))


@pytest.mark.parametrize(
    "freeze, cnn_trainable, transformer_trainable",
    [("none", True, True), ("cnn", False, True), ("all", False, False)],
)
def test_freeze_options(tiny_hubert_dir, tmp_path, freeze, cnn_trainable, transformer_trainable):
    model = SSLEncoder(tiny_hubert_dir, tmp_path, freeze=freeze)
    hf = model.model
    assert all(p.requires_grad == cnn_trainable for p in hf.feature_extractor.parameters())
    assert all(p.requires_grad == transformer_trainable for p in hf.encoder.layers.parameters())
    model.train()
    assert hf.feature_extractor.training == cnn_trainable


def test_tiny_model_round_trips_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "tiny"
    subprocess.run(
        [sys.executable, "-m", "lobes.fixtures.encoders", str(out), "--layers", "2", "--dim", "48"],
        check=True, capture_output=True,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 48
    assert (out / "preprocessor_config.json").exists()
    encoder = SSLEncoder(str(out), tmp_path / "save", output_layers=[-1])
    saved = HubertModel.from_pretrained(out).state_dict()
    loaded = encoder.model.state_dict()
    assert saved.keys() == loaded.keys()
    for key, value in saved.items():
        assert torch.equal(value, loaded[key]), key
    hidden, _ = encoder(torch.randn(1, 3200))
    assert hidden.shape == (1, 1, n_frames(3200), 48)
