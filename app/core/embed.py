"""Embedding: a registered model (``app.core.models``) without its classifier, L2-normalised float32.

Three engines run the same network:

* ``onnx``: ONNX Runtime on the CPU. The model is exported once from its library (torchvision or
  timm) and cached, keyed by the weights' id (ResNet-50's beside torch's weights cache, the others
  under the cache folder); the graph ONNX Runtime optimises from it (conv+bn+relu fusion, NCHWc
  layouts for this CPU) is cached beside it too, keyed by the runtime version and the CPU's
  instruction set, so later start-ups skip the optimisation. Sessions use one intra-op thread per
  core, sequential execution and spinning worker threads (measured on 2 cores, ResNet-50: batch 1
  in ~47 ms, batch 32 at ~47 ms per image, vs ~71 and ~107 ms in PyTorch eager).
* ``onnx-int8``: ONNX Runtime on the CPU with a statically quantised (INT8, QDQ) copy of the export,
  calibrated on collection images (:mod:`app.core.quantize`), opt-in. Its vectors stay comparable with
  fp32 ones (same weights id): an index built with one engine serves queries from the other. Made by
  a build (:meth:`Embedder.calibrate` with a sample of its images) and cached beside the export; for
  search it uses the newest INT8 model of its weights id, and with none it stops with the command
  that makes one. It never falls back to fp32.
* ``torch``: PyTorch eager (``inference_mode``, eval, channels_last). Used on CUDA, and on the CPU
  when the export cannot be made (a one-line notice says so).

``auto`` is ``onnx`` on a CPU and ``torch`` on CUDA. INT8 is no model's default (measured: README,
Performance, "INT8").

Which weights (``imagenet``, a file, or ``untrained``) is :mod:`app.core.weights`; how images become
network input is :mod:`app.core.preprocess`, following the model's registry entry.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import platform
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.core import quantize
from app.core.models import ENGINES, ModelSpec, Preprocessing, get_model
from app.core.preprocess import preprocess
from app.core.quantize import read_info
from app.core.weights import UNTRAINED_NOTICE, WeightsSpec, build_torch_model
from app.errors import WeightsError
from app.files.atomic import write_bytes
from app.net.download import imagenet_weights_path

log = logging.getLogger(__name__)

ONNX_EXPORT_VERSION = 1  # bump when the exported graph changes


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cuda_available() -> bool:
    """True when torch sees a CUDA device. Avoids importing torch on machines with no NVIDIA driver."""
    if not (os.path.exists("/dev/nvidiactl") or os.environ.get("CUDA_VISIBLE_DEVICES")):
        return False
    import torch

    return bool(torch.cuda.is_available())


class Embedder:
    """Turns images into L2-normalised float32 vectors of ``dim`` values. Loads the model lazily."""

    def __init__(
        self,
        weights: WeightsSpec | str = "imagenet",
        *,
        model: ModelSpec | str | None = None,
        engine: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        spinning: bool = True,
    ) -> None:
        """``model``: a registry name (default resnet50). ``threads``: intra-op threads (default:
        every core). ``spinning``: let ONNX Runtime's idle worker threads spin between operators
        (a few ms lower latency per image; turn it off to leave the cores to other work)."""
        self.model = get_model(model)
        self.spec = weights if isinstance(weights, WeightsSpec) else WeightsSpec.parse(weights)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        self.requested_engine = engine
        self.requested_device = device
        self.threads = threads
        self.spinning = spinning
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.engine: str | None = None  # resolved on load: "onnx", "onnx-int8", "torch-cpu" or "torch-cuda"
        self.notices: list[str] = [UNTRAINED_NOTICE] if self.spec.untrained else []
        self.int8_model: Path | None = None  # with engine "onnx-int8": the quantised model in use
        self._calibration: tuple[list[Path], str] | None = None
        self._weights_id: str | None = None
        self._run = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def preprocessing(self) -> Preprocessing:
        return self.model.preprocessing

    @property
    def weights_id(self) -> str:
        if self._weights_id is None:
            self._weights_id = self.spec.weights_id(self.model)
        return self._weights_id

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """An RGB image -> this model's input array (3, crop, crop)."""
        return preprocess(img, self.model.preprocessing)

    @property
    def loaded(self) -> bool:
        return self._run is not None

    @property
    def wants_int8(self) -> bool:
        """True for the INT8 engine (``onnx-int8``), which a build calibrates on its images."""
        return self.requested_engine == "onnx-int8"

    def calibrate(self, files, *, source: str = "") -> "Embedder":
        """Use the INT8 model calibrated on these image files (made on :meth:`load` when not cached).
        Only for an embedder that :attr:`wants_int8`, before it is loaded."""
        if not self.wants_int8:
            raise ValueError(f"calibrate() is for the INT8 engine, not {self.requested_engine!r}")
        if self.loaded:
            raise RuntimeError("calibrate() must come before the model is loaded")
        self._calibration = ([Path(f) for f in files], source)
        return self

    @property
    def int8_info(self) -> dict[str, Any] | None:
        """What the INT8 model in use was calibrated on (None for other engines)."""
        if self.engine != "onnx-int8" or self.int8_model is None:
            return None

        info = read_info(self.int8_model)
        return {"key": info.get("key", ""), "images": info.get("images", 0), "source": info.get("source", ""),
                "model_file": self.int8_model.name}

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> "Embedder":
        with self._lock:
            if self._run is None:
                self._run = self._make_runner()
        return self

    def _make_runner(self):
        want = self.requested_engine
        device = self.requested_device
        if want == "onnx-int8":
            if device == "cuda":
                raise WeightsError("--engine onnx-int8 runs on the CPU; it cannot use --device cuda.")
            return self._int8_runner()
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
        model = build_torch_model(self.model, self.spec).to(device)
        model = model.to(memory_format=torch.channels_last)
        self.engine = f"torch-{device}"

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
                return model(x).float().cpu().numpy()

        return run

    def onnx_path(self) -> Path:
        """Where the exported model is cached, keyed by the weights' id: beside torchvision's
        downloaded weights, beside a local weights file, or else under the cache folder."""
        key = hashlib.sha256(self.weights_id.encode()).hexdigest()[:16]
        name = f"{self.model.name}-features-{key}-v{ONNX_EXPORT_VERSION}.onnx"
        if self.spec.kind == "imagenet" and self.model.weights_source == "torchvision-download":

            return imagenet_weights_path().parent / name
        if self.spec.kind == "file" and self.spec.path is not None and os.access(self.spec.path.parent, os.W_OK):
            return self.spec.path.parent / name
        base = self.cache_dir or Path(os.path.expanduser("~")) / ".cache" / "reverse-image-search"
        return base / "onnx" / name

    def _onnx_runner(self):
        import onnxruntime as ort

        path = self.onnx_path()
        if not path.is_file():
            export_onnx(self.model, self.spec, path)
        session = _onnx_session(ort, path, self.threads, self.spinning)
        input_name = session.get_inputs()[0].name
        self.engine = "onnx"

        def run(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: batch})[0]

        return run

    def _int8_runner(self):
        """ONNX Runtime on the INT8 model: the one calibrated on :meth:`calibrate`'s images (made and
        cached when missing), else the newest one made for these weights."""
        import onnxruntime as ort


        fp32 = self.onnx_path()
        if self._calibration is not None:
            files, source = self._calibration
            try:
                if not fp32.is_file():
                    export_onnx(self.model, self.spec, fp32)
            except (ImportError, OSError, RuntimeError, ValueError) as exc:
                raise WeightsError(f"The INT8 engine needs the ONNX export, which failed: {exc}") from exc
            path = quantize.ensure_int8(fp32, files, preprocess=self.preprocess,
                                        draft_size=self.preprocessing.resize, source=source)
        else:
            found = quantize.find_int8(fp32)
            if found is None:
                weights = "" if self.spec.kind == "imagenet" else f" --weights {self.spec.arg()}"
                raise quantize.Int8ModelMissing(
                    f"There is no INT8 model for {self.model.name} ({self.weights_id}) yet.",
                    hint=f"Make one from a built collection's images: python -m app.cli quantize "
                         f"--collection NAME --model {self.model.name}{weights} (or build a collection "
                         f"with --engine onnx-int8).")
            path = found
        try:
            session = _onnx_session(ort, path, self.threads, self.spinning)
        except RuntimeError as exc:
            raise WeightsError(f"The INT8 model {path} could not be loaded: {exc}") from exc
        input_name = session.get_inputs()[0].name
        self.engine = "onnx-int8"
        self.int8_model = path

        def run(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: batch})[0]

        return run

    # -- embedding -------------------------------------------------------------------------
    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, crop, crop) preprocessed float32 -> (N, dim) L2-normalised float32."""
        self.load()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        shape = self.model.preprocessing.input_shape
        if batch.ndim != 4 or batch.shape[1:] != shape:
            raise ValueError(f"expected (N, {', '.join(map(str, shape))}), got {batch.shape}")
        return l2_normalize(self._run(batch))


def embedder_for(config: Any) -> Embedder:
    """The embedder a :class:`app.config.Config` asks for (model, weights, engine, device, threads)."""
    return Embedder(config.weights, model=config.model, engine=config.engine, device=config.device,
                    threads=config.threads, cache_dir=config.cache_dir)


def export_onnx(model: ModelSpec, spec: WeightsSpec, path: Path) -> Path:
    """Export the model's feature extractor (classifier removed) to ONNX with a dynamic batch axis."""
    import torch

    module = build_torch_model(model, spec)
    dummy = torch.zeros(1, *model.preprocessing.input_shape)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # "legacy TorchScript-based exporter": chosen on purpose (see below)
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(torch, module, dummy, buf)
    write_bytes(path, buf.getvalue())
    log.info("exported ONNX model to %s", path)
    return path


def _export(torch: Any, module: Any, dummy: Any, buf: io.BytesIO) -> None:
    """The TorchScript exporter: ~1.7 s for ResNet-50 where the dynamo one took 8 s and needs onnxscript."""
    torch.onnx.export(
        module,
        (dummy,),
        buf,
        input_names=["input"],
        output_names=["features"],
        dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


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
