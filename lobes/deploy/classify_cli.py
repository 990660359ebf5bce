"""``gmptl-classify``: classify audio files with an exported model folder.

Usage::

    gmptl-classify MODEL_FOLDER FILE_OR_DIR... [--json] [--frames] [--plot OUT.png]

A folder is searched recursively for ``*.wav`` and ``*.flac`` files, which are classified in
batches of similar duration with a progress bar. Every file goes through the project's audio
loader (``lobes.data.audio.read_audio``: any sample rate, stereo mixed down). A file that cannot be
used (missing, corrupt, empty, shorter than 25 ms) is reported by name on stderr and skipped; the
others are still classified, and the exit status is 1 when any file failed.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from lobes.data.audio import AudioError, audio_info, read_audio
from lobes.deploy.inference import EmotionRecognizer, frame_times, quiet_library_logs
from lobes.models.frames import RECEPTIVE_FIELD, SAMPLE_RATE, TooShortError
from lobes.utils.io import save_figure

AUDIO_SUFFIXES = (".wav", ".flac")


def find_audio_files(paths):
    """Expand folders into their ``*.wav`` / ``*.flac`` files (recursively, sorted).

    Files given by name are kept whatever their suffix; a missing path is kept too, so that it
    is reported as a failure.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("b.wav", "sub/a.FLAC", "notes.txt"):
    ...     (folder / name).parent.mkdir(exist_ok=True)
    ...     (folder / name).touch()
    >>> [path.relative_to(folder).as_posix() for path in find_audio_files([folder])]
    ['b.wav', 'sub/a.FLAC']
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(
                found for found in path.rglob("*")
                if found.is_file() and found.suffix.lower() in AUDIO_SUFFIXES
            )
        else:
            files.append(path)
    return files


def plot_paths(plot_path, audio_files):
    """Where the figure of each file goes: ``plot_path`` itself for one file, else
    ``<plot stem>_<audio stem>.png`` beside it (numbered when two files share a stem).

    Example
    -------
    >>> [p.name for p in plot_paths(Path("out/track.png"), [Path("a/x.wav"), Path("b/x.wav")])]
    ['track_x.png', 'track_x_2.png']
    >>> plot_paths(Path("track.png"), [Path("a.wav")])[0].name
    'track.png'
    """
    plot_path = Path(plot_path)
    if len(audio_files) == 1:
        return [plot_path]
    paths, used = [], set()
    for audio_file in audio_files:
        name, number = f"{plot_path.stem}_{audio_file.stem}", 1
        while (name if number == 1 else f"{name}_{number}") in used:
            number += 1
        name = name if number == 1 else f"{name}_{number}"
        used.add(name)
        paths.append(plot_path.with_name(name + (plot_path.suffix or ".png")))
    return paths


