"""Choosing a folder without typing its path: the Collections tab's folder browser, confined to the library
roots (``--library-root``).

The chosen folder is the tab's folder box; the browser lists that folder's sub-folders (a dropdown):
picking one goes into it, Up goes to its parent but never above its root. With several roots, a root
menu picks the one browsed. Hidden folders are not listed; symbolic links are followed only when they
stay under a root (:func:`app.web.library.library_path` checks every path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app.errors import AppError

MAX_LISTED = 500  # sub-folders listed at once (by name); a folder with more says so


@dataclass(frozen=True)
class Place:
    """Where the browser is: the folder, its sub-folders' names, and a line about it."""

    folder: str
    subfolders: list[str]
    note: str = ""


def subfolders(folder: Path) -> tuple[list[str], str]:
    """The names of ``folder``'s visible sub-folders, sorted, and a note when some were left out."""
    names = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        names.append(entry.name)
                except OSError:
                    continue
    except OSError as exc:
        raise AppError(f"{folder} cannot be read ({exc.strerror or exc}).") from None
    names.sort(key=str.lower)
    note = f"showing the first {MAX_LISTED} of {len(names)} folders" if len(names) > MAX_LISTED else ""
    return names[:MAX_LISTED], note


def root_of(roots: tuple[Path, ...], folder: Path) -> Path:
    """The root ``folder`` is under (the deepest one when roots nest)."""
    real = [Path(os.path.realpath(r)) for r in roots]
    under = [r for r in real if folder == r or r in folder.parents]
    if not under:
        raise AppError(f"{folder} is not under a library root.")
    return max(under, key=lambda r: len(r.parts))


def place(folder: Path) -> Place:
    names, note = subfolders(folder)
    return Place(str(folder), names, note or ("no sub-folders" if not names else ""))


def go_into(roots: tuple[Path, ...], folder: Path, name: str) -> Place:
    """The sub-folder ``name`` of ``folder`` (a name, never a path)."""
    if not name or "/" in name or os.sep in name or name in (".", ".."):
        raise AppError("Choose one of the folders listed.")
    target = Path(os.path.realpath(folder / name))
    root_of(roots, target)  # a link leading out of the roots is refused
    if not target.is_dir():
        raise AppError(f"{folder / name} is not a folder any more.")
    return place(target)


def go_up(roots: tuple[Path, ...], folder: Path) -> Place:
    """``folder``'s parent, or ``folder`` itself at its root."""
    root = root_of(roots, folder)
    return place(folder if folder == root else folder.parent)
