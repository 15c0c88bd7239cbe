"""The one configuration object shared by the CLI, the scripts, the search service and the UI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "reverse-image-search"

# Collections the product knows how to download and build. Any other index found in the
# indexes folder (for example one built from a folder of the user's own photos) is served too.
KNOWN_COLLECTIONS = ("caltech101", "voc2012")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / APP_NAME


@dataclass(frozen=True)
class Config:
    # Where things live.
    data_dir: Path = PROJECT_ROOT / "data"
    indexes_dir: Path = PROJECT_ROOT / "indexes"
    features_dir: Path = PROJECT_ROOT / "features"
    cache_dir: Path = field(default_factory=_default_cache_dir)

    # Model.
    model: str = "resnet50"  # a name from the registry in app/core/models.py
    weights: str = "imagenet"  # "imagenet" | "untrained" | path to a state-dict file
    engine: str = "auto"  # "auto" | "onnx" | "onnx-int8" | "torch" (app.core.models.ENGINES)
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    threads: int | None = None  # intra-op threads; None = library default (all cores)
    batch_size: int = 32
    workers: int | None = None  # DataLoader workers; None = chosen from the core count

    # Search.
    backend: str = "faiss"  # "faiss" (local index files) | "milvus" (see app/index/milvus_store.py)
    milvus_uri: str | None = None  # http://host:19530, or a file path for embedded Milvus Lite
    milvus_token: str = ""
    milvus_timeout_s: float = 10.0  # connecting and each Milvus call (app.index.milvus_store)
    default_k: int = 5
    max_k: int = 20
    rerank: bool = True  # query expansion on the search path (app.index.rerank); --no-rerank: raw neighbours

    # Server.
    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[str, str] | None = None
    max_upload_mb: int = 20
    queue_size: int = 16
    state_sessions: int = 256  # browser and API sessions whose state the server keeps (oldest let go)
    library_roots: tuple[Path, ...] = ()  # folders the app may index from the page (--library-root)
    allow_loopback_urls: bool = False  # tests only: lets the URL fetcher reach 127.0.0.1

    def with_(self, **changes) -> "Config":
        """A copy with some fields changed (paths are converted to ``Path``)."""
        for key in ("data_dir", "indexes_dir", "features_dir", "cache_dir"):
            if key in changes and changes[key] is not None:
                changes[key] = Path(changes[key]).expanduser()
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **changes)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024
