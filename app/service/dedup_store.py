"""The per-photo data the duplicate finder needs beyond the vectors, kept as its own part of a collection:
``features/NAME.dedup.npz`` beside the vectors, and the candidate pairs already measured,
``features/NAME.dedup-pairs.npz``. Both are caches of the collection's images: each row records the
content hash it was computed from, so a changed or deleted file's row is dropped and remade, and only
new items are read (incremental, as a build is). Written atomically; a damaged file is remade.

Photo data per item: the original size (for the keeper), the pixel digest (exact tier) and the ORB
features of the photo and its mirror (the second check, :mod:`app.core.dedup_metrics`).
"""

from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.core.dedup_metrics import LocalFeatures, PairMatch, local_features, pixel_digest
from app.core.feature_table import FeatureTable
from app.core.images import load_image
from app.errors import AppError
from app.files.atomic import write_bytes
from app.files.layout import CollectionFiles

log = logging.getLogger(__name__)


def photo_data_path(features_dir: str | os.PathLike, name: str) -> Path:
    return CollectionFiles.at(features_dir, features_dir, name).dedup_photos


def pairs_path(features_dir: str | os.PathLike, name: str) -> Path:
    return CollectionFiles.at(features_dir, features_dir, name).dedup_pairs


@dataclass
class PhotoRecord:
    hash: str
    digest: str  # "" when the file could not be read
    width: int
    height: int
    local: LocalFeatures | None


@dataclass
class PhotoData:
    """id -> :class:`PhotoRecord` for the items measured so far."""

    records: dict[int, PhotoRecord] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        ids = sorted(self.records)
        recs = [self.records[i] for i in ids]
        locs = [r.local for r in recs]
        arrays = {
            "ids": np.array(ids, np.int64),
            "hash": np.array([r.hash for r in recs], dtype="U64"),
            "digest": np.array([r.digest for r in recs], dtype="U32"),
            "size": np.array([(r.width, r.height) for r in recs], np.int32).reshape(-1, 2),
            "local_size": np.array([(x.width, x.height) if x else (0, 0) for x in locs], np.int32).reshape(-1, 2),
        }
        for key, get in (("xy", lambda x: x.xy), ("desc", lambda x: x.desc), ("mxy", lambda x: x.mirror_xy),
                         ("mdesc", lambda x: x.mirror_desc)):
            parts = [get(x) if x else None for x in locs]
            arrays[f"{key}_n"] = np.array([len(p) if p is not None else 0 for p in parts], np.int64)
            width = 32 if "desc" in key else 2
            dtype = np.uint8 if "desc" in key else np.float32
            cat = [p for p in parts if p is not None and len(p)]
            arrays[key] = np.concatenate(cat) if cat else np.zeros((0, width), dtype)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> "PhotoData":
        if not path.exists():
            return cls()
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            log.warning("remaking %s (%s)", path, exc)
            return cls()
        offs = {k: np.concatenate([[0], np.cumsum(arrays[f"{k}_n"])]) for k in ("xy", "desc", "mxy", "mdesc")}
        out = cls()
        for row, i in enumerate(arrays["ids"].tolist()):
            lw, lh = (int(v) for v in arrays["local_size"][row])
            local = None
            if lw:
                s = {k: arrays[k][offs[k][row]:offs[k][row + 1]] for k in offs}
                local = LocalFeatures(s["xy"], s["desc"], s["mxy"], s["mdesc"], lw, lh)
            w, h = (int(v) for v in arrays["size"][row])
            out.records[i] = PhotoRecord(str(arrays["hash"][row]), str(arrays["digest"][row]), w, h, local)
        return out


def item_file(table: FeatureTable, i: int) -> Path:
    p = Path(table.paths[i])
    return p if p.is_absolute() else Path(table.image_root) / p


def measure_photo(path: Path, content_hash: str) -> PhotoRecord:
    """Read one photo with the app's loader: its size, pixel digest and local features."""
    try:
        img = load_image(path)
    except (AppError, OSError) as exc:
        log.warning("duplicates: cannot read %s (%s)", path, exc)
        return PhotoRecord(content_hash, "", 0, 0, None)
    return PhotoRecord(content_hash, pixel_digest(img), img.width, img.height, local_features(img))


