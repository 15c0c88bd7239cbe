#!/usr/bin/env python3
"""Make the annotated object set (VOC layout) from Caltech101: see app/metrics/object_set.py.

    python scripts/make_object_set.py --caltech ../shared/datasets/caltech101 --out data/objects-set [--images 300] [--seed 0]
"""

import argparse
import json
import sys

from app.metrics.object_set import make_object_set

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--caltech", required=True, help="Caltech101 folder (holding 101_ObjectCategories)")
    p.add_argument("--out", required=True, help="folder to write (JPEGImages/, Annotations/, ImageSets/)")
    p.add_argument("--images", type=int, default=300, help="pictures to make (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--per-image", type=int, default=3, help="at most this many objects per picture (default 3)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.3, 0.55), metavar=("MIN", "MAX"),
                   help="an object's longer side, as a fraction of the picture's width (default 0.3 0.55)")
    args = p.parse_args()
    print(json.dumps(make_object_set(args.caltech, args.out, images=args.images, seed=args.seed,
                                     max_per_image=args.per_image, scale=tuple(args.scale))))
    sys.exit(0)
