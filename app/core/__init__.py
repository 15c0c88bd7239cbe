"""Layer 3, core: what an image becomes. The one image loader, the model registry (as data), weights,
preprocessing, the embedder (ONNX Runtime or PyTorch), datasets and the scan of messy folders, the
feature store and its versioned table, the plan of an incremental change, and the typed index
manifest. Nothing heavy happens at import: torch, timm and ONNX Runtime load on first use."""

from app.core.changes import ChangePlan, plan_changes
from app.core.datasets import Dataset, Item, image_files, load_dataset
from app.core.detect import DetectedObject, Detector, clip_box, crop_box
from app.core.detectors import DETECTORS, DetectorSpec, get_detector
from app.core.embed import Embedder, embedder_for, l2_normalize
from app.core.exclude import DEFAULT_EXCLUDES, ExcludeRules, exclude_rules
from app.core.feature_table import FeatureTable, migrate_table_v1_to_v2
from app.core.features import embed_dataset, extract_features, feature_paths, load_features
from app.core.images import load_image
from app.core.manifest import Manifest, migrate_v1_to_v2
from app.core.models import MODELS, ModelSpec, Preprocessing, get_model, model_names
from app.core.photo_meta import read_photo_meta
from app.core.preprocess import preprocess
from app.core.scan import FileStamp, Skipped, file_stamp, scan_folder, scan_paths
from app.core.thumbnails import Rendition, Thumbnails
from app.core.weights import WeightsSpec, build_torch_model

__all__ = [
    "DETECTORS",
    "DEFAULT_EXCLUDES",
    "MODELS",
    "ChangePlan",
    "Dataset",
    "DetectedObject",
    "Detector",
    "DetectorSpec",
    "Embedder",
    "ExcludeRules",
    "FeatureTable",
    "FileStamp",
    "Item",
    "Manifest",
    "ModelSpec",
    "Preprocessing",
    "Rendition",
    "Skipped",
    "Thumbnails",
    "WeightsSpec",
    "build_torch_model",
    "clip_box",
    "crop_box",
    "embed_dataset",
    "embedder_for",
    "exclude_rules",
    "extract_features",
    "feature_paths",
    "file_stamp",
    "get_detector",
    "get_model",
    "image_files",
    "l2_normalize",
    "load_dataset",
    "load_features",
    "load_image",
    "migrate_table_v1_to_v2",
    "migrate_v1_to_v2",
    "model_names",
    "plan_changes",
    "preprocess",
    "read_photo_meta",
    "scan_folder",
    "scan_paths",
]
