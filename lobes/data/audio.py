"""The one audio loader of the project: every stage, preparation and inference reads through it.

Audio is returned as a 1-D float32 tensor at 16 kHz (``docs/design.md``, section "Data
contract"): multichannel files are mixed down to mono by averaging the channels, other sample
rates are resampled with ``torchaudio.functional.resample``. Anything that cannot be used raises
``AudioError`` with a message naming the file and what to do about it.

Files are opened through SpeechBrain's soundfile layer (``speechbrain.dataio.audio_io``: ``load``
and ``info``). Ours stays on top of it for what SpeechBrain's ``read_audio`` lacks: it returns
neither mono nor the file's rate (so no resampling), reports every failure as a bare
``RuntimeError``, and its ``read_audio_info`` crashes (``AttributeError``) on an empty file. The
block-wise NaN scan reads with soundfile directly (``audio_io`` has no block reader).
"""

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile
import torch
import torchaudio
from speechbrain.dataio import audio_io

from lobes.models.frames import SAMPLE_RATE

# At or below this rate, speech has lost everything above 4 kHz: usable, but worth a warning.
BAND_LIMITED_RATE = 8000
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


def _reason(error):
    """What went wrong, from an ``audio_io`` error (a ``RuntimeError`` around the real one)."""
    cause = error.__cause__ or error
    return str(cause).strip() or type(cause).__name__


def _sb_call(path, function, *args, **kwargs):
    """Run an ``audio_io`` function on ``path``; a file it cannot read becomes ``AudioError``."""
    try:
        return function(str(path), *args, **kwargs)
    except RuntimeError as error:
        cause = error.__cause__
        # audio_io wraps every Exception; only file errors mean an unusable file
        if cause is not None and not isinstance(cause, (RuntimeError, ValueError, TypeError)):
            raise cause from None
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
    header = _sb_call(path, audio_io.info)
    if header.frames <= 0:
        raise _empty(path)
    if check_samples and header.subtype in FLOAT_SUBTYPES:
        try:
            for block in soundfile.blocks(str(path), blocksize=1 << 20, dtype="float32"):
                if not np.isfinite(block).all():
                    raise _not_finite(path)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise _unreadable(path, str(error).strip() or type(error).__name__) from error
    return AudioInfo(
        sample_rate=int(header.sample_rate),
        channels=int(header.channels),
        n_samples=int(header.frames),
        duration=header.frames / header.sample_rate,
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


def read_audio(path, target_sr=SAMPLE_RATE):
    """Load an audio file as a mono float32 waveform at ``target_sr``.

    Reads with SpeechBrain's ``audio_io.load``; kept because SpeechBrain's ``read_audio`` returns
    the file's channels at the file's rate, with no conversion and no error naming the fix.
    Channels are averaged; other sample rates are resampled with
    ``torchaudio.functional.resample``. Silent audio is returned as it is. Audio at 8 kHz or
    less is accepted with a warning, because it lacks the upper half of the speech band.

    Arguments
    ---------
    path : str or pathlib.Path
        Audio file in any format libsndfile reads.
    target_sr : int
        Sample rate of the returned waveform (default 16000, the rate HuBERT expects).

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
    >>> import tempfile, pathlib, numpy, soundfile
    >>> wav_path = pathlib.Path(tempfile.mkdtemp()) / "a.wav"
    >>> soundfile.write(wav_path, numpy.full((44100, 2), 0.25), 44100)
    >>> waveform = read_audio(wav_path)
    >>> waveform.shape, waveform.dtype
    (torch.Size([16000]), torch.float32)
    """
    path = Path(path)
    _check_exists(path)
    samples, file_sr = _sb_call(path, audio_io.load, channels_first=False, dtype=torch.float32)
    samples = samples.numpy()  # (n_samples, channels)
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
    waveform = torch.from_numpy(samples.mean(axis=1, dtype=np.float32))
    if file_sr != target_sr:
        waveform = torchaudio.functional.resample(waveform, int(file_sr), int(target_sr))
    return waveform.contiguous()
