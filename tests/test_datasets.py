"""app.core.datasets: Caltech101, VOC2012 and plain-folder layouts, and the --limit sample."""

from __future__ import annotations

from collections import Counter

import pytest

from app.core.datasets import Item, load_dataset, spread_sample
from app.core.images import load_image
from app.errors import DatasetError
from tests.helpers import VOC_IMAGES, make_caltech_layout, make_image_folder, make_voc_layout


@pytest.fixture(scope="module")
def caltech(tmp_path_factory):
    return make_caltech_layout(tmp_path_factory.mktemp("caltech"))


@pytest.fixture(scope="module")
def big_caltech(tmp_path_factory):
    cats = tuple(f"cat{i:02d}" for i in range(7))
    root = tmp_path_factory.mktemp("big-caltech")
    cat_root = root / "101_ObjectCategories"
    for ci, cat in enumerate(cats):
        (cat_root / cat).mkdir(parents=True)
        for v in range(3 + 2 * ci):  # unequal category sizes: 3, 5, 7, ...
            (cat_root / cat / f"image_{v + 1:04d}.jpg").write_bytes(b"not decoded by the listing")
    return root, cats


# -- Caltech101 -------------------------------------------------------------------------------


def test_caltech_default_excludes_background_and_faces_easy(caltech):
    ds = load_dataset("caltech101", caltech)
    assert ds.kind == "caltech101"
    assert ds.categories == ["Faces", "accordion", "anchor", "ant"]
    assert len(ds.items) == 4 * 3
    assert all(it.labels == (it.path.split("/")[0],) for it in ds.items)  # label = folder name
    assert not any(it.path.startswith(("BACKGROUND_Google/", "Faces_easy/")) for it in ds.items)
    assert ds.image_root == (caltech / "101_ObjectCategories").resolve()
    assert all((ds.image_root / it.path).is_file() for it in ds.items)


def test_caltech_include_background_picks_up_the_extensionless_jpeg(caltech):
    ds = load_dataset("caltech101", caltech, include=("BACKGROUND_Google",))
    paths = {it.path for it in ds.items}
    assert "BACKGROUND_Google/tmp" in paths
    assert sum(p.startswith("BACKGROUND_Google/") for p in paths) == 3 + 1
    assert not any(p.startswith("Faces_easy/") for p in paths)  # still excluded
    img = load_image(ds.image_root / "BACKGROUND_Google" / "tmp")
    assert img.mode == "RGB" and img.size == (96, 72)

    both = load_dataset("caltech101", caltech, include=("BACKGROUND_Google", "Faces_easy"))
    assert "Faces_easy" in both.categories and len(both.items) == len(ds.items) + 3


def test_caltech_accepts_the_object_categories_folder_itself(caltech):
    a = load_dataset("caltech101", caltech)
    b = load_dataset("caltech101", caltech / "101_ObjectCategories")
    assert a.items == b.items and a.image_root == b.image_root


def test_caltech_limit_is_deterministic_and_spread_over_categories(big_caltech):
    root, cats = big_caltech
    full = load_dataset("caltech101", root)
    assert len(full.items) == sum(3 + 2 * i for i in range(len(cats)))
    for n in (len(cats), 10, 20, 30):
        a = load_dataset("caltech101", root, limit=n)
        b = load_dataset("caltech101", root, limit=n)
        assert a.items == b.items and a.fingerprint() == b.fingerprint()
        assert len(a.items) == n and len(set(a.items)) == n
        assert set(a.items) <= set(full.items)
        counts = Counter(it.labels[0] for it in a.items)
        assert set(counts) == set(cats)  # every category represented
        sizes = Counter(it.labels[0] for it in full.items)
        for cat in cats:  # as even as the sizes allow: a category lags by 2+ only when it has run out
            if counts[cat] < max(counts.values()) - 1:
                assert counts[cat] == sizes[cat]
        # same order as the full listing
        order = {it: i for i, it in enumerate(full.items)}
        assert [order[it] for it in a.items] == sorted(order[it] for it in a.items)
    few = load_dataset("caltech101", root, limit=4)
    assert len({it.labels[0] for it in few.items}) == 4  # fewer than categories: all distinct
    assert load_dataset("caltech101", root, limit=10_000).items == full.items


