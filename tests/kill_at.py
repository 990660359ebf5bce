"""Run a recipe script and SIGKILL it at an exact point: ``kill_at.py TRIGGERS SCRIPT [ARGS]``.

``TRIGGERS`` is a comma-separated sequence of ``dotted.name=N``: the process waits for the Nth
call of the first function to return, then for the Nth call of the next one after that, and so
on; when the last one returns it kills itself with SIGKILL (no handler, no cleanup: what a
preempted node or the OOM killer does). For example
``speechbrain.core.Brain.on_stage_start=3,speechbrain.core.Brain.fit_batch=2`` dies after the
second training step of epoch 2. A kill at an exact point, rather than after a delay, makes the
tests independent of the machine's speed.
"""

import functools
import importlib
import os
import runpy
import signal
import sys
from pathlib import Path


def resolve(dotted):
    """``(owner, attribute name)`` of ``package.module[.Class].function``."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ImportError(f"cannot import {dotted}")


def arm(triggers):
    remaining = [(name, int(count)) for name, count in
                 (trigger.split("=") for trigger in triggers.split(","))]
    calls = {name: 0 for name, _ in remaining}

    def wrap(name, original):
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if remaining and remaining[0][0] == name:
                calls[name] += 1
                if calls[name] == remaining[0][1]:
                    remaining.pop(0)
                    if not remaining:
                        os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper

    for name in calls:
        owner, attribute = resolve(name)
        setattr(owner, attribute, wrap(name, getattr(owner, attribute)))


if __name__ == "__main__":
    triggers, script, *arguments = sys.argv[1:]
    sys.path.insert(0, str(Path(script).resolve().parent))
    arm(triggers)
    sys.argv = [script, *arguments]
    runpy.run_path(script, run_name="__main__")
