#!/usr/bin/env python3
"""Leave-one-session-out cross-validation of GMP-TL, the baseline and the ablations.

For each fold K: prepare the manifests, then every step of every system asked for, each in
its own folder under ``OUT/fold<K>/``, then the results tables over the folds::

    python run_cv.py --data_folder PATH/IEMOCAP_full_release --output_folder OUT \\
        [--folds 1,2,3,4,5] [--systems gmp_tl,baseline] [--overrides FILE.yaml ...] \\
        [--hubert_source PATH_OR_HUB_ID] [--expected_utterances N] [--nproc N] \\
        [--corpus iemocap|cremad|ravdess|msppodcast] [--prepare_option KEY=VALUE ...]

``--corpus`` picks the preparation (``recipes/*/GMP-TL/<corpus>_prepare.py``); the emotion
heads are sized from the ``classes.json`` it writes. A finished step (its folder holds its
completion marker) is skipped, so an interrupted run continues where it stopped; a step killed
mid-way resumes from its own SpeechBrain checkpoint.
With ``--nproc N`` every training step and the GMP extraction run under
``torchrun --nproc_per_node=N`` (SpeechBrain DDP).

Systems:
    gmp_tl        stage 0 -> GMP extraction -> stage 1 -> stage 2  (the method)
    baseline      plain CE fine-tuning of the pre-trained encoder
    no_gender     gmp_tl with lambda_gender = 0 in stage 0
    single_scale  gmp_tl with one GMP scale in stage 1 (--single_scale_k, default the middle one)
    no_stage1     stage 2 straight from the pre-trained encoder
"""

import argparse
import importlib.util
import inspect
import json
import logging
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ruamel.yaml import YAML

from lobes.hparams_check import hparams_keys
from lobes.io_utils import atomic_write, write_json_atomic
from lobes.metrics import plot_confusion, plot_learning_curves, read_train_log

RECIPE_DIR = Path(__file__).resolve().parent
RECIPES_ROOT = RECIPE_DIR.parents[1]
HPARAMS_DIR = RECIPE_DIR / "hparams"
SYSTEMS = ("gmp_tl", "baseline", "no_gender", "single_scale", "no_stage1")
REPORTED = {"name": "GMP-TL (paper, reported)", "WA": 0.800, "UA": 0.820}
logger = logging.getLogger("run_cv")


@dataclass
class Step:
    """One run of one script in one folder; ``marker`` is the file that says it is finished."""

    folder: str
    script: str
    hparams: str
    overrides: dict = field(default_factory=dict)
    marker: str = "encoder.ckpt"


def system_steps(system, single_scale_k):
    """The steps of ``system``, folders relative to the fold folder; the last gives the metrics.

    Example
    -------
    >>> [step.folder for step in system_steps("single_scale", 256)]
    ['stage0', 'gmp', 'single_scale/stage1', 'single_scale/stage2']
    """
    if system == "baseline":
        return [Step("baseline", "train.py", "baseline.yaml")]
    if system == "no_stage1":
        return [Step("no_stage1", "train.py", "stage2.yaml", {"encoder_init": None})]
    root = {"gmp_tl": "", "no_gender": "no_gender/", "single_scale": ""}[system]
    stage0 = Step(f"{root}stage0", "train_mtl.py", "stage0_mtl.yaml")
    if system == "no_gender":
        stage0.overrides["lambda_gender"] = 0.0
    gmp = Step(f"{root}gmp", "extract_gmp.py", "gmp.yaml", marker="cluster_report.json")
    gmp.overrides["stage0_folder"] = stage0.folder
    root = "single_scale/" if system == "single_scale" else root
    stage1 = Step(f"{root}stage1", "train.py", "stage1.yaml", {"gmp_folder": gmp.folder})
    if system == "single_scale":
        stage1.overrides.update(gmp_scales=[single_scale_k], gmp_scale_weights=[1.0])
    stage2 = Step(
        f"{root}stage2", "train.py", "stage2.yaml",
        {"encoder_init": f"{stage1.folder}/encoder.ckpt"},
    )
    return [stage0, gmp, stage1, stage2]


