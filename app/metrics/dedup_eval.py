"""Measuring the duplicate finder on a benchmark folder (:mod:`app.metrics.dedup_bench`) built as a collection.

Pair-level precision and recall per tier: the predicted pairs of a tier are the pairs of members of its
groups (for ``shots``, those not already in one edited group); a pair is right when both files come from
the same source (for ``exact``: a source of the exact role). Recall per kind of edit: the fraction of
(original, edited copy) pairs that end in one edited group. The precision-recall curve sweeps the second
check's inlier threshold (and, for comparison, a threshold on the pooled cosine alone).
"""

from __future__ import annotations

import json
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Config
from app.core.dedup_metrics import union_find_groups
from app.index.pair_search import FaissPairSearch
from app.service.commit import read_state
from app.service.dedup_store import PairGraph
from app.service.duplicates import (
    CANDIDATE_COS,
    NEIGHBOURS,
    STRICTNESS,
    Strictness,
    check_pair,
    refresh,
    tier_components,
)

INLIER_SWEEP = (4, 6, 8, 10, 12, 14, 16, 20, 24, 30, 40, 60)
COSINE_SWEEP = (0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98)


def evaluate_duplicates(config: Config, name: str, truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    state = read_state(config, name)
    data, graph, measured, searched = refresh(config, state, save=True)
    seconds = time.perf_counter() - t0
    info = _truth_by_id(state, truth)
    result: dict[str, Any] = {
        **_unit_costs(data, graph),
        "collection": name, "items": int(state.table.live_count), "candidate_pairs": int(len(graph.i)),
        "seconds": round(seconds, 2), "measured": measured, "searched": searched,
        "points": {}, "curve": [], "cosine_only_curve": [],
    }
    for point_name, point in STRICTNESS.items():
        result["points"][point_name] = {"params": point.__dict__, **score_point(state, data, graph, point, info)}
    default = STRICTNESS["default"]
    for n in INLIER_SWEEP:
        m = score_point(state, data, graph, Strictness(n, default.min_containment, default.shot_inliers, default.shot_cos),
                        info)
        result["curve"].append({"min_inliers": n, **m["tiers"]["edited"]})
    for c in COSINE_SWEEP:  # the pooled vector alone: edited = cosine >= c
        cos_only = PairGraph(graph.i, graph.j, graph.cos, np.where(graph.cos >= c, 10**6, 0).astype(np.int32),
                             np.ones(len(graph.i), np.float32), graph.covered, graph.floor)
        m = score_point(state, data, cos_only, Strictness(1, 0.0, 10**9, 2.0), info)
        result["cosine_only_curve"].append({"cosine": c, **m["tiers"]["edited"]})
    return result


REVIEWED = Path(__file__).with_name("caltech101_reviewed.json")


def _truth_by_id(state, truth: dict[str, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per item id its truth, with ``source`` (the original photo it was made from: ``category/stem``) and
    ``copy_of`` (that source, or the first of the reviewed copies it belongs to)."""
    reviewed = json.loads(REVIEWED.read_text()) if REVIEWED.exists() else {"copies": [], "shots": []}
    canonical = {s: group[0] for group in reviewed["copies"] for s in group}
    out = {}
    for i in state.table.live_ids().tolist():
        rel = state.table.paths[i]
        if rel in truth:
            source = rel.split("__")[0]
            out[i] = {**truth[rel], "source": source, "copy_of": canonical.get(source, source)}
    def pairs(key: str) -> set[frozenset[str]]:
        return {frozenset((canonical.get(a, a), canonical.get(b, b))) for g in reviewed.get(key, [])
                for a, b in combinations(g, 2)}

    shots, unsure = pairs("shots"), pairs("unsure")
    for t in out.values():
        t["_shots"], t["_unsure"] = shots, unsure
    return out


def score_point(state, data, graph: PairGraph, point: Strictness, info: dict[int, dict[str, Any]]) -> dict[str, Any]:
    comps = tier_components(state, data, graph, point)
    label = {t: {i: k for k, (m, _) in enumerate(c) for i in m} for t, c in comps.items()}
    tiers = {}
    for tier in ("exact", "edited", "shots"):
        predicted = set()
        for members, _ in comps[tier]:
            for a, b in combinations(members, 2):
                if tier == "shots" and label["edited"].get(a, -1) == label["edited"].get(b, -2):
                    continue
                predicted.add((a, b))
        true_pairs = _true_pairs(info, tier)
        predicted = {(a, b) for a, b in predicted if not _unsure(info, a, b)}
        right = sum(1 for a, b in predicted if _same_source(info, a, b, tier))
        found = sum(1 for a, b in true_pairs if label[tier].get(a, -1) == label[tier].get(b, -2))
        tiers[tier] = {"precision": round(right / len(predicted), 4) if predicted else 1.0,
                       "recall": round(found / len(true_pairs), 4) if true_pairs else 1.0,
                       "predicted_pairs": len(predicted), "true_pairs": len(true_pairs)}
    return {"tiers": tiers, "edited_recall_by_kind": _by_kind(info, label["edited"])}


def _unsure(info, a: int, b: int) -> bool:
    ta, tb = info.get(a), info.get(b)
    return bool(ta and tb and frozenset((ta["copy_of"], tb["copy_of"])) in ta["_unsure"])


def _same_source(info, a: int, b: int, tier: str) -> bool:
    """Is the pair right for ``tier``? exact: one exact source; edited: copies of one photo (bursts aside);
    shots: the same source, or a reviewed pair of shots."""
    ta, tb = info.get(a), info.get(b)
    if not ta or not tb:
        return False
    if tier == "exact":
        return ta["group"] is not None and ta["group"] == tb["group"] and ta["tier"] == "exact"
    same = ta["copy_of"] == tb["copy_of"]
    if tier == "edited":
        return same and ta["kind"] != "burst"
    return same or frozenset((ta["copy_of"], tb["copy_of"])) in ta["_shots"]


def _true_pairs(info, tier: str) -> list[tuple[int, int]]:
    groups: dict[str, list[int]] = {}
    for i, t in info.items():
        if t["group"] is not None and t["tier"] == tier:
            groups.setdefault(t["group"], []).append(i)
    return [p for ids in groups.values() for p in combinations(sorted(ids), 2)]


def _by_kind(info, label: dict[int, int]) -> dict[str, float]:
    originals = {t["group"]: i for i, t in info.items() if t["kind"] == "original" and t["tier"] == "edited"}
    hits: dict[str, list[bool]] = {}
    for i, t in info.items():
        if t["tier"] == "edited" and t["kind"] != "original":
            o = originals.get(t["group"])
            hits.setdefault(t["kind"], []).append(o is not None and label.get(i, -1) == label.get(o, -2))
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(hits.items())}


def scale_benchmark(config: Config, name: str, n: int, *, seed: int = 0, noise: float = 0.3) -> dict[str, Any]:
    """Time grouping ``n`` vectors: ``name``'s real vectors repeated to ``n`` rows, each copy with seeded
    Gaussian noise of norm ~``noise`` (each copy at cosine ~0.96 to its source), renormalised. Times the
    neighbour search (:class:`~app.index.pair_search.FaissPairSearch`) of every item and the union-find;
    the second check's cost (per candidate pair, photos needed) is reported per pair from the benchmark."""

    state = read_state(config, name)
    base = np.asarray(state.vectors)[state.table.live_ids()]
    rng = np.random.default_rng(seed)
    reps = -(-n // len(base))
    vectors = np.tile(base, (reps, 1))[:n].astype(np.float32)
    vectors += rng.normal(0, noise / np.sqrt(base.shape[1]), vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    t0 = time.perf_counter()
    pairs = FaissPairSearch().pairs(vectors, np.arange(n), threshold=CANDIDATE_COS, k=NEIGHBOURS)
    t1 = time.perf_counter()
    roots = union_find_groups(n, pairs.i, pairs.j)
    t2 = time.perf_counter()
    groups = np.unique(roots, return_counts=True)[1]
    # for 500 items: the neighbours exact search finds above the floor, and whether the grouping joined them
    sample = rng.choice(n, size=min(n, 500), replace=False)
    sims = vectors[sample] @ vectors.T
    sims[np.arange(len(sample)), sample] = -1
    exact = {(int(q), int(j)) for q, row in zip(sample, sims, strict=True)
             for j in np.argsort(-row)[:NEIGHBOURS] if row[j] >= CANDIDATE_COS}
    hit = sum(roots[q] == roots[j] for q, j in exact)  # grouped together, by this pair or a chain
    return {"scale": n, "source_vectors": int(len(base)), "noise": noise, "candidate_pairs": int(len(pairs)),
            "groups": int((groups > 1).sum()), "search_s": round(t1 - t0, 2), "union_find_s": round(t2 - t1, 2),
            "grouping_s": round(t2 - t0, 2),
            "exact_neighbours_grouped": round(hit / len(exact), 4) if exact else 1.0,
            "note": "real vectors repeated with seeded noise; the second check is not included"}


def _unit_costs(data, graph: PairGraph, n: int = 300) -> dict[str, float]:
    """What the second check costs: ms per candidate pair checked (the measured pairs, again)."""

    k = min(n, len(graph.i))
    if k == 0:
        return {}
    t0 = time.perf_counter()
    for a, b in zip(graph.i[:k].tolist(), graph.j[:k].tolist(), strict=True):
        check_pair(data, a, b)
    return {"check_ms_per_pair": round((time.perf_counter() - t0) * 1000 / k, 2)}
