"""``evaluate-objects``: object detection AP50 and object-query hit@5 on a VOC-layout folder
(``scripts/evaluate_objects.py``).

Detection: AP50 per class the detector knows (VOC names mapped to COCO's), their mean, and the mean
over VOC's own classes. Search (with a real model, skipped with ``--no-search``): every annotated box's
crop searched among the detected objects of the other photos (object hit@k: a returned box overlaps a true
box of the class with IoU >= 0.5) and among the whole other photos (the baseline, the whole photo as the
returned box under the same rule); both also at the photo level (the returned photo holds the class).
Make an annotated set with ``scripts/make_object_set.py``.
"""

from __future__ import annotations

import argparse
import json

from app.cli.common import config_from_args


def add_evaluate_objects_args(p: argparse.ArgumentParser) -> None:
    from app.core.detectors import DEFAULT_DETECTOR, detector_names
    from app.core.models import model_names

    p.add_argument("--data", required=True, metavar="DIR", help="a VOC-layout folder (Annotations/*.xml, JPEGImages/)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=detector_names())
    p.add_argument("--model", default="efficientnet-lite0", choices=model_names(),
                   help="embedding model of the search half (default efficientnet-lite0, real weights)")
    p.add_argument("--weights", default=None, help="imagenet (default), untrained (speed only) or a state dict")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N annotated pictures")
    p.add_argument("-k", type=int, default=5, help="hit@k (default 5)")
    p.add_argument("--no-search", action="store_true", help="detection AP only")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_evaluate_objects(args: argparse.Namespace) -> int:
    from app.core.detect import Detector
    from app.core.embed import embedder_for
    from app.metrics.object_eval import detection_ap, read_voc

    config = config_from_args(args)
    detector = Detector(config.cache_dir, args.detector, threads=args.threads).load()
    images = read_voc(args.data, detector.spec.labels, limit=args.limit)
    found: dict = {}
    report = {"data": str(args.data), "detector": detector.spec.name,
              "detection": detection_ap(detector, images, found_per_image=found)}
    if not args.no_search:
        from app.metrics.object_search_eval import object_query_hits

        embedder = embedder_for(config)
        report["search"] = {"model": embedder.model.name, "weights_id": embedder.weights_id,
                            **object_query_hits(embedder, images, found, k=args.k)}
    if args.json:
        print(json.dumps(report))
        return 0
    det = report["detection"]
    print(f"{det['images']} pictures, {det['classes']} classes: mAP50 {det['map50']} (VOC classes {det['map50_voc']})")
    for label, ap in det["ap50"].items():
        print(f"  {label:14s} AP50 {ap:.4f}")
    if "search" in report:
        s, k = report["search"], args.k
        print(f"object-query hit@{k} {s[f'object_hit_at_{k}']} vs whole-image hit@{k} "
              f"{s[f'whole_image_hit_at_{k}']} (a result that locates the object, IoU >= 0.5; "
              f"{s['queries']} queries, {s['objects']} objects, {s['model']})")
        print(f"photo level (the result's photo holds the class anywhere): objects "
              f"{s[f'object_photo_hit_at_{k}']}, whole images {s[f'whole_image_photo_hit_at_{k}']}")
    return 0