def load_overrides(files):
    """Merge YAML override files, later files winning, keeping tags such as ``!PLACEHOLDER``."""
    merged = {}
    yaml = YAML(typ="rt")
    for path in files:
        content = yaml.load(Path(path).read_text()) or {}
        if not isinstance(content, dict):
            raise ValueError(f"override file {path} must hold a mapping of hparam: value")
        merged.update(content)
    return merged


def yaml_value(value):
    """One override value as YAML flow text for SpeechBrain's ``--key=value`` arguments."""
    if value is None:
        return "null"
    if hasattr(value, "tag") and getattr(value.tag, "value", None):
        return f"{value.tag.value} {value.value}".strip()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_value(item) for item in value) + "]"
    return str(value)


def effective_gmp_scales(overrides):
    """``gmp_scales`` as the stage-1 hparams will see them (override or file default)."""
    if "gmp_scales" in overrides:
        return list(overrides["gmp_scales"])
    text = (HPARAMS_DIR / "stage1.yaml").read_text()
    return [int(k) for k in re.search(r"^gmp_scales: \[(.*)\]", text, re.M).group(1).split(",")]


def check_override_keys(overrides, steps):
    """Every override key must be an hparam of some step: catches misspelled keys early."""
    known = set().union(*(hparams_keys(HPARAMS_DIR / step.hparams) for step in steps))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SystemExit(
            f"override keys {unknown} are hparams of no stage ({', '.join(sorted(known))[:300]} "
            "...): check their spelling"
        )


def step_command(step, fold_dir, fold, overrides, args):
    """The command line of one step, with the overrides its hparams file knows."""
    values = dict(overrides)
    values.update(
        data_folder=args.data_folder,
        test_session=fold,
        output_root=str(fold_dir),
        prepare_folder=str(fold_dir / "prepare"),
        output_folder=str(fold_dir / step.folder),
        skip_prep=True,
        expected_utterances=args.expected_utterances,
    )
    for key, value in step.overrides.items():
        is_folder = key in ("stage0_folder", "gmp_folder", "encoder_init") and value
        values[key] = str(fold_dir / value) if is_folder else value
    known = hparams_keys(HPARAMS_DIR / step.hparams)
    script_args = [str(HPARAMS_DIR / step.hparams)]
    script_args += [f"--{key}={yaml_value(value)}" for key, value in values.items() if key in known]
    if args.nproc > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        return [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}",
            str(RECIPE_DIR / step.script), *script_args, f"--distributed_backend={backend}",
        ]
    return [sys.executable, str(RECIPE_DIR / step.script), *script_args]


def run_logged(label, command, log_path):
    """Run a command, its output to the console and to ``log_path``; stop the runner on failure."""
    started = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {label}: running", flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.time() - started
    if completed.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
        raise SystemExit(
            f"{label} failed (exit {completed.returncode}) after {elapsed:.1f} s; full log: "
            f"{log_path}\n--- last lines ---\n{tail}"
        )
    print(f"[{time.strftime('%H:%M:%S')}] {label}: done in {elapsed:.1f} s", flush=True)


def available_corpora():
    """Corpus names with a ``recipes/<CORPUS>/GMP-TL/<name>_prepare.py``.

    Example
    -------
    >>> {"iemocap", "cremad", "ravdess", "msppodcast"} <= set(available_corpora())
    True
    """
    return sorted(path.name[: -len("_prepare.py")]
                  for path in RECIPES_ROOT.glob("*/GMP-TL/*_prepare.py"))


