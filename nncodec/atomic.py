"""Atomic file output: write a temporary file beside the target, sync it, rename it.

Readers see the old file or the whole new one, never a part; a failed write
leaves no temporary file behind. Without ``overwrite`` an existing target is
never replaced, not even one that appears while the data is being written.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from typing import BinaryIO, Callable

from .errors import OutputExistsError


def _current_umask() -> int:
    try:  # Linux: read it without changing it (os.umask would race with other threads)
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def exists_error(path: str) -> OutputExistsError:
    return OutputExistsError(errno.EEXIST, f"{path} exists; pass force=True (CLI: -f/--force) to overwrite it")


def atomic_write(path: str, write: Callable[[BinaryIO], None], *, overwrite: bool) -> None:
    """Write through a temporary file in the same directory, then rename it onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode) if overwrite else None
        except FileNotFoundError:
            mode = None
        os.chmod(tmp, 0o666 & ~_current_umask() if mode is None else mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_without_clobbering(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def _publish_without_clobbering(tmp: str, path: str) -> None:
    try:
        os.link(tmp, path)  # fails if path exists, even if it appeared since we checked
    except FileExistsError:
        raise exists_error(path) from None
    except (OSError, AttributeError):  # no hard links here (some filesystems, platforms)
        if os.path.lexists(path):
            raise exists_error(path) from None
        os.replace(tmp, path)
        return
    with contextlib.suppress(OSError):
        os.unlink(tmp)
