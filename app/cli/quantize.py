"""``quantize``: make the INT8 model that ``--engine onnx-int8`` runs, calibrated on a sample of a
built collection's images (ONNX Runtime static quantisation; see app/core/quantize.py).

    python -m app.cli quantize --collection caltech101 --model efficientnet-lite0
    python -m app.cli search photo.jpg --collection caltech101 --model efficientnet-lite0 --engine onnx-int8

A build with --engine onnx-int8 makes one from its own images; this command makes one for
collections built with fp32 (their index serves INT8 queries as it is). Made once per weights and
calibration set, then cached beside the fp32 ONNX export.
"""

from __future__ import annotations

import argparse
import json

from app.cli.common import config_from_args


def add_quantize_args(p: argparse.ArgumentParser) -> None:
    from app.core.models import DEFAULT_MODEL, model_names
    from app.core.quantize import CALIBRATION_IMAGES

    p.add_argument("--collection", required=True, metavar="NAME",
                   help="a built collection whose images calibrate the model (any model's build)")
    p.add_argument("--model", default=None, choices=model_names(), help=f"the model to quantise (default: {DEFAULT_MODEL})")
    p.add_argument("--weights", default=None, help="imagenet (default), untrained, or a state-dict path")
    p.add_argument("--features", default=None, metavar="DIR", help="folder of stored features (default: features/)")
    p.add_argument("--images", type=int, default=CALIBRATION_IMAGES, metavar="N",
                   help=f"calibration images, spread over the labels (default {CALIBRATION_IMAGES})")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--json", action="store_true")


def cmd_quantize(args: argparse.Namespace) -> int:
    from app.errors import AppError
    from app.service.build import quantize_for_collection

    if args.images < 1:
        raise AppError("--images must be a positive number.")
    result = quantize_for_collection(config_from_args(args), args.collection, images=args.images)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    cal = result["calibration"] or {}
    print(f"INT8 model for {result['model']} ({result['weights_id']}): {result['int8_model']}")
    print(f"  calibrated on {cal.get('images')} images of {cal.get('source')} (key {cal.get('key')})")
    print(f"  used by --engine onnx-int8 with --model {result['model']}"
          + ("" if args.weights in (None, "imagenet") else f" --weights {args.weights}"))
    return 0