def load_prepare(corpus):
    """``prepare_<corpus>`` from ``recipes/*/GMP-TL/<corpus>_prepare.py``.

    A new corpus needs only that file (a function writing the manifest contract and
    ``classes.json``); its test-fold argument is ``test_session`` or ``fold``.
    """
    path = next(RECIPES_ROOT.glob(f"*/GMP-TL/{corpus}_prepare.py"))
    spec = importlib.util.spec_from_file_location(f"{corpus}_prepare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, f"prepare_{corpus}")


def prepare_fold(fold_dir, fold, overrides, args):
    """Write the fold's manifests in-process (skipped when done with the same options).

    Returns the overrides that size the emotion heads from the data: the corpus' class list
    as written to ``classes.json`` by the preparation.
    """
    options = {key: overrides[key] for key in ("valid_ratio", "seed") if key in overrides}
    prepare = load_prepare(args.corpus)
    defaults = inspect.signature(prepare).parameters
    for key, value in args.prepare_options.items():
        if key not in defaults:
            raise SystemExit(f"--prepare_option {key}: {prepare.__name__} has no such option")
        # typed like the function's default (classes="4" stays a string, n_folds=5 an int)
        default = defaults[key].default
        options[key] = type(default)(value) if isinstance(default, int | float) else value
    if args.corpus == "iemocap":
        options["expected_utterances"] = args.expected_utterances
    options["test_session" if "test_session" in defaults else "fold"] = fold
    started = time.time()
    summary = prepare(
        data_folder=args.data_folder, save_folder=str(fold_dir / "prepare"), **options
    )
    state = "complete, skipped" if summary and summary.get("skipped") else (
        f"done in {time.time() - started:.1f} s")
    print(f"[{time.strftime('%H:%M:%S')}] fold {fold} | prepare: {state}", flush=True)
    classes = json.loads((fold_dir / "prepare" / "classes.json").read_text())
    return {"emotion_classes": classes, "n_emotions": len(classes)}


def run_fold(fold, args, overrides, systems):
    fold_dir = Path(args.output_folder) / f"fold{fold}"
    overrides = {**overrides, **prepare_fold(fold_dir, fold, overrides, args)}
    done = set()
    for system in systems:
        for step in system_steps(system, args.single_scale_k):
            if step.folder in done:
                continue
            done.add(step.folder)
            if (fold_dir / step.folder / step.marker).exists():
                print(f"fold {fold} | {step.folder}: complete, skipped", flush=True)
                continue
            command = step_command(step, fold_dir, fold, overrides, args)
            run_logged(f"fold {fold} | {step.folder}", command,
                       fold_dir / step.folder / "run.log")


def collect_results(output_folder, folds, systems, single_scale_k, corpus="iemocap"):
    """Read every finished run's ``metrics.json`` into the results dictionary."""
    results = {"systems": {}}
    if corpus == "iemocap":
        results["reported"] = REPORTED
    for system in systems:
        final_step = system_steps(system, single_scale_k)[-1]
        per_fold, confusion, classes = {}, None, None
        for fold in folds:
            path = Path(output_folder) / f"fold{fold}" / final_step.folder / "metrics.json"
            if not path.exists():
                continue
            metrics = json.loads(path.read_text())
            per_fold[str(fold)] = {"WA": metrics["WA"], "UA": metrics["UA"]}
            fold_confusion = np.asarray(metrics["confusion"])
            confusion = fold_confusion if confusion is None else confusion + fold_confusion
            classes = metrics["classes"]
        if not per_fold:
            continue
        summary = {"folds": per_fold}
        for stat, function in (("mean", np.mean), ("std", np.std)):
            summary[stat] = {
                key: float(function([fold_values[key] for fold_values in per_fold.values()]))
                for key in ("WA", "UA")
            }
        summary["confusion"] = confusion.tolist()
        summary["classes"] = classes
        results["systems"][system] = summary
    return results


def results_markdown(results, folds):
    lines = ["| system | WA (%) | UA (%) | folds |", "|---|---|---|---|"]
    if "reported" in results:
        reported = results["reported"]
        lines.append(f"| {reported['name']} | {100 * reported['WA']:.1f} "
                     f"| {100 * reported['UA']:.1f} | 5 (reported, not run here) |")
    for system, summary in results["systems"].items():
        mean, std = summary["mean"], summary["std"]
        lines.append(
            f"| {system} | {100 * mean['WA']:.1f} ± {100 * std['WA']:.1f} "
            f"| {100 * mean['UA']:.1f} ± {100 * std['UA']:.1f} "
            f"| {', '.join(summary['folds'])} of {', '.join(map(str, folds))} |"
        )
    lines += ["", "Mean ± standard deviation (population) over the folds run. Per fold:", ""]
    lines += ["| system | fold | WA (%) | UA (%) |", "|---|---|---|---|"]
    for system, summary in results["systems"].items():
        for fold, values in summary["folds"].items():
            lines.append(
                f"| {system} | {fold} | {100 * values['WA']:.1f} | {100 * values['UA']:.1f} |"
            )
    lines += ["", "Confusion matrices summed over the folds:", ""]
    lines += [f"![{system}](confusion_{system}.png)" for system in results["systems"]]
    lines += ["", "Learning curves of every training step (valid set; one line per fold):", ""]
    lines += [f"![{system} curves](curves_{system}.png)" for system in results["systems"]]
    return "\n".join(lines) + "\n"


def learning_curves(output_folder, folds, system, single_scale_k):
    """``{step folder: {fold: read_train_log(...)}}`` of the system's training steps."""
    runs = {}
    for step in system_steps(system, single_scale_k):
        logs = {fold: Path(output_folder) / f"fold{fold}" / step.folder / "train_log.txt"
                for fold in folds}
        folds_run = {fold: read_train_log(log) for fold, log in logs.items() if log.exists()}
        if any(folds_run.values()):
            runs[step.folder] = folds_run
    return runs


def write_results(output_folder, folds, systems, single_scale_k, corpus="iemocap"):
    output_folder = Path(output_folder)
    results = collect_results(output_folder, folds, systems, single_scale_k, corpus)
    write_json_atomic(output_folder / "results.json", results)
    markdown = results_markdown(results, folds)
    with atomic_write(output_folder / "results.md") as handle:
        handle.write(markdown)
    for system, summary in results["systems"].items():
        plot_confusion(summary["confusion"], summary["classes"],
                       output_folder / f"confusion_{system}.png",
                       title=f"{system}: folds {', '.join(summary['folds'])}")
        plot_learning_curves(learning_curves(output_folder, folds, system, single_scale_k),
                             output_folder / f"curves_{system}.png", title=system)
    return markdown


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_folder", required=True,
                        help="the corpus folder (IEMOCAP: the IEMOCAP_full_release folder)")
    parser.add_argument("--corpus", default="iemocap", choices=available_corpora(),
                        help="which prepare function writes the manifests (default iemocap)")
    parser.add_argument("--prepare_option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra option of the corpus' prepare function, e.g. classes=6")
    parser.add_argument("--output_folder", required=True, help="where fold<K>/ and results go")
    parser.add_argument("--folds", default="1,2,3,4,5", help="test sessions, comma separated")
    parser.add_argument("--systems", default="gmp_tl,baseline",
                        help=f"comma separated, from {', '.join(SYSTEMS)}")
    parser.add_argument("--overrides", nargs="+", default=[],
                        help="YAML files of hparam overrides applied to every stage")
    parser.add_argument("--hubert_source", help="hub id or local folder of the encoder")
    parser.add_argument("--expected_utterances", type=int, default=5531,
                        help="utterance count check of the preparation; 0 turns it off")
    parser.add_argument("--single_scale_k", type=int,
                        help="the K of the single_scale ablation (default: the middle GMP scale)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes per step (torchrun, SpeechBrain DDP); 1 runs plainly")
    args = parser.parse_args(argv)
    args.folds = [int(fold) for fold in args.folds.split(",")]
    args.systems = args.systems.split(",")
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    args.data_folder = str(Path(args.data_folder).resolve())
    args.prepare_options = {}
    for option in args.prepare_option:
        key, separator, value = option.partition("=")
        if not separator:
            parser.error(f"--prepare_option {option!r} is not KEY=VALUE")
        args.prepare_options[key] = value
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    overrides = load_overrides(args.overrides)
    if args.hubert_source:
        overrides["hubert_source"] = args.hubert_source
    scales = effective_gmp_scales(overrides)
    if args.single_scale_k is None:
        args.single_scale_k = scales[len(scales) // 2]
    elif args.single_scale_k not in scales:
        raise SystemExit(f"--single_scale_k {args.single_scale_k} is not among gmp_scales {scales}")
    all_steps = [step for system in args.systems for step in system_steps(system, 0)]
    check_override_keys(overrides, all_steps)
    started = time.time()
    for fold in args.folds:
        run_fold(fold, args, overrides, args.systems)
        write_results(args.output_folder, args.folds, args.systems, args.single_scale_k,
                      args.corpus)
    markdown = write_results(args.output_folder, args.folds, args.systems, args.single_scale_k,
                             args.corpus)
    print(f"\nall folds done in {time.time() - started:.0f} s; results in "
          f"{Path(args.output_folder) / 'results.md'}\n")
    print(markdown)


if __name__ == "__main__":
    main()
