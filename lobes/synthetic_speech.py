"""Speech-like audio for the demo corpus: a glottal source through moving formant resonators.

``recipes/IEMOCAP/GMP-TL/make_demo_corpus.py`` lays the corpus out like IEMOCAP; this module
makes its audio. A glottal pulse source with jitter and shimmer is shaped by four formant
resonators that move from syllable to syllable, with consonant noise, pauses and breath noise.
Gender shows in F0 and formant scale, emotion in prosody and voice quality (level, F0 level and
range, spectral tilt, speaking rate, breathiness). Everything is drawn from the generators it is
given, so a seed gives the same corpus.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, lfilter

from lobes.frames import SAMPLE_RATE

# Vowel formant targets F1-F4 (Hz) of an adult male voice; female voices are scaled up.
VOWEL_FORMANTS = np.array(
    [
        [730, 1090, 2440, 3400],  # a
        [270, 2290, 3010, 3700],  # i
        [300, 870, 2240, 3300],  # u
        [530, 1840, 2480, 3500],  # e
        [570, 840, 2410, 3300],  # o
        [660, 1720, 2410, 3400],  # ae
        [490, 1350, 1690, 3300],  # er
    ],
    dtype=float,
)
FORMANT_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])


@dataclass(frozen=True)
class EmotionStyle:
    """Prosody and voice quality of one emotion, relative to the speaker's neutral voice."""

    f0_factor: float  # mean F0 relative to the speaker's base F0
    f0_range_semitones: float  # spread of the syllable F0 targets
    level_db: float  # active-speech level relative to neutral
    syllable_s: float  # mean syllable duration (speaking rate)
    tilt_pole: float  # one-pole low-pass after the source: higher = steeper spectral tilt
    open_quotient: float  # glottal open phase share: higher = softer, breathier pulses
    breath: float  # aspiration noise mixed into the source
    formant_shift: float  # F1-F2 scale (smile, wide jaw opening, lax articulation)
    pause_s: float  # mean pause between phrases
    jitter: float  # cycle-to-cycle F0 perturbation (relative std)
    shimmer: float  # cycle-to-cycle amplitude perturbation (relative std)
    fricative_level: float  # consonant noise level relative to the vowel after it


EMOTION_STYLES = {
    "neu": EmotionStyle(
        f0_factor=1.0, f0_range_semitones=3.0, level_db=0.0, syllable_s=0.2, tilt_pole=0.8,
        open_quotient=0.6, breath=0.05, formant_shift=1.0, pause_s=0.2, jitter=0.01,
        shimmer=0.06, fricative_level=0.25,
    ),
    "hap": EmotionStyle(
        f0_factor=1.32, f0_range_semitones=9.0, level_db=4.0, syllable_s=0.165, tilt_pole=0.62,
        open_quotient=0.55, breath=0.04, formant_shift=1.08, pause_s=0.14, jitter=0.012,
        shimmer=0.06, fricative_level=0.3,
    ),
    "ang": EmotionStyle(
        f0_factor=1.22, f0_range_semitones=4.5, level_db=9.0, syllable_s=0.14, tilt_pole=0.25,
        open_quotient=0.4, breath=0.03, formant_shift=1.12, pause_s=0.1, jitter=0.018,
        shimmer=0.1, fricative_level=0.4,
    ),
    "sad": EmotionStyle(
        f0_factor=0.84, f0_range_semitones=1.5, level_db=-8.0, syllable_s=0.26, tilt_pole=0.94,
        open_quotient=0.8, breath=0.25, formant_shift=0.94, pause_s=0.35, jitter=0.014,
        shimmer=0.08, fricative_level=0.15,
    ),
}
REFERENCE_RMS = 0.05  # active-speech RMS of a neutral utterance (about -26 dBFS)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: the session, gender and the voice that sets it apart."""

    session: int
    gender: str
    f0_base: float
    formant_scale: float
    rate_factor: float
    level_db: float

    @property
    def spk(self):
        return f"Ses0{self.session}_{self.gender}"


