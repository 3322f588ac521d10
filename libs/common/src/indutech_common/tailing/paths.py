"""Finding and opening files under the watched root without ever leaving it.

``Path.glob`` and ``os.open`` follow symbolic links, so a link on the SAN to a
file (or a directory) outside it would be read. Here the root is walked with
``os.scandir`` without entering symlinked directories, glob patterns are
matched on the relative path (pathlib's rules: ``*``, ``?``, ``[...]`` within
one path component, ``**`` for zero or more directories, hidden names
included), and a file is opened one component at a time relative to the
root's descriptor with ``O_NOFOLLOW``: a link swapped in after the walk makes
the open fail instead of leading elsewhere.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from indutech_common.tailing.exceptions import TailingError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class OutsideRootError(TailingError):
    """A path that is a symbolic link, crosses one, or is not a regular file."""


def glob_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regular expression matching a relative path (``/``-separated) against any pattern."""
    alternatives = [_translate(pattern) for pattern in patterns]
    if not alternatives:
        raise TailingError("a watch spec needs at least one glob pattern")
    return re.compile("|".join(f"(?:{alt})" for alt in alternatives))


def _translate(pattern: str) -> str:
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    if not parts:
        raise TailingError(f"empty glob pattern {pattern!r}")
    out = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            if last:  # pathlib: a trailing "**" matches directories, never a file
                raise TailingError(f"glob {pattern!r} ends with '**': use '**/*' for files")
            out.append("(?:[^/]+/)*")  # zero or more whole directories
            continue
        out.append(_translate_component(part) + ("" if last else "/"))
    return "".join(out) + r"\Z"


def _translate_component(part: str) -> str:
    """fnmatch's rules within one component: ``*`` and ``?`` never match ``/``."""
    out = []
    i, n = 0, len(part)
    while i < n:
        char = part[i]
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            j = i
            if j < n and part[j] in "!^":
                j += 1
            if j < n and part[j] == "]":
                j += 1
            while j < n and part[j] != "]":
                j += 1
            if j >= n:
                out.append(r"\[")  # an unclosed bracket is a literal, as in fnmatch
                continue
            body = part[i:j].replace("\\", "\\\\")
            i = j + 1
            if body.startswith(("!", "^")):
                body = "^/" + body[1:]  # negated: still never a separator
            out.append(f"[{body}]")
        else:
            out.append(re.escape(char))
    return "".join(out)


def walk(root: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under ``root`` as (relative path, entry), directories sorted, never
    entering a symbolic link (links are yielded, for the caller to refuse)."""
    pending = [("", root)]
    while pending:
        relative, directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            if not relative:
                raise
            continue  # a directory removed or unreadable meanwhile: the next scan sees
        subdirectories = []
        for entry in entries:
            path = relative + entry.name
            try:
                is_dir = not entry.is_symlink() and entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                subdirectories.append((path + "/", entry.path))
            else:
                yield path, entry
        pending.extend(reversed(subdirectories))


def inside(root: str, path: str) -> bool:
    """Whether ``path`` resolves (all links followed) to a place under ``root``."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def open_under(root: str | Path, relative: str) -> int:
    """A read-only descriptor of the regular file ``root/relative``, opened without following
    any symbolic link below ``root`` (``O_NOFOLLOW`` on every component).

    Raises :class:`OutsideRootError` for a link or a file that is not regular, ``OSError``
    when the file cannot be opened (gone, no permission).
    """
    parts = [part for part in relative.split("/") if part]
    if not parts or any(part == ".." for part in parts):
        raise OutsideRootError(f"{relative!r} is not a path below the watched directory")
    directory = os.open(root, _DIR_FLAGS)  # the root itself may be a link to the mount
    try:
        for part in parts[:-1]:
            try:
                below = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=directory)
            except OSError:
                if _is_link(directory, part):
                    raise OutsideRootError(
                        f"{relative!r} crosses the symbolic link {part!r}"
                    ) from None
                raise
            os.close(directory)
            directory = below
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=directory)
        except OSError:
            if _is_link(directory, parts[-1]):
                raise OutsideRootError(f"{relative!r} is a symbolic link") from None
            raise
    finally:
        os.close(directory)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if regular:
            os.set_blocking(fd, True)  # O_NONBLOCK was only there so a FIFO cannot hang the open
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise OutsideRootError(f"{relative!r} is not a regular file")
    return fd


def _is_link(directory: int, name: str) -> bool:
    """O_NOFOLLOW on a link fails with ELOOP (a file) or ENOTDIR (O_DIRECTORY): check which."""
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=directory).st_mode)
    except OSError:
        return False
