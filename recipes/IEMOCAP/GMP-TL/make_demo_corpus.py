#!/usr/bin/env python3
"""Write a small synthetic corpus in the exact ``IEMOCAP_full_release`` layout.

It lets the whole recipe (preparation, every stage, 5 folds) run with no download. The layout and
the annotation format follow the real release (docs/design.md, IEMOCAP): 5 sessions with one female
and one male speaker each, improvised and scripted dialogs in which both speakers talk,
``EmoEvaluation/<dialog>.txt`` files with a ``%`` header, the ``[start - end] utt label [v, a, d]``
lines and annotator lines, a ``Categorical/`` subfolder and a macOS ``._`` junk file beside them,
and 16 kHz mono 16-bit wavs under ``sentences/wav/<dialog>/``.

The audio is speech-like: a glottal pulse source with jitter and shimmer, shaped by four formant
resonators that move from syllable to syllable, with consonant noise, pauses and breath noise.
Gender shows in F0 and formant scale, emotion in prosody and voice quality (level, F0 level and
range, spectral tilt, speaking rate, breathiness). About 15 % of the kept utterances start with a
neutral lead-in before the labelled emotion. ``demo_truth.json`` records what was generated.

Usage::

    python recipes/IEMOCAP/GMP-TL/make_demo_corpus.py OUT_DIR [--seed S] [--utts_per_speaker N]
"""

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import butter, lfilter

SAMPLE_RATE = 16000
EMOTIONS = ("neu", "hap", "ang", "sad")
DROPPED_LABELS = ("fru", "xxx", "sur")
DIALOG_KINDS = ("impro01", "impro02", "script01_1", "script02_1")
CHANGE_PROBABILITY = 0.15  # share of kept, non-neutral utterances with a neutral lead-in

# How the annotators of the real corpus name each label in the annotator lines.
ANNOTATOR_NAMES = {
    "neu": "Neutral state",
    "hap": "Happiness",
    "exc": "Excited",
    "ang": "Anger",
    "sad": "Sadness",
    "fru": "Frustration",
    "sur": "Surprise",
    "xxx": "Other",
}
VALENCE_AROUSAL_DOMINANCE = {
    "neu": (2.5, 2.5, 2.5),
    "hap": (4.0, 3.5, 3.0),
    "exc": (4.0, 4.0, 3.5),
    "ang": (1.5, 4.0, 4.0),
    "sad": (1.5, 2.0, 2.0),
    "fru": (2.0, 3.5, 3.5),
    "sur": (3.5, 4.0, 3.0),
    "xxx": (2.5, 3.0, 3.0),
}
# Macintosh AppleDouble header: the start of the real release's ._* files (binary, not UTF-8).
APPLE_DOUBLE_JUNK = (
    b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\x09\x00\x00\x00\x32"
    + b"\x00\x00\x0e\xb0\xff\xfe\x80\x81" + bytes(range(256))
)

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


def _make_speakers(rng):
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


def _synthesize_utterance(seed_sequence, speaker, segments, n_samples):
    rng = np.random.default_rng(seed_sequence)
    parts = []
    for start_s, end_s, emo in segments:
        segment_samples = round(end_s * SAMPLE_RATE) - round(start_s * SAMPLE_RATE)
        parts.append(_synthesize_segment(rng, speaker, emo, segment_samples))
    speech = np.concatenate(parts)[:n_samples]
    speech += rng.normal(0.0, 2e-4, n_samples)  # room noise floor, so pauses are not digital zero
    # Soft limiter: loud (angry) peaks are rounded off instead of wrapping around in 16 bits.
    return 0.98 * np.tanh(speech / 0.98)


