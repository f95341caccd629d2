"""Output files that appear whole or not at all."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def written_whole(target: Path, *, mode: int = 0o644, buffering: int = -1) -> Iterator[BinaryIO]:
    """A file to write, renamed onto ``target`` only when the block completes.

    A run stopped half-way (a bad entry, a lost database, Ctrl-C) leaves no partial file behind, nor
    a half-overwritten old one: a later step (``evaluate``, a SIEM picking up an export) would take
    a partial file for a whole one. ``mode``: the permissions the file is created with.
    """
    if not target.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(target))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(target))
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    partial.touch(mode=mode)
    try:
        with partial.open("wb", buffering=buffering) as handle:
            yield handle
            # On disk before the rename: after a power cut the name must not point at an empty file.
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(target)
        fsync_path(target.parent)
    finally:
        partial.unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder, to disk: a rename is durable only once its folder is (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
