"""Collections and datasets: turning a folder on disk into a list of (relative path, labels).

Three layouts are understood:

* ``caltech101``: ``<root>/101_ObjectCategories/<category>/<file>``; label = folder name.
  By default the 101 object categories are indexed. ``BACKGROUND_Google`` (468 clutter images,
  not a category) and ``Faces_easy`` (the same 435 photos as ``Faces``, tightly cropped) are left
  out unless asked for, so that every result has a meaningful label and no photo appears twice.
* ``voc2012``: ``<root>/VOCdevkit/VOC2012/JPEGImages``; labels are the object classes named in
  ``Annotations/<id>.xml``; every annotated image of the trainval release (17,125 images).
* ``folder``: any folder of images; label = the first sub-folder, or none for files at the top.
  It is scanned by :func:`app.core.scan.scan_folder`, which skips and reports what a messy folder
  holds (link loops, FIFOs, unreadable or empty files, HEIC, hidden folders...): ``Dataset.skipped``.

Files are picked by extension, plus extension-less files (Caltech101 ships the JPEG
``BACKGROUND_Google/tmp``); whether a file really is an image is decided later, by decoding it.
Items of a folder carry the size and ``mtime_ns`` the scan saw (``Item.stamp``), which an
incremental build compares with what it stored.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from app.core.scan import IMAGE_SUFFIXES, FileStamp, Skipped, scan_folder
from app.errors import DatasetError

COLLECTION_KINDS = ("caltech101", "voc2012", "folder")
CALTECH_DIR = "101_ObjectCategories"
CALTECH_EXCLUDED_BY_DEFAULT = ("BACKGROUND_Google", "Faces_easy")
VOC_DIR = Path("VOCdevkit") / "VOC2012"


@dataclass(frozen=True)
class Item:
    """One image of a collection. ``path`` is relative to the collection's ``image_root``."""

    path: str
    labels: tuple[str, ...]
    stamp: FileStamp | None = field(default=None, compare=False)  # size and mtime as listed (folders)

    @property
    def label(self) -> str:
        return ", ".join(self.labels) if self.labels else ""


@dataclass(frozen=True)
class Dataset:
    kind: str
    root: Path  # what the user passed as --data
    image_root: Path  # the folder item paths are relative to
    items: tuple[Item, ...]
    skipped: tuple[Skipped, ...] = ()  # left out while listing, with the reason (folders)
    excluded: tuple[tuple[str, int], ...] = ()  # (exclude pattern, entries it left out) (folders)

    def fingerprint(self) -> str:
        """A hash of the item list: a resumed build must see exactly the same list."""
        h = hashlib.sha256()
        for it in self.items:
            h.update(it.path.encode("utf-8", "surrogateescape"))
            h.update(b"\0")
            h.update("|".join(it.labels).encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()

    @property
    def categories(self) -> list[str]:
        return sorted({lab for it in self.items for lab in it.labels})


def load_dataset(
    kind: str,
    root: str | os.PathLike,
    *,
    limit: int | None = None,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> Dataset:
    """List the images of a collection. ``limit`` keeps a deterministic sample spread over labels.

    ``include`` (Caltech101 only) adds folders left out by default, e.g. ``("BACKGROUND_Google",)``.
    ``exclude`` (folders only): gitignore-style patterns left out on top of the known litter and the
    folder's ``.risignore`` (:mod:`app.core.exclude`).
    """
    root = Path(root).expanduser()
    skipped: tuple[Skipped, ...] = ()
    excluded: tuple[tuple[str, int], ...] = ()
    if kind == "caltech101":
        image_root, items = _caltech101(root, include)
    elif kind == "voc2012":
        image_root, items = _voc2012(root)
    elif kind == "folder":
        image_root, (items, skipped, excluded) = root, _folder(root, exclude)
    else:
        raise DatasetError(f"Unknown collection type {kind!r}; expected one of {', '.join(COLLECTION_KINDS)}.")
    if not items:
        why = f" ({len(skipped)} entries skipped, e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise DatasetError(
            f"No images found under {image_root}{why}.",
            hint=f"Supported files: {', '.join(sorted(IMAGE_SUFFIXES))}.",
        )
    if limit is not None and limit < len(items):
        items = spread_sample(items, limit)
    return Dataset(kind=kind, root=root.resolve(), image_root=image_root.resolve(), items=tuple(items),
                   skipped=skipped, excluded=excluded)


def spread_sample(items: list[Item], n: int) -> list[Item]:
    """Deterministically pick ``n`` items spread evenly over the labels (round-robin by label).

    Within a label, items are taken in a hash order, so the sample does not depend on file
    numbering; the result is returned in the original order.
    """
    if n <= 0:
        raise DatasetError("--limit must be a positive number.")
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.labels[0] if it.labels else "", []).append(i)
    for idxs in groups.values():
        idxs.sort(key=lambda i: hashlib.sha1(items[i].path.encode("utf-8", "surrogateescape")).digest())
    chosen: list[int] = []
    order = sorted(groups)
    depth = 0
    while len(chosen) < n:
        progressed = False
        for lab in order:
            idxs = groups[lab]
            if depth < len(idxs):
                chosen.append(idxs[depth])
                progressed = True
                if len(chosen) == n:
                    break
        if not progressed:
            break
        depth += 1
    return [items[i] for i in sorted(chosen)]


