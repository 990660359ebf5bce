"""Which corpus a step runs on: the ``corpus`` key picks its preparation, the classes follow.

A corpus is one file with a function ``prepare_<name>(data_folder, save_folder, test_session |
fold, ...)`` that writes the manifest contract and ``classes.json`` (docs/design.md, Data
contract). A recipe lists its corpora as ``{name: path of the prepare file}`` (its corpus
registry, e.g. ``TABLE.corpora`` in ``recipes/IEMOCAP/GMP-TL/steps.py``) and passes it in; the
stage scripts and the runner call the preparation through ``prepare_fold``, so ``corpus:
cremad`` (or ``--corpus=cremad``) switches every step; the emotion heads are sized from the
``classes.json`` it writes.
"""

import importlib.util
import inspect
import json
from pathlib import Path

from lobes.data.manifests import PreparationError
from lobes.utils.errors import HparamsError, did_you_mean

# hparams keys passed to every prepare function that takes them
COMMON_OPTIONS = ("valid_ratio", "seed", "expected_utterances", "skip_prep")


def load_prepare(corpus, corpora):
    """``prepare_<corpus>`` from the file the registry ``corpora`` names, or a clear error.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "mine_prepare.py"
    >>> _ = path.write_text("def prepare_mine(data_folder, save_folder, fold):\\n    pass\\n")
    >>> load_prepare("mine", {"mine": path}).__name__
    'prepare_mine'
    >>> try:
    ...     load_prepare("mien", {"mine": path})
    ... except HparamsError as error:
    ...     print(error)
    corpus 'mien' (did you mean 'mine'?) has no preparation; corpora: mine
    """
    return getattr(_prepare_module(corpus, corpora), f"prepare_{corpus}")


def _prepare_module(corpus, corpora):
    if corpus not in corpora:
        raise HparamsError(
            f"corpus {corpus!r}{did_you_mean(str(corpus), corpora)} has no preparation; "
            f"corpora: {', '.join(sorted(corpora))}"
        )
    spec = importlib.util.spec_from_file_location(f"{corpus}_prepare", corpora[corpus])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call_with_options(function, values):
    """``function`` called with ``data_folder`` and the ``prepare_options`` it takes."""
    options = {"data_folder": values["data_folder"], **(values.get("prepare_options") or {})}
    parameters = inspect.signature(function).parameters
    if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values()):
        options = {key: value for key, value in options.items() if key in parameters}
    return function(**options)


def corpus_folds(values, corpora):
    """The fold numbers the corpus itself gives, or None when it lets the user choose.

    A preparation whose corpus fixes its folds (EmoBox: ``fold_<k>`` folders) defines
    ``n_folds(data_folder, **options)``; the runner's default ``--folds`` follows it. ``values``
    need ``corpus``, ``data_folder`` and ``prepare_options``.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "mine_prepare.py"
    >>> _ = path.write_text("def prepare_mine(data_folder, save_folder, fold):\\n    pass\\n"
    ...                     "def n_folds(data_folder, parts='3'):\\n    return int(parts)\\n")
    >>> corpus_folds({"corpus": "mine", "data_folder": "/d",
    ...               "prepare_options": {"parts": "2"}}, {"mine": path})
    [1, 2]
    """
    module = _prepare_module(values["corpus"], corpora)
    if not hasattr(module, "n_folds"):
        return None
    return list(range(1, _call_with_options(module.n_folds, values) + 1))


def corpus_split_name(values, corpora, folds):
    """How results tables name the split of ``folds``, or None for the preparation's own.

    A preparation that runs a published split (EmoBox) defines ``split_name(folds,
    **options)``, e.g. ``EmoBox iemocap fold 1-5``.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "mine_prepare.py"
    >>> _ = path.write_text("def prepare_mine(data_folder, save_folder, fold):\\n    pass\\n")
    >>> corpus_split_name({"corpus": "mine", "data_folder": "/d"}, {"mine": path}, [1]) is None
    True
    """
    module = _prepare_module(values["corpus"], corpora)
    if not hasattr(module, "split_name"):
        return None
    return _call_with_options(lambda **options: module.split_name(folds, **options), values)


def prepare_arguments(values, corpora):
    """The keyword arguments of the corpus' prepare function for one fold.

    ``values`` are resolved hparams: ``corpus``, ``data_folder``, ``prepare_folder``,
    ``test_session`` (passed as ``fold`` to corpora without sessions), the common options the
    function takes, and ``prepare_options`` (checked against its parameters, typed like their
    defaults). ``corpora`` is the recipe's corpus registry.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "mine_prepare.py"
    >>> _ = path.write_text("def prepare_mine(data_folder, save_folder, fold, seed=0, "
    ...                     "classes='4'):\\n    pass\\n")
    >>> values = {"corpus": "mine", "data_folder": "/d", "prepare_folder": "/p",
    ...           "test_session": 2, "seed": 1, "valid_ratio": 0.1, "expected_utterances": 0,
    ...           "skip_prep": False, "prepare_options": {"classes": 6}}
    >>> prepare, arguments = prepare_arguments(values, {"mine": path})
    >>> arguments["fold"], arguments["classes"], arguments["seed"], "valid_ratio" in arguments
    (2, '6', 1, False)
    """
    prepare = load_prepare(values["corpus"], corpora)
    parameters = inspect.signature(prepare).parameters
    arguments = {"data_folder": values["data_folder"], "save_folder": values["prepare_folder"]}
    fold_key = "test_session" if "test_session" in parameters else "fold"
    arguments[fold_key] = int(values["test_session"])
    arguments.update({key: values[key] for key in COMMON_OPTIONS
                      if key in parameters and key in values})
    for key, value in (values.get("prepare_options") or {}).items():
        if key not in parameters or key in arguments:
            raise HparamsError(
                f"prepare_options: {prepare.__name__} has no option {key!r}"
                f"{did_you_mean(key, parameters)}; its options: "
                f"{', '.join(name for name in parameters if name not in arguments)}"
            )
        default = parameters[key].default
        arguments[key] = type(default)(value) if isinstance(default, int | float | str) else value
    return prepare, arguments


def prepare_fold(values, corpora):
    """Prepare one fold (skipped when an identical earlier run did); return its classes."""
    prepare, arguments = prepare_arguments(values, corpora)
    prepare(**arguments)
    return read_classes(values["prepare_folder"])


def read_classes(prepare_folder):
    """The class list a preparation wrote to ``classes.json``."""
    path = Path(prepare_folder) / "classes.json"
    if not path.exists():
        raise PreparationError(
            f"{path} not found: the fold is not prepared; run without skip_prep, or run the "
            "corpus preparation first"
        )
    return json.loads(path.read_text())
