"""Feature extraction and the feature store in ``features/``.

For a collection named ``NAME`` the store holds:

* ``features/NAME.npy``: float32 (N, dim), L2-normalised, row i = item id i (dim is the model's:
  2048 for ResNet-50, 1280 for EfficientNet-Lite), appended to by later changes
  (:mod:`app.files.vector_file`);
* ``features/NAME.sqlite``: the table (id -> relative path, label, file stamp), the skipped files
  with reasons, the weights id and the dataset root (:mod:`app.core.feature_table`, stored by
  :mod:`app.core.table_db`).

A rebuild writes them whole as ``NAME.gN.npy`` / ``NAME.gN.sqlite`` (generation ``N``): the index
manifest names the current pair and generation, so :func:`load_features` takes what it records.

Extraction is resumable: vectors are written in chunks to ``features/NAME.parts/`` as they are
computed (each chunk atomically), so a build killed at any moment continues from the last saved
chunk when re-run, with no duplicated or missing rows. The final files are written atomically,
the table first, and the parts folder is removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from app.core.datasets import Dataset
from app.core.embed import Embedder
from app.core.feature_table import FeatureTable, feature_paths, load_features
from app.core.images import load_image
from app.core.models import Preprocessing
from app.core.preprocess import preprocess
from app.core.table_db import create_table_db
from app.core.workers import worker_init_fn
from app.errors import DatasetError, InvalidImageError, OperationCancelled
from app.files.atomic import atomic_writer, write_json
from app.files.layout import CollectionFiles
from app.files.vector_file import write_vectors

__all__ = ["CHUNK_SIZE", "EmbedOptions", "FeatureTable", "default_workers", "embed_dataset", "extract_features", "feature_paths",
           "load_features"]

CHUNK_SIZE = 512
PARTS_FORMAT = 1  # of the resumable parts folder (not the table's format: see app.core.feature_table)


# -- extraction ----------------------------------------------------------------------------


class _ImageFiles:
    """A map-style dataset for torch's DataLoader: index -> (index, array or None, error)."""

    def __init__(self, image_root: Path, paths: list[str], indices: list[int], pp: Preprocessing) -> None:
        self.image_root = image_root
        self.paths = paths
        self.indices = indices
        self.pp = pp

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, pos: int) -> tuple[int, np.ndarray | None, str]:
        i = self.indices[pos]
        try:
            # an absolute item path (a file added from outside the collection's folder) joins as itself
            img = load_image(self.image_root / self.paths[i], draft_size=self.pp.resize)
            return i, preprocess(img, self.pp), ""
        except InvalidImageError as exc:
            return i, None, str(exc)


def _collate(batch: list[tuple[int, np.ndarray | None, str]]):
    ok = [(i, a) for i, a, _ in batch if a is not None]
    bad = [(i, err) for i, a, err in batch if a is None]
    arrays = np.stack([a for _, a in ok]) if ok else None  # None: every image of the batch failed
    return [i for i, _ in ok], arrays, bad