def update_photo_data(data: PhotoData, table: FeatureTable) -> tuple[PhotoData, list[int]]:
    """``data`` for every live item of ``table``: rows of deleted or changed items dropped, new ones measured.
    Returns the data and the ids measured now."""
    live = table.live_ids().tolist()
    hashes = {i: (table.stamps[i].hash if table.stamps[i] else "") for i in live}
    kept = {i: r for i, r in data.records.items() if i in hashes and r.hash == hashes[i]}
    new = [i for i in live if i not in kept]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # decoding and OpenCV release the GIL
        for i, rec in zip(new, pool.map(lambda i: measure_photo(item_file(table, i), hashes[i]), new), strict=True):
            kept[i] = rec
    return PhotoData(kept), new


@dataclass
class PairGraph:
    """The candidate pairs measured so far (item ids ``i`` < ``j``): cosine and the second check's result;
    ``covered``: the ids whose neighbours were searched, with the content hash each had then
    (``covered_hash``: an id whose hash differs, after a full rebuild renumbered the items, is searched
    again); ``floor``: the cosine candidates were taken above; ``weights_id``: the model of the vectors."""

    i: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    j: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    containment: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    covered: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    covered_hash: np.ndarray = field(default_factory=lambda: np.zeros(0, "U64"))
    floor: float = 0.0
    weights_id: str = ""

    def without(self, ids: set[int]) -> "PairGraph":
        """The graph with every pair touching ``ids`` removed (and those ids no longer covered)."""
        if not ids:
            return self
        gone = np.array(sorted(ids), np.int64)
        keep = ~(np.isin(self.i, gone) | np.isin(self.j, gone))
        still = ~np.isin(self.covered, gone)
        return PairGraph(self.i[keep], self.j[keep], self.cos[keep], self.inliers[keep], self.containment[keep],
                         self.covered[still], self.covered_hash[still], self.floor, self.weights_id)

    def stale_ids(self, hashes: dict[int, str]) -> set[int]:
        """Covered ids that are not live any more, or hold other content than when they were searched."""
        return {int(c) for c, h in zip(self.covered.tolist(), self.covered_hash.tolist(), strict=True)
                if hashes.get(int(c)) != h}

    def extended(self, i: np.ndarray, j: np.ndarray, cos: np.ndarray, matches: list[PairMatch],
                 covered: np.ndarray, covered_hash: list[str]) -> "PairGraph":
        return PairGraph(
            np.concatenate([self.i, i]), np.concatenate([self.j, j]), np.concatenate([self.cos, cos]),
            np.concatenate([self.inliers, np.array([m.inliers for m in matches], np.int32)]),
            np.concatenate([self.containment, np.array([m.containment for m in matches], np.float32)]),
            np.concatenate([self.covered, covered]),
            np.concatenate([self.covered_hash, np.array(covered_hash, "U64")]), self.floor, self.weights_id)

    def save(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, i=self.i, j=self.j, cos=self.cos, inliers=self.inliers, containment=self.containment,
                 covered=self.covered, covered_hash=self.covered_hash, floor=np.array([self.floor], np.float32),
                 weights_id=np.array([self.weights_id]))
        write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path, floor: float, weights_id: str) -> "PairGraph":
        """The saved graph, or an empty one when there is none, it is damaged, or was made with another floor
        or from another model's vectors."""
        try:
            with np.load(path, allow_pickle=False) as z:
                graph = cls(z["i"], z["j"], z["cos"], z["inliers"], z["containment"], z["covered"],
                            z["covered_hash"], float(z["floor"][0]), str(z["weights_id"][0]))
        except (OSError, ValueError, KeyError):
            return cls(floor=floor, weights_id=weights_id)
        if abs(graph.floor - floor) > 1e-6 or graph.weights_id != weights_id:
            return cls(floor=floor, weights_id=weights_id)
        return graph
