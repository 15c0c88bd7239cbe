"""INT8 models for ``--engine onnx-int8``: ONNX Runtime's static quantisation of the fp32 export,
calibrated on images of a collection.

The recipe (:data:`RECIPE`, measured on Caltech101 with EfficientNet-Lite0's real weights; see the
README's Performance section):

* ``quant_pre_process`` (ONNX shape inference and ORT's basic graph optimisation) on the fp32 export;
* ``quantize_static`` in QDQ format: weights QInt8 per output channel, activations QUInt8 per tensor,
  no ``reduce_range`` (ORT's advice for x86 CPUs with VNNI; harmless elsewhere), activation ranges
  from ORT's MinMax calibrator;
* only the data path is quantised (:func:`shape_arithmetic_nodes`): the nodes fed, directly or not,
  by the image without passing through a ``Shape``. What hangs off a ``Shape`` is arithmetic on
  sizes: timm's TF-"same" padding (EfficientNet-Lite) computes its pad widths in float with
  ``Div``/``Ceil``/``Mul``/``Add``/``Sub`` at run time, and quantising those to 8 bits gets the pad
  widths wrong. Quantising every node left Lite0's vectors at mean cosine 0.91 to fp32 on Caltech101
  images (0.95 with the Percentile calibrator, which only hid it); the data path alone gives 0.992
  (min 0.961) with MinMax. ResNet-50, which has no such arithmetic, gives 0.9998 either way.

Calibration images are preprocessed exactly as for embedding and fed by
:class:`ImageCalibrationReader` in batches of :data:`CALIBRATION_BATCH`, the calibrator's histograms
merged batch by batch, so memory stays bounded (64 ResNet-50 images at once would hold every intermediate tensor of all of them).

The cache sits beside the fp32 export ``STEM.onnx`` (whose name carries the model and weights id):

* ``STEM.int8-KEY.onnx``, the quantised model, where KEY hashes the recipe and the calibration images'
  content in order, so another calibration set makes another file;
* ``STEM.int8-KEY.json``, what it was calibrated on (files, count, source, date, ORT version).

A build with ``--engine onnx-int8`` makes (or reuses) the model for a sample of its own images
(:func:`calibration_files`, a deterministic spread over the labels). An embedder started for search
with no calibration set uses the newest INT8 model made for its weights id (:func:`find_int8`); when
there is none it raises :class:`Int8ModelMissing`, whose hint says how to make one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from app.core.datasets import Item, spread_sample
from app.core.images import load_image
from app.errors import InvalidImageError, WeightsError
from app.files.atomic import write_json

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 128  # images a build calibrates on (sampled from the collection)
CALIBRATION_BATCH = 8  # images per calibration run: bounds the calibrator's memory
RECIPE = {
    "version": 1,  # bump when the recipe changes: every cached INT8 model is then made again
    "pre_process": True,
    "format": "QDQ",
    "weights": "QInt8",
    "per_channel": True,
    "activations": "QUInt8",
    "reduce_range": False,
    "calibration": "MinMax",
    "nodes": "data path",  # shape arithmetic stays float
}


class Int8ModelMissing(WeightsError):
    """``--engine onnx-int8`` found no INT8 model for the weights, and was given no images to make one."""


# -- the calibration set -------------------------------------------------------------------------


def calibration_files(image_root: str | os.PathLike, items: Sequence[Item],
                      n: int = CALIBRATION_IMAGES) -> list[Path]:
    """``n`` of a collection's images, spread over its labels, always the same for the same list."""
    chosen = list(items) if len(items) <= n else spread_sample(list(items), n)
    root = Path(image_root)
    return [root / it.path for it in chosen]


def calibration_key(files: Sequence[str | os.PathLike]) -> str:
    """A hash of the recipe and the files' content, in order (names and folders do not count)."""
    h = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    for f in files:
        try:
            digest = hashlib.sha256(Path(f).read_bytes()).hexdigest()
        except OSError:
            digest = "unreadable"
        h.update(f"{digest}\n".encode())
    return h.hexdigest()[:16]


# -- the cache -----------------------------------------------------------------------------------


def int8_path(fp32: Path, key: str) -> Path:
    """Where the INT8 model of the fp32 export ``fp32`` calibrated as ``key`` is cached."""
    return fp32.with_name(f"{fp32.stem}.int8-{key}.onnx")


def info_path(model: Path) -> Path:
    return model.with_suffix(".json")


