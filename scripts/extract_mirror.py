#!/usr/bin/env python3
"""Plain and mirrored (left-right flipped) vectors of a Caltech101 folder, for the re-ranking study.

    nice python scripts/extract_mirror.py --data /work/shared/datasets/caltech101 \
        --model efficientnet-lite0 --out runs/lite0_mirror.npz

Writes one ``.npz``: ``plain`` and ``mirror`` (N, dim) float32 L2-normalised, ``labels`` and ``paths``.
Each image is decoded once; both views go through the model in the same batch. Measurement only: the
app never runs this.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    from PIL import Image

    from app.core.datasets import load_dataset
    from app.core.embed import Embedder
    from app.core.images import load_image

    ds = load_dataset("caltech101", args.data)
    emb = Embedder("imagenet", model=args.model, engine="onnx", threads=args.threads)
    plain, mirror, t0 = [], [], time.perf_counter()
    items = list(ds.items)
    for s in range(0, len(items), args.batch):
        arrs, flips = [], []
        for it in items[s : s + args.batch]:
            img = load_image(ds.image_root / it.path, draft_size=emb.preprocessing.resize)
            arrs.append(emb.preprocess(img))
            flips.append(emb.preprocess(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
        out = emb.embed_arrays(np.stack(arrs + flips))
        plain.append(out[: len(arrs)])
        mirror.append(out[len(arrs) :])
        if s // args.batch % 20 == 0:
            print(f"{s + len(arrs)}/{len(items)} {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, plain=np.concatenate(plain).astype(np.float32), mirror=np.concatenate(mirror).astype(np.float32),
             labels=np.array(["|".join(it.labels) for it in items]), paths=np.array([it.path for it in items]))
    print(f"wrote {args.out}: {len(items)} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