def _annotation_block(rng, start_s, end_s, utt_id, label):
    valence, arousal, dominance = (
        value + 0.5 * int(rng.integers(-1, 2)) for value in VALENCE_AROUSAL_DOMINANCE[label]
    )
    name = ANNOTATOR_NAMES[label]
    return (
        f"[{start_s:.4f} - {end_s:.4f}]\t{utt_id}\t{label}\t"
        f"[{valence:.4f}, {arousal:.4f}, {dominance:.4f}]\n"
        f"C-E1:\t{name};\t()\n"
        f"C-E2:\t{name};\t()\n"
        f"C-F1:\t{name}; Neutral state;\t(a little unsure)\n"
        f"A-E2:\tval {round(valence)}; act {round(arousal)}; dom  {round(dominance)};\t()\n"
        f"A-F1:\tval 3; act 3; dom  3;\t()\n"
        "\n"
    )


def _plan_corpus(rng, speakers, utts_per_speaker):
    """Label, dialog, duration and emotion segments of every utterance, speaker by speaker."""
    n_dropped = max(1, round(utts_per_speaker / 10))
    plans = []
    for speaker_index, speaker in enumerate(speakers):
        # Cycle through the classes from a speaker-dependent start so the corpus stays balanced.
        labels = [EMOTIONS[(speaker_index + i) % 4] for i in range(utts_per_speaker)]
        labels = ["exc" if label == "hap" and i % 2 else label for i, label in enumerate(labels)]
        labels += [DROPPED_LABELS[(speaker_index + i) % 3] for i in range(n_dropped)]
        rng.shuffle(labels)
        for utt_index, label in enumerate(labels):
            kept = label not in DROPPED_LABELS
            emo = "hap" if label == "exc" else label
            duration = round(float(rng.uniform(1.0, 2.2)) * SAMPLE_RATE) / SAMPLE_RATE
            # Dropped labels are voiced in one of the four styles, which is not their label.
            voice = emo if kept else EMOTIONS[int(rng.integers(4))]
            if kept and emo != "neu" and rng.random() < CHANGE_PROBABILITY:
                lead_in = round(float(rng.uniform(0.4, min(0.9, duration - 0.6))), 3)
                segments = [[0.0, lead_in, "neu"], [lead_in, duration, voice]]
            else:
                segments = [[0.0, duration, voice]]
            plans.append(
                {
                    "speaker": speaker,
                    "dialog_kind": DIALOG_KINDS[utt_index % len(DIALOG_KINDS)],
                    "label": label,
                    "emo": emo if kept else None,
                    "duration": duration,
                    "segments": segments,
                    "seed": [speaker_index, utt_index],
                }
            )
    return plans


