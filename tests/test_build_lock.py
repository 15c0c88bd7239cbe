"""Issue 12, two builders of one collection: the second refuses, naming the lock and the holder's PID;
a lock left by a killed process is taken over (app/files/lock.py, called by build_collection)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import Config
from app.errors import BuildLockedError
from app.files.lock import exclusive_lock, holder_pid, pid_alive
from app.service.build import BuildSpec, build_collection
from app.service.search import SearchService
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 30

# Takes the lock on argv[1], optionally forks a child that sleeps on (argv[2] == "fork"), says so on
# stdout, then sleeps until it is killed (at most 60 s).
HOLDER = """
import os, sys, time
from app.files.lock import exclusive_lock
with exclusive_lock(sys.argv[1], what="The test collection"):
    ready_r, ready_w = os.pipe()
    child = os.fork() if sys.argv[2] == "fork" else -1
    if child == 0:
        os.write(ready_w, b"x")  # fork() has returned here, so the at-fork hooks have run
        time.sleep(60)
        os._exit(0)
    if child > 0:
        os.read(ready_r, 1)
    print(f"locked {child}", flush=True)
    time.sleep(60)
"""


def start_holder(lock: Path, env: dict[str, str], fork: bool = False) -> tuple[subprocess.Popen, int]:
    """A separate process holding ``lock``; returns it and the PID of its forked child (or -1)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "fork" if fork else "-"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # bounded: the holder prints at once, or exits (EOF)
    assert line.startswith("locked"), line
    return proc, int(line.split()[1])


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=WAIT_S)


@pytest.fixture
def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "photos"
    make_image_folder(data, classes=("circles", "stripes"), per_class=3, seed=8)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    spec = BuildSpec(kind="folder", data=data, name="mine", factory="Flat")
    return config, spec, config.indexes_dir / "mine.lock"


def build(config: Config, spec: BuildSpec):
    return build_collection(config, spec, embedder=FakeEmbedder(), progress_bar=False)


def test_a_second_builder_is_refused_naming_the_lock_and_the_holder(setup, env):
    config, spec, lock = setup
    holder, _ = start_holder(lock, env)
    try:
        start = time.monotonic()
        with pytest.raises(BuildLockedError) as info:
            build(config, spec)
        assert time.monotonic() - start < 5  # refused at once, not after waiting
        error = info.value
        assert error.pid == holder.pid and error.path == str(lock)
        message = error.user_message()
        assert f"process {holder.pid}" in message and str(lock) in message and "mine" in message
        assert "wait for it to finish" in message and "\n" not in message
        assert not (config.features_dir / "mine.parts").exists()  # refused before any work
    finally:
        kill(holder)
    assert build(config, spec).manifest.count == 6  # free again once the holder is gone


def test_a_lock_left_by_a_killed_builder_is_taken_over(setup, env):
    config, spec, lock = setup
    holder, _ = start_holder(lock, env)
    dead = holder.pid
    kill(holder)
    assert holder_pid(lock) == dead and not pid_alive(dead)  # the file still names the dead process
    result = build(config, spec)
    assert result.manifest.count == 6
    assert holder_pid(lock) is None  # released, and cleared, at the end of the build
    assert SearchService(config, embedder=FakeEmbedder()).search_item("mine", 0, k=3).hits[0].id == 0


def test_a_lock_file_naming_a_dead_pid_does_not_block(setup):
    config, spec, lock = setup
    lock.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    lock.write_text(f"{dead}\n")
    assert build(config, spec).manifest.count == 6


def test_a_forked_child_that_outlives_the_holder_does_not_keep_the_lock(tmp_path, env):
    """DataLoader workers are forked children: the lock must die with the builder, not with them."""
    lock = tmp_path / "c.lock"
    holder, child = start_holder(lock, env, fork=True)
    try:
        assert child > 0 and pid_alive(child)
        with pytest.raises(BuildLockedError):
            with exclusive_lock(lock, what="c"):
                pass
        kill(holder)
        assert pid_alive(child)  # the child lives on (re-parented) ...
        with exclusive_lock(lock, what="c") as held:  # ... and the lock is free
            assert holder_pid(held) == os.getpid()
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_the_cli_prints_one_line_and_exits_2_when_locked(setup, env, capsys):
    from app.cli.main import main

    config, spec, lock = setup  # refused before the model is loaded: no ONNX export needed
    holder, _ = start_holder(lock, env)
    try:
        code = main(["build", "--kind", "folder", "--data", str(spec.data), "--name", "mine", "--weights",
                     "untrained", "--indexes", str(config.indexes_dir), "--features", str(config.features_dir),
                     "--workers", "0", "--factory", "Flat", "--no-progress"])
    finally:
        kill(holder)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"locked by process {holder.pid}" in errors[0] and str(lock) in errors[0]
