"""The files of a collection's features: where ``NAME.npy`` and ``NAME.json`` live, where a build stages
new ones until its index commits them (``features/NAME.parts/``), their checksums, and moving them into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from app.files.atomic import fsync_dir


def feature_paths(features_dir: Path, name: str) -> tuple[Path, Path]:
    return features_dir / f"{name}.npy", features_dir / f"{name}.json"


def staged_paths(features_dir: Path, name: str) -> tuple[Path, Path]:
    """Where a build stages the new ``NAME.npy`` and ``NAME.json`` until its index is committed."""
    parts = Path(features_dir) / f"{name}.parts"
    return parts / f"{name}.npy", parts / f"{name}.json"


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def staged_checksums(features_dir: Path, name: str) -> dict[str, str | None]:
    """The manifest fields that pin the staged pair: ``features_sha256`` and ``table_sha256``."""
    npy, table = staged_paths(features_dir, name)
    return {"features_sha256": file_sha256(npy), "table_sha256": file_sha256(table)}


def publish_features(features_dir: Path, name: str, *, drop_parts: bool = True) -> None:
    """Move the staged pair into place (after the index that records them is committed), then drop the
    parts folder (``drop_parts=False`` keeps its chunks, for a build about to resume from them)."""
    final, staged = feature_paths(Path(features_dir), name), staged_paths(features_dir, name)
    for src, dst in zip(staged, final, strict=True):
        if src.is_file():
            os.replace(src, dst)
    fsync_dir(Path(features_dir))
    if drop_parts:
        shutil.rmtree(Path(features_dir) / f"{name}.parts", ignore_errors=True)
