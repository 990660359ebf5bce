"""``gmptl-classify``: classify audio files with an exported model folder.

Usage::

    gmptl-classify MODEL_FOLDER FILE_OR_DIR... [--json] [--frames] [--plot OUT.png]
        [--backend torch|onnx]

A folder is searched recursively for ``*.wav`` and ``*.flac`` files, which are classified in
batches of similar duration with a progress bar. Every file goes through the project's audio
loader (``lobes.data.audio.read_waveform``: any sample rate, stereo mixed down). A file that
cannot be used (missing, corrupt, empty, shorter than 25 ms) is reported by name on stderr and
skipped; the others are still classified, and the exit status is 1 when any file failed.

``--backend onnx`` runs the folder's ``model.onnx`` (``gmptl-export --onnx``) with onnxruntime:
that path never imports torch (``lobes.deploy.onnx_runtime``); reading, refusing and printing are
the same code for both backends (``lobes.deploy.predictions``).
"""

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from lobes.data.audio import AudioError, audio_info
from lobes.deploy.predictions import (
    format_table,
    plot_emotion_track,
    read_clip,
    result_record,
)
from lobes.models.frames import TooShortError

BACKENDS = ("torch", "onnx")

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


def _duration(path):
    try:
        return audio_info(path).duration
    except AudioError:
        return 0.0


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
                    waveforms[path] = read_clip(path)
                except (AudioError, TooShortError) as error:
                    failures[path] = str(error)
                    tqdm.write(f"gmptl-classify: skipped {path}: {error}", file=sys.stderr)
            if waveforms:
                predictions = recognizer.classify_waveforms(list(waveforms.values()))
                for (path, waveform), prediction in zip(
                    waveforms.items(), predictions, strict=True
                ):
                    results[path] = prediction
                    if path in figures:
                        plot_emotion_track(waveform, prediction, recognizer.classes,
                                           figures[path], title=str(path))
            bar.update(min(batch_size, len(by_duration) - start))
    return results, failures


def load_recognizer(model_folder, backend="torch", device="cpu", precision="fp32"):
    """The recognizer of a model folder: ``EmotionRecognizer`` (torch) or
    ``OnnxEmotionRecognizer`` (onnxruntime; torch is then never imported).

    Both offer ``classes``, ``classify_waveforms`` and ``classify_file``.
    """
    if backend == "onnx":
        from lobes.deploy.onnx_runtime import OnnxEmotionRecognizer

        return OnnxEmotionRecognizer(model_folder)
    from lobes.deploy.inference import EmotionRecognizer, quiet_library_logs

    quiet_library_logs()
    return EmotionRecognizer.from_hparams(
        source=model_folder, run_opts={"device": device, "precision": precision}
    )


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
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch (default: the SpeechBrain model folder) or onnx (the "
                             "folder's model.onnx from gmptl-export --onnx, run with onnxruntime, "
                             "no torch)")
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (default cpu; torch only)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"),
                        help="autocast precision of the encoder and heads (default fp32; torch "
                             "only)")
    args = parser.parse_args(argv)
    if args.frames and not args.json:
        parser.error("--frames adds the per-frame scores to the JSON records: use it with --json")
    if args.backend == "onnx" and (args.device or args.precision):
        parser.error("--device and --precision choose how torch runs: the onnx backend runs "
                     "fp32 on the CPU; drop them or use --backend torch")
    return args


def main(argv=None):
    args = parse_args(argv)
    audio_files = find_audio_files(args.inputs)
    if not audio_files:
        raise SystemExit(f"gmptl-classify: error: no *.wav or *.flac file in {args.inputs}")
    try:
        recognizer = load_recognizer(args.model_folder, args.backend, args.device or "cpu",
                                     args.precision or "fp32")
    except (FileNotFoundError, ImportError) as error:
        raise SystemExit(f"gmptl-classify: error: {error}") from error
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
