"""Every file name of a collection, in one place.

A collection ``NAME`` is, in ``features/``: the vectors ``NAME.npy`` and the id table ``NAME.sqlite``
(``NAME.gN.npy``, ``NAME.gN.sqlite`` when a generation N >= 1 wrote them whole: a change appends rows to
the vectors and changes the table in place; collections built before have a JSON table ``NAME.json``
or ``NAME.gN.json``; SQLite's rollback journal ``NAME.sqlite-journal`` while a change runs), the resumable parts of a build
``NAME.parts/`` and of an incremental change ``NAME.update.parts/``, and the parts that other
features keep beside the vectors: re-ranking's augmented vectors ``NAME.dba.npz``, the duplicate
finder's ``NAME.dedup.npz`` and ``NAME.dedup-pairs.npz`` (caches of the images, remade when missing),
the object vectors ``NAME.objects.json`` with ``NAME.objects.<sha8>.npy``; in ``indexes/``: the faiss
index ``NAME.faiss`` (``NAME.gN.faiss``), the manifest ``NAME.manifest.json`` (the commit record: it
names the current generation's files) and the lock ``NAME.lock``. A file being written atomically
is ``.NAME....tmp`` beside its target (:mod:`app.files.atomic`).

The functions here give bare names (for a manifest, which records names); :class:`CollectionFiles`
joins them to the folders. Nothing else in the app spells these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from app.files.atomic import glob_escape

MANIFEST_SUFFIX = ".manifest.json"


def _stem(name: str, generation: int) -> str:
    return f"{name}.g{generation}" if generation else name


def vectors_name(name: str, generation: int = 0) -> str:
    return f"{_stem(name, generation)}.npy"


def table_name(name: str, generation: int = 0) -> str:
    return f"{_stem(name, generation)}.sqlite"


def index_name(name: str, generation: int = 0) -> str:
    return f"{_stem(name, generation)}.faiss"


def manifest_name(name: str) -> str:
    return f"{name}{MANIFEST_SUFFIX}"


def collection_names(indexes_dir: str | Path) -> list[str]:
    """The collections that have a manifest in ``indexes_dir``, sorted."""
    d = Path(indexes_dir)
    if not d.is_dir():
        return []
    return sorted(p.name[: -len(MANIFEST_SUFFIX)] for p in d.glob(f"*{MANIFEST_SUFFIX}"))


@dataclass(frozen=True)
class CollectionFiles:
    """Where the files of the collection ``name`` are (see the module docstring)."""

    features_dir: Path
    indexes_dir: Path
    name: str

    @classmethod
    def at(cls, features_dir: str | Path, indexes_dir: str | Path, name: str) -> "CollectionFiles":
        return cls(Path(features_dir), Path(indexes_dir), name)

    def renamed(self, name: str) -> "CollectionFiles":
        return CollectionFiles(self.features_dir, self.indexes_dir, name)

    def vectors(self, generation: int = 0) -> Path:
        return self.features_dir / vectors_name(self.name, generation)

    def table(self, generation: int = 0) -> Path:
        return self.features_dir / table_name(self.name, generation)

    def index(self, generation: int = 0) -> Path:
        return self.indexes_dir / index_name(self.name, generation)

    @property
    def manifest(self) -> Path:
        return self.indexes_dir / manifest_name(self.name)

    @property
    def lock(self) -> Path:
        return self.indexes_dir / f"{self.name}.lock"

    @property
    def parts(self) -> Path:
        """The resumable chunks of a build's extraction."""
        return self.features_dir / f"{self.name}.parts"

    @property
    def update_parts(self) -> Path:
        """The resumable chunks of an incremental change's extraction."""
        return self.features_dir / f"{self.name}.update.parts"

    @property
    def dedup_photos(self) -> Path:
        """The duplicate finder's per-photo data (:mod:`app.service.dedup_store`)."""
        return self.features_dir / f"{self.name}.dedup.npz"

    @property
    def dedup_pairs(self) -> Path:
        """The candidate pairs the duplicate finder has measured."""
        return self.features_dir / f"{self.name}.dedup-pairs.npz"

    @property
    def objects_record(self) -> Path:
        """The object vectors' record (:mod:`app.service.objects`): boxes, labels, and which vectors file."""
        return self.features_dir / f"{self.name}.objects.json"

    def objects_vectors(self, digest: str) -> Path:
        """The object vectors, named by the first characters of their checksum."""
        return self.features_dir / f"{self.name}.objects.{digest[:8]}.npy"

    def objects_temp(self) -> Path:
        return self.features_dir / f".{self.name}.objects.vectors.tmp.npy"

    def object_files(self) -> list[Path]:
        """The object vectors' files that exist (the record and its vectors)."""
        if not self.features_dir.is_dir():
            return []
        vectors = re.compile(rf"{re.escape(self.name)}\.objects\.[0-9a-f]{{8}}\.npy")
        return sorted(p for p in self.features_dir.glob(f"{glob_escape(self.name)}.objects.*") if p.is_file()
                      and (p == self.objects_record or vectors.fullmatch(p.name)))

    @property
    def dba(self) -> Path:
        """The database-side augmented vectors that re-ranking orders candidates by (:mod:`app.service.dba`)."""
        return self.features_dir / f"{self.name}.dba.npz"

    def part_files(self) -> list[Path]:
        """The extra parts kept beside the vectors, row for row (a rename carries them, a drop removes them)."""
        return [self.dba, self.dedup_photos, self.dedup_pairs]

    def _data_re(self) -> re.Pattern[str]:
        return re.compile(rf"^{re.escape(self.name)}(\.g\d+)?\.(npy|json|faiss|sqlite|sqlite-journal)$")

    def data_files(self) -> list[Path]:
        """Every vectors, table and index file of any generation (not the manifest, parts or lock)."""
        pattern = self._data_re()
        out: list[Path] = []
        for folder in (self.features_dir, self.indexes_dir):
            if folder.is_dir():
                out += sorted(p for p in folder.iterdir() if pattern.match(p.name) and p.is_file())
        return out

    def stale_temps(self) -> list[Path]:
        """The temp files that atomic writes of this collection's files left behind (a process killed
        mid-write). Only the holder of the collection's lock may remove them."""
        pattern = self._data_re()
        out: list[Path] = []
        for folder in (self.features_dir, self.indexes_dir):
            if folder.is_dir():
                out += [p for p in folder.glob(f".{glob_escape(self.name)}.*.tmp")
                        if pattern.match(p.name[1:].rsplit(".", 2)[0])
                        or p.name.startswith(f".{manifest_name(self.name)}.")]
        return sorted(out)
