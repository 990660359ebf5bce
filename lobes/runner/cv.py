"""What a cross-validation runner shares: planning every step of a study before any work.

A recipe's runner (``recipes/IEMOCAP/GMP-TL/run_cv.py``) lists the systems (which steps, in which
folders) and the options and passes its table of steps (``lobes.runner.steps``); this module
prepares every fold first, plans each step of each run (fold x seed) with the stage scripts' own
``lobes.runner.recipe.plan_step`` (so the runner knows each step's settings digest before it
runs), stops on folders that hold other settings, prints the disk plan and writes each step's
command line (under ``torchrun`` when asked). ``lobes.runner.study`` makes the plan a graph of
jobs and ``lobes.runner.launchers`` runs them.
"""

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lobes.data.audio import AudioError
from lobes.data.corpora import prepare_fold
from lobes.data.manifests import PreparationError
from lobes.runner import disk, recipe
from lobes.runner.results import fold_folder
from lobes.runner.settings import differences, read_record


@dataclass
class Step:
    """One run of one step's hparams in one folder (relative to the fold folder)."""

    folder: str
    hparams: str
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """One fold with one seed: its folder under the output folder holds one folder per step.

    The default seed's runs keep the folders ``fold<K>``; another seed's are ``fold<K>_seed<S>``.
    Every seed of a fold reads the fold's manifests in ``fold<K>/prepare`` (the validation split
    does not change with the seed; the seed reaches every draw of training and k-means).

    Example
    -------
    >>> Run(2, 1986, 1986).name, Run(2, 7, 1986).name, Run(2, 7, 1986).label
    ('fold2', 'fold2_seed7', 'fold 2 seed 7')
    """

    fold: int
    seed: int
    default_seed: int

    @property
    def name(self):
        return fold_folder(self.fold, self.seed, self.default_seed)

    @property
    def label(self):
        return f"fold {self.fold}" + ("" if self.seed == self.default_seed else
                                      f" seed {self.seed}")


def study_runs(folds, seeds, default_seed):
    """Every (fold, seed) run of a study, fold by fold (``seeds`` None: the default seed).

    Example
    -------
    >>> [run.name for run in study_runs([1, 2], [1986, 7], 1986)]
    ['fold1', 'fold1_seed7', 'fold2', 'fold2_seed7']
    """
    return [Run(fold, seed, default_seed) for fold in folds for seed in seeds or [default_seed]]


def fold_overrides(overrides, output_folder, run):
    """The overrides of every step of one run: the study's, the run's seed and folders."""
    run_dir = Path(output_folder) / run.name
    return {**overrides, "test_session": run.fold, "seed": run.seed,
            "output_root": str(run_dir),
            "prepare_folder": str(Path(output_folder) / f"fold{run.fold}" / "prepare"),
            "skip_prep": True}


def step_overrides(step, fold_dir, fold_values):
    """A step's overrides: its fold's, its own folder, its step-specific keys."""
    values = {**fold_values, "output_folder": str(fold_dir / step.folder)}
    for key, value in step.overrides.items():
        is_path = key.endswith("_folder") or key == "encoder_init"
        values[key] = str(fold_dir / value) if is_path and value else value
    return values


def prepare_folds(args, overrides, table, default_seed):
    """Prepare every fold before any training (its manifests serve every seed); all folds'
    problems in one error."""
    text = recipe.hp.compose(table.hparams_folder / table.common)
    problems = []
    for fold in args.folds:
        run = Run(fold, default_seed, default_seed)
        values = recipe.resolve_values(
            text, {**fold_overrides(overrides, args.output_folder, run), "skip_prep": False,
                   "output_folder": "unused"})
        try:
            classes = prepare_fold(values, table.corpora)
        except (PreparationError, AudioError) as error:
            problems.append(f"fold {fold}: {error}")
            continue
        print(f"[{time.strftime('%H:%M:%S')}] fold {fold} | prepared ({', '.join(classes)})",
              flush=True)
    if problems:
        raise SystemExit("cannot prepare every fold asked for (--folds "
                         f"{','.join(map(str, args.folds))}):\n  " + "\n  ".join(problems))


