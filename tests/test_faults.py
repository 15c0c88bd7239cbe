"""Issue 12, faults during a build: ``kill -9`` at each stage, a full disk, and no orphaned workers.

The builds are the real command line (``scripts/build_index.py``, untrained ResNet-50, offline) in a
subprocess, killed with SIGKILL at a point it signals through a file. Where no file appears on its own
at that point (training, the index write, the commit, the clean-up after it), a small driver runs the
same command with one function wrapped to create the signal file and wait to be killed; nothing in
app/ knows about it. A build writes the next generation's files, then the manifest (the commit point:
it names them, with their checksums), then removes the previous generation (app/service/commit.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import Config
from app.index.faiss_store import manifest_path
from app.service.build import BuildSpec, build_collection
from app.service.search import SearchService
from tests.helpers import make_image_folder, temp_files

ROOT = Path(__file__).resolve().parent.parent
NAME = "photos"
WAIT_S = 120

DRIVER = '''
import sys, time
from pathlib import Path

signal_file, point, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]

def pause():
    signal_file.write_text("here")
    time.sleep(60)  # the test kills us now
    raise SystemExit("was not killed")

import app.service.build as build
import app.service.commit as commit
from app.files.atomic import atomic_writer

if point == "training":  # every chunk of the features is saved, the index not made yet
    real_make_index = build.make_index
    build.make_index = lambda *a, **k: (pause(), real_make_index(*a, **k))[1]
elif point == "index-write":  # the next generation's features are written, half its index is in a temp file
    def write_bytes(path, data):
        with atomic_writer(path) as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            pause()
    commit.write_bytes = write_bytes
elif point == "committed":  # the manifest names the new generation; the old one's files are still there
    real_write_json = commit.write_json
    commit.write_json = lambda path, obj: (real_write_json(path, obj),
                                           pause() if str(path).endswith(".manifest.json") else None)
elif point == "cleanup":  # committed, and removing the previous generation's files
    commit.remove_stale_files = lambda *a: pause()
else:
    raise SystemExit(f"unknown point {point}")

from app.cli.main import main
sys.exit(main(["build", *args]))
'''


def build_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--kind", "folder", "--data", str(data), "--name", NAME, "--weights", "untrained",
            "--indexes", str(out / "indexes"), "--features", str(out / "features"), "--workers", "0",
            "--batch-size", "4", "--chunk-size", "8", "--factory", "IVF2,Flat", "--nprobe", "2", "--no-progress",
            *extra]


def run_build(data: Path, out: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "scripts/build_index.py", *build_args(data, out, "--json")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def kill_when(cmd: list[str], signal_file: Path, env: dict[str, str]) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``signal_file`` exists (bounded wait)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT_S
    while not signal_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=WAIT_S)
    assert signal_file.exists(), f"the build never reached the kill point: {err[-2000:]}"
    assert proc.returncode == -signal.SIGKILL, err[-2000:]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, int]:
    """A folder of 32 images plus 2 that are not valid images: (folder, number of valid images)."""
    root = tmp_path_factory.mktemp("faults") / "photos"
    files = make_image_folder(root, per_class=8, size=(48, 36), seed=31)
    (root / "circles" / "notes.jpg").write_text("not a picture\n")
    (root / "squares" / "cut.png").write_bytes(files[2].read_bytes()[:60] if files[2].suffix == ".png" else b"\x89PNG")
    return root, len(files)


@pytest.fixture(scope="module")
def previous(tmp_path_factory, photos, embedder, model_cache) -> Path:
    """The collection as an earlier build left it: 12 of the images."""
    out = tmp_path_factory.mktemp("previous")
    config = Config(indexes_dir=out / "indexes", features_dir=out / "features", cache_dir=model_cache,
                    weights="untrained", workers=0)
    build_collection(config, BuildSpec(kind="folder", data=photos[0], name=NAME, limit=12, factory="IVF2,Flat",
                                       nprobe=2, chunk_size=8), embedder=embedder, progress_bar=False)
    return out


@pytest.fixture(scope="module")
def all_chunks(tmp_path_factory, photos, previous, cli_env) -> Path:
    """Every chunk of the new build's features, as a build killed after extraction leaves them."""
    out = tmp_path_factory.mktemp("chunks")
    shutil.copytree(previous, out, dirs_exist_ok=True)
    kill_when([sys.executable, "-c", DRIVER, str(out / "signal"), "training", *build_args(photos[0], out)],
              out / "signal", cli_env)
    return out / "features" / f"{NAME}.parts"


def only_current_files(out: Path) -> bool:
    """The collection's data files are exactly those its manifest names (no stale generation is left)."""
    from app.service.commit import files_of

    m = json.loads(manifest_path(out / "indexes", NAME).read_text())
    config = Config(indexes_dir=out / "indexes", features_dir=out / "features")
    named = {out / "features" / m["features"], out / "features" / m["table"], out / "indexes" / m["index_file"]}
    return set(files_of(config, NAME).data_files()) == named and all(p.is_file() for p in named)


def collection(out: Path, embedder):
    config = Config(indexes_dir=out / "indexes", features_dir=out / "features", weights="untrained")
    service = SearchService(config, embedder=embedder)
    info = {i.name: i for i in service.collections()}[NAME]
    assert info.ready, info.reason
    hits = service.search_item(NAME, 1, k=3).hits
    assert hits[0].id == 1 and hits[0].score == pytest.approx(1.0, abs=1e-3)
    return info


