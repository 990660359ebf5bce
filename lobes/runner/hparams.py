"""Reading the recipe's hparams files: composition, overrides, and checks before any work.

hyperpyyaml has no way for one file to continue another, and its ``!include:`` paths are
relative to the file that names them, so a copied file breaks. This module adds the two rules
that let every stage file share one fragment and work from any folder:

- ``extends: PATH`` (a top-level key) makes a file continue the fragment at ``PATH``: the
  fragment's keys come first, and a key the file sets again replaces the fragment's in place.
  The recipe's stage files extend ``recipes/IEMOCAP/GMP-TL/hparams/common.yaml``, where the
  data, folder, encoder and GMP keys live once.
- Paths of ``extends:`` and ``!include:`` are relative to the file's folder or, failing that, to
  the project root: a copy of a stage file works from any folder.

And the checks that stop a run before any work (``check_keys``, ``check_types``,
``sort_overrides``): misspelled keys with a did-you-mean, values of the wrong type, override
keys no step of the recipe knows. Keys are read from the raw text, because the files hold
``!new:`` and ``!ref`` tags that plain YAML cannot build.
"""

import logging
import re
from pathlib import Path

from hyperpyyaml import load_hyperpyyaml, resolve_references
from ruamel.yaml import YAML

from lobes.utils.errors import HparamsError, did_you_mean

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]

_TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_]\w*)\s*:", re.MULTILINE)
_EXTENDS = re.compile(r"^extends\s*:\s*(\S+)[^\n]*\n?", re.MULTILINE)
_INCLUDE = re.compile(r"^([^#\n]*:\s*)!include:(\S+)", re.MULTILINE)


