"""``verify``: the full check of a collection's files, which loading only samples.

Loading a collection checks what is cheap (:mod:`app.files.vector_file`: the vectors' header, size,
last chunk and a sample; :mod:`app.core.table_db`: the table's size and the rows it reads). This reads
everything: every chunk of the vectors against its checksum, SQLite's own ``integrity_check``, every
row of the table against its CRC, the table's count, model and fingerprint against the manifest,
and the index file against its checksum, caught up with the table. A build checks the same way
(``read_state(full_check=True)``) before it changes a collection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from app.config import Config
from app.core.table_db import TableReader
from app.errors import AppError
from app.index.faiss_update import catch_up
from app.service.collection_store import open_collection
from app.service.commit import files_of
from app.service.reindex import load_current_index


@dataclass
class VerifyReport:
    collection: str
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what was read, in order
    rows: int = 0
    count: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"collection": self.collection, "ok": self.ok, "problems": self.problems, "checked": self.checked,
                "rows": self.rows, "count": self.count, "seconds": round(self.seconds, 3)}


def verify_collection(config: Config, name: str) -> VerifyReport:
    """Every file of ``name`` read and checked; the problems found (none: the collection is sound)."""
    t0 = time.perf_counter()
    report = VerifyReport(name)
    store = open_collection(config, name)
    try:
        state = store.read_state(full_check=True)  # vectors: every chunk; the table: every row's CRC
        report.checked += ["manifest", "vectors (every chunk)", "table rows (every CRC)", "table vs manifest"]
        report.rows, report.count = len(state.table), state.table.live_count
        if state.manifest.table.endswith(".sqlite"):
            reader = TableReader(files_of(config, name).features_dir / state.manifest.table, state.manifest.generation)
            try:
                report.problems += [f"table: {p}" for p in reader.integrity_errors()]
            finally:
                reader.close()
            report.checked.append("table (SQLite integrity_check)")
        index = load_current_index(config.indexes_dir, name, state.manifest)  # checksum, dimension, count
        report.checked.append("index (checksum)")
        if state.manifest.index_rows is not None:
            catch_up(index, state.vectors, state.table.live_mask(), state.manifest.index_rows, name=name)
            report.checked.append("index caught up with the table")
    except AppError as exc:
        report.problems.append(exc.user_message())
    report.seconds = time.perf_counter() - t0
    return report