def make_speakers(rng):
    """The ten demo speakers, one female and one male per session, each with its own voice.

    Example
    -------
    >>> speakers = make_speakers(np.random.default_rng(0))
    >>> len(speakers), sorted({speaker.gender for speaker in speakers})
    (10, ['F', 'M'])
    """
    speakers = []
    for session in range(1, 6):
        for gender in ("F", "M"):
            # F0 ranges far enough apart that the emotions' F0 shifts (x0.84 to x1.32) do not
            # blur gender: a synthetic voice has fewer gender cues than a real one
            f0_low, f0_high = (205.0, 255.0) if gender == "F" else (90.0, 120.0)
            speakers.append(
                Speaker(
                    session=session,
                    gender=gender,
                    f0_base=float(rng.uniform(f0_low, f0_high)),
                    formant_scale=(1.2 if gender == "F" else 1.0) * float(rng.uniform(0.96, 1.04)),
                    rate_factor=float(rng.uniform(0.9, 1.1)),
                    level_db=float(rng.uniform(-2.0, 2.0)),
                )
            )
    return speakers


def _resonator(frequency, bandwidth):
    """Second-order resonator with unity gain at 0 Hz (Klatt style)."""
    radius = math.exp(-math.pi * bandwidth / SAMPLE_RATE)
    theta = 2.0 * math.pi * frequency / SAMPLE_RATE
    denominator = [1.0, -2.0 * radius * math.cos(theta), radius * radius]
    return [sum(denominator)], denominator


def _glottal_flow(cycle_phase, open_quotient):
    """Rosenberg glottal flow pulse for a phase in [0, 1) of each F0 cycle."""
    opening = 0.6 * open_quotient
    closing = open_quotient - opening
    flow = np.zeros_like(cycle_phase)
    rising = cycle_phase < opening
    flow[rising] = 0.5 * (1.0 - np.cos(np.pi * cycle_phase[rising] / opening))
    falling = (cycle_phase >= opening) & (cycle_phase < open_quotient)
    flow[falling] = np.cos(0.5 * np.pi * (cycle_phase[falling] - opening) / closing)
    return flow


def _plan_syllables(rng, style, speaker, n_samples, rate_jitter):
    """Start and end sample of each syllable, with phrase pauses, filling ``n_samples``."""
    syllables = []
    position = int(rng.uniform(0.04, 0.12) * SAMPLE_RATE)
    end_margin = int(0.05 * SAMPLE_RATE)
    mean_syllable = style.syllable_s * rate_jitter / speaker.rate_factor
    while True:
        phrase_length = int(rng.integers(2, 6))
        for _ in range(phrase_length):
            length = int(rng.uniform(0.75, 1.25) * mean_syllable * SAMPLE_RATE)
            if position + length > n_samples - end_margin:
                return syllables
            syllables.append((position, position + length))
            position += length + int(rng.uniform(0.0, 0.02) * SAMPLE_RATE)
        position += int(rng.uniform(0.6, 1.4) * style.pause_s * SAMPLE_RATE)