def find_path(name, folder):
    """``name`` relative to ``folder``, or else to the project root (absolute names as is).

    Example
    -------
    >>> find_path("hparams/encoders/hubert_large.yaml", "/anywhere").name
    'hubert_large.yaml'
    """
    path = Path(name)
    candidates = [path] if path.is_absolute() else [Path(folder) / path, PROJECT_ROOT / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise HparamsError(
        f"{name} not found (looked in {', '.join(str(c.parent) for c in candidates)}): paths "
        "of extends: and !include: are relative to the hparams file or to the project root"
    )


def _blocks(text):
    """Split hparams text into ``[(key or None, text)]``: each top-level key with its lines."""
    blocks, key, lines = [], None, []
    for line in text.splitlines(keepends=True):
        match = _TOP_LEVEL_KEY.match(line)
        if match:
            blocks.append((key, "".join(lines)))
            key, lines = match.group(1), []
        lines.append(line)
    blocks.append((key, "".join(lines)))
    return [(key, block) for key, block in blocks if key or block.strip()]


def compose(path):
    """The text of an hparams file with its ``extends:`` fragment expanded, paths absolute.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "base.yaml").write_text("lr: 0.1\\nepochs: !ref <lr> * 10\\n")
    >>> _ = (folder / "mine.yaml").write_text("extends: base.yaml\\nlr: 0.5\\nseed: 3\\n")
    >>> print(compose(folder / "mine.yaml"))
    lr: 0.5
    epochs: !ref <lr> * 10
    seed: 3
    <BLANKLINE>
    """
    path = Path(path).resolve()
    if not path.exists():
        raise HparamsError(f"hparams file {path} not found")
    text = _INCLUDE.sub(
        lambda match: f"{match.group(1)}!include:{find_path(match.group(2), path.parent)}",
        path.read_text(),
    )
    extends = _EXTENDS.search(text)
    if not extends:
        return text
    base = compose(find_path(extends.group(1), path.parent))
    own = dict(block for block in _blocks(strip_extends(text)) if block[0])
    composed = [own.pop(key, block) if key else block for key, block in _blocks(base)]
    return "".join(composed).rstrip("\n") + "\n" + "".join(own.values())


def keys_of(text):
    """The top-level keys of hparams text.

    Example
    -------
    >>> sorted(keys_of("lr: 0.1  # rate\\nmodel: !new:torch.nn.Linear\\n    in_features: 2\\n"))
    ['lr', 'model']
    """
    return set(_TOP_LEVEL_KEY.findall(text or ""))


def raw_values(text):
    """Top-level values of hparams text as YAML reads them (tags kept, nothing built)."""
    return YAML(typ="rt").load(text) or {}


def strip_extends(text):
    """Hparams text without its ``extends:`` line (the file's own keys only).

    Example
    -------
    >>> strip_extends("extends: common.yaml\\nlr: 0.5\\n")
    'lr: 0.5\\n'
    """
    return _EXTENDS.sub("", text, count=1)


def shipped_keys(table):
    """``{file name: keys}`` of a recipe's shipped hparams files (``table.shipped``), composed."""
    return {name: keys_of(compose(table.hparams_folder / name)) for name in table.shipped}


def check_keys(hparams_file, known):
    """Stop on keys of a user's hparams file that look like misspellings of recipe keys.

    A key that no shipped file has is a misspelling when it closely matches a known key, even
    when the file also sets that key (``number_of_epoch: 1`` beside ``number_of_epochs: 30``
    would otherwise be ignored); other new keys (a user's own helper values) only warn.

    Raises
    ------
    HparamsError
        Naming the file, each misspelled key and the key it probably means.

    Example
    -------
    >>> import tempfile
    >>> mine = Path(tempfile.mkdtemp()) / "mine.yaml"
    >>> _ = mine.write_text("numbr_of_epochs: 5\\nlr: 0.1\\n")
    >>> try:
    ...     check_keys(mine, {"number_of_epochs", "lr"})
    ... except HparamsError as error:
    ...     print(str(error).split(": ", 1)[1])
    'numbr_of_epochs' is not a known key (did you mean 'number_of_epochs'?); fix the spelling
    """
    unknown = sorted(keys_of(compose(hparams_file)) - set(known) - {"extends"})
    misspelled = [f"'{key}' is not a known key{did_you_mean(key, known)}" for key in unknown
                   if did_you_mean(key, known)]
    if misspelled:
        raise HparamsError(f"hparams file {hparams_file}: {'; '.join(misspelled)}; "
                           "fix the spelling")
    own = [key for key in unknown if not did_you_mean(key, known)]
    if own:
        logger.warning("hparams file %s: keys %s are not used by the recipe's steps",
                       hparams_file, own)


def sort_overrides(overrides, stage_keys, recipe_keys, where="override", listed_in=None):
    """Split overrides into those this step uses and those only other steps use.

    A key that no step of the recipe knows is an error with a did-you-mean.

    Returns
    -------
    used : dict
    other_steps : list of str

    Example
    -------
    >>> sort_overrides({"lr": 0.1, "gmp_scales": [8]}, {"lr"}, {"lr", "gmp_scales"})
    ({'lr': 0.1}, ['gmp_scales'])
    """
    used, other_steps, unknown = {}, [], []
    for key, value in overrides.items():
        if key in stage_keys:
            used[key] = value
        elif key in recipe_keys:
            other_steps.append(key)
        else:
            unknown.append(f"'{key}'{did_you_mean(key, recipe_keys)}")
    if unknown:
        raise HparamsError(
            f"{where} keys {', '.join(unknown)} are hparams of no step of the recipe; the keys "
            f"are listed in {listed_in or 'the recipe hparams files'}"
        )
    return used, other_steps


def _type_name(value):
    if isinstance(value, bool):
        return "True or False"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "text"


def check_types(values, defaults, where):
    """Stop on values whose type differs from the shipped default's (``lr: fast``).

    Only plain defaults are compared (numbers, True/False, lists, mappings, text); a ``null``
    default or a tagged one (``!ref``, ``!new:``) takes any value.

    Example
    -------
    >>> check_types({"lr": 0.001, "seed": 3}, {"lr": 0.0001, "seed": 1986}, "override")
    >>> try:
    ...     check_types({"lr": "fast"}, {"lr": 0.0001}, "override")
    ... except HparamsError as error:
    ...     print(error)
    override lr: 'fast' is text, but lr takes a number (default 0.0001)
    """
    problems = []
    for key, value in values.items():
        default = defaults.get(key)
        if default is None or getattr(getattr(default, "tag", None), "value", None):
            continue
        if value is None or getattr(getattr(value, "tag", None), "value", None):
            continue
        if _type_name(value) != _type_name(default):
            problems.append(f"{key}: {value!r} is {_type_name(value)}, but {key} takes "
                            f"{_type_name(default)} (default {default!r})")
    if problems:
        raise HparamsError(f"{where} " + "; ".join(problems))


def resolve(text, overrides=None):
    """The top-level values of composed text with every ``!ref`` resolved, nothing built.

    Values that build objects (``!new:``, ``!name:``, ``!apply:``) stay as tagged YAML nodes.
    """
    return raw_values(resolve_references(text, overrides or {}).getvalue())


def load(text, overrides=None):
    """Build the hparams of composed text (hyperpyyaml ``load_hyperpyyaml``)."""
    return load_hyperpyyaml(text, overrides or {})
