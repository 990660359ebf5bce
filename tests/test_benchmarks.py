"""The benchmarks of ``benchmarks/`` run, shrunk, and what they print holds together.

Each runs as a user runs it (a subprocess, offline), with sizes small enough for the suite; the
assertions are on what a broken benchmark or a broken recipe function would change: the summary
line, the equality checks the benchmark makes (identical label files, streamed labels equal to a
direct predict), and the ordering its figure claims (less padding than random batches). Speed
figures are not asserted: the machine is shared. ``scale_bench.py`` has its own test file.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_bench(name, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True,
        text=True, env=env, cwd=REPO, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def summary(output):
    """The last line's ``key=value`` pairs, as numbers."""
    last = output.strip().splitlines()[-1]
    return {key: float(value) for key, value in re.findall(r"(\w+)=([-\d.e+]+)", last)}


def test_extraction_bench_counts_passes_and_both_ways_write_the_same_labels():
    # the default corpus size: fewer utterances per speaker leave the valid split empty
    output = run_bench("extraction_bench.py", "--quick", "--layers", "3", "--scales", "4", "8")
    figures = summary(output)
    # one layer x two scales: the per-scale way encodes everything twice, ours once
    assert figures["passes_ours"] == 1 and figures["passes_per_scale"] == 2
    assert re.search(r"identical label files \((\d+) files\): True", output)
    assert int(re.search(r"identical label files \((\d+) files\)", output)[1]) == 3 * 2


def test_kmeans_bench_compares_both_fits_and_streams_the_labels():
    output = run_bench("kmeans_bench.py", "--n_frames", "3000", "--dim", "16", "--k", "8",
                       "--sklearn_n_init", "1")
    figures = summary(output)
    assert figures["speedup"] > 0
    assert 0.8 < figures["inertia_ratio"] < 1.25
    assert "labels equal direct predict: True" in output


def test_batching_bench_pads_less_than_random_batches():
    output = run_bench("batching_bench.py", "--quick", "--utts_per_speaker", "4")
    figures = summary(output)
    assert 0 <= figures["padding_dynamic"] < figures["padding_random"] < 1
    assert "iemocap-like" in output and "demo corpus" in output  # both duration sets


def test_step_bench_times_both_training_steps_and_the_heads():
    output = run_bench("step_bench.py", "--quick", "--size", "mid", "--batch", "1", "--min_s", "1",
                       "--max_s", "1.2", "--threads", "1")
    assert "overhead" in summary(output)
    heads = re.search(r"stage-1 frame heads ([\d.]+) ms, baseline pooling \+ linear ([\d.]+) ms",
                      output)
    # three frame heads (64 + 256 + 1024 classes on every frame) against one linear layer
    assert float(heads[1]) > float(heads[2])


def test_inference_bench_times_every_system():
    output = run_bench("inference_bench.py", "--quick", "--size", "mid", "--seconds", "4",
                       "--chunks", "1", "--threads", "1", "--thread_counts", "2")
    figures = summary(output)
    assert figures["rtf"] > 0 and figures["peak_rss_mb"] > 0 and figures["rtf_ratio"] > 0
    for system in ("classify_file ", "classify_file, chunk_seconds 1 ",
                   "classify_file, no chunking ", "bare HF HubertModel ",
                   "classify_file [2 threads] ", "onnxruntime [2 threads] "):
        assert any(line.startswith(system) for line in output.splitlines()), system
    # onnxruntime beside torch, as ratios (two threads only here: each thread count adds two
    # model processes; the by-hand run does 1 and all); the export checked itself
    assert figures["onnx_rtf_ratio_2"] > 0 and figures["onnx_peak_ratio_2"] > 0
    difference = re.search(r"largest probability difference ([\d.e+-]+)", output)
    assert float(difference[1]) <= 1e-4


def test_study_bench_runs_both_ways_with_identical_metrics():
    output = run_bench("study_bench.py", "--folds", "1,2", "--systems", "baseline", "--jobs",
                       "2", "--utts_per_speaker", "6")
    figures = summary(output)
    assert figures["identical"] == 1
    assert figures["ratio"] > 0 and figures["runner_help"] > 0
    # a step started with the libraries loaded skips their import: it cannot be slower
    assert 0 < figures["startup_loaded"] < figures["startup_new_process"]
    assert "--jobs 2 / --jobs 1 wall time" in output
