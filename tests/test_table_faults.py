"""Issue 21: faults during an incremental change of the SQLite table and the append-only vectors.

A change appends rows to the vectors file, writes the table's difference in one SQLite transaction,
perhaps writes the index, then the manifest (the commit point: app/service/commit.py). Here a real
``add`` runs in a subprocess and is killed with SIGKILL at each step (a small driver wraps one function
to signal and wait; nothing in app/ knows about it), or meets a full disk inside SQLite. Each time the
collection loads and searches (the previous state, or the new one after the manifest), ``verify``
finds it sound, and the same change run again completes it.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import Config
from app.errors import StorageError
from app.service.build import BuildSpec, build_collection
from app.service.commit import read_state
from app.service.library import add_paths
from app.service.search import SearchService
from app.service.verify import verify_collection
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder, synthetic_image

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 120

DRIVER = '''
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
signal_file, point, indexes, features, new = Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]

def pause(*a, **k):
    signal_file.write_text("here")
    time.sleep(60)  # the test kills us now
    raise SystemExit("was not killed")

import app.core.table_db as table_db
import app.files.vector_file as vector_file
import app.service.commit as commit

def then_pause(real):
    return lambda *a, **k: (real(*a, **k), pause())

if point == "vectors-appended":
    vector_file.append_rows = then_pause(vector_file.append_rows)
elif point == "inside-transaction":  # the new rows inserted and spilled to the file, not committed
    real_connect = table_db._connect
    def small_cache(*a, **k):  # a one-page cache: changed pages go to the file (a hot journal) before COMMIT
        con = real_connect(*a, **k)
        con.execute("PRAGMA cache_size=1")
        return con
    table_db._connect = small_cache
    table_db._touched_rows = pause
elif point == "table-committed":
    commit.write_change = then_pause(commit.write_change)
elif point == "manifest-written":
    real = commit.write_json
    commit.write_json = lambda path, obj: (real(path, obj), pause() if str(path).endswith(".manifest.json") else None)
else:
    raise SystemExit("unknown point " + point)

from app.config import Config
from app.service.library import add_paths
from tests.fakes import FakeEmbedder
add_paths(Config(indexes_dir=Path(indexes), features_dir=Path(features), workers=0), "pics", [Path(p) for p in new],
          embedder=FakeEmbedder())
'''


@pytest.fixture
def built(tmp_path):
    root = tmp_path / "photos"
    make_image_folder(root, per_class=5, seed=21)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    build_collection(config, BuildSpec(kind="folder", data=root, name="pics", factory="IVF2,Flat", nprobe=2),
                     embedder=FakeEmbedder(), progress_bar=False)
    new = []
    for v in range(3):
        path = tmp_path / "later" / f"late_{v}.png"
        path.parent.mkdir(exist_ok=True)
        synthetic_image(v % 4, 50 + v, seed=9).save(path)
        new.append(path)
    return config, new


def sound(config: Config, count: int) -> None:
    """Loads, searches every valid item to itself, and verifies, with ``count`` valid images."""
    service = SearchService(config, embedder=FakeEmbedder())
    col = service.collection("pics")
    assert len(col) == count
    for i in col.live_ids[:: max(1, len(col) // 5)]:
        assert service.search_item("pics", int(i), k=1).hits[0].id == int(i)
    report = verify_collection(config, "pics")
    assert report.ok, report.problems


@pytest.mark.slow
@pytest.mark.parametrize("point", ["vectors-appended", "inside-transaction", "table-committed", "manifest-written"])
def test_kill_9_at_each_step_of_an_add_keeps_a_sound_collection(built, tmp_path, point):
    config, new = built
    before = read_state(config, "pics")
    signal_file = tmp_path / "signal"
    cmd = [sys.executable, "-c", DRIVER, str(ROOT), str(signal_file), point, str(config.indexes_dir),
           str(config.features_dir), *map(str, new)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT_S
    while not signal_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=WAIT_S)
    assert signal_file.exists(), err[-2000:]

    if point == "inside-transaction":  # a rollback journal is left: SQLite rolls the change back
        assert (config.features_dir / "pics.sqlite-journal").stat().st_size > 0
    committed = point == "manifest-written"
    sound(config, before.table.live_count + (3 if committed else 0))  # the old state, or the new one
    done = add_paths(config, "pics", new, embedder=FakeEmbedder())  # the same change again
    assert done.added == (0 if committed else 3)
    sound(config, before.table.live_count + 3)
    state = read_state(config, "pics", full_check=True)
    assert len(state.table) == len(before.table) + 3 and state.vectors.shape[0] == len(state.table)


def test_a_full_disk_inside_the_table_transaction_keeps_the_previous_state(built, monkeypatch):
    """SQLite meets a full disk mid-transaction: a StorageError that says so, the table rolled back, the
    collection as it was; with space again the same add completes."""
    import app.core.table_db as table_db

    config, new = built
    before = read_state(config, "pics")

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(table_db, "_touched_rows", full)
    with pytest.raises(StorageError, match="full"):
        add_paths(config, "pics", new, embedder=FakeEmbedder())
    monkeypatch.undo()
    sound(config, before.table.live_count)
    assert add_paths(config, "pics", new, embedder=FakeEmbedder()).added == 3
    sound(config, before.table.live_count + 3)