def read_info(model: Path) -> dict:
    """The calibration record of an INT8 model ({} when it is missing or unreadable)."""
    try:
        info = json.loads(info_path(model).read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def find_int8(fp32: Path) -> Path | None:
    """The newest INT8 model made from the fp32 export ``fp32`` (any calibration set), or None."""
    found = []
    for model in fp32.parent.glob(f"{fp32.stem}.int8-*.onnx"):
        info = read_info(model)
        if model.stem.split(".int8-", 1)[1].isalnum() and info.get("key"):  # not an ORT-optimised copy
            found.append((str(info.get("created", "")), model.stat().st_mtime, model))
    return max(found)[2] if found else None


# -- making one ----------------------------------------------------------------------------------


class ImageCalibrationReader:
    """Feeds preprocessed images to ORT's calibrator, ``batch`` at a time; ``set_range`` (in
    batches) lets ``quantize_static`` collect one batch per pass (``CalibStridedMinMax``).

    An ``onnxruntime.quantization.CalibrationDataReader`` by its protocol (``get_next``, ``__len__``,
    ``set_range``; the ABC's ``__subclasshook__`` accepts it), so importing this module stays cheap."""

    def __init__(self, arrays: np.ndarray, input_name: str = "input", batch: int = CALIBRATION_BATCH) -> None:
        self.input_name = input_name
        self.batches = [np.ascontiguousarray(arrays[i : i + batch], np.float32) for i in range(0, len(arrays), batch)]
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self.batches))

    def get_next(self) -> dict | None:
        if self._next >= self._end:
            return None
        self._next += 1
        return {self.input_name: self.batches[self._next - 1]}


def load_calibration_arrays(files: Sequence[str | os.PathLike], preprocess: Callable, draft_size: int | None
                            ) -> tuple[np.ndarray, list[str]]:
    """(N, 3, crop, crop) float32 of the readable files, and the files that could not be read."""
    arrays, skipped = [], []
    for f in files:
        try:
            arrays.append(preprocess(load_image(Path(f), draft_size=draft_size)))
        except (InvalidImageError, OSError):
            skipped.append(str(f))
    if not arrays:
        raise WeightsError(f"None of the {len(files)} calibration images could be read (first: {files[0]}).")
    return np.stack(arrays).astype(np.float32), skipped


def shape_arithmetic_nodes(graph) -> list[str]:
    """The nodes of an ONNX graph that are not on the data path: not fed, directly or through other
    nodes, by a graph input, except through a ``Shape`` (sizes, not pixels). Unnamed nodes are named."""
    data = {i.name for i in graph.input}
    off = []
    for i, node in enumerate(graph.node):  # ONNX graphs are stored in topological order
        if not node.name:
            node.name = f"_node_{i}"
        if node.op_type != "Shape" and any(x in data for x in node.input):
            data.update(node.output)
        else:
            off.append(node.name)
    return off


def quantize_onnx(fp32: Path, out: Path, arrays: np.ndarray, input_name: str = "input") -> None:
    """Write the INT8 (QDQ) model of ``fp32`` calibrated on ``arrays`` to ``out``, atomically."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    pre = out.with_name(f".{out.stem}.pre.{os.getpid()}.onnx")
    chatter = io.StringIO()  # the calibrator prints its progress to stdout, which is for --json output
    try:
        source = fp32
        try:
            with contextlib.redirect_stdout(chatter):
                quant_pre_process(str(fp32), str(pre))
            source = pre
        except Exception as exc:  # noqa: BLE001 - optional step; quantising the export as it is still works
            log.info("quant_pre_process failed on %s (%s); quantising the export as it is", fp32, exc)
        model = onnx.load(str(source))
        off_path = shape_arithmetic_nodes(model.graph)
        reader = ImageCalibrationReader(arrays, input_name)
        with contextlib.redirect_stdout(chatter):
            quantize_static(
                model, str(tmp), reader,
                quant_format=QuantFormat.QDQ,
                per_channel=RECIPE["per_channel"],
                reduce_range=RECIPE["reduce_range"],
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=off_path,
                extra_options={"CalibStridedMinMax": 1},  # one batch per pass: bounded memory
            )
        os.replace(tmp, out)
    except Exception as exc:
        raise WeightsError(f"The INT8 model could not be made from {fp32.name}: {type(exc).__name__}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
        pre.unlink(missing_ok=True)
        pre.with_name(pre.name + ".data").unlink(missing_ok=True)
    log.debug("quantize_static said: %s", chatter.getvalue())


def ensure_int8(fp32: Path, files: Sequence[str | os.PathLike], *, preprocess: Callable, draft_size: int | None,
                source: str = "") -> Path:
    """The INT8 model of ``fp32`` calibrated on ``files``: from the cache, or made now and cached."""
    files = [str(f) for f in files]
    if not files:
        raise WeightsError("An INT8 model needs at least one calibration image.")
    key = calibration_key(files)
    out = int8_path(fp32, key)
    if out.is_file() and read_info(out).get("key") == key:
        return out
    t0 = time.perf_counter()
    log.warning("making the INT8 model: calibrating %s on %d images (once; cached as %s)",
                fp32.name, len(files), out.name)
    arrays, skipped = load_calibration_arrays(files, preprocess, draft_size)
    quantize_onnx(fp32, out, arrays)
    write_json(info_path(out), {
        "key": key,
        "fp32_model": fp32.name,
        "recipe": RECIPE,
        "source": source,
        "images": len(arrays),
        "files": files,
        "skipped": skipped,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 1),
        "onnxruntime": _ort_version(),
    })
    return out


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
