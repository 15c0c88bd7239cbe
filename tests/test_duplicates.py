"""Duplicates: the pure measures, the faiss pair search, grouping into tiers (real EfficientNet-Lite0 weights on
committed CC0 photos), the CLI's JSON Lines, and incremental runs that read and search only new items."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from app.cli.main import main
from app.config import Config
from app.core.dedup_metrics import choose_keeper, containment, local_features, match_pair, union_find_groups
from app.index.pair_search import FaissPairSearch
from app.metrics.dedup_bench import burst_frames
from app.service.build import BuildSpec, build_collection
from app.service.duplicates import find_duplicates
from app.service.library import add_paths, delete_items

DATA = Path(__file__).parent / "data"


# -- pure measures ---------------------------------------------------------------------------------


def test_union_find_groups_are_connected_components():
    roots = union_find_groups(7, np.array([0, 1, 4]), np.array([1, 2, 5]))
    groups = {}
    for node, r in enumerate(roots.tolist()):
        groups.setdefault(r, set()).add(node)
    assert sorted(map(sorted, groups.values())) == [[0, 1, 2], [3], [4, 5], [6]]


def test_keeper_is_largest_then_oldest():
    assert choose_keeper([5, 6, 7], [100, 400, 400], [3, 9, 2]) == 7  # 400 px, older of the two
    assert choose_keeper([5, 6], [100, 100], [3, 3]) == 5  # a tie: the lowest id


def test_containment_of_a_crop_and_of_a_shifted_view():
    inside = np.array([[0.5, 0, 10], [0, 0.5, 10]], np.float32)  # b is half a's size, inside a
    assert containment(inside, (100, 100), (100, 100)) == pytest.approx(1.0)
    shifted = np.array([[1, 0, 50], [0, 1, 0]], np.float32)  # half of b falls outside a
    assert containment(shifted, (100, 100), (100, 100)) == pytest.approx(0.5)


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_second_check_accepts_edits_and_rejects_another_photo():
    cat = Image.open(DATA / "photo_chelsea.jpg").convert("RGB")
    w, h = cat.size
    base = local_features(cat)
    for edit in (ImageOps.mirror(cat), _jpeg(cat, 30), cat.crop((w // 8, h // 8, w - w // 8, h - h // 8)),
                 cat.rotate(4, resample=Image.Resampling.BICUBIC), cat.resize((w // 2, h // 2))):
        m = match_pair(base, local_features(edit))
        assert m.inliers >= 30 and m.containment >= 0.85, m
    assert match_pair(base, local_features(ImageOps.mirror(cat))).mirrored
    other = match_pair(base, local_features(Image.open(DATA / "photo_rocket.jpg").convert("RGB")))
    assert other.inliers < 10


# -- pair search -----------------------------------------------------------------------------------


@pytest.mark.parametrize("exact_up_to", [10_000, 10])  # flat, then IVF
def test_pair_search_finds_the_close_pairs(exact_up_to):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 32)).astype(np.float32)
    near = base[:40] + rng.normal(0, 0.05, size=(40, 32)).astype(np.float32)
    vectors = np.concatenate([base, near])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    found = FaissPairSearch(exact_up_to=exact_up_to, nprobe=64).pairs(vectors, np.arange(340), threshold=0.9, k=5)
    sims = vectors @ vectors.T
    truth = {(i, j) for i in range(340) for j in range(i + 1, 340) if sims[i, j] >= 0.9}
    assert set(zip(found.i.tolist(), found.j.tolist(), strict=True)) == truth
    assert len(truth) == 40 and np.all(found.i < found.j)


# -- tiers on a folder (real weights) --------------------------------------------------------------


def _burst_source() -> Image.Image:
    return Image.open(DATA / "engine_astronaut.jpg").convert("RGB")


def make_duplicates_folder(root: Path) -> dict[str, set[str]]:
    """Exact copies of the cat, edited copies of the coffee, a burst of the astronaut, three other photos."""
    root.mkdir(parents=True)
    shutil.copyfile(DATA / "photo_chelsea.jpg", root / "cat.jpg")
    shutil.copyfile(DATA / "photo_chelsea.jpg", root / "cat copy.jpg")
    Image.open(DATA / "photo_chelsea.jpg").convert("RGB").save(root / "cat.png")  # the same pixels
    coffee = Image.open(DATA / "engine_coffee.jpg").convert("RGB")
    w, h = coffee.size
    coffee.save(root / "coffee.png")
    ImageOps.mirror(coffee).save(root / "coffee_mirror.jpg", quality=90)
    coffee.save(root / "coffee_q30.jpg", quality=30)
    coffee.crop((w // 10, h // 10, w - w // 20, h - h // 20)).save(root / "coffee_crop.jpg", quality=90)
    coffee.rotate(-4, resample=Image.Resampling.BICUBIC).save(root / "coffee_rotated.jpg", quality=90)
    for k, frame in enumerate(burst_frames(_burst_source(), np.random.default_rng(1))):
        frame.save(root / f"astronaut_{k}.jpg", quality=90)
    for name in ("photo_camera.png", "photo_rocket.jpg", "engine_coins.jpg"):
        shutil.copyfile(DATA / name, root / name)
    return {"exact": {"cat.jpg", "cat copy.jpg", "cat.png"},
            "edited": {"coffee.png", "coffee_mirror.jpg", "coffee_q30.jpg", "coffee_crop.jpg", "coffee_rotated.jpg"},
            "shots": {"astronaut_0.jpg", "astronaut_1.jpg", "astronaut_2.jpg"}}


@pytest.fixture(scope="module")
def dup_collection(tmp_path_factory, lite0_embedder, model_cache):
    base = tmp_path_factory.mktemp("dups")
    expected = make_duplicates_folder(base / "photos")
    config = Config(indexes_dir=base / "indexes", features_dir=base / "features", cache_dir=model_cache,
                    model="efficientnet-lite0", workers=0)
    build_collection(config, BuildSpec(kind="folder", data=base / "photos", name="dups"), embedder=lite0_embedder,
                     progress_bar=False)
    return config, base, expected


def _cli_groups(config, capsys, *extra) -> list[dict]:
    code = main(["duplicates", "--collection", "dups", "--indexes", str(config.indexes_dir), "--features",
                 str(config.features_dir), "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_cli_choices_are_the_services():
    from app.cli import duplicates as cli
    from app.service import duplicates as service

    assert cli.TIERS == service.TIERS and cli.STRICTNESS == tuple(service.STRICTNESS)


def test_cli_groups_each_tier_separately(dup_collection, capsys):
    config, _, expected = dup_collection
    groups = _cli_groups(config, capsys)
    found = {g["tier"]: {m["path"] for m in g["members"]} for g in groups}
    assert len(groups) == 3 and found == expected
    for g in groups:
        assert set(g) == {"tier", "members", "keeper", "score"}
        assert g["keeper"] in {m["id"] for m in g["members"]}
        assert 0 < g["score"] <= 1
    by_tier = {g["tier"]: g for g in groups}
    keeper = {m["id"]: m["path"] for m in by_tier["edited"]["members"]}[by_tier["edited"]["keeper"]]
    assert keeper == "coffee.png"  # the largest resolution (the crop and the rotation are smaller or equal, older)
    assert by_tier["exact"]["score"] == 1.0
    only = _cli_groups(config, capsys, "--tier", "shots")
    assert [{m["path"] for m in g["members"]} for g in only] == [expected["shots"]]


def test_a_rerun_reads_and_searches_only_new_items(dup_collection, lite0_embedder, tmp_path):
    config, base, expected = dup_collection
    first = find_duplicates(config, "dups")  # the module's collection: already measured or measured now
    coffee = next(i for i, p in first.paths.items() if p == "coffee.png")
    assert first.facts[coffee]["width"] == 288 and first.facts[coffee]["height"] == 192
    assert first.facts[coffee]["bytes"] == (base / "photos" / "coffee.png").stat().st_size
    again = find_duplicates(config, "dups")
    assert again.measured == 0 and again.searched == 0
    assert [g.members for g in again.groups] == [g.members for g in first.groups]
    extra = tmp_path / "cat_small.jpg"
    cat = Image.open(DATA / "photo_chelsea.jpg").convert("RGB")
    cat.resize((cat.width // 2, cat.height // 2)).save(extra, quality=85)
    add_paths(config, "dups", [extra], embedder=lite0_embedder)
    after = find_duplicates(config, "dups")
    assert after.measured == 1 and after.searched == 1
    edited_cat = [g for g in after.groups if g.tier == "edited" and str(extra) in {after.paths[i] for i in g.members}]
    assert len(edited_cat) == 1 and len(edited_cat[0].members) == 4  # the three exact copies and the new one
    gone = [i for i in edited_cat[0].members if after.paths[i] == str(extra)]
    delete_items(config, "dups", ids=gone)
    final = find_duplicates(config, "dups")
    assert final.measured == 0 and final.searched == 0
    assert {frozenset(final.paths[i] for i in g.members) for g in final.groups} == {frozenset(s) for s in
                                                                                   expected.values()}


def test_a_full_rebuild_that_renumbers_is_searched_again(tmp_path, lite0_embedder, model_cache):
    """Ids are renumbered by a full rebuild: the kept pairs of ids that now hold other photos are dropped."""
    expected = make_duplicates_folder(tmp_path / "photos")
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", cache_dir=model_cache,
                    model="efficientnet-lite0", workers=0)
    spec = dict(kind="folder", data=tmp_path / "photos", name="dups")
    build_collection(config, BuildSpec(**spec), embedder=lite0_embedder, progress_bar=False)
    find_duplicates(config, "dups")
    (tmp_path / "photos" / "astronaut_0.jpg").rename(tmp_path / "astronaut_0.jpg")  # out of the folder
    (tmp_path / "photos" / "cat copy.jpg").unlink()
    build_collection(config, BuildSpec(**spec, rebuild=True), embedder=lite0_embedder, progress_bar=False)
    report = find_duplicates(config, "dups")
    assert report.searched > 0  # renumbered ids are searched again
    found = {g.tier: {report.paths[i] for i in g.members} for g in report.groups}
    assert found == {"exact": expected["exact"] - {"cat copy.jpg"}, "edited": expected["edited"],
                     "shots": expected["shots"] - {"astronaut_0.jpg"}}
