"""The one audio loader of the project: every stage, preparation and inference reads through it.

Audio is returned at 16 kHz mono (``docs/design.md``, section "Data contract"): a 1-D float32
tensor from ``read_audio`` (training, the torch inference path), the same samples as a numpy
array from ``read_waveform`` (the torch-free ONNX runtime path and the browser app). Multichannel
files are mixed down to mono by averaging the channels; other sample rates are resampled with
``resample``, torchaudio's windowed-sinc resampler (``torchaudio.functional.resample``
defaults) written in numpy so that the ONNX path, which must not import torch, converts a file
exactly as training does (``tests/test_audio.py`` holds the two within 1e-6). Anything that
cannot be used raises ``AudioError`` with a message naming the file and what to do about it.

Files are read with soundfile, the library under SpeechBrain's ``audio_io`` (which imports
torch). Ours adds what SpeechBrain's ``read_audio`` lacks: mono at 16 kHz, and an error that
names the file and the fix for every failure (SpeechBrain reports a bare ``RuntimeError``, and
its ``read_audio_info`` crashes with ``AttributeError`` on an empty file). This module imports
no torch: ``read_audio`` imports it when called.
"""

import math
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile

from lobes.models.frames import SAMPLE_RATE

# At or below this rate, speech has lost everything above 4 kHz: usable, but worth a warning.
BAND_LIMITED_RATE = 8000
# Output positions per block of the numpy resampler (our choice: a few MB per block).
RESAMPLE_BLOCK = 4096
# The sample formats that can hold NaN or infinity.
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the fix."""


class AudioInfo(NamedTuple):
    """Header facts of one audio file."""

    sample_rate: int
    channels: int
    n_samples: int
    duration: float


def _check_exists(path):
    if not path.exists():
        raise AudioError(
            f"audio file not found: {path}; check the path (and the data folder given to "
            "the preparation) or restore the file from the corpus release"
        )
    if not path.is_file():
        raise AudioError(f"not an audio file but a folder: {path}; give the path of a file")


def _unreadable(path, reason):
    return AudioError(
        f"cannot read audio file {path} ({reason}); the file is corrupt, truncated or not "
        "audio: restore it from the corpus release or re-convert it (16 kHz mono WAV)"
    )


def _empty(path):
    return AudioError(
        f"audio file {path} holds no samples; restore it from the corpus release or drop "
        "the utterance from the manifest"
    )


def _not_finite(path):
    return AudioError(
        f"audio file {path} holds NaN or infinite samples; re-export or re-convert it "
        "(e.g. to 16-bit PCM WAV) or drop the utterance from the manifest"
    )


# What soundfile raises on a file it cannot decode (corrupt, truncated, not audio); other
# errors (permissions, a full disk) are not about the file's content and pass through.
_DECODE_ERRORS = (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError)


def _reason(error):
    return str(error).strip() or type(error).__name__


def _sf_call(path, function, *args, **kwargs):
    """Run a soundfile function on ``path``; a file it cannot decode becomes ``AudioError``."""
    try:
        return function(str(path), *args, **kwargs)
    except _DECODE_ERRORS as error:
        raise _unreadable(path, _reason(error)) from error


def audio_info(path, check_samples=False):
    """Read the sample rate, channel count and length of an audio file from its header.

    Arguments
    ---------
    path : str or pathlib.Path
        Audio file in any format libsndfile reads (WAV, FLAC, ...).
    check_samples : bool
        Also make sure that the samples are finite, so that a NaN file is found before
        training rather than when a batch loads it. Only floating-point files can hold NaN or
        infinity: only those are read (in blocks), integer PCM such as IEMOCAP's costs nothing.

    Returns
    -------
    AudioInfo
        ``sample_rate`` (Hz), ``channels``, ``n_samples`` (per channel), ``duration`` (seconds).

    Raises
    ------
    AudioError
        If the file is missing, unreadable (corrupt, truncated header, not audio) or empty, or
        (``check_samples``) holds NaN or infinite samples.

    Example
    -------
    >>> import tempfile, pathlib, numpy, soundfile
    >>> wav_path = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(wav_path, numpy.zeros((8000, 2)), 16000)
    >>> audio_info(wav_path)
    AudioInfo(sample_rate=16000, channels=2, n_samples=8000, duration=0.5)
    """
    path = Path(path)
    _check_exists(path)
    header = _sf_call(path, soundfile.info)
    if header.frames <= 0:
        raise _empty(path)
    if check_samples and header.subtype in FLOAT_SUBTYPES:
        try:
            for block in soundfile.blocks(str(path), blocksize=1 << 20, dtype="float32"):
                if not np.isfinite(block).all():
                    raise _not_finite(path)
        except _DECODE_ERRORS as error:
            raise _unreadable(path, _reason(error)) from error
    return AudioInfo(
        sample_rate=int(header.samplerate),
        channels=int(header.channels),
        n_samples=int(header.frames),
        duration=header.frames / header.samplerate,
    )


def needs_conversion(info):
    """Tell whether ``read_audio`` will convert this file (not 16 kHz, or not mono).

    Example
    -------
    >>> needs_conversion(AudioInfo(16000, 1, 16000, 1.0))
    False
    >>> needs_conversion(AudioInfo(44100, 2, 44100, 1.0))
    True
    """
    return info.sample_rate != SAMPLE_RATE or info.channels != 1


def resample(waveform, orig_freq, new_freq):
    """Resample a 1-D float32 waveform: torchaudio's ``functional.resample`` in numpy.

    The same windowed-sinc filter (Hann window, 6 zero crossings, roll-off 0.99, torchaudio's
    defaults), computed in float32 and applied with a stride of ``orig_freq / gcd`` as
    torchaudio's ``conv1d`` does, giving ``ceil(len * new_freq / orig_freq)`` samples.

    Example
    -------
    >>> resample(np.ones(441, dtype=np.float32), 44100, 16000).shape
    (160,)
    """
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    zero_crossings, rolloff = 6, 0.99
    base_freq = min(orig, new) * rolloff
    width = math.ceil(zero_crossings * orig / base_freq)
    idx = np.arange(-width, width + orig, dtype=np.float32)[None, :] / np.float32(orig)
    t = np.arange(0, -new, -1, dtype=np.float32)[:, None] / np.float32(new) + idx
    t = np.clip(t * np.float32(base_freq), -zero_crossings, zero_crossings)
    window = np.cos(t * np.float32(math.pi / zero_crossings / 2)) ** 2
    t = t * np.float32(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, np.float32(1.0), np.sin(t) / t)
    kernels = (kernels * (window * np.float32(base_freq / orig))).astype(np.float32)
    padded = np.pad(waveform.astype(np.float32), (width, width + orig))
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernels.shape[1])[::orig]
    resampled = np.empty((len(windows), new), dtype=np.float32)
    # in blocks: a strided view is copied before the product (an hour at 44.1 kHz would copy
    # 0.7 GB at once)
    for start in range(0, len(windows), RESAMPLE_BLOCK):
        block = slice(start, start + RESAMPLE_BLOCK)
        resampled[block] = windows[block] @ kernels.T
    resampled = resampled.reshape(-1)
    return np.ascontiguousarray(resampled[: math.ceil(new * len(waveform) / orig)])


def read_waveform(path, target_sr=SAMPLE_RATE):
    """Load an audio file as a mono float32 numpy waveform at ``target_sr`` (no torch).

    Channels are averaged; other sample rates are converted with ``resample``. Silent audio is
    returned as it is. Audio at 8 kHz or less is accepted with a warning, because it lacks the
    upper half of the speech band.

    Arguments
    ---------
    path : str or pathlib.Path
        Audio file in any format libsndfile reads.
    target_sr : int
        Sample rate of the returned waveform (default 16000, the rate HuBERT expects).

    Returns
    -------
    numpy.ndarray
        1-D float32 array of ``ceil(n_samples * target_sr / file_rate)`` samples.

    Raises
    ------
    AudioError
        If the file is missing, unreadable, empty, or holds NaN or infinite samples.

    Example
    -------
    >>> import tempfile, pathlib
    >>> wav_path = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(wav_path, np.full((44100, 2), 0.25), 44100)
    >>> waveform = read_waveform(wav_path)
    >>> waveform.shape, waveform.dtype
    ((16000,), dtype('float32'))
    """
    path = Path(path)
    _check_exists(path)
    samples, file_sr = _sf_call(path, soundfile.read, dtype="float32", always_2d=True)
    if samples.shape[0] == 0:
        raise _empty(path)
    if not np.isfinite(samples).all():
        raise _not_finite(path)
    if file_sr <= BAND_LIMITED_RATE:
        warnings.warn(
            f"{path} is sampled at {file_sr} Hz: it is band-limited (nothing above "
            f"{file_sr // 2} Hz) and will be upsampled to {target_sr} Hz; expect lower accuracy",
            stacklevel=2,
        )
    waveform = samples.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(resample(waveform, int(file_sr), int(target_sr)))


def read_audio(path, target_sr=SAMPLE_RATE):
    """Load an audio file as a mono float32 torch waveform at ``target_sr``.

    ``read_waveform`` as a tensor (the same checks, mixdown and resampling).

    Returns
    -------
    torch.Tensor
        1-D float32 tensor of ``ceil(n_samples * target_sr / file_rate)`` samples.

    Raises
    ------
    AudioError
        If the file is missing, unreadable, empty, or holds NaN or infinite samples.

    Example
    -------
    >>> import tempfile, pathlib
    >>> wav_path = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(wav_path, np.full((44100, 2), 0.25), 44100)
    >>> waveform = read_audio(wav_path)
    >>> waveform.shape, waveform.dtype
    (torch.Size([16000]), torch.float32)
    """
    import torch  # here, not at the top: the ONNX runtime path imports this module without torch

    return torch.from_numpy(read_waveform(path, target_sr))
