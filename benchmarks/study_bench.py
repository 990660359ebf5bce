"""Benchmark: a tiny study run one job at a time against several at once, and a step's start-up.

A study of the demo's tiny random-weight HuBERT on a small synthetic corpus (default: folds 1
and 2, gmp_tl and the baseline, one epoch per step) runs twice through ``run_cv.py``, as a user
runs it: ``--jobs 1``, then ``--jobs N`` (default: one per core) into a fresh folder. Printed:
both wall times and their ratio, and whether every ``metrics.json`` is byte-identical. Then the
start-up of one step (composing and checking its hparams, preparing nothing, finding it
finished) as a new process, which imports torch, SpeechBrain and transformers first, against
the same step run in a process that has them loaded already, as the local launcher's forked
jobs do; and the runner's own start (``run_cv.py --help``). With ``--slurm`` (a cluster that
``sbatch`` reaches, e.g. the tests' ``.ci/slurm-up``), the same study also runs through
``--launcher slurm --device cpu``: the time from the command to its first job running (and from
the end of the planning, the first line saying a job is queued), its wall time against the
local ``--jobs N`` study, and whether its metrics are byte-identical too.

Usage::

    python benchmarks/study_bench.py [--folds 1,2 --systems gmp_tl,baseline --jobs 2
                                      --utts_per_speaker 8 --epochs 1 --slurm]

The last line is ``ratio=<wall of --jobs N / wall of --jobs 1> identical=<1|0>
startup_new_process=<s> startup_loaded=<s> runner_help=<s>`` (with ``--slurm`` also
``slurm_first_job=<s> slurm_queue_to_run=<s> slurm_ratio=<wall slurm / wall local>
slurm_identical=<1|0>``).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_utils import RECIPE, machine_line, recipe_module

from lobes.fixtures.encoders import write_tiny_hubert

REPO = RECIPE.parents[2]


def study(output, corpus, encoder, overrides, folds, systems, *launch):
    """Run ``run_cv.py`` with the ``launch`` options; return its wall time and the seconds from
    its start to the first line saying a job is queued and to the first saying one runs."""
    command = [sys.executable, str(RECIPE / "run_cv.py"), "--data_folder", str(corpus),
               "--output_folder", str(output), "--encoder_source", str(encoder),
               "--overrides", str(REPO / "hparams" / "encoders" / "tiny.yaml"),
               str(RECIPE / "hparams" / "demo.yaml"), str(overrides), "--folds", folds,
               "--systems", systems, *launch]
    started = time.perf_counter()
    first = {}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        lines = []
        for line in process.stdout:
            lines.append(line)
            for state in ("queued", "running"):
                if f": {state}" in line:
                    first.setdefault(state, time.perf_counter() - started)
        errors = process.stderr.read()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"the study failed:\n{''.join(lines)[-2000:]}{errors}")
    return elapsed, first


def metrics_identical(first, second):
    """True when every ``metrics.json`` of ``first`` has a byte-identical twin in ``second``."""
    files = sorted(path.relative_to(first) for path in Path(first).rglob("metrics.json"))
    return bool(files) and all((Path(first) / name).read_bytes() ==
                               (Path(second) / name).read_bytes() for name in files)


def startup_times(step_folder, repeats=3):
    """Seconds to start a finished step: in a new process, and in one with the libraries loaded.

    The step is the study's own (its ``run_overrides.yaml``), so both paths do everything a
    step does before training: compose and check the hparams, plan its settings and find the
    folder finished.
    """
    step_folder = Path(step_folder)
    hparams = RECIPE / "hparams" / ("baseline.yaml" if step_folder.name == "baseline"
                                    else f"{step_folder.name}.yaml")
    argv = [str(hparams), "--overrides", str(step_folder / "run_overrides.yaml")]
    new_process, loaded = [], []
    train = recipe_module("train")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, str(RECIPE / "train.py"), *argv], check=True,
                       capture_output=True)
        new_process.append(time.perf_counter() - started)
        started = time.perf_counter()
        train.main(argv)
        loaded.append(time.perf_counter() - started)
    return sorted(new_process)[len(new_process) // 2], sorted(loaded)[len(loaded) // 2]


def runner_help_time():
    started = time.perf_counter()
    subprocess.run([sys.executable, str(RECIPE / "run_cv.py"), "--help"], check=True,
                   capture_output=True)
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", default="1,2")
    parser.add_argument("--systems", default="gmp_tl,baseline")
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--utts_per_speaker", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--slurm", action="store_true",
                        help="also run the study on the Slurm cluster that sbatch reaches")
    parser.add_argument("--keep", help="a folder to keep the studies in (default: a temporary "
                                       "one, deleted)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as make demo: results do not depend on --jobs
    root = Path(args.keep or tempfile.mkdtemp(prefix="study_bench_"))
    print(machine_line())
    corpus = recipe_module("make_demo_corpus").make_demo_corpus(
        root / "corpus", seed=3, utts_per_speaker=args.utts_per_speaker)
    encoder = write_tiny_hubert(root / "tiny_hubert", n_layers=4, dim=64, conv_dim=16)
    overrides = root / "overrides.yaml"
    overrides.write_text(f"number_of_epochs: {args.epochs}\n")
    walls = {}
    for jobs in (1, args.jobs):
        output = root / f"jobs{jobs}"
        shutil.rmtree(output, ignore_errors=True)
        walls[jobs] = study(output, corpus, encoder, overrides, args.folds, args.systems,
                            "--jobs", str(jobs))[0]
        print(f"study of folds {args.folds}, systems {args.systems}, --jobs {jobs}: "
              f"{walls[jobs]:.1f} s", flush=True)
    identical = metrics_identical(root / "jobs1", root / f"jobs{args.jobs}")
    ratio = walls[args.jobs] / walls[1]
    print(f"--jobs {args.jobs} / --jobs 1 wall time: {ratio:.2f}; metrics.json byte-identical: "
          f"{identical}")
    step = sorted((root / "jobs1").glob("fold*/baseline"))[0] if "baseline" in args.systems \
        else sorted((root / "jobs1").glob("fold*/stage2"))[0]
    fresh, loaded = startup_times(step)
    help_time = runner_help_time()
    print(f"start-up of a finished step ({step.name}): new process {fresh:.2f} s, with the "
          f"libraries loaded (a forked job) {loaded:.2f} s ({fresh / loaded:.1f}x)")
    print(f"run_cv.py --help: {help_time:.2f} s")
    slurm = ""
    if args.slurm:
        wall, first = study(root / "slurm", corpus, encoder, overrides, args.folds, args.systems,
                            "--launcher", "slurm", "--device", "cpu")
        same = metrics_identical(root / "jobs1", root / "slurm")
        print(f"--launcher slurm: {wall:.1f} s ({wall / walls[args.jobs]:.2f} x the local "
              f"--jobs {args.jobs} study); first job running {first['running']:.1f} s after "
              f"the command, {first['running'] - first['queued']:.1f} s after the first was "
              f"queued; metrics.json byte-identical: {same}")
        slurm = (f" slurm_first_job={first['running']:.2f} slurm_queue_to_run="
                 f"{first['running'] - first['queued']:.2f} slurm_ratio="
                 f"{wall / walls[args.jobs]:.3f} slurm_identical={int(same)}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(f"ratio={ratio:.3f} identical={int(identical)} startup_new_process={fresh:.2f} "
          f"startup_loaded={loaded:.2f} runner_help={help_time:.2f}{slurm}")


if __name__ == "__main__":
    main()