@dataclass
class Planned:
    """A step of a run as planned: the overrides it is given, its values and record."""

    run: Run
    step: Step
    overrides: dict
    values: dict
    record: dict

    @property
    def fold(self):
        return self.run.fold

    @property
    def key(self):
        """``<run folder>/<step folder>``: unique in a study."""
        return f"{self.run.name}/{self.step.folder}"

    @property
    def label(self):
        return f"{self.run.label} | {self.step.folder}"

    def folder(self, output_folder):
        return Path(output_folder) / self.key

    def finished(self, output_folder, table):
        """True when its folder holds its step's finished marker."""
        return (self.folder(output_folder) / table[self.record["step"]].marker).exists()


def plan_run(args, overrides, steps, table, runs):
    """Plan every step of every run (``Planned``), each step's digest chained to the next."""
    planned, digests = [], {}
    run_options = recipe.result_run_options(vars(args).get)

    def digest_of(folder):
        return digests.get(Path(folder), recipe.disk_digest(folder))

    for run in runs:
        run_dir = Path(args.output_folder) / run.name
        for step in steps:
            given = step_overrides(step, run_dir,
                                   fold_overrides(overrides, args.output_folder, run))
            _, _, values, record = recipe.plan_step(table, table.hparams_folder / step.hparams,
                                                    given, run_options, digest_of)
            digests[run_dir / step.folder] = record["digest"]
            planned.append(Planned(run, step, given, values, record))
    return planned


def check_changes(planned, output_folder, rerun_changed, plan_only=False):
    """Stop, before any work, on step folders that hold other settings (or clear them; with
    ``plan_only`` only say so)."""
    changed = []
    for entry in planned:
        earlier = read_record(entry.folder(output_folder))
        if earlier is not None and earlier["digest"] != entry.record["digest"]:
            changed.append((entry.folder(output_folder), differences(earlier, entry.record)))
    if changed and not rerun_changed:
        listing = "\n".join(f"  {folder}:\n    " + "\n    ".join(changes)
                            for folder, changes in changed)
        raise SystemExit(
            f"these steps ran with other settings or inputs than asked now:\n{listing}\n"
            "Choose another --output_folder to keep them, or add --rerun_changed to run them "
            "(and the steps after them) again in place."
        )
    for folder, _ in changed:
        if plan_only:
            print(f"{folder}: settings changed, would run again (--rerun_changed)")
            continue
        print(f"{folder}: settings changed, running it again (--rerun_changed)", flush=True)
        shutil.rmtree(folder)


def plan_disk(args, planned, table, n_runs):
    """Print the disk plan of the study; stop when the free space is short."""
    training = [entry for entry in planned if table[entry.record["step"]].trains]
    extraction = [entry for entry in planned if not table[entry.record["step"]].trains]

    def left(entries):
        return sum(not entry.finished(args.output_folder, table) for entry in entries)

    disk.print_plan((extraction or planned)[0].values, n_runs,
                    len(training) // n_runs, left(training), left(extraction),
                    check_folder=None if args.skip_disk_check else args.output_folder,
                    concurrent=args.jobs)


def step_command(step, overrides_file, args, table):
    """The command line of one step (torchrun with ``--nproc`` above 1)."""
    script = table.folder / table.step_of_hparams(step.hparams).script
    script_args = [str(table.hparams_folder / step.hparams), "--overrides",
                   str(overrides_file)]
    for option in ("device", "precision", "eval_precision"):
        if getattr(args, option):
            script_args.append(f"--{option}={getattr(args, option)}")
    if args.compile:
        script_args.append("--compile")
    if args.nproc == 1 and args.nnodes == 1:
        return [sys.executable, str(script), *script_args]
    import torch

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    launcher = [sys.executable, "-m", "torch.distributed.run",
                f"--nproc_per_node={args.nproc}", f"--nnodes={args.nnodes}"]
    if args.nnodes == 1:
        launcher.append("--standalone")  # a free local port: several runs can share a machine
    else:
        launcher += [f"--node_rank={args.node_rank}", f"--rdzv_endpoint={args.rdzv_endpoint}",
                     "--rdzv_backend=c10d"]
    return [*launcher, str(script), *script_args,
            f"--distributed_backend={backend}"]
