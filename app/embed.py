"""Embedding: torchvision ResNet-50 without its classifier, 2048-d, L2-normalised float32.

Two engines run the same network:

* ``onnx``: ONNX Runtime on the CPU. The model is exported once from torchvision's ResNet-50 and
  cached beside the weights, keyed by the weights' id; the graph ONNX Runtime optimises from it
  (conv+bn+relu fusion, NCHWc layouts for this CPU) is cached beside it too, keyed by the runtime
  version and the CPU's instruction set, so later start-ups skip the optimisation. Sessions use
  one intra-op thread per core, sequential execution and spinning worker threads (measured on 2
  cores: batch 1 in ~47 ms, batch 32 at ~47 ms per image, vs ~71 and ~107 ms in PyTorch eager).
* ``torch``: PyTorch eager (``inference_mode``, eval, channels_last). Used on CUDA, and on the CPU
  when the export cannot be made (a one-line notice says so).

Weights (``--weights``):

* ``imagenet`` (default): ``ResNet50_Weights.DEFAULT`` from torchvision's cache, downloaded on first use;
* a path to a local state-dict file;
* ``untrained``: a seeded random init of the same network, for tests and benchmarks. Its vectors
  mean nothing semantically; the CLI and the UI say so whenever it is active.

Preprocessing is the weights' own transform (resize the short side to 232 with bilinear
filtering, centre-crop 224, ImageNet mean/std), done with Pillow and numpy so the query path
and DataLoader workers need no torch. A test checks it against ``ResNet50_Weights.DEFAULT.transforms()``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import platform
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .atomic import write_bytes
from .errors import WeightsError

log = logging.getLogger(__name__)

DIM = 2048
# ResNet50_Weights.DEFAULT (IMAGENET1K_V2).transforms(); checked against torchvision in the tests.
RESIZE_SIZE = 232
CROP_SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGENET_WEIGHTS_NAME = "IMAGENET1K_V2"
IMAGENET_WEIGHTS_FILE = "resnet50-11ad3fa6.pth"  # ResNet50_Weights.IMAGENET1K_V2.url's file name
UNTRAINED_SEED = 0
ONNX_EXPORT_VERSION = 1  # bump when the exported graph changes
UNTRAINED_NOTICE = (
    "Using UNTRAINED weights (seeded random init): results are not semantically meaningful. "
    "Use --weights imagenet or --weights PATH for real results."
)


def preprocess(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> normalised float32 array of shape (3, 224, 224).

    The same geometry as torchvision's transform (short side resized to 232, centre crop 224),
    but only the crop is resampled (Pillow's ``resize(box=...)``): the result matches resize-then-
    crop to within one grey level, and a 2 x 20000 image costs no more than a normal photo.
    """
    w, h = img.size
    if w <= h:
        new_w, new_h = RESIZE_SIZE, int(RESIZE_SIZE * h / w)
    else:
        new_w, new_h = int(RESIZE_SIZE * w / h), RESIZE_SIZE
    top = int(round((new_h - CROP_SIZE) / 2.0))
    left = int(round((new_w - CROP_SIZE) / 2.0))
    if (new_w, new_h) == (w, h):
        img = img.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))
    else:
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + CROP_SIZE) * sx, (top + CROP_SIZE) * sy)
        img = img.resize((CROP_SIZE, CROP_SIZE), Image.BILINEAR, box=box)
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    arr = (arr - MEAN) / STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class WeightsSpec:
    """Which weights to use: ``imagenet``, ``untrained`` or a local file."""

    kind: str  # "imagenet" | "untrained" | "file"
    path: Path | None = None

    @classmethod
    def parse(cls, text: str | os.PathLike | None) -> "WeightsSpec":
        value = str(text or "imagenet").strip()
        if value.lower() in ("imagenet", "default", IMAGENET_WEIGHTS_NAME.lower()):
            return cls("imagenet")
        if value.lower() == "untrained":
            return cls("untrained")
        path = Path(value).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"Weights file not found: {path}.",
                hint="Pass --weights imagenet, --weights untrained, or the path of a ResNet-50 state-dict file.",
            )
        return cls("file", path.resolve())

    @property
    def untrained(self) -> bool:
        return self.kind == "untrained"

    def weights_id(self) -> str:
        """A stable id recorded in every manifest; an index refuses to load under another id."""
        if self.kind == "imagenet":
            return f"resnet50/{IMAGENET_WEIGHTS_NAME}/{IMAGENET_WEIGHTS_FILE.split('-')[1].split('.')[0]}"
        if self.kind == "untrained":
            # torch's init for a given seed is stable within a release, not across releases.
            return f"resnet50/untrained-seed{UNTRAINED_SEED}/torch-{_torch_version()}"
        assert self.path is not None
        return f"resnet50/file-sha256-{_file_sha256(self.path)[:16]}"

    def describe(self) -> str:
        if self.kind == "file":
            return f"file {self.path}"
        return self.kind


