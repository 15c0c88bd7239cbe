"""The feature table in SQLite (``features/NAME.sqlite``): one row per item id, written by the change.

**Versioned rows.** Each row records the generation that ``added`` it and the one that ``deleted`` it
(a tombstone); ``excluded`` paths likewise (``added``, ``removed``); ``head`` holds each generation's
collection fields (name, kind, roots, model, fingerprint, skipped...). A reader asks for the
generation its manifest names and sees exactly that state, whatever a later change has written
since: the manifest stays the one commit point (:mod:`app.service.commit`). A change runs in one
SQLite transaction: it first removes what a change that never reached its manifest left (rows and
heads of later generations), then inserts only the new rows, marks only the newly deleted ones, and
updates in place only the rows whose stamp or ``meta`` it learned (facts about the same file). A
kill at any moment leaves the previous state or, after the manifest, the new one.

**Startup reads only what it needs**: :func:`read_table` with ``lazy=True`` reads the head and the
deleted ids; paths, labels, stamps and ``meta`` are read per id when a hit shows them, or a column
at once when something walks it (:class:`LazyColumn`).

The schema is versioned (``PRAGMA user_version``, :data:`SCHEMA_VERSION`) with a migration per
version in :data:`SCHEMA_MIGRATIONS`, as rclip does. The JSON tables of earlier versions are read by
:mod:`app.core.feature_table` and become an SQLite table at their collection's next change.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from app.core.scan import FileStamp
from app.errors import IndexMismatchError, StorageError
from app.files.atomic import fsync_dir, storage_error

if TYPE_CHECKING:
    from app.core.feature_table import FeatureTable

SCHEMA_VERSION = 1
LABEL_SEP = "\x1f"  # labels of a row, joined (unit separator: never in a folder name)

_SCHEMA = """
CREATE TABLE head (generation INTEGER PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, labels TEXT NOT NULL,
    size INTEGER, mtime_ns INTEGER, hash TEXT, meta TEXT,
    added INTEGER NOT NULL, deleted INTEGER, crc INTEGER NOT NULL);
CREATE INDEX items_deleted ON items(deleted) WHERE deleted IS NOT NULL;
CREATE TABLE excluded (path TEXT NOT NULL, added INTEGER NOT NULL, removed INTEGER);
"""

# version -> the SQL that brings a table of that version to the next (none yet: version 1 is the first)
SCHEMA_MIGRATIONS: dict[int, str] = {}

HEAD_KEYS = ("name", "kind", "dataset_root", "image_root", "weights_id", "dim", "fingerprint", "created", "skipped")


class TableSnapshot:
    """What a table held when it was read from SQLite (row lists copied, not their values): a change is
    written as its difference from this."""

    def __init__(self, table: "FeatureTable", generation: int) -> None:
        self.generation = generation
        self.rows = len(table.paths)
        self.paths, self.labels = list(table.paths), list(table.labels)
        self.stamps, self.meta = list(table.stamps), list(table.meta)
        self.deleted = set(table.deleted)
        self.excluded = list(table.excluded)


class LazyColumn:
    """A read-only column of the table, read per row on demand, or whole the first time it is walked."""

    def __init__(self, fetch_one: Callable[[int], Any], fetch_all: Callable[[], list[Any]], rows: int) -> None:
        self._one, self._all, self._rows = fetch_one, fetch_all, rows
        self._cache: list[Any] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._rows

    def _whole(self) -> list[Any]:
        with self._lock:
            if self._cache is None:
                self._cache = self._all()
            return self._cache

    def __getitem__(self, i):
        if self._cache is not None or isinstance(i, slice):
            return self._whole()[i]
        i = int(i)
        if i < 0:
            i += self._rows
        if not 0 <= i < self._rows:
            raise IndexError(i)
        return self._one(i)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._whole())

    def __bool__(self) -> bool:
        return self._rows > 0


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection to an existing table. A reader opens it read-write when it may (it only reads): the
    rollback journal of a change killed mid-commit is then rolled back by SQLite on the first read, which
    a read-only connection cannot do; a folder it may not write is opened read-only."""
    modes = ("rw", "ro") if readonly else ("rw",)
    for mode in modes:
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, check_same_thread=False,
                                  timeout=30.0, isolation_level=None)
            con.execute("PRAGMA synchronous=FULL")
            return con
        except sqlite3.OperationalError:
            if mode == modes[-1]:
                raise
    raise AssertionError("unreachable")