def test_limit_sample_does_not_depend_on_listing_order():
    items = [Item(f"c{c}/img_{v:03d}.jpg", (f"c{c}",)) for c in range(3) for v in range(20)]
    a = spread_sample(items, 9)
    b = spread_sample(list(reversed(items)), 9)
    assert set(a) == set(b)
    first_files = [f"c{c}/img_{v:03d}.jpg" for c in range(3) for v in range(3)]
    assert [it.path for it in a] != first_files  # a hash order, not just the first files


@pytest.mark.parametrize("n", [0, -3])
def test_limit_must_be_positive(caltech, n):
    with pytest.raises(DatasetError, match="limit"):
        load_dataset("caltech101", caltech, limit=n)


# -- VOC2012 ---------------------------------------------------------------------------------


def test_voc_labels_are_the_sorted_unique_classes(tmp_path):
    root = make_voc_layout(tmp_path)
    ds = load_dataset("voc2012", root)
    # every image of the release, not only the 11,540 of ImageSets/Main/trainval.txt
    extras = ["2012_000000", "2012_000001"]
    assert [it.path for it in ds.items] == sorted(f"{i}.jpg" for i in [*VOC_IMAGES, *extras])
    for it in ds.items:
        assert it.labels == tuple(sorted(set(VOC_IMAGES.get(it.path[:-4], ("train",)))))
    assert dict((it.path, it.label) for it in ds.items)["2008_000001.jpg"] == "dog, person"
    assert ds.image_root == (root / "VOCdevkit" / "VOC2012" / "JPEGImages").resolve()
    assert all((ds.image_root / it.path).is_file() for it in ds.items)
    assert "train" in ds.categories  # the extra images are labelled from their annotations too
    # pointing straight at VOC2012/ works too
    assert load_dataset("voc2012", root / "VOCdevkit" / "VOC2012").items == ds.items


def test_voc_missing_or_broken_annotation_gives_no_labels(tmp_path):
    root = make_voc_layout(tmp_path)
    ann = root / "VOCdevkit" / "VOC2012" / "Annotations"
    (ann / "2008_000002.xml").unlink()
    (ann / "2008_000003.xml").write_text("<annotation><object><name>cat")
    labels = {it.path: it.labels for it in load_dataset("voc2012", root).items}
    assert labels["2008_000002.jpg"] == () and labels["2008_000003.jpg"] == ()
    assert labels["2008_000005.jpg"] == ("cat", "sofa")


def test_voc_limit_spreads_over_first_labels(tmp_path):
    root = make_voc_layout(tmp_path)
    a = load_dataset("voc2012", root, limit=3)
    assert a.items == load_dataset("voc2012", root, limit=3).items
    assert len({it.labels[0] for it in a.items}) == 3


# -- plain folders ---------------------------------------------------------------------------


def test_folder_label_is_the_first_subfolder_or_none(tmp_path):
    files = make_image_folder(tmp_path / "pics", classes=("cats", "dogs"), per_class=2)
    root = tmp_path / "pics"
    (root / "cats" / "kittens").mkdir()
    files[0].rename(root / "cats" / "kittens" / "deep.jpg")
    (root / "top.png").write_bytes(files[1].read_bytes())
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(files[1].read_bytes())
    (root / ".git").mkdir()
    (root / ".git" / "x.jpg").write_bytes(files[1].read_bytes())
    (root / "Makefile").write_text("all:\n")

    ds = load_dataset("folder", root)
    got = {it.path: it.labels for it in ds.items}
    assert got == {
        "cats/img_01.jpg": ("cats",),
        "cats/kittens/deep.jpg": ("cats",),
        "dogs/img_00.jpg": ("dogs",),
        "dogs/img_01.jpg": ("dogs",),
        "top.png": (),
    }
    assert [it.path for it in ds.items] == sorted(got)
    assert ds.categories == ["cats", "dogs"]
    assert ds.root == root.resolve() == ds.image_root


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["caltech101", "voc2012", "folder"])
def test_missing_folder_raises_dataset_error_with_hint(tmp_path, kind):
    with pytest.raises(DatasetError) as info:
        load_dataset(kind, tmp_path / "nowhere")
    assert info.value.hint and "--data" in info.value.hint
    assert "nowhere" in str(info.value)


def test_empty_folder_and_unknown_kind(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No images"):
        load_dataset("folder", tmp_path / "empty")
    with pytest.raises(DatasetError, match="Unknown collection type"):
        load_dataset("imagenet", tmp_path)
