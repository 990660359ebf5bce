"""The one audio loader: conversion to 16 kHz mono, and a clear AudioError for unusable files."""

import numpy as np
import pytest
import soundfile
import torch

from lobes.data.audio import AudioError, AudioInfo, audio_info, needs_conversion, read_audio

TONE_HZ = 440.0


def _tone(sample_rate, duration_s=1.0, amplitude=0.5):
    time_s = np.arange(round(duration_s * sample_rate)) / sample_rate
    return amplitude * np.sin(2 * np.pi * TONE_HZ * time_s)


def _correlation(first, second):
    # Skip the edges, where resampling filters ramp up.
    first, second = np.asarray(first)[400:-400], np.asarray(second)[400:-400]
    return float(np.corrcoef(first, second)[0, 1])


def test_44k_stereo_becomes_16k_mono_mean_of_channels(tmp_path):
    wav_path = tmp_path / "stereo.wav"
    left = _tone(44100)
    soundfile.write(wav_path, np.stack([left, np.zeros_like(left)], axis=1), 44100)

    waveform = read_audio(wav_path)

    assert waveform.dtype == torch.float32 and waveform.ndim == 1
    assert waveform.shape[0] == 16000
    expected = _tone(16000) / 2  # mean of the tone and a silent channel
    assert _correlation(waveform, expected) > 0.99
    assert np.abs(waveform.numpy()[400:-400] - expected[400:-400]).max() < 0.01


def test_48k_mono_is_resampled(tmp_path):
    wav_path = tmp_path / "48k.wav"
    soundfile.write(wav_path, _tone(48000, duration_s=1.5), 48000)

    waveform = read_audio(wav_path)

    assert waveform.shape[0] == 24000
    assert _correlation(waveform, _tone(16000, duration_s=1.5)) > 0.99


def test_16k_mono_is_returned_as_written(tmp_path):
    wav_path = tmp_path / "16k.wav"
    tone = _tone(16000)
    soundfile.write(wav_path, tone, 16000, subtype="PCM_16")

    waveform = read_audio(wav_path)

    assert waveform.shape[0] == 16000
    np.testing.assert_allclose(waveform.numpy(), tone, atol=1 / 32768)


def test_8k_is_upsampled_with_a_band_limited_warning(tmp_path):
    wav_path = tmp_path / "8k.wav"
    soundfile.write(wav_path, _tone(8000), 8000)

    with pytest.warns(UserWarning, match="band-limited"):
        waveform = read_audio(wav_path)

    assert waveform.shape[0] == 16000
    assert _correlation(waveform, _tone(16000)) > 0.99


def test_silent_audio_is_allowed(tmp_path):
    wav_path = tmp_path / "silence.wav"
    soundfile.write(wav_path, np.zeros(8000), 16000)

    waveform = read_audio(wav_path)

    assert waveform.shape[0] == 8000 and float(waveform.abs().max()) == 0.0


def test_audio_info_reads_the_header(tmp_path):
    wav_path = tmp_path / "stereo.wav"
    soundfile.write(wav_path, np.zeros((22050, 2)), 44100)

    info = audio_info(wav_path)

    assert info == AudioInfo(sample_rate=44100, channels=2, n_samples=22050, duration=0.5)
    assert needs_conversion(info)
    assert not needs_conversion(AudioInfo(16000, 1, 16000, 1.0))
    assert needs_conversion(AudioInfo(16000, 2, 16000, 1.0))
    assert needs_conversion(AudioInfo(8000, 1, 8000, 1.0))


def _write_empty(path):
    soundfile.write(path, np.zeros(0), 16000)


def _write_truncated_header(path):
    soundfile.write(path, _tone(16000), 16000)
    path.write_bytes(path.read_bytes()[:20])


def _write_text(path):
    path.write_text("this is not audio, just a text file with a .wav name\n")


def _write_garbage(path):
    path.write_bytes(bytes(range(256)) * 16)


@pytest.mark.parametrize(
    "make_bad_file",
    [None, _write_empty, _write_truncated_header, _write_text, _write_garbage],
    ids=["missing", "empty", "truncated_header", "text_file", "garbage"],
)
@pytest.mark.parametrize("loader", [read_audio, audio_info], ids=["read_audio", "audio_info"])
def test_unusable_files_raise_audio_error_naming_the_file(tmp_path, make_bad_file, loader):
    wav_path = tmp_path / "Ses01F_impro01_F000.wav"
    if make_bad_file is not None:
        make_bad_file(wav_path)

    with pytest.raises(AudioError) as raised:
        loader(wav_path)

    message = str(raised.value)
    assert str(wav_path) in message
    assert "restore" in message  # says what to do
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_samples_raise(tmp_path, bad_value):
    wav_path = tmp_path / "float.wav"
    samples = _tone(16000)
    samples[100] = bad_value
    soundfile.write(wav_path, samples, 16000, subtype="FLOAT")

    with pytest.raises(AudioError, match="NaN or infinite") as raised:
        read_audio(wav_path)

    assert str(wav_path) in str(raised.value)


@pytest.mark.parametrize("file_rate", [8000, 22050, 44100, 48000])
def test_numpy_resampler_is_torchaudios(file_rate):
    """The torch-free path converts a file exactly as training did with torchaudio."""
    import torchaudio

    from lobes.data.audio import resample

    rng = np.random.default_rng(file_rate)
    noise = rng.standard_normal(file_rate + 123).astype(np.float32)
    ours = resample(noise, file_rate, 16000)
    theirs = torchaudio.functional.resample(torch.from_numpy(noise), file_rate, 16000).numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-6)  # measured: at most 4.8e-7
