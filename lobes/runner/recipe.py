"""The start of every stage script: arguments, checks, corpus preparation, hparams, folder.

``load_recipe`` does, in this order, everything that can fail before any training:

1. parse ``script.py HPARAMS.yaml [--overrides FILE ...] [--key=value ...]`` the SpeechBrain way
   (``--overrides`` files are those of ``run_cv.py``: later files and ``--key=value`` win);
2. compose the hparams file (``lobes.runner.hparams``: ``extends:``, paths from any folder)
   and check it: misspelled keys, override keys no step knows (keys only other steps use are
   skipped, so one override file serves every step), values of the wrong type;
3. prepare the fold with the corpus' preparation (``corpus`` key, from the recipe's corpus
   registry) and size the emotion heads from its ``classes.json``;
4. check that the previous steps' outputs are there, naming the command that makes them;
5. compare the step's settings and inputs with the ``settings.json`` of an earlier run in the
   same folder: a finished step with the same digest is not run again, a different one stops
   the run naming what changed (``lobes.runner.settings``);
6. build the hparams objects, create the experiment folder, record ``hyperparams.yaml`` and
   ``settings.json``.

What a step is (its script, hparams file, finished marker, the steps it reads, the settings it
records) comes from the recipe's table of steps (``lobes.runner.steps.StepTable``), which every
function here takes.

``run_main`` wraps a script's main: the recipe's own errors print as one message without a
traceback, and Ctrl-C says how to resume (exit status 130).
"""

import dataclasses
import functools
import io
import logging
import shutil
import sys
from pathlib import Path

import speechbrain as sb
from ruamel.yaml import YAML
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.run_opts import RunOptions

from lobes.data.corpora import prepare_fold, read_classes
from lobes.models.encoder import encoder_config
from lobes.runner import hparams as hp
from lobes.runner import settings as step_records
from lobes.training.checkpoints import finish_step

logger = logging.getLogger(__name__)
# SpeechBrain's train logger warns when imported that torchvision is missing, which matters only
# for image logging (unused here): keep that misleading line off the console
logging.getLogger("speechbrain.utils.train_logger").addFilter(
    lambda record: "torchvision is not available" not in record.getMessage()
)

# hparams keys that follow from others and cannot be set
DERIVED = {
    "encoder_dim": "it is read from the encoder's config.json (encoder_source)",
    "n_emotions": "it follows from emotion_classes (the preparation's classes.json)",
}
# run options that change results, recorded with the settings
RESULT_RUN_OPTIONS = ("precision", "eval_precision")
USAGE = """\
usage: python {script} HPARAMS.yaml [--overrides FILE [FILE ...]] [--KEY=VALUE ...]
                       [SpeechBrain run options: --device, --precision, --eval_precision, ...]

HPARAMS.yaml: one of {hparams} ({folder}/), or a copy of one.
--overrides: YAML files of hparam overrides (e.g. hparams/encoders/hubert_base.yaml); keys that
    only other steps use are skipped, so the runner's override files work here too.
--KEY=VALUE: any hparam, e.g. --data_folder=PATH --test_session=2 --corpus=cremad.
Each step writes to <output_root>/<step>/ (default results/GMP-TL/fold<test_session>/) and reads
the previous steps' outputs there. A step that has finished with the same settings is not run
again; with other settings the run stops and names what changed.
"""


class RecipeError(hp.HparamsError):
    """A step that cannot start: missing previous steps, changed settings, bad fold."""


def split_override_files(argv):
    """Take ``--overrides FILE [FILE ...]`` (or ``--overrides=A,B``) out of the arguments.

    Example
    -------
    >>> split_override_files(["h.yaml", "--overrides", "a.yaml", "b.yaml", "--lr=1"])
    (['a.yaml', 'b.yaml'], ['h.yaml', '--lr=1'])
    """
    files, rest, index = [], [], 0
    while index < len(argv):
        argument = argv[index]
        if argument.startswith("--overrides="):
            files += [name for name in argument.split("=", 1)[1].split(",") if name]
        elif argument == "--overrides":
            index += 1
            while index < len(argv) and not argv[index].startswith("--"):
                files.append(argv[index])
                index += 1
            continue
        else:
            rest.append(argument)
        index += 1
    return files, rest


