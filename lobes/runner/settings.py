"""What a step ran with: its effective settings, its inputs, and one digest of both.

Every step writes ``settings.json`` into its output folder when it starts. A finished step is
reused (by the runner, or when its script is started again) only when the settings and inputs
it would run with now give the same digest; otherwise the run stops and names what changed
(docs/design.md, Data contract). The inputs are the fold's manifests (their content, not the
wav paths, so a moved corpus is the same corpus) and the digests of the steps it reads from, so
a change upstream reaches every step below it.

Settings are the step's resolved hparams values that can change its result: plain values only
(objects are built from them), and only the keys the recipe's table of steps says the step
records (``lobes.runner.steps.StepTable.records_key``): not the keys that only say where things
go or how fast they run, nor the shared keys of groups the step does not read.

Example
-------
>>> from lobes.runner.steps import StepSpec, StepTable
>>> table = StepTable(folder="/r", common="common.yaml", corpora={},
...                   steps=[StepSpec("baseline", "train.py", "baseline.yaml", groups=("t",))],
...                   groups={"t": {"lr"}, "gmp": {"gmp_scales"}}, run_only={"num_workers"})
>>> settings = step_settings({"lr": 0.1, "num_workers": 4, "gmp_scales": [8]}, table, "baseline")
>>> settings
{'lr': 0.1}
>>> digest(settings, {"manifests": "abc"}) == digest({"lr": 0.1}, {"manifests": "abc"})
True
"""

import hashlib
import json
from pathlib import Path

from lobes.utils.io import write_json_atomic

SETTINGS_FILE = "settings.json"
def is_plain(value):
    """True for values made of numbers, text, True/False, None, lists and mappings only."""
    if getattr(getattr(value, "tag", None), "value", None):
        return False
    if isinstance(value, dict):
        return all(is_plain(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(is_plain(item) for item in value)
    return value is None or isinstance(value, bool | int | float | str)


def _plain(value):
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def step_settings(values, table, step, run_options=None):
    """The settings of ``step`` (a row of ``table``, e.g. ``stage0`` or ``gmp``).

    Arguments
    ---------
    values : dict
        Resolved top-level hparams values (``lobes.runner.hparams.resolve``).
    table : lobes.runner.steps.StepTable
        The recipe's table, which says which keys the step records.
    step : str
        The step.
    run_options : dict, optional
        Run options that change results (``precision``, ``eval_precision``).
    """
    settings = {key: _plain(value) for key, value in values.items()
                if not key.startswith("_") and table.records_key(step, key) and is_plain(value)}
    for key, value in (run_options or {}).items():
        settings[f"run_option:{key}"] = value
    return dict(sorted(settings.items()))


def digest(settings, inputs):
    """A short digest of settings and inputs (sha256 of their canonical JSON, 16 hex digits)."""
    text = json.dumps({"settings": settings, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifests_digest(prepare_folder):
    """Digest of a fold's manifests: ids, labels, speakers, sessions and durations, not paths.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for split in ("train", "valid", "test"):
    ...     _ = (folder / f"{split}.json").write_text('{"u": {"wav": "/a/u.wav", "emo": "neu"}}')
    >>> first = manifests_digest(folder)
    >>> _ = (folder / "test.json").write_text('{"u": {"wav": "/moved/u.wav", "emo": "neu"}}')
    >>> manifests_digest(folder) == first
    True
    """
    content = {}
    for split in ("train", "valid", "test"):
        path = Path(prepare_folder) / f"{split}.json"
        manifest = json.loads(path.read_text()) if path.exists() else {}
        content[split] = {utt_id: {key: value for key, value in entry.items() if key != "wav"}
                          for utt_id, entry in manifest.items()}
    return digest(content, {})


def read_record(folder):
    """The ``settings.json`` of a step folder, or None."""
    path = Path(folder) / SETTINGS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_record(folder, step, settings, inputs):
    """Write ``settings.json`` (step, settings, inputs, digest) into a step folder."""
    record = {"step": step, "digest": digest(settings, inputs), "settings": settings,
              "inputs": inputs}
    write_json_atomic(Path(folder) / SETTINGS_FILE, record)
    return record


def differences(old, new):
    """Human-readable changes between two records (``key: old -> new``).

    Example
    -------
    >>> differences({"settings": {"lr": 0.1}, "inputs": {}},
    ...             {"settings": {"lr": 0.5, "seed": 1}, "inputs": {}})
    ['lr: 0.1 -> 0.5', 'seed: (unset) -> 1']
    """
    changes = []
    for part in ("settings", "inputs"):
        before, after = old.get(part, {}), new.get(part, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key, "(unset)") != after.get(key, "(unset)"):
                label = key if part == "settings" else f"input {key}"
                changes.append(f"{label}: {before.get(key, '(unset)')} -> "
                               f"{after.get(key, '(unset)')}")
    return changes
