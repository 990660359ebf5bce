"""Misspelled keys in hparams files, caught before hyperpyyaml loads them.

A misspelled key in a user's copy of a stage's hparams file (``numbr_of_epochs: 5``) otherwise
either fails deep inside hyperpyyaml (a ``!ref <number_of_epochs>`` with no target) or, worse,
is silently ignored while the default it was meant to change stays in force. The keys are read
from the raw text (top-level ``key:`` lines), because the files hold ``!new:`` and ``!ref``
tags that plain YAML cannot load.
"""

import difflib
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

_TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_]\w*)\s*:", re.MULTILINE)


def hparams_keys(hparams_file):
    """The top-level keys of a hyperpyyaml file.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "h.yaml"
    >>> _ = path.write_text("lr: 0.1  # rate\\nmodel: !new:torch.nn.Linear\\n    in_features: 2\\n")
    >>> sorted(hparams_keys(path))
    ['lr', 'model']
    """
    return hparams_keys_of_text(Path(hparams_file).read_text())


def hparams_keys_of_text(text):
    """The top-level keys of hyperpyyaml text (e.g. command-line overrides).

    Example
    -------
    >>> sorted(hparams_keys_of_text("seed: 3\\nlr: 0.5"))
    ['lr', 'seed']
    """
    return set(_TOP_LEVEL_KEY.findall(text or ""))


def check_hparams_keys(hparams_file, reference_files, extra_keys=()):
    """Stop on keys of ``hparams_file`` that look like misspellings of known keys.

    A key that no reference file has (``reference_files``: the recipe's shipped hparams) is a
    misspelling when it closely matches a known key that ``hparams_file`` lacks: that raises.
    Other unknown keys (a user's own additions) only log a warning.

    Arguments
    ---------
    hparams_file : str or Path
        The hparams file given to a stage script.
    reference_files : iterable of str or Path
        The hparams files whose keys are known.
    extra_keys : iterable of str
        Keys set in addition to the file's own (command-line overrides).

    Raises
    ------
    ValueError
        Naming the file, each misspelled key and the key it probably means.

    Example
    -------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "shipped.yaml").write_text("number_of_epochs: 30\\nlr: 0.1\\n")
    >>> _ = (folder / "mine.yaml").write_text("numbr_of_epochs: 5\\nlr: 0.1\\n")
    >>> try:
    ...     check_hparams_keys(folder / "mine.yaml", [folder / "shipped.yaml"])
    ... except ValueError as error:
    ...     print(str(error).split(": ", 1)[1])
    'numbr_of_epochs' is not a known key (did you mean 'number_of_epochs'?); fix the spelling
    """
    keys = hparams_keys(hparams_file) | set(extra_keys)
    known = set().union(*(hparams_keys(path) for path in reference_files))
    missing = sorted(known - keys)
    misspelled, unknown = [], []
    for key in sorted(keys - known):
        match = difflib.get_close_matches(key, missing, n=1, cutoff=0.8)
        if match:
            misspelled.append(f"'{key}' is not a known key (did you mean '{match[0]}'?)")
        else:
            unknown.append(key)
    if misspelled:
        raise ValueError(
            f"hparams file {hparams_file}: {'; '.join(misspelled)}; fix the spelling"
        )
    if unknown:
        logger.warning("hparams file %s: keys %s are not used by the recipe's stages",
                       hparams_file, unknown)
