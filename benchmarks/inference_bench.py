"""Benchmark: ``EmotionRecognizer.classify_file`` on CPU, real-time factor and peak memory.

A model folder is written the way ``gmptl-export`` writes one (``lobes.deploy.export.
write_model_folder``: encoder folder, pooling and cosine-head weights, label encoder,
``hyperparams.yaml``) around a random-weight HuBERT-base architecture (HF ``HubertConfig``
defaults: 12 layers, 768-d, 95 M parameters), and loaded with
``EmotionRecognizer.from_hparams(source=MODEL_FOLDER)``. It classifies one 16 kHz wav file
(60 s by default). Compared, each in its own process (separate peak-memory counters), driven in
turn so that every repetition sees the same background load:

- ``classify_file``: ours, as shipped (long files encoded in ``chunk_seconds`` = 30 s chunks);
- ``classify_file, chunk_seconds C``: the same with other chunk lengths (``--chunks``);
- ``classify_file, no chunking``: the same with ``chunk_seconds`` above the file length (one
  encoder call on the whole file), to show what the chunking does;
- ``bare HF HubertModel``: the named alternative, ``HubertModel.from_pretrained`` on the same
  encoder folder, the file read with ``soundfile``, normalised as its feature extractor says,
  one forward (``last_hidden_state`` only) under ``torch.no_grad()``; no pooling, no head;
- ``classify_file [N threads]`` and ``onnxruntime [N threads]``: the model folder on torch and
  its ``model.onnx`` (``gmptl-export --onnx``, i.e. ``lobes.deploy.onnx_export.export_onnx``)
  on onnxruntime (``OnnxEmotionRecognizer.classify_file``; that process never imports torch),
  each with one thread and with all cores (``--thread_counts``), so that the run prints
  onnxruntime / torch ratios of RTF and peak memory at both thread counts.

RTF = wall seconds / audio seconds (below 1 is faster than real time); file reading included.
Peak memory = the process's peak resident set (``VmHWM`` of ``/proc/self/status``, reset after
loading and a warm-up call on a 5 s file with ``/proc/self/clear_refs``; ``ru_maxrss`` where
that is not possible); "above loaded" is that peak minus the resident set once the model is
loaded (before any call), i.e. what classifying the file adds to the loaded model.

Usage::

    python benchmarks/inference_bench.py [--seconds 60] [--repeats 2] [--chunks 10]
        [--threads N] [--quick]

The last line printed is ``rtf=<classify_file wall / audio> peak_rss_mb=<peak> rtf_ratio=<ours /
bare HF> onnx_rtf_ratio_<N>=<onnxruntime / torch RTF> onnx_peak_ratio_<N>=<onnxruntime / torch
peak RSS>`` for each thread count N.
"""

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from bench_utils import (
    SIZES,
    cpu_peak_kb,
    load_note,
    machine_line,
    reset_cpu_peak,
    status_kb,
    write_hubert,
)

SAMPLE_RATE = 16000


def _load(system, model_folder, threads=None):
    """Return a callable ``run(path)`` for ``system``."""
    if system.startswith("onnxruntime"):
        from lobes.deploy.onnx_runtime import OnnxEmotionRecognizer

        recognizer = OnnxEmotionRecognizer(model_folder, threads=threads)
        return lambda path: recognizer.classify_file(path).label

    import torch

    if threads:
        torch.set_num_threads(threads)
    if system.startswith("classify_file"):
        from lobes.deploy.inference import EmotionRecognizer, quiet_library_logs

        quiet_library_logs()
        overrides = None
        if "no chunking" in system:
            overrides = {"chunk_seconds": 100000.0}
        elif "chunk_seconds" in system:
            overrides = {"chunk_seconds": float(system.rsplit(" ", 1)[1])}
        recognizer = EmotionRecognizer.from_hparams(
            source=model_folder, savedir=str(Path(model_folder) / "savedir"), overrides=overrides
        )
        return lambda path: recognizer.classify_file(path).label

    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    encoder_folder = Path(model_folder) / "encoder"
    model = HubertModel.from_pretrained(encoder_folder).eval()
    normalize = Wav2Vec2FeatureExtractor.from_pretrained(encoder_folder).do_normalize

    def run(path):
        audio, _ = soundfile.read(path, dtype="float32")
        wav = torch.from_numpy(audio)[None]
        if normalize:
            wav = (wav - wav.mean()) / torch.sqrt(wav.var() + 1e-7)
        with torch.no_grad():
            return model(wav).last_hidden_state.shape

    return run


def worker(system, model_folder, wav_path, warmup_path, connection, threads=None):
    """Load ``system``, warm it up on a short file, then time one call per ``"run"``."""
    run = _load(system, model_folder, threads)
    rss_loaded = status_kb("VmRSS") or 0
    run(warmup_path)  # warm-up (thread pools, allocator, lazy imports)
    reset = reset_cpu_peak()
    times = []
    while connection.recv() == "run":
        start = time.perf_counter()
        run(wav_path)
        times.append(time.perf_counter() - start)
        connection.send("done")
    connection.send({"times": times, "peak_kb": cpu_peak_kb(), "rss_loaded_kb": rss_loaded,
                     "peak_reset": reset})