def _is_candidate(name: str) -> bool:
    if name.startswith("."):
        return False
    suffix = os.path.splitext(name)[1].lower()
    return suffix in IMAGE_SUFFIXES or suffix == ""


def _caltech101(root: Path, include: tuple[str, ...]) -> tuple[Path, list[Item]]:
    image_root = root / CALTECH_DIR
    if not image_root.is_dir():
        if root.name == CALTECH_DIR and root.is_dir():
            image_root = root
        else:
            raise DatasetError(
                f"{image_root} does not exist.",
                hint="Run ./data_download.sh caltech101, or pass --data pointing at the folder that "
                f"contains {CALTECH_DIR}.",
            )
    excluded = set(CALTECH_EXCLUDED_BY_DEFAULT) - set(include)
    items: list[Item] = []
    for category in sorted(os.listdir(image_root)):
        folder = image_root / category
        if category in excluded or category.startswith(".") or not folder.is_dir():
            continue
        for name in sorted(os.listdir(folder)):
            if _is_candidate(name) and (folder / name).is_file():
                items.append(Item(f"{category}/{name}", (category,)))
    return image_root, items


def _voc2012(root: Path) -> tuple[Path, list[Item]]:
    """Every image of the VOC2012 trainval release (17,125 images), labelled from its annotation.

    ``ImageSets/Main/trainval.txt`` lists only the 11,540 of the detection task; the other images
    (action, layout and segmentation tasks) are annotated with their objects too, so they are
    searchable with labels as well.
    """
    base = root / VOC_DIR
    if not base.is_dir() and (root / "JPEGImages").is_dir():
        base = root  # the user pointed straight at VOC2012/
    image_root, annotations = base / "JPEGImages", base / "Annotations"
    if not image_root.is_dir() or not annotations.is_dir():
        raise DatasetError(
            f"{image_root} or {annotations} does not exist.",
            hint="Run ./data_download.sh voc2012, or pass --data pointing at the folder that contains VOCdevkit.",
        )
    items = []
    for name in sorted(os.listdir(image_root)):
        image_id, ext = os.path.splitext(name)
        if ext.lower() == ".jpg" and not name.startswith("."):
            items.append(Item(name, _voc_labels(annotations / f"{image_id}.xml")))
    return image_root, items


def _voc_labels(xml_path: Path) -> tuple[str, ...]:
    try:
        tree = ET.parse(xml_path)
    except (OSError, ET.ParseError):
        return ()
    names = {(obj.findtext("name") or "").strip() for obj in tree.getroot().iter("object")}
    return tuple(sorted(n for n in names if n))


def folder_label(rel: str) -> tuple[str, ...]:
    """The label of a folder collection's item: its first sub-folder, or none at the top."""
    parts = rel.split("/")
    return (parts[0],) if len(parts) > 1 else ()


def _folder(root: Path, exclude: tuple[str, ...] = ()) -> tuple[list[Item], tuple[Skipped, ...],
                                                                tuple[tuple[str, int], ...]]:
    scan = scan_folder(root, exclude=exclude)
    return [Item(rel, folder_label(rel), stamp) for rel, stamp in scan.files], scan.skipped, scan.excluded


def image_files(root: Path) -> list[str]:
    """Every image file below ``root`` that a folder collection would take (see
    :func:`app.core.scan.scan_folder`), as sorted posix paths relative to ``root``."""
    return [rel for rel, _ in scan_folder(root).files]
