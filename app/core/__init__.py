"""Layer 3, core: what an image becomes. The one image loader, the model registry (as data), weights,
preprocessing, the embedder (ONNX Runtime or PyTorch), datasets, the feature store and the typed
index manifest. Nothing heavy happens at import: torch, timm and ONNX Runtime load on first use."""

from app.core.datasets import Dataset, Item, image_files, load_dataset
from app.core.embed import Embedder, embedder_for, l2_normalize
from app.core.features import FeatureTable, extract_features, feature_paths, load_features
from app.core.images import load_image
from app.core.manifest import Manifest, migrate_v1_to_v2
from app.core.models import MODELS, ModelSpec, Preprocessing, get_model, model_names
from app.core.preprocess import preprocess
from app.core.thumbnails import Rendition, Thumbnails
from app.core.weights import WeightsSpec, build_torch_model

__all__ = [
    "MODELS",
    "Dataset",
    "Embedder",
    "FeatureTable",
    "Item",
    "Manifest",
    "ModelSpec",
    "Preprocessing",
    "Rendition",
    "Thumbnails",
    "WeightsSpec",
    "build_torch_model",
    "embedder_for",
    "extract_features",
    "feature_paths",
    "get_model",
    "image_files",
    "l2_normalize",
    "load_dataset",
    "load_features",
    "load_image",
    "migrate_v1_to_v2",
    "model_names",
    "preprocess",
]