def _torch_version() -> str:
    try:
        return metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        return "unknown"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def cuda_available() -> bool:
    """True when torch sees a CUDA device. Avoids importing torch on machines with no NVIDIA driver."""
    if not (os.path.exists("/dev/nvidiactl") or os.environ.get("CUDA_VISIBLE_DEVICES")):
        return False
    import torch

    return bool(torch.cuda.is_available())


def build_torch_model(spec: WeightsSpec) -> Any:
    """torchvision ResNet-50 with the classifier replaced by Identity, in eval mode, on the CPU."""
    import torch
    from torchvision.models import resnet50

    if spec.kind == "untrained":
        devices = []  # fork_rng over the CPU generator only
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(UNTRAINED_SEED)
            model = resnet50(weights=None)
    else:
        model = resnet50(weights=None)
        model.load_state_dict(_load_state_dict(spec))
    model.fc = torch.nn.Identity()
    return model.eval()


def _load_state_dict(spec: WeightsSpec) -> dict:
    import torch

    if spec.kind == "imagenet":
        from .download import ensure_imagenet_weights
        from .errors import DownloadError

        try:
            path = ensure_imagenet_weights(progress=True)
        except DownloadError as exc:
            raise WeightsError(str(exc), hint=exc.hint) from exc
    else:
        assert spec.path is not None
        path = spec.path
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise WeightsError(f"Could not read the weights file {path}: {exc}") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or "conv1.weight" not in {k.removeprefix("module.") for k in state}:
        raise WeightsError(f"{path} does not hold ResNet-50 weights (no conv1.weight).")
    return {k.removeprefix("module."): v for k, v in state.items()}