def read_override_files(files):
    """Merge YAML override files, later files winning; tags such as ``!PLACEHOLDER`` kept.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.yaml").write_text("lr: 0.1\\nseed: 2\\n")
    >>> _ = (folder / "b.yaml").write_text("lr: 0.5\\n")
    >>> dict(read_override_files([folder / "a.yaml", folder / "b.yaml"]))
    {'lr': 0.5, 'seed': 2}
    """
    merged = {}
    for path in files:
        path = Path(path)
        if not path.exists():
            raise hp.HparamsError(f"override file {path} not found")
        content = YAML(typ="rt").load(path.read_text()) or {}
        if not isinstance(content, dict):
            raise hp.HparamsError(f"override file {path} must hold a mapping of hparam: value")
        merged.update(content)
    return merged


def overrides_text(overrides):
    """Overrides as YAML text for hyperpyyaml (tags kept)."""
    stream = io.StringIO()
    yaml = YAML(typ="rt")
    yaml.width = 4096
    yaml.dump(dict(overrides), stream)
    return stream.getvalue() if overrides else ""


def shipped_defaults(table):
    """The raw top-level values of the shipped hparams files (tags kept), for type checks."""
    return _shipped_defaults(table.hparams_folder, table.shipped)


@functools.cache  # parsing six YAML files for each step of a study is most of its planning
def _shipped_defaults(hparams_folder, shipped):
    defaults = {}
    for name in shipped:
        defaults.update(hp.raw_values(hp.compose(hparams_folder / name)))
    return defaults


def recipe_keys(table):
    """Every key of the recipe's shipped hparams files."""
    return set().union(*hp.shipped_keys(table).values())


def sort_run_overrides(table, overrides, stage_keys=None):
    """``lobes.runner.hparams.sort_overrides`` against the recipe's keys (all of them by
    default): an override key that no step knows stops the run with a did-you-mean."""
    known = recipe_keys(table)
    return hp.sort_overrides(overrides, known if stage_keys is None else stage_keys, known,
                             listed_in=f"{table.hparams_folder}/*.yaml")


def check_overrides(table, hparams_file, text, overrides):
    """The overrides this step uses, after every check of keys and types."""
    hp.check_keys(hparams_file, recipe_keys(table))
    used, other_steps = sort_run_overrides(table, overrides, hp.keys_of(text))
    derived = sorted(set(used) & set(DERIVED))
    if derived:
        raise hp.HparamsError("; ".join(f"{key} cannot be set: {DERIVED[key]}"
                                        for key in derived))
    if other_steps:
        logger.info("override keys %s are used by other steps only: not applied here",
                    other_steps)
    defaults = shipped_defaults(table)
    hp.check_types(used, defaults, "override")
    own = hp.raw_values(hp.strip_extends(Path(hparams_file).read_text()))
    hp.check_types(dict(own), defaults, f"hparams file {hparams_file}:")
    return used


def resolve_values(text, used):
    """Resolved plain values, with a clear error for a placeholder left unset."""
    try:
        return hp.resolve(text, overrides_text(used))
    except ValueError as error:
        if "PLACEHOLDER" in str(error):
            key = str(error).split("'")[1]
            raise hp.HparamsError(
                f"{key} must be given: add --{key}=... (or set it in an override file)"
            ) from error
        raise


def encoder_init_step(table, values):
    """``(name, folder, file)`` of the step whose encoder ``encoder_init`` continues, or None.

    The name is the folder key (``stage1_folder`` ...) when it is one of the recipe's step
    folders, else ``encoder_init``. Only training steps start from ``encoder_init``.
    """
    if not values.get("encoder_init") or not table[values["step"]].trains:
        return None
    path = Path(values["encoder_init"])
    name = next((spec.folder_key for spec in table if values.get(spec.folder_key)
                 and Path(values[spec.folder_key]) == path.parent), "encoder_init")
    return (name, path.parent, path.name)


def check_layers(table, values):
    """The GMP layers must exist in the encoder (the steps that read ``gmp_layers``)."""
    if "gmp_layers" not in table.read_keys(values["step"]):
        return
    n_layers = encoder_config(values["encoder_source"], values["encoder_cache"]).num_hidden_layers
    wrong = [layer for layer in values["gmp_layers"] if not -n_layers - 1 <= layer <= n_layers]
    if wrong:
        raise hp.HparamsError(
            f"gmp_layers {wrong} do not exist in {values['encoder_source']}, which has "
            f"{n_layers} transformer layers: set gmp_layer between 0 and {n_layers} (the "
            "encoder fragments in hparams/encoders/ set the middle layer)"
        )


