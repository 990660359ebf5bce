"""The Slurm cluster of the tests: the one `sbatch` reaches, else the one `.ci/slurm-up` started.

Use the fixture by importing it into a test module (``from slurm_cluster import slurm_cluster``).
Without a reachable cluster its tests are skipped with the way to start one, except in CI
(``CI=true``), where they fail: `.ci/run` brings the cluster up before the tests.
"""

import os
import shutil
from pathlib import Path

import pytest

from lobes.runner.launchers.slurm import SlurmError, cluster_name


def find_cluster():
    """``(cluster name, None)`` for a reachable cluster, else ``(None, why not)``.

    With no ``SLURM_CONF`` set, the configuration that `.ci/slurm-up` wrote is used when it is
    there (``$SLURM_STATE_DIR``, default /tmp/gmptl-slurm), and exported for the Slurm clients.
    """
    if "SLURM_CONF" not in os.environ:
        conf = Path(os.environ.get("SLURM_STATE_DIR", "/tmp/gmptl-slurm")) / "slurm.conf"
        if conf.exists():
            os.environ["SLURM_CONF"] = str(conf)
    if shutil.which("sbatch") is None:
        return None, "sbatch is not installed"
    # Without a configuration file the clients look for a configless cluster in DNS for a minute.
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    if not Path(conf).exists():
        return None, f"no Slurm configuration at {conf}"
    try:
        return cluster_name(), None
    except SlurmError as error:
        return None, str(error)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The name of the reachable Slurm cluster; skip (fail in CI) when there is none."""
    name, why = find_cluster()
    if name is None:
        message = f"no Slurm cluster reachable: start one with `.ci/slurm-up` ({why})"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI runs the Slurm tests: {message}")
        pytest.skip(message)
    return name
