#!/usr/bin/env python3
"""Write a small synthetic corpus in the exact ``IEMOCAP_full_release`` layout.

It lets the whole recipe (preparation, every stage, 5 folds) run with no download. The layout and
the annotation format follow the real release (docs/design.md, IEMOCAP): 5 sessions with one female
and one male speaker each, improvised and scripted dialogs in which both speakers talk,
``EmoEvaluation/<dialog>.txt`` files with a ``%`` header, the ``[start - end] utt label [v, a, d]``
lines and annotator lines, a ``Categorical/`` subfolder and a macOS ``._`` junk file beside them,
and 16 kHz mono 16-bit wavs under ``sentences/wav/<dialog>/``.

The audio is speech-like (``lobes.fixtures.synthetic_speech``: a glottal source through moving
formant resonators; gender in F0 and formant scale, emotion in prosody and voice quality). About
15 % of the kept utterances start with a neutral lead-in before the labelled emotion.
``demo_truth.json`` records what was generated.

Usage::

    python recipes/IEMOCAP/GMP-TL/make_demo_corpus.py OUT_DIR [--seed S] [--utts_per_speaker N]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile

from lobes.fixtures.synthetic_speech import make_speakers, synthesize_utterance
from lobes.models.frames import SAMPLE_RATE

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
    speakers = make_speakers(rng)
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
            audio = synthesize_utterance([seed, *plan["seed"]], speaker, plan["segments"],
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