def make_demo_corpus(out_dir, seed=0, utts_per_speaker=30):
    """Write the synthetic corpus under ``out_dir/IEMOCAP_full_release`` and return that folder.

    Arguments
    ---------
    out_dir : str or pathlib.Path
        Folder to write into (created if needed).
    seed : int
        Random seed; the same seed gives byte-identical files.
    utts_per_speaker : int
        Kept (4-class) utterances per speaker; each speaker also gets about 10 % extra utterances
        with dropped labels (``fru``, ``xxx``, ``sur``). 10 speakers, so the default gives 300
        kept utterances, about 75 per class.

    Returns
    -------
    pathlib.Path
        The ``IEMOCAP_full_release`` folder, to give to ``prepare_iemocap`` as ``data_folder``.
        It also holds ``demo_truth.json``: per utterance id, ``label`` (as written in
        EmoEvaluation), ``emo`` (4-class label, ``null`` when dropped), ``kept``, ``gender``,
        ``session``, ``spk``, ``dialog``, ``duration`` (seconds) and ``segments``, the emotion
        voiced in each part of the audio as ``[[start_s, end_s, emo], ...]``.

    Example
    -------
    >>> import tempfile
    >>> corpus = make_demo_corpus(tempfile.mkdtemp(), utts_per_speaker=1)
    >>> sorted(path.name for path in corpus.iterdir())[:3]
    ['Session1', 'Session2', 'Session3']
    """
    if utts_per_speaker < 1:
        raise ValueError(f"utts_per_speaker must be at least 1, got {utts_per_speaker}")
    corpus = Path(out_dir) / "IEMOCAP_full_release"
    rng = np.random.default_rng(seed)
    speakers = _make_speakers(rng)
    plans = _plan_corpus(rng, speakers, utts_per_speaker)

    dialogs = {}  # dialog id -> plans of its utterances, in speaking order
    next_index = {}  # (dialog id, gender) -> next utterance number
    for plan in plans:
        speaker = plan["speaker"]
        # The dialog's name carries the gender of the speaker wearing the markers (F or M).
        marker_gender = "F" if plan["dialog_kind"] in ("impro01", "script01_1") else "M"
        dialog = f"Ses0{speaker.session}{marker_gender}_{plan['dialog_kind']}"
        number = next_index.get((dialog, speaker.gender), 0)
        next_index[(dialog, speaker.gender)] = number + 1
        plan["dialog"] = dialog
        plan["utt_id"] = f"{dialog}_{speaker.gender}{number:03d}"
        dialogs.setdefault(dialog, []).append(plan)

    truth = {}
    for dialog in sorted(dialogs):
        dialog_plans = dialogs[dialog]
        rng.shuffle(dialog_plans)  # the two speakers take turns in no fixed order
        session_folder = corpus / f"Session{dialog_plans[0]['speaker'].session}"
        annotation_folder = session_folder / "dialog" / "EmoEvaluation"
        wav_folder = session_folder / "sentences" / "wav" / dialog
        wav_folder.mkdir(parents=True, exist_ok=True)
        (annotation_folder / "Categorical").mkdir(parents=True, exist_ok=True)
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"]
        categorical_lines = []
        clock_s = float(rng.uniform(1.0, 5.0))
        for plan in dialog_plans:
            speaker, utt_id, duration = plan["speaker"], plan["utt_id"], plan["duration"]
            n_samples = round(duration * SAMPLE_RATE)
            audio = _synthesize_utterance([seed, *plan["seed"]], speaker, plan["segments"],
                                          n_samples)
            soundfile.write(wav_folder / f"{utt_id}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
            lines.append(
                _annotation_block(rng, clock_s, clock_s + duration, utt_id, plan["label"])
            )
            categorical_lines.append(f"{utt_id} :{ANNOTATOR_NAMES[plan['label']]}; ()\n")
            clock_s += duration + float(rng.uniform(0.3, 3.0))
            truth[utt_id] = {
                "label": plan["label"],
                "emo": plan["emo"],
                "kept": plan["emo"] is not None,
                "gender": speaker.gender,
                "session": speaker.session,
                "spk": speaker.spk,
                "dialog": dialog,
                "duration": n_samples / SAMPLE_RATE,
                "segments": plan["segments"],
            }
        (annotation_folder / f"{dialog}.txt").write_text("".join(lines))
        (annotation_folder / "Categorical" / f"{dialog}_e1_cat.txt").write_text(
            "".join(categorical_lines)
        )
        if dialog.startswith("Ses01F_impro01"):
            (annotation_folder / f"._{dialog}.txt").write_bytes(APPLE_DOUBLE_JUNK)

    (corpus / "demo_truth.json").write_text(
        json.dumps(dict(sorted(truth.items())), indent=2) + "\n"
    )
    return corpus


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write IEMOCAP_full_release into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--utts_per_speaker", type=int, default=30)
    args = parser.parse_args(argv)
    corpus = make_demo_corpus(args.out_dir, seed=args.seed, utts_per_speaker=args.utts_per_speaker)
    truth = json.loads((corpus / "demo_truth.json").read_text())
    n_kept = sum(entry["kept"] for entry in truth.values())
    print(f"wrote {len(truth)} utterances ({n_kept} with a 4-class label) to {corpus}")


if __name__ == "__main__":
    main()
