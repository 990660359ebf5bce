#!/usr/bin/env python3
"""Leave-one-session-out cross-validation of GMP-TL, the baseline and the ablations.

For each fold K every step of every system asked for runs in its own folder under
``OUT/fold<K>/``; then the results tables over the folds::

    python run_cv.py --data_folder PATH/IEMOCAP_full_release --output_folder OUT \\
        [--folds 1,2,3,4,5] [--systems gmp_tl,baseline] [--overrides FILE.yaml ...] \\
        [--encoder_source PATH_OR_HUB_ID] [--corpus NAME] [--prepare_option KEY=VALUE ...] \\
        [--precision bf16] [--nproc N] ...

Before any training it prepares every fold (a fold the corpus lacks stops here), checks every
override key, plans each step's settings and compares them with what a step folder already
holds, and prints the disk the run needs. A step finished with the same settings is skipped; a
step whose settings or inputs changed stops the run, naming the changes, unless
``--rerun_changed`` (then it and the steps after it run again). A step killed mid-way resumes
from its own checkpoint.

Systems:
    gmp_tl        stage 0 -> GMP extraction -> stage 1 -> stage 2  (the method)
    baseline      plain CE fine-tuning of the pre-trained encoder
    no_gender     gmp_tl with lambda_gender = 0 in stage 0
    single_scale  gmp_tl with one GMP scale in stage 1 (--single_scale_k, default the middle one)
    no_stage1     stage 2 straight from the pre-trained encoder
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from steps import TABLE

from lobes.data.corpora import corpus_folds, corpus_split_name
from lobes.data.manifests import PreparationError
from lobes.runner import cv, recipe
from lobes.runner.disk import DiskSpaceError
from lobes.runner.hparams import HparamsError
from lobes.runner.results import write_results
from lobes.runner.settings import read_record
from lobes.training.checkpoints import finish_step

SYSTEMS = ("gmp_tl", "baseline", "no_gender", "single_scale", "no_stage1")
REPORTED = {"name": "GMP-TL (paper, reported)", "WA": 0.800, "UA": 0.820}
logger = logging.getLogger("run_cv")


def system_steps(system, single_scale_k):
    """The steps of ``system``, folders relative to the fold folder; the last gives the metrics.

    Example
    -------
    >>> [step.folder for step in system_steps("single_scale", 256)]
    ['stage0', 'gmp', 'single_scale/stage1', 'single_scale/stage2']
    """
    if system == "baseline":
        return [cv.Step("baseline", "baseline.yaml")]
    if system == "no_stage1":
        return [cv.Step("no_stage1", "stage2.yaml", {"encoder_init": None})]
    root = "no_gender/" if system == "no_gender" else ""
    stage0 = cv.Step(f"{root}stage0", "stage0_mtl.yaml")
    if system == "no_gender":
        stage0.overrides["lambda_gender"] = 0.0
    gmp = cv.Step(f"{root}gmp", "gmp.yaml")
    root = "single_scale/" if system == "single_scale" else root
    stage1 = cv.Step(f"{root}stage1", "stage1.yaml")
    if system == "single_scale":
        stage1.overrides.update(gmp_scales=[single_scale_k], gmp_scale_weights=[1.0])
    stage2 = cv.Step(f"{root}stage2", "stage2.yaml", {"encoder_init": f"{root}stage1/encoder.ckpt"})
    folders = {"stage0_folder": stage0.folder, "gmp_folder": gmp.folder,
               "stage1_folder": stage1.folder}
    for step in (stage0, gmp, stage1, stage2):
        step.overrides.update(folders)
    return [stage0, gmp, stage1, stage2]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_folder", required=True,
                        help="the corpus folder (IEMOCAP: the IEMOCAP_full_release folder)")
    parser.add_argument("--output_folder", required=True, help="where fold<K>/ and results go")
    parser.add_argument("--corpus", choices=sorted(TABLE.corpora),
                        help="which preparation writes the manifests (default: iemocap)")
    parser.add_argument("--prepare_option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the corpus' prepare function, e.g. classes=6")
    parser.add_argument("--folds", help="test folds, comma separated (default: the corpus' "
                                         "own folds, e.g. EmoBox's; else 1,2,3,4,5)")
    parser.add_argument("--systems", default="gmp_tl,baseline",
                        help=f"comma separated, from {', '.join(SYSTEMS)}")
    parser.add_argument("--overrides", nargs="+", default=[],
                        help="YAML files of hparam overrides (hparams/encoders/*.yaml ...)")
    parser.add_argument("--encoder_source",
                        help="hub id or local folder of the encoder")
    parser.add_argument("--expected_utterances", type=int,
                        help="IEMOCAP's utterance count check (default 5531; 0 turns it off)")
    parser.add_argument("--single_scale_k", type=int,
                        help="the K of the single_scale ablation (default: the middle scale)")
    parser.add_argument("--rerun_changed", action="store_true",
                        help="run steps whose settings changed again, in place")
    parser.add_argument("--plan_only", action="store_true",
                        help="check everything, print the plan and the disk, run nothing")
    parser.add_argument("--skip_disk_check", action="store_true",
                        help="run even when the free disk looks short")
    run = parser.add_argument_group("run options, passed to every step")
    run.add_argument("--device", help="e.g. cuda:0 or cpu (default: a GPU when there is one)")
    run.add_argument("--precision", choices=("fp32", "fp16", "bf16"),
                     help="training precision (automatic mixed precision)")
    run.add_argument("--eval_precision", choices=("fp32", "fp16", "bf16"),
                     help="precision of validation, test and the GMP extraction")
    run.add_argument("--compile", action="store_true", help="torch.compile the modules")
    run.add_argument("--nproc", type=int, default=1,
                     help="processes per node for each step (torchrun, SpeechBrain DDP)")
    run.add_argument("--nnodes", type=int, default=1, help="nodes (run this on each)")
    run.add_argument("--node_rank", type=int, default=0, help="this node's rank")
    run.add_argument("--rdzv_endpoint", help="HOST:PORT of the rendezvous (nnodes > 1)")
    args = parser.parse_args(argv)
    try:
        args.folds = args.folds and [int(fold) for fold in args.folds.split(",")]
    except ValueError:
        parser.error(f"--folds takes numbers separated by commas, got {args.folds!r}")
    args.systems = args.systems.split(",")
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    if args.nnodes > 1 and not args.rdzv_endpoint:
        parser.error("--nnodes above 1 needs --rdzv_endpoint HOST:PORT")
    args.data_folder = str(Path(args.data_folder).resolve())
    return args


def run_overrides(args):
    """The overrides of every step: the files, then the command-line options."""
    overrides = recipe.read_override_files(args.overrides)
    overrides["data_folder"] = args.data_folder
    for key in ("encoder_source", "expected_utterances", "corpus"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    options = dict(overrides.get("prepare_options") or {})
    for option in args.prepare_option:
        key, separator, value = option.partition("=")
        if not separator:
            raise SystemExit(f"--prepare_option {option!r} is not KEY=VALUE")
        options[key] = value
    if options:
        overrides["prepare_options"] = options
    return overrides


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s - %(message)s")
    overrides = run_overrides(args)
    gmp_scales = recipe.resolve_values(
        recipe.hp.compose(TABLE.hparams_folder / TABLE.common),
        {**overrides, "output_folder": "unused"})["gmp_scales"]
    if args.single_scale_k is None:
        args.single_scale_k = gmp_scales[len(gmp_scales) // 2]
    elif args.single_scale_k not in gmp_scales:
        raise SystemExit(f"--single_scale_k {args.single_scale_k} is not among gmp_scales "
                         f"{gmp_scales}")
    systems = {system: system_steps(system, args.single_scale_k) for system in args.systems}
    steps = list({step.folder: step for chain in systems.values() for step in chain}.values())
    recipe.sort_run_overrides(TABLE, overrides)  # no step knows it: stop now
    corpus_values = {"corpus": "iemocap", **overrides}
    try:
        args.folds = args.folds or corpus_folds(corpus_values, TABLE.corpora) or [1, 2, 3, 4, 5]
    except PreparationError as error:
        raise SystemExit(f"error: {error}") from None
    cv.prepare_folds(args, overrides, TABLE)
    planned = cv.plan_run(args, overrides, steps, TABLE)
    cv.check_changes(planned, args.output_folder, args.rerun_changed, args.plan_only)
    cv.plan_disk(args, planned, TABLE)
    if args.plan_only:
        for entry in planned:
            finished = entry.finished(args.output_folder, TABLE)
            print(f"fold {entry.fold} | {entry.step.folder}: "
                  f"{'complete' if finished else 'to run'} ({entry.record['digest']})")
        return
    expected = {(entry.fold, entry.step.folder): entry.record["digest"] for entry in planned}
    chains = {name: [step.folder for step in chain] for name, chain in systems.items()}
    reported = REPORTED if overrides.get("corpus", "iemocap") == "iemocap" else None
    started = time.time()
    for fold in args.folds:
        for entry in (entry for entry in planned if entry.fold == fold):
            folder, label = entry.folder(args.output_folder), f"fold {fold} | {entry.step.folder}"
            spec = TABLE[entry.record["step"]]
            if entry.finished(args.output_folder, TABLE) and read_record(folder):
                if spec.trains:  # finish a pruning a kill interrupted
                    finish_step(folder / "save", folder / spec.marker, None)
                print(f"{label}: complete, skipped", flush=True)
                continue
            folder.mkdir(parents=True, exist_ok=True)
            overrides_file = folder / "run_overrides.yaml"
            overrides_file.write_text(recipe.overrides_text(entry.overrides))
            cv.run_step(label, cv.step_command(entry.step, overrides_file, args, TABLE),
                        folder / "run.log")
        markdown = write_results(args.output_folder, args.folds, chains, expected, reported,
                                 _plain_overrides(overrides),
                                 corpus_split_name(corpus_values, TABLE.corpora, args.folds))
    print(f"\nall folds done in {time.time() - started:.0f} s; results in "
          f"{Path(args.output_folder) / 'results.md'}\n")
    print(markdown)


def _plain_overrides(overrides):
    return {key: str(value) if getattr(value, "tag", None) else value
            for key, value in overrides.items() if key != "data_folder"}


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue; finished steps are kept "
              "and the interrupted step resumes from its last checkpoint", file=sys.stderr)
        sys.exit(130)
    except (HparamsError, DiskSpaceError) as error:
        raise SystemExit(f"error: {error}") from None