def previous_steps(table, values):
    """``[(name, folder, file)]``: the outputs of earlier steps that ``values['step']`` reads
    (the table's ``reads``, then the encoder that ``encoder_init`` names)."""
    previous = []
    for read in table[values["step"]].reads:
        spec = table[read]
        previous.append((spec.folder_key, Path(values[spec.folder_key]), spec.marker))
    initial = encoder_init_step(table, values)
    return previous + ([initial] if initial else [])


def check_previous(table, values):
    """Stop when a previous step's output is missing, naming the command that writes it."""
    missing = []
    initial = encoder_init_step(table, values)
    for name, folder, filename in previous_steps(table, values):
        path = Path(folder) / filename
        if path.exists():
            continue
        maker = table.maker(name)
        how = (f"run `{maker}` with the same --data_folder, --test_session and --output_root "
               "first" if maker else "run the step that writes it first")
        if initial and initial[0] == name:
            how += ", or set encoder_init: null to start from the pre-trained encoder"
        missing.append(f"{path} not found ({name}): {how}")
    for _, folder, _ in previous_steps(table, values):
        record = step_records.read_record(folder) or {}
        source = record.get("settings", {}).get("encoder_source")
        if source is not None and source != values["encoder_source"]:
            missing.append(
                f"{folder} was trained from encoder_source {source}, but this run uses "
                f"{values['encoder_source']}: give the same encoder_source to every step of a "
                "fold (or run the earlier steps again with this one)"
            )
    if missing:
        raise RecipeError("the previous steps do not fit this one:\n  " + "\n  ".join(missing))


def result_run_options(get):
    """The run options that change results, with SpeechBrain's defaults (``fp32``)."""
    return {key: get(key) or "fp32" for key in RESULT_RUN_OPTIONS}


def disk_digest(folder):
    """The digest a step folder's ``settings.json`` records (``unknown`` without one)."""
    record = step_records.read_record(folder)
    return record["digest"] if record else "unknown"


def plan_step(table, hparams_file, overrides, run_options, digest_of=disk_digest):
    """Check a step's hparams and overrides, prepare its fold, and say what it would record.

    The stage scripts and the runner both plan a step with this function, so that the runner
    knows, before any work, the digest each step will write (``lobes.runner.settings``).

    Arguments
    ---------
    table : lobes.runner.steps.StepTable
        The recipe's table of steps.
    hparams_file : str or Path
    overrides : dict
        From override files and the command line; keys only other steps use are skipped.
    run_options : dict
        ``result_run_options``.
    digest_of : callable
        ``digest_of(folder)``: the digest of a previous step (default: from its folder).

    Returns
    -------
    text, used, values, record
        The composed hparams text, the overrides used, the resolved values and the record
        (``step``, ``digest``, ``settings``, ``inputs``).
    """
    text = hp.compose(hparams_file)
    used = check_overrides(table, hparams_file, text, overrides)
    values = resolve_values(text, used)
    run_on_main(prepare_fold, args=[values, table.corpora])
    if "emotion_classes" not in used:
        used["emotion_classes"] = read_classes(values["prepare_folder"])
    used["n_emotions"] = len(used["emotion_classes"])
    values = resolve_values(text, used)
    check_layers(table, values)
    inputs = {"manifests": step_records.manifests_digest(values["prepare_folder"])}
    inputs.update({name: digest_of(folder) for name, folder, _ in previous_steps(table, values)})
    spec = table[values["step"]]
    run_options = {key: run_options[key] for key in spec.run_options if key in run_options}
    settings = step_records.step_settings(values, table, spec.name, run_options)
    record = {"step": values["step"], "digest": step_records.digest(settings, inputs),
              "settings": settings, "inputs": inputs}
    return text, used, values, record


def has_state(values, marker):
    """True when a step folder holds what a run would continue from or reuse: its marker, a
    checkpoint, or (extraction) cached features or label files."""
    folder = Path(values["output_folder"])
    found = [folder / marker, *Path(values.get("save_folder") or folder / "save").glob("CKPT+*")]
    if values["step"] == "gmp":
        found += [*Path(values["cache_folder"]).glob("*"), *folder.glob("*.km")]
    return any(path.exists() for path in found)


