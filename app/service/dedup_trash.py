"""Safe clean-up of duplicates: keep one, move the others to a trash folder, and undo. Nothing is deleted.

The trash is ``<collection's folder>/.duplicates-trash/NAME/`` (a hidden folder: scans never enter it), with
``manifest.json`` recording every move. Each move is recorded *before* it starts (``moving``) and after it
ends (``moved``, or ``failed`` with the reason), each time by an atomic write, so after any failure or a
kill -9 every photo is at its place or in the trash, and the manifest says where to look:

* the same file system: one ``os.rename`` (atomic);
* another drive (``EXDEV``): copy to a temp file in the trash, fsync, rename into place, fsync the folder,
  and only then remove the original; a failure on the way (a full disk) removes the partial copy and leaves
  the original where it was;
* a photo gone, locked or unreadable: recorded as ``failed`` with the reason; the others go on.

The moved items are then removed from the collection (:func:`app.service.library.delete_items`, an atomic,
incremental change). :func:`undo_clean` moves every recorded photo back (an entry left ``moving`` by a
crash is resolved from what is on disk), never over a file that now sits at its original path (it is
restored beside it, as ``NAME (restored N).ext``, and the entry says so), then adds them to the collection.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from app.config import Config
from app.errors import DatasetError, StorageError
from app.files.atomic import fsync_dir, write_json
from app.service.commit import read_state
from app.service.dedup_store import item_file
from app.service.library import add_paths, delete_items

TRASH = ".duplicates-trash"


@dataclass(frozen=True)
class MoveResult:
    moves: list[dict[str, Any]]  # per photo: id, path, to, state, note
    summary_line: str


def trash_dir(image_root: str | os.PathLike, name: str) -> Path:
    return Path(image_root) / TRASH / name


class TrashManifest:
    """The record of the moves of one collection's clean-ups, written atomically on every change."""

    def __init__(self, folder: Path, name: str):
        self.folder = folder
        self.path = folder / "manifest.json"
        self.name = name
        self.entries: list[dict[str, Any]] = []
        if self.path.exists():
            import json

            self.entries = list(json.loads(self.path.read_text(encoding="utf-8")).get("entries", []))

    def save(self) -> None:
        write_json(self.path, {"collection": self.name, "format": 1, "entries": self.entries})


def clean_groups(config: Config, name: str, groups: Sequence[tuple[int, Sequence[int]]]) -> MoveResult:
    """Move every member but the keeper of each ``(keeper, members)`` group to the trash, then remove the moved
    items from the collection. A member that is another group's keeper stays."""

    state = read_state(config, name)
    keepers = {int(k) for k, _ in groups}
    doomed = sorted({int(i) for k, members in groups for i in members if int(i) not in keepers})
    folder = trash_dir(state.table.image_root, name)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = TrashManifest(folder, name)
    moves, batch = [], f"{time.time_ns():x}"  # this clean-up's entries: undo_clean(batch=...) restores only them
    for i in doomed:
        src = item_file(state.table, i)
        entry = {"id": i, "path": str(src), "stored": state.table.paths[i], "to": str(_free(folder / _inside(
            state.table.paths[i]))), "state": "moving", "time": time.time(), "batch": batch}
        manifest.entries.append(entry)
        manifest.save()  # recorded before the photo moves
        try:
            move_file(src, Path(entry["to"]))
            entry["state"] = "moved"
        except (OSError, StorageError) as exc:
            entry.update(state="failed", note=_reason(exc))
        manifest.save()
        moves.append(dict(entry))
    moved = [m["id"] for m in moves if m["state"] == "moved"]
    line = "nothing moved"
    if moved:
        line = delete_items(config, name, ids=moved).line()
    return MoveResult(moves, line)