def _synthesize_segment(rng, speaker, emo, n_samples):
    """Render ``n_samples`` of speech in the style of ``emo``, at its target level."""
    style = EMOTION_STYLES[emo]
    rate_jitter = float(rng.uniform(0.9, 1.1))
    syllables = _plan_syllables(rng, style, speaker, n_samples, rate_jitter)
    if not syllables:  # a segment shorter than one syllable still gets a short vowel
        syllables = [(0, n_samples)]

    # F0 contour: one target per syllable around the utterance's mean F0, gently declining.
    f0_mean = speaker.f0_base * style.f0_factor * 2.0 ** (rng.normal(0.0, 0.6) / 12.0)
    range_semitones = style.f0_range_semitones * float(rng.uniform(0.8, 1.2))
    centres = np.array([(start + end) / 2 for start, end in syllables])
    targets = f0_mean * 2.0 ** (range_semitones * rng.uniform(-0.5, 0.5, len(syllables)) / 12.0)
    targets *= 1.0 - 0.08 * centres / n_samples
    time_index = np.arange(n_samples)
    f0_contour = np.interp(time_index, centres, targets)
    # Jitter: an independent F0 perturbation held for about one cycle.
    hold = max(1, int(SAMPLE_RATE / f0_mean))
    jitter = rng.normal(0.0, style.jitter, n_samples // hold + 1)
    f0_contour *= 1.0 + np.repeat(jitter, hold)[:n_samples]

    cycle_position = np.cumsum(f0_contour) / SAMPLE_RATE
    cycle_index = cycle_position.astype(np.int64)
    open_quotient = float(np.clip(style.open_quotient + rng.normal(0.0, 0.03), 0.3, 0.9))
    flow = _glottal_flow(cycle_position - cycle_index, open_quotient)
    shimmer = 1.0 + rng.normal(0.0, style.shimmer, cycle_index[-1] + 1)
    flow *= shimmer[cycle_index]
    # Radiation at the lips differentiates the flow; aspiration noise rides on the open phase.
    source = np.diff(flow, prepend=0.0)
    source /= max(float(np.sqrt(np.mean(source**2))), 1e-9)
    breath = style.breath * float(rng.uniform(0.7, 1.3))
    source += breath * rng.normal(0.0, 1.0, n_samples) * (0.3 + flow)
    tilt_pole = float(np.clip(style.tilt_pole + rng.normal(0.0, 0.04), 0.0, 0.97))
    source = lfilter([1.0 - tilt_pole], [1.0, -tilt_pole], source)

    speech = np.zeros(n_samples + SAMPLE_RATE // 20)
    voiced = np.zeros(n_samples, dtype=bool)
    ring = SAMPLE_RATE // 50  # keep 20 ms of each syllable's resonance tail
    formant_shift = np.array([style.formant_shift, style.formant_shift, 1.0, 1.0])
    for start, end in syllables:
        onset = 0
        if rng.random() < 0.5 and end - start > 0.08 * SAMPLE_RATE:
            onset = int(rng.uniform(0.02, 0.05) * SAMPLE_RATE)  # unvoiced consonant first
        vowel_start = start + onset
        length = end - vowel_start
        formants = (
            VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))]
            * speaker.formant_scale
            * formant_shift
            * rng.uniform(0.95, 1.05, 4)
        )
        attack, release = min(length // 3, 240), min(length // 3, 480)
        envelope = np.ones(length)
        envelope[:attack] = np.linspace(0.0, 1.0, attack)
        envelope[length - release :] = np.linspace(1.0, 0.0, release)
        # The zero padding lets each resonance tail decay instead of being cut off.
        vowel = np.concatenate([source[vowel_start:end] * envelope, np.zeros(ring)])
        for frequency, bandwidth in zip(formants, FORMANT_BANDWIDTHS, strict=True):
            b, a = _resonator(min(frequency, 0.45 * SAMPLE_RATE), bandwidth)
            vowel = lfilter(b, a, vowel)
        speech[vowel_start : end + ring] += vowel
        if onset:
            # Fricative: band-limited noise at a fixed level below the vowel it leads into.
            low_edge = float(rng.uniform(2500.0, 4500.0))
            b, a = butter(2, [low_edge, 7500.0], btype="bandpass", fs=SAMPLE_RATE)
            fricative = lfilter(b, a, rng.normal(0.0, 1.0, onset))
            fricative *= np.hanning(onset) / max(float(np.sqrt(np.mean(fricative**2))), 1e-9)
            vowel_rms = float(np.sqrt(np.mean(vowel[:length] ** 2)))
            speech[start:vowel_start] += style.fricative_level * vowel_rms * fricative
        voiced[vowel_start:end] = True
    speech = speech[:n_samples]

    level_db = style.level_db + speaker.level_db + float(rng.normal(0.0, 1.0))
    active_rms = float(np.sqrt(np.mean(speech[voiced] ** 2))) if voiced.any() else 1.0
    return speech * (REFERENCE_RMS * 10.0 ** (level_db / 20.0) / max(active_rms, 1e-9))


def synthesize_utterance(seed_sequence, speaker, segments, n_samples):
    """``n_samples`` of 16 kHz speech-like audio, each ``(start_s, end_s, emo)`` segment voiced
    in its emotion's style; deterministic for a seed sequence.

    Example
    -------
    >>> speaker = make_speakers(np.random.default_rng(0))[0]
    >>> audio = synthesize_utterance([0, 1], speaker, [(0.0, 0.5, "ang")], 8000)
    >>> audio.shape, bool(np.abs(audio).max() <= 1.0)
    ((8000,), True)
    """
    rng = np.random.default_rng(seed_sequence)
    parts = []
    for start_s, end_s, emo in segments:
        segment_samples = round(end_s * SAMPLE_RATE) - round(start_s * SAMPLE_RATE)
        parts.append(_synthesize_segment(rng, speaker, emo, segment_samples))
    speech = np.concatenate(parts)[:n_samples]
    speech += rng.normal(0.0, 2e-4, n_samples)  # room noise floor, so pauses are not digital zero
    # Soft limiter: loud (angry) peaks are rounded off instead of wrapping around in 16 bits.
    return 0.98 * np.tanh(speech / 0.98)


