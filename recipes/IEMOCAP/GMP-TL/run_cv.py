#!/usr/bin/env python3
"""Leave-one-session-out cross-validation of GMP-TL, the baseline and the ablations.

A study: every step of every system asked for, for each fold K and seed S, runs in its own
folder under ``OUT/fold<K>/`` (``OUT/fold<K>_seed<S>/`` for seeds other than the default); then
the results tables over the folds and seeds::

    python run_cv.py --data_folder PATH/IEMOCAP_full_release --output_folder OUT \\
        [--folds 1,2,3,4,5] [--systems gmp_tl,baseline] [--seeds 1986,7,13] \\
        [--overrides FILE.yaml ...] [--encoder_source PATH_OR_HUB_ID] [--corpus NAME] \\
        [--prepare_option KEY=VALUE ...] [--precision bf16] [--nproc N] \\
        [--jobs N | --launcher slurm --slurm_partition P ...]

The steps are jobs of one graph (a step two systems share runs once), each after the jobs
whose outputs it reads: ``--jobs N`` runs up to N at once on this machine (default: one per
GPU, or one per CPU core), ``--launcher slurm`` queues them all on a Slurm cluster.

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
import os
import sys
import time
from pathlib import Path

from steps import TABLE

from lobes.utils.errors import HparamsError

SYSTEMS = ("gmp_tl", "baseline", "no_gender", "single_scale", "no_stage1")
REPORTED = {"name": "GMP-TL (paper, reported)", "WA": 0.800, "UA": 0.820}
RESULTS_EVERY_S = 300  # our choice: how stale the results tables of a running study may get
SLURM_OPTIONS = (
    ("partition", str, "slurm: the partition"),
    ("gpus_per_job", int, "slurm: GPUs per job (default: --nproc)"),
    ("cpus_per_job", int, "slurm: CPUs per job"),
    ("mem_gb", int, "slurm: memory per job, GB"),
    ("time_min", int, "slurm: time limit per job, minutes (jobs past it are requeued and "
                      "resume from their checkpoint)"),
    ("account", str, "slurm: the account to charge"),
    ("qos", str, "slurm: the quality of service"),
)
logger = logging.getLogger("run_cv")


def system_steps(system, single_scale_k):
    """The steps of ``system``, folders relative to the fold folder; the last gives the metrics.

    Example
    -------
    >>> [step.folder for step in system_steps("single_scale", 256)]
    ['stage0', 'gmp', 'single_scale/stage1', 'single_scale/stage2']
    """
    from lobes.runner.cv import Step

    if system == "baseline":
        return [Step("baseline", "baseline.yaml")]
    if system == "no_stage1":
        return [Step("no_stage1", "stage2.yaml", {"encoder_init": None})]
    root = "no_gender/" if system == "no_gender" else ""
    stage0 = Step(f"{root}stage0", "stage0_mtl.yaml")
    if system == "no_gender":
        stage0.overrides["lambda_gender"] = 0.0
    gmp = Step(f"{root}gmp", "gmp.yaml")
    root = "single_scale/" if system == "single_scale" else root
    stage1 = Step(f"{root}stage1", "stage1.yaml")
    if system == "single_scale":
        stage1.overrides.update(gmp_scales=[single_scale_k], gmp_scale_weights=[1.0])
    stage2 = Step(f"{root}stage2", "stage2.yaml", {"encoder_init": f"{root}stage1/encoder.ckpt"})
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
    parser.add_argument("--seeds",
                        help="seeds, comma separated: every system's chain runs once per seed "
                             "(default: the seed hparam, 1986)")
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
    parser.add_argument("--reference", default="baseline",
                        help="the system every other one is compared with (default baseline)")
    launch = parser.add_argument_group("where the jobs run")
    launch.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: on this machine (default); slurm: queued on a cluster")
    launch.add_argument("--jobs", type=int,
                        help="local: jobs at once (default: one per GPU, or one per CPU core)")
    launch.add_argument("--no_wait", action="store_true",
                        help="slurm: return once the study is queued; run the same command "
                             "again to see its state and, once all is done, the results")
    for option, kind, text in SLURM_OPTIONS:
        launch.add_argument(f"--slurm_{option}", type=kind, help=text)
    launch.add_argument("--slurm_option", action="append", default=[], metavar="KEY=VALUE",
                        help="slurm: any other sbatch option, e.g. constraint=a100 "
                             "(repeatable)")
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
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        parser.error(f"--seeds takes numbers separated by commas, got {args.seeds!r}")
    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {args.seeds} repeats a seed")
    if args.reference not in args.systems and args.reference != "baseline":
        parser.error(f"--reference {args.reference} is not among --systems {args.systems}")
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs takes a number of at least 1")
    if args.nnodes > 1 and not args.rdzv_endpoint:
        parser.error("--nnodes above 1 needs --rdzv_endpoint HOST:PORT")
    args.data_folder = str(Path(args.data_folder).resolve())
    return args


def run_overrides(args):
    """The overrides of every step: the files, then the command-line options."""
    from lobes.runner.recipe import read_override_files

    overrides = read_override_files(args.overrides)
    overrides["data_folder"] = args.data_folder
    for key in ("encoder_source", "expected_utterances", "corpus"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    options = dict(overrides.get("prepare_options") or {})
    for option in args.prepare_option:
        key, separator, value = option.partition("=")
        if not separator:
            raise HparamsError(f"--prepare_option {option!r} is not KEY=VALUE")
        options[key] = value
    if options:
        overrides["prepare_options"] = options
    return overrides


def plan_study(args):
    """Prepare every fold, plan every step of every run, and build the job graph."""
    from lobes.runner import cv, recipe, study

    overrides = run_overrides(args)
    common = recipe.resolve_values(recipe.hp.compose(TABLE.hparams_folder / TABLE.common),
                                   {**overrides, "output_folder": "unused"})
    gmp_scales = common["gmp_scales"]
    if args.single_scale_k is None:
        args.single_scale_k = gmp_scales[len(gmp_scales) // 2]
    elif args.single_scale_k not in gmp_scales:
        raise HparamsError(f"--single_scale_k {args.single_scale_k} is not among gmp_scales "
                           f"{gmp_scales}")
    systems = {system: system_steps(system, args.single_scale_k) for system in args.systems}
    steps = list({step.folder: step for chain in systems.values() for step in chain}.values())
    recipe.sort_run_overrides(TABLE, overrides)  # no step knows it: stop now
    from lobes.data.corpora import corpus_folds

    args.corpus_values = {"corpus": "iemocap", **overrides}
    args.folds = args.folds or corpus_folds(args.corpus_values, TABLE.corpora) or [1, 2, 3, 4, 5]
    cv.prepare_folds(args, overrides, TABLE, common["seed"])
    runs = cv.study_runs(args.folds, args.seeds, common["seed"])
    if args.launcher == "slurm":  # every chain of every run may be running at once
        args.jobs = len(runs) * len(systems)
    planned = cv.plan_run(args, overrides, steps, TABLE, runs)
    cv.check_changes(planned, args.output_folder, args.rerun_changed, args.plan_only)
    cv.plan_disk(args, planned, TABLE, len(runs))
    graph = study.jobs(planned, TABLE, args)
    chains = {name: [step.folder for step in chain] for name, chain in systems.items()}
    return overrides, runs, planned, graph, chains


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s - %(message)s")
    # SpeechBrain says at import which torchaudio backend it found (at the level SB_LOG_LEVEL
    # sets, up to a warning): nothing a study's user acts on
    logging.getLogger("speechbrain.utils.torch_audio_backend").addFilter(lambda record: False)
    if args.launcher == "local":
        from lobes.runner.launchers.local import Slots, available_cores, visible_gpus

        gpus = [] if args.device == "cpu" else visible_gpus()
        slots = Slots.for_machine(args.jobs, args.nproc, gpus, available_cores())
        args.jobs = slots.jobs
    overrides, runs, planned, graph, chains = plan_study(args)
    if args.plan_only:
        for job in graph:
            print(f"{job.label}: {'complete' if job.done else 'to run'} "
                  f"({job.planned.record['digest']})"
                  + (f", after {', '.join(job.needs)}" if job.needs and not job.done else ""))
        return
    if args.launcher == "slurm":
        from lobes.runner.study import run_on_slurm

        return run_on_slurm(args, graph, lambda: write_study_results(args, overrides, runs,
                                                                     planned, chains))
    started = time.time()
    to_run = sum(not job.done for job in graph)
    print(f"[{time.strftime('%H:%M:%S')}] {len(graph)} jobs, {to_run} to run, up to "
          f"{args.jobs} at once", flush=True)
    from lobes.runner.launchers.local import Failures, run_jobs

    finals = {chain[-1] for chain in chains.values()}
    last_written = [0.0]

    def results_so_far(job):
        # the tables' bootstrap takes seconds at IEMOCAP's size, during which no job starts:
        # at most one interim write every RESULTS_EVERY_S (the end of the study writes them all)
        if job.planned.step.folder in finals and time.time() - last_written[0] > RESULTS_EVERY_S:
            write_study_results(args, overrides, runs, planned, chains)
            last_written[0] = time.time()

    failures = None
    try:
        run_jobs(graph, slots, results_so_far)
    except Failures as error:
        failures = error
    markdown = write_study_results(args, overrides, runs, planned, chains)
    if failures:
        raise Failures(f"{failures}\nthe other jobs finished; fix the cause and run the same "
                       "command again: finished steps are kept")
    print(f"\nall jobs done in {time.time() - started:.0f} s; results in "
          f"{Path(args.output_folder) / 'results.md'}\n")
    print(markdown)


def write_study_results(args, overrides, runs, planned, chains):
    """Write the results tables of the study's finished, current runs; return the markdown."""
    from lobes.data.corpora import corpus_split_name
    from lobes.runner.results import write_results

    expected = {(entry.run.fold, entry.run.seed, entry.step.folder): entry.record["digest"]
                for entry in planned}
    reported = REPORTED if overrides.get("corpus", "iemocap") == "iemocap" else None
    return write_results(args.output_folder, [(run.fold, run.seed) for run in runs], chains,
                         expected, reported, _plain_overrides(overrides),
                         default_seed=runs[0].default_seed, reference=args.reference,
                         split=corpus_split_name(args.corpus_values, TABLE.corpora, args.folds))


def _plain_overrides(overrides):
    return {key: str(value) if getattr(value, "tag", None) else value
            for key, value in overrides.items() if key != "data_folder"}


def run(argv=None):
    """``main`` with the study's errors in one line (``GMPTL_TRACEBACK=1`` shows tracebacks)
    and Ctrl-C stopping every job (exit 130)."""
    try:
        main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted: every job was stopped; run the same command again to continue: "
              "finished steps are kept and an interrupted step resumes from its last "
              "checkpoint", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001  (the study's errors end in one line)
        if os.environ.get("GMPTL_TRACEBACK"):
            raise
        known = isinstance(error, HparamsError) or type(error).__name__ in KNOWN_ERRORS
        message = " ".join(str(error).split()) if not known else str(error)
        kind = "" if known else f"{type(error).__name__}: "
        print(f"error: {kind}{message}", file=sys.stderr)
        if not known:
            print("(GMPTL_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)


# errors whose message says what to do: printed as they are (several lines for several jobs)
KNOWN_ERRORS = {"DiskSpaceError", "PreparationError", "AudioError", "Failures", "SlurmError",
                "ResultsError"}


if __name__ == "__main__":
    run()