def default_workers() -> int:
    """Decoding processes for a build: one per core the model can spare, at least one, at most four.

    The model's intra-op threads already use every core, and decoding a Caltech101-sized JPEG costs
    ~6% of its inference, so extra decoders only compete with it (2 cores: 0, 1 or 2 workers all gave
    ~20 img/s end to end). One worker still overlaps the decoding of large photos with inference.
    """
    return max(1, min(4, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class EmbedOptions:
    """How a dataset goes through the model, and the caller's hooks.

    ``progress_bar``: a progress bar on stderr; ``on_chunk(chunk_no)`` is called after each chunk is
    saved (tests use it to simulate a kill); ``on_batch(done, total)`` after each batch (images
    embedded or skipped so far, of ``total``); ``cancel()`` is asked before each batch and stops with
    :class:`~app.errors.OperationCancelled` (what was saved is kept: the same call later resumes from
    it); ``allow_empty``: no readable image is not an error (an incremental change whose new files
    are all broken).
    """

    batch_size: int = 32
    workers: int | None = None
    chunk_size: int = CHUNK_SIZE
    progress_bar: bool = True
    on_chunk: Callable[[int], None] | None = None
    on_batch: Callable[[int, int], None] | None = None
    cancel: Callable[[], bool] | None = None
    allow_empty: bool = False


def extract_features(dataset: Dataset, embedder: Embedder, features_dir: str | os.PathLike, name: str,
                     options: EmbedOptions = EmbedOptions()) -> tuple[np.ndarray, FeatureTable, dict[str, Any]]:
    """Embed every item of ``dataset`` and write ``NAME.npy`` and ``NAME.sqlite`` (through the resumable
    ``NAME.parts``); returns (vectors, table, stats)."""
    files = CollectionFiles.at(features_dir, features_dir, name)
    vectors, table, stats = embed_dataset(dataset, embedder, files.parts, name, options)
    # The table first: if the vectors' write then fails, the new table no longer matches the old
    # index manifest (count, weights, fingerprint, created), so the pair is refused, never mixed up.
    # The parts stay until both are written: a rerun finishes without embedding anything again.
    create_table_db(files.table(), table, 0)
    write_vectors(files.vectors(), vectors)
    remove_parts(files.parts)
    return vectors, table, stats


def remove_parts(parts: str | os.PathLike) -> None:
    """Remove a resumable parts folder (once what it made is written)."""
    shutil.rmtree(parts, ignore_errors=True)


def embed_dataset(dataset: Dataset, embedder: Embedder, parts: str | os.PathLike, name: str,
                  options: EmbedOptions = EmbedOptions()) -> tuple[np.ndarray, FeatureTable, dict[str, Any]]:
    """Embed every item of ``dataset`` through the resumable folder ``parts``; returns (vectors, the
    table of the collection ``name``, stats) and writes no final file (the parts stay until
    :func:`remove_parts`). ``options``: see :class:`EmbedOptions`."""
    embedder.load()  # the engine (fp32 or which INT8 model) is part of what a resumed build must match
    parts = Path(parts)
    o = options
    batch_size, workers, chunk_size, progress = o.batch_size, o.workers, o.chunk_size, o.progress_bar
    on_chunk, on_batch, cancel, allow_empty = o.on_chunk, o.on_batch, o.cancel, o.allow_empty
    n = len(dataset.items)
    n_chunks = (n + chunk_size - 1) // chunk_size
    done = _resume(parts, dataset, embedder, chunk_size)
    todo = [c for c in range(n_chunks) if c not in done]
    resumed_rows = sum(min(chunk_size, n - c * chunk_size) for c in done)

    t0 = time.perf_counter()
    bar = _progress_bar(n, resumed_rows, name) if progress else None
    ticker = _Ticker(name, n, resumed_rows, bar, on_batch, cancel)
    try:
        ticker(0)  # cancelled before it started
        for c, ids, vectors, bad in _embed_chunks(dataset, embedder, todo, chunk_size, batch_size, workers, ticker):
            _save_chunk(parts / _chunk_name(c), ids, vectors, bad)
            if bar is not None and bad:
                bar.set_postfix(skipped=len(bad), refresh=False)
            if on_chunk is not None:
                on_chunk(c)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    embedded = ticker.embedded

    vectors, table = _consolidate(dataset, embedder, parts, n_chunks, name, allow_empty=allow_empty)
    stats = {
        "images": n,
        "embedded": len(table),
        "skipped": len(table.skipped),
        "resumed_rows": resumed_rows,
        "seconds": elapsed,
        "img_per_s": embedded / elapsed if elapsed > 0 and embedded else 0.0,
    }
    return vectors, table, stats


class _Ticker:
    """Called after each batch: the progress bar, ``on_batch(done, total)``, and the cancel check."""

    def __init__(self, name: str, total: int, resumed: int, bar: Any, on_batch: Callable[[int, int], None] | None,
                 cancel: Callable[[], bool] | None) -> None:
        self.name, self.total, self.resumed, self.bar = name, total, resumed, bar
        self.on_batch, self.cancel = on_batch, cancel
        self.embedded = 0

    def __call__(self, rows: int) -> None:
        self.embedded += rows
        if rows and self.bar is not None:
            self.bar.update(rows)
        if rows and self.on_batch is not None:
            self.on_batch(self.resumed + self.embedded, self.total)
        if self.cancel is not None and self.cancel():
            raise OperationCancelled(f"Embedding {self.name} was cancelled after {self.resumed + self.embedded} of "
                                     f"{self.total} images.", hint="Run it again to continue from the last saved chunk.")


def _resume(parts: Path, dataset: Dataset, embedder: Embedder, chunk_size: int) -> set[int]:
    """The chunks an earlier run of the same build saved intact; the parts folder of any other
    build (another dataset sample, weights, dimension or chunking) is removed first."""
    n = len(dataset.items)
    state = {
        "format": PARTS_FORMAT,
        "image_root": str(dataset.image_root),  # same names in another folder are other images
        "fingerprint": dataset.fingerprint(),
        "weights_id": embedder.weights_id,
        "dim": embedder.dim,
        "chunk_size": chunk_size,
        "count": n,
    }
    if embedder.engine == "onnx-int8":  # INT8 vectors (and which calibration) are not mixed with fp32 ones
        state["int8_model"] = embedder.int8_model.name if embedder.int8_model else ""
    state_path = parts / "state.json"
    if parts.is_dir():
        try:
            old = json.loads(state_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != state:
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not state_path.is_file():
        write_json(state_path, state)
    n_chunks = (n + chunk_size - 1) // chunk_size
    return {c for c in range(n_chunks) if _chunk_ok(parts / _chunk_name(c), c, chunk_size, n, embedder.dim)}


def _chunk_name(c: int) -> str:
    return f"chunk-{c:06d}.npz"


def _chunk_ok(path: Path, c: int, chunk_size: int, n: int, dim: int) -> bool:
    """True when a saved chunk is readable and covers exactly its rows; an unusable one is removed."""
    if not path.is_file():
        return False
    expected = np.arange(c * chunk_size, min(n, (c + 1) * chunk_size))
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, bad_ids, vectors = z["ids"], z["bad_ids"], z["vectors"]
            ok = (
                vectors.shape == (len(ids), dim)
                and len(z["bad_reasons"]) == len(bad_ids)
                and np.array_equal(np.sort(np.concatenate([ids, bad_ids])), expected)
            )
    except Exception:  # noqa: BLE001 - a damaged zip/npy raises many kinds of errors
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
    return ok


def _progress_bar(total: int, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc=f"embedding {name}", file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)


def _embed_chunks(
    dataset: Dataset, embedder: Embedder, todo: list[int], chunk_size: int, batch_size: int, workers: int | None,
    tick: Callable[[int], None],
) -> Iterator[tuple[int, list[int], np.ndarray, list[tuple[int, str]]]]:
    """Yield (chunk, ok ids, vectors, [(id, reason)]) for each chunk in ``todo``, in order; ``tick(rows)``
    after each batch."""
    if not todo:
        return
    from torch.utils.data import DataLoader

    n = len(dataset.items)
    indices = [i for c in todo for i in range(c * chunk_size, min(n, (c + 1) * chunk_size))]
    files = _ImageFiles(dataset.image_root, [it.path for it in dataset.items], indices, embedder.preprocessing)
    workers = default_workers() if workers is None else workers
    # Batches never straddle two chunks: chunk_size is a multiple of the batch size.
    batch_size = max(1, min(batch_size, chunk_size))
    while chunk_size % batch_size:
        batch_size -= 1
    loader = DataLoader(
        files,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=worker_init_fn() if workers else None,  # workers die with this process
    )
    embedder.load()
    current, ids, vecs, bad = None, [], [], []
    for batch_ids, arrays, batch_bad in loader:
        first = batch_ids[0] if batch_ids else batch_bad[0][0]
        chunk = first // chunk_size
        if current is not None and chunk != current:
            yield current, ids, _stack(vecs, embedder.dim), bad
            ids, vecs, bad = [], [], []
        current = chunk
        if arrays is not None:
            vecs.append(embedder.embed_arrays(arrays if isinstance(arrays, np.ndarray) else arrays.numpy()))
            ids.extend(batch_ids)
        bad.extend(batch_bad)
        tick(len(batch_ids) + len(batch_bad))
    if current is not None:
        yield current, ids, _stack(vecs, embedder.dim), bad


def _stack(vecs: list[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)


def _save_chunk(path: Path, ids: list[int], vectors: np.ndarray, bad: list[tuple[int, str]]) -> None:
    with atomic_writer(path) as fh:
        np.savez(
            fh,
            ids=np.asarray(ids, dtype=np.int64),
            vectors=np.asarray(vectors, dtype=np.float32),
            bad_ids=np.asarray([i for i, _ in bad], dtype=np.int64),
            bad_reasons=np.asarray([r for _, r in bad], dtype=np.str_),
        )


def _failed(item, reason: str) -> dict[str, Any]:
    """The skip entry of a file that could not be decoded; with its size and mtime, so an incremental
    build does not read it again while it is unchanged."""
    out: dict[str, Any] = {"path": item.path, "reason": reason}
    if item.stamp is not None:
        out.update(size=item.stamp.size, mtime_ns=item.stamp.mtime_ns)
    return out


def _consolidate(dataset: Dataset, embedder: Embedder, parts: Path, n_chunks: int, name: str, *,
                 allow_empty: bool = False):
    ids_all, vec_all, skipped = [], [], []
    for c in range(n_chunks):
        with np.load(parts / _chunk_name(c), allow_pickle=False) as z:
            ids_all.append(z["ids"])
            vec_all.append(z["vectors"])
            skipped.extend(zip(z["bad_ids"].tolist(), z["bad_reasons"].tolist(), strict=True))
    ids = np.concatenate(ids_all) if ids_all else np.zeros(0, np.int64)
    vectors = _stack(vec_all, embedder.dim)
    expected = len(dataset.items)
    seen = np.concatenate([ids, np.asarray([i for i, _ in skipped], np.int64)])
    if len(seen) != expected or len(np.unique(seen)) != expected:
        raise DatasetError(f"Internal error: the chunks of {name} cover {len(seen)} rows for {expected} items.")
    order = np.argsort(ids, kind="stable")
    ids, vectors = ids[order], np.ascontiguousarray(vectors[order])
    if len(ids) == 0 and not allow_empty:
        raise DatasetError(f"None of the {expected} images of {name} could be read.")
    items = dataset.items
    table = FeatureTable(
        name=name,
        kind=dataset.kind,
        dataset_root=str(dataset.root),
        image_root=str(dataset.image_root),
        weights_id=embedder.weights_id,
        paths=[items[i].path for i in ids.tolist()],
        labels=[items[i].labels for i in ids.tolist()],
        stamps=[items[i].stamp for i in ids.tolist()],
        # what the listing left out (messy folders), then what could not be decoded
        skipped=[s.to_json() for s in dataset.skipped] + [_failed(items[i], r) for i, r in sorted(skipped)],
        fingerprint=dataset.fingerprint(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dim=embedder.dim,
    )
    return vectors, table