REBUILD = "python -m app.cli verify checks it; rebuild the collection if it is damaged."


def _db_error(path: Path, exc: Exception, hint: str = REBUILD) -> IndexMismatchError:
    return IndexMismatchError(f"The feature table {path.name} is unreadable ({exc}).", hint=hint)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection in one IMMEDIATE transaction, committed on a clean exit, rolled back otherwise."""
    try:
        con = _connect(path, readonly=False)
    except sqlite3.Error as exc:
        raise _db_error(path, exc) from exc
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        if "disk" in str(exc) or "full" in str(exc):
            raise StorageError(f"The disk holding {path.parent} is full: {path.name} was not changed.",
                               hint="Free some space and run it again.") from exc
        raise _db_error(path, exc) from exc
    except sqlite3.DatabaseError as exc:
        raise _db_error(path, exc) from exc
    finally:
        con.close()


def _migrate(con: sqlite3.Connection, path: Path) -> None:
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if not 1 <= version <= SCHEMA_VERSION:
        raise IndexMismatchError(f"The feature table {path.name} has schema version {version}; this app reads 1 to "
                                 f"{SCHEMA_VERSION}.", hint="Update the app, or rebuild the collection.")
    while version < SCHEMA_VERSION:
        con.executescript(SCHEMA_MIGRATIONS[version])
        version += 1
        con.execute(f"PRAGMA user_version={version}")


# -- writing ---------------------------------------------------------------------------------------


def _head_json(table: "FeatureTable") -> str:
    return json.dumps({k: getattr(table, k) for k in HEAD_KEYS} | {"rows": len(table.paths),
                                                                     "count": table.live_count})


CONTENT = "id, path, labels, size, mtime_ns, hash, meta"  # what a row's crc covers


def row_crc(content: tuple[Any, ...]) -> int:
    """The CRC-32 of a row's content (:data:`CONTENT`): ``verify`` and every read of the row check it."""
    return zlib.crc32("\0".join("" if v is None else str(v) for v in content).encode("utf-8", "surrogateescape"))


def _row(i: int, table: "FeatureTable", generation: int) -> tuple[Any, ...]:
    st, meta = table.stamps[i], table.meta[i]
    content = (i, table.paths[i], LABEL_SEP.join(table.labels[i]), st.size if st else None,
               st.mtime_ns if st else None, st.hash if st else None, json.dumps(meta) if meta is not None else None)
    return (*content, generation, generation if i in table.deleted else None, row_crc(content))


