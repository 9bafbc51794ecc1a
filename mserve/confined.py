"""Reading a file below a root folder without ever being led out of it.

A path is opened one component at a time, each relative to the folder opened before it and with
``O_NOFOLLOW``, so a symbolic link anywhere below the root is refused by the kernel (ELOOP or
ENOTDIR) rather than followed, and a component swapped for a link between two steps cannot
redirect the walk. The file's content is read from the same descriptor that ``fstat`` checked:
a regular file with one link. A hard link to a file outside the root cannot be told apart from a
file inside it, so every file with more than one link is refused. The bytes returned are the
bytes checked; callers hash them and hand them on, and never open the path again.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from .errors import ValidationError

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO never blocks


class UnsafeFile(ValidationError):
    """A file that may not be read: a link, a hard link, not a regular file."""


class MissingFile(UnsafeFile):
    """No file of that name (callers that allow an absent file catch this one)."""


def check_relative(relative: str) -> PurePosixPath:
    """``relative`` as a path below a folder: not empty, absolute, NUL-bearing or climbing out."""
    if not relative or "\0" in relative or "\\" in relative:
        raise UnsafeFile(f"{relative!r} is not a usable file name")
    path = PurePosixPath(relative)
    if path.is_absolute() or any(part in ("..", ".") for part in path.parts):
        raise UnsafeFile(f"{relative!r} leads outside its folder")
    return path


def read_bytes(root: Path, relative: str, *, label: str = "") -> bytes:
    """The content of ``root/relative``; UnsafeFile unless every component below ``root`` is a
    real folder or file (no symlink) and the file is a regular file with one link.

    Messages name ``label`` (e.g. "iris:3") and ``relative``, never a host path.
    """
    parts = check_relative(relative).parts
    shown = f"{label}: {relative}" if label else relative
    try:
        folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise MissingFile(f"{shown}: its folder cannot be opened") from None
    try:
        for part in parts[:-1]:
            inner = _open_at(folder, part, _DIRECTORY_FLAGS, shown)
            os.close(folder)
            folder = inner
        fd = _open_at(folder, parts[-1], _FILE_FLAGS, shown)
    finally:
        os.close(folder)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{shown} is not a regular file")
        if info.st_nlink > 1:
            raise UnsafeFile(
                f"{shown} has {info.st_nlink} hard links; a hard link may lead outside the "
                "repository and cannot be told apart from a file inside it, so it is refused"
            )
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _open_at(folder: int, name: str, flags: int, shown: str) -> int:
    """Open ``name`` inside the open ``folder``, refusing a symbolic link."""
    try:
        return os.open(name, flags, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFile(
                f"{shown} is, or lies under, a symbolic link; files of a repository may not be "
                "links"
            ) from None
        if exc.errno == errno.ENOENT:
            raise MissingFile(f"{shown} is missing") from None
        reason = os.strerror(exc.errno) if exc.errno else "error"
        raise UnsafeFile(f"{shown} cannot be read ({reason})") from None