def check_earlier_run(values, record, marker):
    """True when the folder holds this step finished with the same digest; stop if changed.

    A folder without state (an earlier start stopped before training, say) is no conflict.
    """
    earlier = step_records.read_record(values["output_folder"])
    if earlier is None or not has_state(values, marker):
        return False
    if earlier["digest"] != record["digest"]:
        changes = "\n  ".join(step_records.differences(earlier, record))
        raise RecipeError(
            f"{values['output_folder']} holds a {record['step']} run with other settings or "
            f"inputs:\n  {changes}\nTo keep it, choose another output folder "
            f"(--output_root=...); to replace it, delete {values['output_folder']} and run "
            "again."
        )
    return (Path(values["output_folder"]) / marker).exists()


def write_run_files(script, hparams_file, text, used, values, record):
    """``hyperparams.yaml`` (composed, resolved) and ``settings.json``; the script beside."""
    output_folder = Path(values["output_folder"])
    resolved = hp.resolve_references(text, overrides_text(used)).getvalue()
    header = f"# {Path(hparams_file).resolve()}, composed, with the overrides resolved\n"
    (output_folder / "hyperparams.yaml").write_text(header + resolved)
    step_records.write_record(output_folder, record["step"], record["settings"],
                              record["inputs"])
    shutil.copy(script, output_folder / Path(script).name)


def load_recipe(table, script, argv=None):
    """Parse the command line, check everything, prepare the fold and build the hparams.

    The hparams file's ``step`` key (``stage0``, ``gmp``, ``stage1``, ``stage2``, ``baseline``)
    says which step it configures; it must be one that ``script`` runs (the table's row).

    Arguments
    ---------
    table : lobes.runner.steps.StepTable
        The recipe's table of steps.
    script : str or pathlib.Path
        The running stage script (``__file__``); copied into the output folder.
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    hparams : dict or None
        None when the step has already finished with the same settings.
    run_opts : RunOptions
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        names = ", ".join(name for name in table.shipped if name != table.common)
        print(USAGE.format(script=Path(script).name, hparams=names, folder=table.hparams_folder))
        RunOptions._create_parser().print_help()
        sys.exit(0)
    files, argv = split_override_files(argv)
    hparams_file, run_opts, cmdline = sb.parse_arguments(argv)
    overrides = read_override_files(files)
    overrides.update(YAML(typ="rt").load(cmdline) or {} if cmdline else {})
    step = hp.raw_values(hp.compose(hparams_file)).get("step")
    runs_it = table.script_of(step) if step in table else None
    if runs_it != Path(script).name:
        raise RecipeError(f"{hparams_file} configures the step {step!r}, which "
                          f"{runs_it or 'no script'} runs, not {Path(script).name}")
    sb.utils.distributed.ddp_init_group(run_opts)
    text, used, values, record = plan_step(table, hparams_file, overrides,
                                           result_run_options(run_opts.get))
    marker = table[step].marker
    check_previous(table, values)
    if check_earlier_run(values, record, marker):
        if table[step].trains:  # a prune interrupted after the export ends here
            finish_step(values["save_folder"], Path(values["output_folder"]) / marker, None)
        print(f"{values['output_folder']}: {step} already finished with these settings; "
              "nothing to do")
        return None, run_opts

    if values.get("layerdrop") and sb.utils.distributed.is_distributed_initialized():
        # a layer skipped on one rank has no gradient there: DDP must not wait for it
        run_opts = dataclasses.replace(run_opts, find_unused_parameters=True)
    hparams = hp.load(text, overrides_text(used))
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"])
    if if_main_process():
        write_run_files(script, hparams_file, text, used, values, record)
    return hparams, run_opts


def run_main(main, folder_hint="its output folder"):
    """Run a script's ``main``: recipe errors without traceback, Ctrl-C with how to resume."""
    from lobes.data.audio import AudioError
    from lobes.data.manifests import PreparationError
    from lobes.gmp.labels import LabelMismatchError
    from lobes.models.frames import TooShortError

    try:
        main()
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume from the last checkpoint "
              f"in {folder_hint}", file=sys.stderr)
        sys.exit(130)
    except (hp.HparamsError, PreparationError, AudioError, LabelMismatchError,
            TooShortError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
