"""Layer 6, metrics: measuring the product. Pure retrieval metrics (mAP@10, mHR@10, P@5), the
leave-one-out evaluation of a collection and its index, and the speed benchmark."""

from app.metrics.bench import BenchOptions, format_bench, run_bench
from app.metrics.bench_objects import bench_objects
from app.metrics.evaluate import ensure_collection, evaluate_collection, format_result, retune_collection
from app.metrics.object_eval import detection_ap, read_voc
from app.metrics.object_search_eval import object_query_hits
from app.metrics.object_set import make_object_set
from app.metrics.retrieval import exact_neighbours, ranking_metrics, relevant_counts

__all__ = [
    "BenchOptions",
    "bench_objects",
    "detection_ap",
    "ensure_collection",
    "evaluate_collection",
    "exact_neighbours",
    "format_bench",
    "format_result",
    "make_object_set",
    "object_query_hits",
    "ranking_metrics",
    "read_voc",
    "relevant_counts",
    "retune_collection",
    "run_bench",
]
