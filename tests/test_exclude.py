"""Issue 19, exclusions: known NAS and photo-app litter is left out by default, ``--exclude GLOB`` and a
``.risignore`` file (read like a ``.gitignore``) leave out more, a rescan honours them, and the summary
counts what each pattern left out. The patterns are stored with the collection, so an update uses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import Config
from app.core.exclude import excluded_line
from app.core.scan import scan_folder, scan_paths
from app.errors import DatasetError
from app.index.faiss_store import read_manifest
from app.service.library import add_paths, index_folder, update_collection
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder, synthetic_image
from tests.test_cli import run


def litter(root: Path) -> dict[str, int]:
    """Real photos plus the litter a Synology, a QNAP, Picasa, macOS and Windows leave; returns the
    entries each default pattern must leave out."""
    make_image_folder(root, classes=("trips", "home"), per_class=3, seed=4)
    for folder in ("trips/@eaDir", "home/@eaDir", "trips/@eaDir/img_00.jpg", ".thumbnails/normal", "#recycle",
                   ".@__thumb", ".picasaoriginals"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        synthetic_image(0, 1).save(root / folder / "SYNOPHOTO_THUMB_XL.jpg")
    for name in ("trips/.DS_Store", ".DS_Store", "home/Thumbs.db", "desktop.ini"):
        (root / name).write_bytes(b"litter")
    synthetic_image(1, 2).save(root / "trips" / "._img_00.jpg", format="JPEG")  # a macOS resource fork
    return {"@eaDir/": 2, ".DS_Store": 2, ".thumbnails/": 1, "\\#recycle/": 1, ".@__thumb/": 1,
            ".picasaoriginals/": 1, "Thumbs.db": 1, "desktop.ini": 1, "._*": 1}


def test_known_litter_is_left_out_and_counted_per_pattern(tmp_path):
    expected = litter(tmp_path)
    result = scan_folder(tmp_path)
    assert [p for p, _ in result.files] == [f"{c}/img_0{i}.{e}" for c in ("home", "trips")
                                            for i, e in ((0, "jpg"), (1, "jpg"), (2, "png"))]
    assert dict(result.excluded) == expected
    assert result.skipped == ()  # left out on purpose: not reported as skips
    assert excluded_line(result.excluded).startswith("excluded 11 (.DS_Store: 2, @eaDir/: 2, .@__thumb/: 1")
    plain = scan_folder(tmp_path, default_excludes=False, include_hidden=True)
    assert "trips/@eaDir/SYNOPHOTO_THUMB_XL.jpg" in {p for p, _ in plain.files}  # the defaults did it


def test_exclude_patterns_and_risignore_read_like_gitignore(tmp_path):
    make_image_folder(tmp_path, classes=("trips", "drafts"), per_class=2, seed=5)
    (tmp_path / "trips" / "2019").mkdir()
    for name in ("a_small.jpg", "keep_small.jpg", "b.jpg"):
        synthetic_image(2, len(name)).save(tmp_path / "trips" / "2019" / name)
    synthetic_image(2, 9).save(tmp_path / "top.jpg")
    synthetic_image(2, 9).save(tmp_path / "trips" / "top.jpg")
    (tmp_path / ".risignore").write_text("# drafts are not photos\ndrafts/\n!keep_small.jpg\n/top.jpg\n")
    result = scan_folder(tmp_path, exclude=["*_small.jpg"])
    assert [p for p, _ in result.files] == ["trips/2019/b.jpg", "trips/2019/keep_small.jpg", "trips/img_00.jpg",
                                            "trips/img_01.jpg", "trips/top.jpg"]
    assert dict(result.excluded) == {"drafts/": 1, "*_small.jpg": 1, "/top.jpg": 1}
    result = scan_folder(tmp_path, exclude=["trips/2019/"])
    assert dict(result.excluded) == {"drafts/": 1, "trips/2019/": 1, "/top.jpg": 1}
    added = scan_paths([tmp_path / "trips"], exclude=["2019/"])  # a folder named to add: relative to it
    assert [Path(p).name for p, _ in added.files] == ["img_00.jpg", "img_01.jpg", "top.jpg"]


@pytest.mark.parametrize("pattern", ["!", "", "a\nb"])
def test_a_bad_pattern_is_a_clear_error(tmp_path, pattern):
    with pytest.raises(DatasetError, match="pattern"):
        scan_folder(tmp_path, exclude=[pattern])


def test_patterns_are_stored_and_an_update_honours_them(tmp_path):
    data = tmp_path / "photos"
    litter(data)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    built = index_folder(config, "mine", data, embedder=FakeEmbedder(), exclude=["home/img_02.png"])
    assert built.count == 5 and dict(built.excluded)["home/img_02.png"] == 1 and dict(built.excluded)["@eaDir/"] == 2
    assert json.loads((tmp_path / "indexes" / "mine.manifest.json").read_text())["exclude"] == ["home/img_02.png"]

    synthetic_image(3, 1).save(data / "trips" / "new.jpg")
    synthetic_image(3, 2).save(data / "trips" / "@eaDir" / "new_thumb.jpg")
    again = update_collection(config, "mine", embedder=FakeEmbedder())
    assert again.line() == "added 1, changed 0, removed 0, unchanged 5" and again.count == 6
    assert dict(again.excluded)["home/img_02.png"] == 1  # the stored pattern, without being given again

    (data / "more").mkdir()
    synthetic_image(3, 3).save(data / "more" / "x.jpg")
    (data / "more" / "@eaDir").mkdir()
    synthetic_image(3, 4).save(data / "more" / "@eaDir" / "x_thumb.jpg")
    added = add_paths(config, "mine", [data / "more"], embedder=FakeEmbedder())
    assert (added.added, added.count) == (1, 7) and dict(added.excluded) == {"@eaDir/": 1}

    # given again, the patterns replace the stored ones: nothing excluded by hand now
    cleared = index_folder(config, "mine", data, embedder=FakeEmbedder(), exclude=[])
    assert cleared.added == 1 and "home/img_02.png" not in dict(cleared.excluded)
    assert read_manifest(config.indexes_dir, "mine").extra["exclude"] == []
    # a pattern that changes nothing is still stored (the next update must use it)
    index_folder(config, "mine", data, embedder=FakeEmbedder(), exclude=["*.gif"])
    assert read_manifest(config.indexes_dir, "mine").extra["exclude"] == ["*.gif"]


def test_build_command_counts_what_it_left_out(tmp_path, cli_env):
    data = tmp_path / "photos"
    litter(data)
    out = tmp_path / "out"
    proc = run(["scripts/build_index.py", "--collection", "folder", "--data", str(data), "--name", "mine",
                "--weights", "untrained", "--workers", "0", "--factory", "Flat", "--no-progress",
                "--indexes", str(out / "indexes"), "--features", str(out / "features"),
                "--exclude", "home/", "--exclude", "*.png"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "built mine: 2 images indexed, 0 skipped" in proc.stdout
    line = next(line for line in proc.stdout.splitlines() if line.startswith("  excluded "))
    assert line.startswith("  excluded 11 (.DS_Store: 2, ")  # home/ is not looked into: its litter is not counted
    for part in ("*.png: 1", "home/: 1", "@eaDir/: 1", "\\#recycle/: 1", "._*: 1"):
        assert part in line, line
