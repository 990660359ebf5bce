"""The encoder lobe in every real configuration (shrunk in size, every behaviour flag kept).

HuBERT base and large, WavLM base+ and large, wav2vec 2.0 large, built by
``lobes.fixtures.encoders`` with their hub flags: LayerDrop, SpecAugment, group- or layer-norm
front end, stable layer norm, conv bias, waveform normalisation.
"""

import numpy as np
import pytest
import torch
from transformers import AutoModel

from lobes.fixtures.encoders import HUB_CONFIGS, SHRUNK_SIZE, shrunk
from lobes.models.encoder import SSLEncoder, encoder_dim
from lobes.models.frames import n_frames

NAMES = sorted(HUB_CONFIGS)
LAYERS = SHRUNK_SIZE["n_layers"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: shrunk(name, tmp_path_factory.mktemp(name)) for name in NAMES}


def encoder_of(folders, name, tmp_path, **options):
    torch.manual_seed(0)
    return SSLEncoder(folders[name], tmp_path, output_layers=list(range(LAYERS + 1)), **options)


@pytest.mark.parametrize("name", NAMES)
def test_family_is_read_from_the_config_and_dim_from_the_encoder(folders, name, tmp_path):
    encoder = encoder_of(folders, name, tmp_path)
    family = HUB_CONFIGS[name]["config"]["model_type"]
    assert encoder.model.config.model_type == family
    assert encoder_dim(folders[name]) == encoder.hidden_size == SHRUNK_SIZE["hidden_size"]
    assert encoder.normalize_wav == HUB_CONFIGS[name]["feature_extractor"]["do_normalize"]


@pytest.mark.parametrize("name", NAMES)
def test_layers_are_hf_hidden_states_and_the_last_one_is_normalised(folders, name, tmp_path):
    """Intermediate layers as HF ``hidden_states``; the last one is ``last_hidden_state`` (the
    final layer norm of stable-layer-norm models included, unlike ``hidden_states[-1]``)."""
    encoder = encoder_of(folders, name, tmp_path).eval()
    wav = torch.from_numpy(np.random.default_rng(0).standard_normal(12345).astype(np.float32))
    hf_model = AutoModel.from_pretrained(folders[name]).eval()
    prepared, _ = encoder.prepare_wavs(wav[None], torch.ones(1))
    with torch.no_grad():
        reference = hf_model(prepared, output_hidden_states=True)
        ours, _ = encoder(wav[None], torch.ones(1))
    for layer in range(LAYERS):
        torch.testing.assert_close(ours[layer], reference.hidden_states[layer],
                                   atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours[LAYERS], reference.last_hidden_state, atol=1e-4, rtol=1e-4)
    stable = HUB_CONFIGS[name]["config"]["do_stable_layer_norm"]
    assert torch.allclose(reference.hidden_states[-1], ours[LAYERS], atol=1e-3) != stable


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layerdrop", [0.1, 0.5, 1.0])
def test_layerdrop_never_crashes_nor_shifts_a_layer(folders, name, layerdrop, tmp_path):
    """Whatever layers LayerDrop skips, layer i is the output of the last layer <= i that ran
    (identity for a skipped layer), and the last layer is the encoder's own output."""
    encoder = encoder_of(folders, name, tmp_path, freeze="none", layerdrop=layerdrop).train()
    layers = encoder.model.encoder.layers
    ran = {}

    def remember(index):
        def hook(module, inputs, output):
            ran[index] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [layer.register_forward_hook(remember(index))
               for index, layer in enumerate(layers, start=1)]
    handles.append(encoder.model.encoder.dropout.register_forward_hook(remember(0)))
    for draw in range(8):
        ran.clear()
        hidden, _ = encoder(torch.randn(2, 8000), torch.tensor([1.0, 0.7]))
        for layer in range(LAYERS):
            last_run = max(index for index in ran if index <= layer)
            assert torch.equal(hidden[layer], ran[last_run]), (draw, layer)
        hidden.sum().backward()
    for handle in handles:
        handle.remove()
    if layerdrop == 1.0 and name.startswith("hubert"):
        assert set(ran) == {0}  # every layer skipped (WavLM never skips its first)


@pytest.mark.parametrize("name", NAMES)
def test_spec_augment_trains_batches_of_very_short_clips(folders, name, tmp_path):
    encoder = encoder_of(folders, name, tmp_path, freeze="none", apply_spec_augment=True,
                         mask_time_prob=0.5).train()
    # 0.1 s clips: 4 frames, fewer than one mask span (HF's own draw raises on these)
    hidden, counts = encoder(torch.randn(3, 1600), torch.tensor([1.0, 0.8, 0.5]))
    hidden.sum().backward()
    assert counts.tolist() == [n_frames(1600), n_frames(1280), n_frames(800)]
    # spans fall on real frames only
    frame_counts = torch.tensor([200, 40, 5])
    for _ in range(20):
        mask = encoder.spec_augment_mask(frame_counts, 200)
        assert mask[0].any()
        for row, count in zip(mask, frame_counts.tolist(), strict=True):
            assert not row[count:].any()
        assert not mask[2].any()


@pytest.mark.parametrize("name", NAMES)
def test_an_utterance_gives_the_same_frames_alone_or_padded_in_a_batch(folders, name, tmp_path):
    """Every front end: the group-norm ones (base models) normalise over time, so the lobe runs
    them per utterance; without that the frames differed by up to 0.47 (relative)."""
    encoder = encoder_of(folders, name, tmp_path).eval()
    generator = torch.Generator().manual_seed(1)
    lengths = [16000, 9000, 4000]
    wavs = torch.zeros(3, 16000)
    for row, length in enumerate(lengths):
        wavs[row, :length] = torch.randn(length, generator=generator)
    with torch.no_grad():
        batched, counts = encoder(wavs, torch.tensor(lengths) / 16000)
        for row, length in enumerate(lengths):
            alone, _ = encoder(wavs[row:row + 1, :length])
            real = batched[:, row, : counts[row]]
            difference = (alone[:, 0] - real).abs().max() / alone.abs().max()
            assert difference < 1e-4, (row, float(difference))


def test_layers_beyond_the_last_asked_for_are_dropped_for_extraction(folders, tmp_path):
    encoder = SSLEncoder(folders["hubert_large"], tmp_path, output_layers=[1], freeze="all")
    full, _ = encoder.eval()(torch.randn(1, 8000, generator=torch.Generator().manual_seed(2)))
    encoder.drop_layers_after(1)
    assert len(encoder.model.encoder.layers) == 1
    cut, _ = encoder(torch.randn(1, 8000, generator=torch.Generator().manual_seed(2)))
    torch.testing.assert_close(cut, full)
    with pytest.raises(ValueError, match="go beyond"):
        encoder.output_layers = [2]
        encoder.drop_layers_after(1)


def test_data2vec_audio_is_refused_with_the_reason(tmp_path):
    """data2vec-audio loads through the same wrapper, but its stack of positional convolutions
    lets padding reach the real frames (measured: up to 2.4 absolute difference between an
    utterance alone and padded in a batch), which would break batch independence."""
    from transformers import Data2VecAudioConfig, Data2VecAudioModel

    config = Data2VecAudioConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, conv_dim=(16,) * 7,
                                 num_conv_pos_embedding_groups=4)
    Data2VecAudioModel(config).save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="data2vec-audio model, which the encoder lobe does not "
                                         "support: its stack of positional convolutions"):
        SSLEncoder(tmp_path / "model", tmp_path / "cache")