def write_test_wav(path, seconds, seed=0):
    """A 16 kHz 16-bit mono wav of ``seconds``: a wobbling tone in noise (content is moot)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = 0.3 * np.sin(2 * np.pi * (150 + 30 * np.sin(2 * np.pi * 0.5 * t)) * t)
    audio += 0.05 * rng.standard_normal(len(t))
    soundfile.write(path, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the test file")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per system")
    parser.add_argument("--chunks", type=float, nargs="*", default=[10.0],
                        help="further chunk_seconds values to time (default: 10)")
    parser.add_argument("--size", choices=sorted(SIZES), default="base",
                        help="encoder size (mid: the tests' shrunk run)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--thread_counts", nargs="*", default=["1", "all"],
                        help="thread counts of the torch / onnxruntime comparison (default: 1 "
                             "and all cores); none skips it")
    parser.add_argument("--quick", action="store_true", help="1 timed call per system")
    args = parser.parse_args(argv)
    thread_counts = [os.cpu_count() if count == "all" else int(count)
                     for count in args.thread_counts]
    repeats = 1 if args.quick else args.repeats
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # as in the workers, for the line below
    print(machine_line())
    from lobes.deploy.export import write_model_folder

    systems = [
        "classify_file", *[f"classify_file, chunk_seconds {c:g}" for c in args.chunks],
        "classify_file, no chunking", "bare HF HubertModel",
    ]
    system_threads = dict.fromkeys(systems, args.threads)
    for count in thread_counts:
        for backend in ("classify_file", "onnxruntime"):
            system_threads[f"{backend} [{count} threads]"] = count
    systems = list(system_threads)
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model_folder = write_model_folder(
            work / "model", write_hubert(work / "hubert_base", args.size),
            ["neu", "hap", "ang", "sad"],
        )
        if thread_counts:
            import warnings

            from lobes.deploy.onnx_export import export_onnx

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's warnings on HF's Python checks
                report = export_onnx(model_folder)
            print(f"ONNX export: {report['export_seconds']:.1f} s, check "
                  f"{report['check_seconds']:.1f} s, largest probability difference "
                  f"{report['max_probability_difference']:.1e}")
        wav_path = str(write_test_wav(work / "test.wav", args.seconds))
        warmup_path = str(write_test_wav(work / "warmup.wav", 5.0, seed=1))
        print(f"model folder: random HuBERT-{args.size} + mean pooling + cosine head "
              f"(lobes.deploy.export.write_model_folder); file: {args.seconds:g} s, 16 kHz mono")
        connections, processes = {}, []
        for system in systems:  # loaded one after the other: no load overlaps a timed call
            ours, theirs = context.Pipe()
            process = context.Process(target=worker, args=(system, model_folder, wav_path,
                                                           warmup_path, theirs,
                                                           system_threads[system]))
            process.start()
            processes.append(process)
            connections[system] = ours
            ours.send("run")  # the first timed call doubles as a readiness signal
            ours.recv()
        for _ in range(repeats - 1):
            for connection in connections.values():
                connection.send("run")
                connection.recv()
        results = {}
        for system, connection in connections.items():
            connection.send("stop")
            results[system] = connection.recv()
        for process in processes:
            process.join()

    print(f"\n{'system':<34} {'wall s':>8} {'RTF':>7} {'x real time':>12} {'peak RSS MB':>12} "
          f"{'above loaded MB':>16}   (median of {repeats})")
    rtf = {}
    for system, result in results.items():
        wall = statistics.median(result["times"])
        rtf[system] = wall / args.seconds
        during = (result["peak_kb"] - result["rss_loaded_kb"]) / 1024
        print(f"{system:<34} {wall:>8.2f} {rtf[system]:>7.3f} {args.seconds / wall:>12.1f} "
              f"{result['peak_kb'] / 1024:>12.0f} {during:>16.0f}")
    for system, result in results.items():
        print(f"  {system}: calls {', '.join(f'{t:.2f}' for t in result['times'])} s")
    print(f"at the end: {load_note()}")
    if not all(result["peak_reset"] for result in results.values()):
        print("note: the peak could not be reset: peak RSS includes loading")
    bare_system = "bare HF HubertModel"
    ours, bare = results[systems[0]], results[bare_system]
    rtf_ratio = rtf[systems[0]] / rtf[bare_system]
    print(f"RTF ratio classify_file / bare HF forward: {rtf_ratio:.2f}; "
          f"peak RSS ratio: {ours['peak_kb'] / bare['peak_kb']:.2f}")
    onnx_figures = ""
    for count in thread_counts:
        torch_system, onnx_system = (f"{backend} [{count} threads]"
                                     for backend in ("classify_file", "onnxruntime"))
        rtf_ratio_onnx = rtf[onnx_system] / rtf[torch_system]
        peak_ratio = results[onnx_system]["peak_kb"] / results[torch_system]["peak_kb"]
        print(f"onnxruntime / torch with {count} thread(s): RTF ratio {rtf_ratio_onnx:.2f}, "
              f"peak RSS ratio {peak_ratio:.2f}")
        onnx_figures += (f" onnx_rtf_ratio_{count}={rtf_ratio_onnx:.2f}"
                         f" onnx_peak_ratio_{count}={peak_ratio:.2f}")
    print(f"\nrtf={rtf[systems[0]]:.4f} peak_rss_mb={ours['peak_kb'] / 1024:.0f} "
          f"rtf_ratio={rtf_ratio:.2f}{onnx_figures}")


if __name__ == "__main__":
    main()
