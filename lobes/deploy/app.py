"""``gmptl-app``: a local browser page for a model folder (Gradio), offline, on the CPU.

Usage::

    gmptl-app MODEL_FOLDER [--backend torch|onnx] [--port 7860] [--host 127.0.0.1]

Upload or record a clip: the page shows the predicted emotion, the class probabilities, and the
frame-level emotion track over time in an interactive plot (hover for values, drag to zoom) whose
time axis is the clip's, with the clip's loudness drawn on the same axis; the result, frame
scores included, downloads as the JSON record of ``gmptl-classify --json --frames``. A clip that
the command line refuses (corrupt, empty, shorter than 25 ms) is refused here with the same
message. Files are read, refused and recorded by the same code as ``gmptl-classify``
(``lobes.deploy.predictions``); ``--backend onnx`` runs the folder's ``model.onnx`` without torch.

Nothing is fetched from the network: Gradio's telemetry is off, the page uses the fonts and
scripts Gradio ships, and the server listens on this machine only unless ``--host`` says
otherwise.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from lobes.data.audio import AudioError
from lobes.deploy.classify_cli import BACKENDS, load_recognizer
from lobes.deploy.predictions import frame_times, read_clip, result_record, softmax
from lobes.models.frames import FRAME_SHIFT, RECEPTIVE_FIELD, TooShortError

DEFAULT_PORT = 7860  # Gradio's usual port
WAVEFORM_SERIES = "loudness (peak per frame, scaled)"


def track_table(waveform, prediction, classes):
    """The emotion track as a long table for Gradio's line plot: one row per frame and series.

    Each class's frame probability, and the clip's loudness on the same 20 ms frames (the peak
    of each frame's 400 samples, divided by the clip's peak), so that both share one time axis.

    Example
    -------
    >>> from lobes.deploy.predictions import EmotionPrediction
    >>> prediction = EmotionPrediction("a", np.array([0.5, 0.5]), np.zeros((2, 2)))
    >>> table = track_table(np.ones(720, np.float32), prediction, ["a", "b"])
    >>> sorted(set(table["series"])), len(table)
    (['a', 'b', 'loudness (peak per frame, scaled)'], 6)
    """
    import pandas as pd

    probabilities = softmax(prediction.frame_scores)
    times = frame_times(len(probabilities))
    starts = np.arange(len(probabilities)) * FRAME_SHIFT
    peaks = np.array([np.abs(waveform[start:start + RECEPTIVE_FIELD]).max() for start in starts])
    peaks = peaks / max(float(np.abs(waveform).max()), 1e-12)
    columns = {"time (s)": [], "probability": [], "series": []}
    for name, values in [*zip(classes, probabilities.T, strict=True), (WAVEFORM_SERIES, peaks)]:
        columns["time (s)"] += times.round(4).tolist()
        columns["probability"] += np.asarray(values, dtype=np.float64).round(4).tolist()
        columns["series"] += [name] * len(times)
    return pd.DataFrame(columns)


def classify_upload(recognizer, path, output_folder):
    """What the page shows for one uploaded or recorded file.

    Returns
    -------
    status : str
        Markdown: the label, or the refusal message of ``gmptl-classify``.
    probabilities : dict or None
        ``{class: probability}`` for the label component.
    track : dict or None
        ``track_table`` and the plot's time range (the clip's duration).
    record : str or None
        Path of the JSON record to download.
    """
    if not path:
        return "Upload or record a clip.", None, None, None
    try:
        waveform = read_clip(path)
    except (AudioError, TooShortError) as error:
        return f"**Refused:** {error}", None, None, None
    prediction = recognizer.classify_waveforms([waveform])[0]
    record = result_record(Path(path).name, prediction, recognizer.classes, with_frames=True)
    record_path = Path(tempfile.mkdtemp(dir=output_folder)) / f"{Path(path).stem}_emotion.json"
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    duration = len(waveform) / 16000
    status = (f"**Predicted emotion: {prediction.label}** ({duration:.2f} s, "
              f"{len(prediction.frame_scores)} frames of 20 ms)")
    track = {"value": track_table(waveform, prediction, recognizer.classes),
             "x_lim": [0.0, round(duration, 3)]}
    return status, record["probabilities"], track, str(record_path)


def build_app(recognizer, model_name="model"):
    """The Gradio page of a recognizer (``EmotionRecognizer`` or ``OnnxEmotionRecognizer``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    output_folder = tempfile.mkdtemp(prefix="gmptl-app-")
    colors = dict(zip(recognizer.classes, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                           "#9467bd", "#8c564b", "#e377c2", "#17becf"),
                      strict=False))
    colors[WAVEFORM_SERIES] = "#b0b0b0"
    with gr.Blocks(title="GMP-TL emotion recognition", analytics_enabled=False) as app:
        gr.Markdown(f"## Speech emotion recognition: `{model_name}`\n"
                    f"Classes: {', '.join(recognizer.classes)}. Upload or record a clip (any "
                    "sample rate, mono or stereo); it is classified on this machine.")
        audio = gr.Audio(sources=["upload", "microphone"], type="filepath", format=None,
                         label="clip", elem_id="clip")
        status = gr.Markdown("Upload or record a clip.", elem_id="status")
        with gr.Row():
            probabilities = gr.Label(label="class probabilities", elem_id="probabilities",
                                     num_top_classes=len(recognizer.classes), scale=1)
            record = gr.File(label="result (JSON)", elem_id="record", scale=1)
        track = gr.LinePlot(
            x="time (s)", y="probability", color="series", y_lim=[0, 1], color_map=colors,
            color_title="", tooltip="all", elem_id="track",
            label="emotion track: frame probabilities and loudness on the clip's time axis",
        )

        def show(path):
            text, scores, track_value, record_path = classify_upload(recognizer, path,
                                                                     output_folder)
            # the plot's time axis is set to the clip's duration on each result
            plot = gr.LinePlot(**track_value) if track_value else gr.LinePlot(value=None)
            return text, scores, plot, record_path

        audio.change(show, inputs=audio, outputs=[status, probabilities, track, record])
    return app


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="gmptl-app",
        description="A local browser page for a model folder written by gmptl-export: upload or "
                    "record audio, see the emotion, the class probabilities and the emotion "
                    "track over time, download the JSON. Offline, CPU.",
    )
    parser.add_argument("model_folder", help="model folder written by gmptl-export")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch (default) or onnx (model.onnx from gmptl-export --onnx)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT})")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        recognizer = load_recognizer(args.model_folder, args.backend)
    except (FileNotFoundError, ImportError) as error:
        raise SystemExit(f"gmptl-app: error: {error}") from error
    app = build_app(recognizer, Path(args.model_folder).name)
    print(f"gmptl-app: serving {args.model_folder} ({args.backend}) on "
          f"http://{args.host}:{args.port}", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=False, quiet=True)


if __name__ == "__main__":
    main()
