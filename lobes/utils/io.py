"""Atomic file writing: a reader sees the old complete file or the new one, never half."""

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Open a temporary file beside ``path`` and rename it onto ``path`` on success.

    If the block raises, the temporary file is removed and ``path`` is untouched. The file gets
    the permissions of a file created with ``open`` (the process umask applies).

    Example
    -------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_write(target) as f:
    ...     _ = f.write("hello")
    >>> target.read_text()
    'hello'
    >>> oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file private (0600); give it the mode a plain open() would have
    os.chmod(tmp_name, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically.

    Example
    -------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> write_json_atomic(target, {"k": 1})
    >>> json.loads(target.read_text())
    {'k': 1}
    """
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")


def save_figure(fig, path):
    """Save a matplotlib figure atomically (format from the suffix, PNG without one); close it.

    Example
    -------
    >>> import tempfile, pathlib, matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "plot.png"
    >>> save_figure(fig, target)
    >>> target.read_bytes()[:4] == b"\\x89PNG"
    True
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=path.suffix[1:] or "png", dpi=100)
    plt.close(fig)
