"""How well ``duplicates`` finds copies: an edited-copy benchmark made from real photos, and grouping at scale.

    python scripts/evaluate_duplicates.py --data ../shared/datasets/caltech101/101_ObjectCategories \
        --work /tmp/dups --model efficientnet-lite0 --json
    python scripts/evaluate_duplicates.py --work /tmp/dups --scale 100000 --json

The first makes ``WORK/bench`` (edits of real photos among same-category distractors, bursts, exact copies:
:mod:`app.metrics.dedup_bench`) once, builds it as the collection ``dupbench`` (``WORK/idx``, ``WORK/feat``)
with the given model, then prints precision and recall per tier, recall per kind of edit, each
``--strictness`` point, the precision-recall curve of the second check and the pooled cosine's alone.
``--scale N`` times grouping N vectors: the benchmark's real vectors repeated with small seeded noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.cli.common import add_common_args, config_from_args


def add_evaluate_duplicates_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/caltech101/101_ObjectCategories", metavar="DIR",
                   help="category folders of real photos (Caltech101's 101_ObjectCategories)")
    p.add_argument("--work", required=True, metavar="DIR", help="where the benchmark folder and its collection go")
    p.add_argument("--categories", type=int, default=20)
    p.add_argument("--edited", type=int, default=5, help="photos edited per category")
    p.add_argument("--distractors", type=int, default=25, help="other photos per category")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=None, metavar="N", help="time grouping N vectors instead")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_common_args(p)


def cmd_evaluate_duplicates(args: argparse.Namespace) -> int:
    from app.metrics.dedup_bench import load_truth, make_benchmark
    from app.metrics.dedup_eval import evaluate_duplicates, scale_benchmark
    from app.service.library import index_folder

    work = Path(args.work)
    config = config_from_args(args).with_(
        model=args.model or "efficientnet-lite0", indexes_dir=args.indexes or work / "idx",
        features_dir=args.features or work / "feat")
    bench = work / "bench"
    if not (bench / "truth.json").exists():
        make_benchmark(args.data, bench, categories=args.categories, edited=args.edited,
                       distractors=args.distractors, seed=args.seed)
    index_folder(config, "dupbench", bench)
    if args.scale:
        result = scale_benchmark(config, "dupbench", args.scale, seed=args.seed)
    else:
        result = evaluate_duplicates(config, "dupbench", load_truth(bench))
    print(json.dumps(result) if args.json else _text(result))
    return 0


def _text(result: dict) -> str:
    if "scale" in result:
        return "\n".join(f"{k}: {v}" for k, v in result.items())
    lines = [f"{result['collection']}: {result['items']} photos, {result['candidate_pairs']} candidate pairs, "
             f"{result['seconds']} s"]
    for name, point in result["points"].items():
        tiers = ", ".join(f"{t} P {m['precision']:.3f} R {m['recall']:.3f}" for t, m in point["tiers"].items())
        lines.append(f"strictness {name}: {tiers}")
        lines.append("  edited recall by kind: " + ", ".join(f"{k} {v:.2f}"
                                                            for k, v in point["edited_recall_by_kind"].items()))
    lines.append("second check curve (min inliers: P / R): " + ", ".join(
        f"{c['min_inliers']}: {c['precision']:.3f}/{c['recall']:.3f}" for c in result["curve"]))
    lines.append("pooled cosine alone (cosine: P / R): " + ", ".join(
        f"{c['cosine']}: {c['precision']:.3f}/{c['recall']:.3f}" for c in result["cosine_only_curve"]))
    return "\n".join(lines)
