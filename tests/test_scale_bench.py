"""``benchmarks/scale_bench.py --quick``: every part measured, the summary consistent with the
tables it prints, the disk equal to ``lobes.runner.disk.plan``, the FLOP count equal to an
independent count (FlopCounterMode).

One subprocess run of ``--quick`` (about 20 s on 2 cores) serves every test.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "scale_bench.py"
STAGES = ("stage0", "stage1", "stage2", "baseline")
PRECISIONS = ("fp32", "bf16")
SUMMARY = re.compile(r"^audio_s_per_s=(\S+) projected_hours=(\S+) disk_gb=(\S+)$")
# analytic and FlopCounterMode counts are both exact sums of the same products: they must agree
# to rounding; 0.5 % leaves room for nothing else
FLOP_TOLERANCE = 0.005


@pytest.fixture(scope="module")
def quick_output():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, env=env,
        cwd=REPO, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def table_rows(text, header_start):
    """The ``|``-separated rows of the table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def summary(text):
    match = SUMMARY.match(text.rstrip("\n").splitlines()[-1])
    assert match, f"last line is not the summary: {text.splitlines()[-1]!r}"
    return [float(value) for value in match.groups()]


def test_every_stage_and_precision_measured(quick_output):
    training = table_rows(quick_output, "| stage    | prec | steps")
    assert {(row[0], row[1]) for row in training} == {(s, p) for s in STAGES for p in PRECISIONS}
    for row in training:
        steps, audio_per_s, peak = int(row[2]), float(row[7]), row[10]
        assert steps == 2 and audio_per_s > 0 and re.match(r"[\d.]+ (MiB|GiB)", peak)
    evaluation = table_rows(quick_output, "| stage    | prec | batches")
    assert {(row[0], row[1]) for row in evaluation} == {(s, p) for s in STAGES
                                                         for p in PRECISIONS}
    extraction = table_rows(quick_output, "| prec | batches")
    assert sorted(row[0] for row in extraction) == sorted(PRECISIONS)
    kmeans = table_rows(quick_output, "|     K |")
    assert [int(row[0]) for row in kmeans] == [64, 256, 1024]
    assert all(float(row[1]) > 0 for row in kmeans)


def test_summary_line_parses_with_positive_numbers(quick_output):
    audio_s_per_s, hours, disk_gb = summary(quick_output)
    assert audio_s_per_s > 0 and hours > 0 and disk_gb > 0


def test_summary_throughput_is_the_faster_precision(quick_output):
    audio_s_per_s, _, _ = summary(quick_output)
    training = table_rows(quick_output, "| stage    | prec | steps")
    pooled = {}
    for precision in PRECISIONS:
        rows = [row for row in training if row[1] == precision]
        audio = sum(int(row[2]) * float(row[3]) for row in rows)
        seconds = sum(int(row[2]) * float(row[5]) for row in rows)
        pooled[precision] = audio / seconds
    # the table rounds step seconds to 1 ms
    assert audio_s_per_s == pytest.approx(max(pooled.values()), rel=0.03)


def test_projected_hours_are_the_sum_of_the_printed_table(quick_output):
    _, hours, _ = summary(quick_output)
    chosen = re.search(r"^summary precision: (\w+)", quick_output, re.MULTILINE).group(1)
    text = quick_output[quick_output.index(f"projection, {chosen} "):]
    rows = table_rows(text, "| step ")  # the chosen precision's table
    steps = [row for row in rows if row[0] != "total"]
    names = [row[0] for row in steps]
    assert names[:1] == ["stage0"] and {"stage1", "stage2", "baseline", "gmp extraction"} <= set(
        names) and any(name.startswith("k-means") for name in names)
    total_row = next(row for row in rows if row[0] == "total")
    column_sum = sum(float(row[7]) for row in steps)
    assert column_sum == pytest.approx(float(total_row[7]), abs=1e-3)
    assert hours == pytest.approx(float(total_row[7]), abs=1e-3)
    for row in steps:  # each step's total is the sum of its parts
        assert float(row[7]) == pytest.approx(sum(float(cell) for cell in row[2:7]), abs=5e-4)
    # stage 1 runs 10 epochs, the others 30: its training share is the smallest
    train = {row[0]: float(row[2]) for row in steps}
    assert train["stage1"] < min(train["stage0"], train["stage2"], train["baseline"])


def test_disk_is_the_plan_peak_for_the_quick_encoder(quick_output, tmp_path):
    from batching_bench import iemocap_like_durations
    from scale_bench import QUICK_SIZE

    from lobes.fixtures.encoders import write_random_encoder
    from lobes.models.encoder import encoder_config
    from lobes.runner.disk import GB, feature_cache_bytes, parameter_counts, plan

    folder = write_random_encoder("hubert_large", tmp_path / "encoder", **QUICK_SIZE)
    total, front_end = parameter_counts(encoder_config(folder))
    durations = iemocap_like_durations()
    manifest = {str(i): {"duration": float(d)} for i, d in enumerate(durations)}
    cache = feature_cache_bytes([manifest], QUICK_SIZE["hidden_size"], 1)
    # run_cv.py --systems gmp_tl,baseline: stage0, stage1, stage2, baseline per fold
    _, peak = plan(4, 5, total, front_end, cache, hub_download=True, keep_feature_cache=False)
    _, _, disk_gb = summary(quick_output)
    assert disk_gb == pytest.approx(peak / GB, abs=6e-4)


def test_flop_count_matches_flop_counter_mode(quick_output, tmp_path):
    """The printed forward FLOP of a 4 s clip (and per second of audio) against
    ``torch.utils.flop_counter.FlopCounterMode`` on the same shrunk encoder, eager attention."""
    from scale_bench import QUICK_SIZE
    from scale_flops import FLOP_CHECK_SECONDS
    from torch.utils.flop_counter import FlopCounterMode

    from lobes.fixtures.encoders import write_random_encoder
    from lobes.models.encoder import SSLEncoder

    match = re.search(r"forward FLOP of one ([\d.]+) s clip \(eval, all \d+ layers\): (\d+) = "
                      r"([\d.]+) GFLOP per second of audio", quick_output)
    assert match, "no forward FLOP line"
    seconds, printed, per_second = float(match.group(1)), int(match.group(2)), float(
        match.group(3))
    assert seconds == FLOP_CHECK_SECONDS
    folder = write_random_encoder("hubert_large", tmp_path / "encoder", **QUICK_SIZE)
    encoder = SSLEncoder(folder, tmp_path / "hub", output_layers=[-1], freeze="cnn").eval()
    encoder.model.set_attn_implementation("eager")  # FlopCounterMode misses CPU SDPA kernels
    wavs = torch.randn(1, int(seconds * 16000))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(wavs)
    counted = counter.get_total_flops()
    assert printed == pytest.approx(counted, rel=FLOP_TOLERANCE)
    assert per_second == pytest.approx(counted / seconds / 1e9, rel=FLOP_TOLERANCE, abs=1e-4)
    # and the benchmark's own cross-checks (forward; training step with the grouped-conv fix)
    ratios = [float(r) for r in re.findall(r"cross-check FlopCounterMode.*\(ratio ([\d.]+)\)",
                                           quick_output)]
    assert len(ratios) == 2 and np.allclose(ratios, 1.0, atol=FLOP_TOLERANCE)
