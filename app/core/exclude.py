"""What a folder scan leaves out on purpose: the litter NAS boxes and photo apps leave in photo folders
(:data:`DEFAULT_EXCLUDES`), the patterns a person gives (``--exclude GLOB``, stored with the collection),
and the folder's own ``.risignore`` file. All three are read like a ``.gitignore`` (the ``pathspec``
library's gitignore semantics): ``*.tmp``, ``trips/2019/``, ``/top-level-only.jpg``, ``!keep.jpg``;
a pattern ending in ``/`` matches folders only, and a folder left out is not looked into.

Unlike a skip (:class:`app.core.scan.Skipped`, something that could not be read), an exclusion is
not listed entry by entry: :class:`ExcludeRules` counts the entries each pattern left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from app.errors import DatasetError

IGNORE_FILE = ".risignore"
# Known litter: thumbnails, caches, recycle bins and metadata of NAS boxes (Synology, QNAP), photo
# apps (Picasa, desktop thumbnailers) and operating systems (macOS, Windows).
DEFAULT_EXCLUDES: tuple[str, ...] = (
    "@eaDir/",  # Synology thumbnails and metadata
    "\\#recycle/",  # Synology recycle bin ("#" starts a comment in gitignore syntax, unless escaped)
    "\\#snapshot/",  # Synology snapshots
    ".@__thumb/",  # QNAP thumbnails
    "@__thumb/",
    "@Recycle/",  # QNAP recycle bin
    "@Recently-Snapshot/",
    ".thumbnails/",  # freedesktop thumbnail cache
    ".picasaoriginals/",  # Picasa's copies of edited photos
    ".AppleDouble/",
    ".Trashes/",
    ".Spotlight-V100/",
    ".fseventsd/",
    "$RECYCLE.BIN/",
    "System Volume Information/",
    "lost+found/",
    ".DS_Store",
    "._*",  # macOS resource forks on foreign disks: "._IMG_0001.JPG" is not a photo
    "Thumbs.db",
    "ehthumbs.db",
    "desktop.ini",
    ".picasa.ini",
)


@dataclass
class ExcludeRules:
    """The patterns in force for one folder, in order (defaults, the person's, ``.risignore``'s: a later
    ``!pattern`` can take back an earlier one), and how many entries each has left out so far."""

    patterns: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)
    _spec: Any = None

    def excluded(self, rel: str, is_dir: bool) -> bool:
        """Whether the entry at ``rel`` (posix, relative to the folder) is left out; counts it when it is."""
        if not self.patterns:
            return False
        result = self._spec.check_file(f"{rel}/" if is_dir else rel)
        if not result.include:
            return False
        pattern = self.patterns[result.index]
        self.counts[pattern] = self.counts.get(pattern, 0) + 1
        return True

    def summary(self) -> tuple[tuple[str, int], ...]:
        """(pattern, entries it left out), most first."""
        return tuple(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))


def exclude_rules(root: str | os.PathLike, patterns: Sequence[str] = (), *, defaults: bool = True) -> ExcludeRules:
    """The rules for scanning ``root``: :data:`DEFAULT_EXCLUDES`, ``patterns``, then ``root/.risignore``.

    Raises :class:`DatasetError` for a pattern the gitignore syntax does not allow, or an unreadable
    ``.risignore``."""
    from pathspec import GitIgnoreSpec

    lines = [*(DEFAULT_EXCLUDES if defaults else ()), *check_patterns(patterns), *read_ignore_file(root)]
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    try:
        spec = GitIgnoreSpec.from_lines(lines)
    except ValueError as exc:  # pathspec's GitIgnorePatternError
        raise DatasetError(f"An exclude pattern is not valid: {exc}.",
                           hint=f"Patterns are read like .gitignore lines; check --exclude and {IGNORE_FILE}.") from exc
    return ExcludeRules(tuple(lines), {}, spec)


def check_patterns(patterns: Sequence[str]) -> list[str]:
    """``--exclude`` values, checked: one pattern each, on one line."""
    out = []
    for pattern in patterns:
        if not isinstance(pattern, str) or "\n" in pattern or "\r" in pattern or not pattern.strip():
            raise DatasetError(f"{pattern!r} is not an exclude pattern.",
                               hint="Give one glob per --exclude, e.g. --exclude '*.tmp' --exclude 'trips/2019/'.")
        out.append(pattern.strip())
    return out


def read_ignore_file(root: str | os.PathLike) -> list[str]:
    """The lines of ``root/.risignore`` (none when there is no such file)."""
    path = Path(root) / IGNORE_FILE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read ({exc}).", hint="It must be a UTF-8 text file, one pattern a line.") \
            from exc
    return [line.rstrip("\r") for line in text.split("\n")]


def excluded_line(summary: Sequence[tuple[str, int]]) -> str:
    """``excluded 5 (@eaDir/: 3, .DS_Store: 2)``, or ``""`` when nothing was left out."""
    total = sum(n for _, n in summary)
    if not total:
        return ""
    return f"excluded {total} (" + ", ".join(f"{p}: {n}" for p, n in summary) + ")"
