"""A recipe's table of steps: what each step is, what it reads, which settings it records.

A recipe describes itself once, in a ``StepTable`` in its own folder (the GMP-TL recipe's is
``recipes/IEMOCAP/GMP-TL/steps.py``), and passes it to the runner: the stage scripts' start
(``lobes.runner.recipe.load_recipe``), the cross-validation runner (``lobes.runner.cv``) and
the settings records (``lobes.runner.settings``) read the table and name no recipe themselves.

One row (``StepSpec``) says of a step: the script that runs it, its hparams file, the file whose
presence in its output folder says it finished, the key naming its folder, the steps whose
outputs it reads, the key groups of the shared hparams file it reads, and the run options that
change its result. A key of the shared file enters a step's settings digest only when the step
reads its group, so changing a key a step never reads never asks to run that step again.

Example
-------
>>> table = StepTable(
...     folder="/recipe", common="common.yaml",
...     steps=[StepSpec("train", "train.py", "train.yaml", groups=("data", "training")),
...            StepSpec("cluster", "cluster.py", "cluster.yaml", marker="report.json",
...                     reads=("train",), groups=("data",), run_options=("eval_precision",))],
...     groups={"data": {"seed"}, "training": {"lr"}}, run_only={"output_folder"},
...     corpora={"mine": "/recipe/mine_prepare.py"})
>>> table["cluster"].marker, table.script_of("cluster"), table.maker("train_folder")
('report.json', 'cluster.py', 'python train.py hparams/train.yaml')
>>> sorted(table.read_keys("cluster")), table.records_key("cluster", "lr")
(['seed'], False)
>>> table.records_key("cluster", "my_own_key"), table.records_key("train", "output_folder")
(True, False)
"""

from dataclasses import dataclass, field
from pathlib import Path

FINISHED = "encoder.ckpt"  # a training step's exported encoder: written last


@dataclass(frozen=True)
class StepSpec:
    """One step of a recipe (a row of its table).

    Arguments
    ---------
    name : str
        The value of the ``step:`` key of its hparams file (``stage0``, ``gmp`` ...).
    script : str
        The script that runs it, in the recipe folder.
    hparams : str
        Its hparams file, in the recipe's hparams folder.
    marker : str
        The file in its output folder that says it finished.
    reads : tuple of str
        The steps whose outputs it reads (their folder key and marker), besides the encoder
        named by ``encoder_init``.
    groups : tuple of str
        The key groups of the shared hparams file that it reads (``StepTable.groups``).
    run_options : tuple of str
        The run options that change its result (recorded with its settings).
    trains : bool
        A training step: it fine-tunes the encoder, from the pre-trained one or from the
        ``encoder.ckpt`` named by ``encoder_init``, and exports its own.
    """

    name: str
    script: str
    hparams: str
    marker: str = FINISHED
    reads: tuple = ()
    groups: tuple = ()
    run_options: tuple = ("precision", "eval_precision")
    trains: bool = True

    @property
    def folder_key(self):
        """The hparams key naming its output folder for the steps after it."""
        return f"{self.name}_folder"


@dataclass(frozen=True)
class StepTable:
    """A recipe's steps, the groups of its shared keys, its folders and its corpora.

    Arguments
    ---------
    folder : str or Path
        The recipe folder (the scripts).
    common : str
        The shared hparams file that every step's file extends, in ``hparams_folder``.
    steps : list of StepSpec
    groups : dict
        ``{group: keys}``: every key of the shared file that a step may record, by group.
    run_only : set of str
        Keys that say where things go or how fast they run, or follow from other keys, or
        build objects: never recorded.
    corpora : dict
        ``{corpus name: path of its prepare module}`` (``lobes.data.corpora``).
    hparams_folder : str or Path, optional
        Default ``<folder>/hparams``.
    """

    folder: Path
    common: str
    steps: list
    groups: dict
    run_only: frozenset
    corpora: dict
    hparams_folder: Path = None
    _rows: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "hparams_folder",
                           Path(self.hparams_folder or self.folder / "hparams"))
        object.__setattr__(self, "groups", {name: frozenset(keys)
                                            for name, keys in self.groups.items()})
        object.__setattr__(self, "run_only", frozenset(self.run_only))
        object.__setattr__(self, "corpora", {name: Path(path)
                                             for name, path in self.corpora.items()})
        object.__setattr__(self, "_rows", {spec.name: spec for spec in self.steps})
        for spec in self.steps:
            unknown = set(spec.groups) - set(self.groups)
            missing = set(spec.reads) - set(self._rows)
            if unknown or missing:
                raise ValueError(f"step {spec.name}: unknown key groups {sorted(unknown)} or "
                                 f"steps {sorted(missing)}")

    def __getitem__(self, name):
        return self._rows[name]

    def __contains__(self, name):
        return name in self._rows

    def __iter__(self):
        return iter(self.steps)

    @property
    def shipped(self):
        """The hparams files that define the recipe's keys: the shared one, then each step's."""
        return (self.common, *dict.fromkeys(spec.hparams for spec in self.steps))

    def script_of(self, name):
        """The script of step ``name``."""
        return self[name].script

    def step_of_hparams(self, hparams_name):
        """The row whose hparams file is ``hparams_name`` (a file name), or None."""
        return next((spec for spec in self.steps if spec.hparams == hparams_name), None)

    def maker(self, folder_key):
        """The command that writes the folder named by ``folder_key``, or None."""
        spec = next((spec for spec in self.steps if spec.folder_key == folder_key), None)
        return spec and f"python {spec.script} hparams/{spec.hparams}"

    def grouped_keys(self):
        """Every key of the groups and ``run_only``: the shared keys the table classifies."""
        return self.run_only.union(*self.groups.values())

    def read_keys(self, name):
        """The shared keys step ``name`` reads (the union of its groups)."""
        return frozenset().union(*(self.groups[group] for group in self[name].groups))

    def records_key(self, name, key):
        """True when ``key`` enters the settings step ``name`` records: a key the step reads,
        or a key of the step's own file; never a ``run_only`` key."""
        if key in self.run_only:
            return False
        return key in self.read_keys(name) or key not in self.grouped_keys()
