"""What changed between a built collection and its files: the plan of an incremental build.

:func:`plan_changes` compares the items a listing found (a rescan of the folder, or the files given
to ``add``) with the feature table's valid rows, by path:

* a path the table does not hold is **added** (its file is hashed now: the stamp is stored with it);
* a path whose size and ``mtime_ns`` are the stored ones is **unchanged**, and its file is not read;
* a path whose size or mtime differ is hashed: the same content hash means **unchanged** (only the
  stamp is updated: the file was touched or copied back), another means **changed**;
* a row the table holds that the listing no longer finds is **removed** (a full rescan only; paths
  outside the collection's folder, added with ``add``, are checked one by one).

A row migrated from a format-1 table has no stamp: its file is hashed once and adopted as unchanged.
Paths in ``table.excluded`` (deleted on purpose) are left out and reported. Files that cannot be
stamped are reported as skipped, and so is a file that failed to decode last time and has the same
size and mtime now (``failed``: it is not read again). Nothing here writes or embeds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from app.core.datasets import Item
from app.core.feature_table import FeatureTable
from app.core.scan import FileStamp, Skipped, file_stamp
from app.errors import InvalidImageError, OperationCancelled

EXCLUDED_REASON = "deleted from the collection (python -m app.cli add puts it back)"


@dataclass(frozen=True)
class ChangePlan:
    """The difference between a collection's table and its files."""

    added: tuple[Item, ...] = ()  # new paths, stamped (hash included)
    changed: tuple[tuple[int, Item], ...] = ()  # (old id, the new version, stamped): re-embedded under a new id
    removed: tuple[int, ...] = ()  # ids whose file is gone
    unchanged: int = 0
    restamped: dict[int, FileStamp] = field(default_factory=dict)  # same content, new size/mtime (or migrated)
    skipped: tuple[Skipped, ...] = ()
    failed: tuple[dict, ...] = ()  # undecodable last time and not changed since: the stored skip entries

    @property
    def new_items(self) -> tuple[Item, ...]:
        """What is embedded: the added files, then the new versions of the changed ones."""
        return self.added + tuple(item for _, item in self.changed)

    @property
    def retired(self) -> tuple[int, ...]:
        """The ids that stop being valid: the removed ones and the old versions of the changed ones."""
        return tuple(sorted(self.removed + tuple(i for i, _ in self.changed)))

    @property
    def touches_index(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "changed": len(self.changed), "removed": len(self.removed),
                "unchanged": self.unchanged}


def _abs(root: Path, path: str) -> Path:
    return Path(path) if os.path.isabs(path) else root / path


def _stat_stamp(path: Path) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidImageError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    return FileStamp(st.st_size, st.st_mtime_ns)


def plan_changes(table: FeatureTable, items: Sequence[Item], root: str | os.PathLike, *, full: bool = True,
                 listed_skips: Sequence[Skipped] = (), cancel: Callable[[], bool] | None = None,
                 on_hashed: Callable[[int], None] | None = None, hasher: Callable[[Path], FileStamp] | None = None,
                 include_excluded: bool = False) -> ChangePlan:
    """The plan that brings ``table`` to ``items`` (see the module docstring).

    ``full``: ``items`` is the whole collection (a rescan), so valid rows it lacks are removed; with
    ``full=False`` (``add``) only the given items are looked at. ``include_excluded``: take excluded
    paths too (``add`` of a path that was deleted on purpose). ``on_hashed(n)`` after each file read;
    ``cancel()`` is asked between files.
    """
    planner = _Planner(table, Path(root), hasher or file_stamp, cancel, on_hashed, list(listed_skips))
    excluded = set() if include_excluded else set(table.excluded)
    seen: set[str] = set()
    for item in items:
        if item.path in seen:
            continue
        seen.add(item.path)
        if item.path in excluded:
            planner.skipped.append(Skipped(item.path, EXCLUDED_REASON))
        else:
            planner.look_at(item)
    removed, kept = _removed(planner.live, seen, full)
    return ChangePlan(tuple(planner.added), tuple(planner.changed), tuple(removed), planner.unchanged + kept,
                      planner.restamped, tuple(sorted(planner.skipped, key=lambda s: s.path)), tuple(planner.failed))


class _Planner:
    """Sorts listed items into added, changed, unchanged (restamped or not), skipped and failed."""

    def __init__(self, table: FeatureTable, root: Path, hasher: Callable[[Path], FileStamp],
                 cancel: Callable[[], bool] | None, on_hashed: Callable[[int], None] | None,
                 skipped: list[Skipped]) -> None:
        self.table, self.root, self.hasher, self.cancel, self.on_hashed = table, root, hasher, cancel, on_hashed
        self.live = table.live_paths()
        self.undecodable = {s["path"]: s for s in table.skipped if s.get("size") is not None}
        self.added: list[Item] = []
        self.changed: list[tuple[int, Item]] = []
        self.restamped: dict[int, FileStamp] = {}
        self.skipped = skipped
        self.failed: list[dict] = []
        self.unchanged = 0
        self.hashed = 0

    def look_at(self, item: Item) -> None:
        i = self.live.get(item.path)
        prev = self.undecodable.get(item.path) if i is None else None
        if prev is not None and _same_stat(prev, item, self.root):
            self.failed.append(prev)  # undecodable last time, not changed since: not read again
            return
        if i is None:
            new = self.stamp(item)
            if new is not None:
                self.added.append(replace(item, stamp=new))
            return
        old, now = self.table.stamps[i], item.stamp
        if now is None:  # a listing without stats (Caltech101, VOC2012)
            try:
                now = _stat_stamp(_abs(self.root, item.path))
            except InvalidImageError as exc:
                self.skipped.append(Skipped(item.path, str(exc)))
                return
        if old is not None and old.same_stat(now):
            self.unchanged += 1
            return
        new = self.stamp(item)
        if new is None:
            return
        if old is None or new.hash == old.hash:  # touched (or migrated): the same content
            self.unchanged += 1
            self.restamped[i] = new
        else:
            self.changed.append((i, replace(item, stamp=new)))

    def stamp(self, item: Item) -> FileStamp | None:
        if self.cancel is not None and self.cancel():
            raise OperationCancelled("The update was cancelled while reading files; nothing was changed.")
        try:
            return self.hasher(_abs(self.root, item.path))
        except InvalidImageError as exc:
            self.skipped.append(Skipped(item.path, str(exc)))
            return None
        finally:
            self.hashed += 1
            if self.on_hashed is not None:
                self.on_hashed(self.hashed)


def _same_stat(entry: dict, item: Item, root: Path) -> bool:
    """Whether a file that failed to decode has the size and mtime it had then."""
    try:
        now = item.stamp or _stat_stamp(_abs(root, item.path))
    except InvalidImageError:
        return False
    return entry.get("size") == now.size and entry.get("mtime_ns") == now.mtime_ns


def _removed(live: dict[str, int], seen: set[str], full: bool) -> tuple[list[int], int]:
    """(valid rows whose file is gone, outside rows still there): every unseen row of a full rescan,
    and the rows added from outside the folder, checked one by one (a rescan of the folder cannot see them)."""
    out, kept = [], 0
    for path, i in live.items():
        if path in seen:
            continue
        if os.path.isabs(path):
            if os.path.isfile(path):
                kept += full
            else:
                out.append(i)
        elif full:
            out.append(i)
    return sorted(out), kept
