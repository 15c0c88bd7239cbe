"""Make ``tests/data/json_table_collection/``: a small collection as the app wrote it before the SQLite
feature table (commit 87c53d4): the vectors ``.npy``, the JSON table (format 3), the faiss index and the
manifest, after one build and one delete (so it holds a tombstone and an excluded path).

It must be run with that version of the app (``git worktree add /tmp/old 87c53d4``, then
``PYTHONPATH=/tmp/old python scripts/make_table_fixture.py``): today's app writes SQLite tables.
The images are generated from a seed (tests/helpers.py) with the model-free FakeEmbedder (1280-d, as EfficientNet-Lite0).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Config  # noqa: E402
from app.service.build import BuildSpec, build_collection  # noqa: E402
from app.service.library import delete_items  # noqa: E402
from tests.fakes import FakeEmbedder  # noqa: E402
from tests.helpers import make_image_folder  # noqa: E402

OUT = ROOT / "tests" / "data" / "json_table_collection"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        make_image_folder(photos, per_class=4, seed=7)
        config = Config(indexes_dir=Path(tmp) / "indexes", features_dir=Path(tmp) / "features", workers=0)
        fake = FakeEmbedder(dim=1280)
        build_collection(config, BuildSpec(data=photos, kind="folder", name="legacy", factory="Flat"),
                         embedder=fake, progress_bar=False)
        delete_items(config, "legacy", ids=[2])
        if OUT.exists():
            shutil.rmtree(OUT)
        for sub in ("indexes", "features"):
            shutil.copytree(Path(tmp) / sub, OUT / sub, ignore=shutil.ignore_patterns("*.lock"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
