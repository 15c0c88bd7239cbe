"""Issue 19, filters and meaning: each photo's capture date (EXIF DateTimeOriginal, else the file time)
and camera are recorded at build time (feature table format 3, migrated from 2); a search limited to a
folder, a date range or a camera returns k hits inside the filter even when most of the collection lies
outside it; scores come with bands, and a cut-off drops hits below one."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from app.config import Config
from app.core.feature_table import TABLE_FORMAT, FeatureTable
from app.core.photo_meta import read_photo_meta
from app.errors import AppError
from app.service.commit import read_state
from app.service.filters import band, parse_filter
from app.service.library import index_folder, update_collection
from app.service.search import SearchService
from tests.fakes import FakeEmbedder
from tests.helpers import synthetic_image
from tests.test_cli import run


def photo(path: Path, seed: int, *, taken: str | None = None, camera: tuple[str, str] | None = None,
          mtime: str | None = None) -> Path:
    """A JPEG with EXIF DateTimeOriginal ``taken`` ("2021:07:04 12:30:05") and Make/Model, or none;
    ``mtime`` ("2018-05-01") sets the file time."""
    exif = Image.Exif()
    if camera:
        exif[0x010F], exif[0x0110] = camera
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_image(seed % 4, seed, seed=7).save(path, "JPEG", quality=90, exif=exif.tobytes())
    if mtime:
        t = datetime.fromisoformat(mtime).timestamp()
        os.utime(path, (t, t))
    return path


def library(root: Path) -> dict[str, int]:
    """36 photos: 30 at home (2019), 6 on trips: 3 taken in 2021 (two on an iPhone), 3 in 2018 (file time)."""
    for i in range(30):
        photo(root / "home" / f"h{i:02d}.jpg", i, taken="2019:03:01 10:00:00", camera=("Canon", "Canon EOS R5"))
    photo(root / "trips" / "t0.jpg", 40, taken="2021:07:04 12:30:05", camera=("Apple", "iPhone 12"))
    photo(root / "trips" / "t1.jpg", 41, taken="2021:08:01 09:00:00", camera=("Apple", "iPhone 12"))
    photo(root / "trips" / "2021" / "t2.jpg", 42, mtime="2021-12-31T23:00:00")
    for i in range(3):
        photo(root / "trips" / f"old{i}.jpg", 50 + i, mtime="2018-05-01T08:00:00")
    return {"inside": 3}


def test_capture_time_and_camera_are_read_from_exif_else_the_file_time(tmp_path):
    with_exif = photo(tmp_path / "a.jpg", 1, taken="2021:07:04 12:30:05", camera=("NIKON CORPORATION", "NIKON D850"))
    assert read_photo_meta(with_exif) == {"taken": "2021-07-04T12:30:05", "taken_from": "exif", "camera": "NIKON D850"}
    plain = photo(tmp_path / "b.jpg", 2, mtime="2018-05-01T08:00:00")
    assert read_photo_meta(plain) == {"taken": "2018-05-01T08:00:00", "taken_from": "file time", "camera": None}
    bad = photo(tmp_path / "c.jpg", 3, taken="0000:00:00 00:00:00", mtime="2017-01-02T03:04:05")
    assert read_photo_meta(bad)["taken_from"] == "file time"  # cameras write zeros when the clock was not set
    assert read_photo_meta(tmp_path / "missing.jpg") == {"taken": None, "taken_from": "unknown", "camera": None}


def test_a_format_2_table_migrates_and_the_next_update_records_the_metadata(tmp_path):
    root = tmp_path / "photos"
    library(root)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    index_folder(config, "mine", root, embedder=FakeEmbedder())
    state = read_state(config, "mine")
    meta = dict(zip(state.table.paths, state.table.meta, strict=True))
    assert meta["trips/t0.jpg"] == {"taken": "2021-07-04T12:30:05", "taken_from": "exif", "camera": "Apple iPhone 12"}
    assert meta["trips/old0.jpg"]["taken"] == "2018-05-01T08:00:00"

    table_path = config.features_dir / "mine.json"  # as the format-2 code wrote it: a JSON document
    obj = state.table.to_json()
    assert obj["format"] == TABLE_FORMAT == 3
    for item in obj["items"]:
        item.pop("meta")
    obj["format"] = 2
    migrated = FeatureTable.from_json(obj)
    assert migrated.meta == [None] * len(migrated) and migrated.to_json()["format"] == 3
    table_path.write_text(json.dumps(obj))
    manifest_path = config.indexes_dir / "mine.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(table=table_path.name)
    for key in ("table_sha256", "features_chunks", "index_rows", "index_count"):
        manifest.pop(key, None)
    manifest_path.write_text(json.dumps(manifest))
    assert update_collection(config, "mine", embedder=FakeEmbedder()).line() == \
        "added 0, changed 0, removed 0, unchanged 36"
    again = read_state(config, "mine").table
    assert dict(zip(again.paths, again.meta, strict=True)) == meta


def test_a_filtered_search_returns_k_hits_inside_the_filter_and_bands_cut_off(tmp_path):
    root = tmp_path / "photos"
    library(root)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    index_folder(config, "mine", root, embedder=FakeEmbedder())
    service = SearchService(config, embedder=FakeEmbedder())
    query = root / "home" / "h00.jpg"  # a home photo: its nearest neighbours are all at home
    result = service.search_new_image(query, "mine", 3, where=parse_filter(since="2020-01-01", folder="trips"))
    assert [h.path for h in result.hits] and result.matching == 3
    assert sorted(h.path for h in result.hits) == ["trips/2021/t2.jpg", "trips/t0.jpg", "trips/t1.jpg"]
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    iphone = service.search_new_image(query, "mine", 5, where=parse_filter(camera="iphone"))
    assert sorted(h.path for h in iphone.hits) == ["trips/t0.jpg", "trips/t1.jpg"]
    until = service.search_new_image(query, "mine", 20, where=parse_filter(until="2018-12-31"))
    assert sorted(h.path for h in until.hits) == [f"trips/old{i}.jpg" for i in range(3)]
    same = service.search_new_image(query, "mine", 5, where=parse_filter(min_band="same photo"))
    assert [h.path for h in same.hits][:1] == ["home/h00.jpg"] and all(h.score >= 0.95 for h in same.hits)
    assert same.hits[0].band == "same photo"
    by_item = service.search_item("mine", same.hits[0].id, 3, where=parse_filter(folder="trips"))
    assert by_item.matching == 6 and all(h.path.startswith("trips/") for h in by_item.hits)


def test_bands_and_bad_filters():
    assert [band(s) for s in (0.99, 0.8, 0.65, 0.2)] == ["same photo", "very similar", "similar", "loosely related"]
    for kwargs, fragment in (({"since": "2020-13-01"}, "YYYY-MM-DD"), ({"since": "2021-01-01", "until": "2020-01-01"},
                             "after"), ({"min_band": "great"}, "Unknown band")):
        with pytest.raises(AppError, match=fragment):
            parse_filter(**kwargs)


def test_search_command_since_and_folder_json(tmp_path, cli_env):
    root = tmp_path / "photos"
    library(root)
    out = ["--indexes", str(tmp_path / "indexes"), "--features", str(tmp_path / "features"), "--weights", "untrained"]
    built = run(["scripts/build_index.py", "--kind", "folder", "--data", str(root), "--name", "mine",
                 "--workers", "0", "--factory", "Flat", "--no-progress", *out], cli_env)
    assert built.returncode == 0, built.stderr
    start = time.monotonic()
    proc = run(["-m", "app.cli", "search", str(root / "home" / "h01.jpg"), "--collection", "mine", "-k", "3",
                "--since", "2020-01-01", "--folder", "trips", "--json", *out], cli_env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert len(result["hits"]) == 3 and result["matching"] == 3, result
    for hit in result["hits"]:
        assert hit["path"].startswith("trips/") and hit["meta"]["taken"] >= "2020-01-01" and hit["band"]
    assert time.monotonic() - start < 120