def plot_emotion_track(waveform, prediction, classes, path, title=""):
    """Save a figure of the waveform and the frame-level emotion probabilities as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame_probabilities = prediction.frame_scores.softmax(dim=-1).numpy()
    times = frame_times(len(frame_probabilities)).numpy()
    fig, (wave_axis, track_axis) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    wave_axis.plot(torch.arange(len(waveform)).numpy() / SAMPLE_RATE, waveform.numpy(),
                   linewidth=0.5, color="0.3")
    wave_axis.set_ylabel("waveform")
    probabilities = ", ".join(
        f"{name} {p:.2f}" for name, p in zip(classes, prediction.probabilities.tolist(),
                                              strict=True)
    )
    wave_axis.set_title(f"{title}\nutterance: {prediction.label} ({probabilities})")
    for index, name in enumerate(classes):
        track_axis.plot(times, frame_probabilities[:, index], label=name)
    track_axis.set_ylim(0, 1)
    track_axis.set_xlabel("time (s)")
    track_axis.set_ylabel("frame probability")
    track_axis.legend(loc="upper right", ncol=len(classes), fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)


def _duration(path):
    try:
        return audio_info(path).duration
    except AudioError:
        return 0.0


def _read(path):
    waveform = read_audio(path)
    if len(waveform) < RECEPTIVE_FIELD:
        raise TooShortError(
            f"{path} holds {len(waveform)} samples at 16 kHz, fewer than one HuBERT frame "
            f"({RECEPTIVE_FIELD} samples = 25 ms)"
        )
    return waveform


def classify_files(recognizer, audio_files, batch_size=8, plot_path=None, progress=True):
    """Classify files in batches of similar duration; unusable files are reported, not fatal.

    Returns
    -------
    results : dict
        ``{path: EmotionPrediction}`` for the files that were classified.
    failures : dict
        ``{path: error message}`` for the others.
    """
    figures = dict(zip(audio_files, plot_paths(plot_path, audio_files), strict=True)) \
        if plot_path else {}
    by_duration = sorted(audio_files, key=_duration)
    results, failures = {}, {}
    with tqdm(total=len(audio_files), unit="file", disable=not progress) as bar:
        for start in range(0, len(by_duration), batch_size):
            waveforms = {}
            for path in by_duration[start:start + batch_size]:
                try:
                    waveforms[path] = _read(path)
                except (AudioError, TooShortError) as error:
                    failures[path] = str(error)
                    tqdm.write(f"gmptl-classify: skipped {path}: {error}", file=sys.stderr)
            if waveforms:
                lengths = torch.tensor([len(w) for w in waveforms.values()])
                batch = torch.nn.utils.rnn.pad_sequence(list(waveforms.values()),
                                                        batch_first=True)
                predictions = recognizer.classify_batch(batch, lengths / lengths.max())
                for (path, waveform), prediction in zip(
                    waveforms.items(), predictions.per_utterance(), strict=True
                ):
                    results[path] = prediction
                    if path in figures:
                        plot_emotion_track(waveform, prediction, recognizer.classes,
                                           figures[path], title=str(path))
            bar.update(min(batch_size, len(by_duration) - start))
    return results, failures


def result_record(path, prediction, classes, with_frames=False):
    """One file's result as a JSON-ready dict."""
    record = {
        "file": str(path),
        "label": prediction.label,
        "probabilities": dict(zip(classes, prediction.probabilities.tolist(), strict=True)),
        "n_frames": len(prediction.frame_scores),
    }
    if with_frames:
        record["frame_scores"] = [
            [round(score, 4) for score in frame] for frame in prediction.frame_scores.tolist()
        ]
    return record


def format_table(records, classes):
    """The results as a text table: file, label, one probability column per class."""
    width = max([len("file"), *(len(record["file"]) for record in records)])
    lines = [f"{'file':<{width}}  {'label':<6}" + "".join(f"{name:>8}" for name in classes)]
    for record in records:
        lines.append(
            f"{record['file']:<{width}}  {record['label']:<6}"
            + "".join(f"{record['probabilities'][name]:>8.3f}" for name in classes)
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="gmptl-classify",
        description="Classify the emotion of audio files with a model folder written by "
                    "gmptl-export. Folders are searched recursively for *.wav and *.flac.",
    )
    parser.add_argument("model_folder", help="model folder written by gmptl-export")
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files or folders")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per file instead of a table")
    parser.add_argument("--frames", action="store_true",
                        help="with --json, add the per-frame scores (one row per 20 ms)")
    parser.add_argument("--plot", metavar="OUT.png", type=Path,
                        help="save the waveform and the frame-level emotion track: with one "
                             "input file to OUT.png, with several to OUT_<file stem>.png beside it")
    parser.add_argument("--batch_size", type=int, default=8, help="files per batch (default 8)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default cpu)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="autocast precision of the encoder and heads (default fp32)")
    args = parser.parse_args(argv)
    if args.frames and not args.json:
        parser.error("--frames adds the per-frame scores to the JSON records: use it with --json")
    return args


def main(argv=None):
    args = parse_args(argv)
    quiet_library_logs()
    audio_files = find_audio_files(args.inputs)
    if not audio_files:
        raise SystemExit(f"gmptl-classify: error: no *.wav or *.flac file in {args.inputs}")
    recognizer = EmotionRecognizer.from_hparams(
        source=args.model_folder, run_opts={"device": args.device, "precision": args.precision}
    )
    results, failures = classify_files(
        recognizer, audio_files, args.batch_size, args.plot, progress=len(audio_files) > 1
    )
    records = [result_record(path, results[path], recognizer.classes, args.frames)
               for path in audio_files if path in results]
    if args.json:
        for record in records:
            print(json.dumps(record))
    elif records:
        print(format_table(records, recognizer.classes))
    if failures:
        print(f"gmptl-classify: {len(failures)} of {len(audio_files)} file(s) failed: "
              + ", ".join(map(str, failures)), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