def create_table_db(path: str | os.PathLike[str], table: "FeatureTable", generation: int) -> None:
    """Write ``table`` as a new SQLite table at ``path`` (a temp file, fsynced, then renamed): every row
    added in ``generation``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise (storage_error(exc, path) or exc) from exc
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=OFF")  # a temp file: nothing to roll back to
            con.executescript(_SCHEMA)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            con.execute("BEGIN")
            con.executemany("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (_row(i, table, generation) for i in range(len(table.paths))))
            con.executemany("INSERT INTO excluded VALUES (?,?,NULL)", ((p, generation) for p in table.excluded))
            con.execute("INSERT INTO head VALUES (?,?)", (generation, _head_json(table)))
            con.execute("COMMIT")
        finally:
            con.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except sqlite3.OperationalError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f"Could not write {path.name} ({exc}).", hint="Free some disk space and run it again.") from exc
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and storage_error(exc, path) is not None:
            raise storage_error(exc, path) from exc
        raise


def write_change(path: str | os.PathLike[str], table: "FeatureTable", generation: int) -> dict[str, int]:
    """Write ``table`` as generation ``generation`` of the SQLite table it was read from (``table.origin``),
    in one transaction, as its difference from what was read. Returns what was written (row counts)."""
    path, old = Path(path), table.origin
    if old is None:
        raise ValueError("a change needs the table it was read from")
    with _writing(path) as con:
        _migrate(con, path)
        g0 = old.generation
        # what a change that never reached its manifest left behind
        con.execute("DELETE FROM items WHERE added > ?", (g0,))
        con.execute("UPDATE items SET deleted = NULL WHERE deleted > ?", (g0,))
        con.execute("DELETE FROM excluded WHERE added > ?", (g0,))
        con.execute("UPDATE excluded SET removed = NULL WHERE removed > ?", (g0,))
        con.execute("DELETE FROM head WHERE generation > ?", (g0,))
        con.execute("DELETE FROM head WHERE generation < (SELECT max(generation) FROM head)")
        new_rows = range(old.rows, len(table.paths))
        con.executemany("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?,?)", (_row(i, table, generation) for i in new_rows))
        if old.deleted - table.deleted:
            raise ValueError("a deleted item cannot come back (ids are never reused)")
        gone = sorted(i for i in table.deleted - old.deleted if i < old.rows)
        con.executemany("UPDATE items SET deleted = ? WHERE id = ?", ((generation, i) for i in gone))
        touched = _touched_rows(table, old)
        con.executemany("UPDATE items SET path=?, labels=?, size=?, mtime_ns=?, hash=?, meta=?, crc=? WHERE id=?",
                        (_row(i, table, generation)[1:7] + _row(i, table, generation)[9:] + (i,) for i in touched))
        was, now = set(old.excluded), set(table.excluded)
        con.executemany("INSERT INTO excluded VALUES (?,?,NULL)", ((p, generation) for p in table.excluded if p not in was))
        con.executemany("UPDATE excluded SET removed = ? WHERE path = ? AND removed IS NULL",
                        ((generation, p) for p in old.excluded if p not in now))
        con.execute("INSERT INTO head VALUES (?,?)", (generation, _head_json(table)))
    return {"inserted": len(new_rows), "deleted": len(gone), "updated": len(touched)}


def _touched_rows(table: "FeatureTable", old: TableSnapshot) -> list[int]:
    """Rows read from the table whose path, labels, stamp or meta the change replaced."""
    out = []
    for i in range(old.rows):
        if (table.stamps[i] is not old.stamps[i] or table.meta[i] is not old.meta[i]
                or table.paths[i] is not old.paths[i] or table.labels[i] is not old.labels[i]):
            if (table.stamps[i], table.meta[i], table.paths[i], table.labels[i]) != (
                    old.stamps[i], old.meta[i], old.paths[i], old.labels[i]):
                out.append(i)
    return out


# -- reading ---------------------------------------------------------------------------------------


class TableReader:
    """One SQLite table opened read-only at one generation (what a loaded collection keeps)."""

    def __init__(self, path: str | os.PathLike[str], generation: int, *, hint: str = REBUILD) -> None:
        self.path, self.generation, self.hint = Path(path), generation, hint
        self._lock = threading.Lock()
        self.check_size()
        try:
            self._con = _connect(self.path, readonly=True)
            self._check_schema()
            # the head of the last change at or before ``generation`` (a manifest-only change, such as a
            # retuned index, moves the generation on without writing the table)
            row = self._con.execute("SELECT info FROM head WHERE generation <= ? ORDER BY generation DESC LIMIT 1",
                                    (generation,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.path, exc, self.hint) from exc
        if row is None:
            raise IndexMismatchError(f"The feature table {self.path.name} has no generation {generation} (its manifest "
                                     "names one it does not hold).", hint=self.hint)
        self.head: dict[str, Any] = json.loads(row[0])
        self.rows = int(self.head["rows"])

    def _check_schema(self) -> None:
        version = self._con.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise IndexMismatchError(f"The feature table {self.path.name} has schema version {version}; this app "
                                     f"reads {SCHEMA_VERSION} (a change migrates older ones).",
                                     hint=self.hint)

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._con.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.path, exc, self.hint) from exc

    def deleted(self) -> set[int]:
        g = self.generation
        return {r[0] for r in self.query("SELECT id FROM items WHERE deleted IS NOT NULL AND deleted <= ? AND id < ?",
                                          (g, self.rows))}

    def excluded(self) -> list[str]:
        g = self.generation
        return [r[0] for r in self.query("SELECT path FROM excluded WHERE added <= ? AND (removed IS NULL OR removed > ?) "
                                         "ORDER BY rowid", (g, g))]

    def _checked(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """``rows`` (CONTENT + crc), refused when one does not match its crc."""
        for r in rows:
            if row_crc(r[:-1]) != r[-1]:
                raise IndexMismatchError(f"The feature table {self.path.name} is corrupted (row {r[0]} does not match "
                                         "its checksum).", hint=self.hint)
        return rows

    def rows_checked(self, *, check: bool = True) -> list[tuple[Any, ...]]:
        """Every row of this generation (CONTENT + crc), each checked against its crc (``check``; else the
        row count only: a change reads every row, ``verify`` and a build check them)."""
        rows = self.query(f"SELECT {CONTENT}, crc FROM items WHERE id < ? ORDER BY id", (self.rows,))
        if len(rows) != self.rows or (rows and rows[-1][0] != self.rows - 1):
            raise IndexMismatchError(f"The feature table {self.path.name} has {len(rows)} rows, not {self.rows}.",
                                     hint=self.hint)
        return self._checked(rows) if check else rows

    def column(self, field: int, convert: Callable[[tuple[Any, ...]], Any]) -> LazyColumn:
        """Column ``field`` of :data:`CONTENT` onwards (``convert`` gets the row from there)."""
        def one(i: int) -> Any:
            found = self._checked(self.query(f"SELECT {CONTENT}, crc FROM items WHERE id = ?", (i,)))
            if not found:
                raise IndexMismatchError(f"The feature table {self.path.name} has no row {i}.",
                                         hint=self.hint)
            return convert(found[0][field:])

        return LazyColumn(one, lambda: [convert(r[field:]) for r in self.rows_checked()], self.rows)

    def check_size(self) -> None:
        """Refuse a file cut short: smaller than the page count its header records (no page is read)."""
        with open(self.path, "rb") as fh:
            header = fh.read(100)
        if len(header) < 100:
            raise IndexMismatchError(f"The feature table {self.path.name} is cut short.", hint=self.hint)
        page = int.from_bytes(header[16:18], "big")
        page = 65536 if page == 1 else page
        # the fields SQLite fixes (file format 3.0.0: the magic, the payload fractions 64/32/32) and the ones
        # this app never changes (no reserved bytes per page)
        if (header[:16] != b"SQLite format 3\0" or header[21:24] != bytes([64, 32, 32]) or header[20] != 0
                or page & (page - 1) or not 512 <= page <= 65536):
            raise IndexMismatchError(f"The feature table {self.path.name} is corrupted (its header).", hint=self.hint)
        pages = int.from_bytes(header[28:32], "big")
        if self.path.stat().st_size < page * pages:
            raise IndexMismatchError(f"The feature table {self.path.name} is cut short ({self.path.stat().st_size} bytes "
                                     f"of {page * pages}).", hint=self.hint)

    def integrity_errors(self) -> list[str]:
        """SQLite's own full check (``PRAGMA integrity_check``): empty when the file is sound."""
        rows = [r[0] for r in self.query("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def close(self) -> None:
        with self._lock:
            self._con.close()


def labels_of(r: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(r[0].split(LABEL_SEP)) if r[0] else ()


def stamp_of(r: tuple[Any, ...]) -> FileStamp | None:
    return None if r[0] is None or r[1] is None else FileStamp(int(r[0]), int(r[1]), r[2] or "")


def meta_of(r: tuple[Any, ...]) -> dict[str, Any] | None:
    return json.loads(r[0]) if r[0] else None
