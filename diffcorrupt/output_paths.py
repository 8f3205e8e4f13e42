"""Output paths checked before a job computes or writes anything.

A job that finds out only at its first write that ``--out`` names a file has by then trained a
classifier, sampled a set or written half its folder; these checks create nothing, so a refused
command leaves the disk as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

from diffcorrupt.errors import UserError


def output_folder(text: str | Path, flag: str, *, fresh: bool = False, force: bool = False) -> Path:
    """``text`` as a folder the job may create or add to. ``fresh`` outputs (written whole, never
    resumed) refuse a folder that already holds files unless ``force``: nothing is overwritten."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag}={text} is a file, not a folder; pass a folder path")
    _check_parent(path, flag, text)
    if fresh and not force and path.is_dir() and any(path.iterdir()):
        raise UserError(f"{flag}={text} already exists and holds files; pass another folder, or --force to write "
                        "into it and replace what it holds")
    return path


def output_file(text: str | Path, flag: str) -> Path:
    """``text`` as a file the job may create or replace."""
    path = Path(text)
    if path.is_dir():
        raise UserError(f"{flag}={text} is a folder; pass a file path inside it, e.g. {path / 'metrics.json'}")
    _check_parent(path.parent, flag, text)
    return path


def _check_parent(path: Path, flag: str, text: str | Path) -> None:
    """The nearest existing folder at or above ``path`` must be a writable folder."""
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag}={text} lies under {existing}, which is a file; pass a path in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag}={text}: {existing} is not writable; pass a path on a writable disk")


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes ``path`` through ``write`` into a temporary sibling renamed into place once synced, so a
    crash leaves the old file or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