class Embedder:
    """Turns images into L2-normalised 2048-d float32 vectors. Loads the model lazily."""

    dim = DIM

    def __init__(
        self,
        weights: WeightsSpec | str = "imagenet",
        *,
        engine: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        spinning: bool = True,
    ) -> None:
        """``threads``: intra-op threads (default: every core). ``spinning``: let ONNX Runtime's
        idle worker threads spin between operators (a few ms lower latency per image; turn it off
        to leave the cores to other work between calls)."""
        self.spec = weights if isinstance(weights, WeightsSpec) else WeightsSpec.parse(weights)
        if engine not in ("auto", "onnx", "torch"):
            raise ValueError(f"engine must be auto, onnx or torch, not {engine!r}")
        self.requested_engine = engine
        self.requested_device = device
        self.threads = threads
        self.spinning = spinning
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.engine: str | None = None  # resolved on load: "onnx", "torch-cpu" or "torch-cuda"
        self.notices: list[str] = [UNTRAINED_NOTICE] if self.spec.untrained else []
        self._weights_id: str | None = None
        self._run = None
        self._lock = threading.Lock()

    @property
    def weights_id(self) -> str:
        if self._weights_id is None:
            self._weights_id = self.spec.weights_id()
        return self._weights_id

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> "Embedder":
        with self._lock:
            if self._run is None:
                self._run = self._make_runner()
        return self

    def _make_runner(self):
        want = self.requested_engine
        device = self.requested_device
        use_cuda = device == "cuda" or (device == "auto" and want != "onnx" and cuda_available())
        if want == "torch" or use_cuda:
            return self._torch_runner("cuda" if use_cuda else "cpu")
        try:
            return self._onnx_runner()
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            if want == "onnx":
                raise WeightsError(f"The ONNX Runtime engine could not be started: {exc}") from exc
            notice = f"ONNX export/runtime unavailable ({type(exc).__name__}: {exc}); using PyTorch instead."
            log.warning(notice)
            self.notices.append(notice)
            return self._torch_runner("cpu")

    def _torch_runner(self, device: str):
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        model = build_torch_model(self.spec).to(device)
        model = model.to(memory_format=torch.channels_last)
        self.engine = f"torch-{device}"

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
                return model(x).float().cpu().numpy()

        return run

    def onnx_path(self) -> Path:
        """Where the exported model is cached: beside the weights, keyed by the weights' id."""
        key = hashlib.sha256(self.weights_id.encode()).hexdigest()[:16]
        name = f"resnet50-features-{key}-v{ONNX_EXPORT_VERSION}.onnx"
        if self.spec.kind == "imagenet":
            from .download import imagenet_weights_path

            return imagenet_weights_path().parent / name
        if self.spec.kind == "file" and self.spec.path is not None and os.access(self.spec.path.parent, os.W_OK):
            return self.spec.path.parent / name
        base = self.cache_dir or Path(os.path.expanduser("~")) / ".cache" / "reverse-image-search"
        return base / "onnx" / name

    def _onnx_runner(self):
        import onnxruntime as ort

        path = self.onnx_path()
        if not path.is_file():
            export_onnx(self.spec, path)
        session = _onnx_session(ort, path, self.threads, self.spinning)
        input_name = session.get_inputs()[0].name
        self.engine = "onnx"

        def run(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: batch})[0]

        return run

    # -- embedding -------------------------------------------------------------------------
    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, 224, 224) preprocessed float32 -> (N, 2048) L2-normalised float32."""
        self.load()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (3, CROP_SIZE, CROP_SIZE):
            raise ValueError(f"expected (N, 3, {CROP_SIZE}, {CROP_SIZE}), got {batch.shape}")
        return l2_normalize(self._run(batch))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_arrays(np.stack([preprocess(im) for im in images]))


def export_onnx(spec: WeightsSpec, path: Path) -> Path:
    """Export torchvision's ResNet-50 (classifier removed) to ONNX with a dynamic batch axis."""
    import torch

    model = build_torch_model(spec)
    dummy = torch.zeros(1, 3, CROP_SIZE, CROP_SIZE)
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (dummy,),
        buf,
        input_names=["input"],
        output_names=["features"],
        dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    write_bytes(path, buf.getvalue())
    log.info("exported ONNX model to %s", path)
    return path


def _onnx_session(ort: Any, path: Path, threads: int | None, spinning: bool):
    """An ONNX Runtime CPU session for ``path``, reusing a cached optimised graph when there is one.

    The first load optimises the graph (constant folding, conv+bn+relu fusion, NCHWc layouts for
    this CPU's vector width) and saves the result beside the model, keyed by the ONNX Runtime
    version and the CPU's features; later loads skip the optimisation (~0.3-0.6 s of start-up).
    """
    optimized = path.with_name(f"{path.stem}.ort-{ort.__version__}-{_cpu_key()}.onnx")
    attempts: list[tuple[Path, bool]] = [(optimized, False)] if optimized.is_file() else []
    attempts.append((path, True))
    error: Exception | None = None
    for source, save in attempts:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3  # not the "optimised model is hardware specific" warning: it is keyed so
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if save else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        tmp = optimized.with_name(f".{optimized.name}.{os.getpid()}.tmp")
        if save and os.access(path.parent, os.W_OK):
            opts.optimized_model_filepath = str(tmp)  # renamed into place once complete
        try:
            session = ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
            if tmp.is_file():
                os.replace(tmp, optimized)
            return session
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            tmp.unlink(missing_ok=True)
            error = exc
            if source == optimized:
                log.info("cached optimised model %s unusable (%s); optimising again", optimized, exc)
                optimized.unlink(missing_ok=True)
    raise RuntimeError(f"cannot load {path}: {error}") from error


def _cpu_key() -> str:
    """A short hash of the CPU's architecture and instruction-set flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha256(f"{platform.machine()}|{flags}".encode()).hexdigest()[:10]
