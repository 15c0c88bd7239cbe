"""Get the app ready to run: weights, datasets and indexes, each only where missing.

``scripts/run.sh`` calls ``python -m app.cli prepare [app arguments]`` before ``python -m app``.
Arguments it does not know (``--host``, ``--port``...) are left for the app.

Offline, or when a download fails, it says how to use a local dataset copy and a local weights
file. It stops (exit 2) only when no collection at all can be served; otherwise the app starts with
what is ready and shows the rest as not built.
"""

from __future__ import annotations

import sys
from typing import Sequence

from app.config import Config
from app.core.embed import embedder_for
from app.errors import AppError
from app.index.faiss_store import load_index
from app.net.download import dataset_present, download_dataset
from app.service.build import BuildSpec, build_collection

LOCAL_COPY_HELP = """\
To run without network access, point the app at local copies, or use a model that needs no download:
  model:    scripts/run.sh --model efficientnet-lite0   (real ImageNet weights, installed with the packages)
  datasets: scripts/run.sh --data DIR     (DIR/caltech101/101_ObjectCategories, DIR/voc2012/VOCdevkit/VOC2012)
  weights:  scripts/run.sh --weights /path/to/resnet50-11ad3fa6.pth
            (or copy that file into ~/.cache/torch/hub/checkpoints/)
  a demo with random weights (results are NOT meaningful): scripts/run.sh --weights untrained"""


def prepare(config: Config, collections: Sequence[str], *, out=sys.stderr) -> list[str]:
    """Make each collection servable if possible; returns the names that are ready."""

    embedder = embedder_for(config)
    ready, problems = [], []
    for name in collections:
        try:
            load_index(config.indexes_dir, name, weights_id=embedder.weights_id, model=embedder.model.name)
            ready.append(name)
            print(f"{name}: index ready", file=out)
            continue
        except AppError as exc:
            print(f"{name}: {exc}", file=out)
        try:
            if not dataset_present(name, config.data_dir):
                print(f"{name}: downloading into {config.data_dir / name}", file=out)
                download_dataset(name, config.data_dir)
            print(f"{name}: building the index (resumable: interrupt and re-run any time)", file=out)
            build_collection(config, BuildSpec(kind=name, data=config.data_dir / name, name=name), embedder=embedder)
            ready.append(name)
        except AppError as exc:
            problems.append(f"{name}: {exc.user_message()}")
            print(f"{name}: not available: {exc.user_message()}", file=out)
    if problems:
        print("\n" + LOCAL_COPY_HELP, file=out)
    return ready