@pytest.mark.slow
@pytest.mark.parametrize("point", ["extraction", "training", "index-write", "committed", "cleanup"])
def test_kill_9_at_each_stage_keeps_a_loadable_collection_and_the_rerun_resumes(
        tmp_path, photos, previous, all_chunks, cli_env, embedder, point):
    data, valid = photos
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    before = json.loads(manifest_path(out / "indexes", NAME).read_text())
    signal_file = tmp_path / "signal"
    if point == "extraction":  # the first saved chunk is the signal
        signal_file = out / "features" / f"{NAME}.parts" / "chunk-000000.npz"
        cmd = [sys.executable, "scripts/build_index.py", *build_args(data, out)]
    else:  # from every chunk, as a build that got past extraction
        shutil.copytree(all_chunks, out / "features" / f"{NAME}.parts")
        cmd = [sys.executable, "-c", DRIVER, str(signal_file), point, *build_args(data, out)]
    kill_when(cmd, signal_file, cli_env)

    committed = point in ("committed", "cleanup")
    after = json.loads(manifest_path(out / "indexes", NAME).read_text())
    assert (after["index_sha256"] != before["index_sha256"]) == committed
    info = collection(out, embedder)  # the app can open it right now: the previous build, or the new one
    assert info.size == (valid if committed else before["count"])

    result = run_build(data, out, cli_env)
    total = valid + 2
    if point == "extraction":
        assert 8 <= result["stats"]["resumed_rows"] < total
    elif committed:  # the new collection is in place: the re-run finds nothing to do (and removes the leftovers)
        assert result["stats"]["incremental"] and result["stats"]["embedded"] == 0
    else:
        assert result["stats"]["resumed_rows"] == total  # nothing embedded again
    assert result["manifest"]["count"] == valid == collection(out, embedder).size
    assert sorted(s["path"] for s in result["skipped"]) == ["circles/notes.jpg", "squares/cut.png"]
    assert temp_files(out) == [] and only_current_files(out)
    assert not (out / "features" / f"{NAME}.parts").exists()


@pytest.mark.parametrize("target", ["chunk-000001.npz", f"{NAME}.g1.npy", f"{NAME}.g1.faiss", f"{NAME}.manifest.json"])
def test_a_full_disk_keeps_the_previous_collection_and_says_so(tmp_path, photos, previous, cli_env, embedder,
                                                               monkeypatch, capsys, target):
    """ENOSPC from the write itself (app/files/atomic.py's file), at each file a build writes."""
    import app.files.atomic as atomic
    from app.cli.main import main

    out = tmp_path / "out"
    shutil.copytree(previous, out)
    before = json.loads(manifest_path(out / "indexes", NAME).read_text())
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    class OsWithFullDisk:  # app.files.atomic's os, whose temp files for ``target`` cannot grow
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fdopen(fd, *args, **kwargs):
            fh = real_fdopen(fd, *args, **kwargs)
            return FullDisk(fh) if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{target}.") else fh

    monkeypatch.setattr(atomic, "os", OsWithFullDisk())
    monkeypatch.setenv("XDG_CACHE_HOME", cli_env["XDG_CACHE_HOME"])
    code = main(["build", *build_args(photos[0], out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0].lower(), err
    assert "free some space" in errors[0].lower() and "run the same command again" in errors[0]
    assert temp_files(out) == []
    assert json.loads(manifest_path(out / "indexes", NAME).read_text()) == before
    assert collection(out, embedder).size == before["count"]  # the previous collection, as it was

    monkeypatch.undo()  # space again: the same command finishes
    monkeypatch.setenv("XDG_CACHE_HOME", cli_env["XDG_CACHE_HOME"])
    assert main(["build", *build_args(photos[0], out)]) == 0
    assert collection(out, embedder).size == photos[1]
    assert temp_files(out) == [] and only_current_files(out)


# -- no orphaned workers ---------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent PID, state letter) of a live process, or None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[1]), fields[0]) if fields[0] not in ("Z", "X") else None


def _processes_of(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker`` (a path only this build uses)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and _proc_stat(int(entry.name)) is not None:
                found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[0] == pid:
                out.append(int(entry.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_a_build_leaves_no_worker_behind(tmp_path, cli_env):
    data = tmp_path / "many"
    make_image_folder(data, per_class=50, size=(64, 48), seed=5)  # 200 images
    out = tmp_path / "out"
    cmd = [sys.executable, "scripts/build_index.py", *build_args(data, out)]
    cmd[cmd.index("--workers") + 1] = "2"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_chunk = out / "features" / f"{NAME}.parts" / "chunk-000000.npz"
    deadline = time.monotonic() + WAIT_S
    workers: list[int] = []
    while proc.poll() is None and time.monotonic() < deadline and not (first_chunk.exists() and len(workers) >= 2):
        workers = _children(proc.pid)
        time.sleep(0.02)
    assert proc.poll() is None and len(workers) >= 2, "the build did not start its decoding workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=WAIT_S)
    killed = time.monotonic()
    left = workers
    while left and time.monotonic() - killed < 10:
        time.sleep(0.05)
        left = [w for w in workers if _proc_stat(w) is not None] + _processes_of(str(data))
    gone_after = time.monotonic() - killed
    assert left == [], f"still running {gone_after:.1f} s after the kill: {left}"
    print(f"{len(workers)} workers gone {gone_after:.2f} s after the kill")
    assert gone_after < 3.0  # well before torch's own 5 s check would notice
