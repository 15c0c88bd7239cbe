"""app.files.atomic: a file is either the old one or the complete new one, never half of either."""

from __future__ import annotations

import json
import os
import stat
import threading

import numpy as np
import pytest

from app.files.atomic import atomic_writer, write_bytes, write_json, write_npy
from tests.helpers import temp_files


def test_write_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("bug in the writer"), KeyboardInterrupt()])
def test_failure_mid_write_keeps_the_original(tmp_path, error):
    target = tmp_path / "index.faiss"
    write_bytes(target, b"original contents")
    with pytest.raises(type(error)):
        with atomic_writer(target) as fh:
            fh.write(b"half of the new con")
            raise error
    assert target.read_bytes() == b"original contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.faiss"]


def test_json_and_npy_round_trip(tmp_path):
    write_json(tmp_path / "m.json", {"name": "caltech101", "count": 3, "ids": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"name": "caltech101", "count": 3, "ids": [1, 2]}
    arr = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    write_npy(tmp_path / "v.npy", arr)
    loaded = np.load(tmp_path / "v.npy", allow_pickle=False)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, arr)
    with pytest.raises(ValueError):
        write_npy(tmp_path / "v.npy", np.array([object()], dtype=object))  # pickles are refused
    assert np.array_equal(np.load(tmp_path / "v.npy"), arr)
    assert temp_files(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_new_files_get_the_usual_permissions_and_replaced_files_keep_theirs(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_bytes(tmp_path / "new.bin", b"x")
    (tmp_path / "plain.bin").write_bytes(b"x")
    mode = stat.S_IMODE((tmp_path / "new.bin").stat().st_mode)
    # what a plain open() gives (0644 under the usual umask), not mkstemp's private 0600
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "kept.bin").write_bytes(b"old")
    os.chmod(tmp_path / "kept.bin", 0o640)
    write_bytes(tmp_path / "kept.bin", b"new")
    assert stat.S_IMODE((tmp_path / "kept.bin").stat().st_mode) == 0o640


def test_concurrent_writers_never_interleave(tmp_path):
    target = tmp_path / "shared.bin"
    payloads = [bytes([i]) * 200_000 for i in range(8)]

    def writer(data: bytes) -> None:
        for _ in range(5):
            write_bytes(target, data)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        if target.exists():
            seen.add(target.read_bytes() in payloads)
    for t in threads:
        t.join()
    assert target.read_bytes() in payloads
    assert seen <= {True}
    assert temp_files(tmp_path) == []