def undo_clean(config: Config, name: str, *, embedder=None, batch: str | None = None) -> MoveResult:
    """Move every photo the trash manifest records back (only those of one clean-up with ``batch``: see
    :func:`last_batch`), then add them to the collection again (with ``embedder``, or one for the collection's
    own model)."""

    state = read_state(config, name)
    folder = trash_dir(state.table.image_root, name)
    if not (folder / "manifest.json").exists():
        raise DatasetError(f"There is nothing to undo for {name}: {folder / 'manifest.json'} does not exist.")
    manifest = TrashManifest(folder, name)
    moves, back = [], []
    for entry in manifest.entries:
        if entry["state"] not in ("moved", "moving") or (batch is not None and entry.get("batch") != batch):
            continue
        src, trash = Path(entry["path"]), Path(entry["to"])
        if entry["state"] == "moving" and _resolve_interrupted(src, trash):
            entry.update(state="restored", note="the move was interrupted; the photo never left its place")
        elif not trash.exists():
            entry.update(state="lost-track", note=f"{trash} is not in the trash any more")
        else:
            target = src if not os.path.lexists(src) else _free(src, restored=True)
            try:
                move_file(trash, target)
            except (OSError, StorageError) as exc:
                entry["note"] = f"could not restore: {_reason(exc)}"
                moves.append(dict(entry))
                manifest.save()
                continue
            entry.update(state="restored", restored_to=str(target),
                         note="" if target == src else f"a file now sits at {src}; restored beside it as {target.name}")
            back.append(str(target))
        manifest.save()
        moves.append({**entry, "to": entry.get("restored_to", entry["path"])})
    line = "nothing restored"
    if back:
        line = add_paths(config, name, back, embedder=embedder).line()
    return MoveResult(moves, line)


def last_batch(config: Config, name: str) -> str | None:
    """The last clean-up of ``name`` that left photos in the trash (its ``batch``; "" for one recorded before
    batches were), or None when the trash holds none."""
    folder = trash_dir(read_state(config, name).table.image_root, name)
    if not (folder / "manifest.json").exists():
        return None
    batches = [e.get("batch") for e in TrashManifest(folder, name).entries if e["state"] in ("moved", "moving")]
    return (batches[-1] or "") if batches else None


def _resolve_interrupted(src: Path, trash: Path) -> bool:
    """An entry left ``moving`` (a crash): True when the photo is still at its place (a partial or complete
    copy in the trash is then removed only when it is byte-identical, never the original)."""
    if not os.path.lexists(src):
        return False
    with contextlib.suppress(FileNotFoundError):  # a copy cut short: never a photo, only our temp file
        trash.with_name(f".{trash.name}.moving.tmp").unlink()
    if trash.exists() and _same_bytes(src, trash):
        trash.unlink()
    return True


def move_file(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` (which must not exist): a rename, or across drives copy + fsync + rename, then
    remove ``src``. On failure ``src`` is where it was and no partial ``dst`` is left."""
    if not os.path.lexists(src):
        raise FileNotFoundError(errno.ENOENT, "the photo is gone", str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "the destination exists", str(dst))
    try:
        os.rename(src, dst)
        fsync_dir(dst.parent)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dst.with_name(f".{dst.name}.moving.tmp")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp)
        os.rename(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.unlink(src)  # only once the copy is durable
    fsync_dir(src.parent)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _inside(stored: str) -> str:
    """Where a stored path goes below the trash folder (absolute ones under ``abs/``)."""
    p = Path(stored)
    return ("abs" / Path(*p.parts[1:])).as_posix() if p.is_absolute() else p.as_posix()


def _free(path: Path, *, restored: bool = False) -> Path:
    """``path``, or ``NAME (N).ext`` / ``NAME (restored N).ext`` when something is there already."""
    if not restored and not os.path.lexists(path):
        return path
    for n in range(1, 10_000):
        tag = f"restored {n}" if restored else str(n)
        candidate = path.with_name(f"{path.stem} ({tag}){path.suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise DatasetError(f"Too many files named like {path}.")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StorageError):
        return exc.user_message()
    if isinstance(exc, OSError):
        return f"{os.strerror(exc.errno) if exc.errno else type(exc).__name__}"
    return str(exc)
