"""Duplicates in a collection, in three tiers, as groups (connected components) with a suggested keeper.

* ``exact``: the same bytes (the table's content hash) or the same decoded pixels (the pixel digest).
* ``edited``: the same photo after resizing, recompression, cropping, a small rotation, a mirror flip or
  colour changes: a candidate pair (cosine of the stored vectors >= :data:`CANDIDATE_COS`, among each
  item's :data:`NEIGHBOURS` nearest, found with faiss) that passes the second check
  (:func:`app.core.dedup_metrics.match_pair`): enough inlier matches of one similarity transform, and
  one photo contained in the other.
* ``shots``: near-identical shots (a burst): a candidate pair with a high cosine, or with many matches
  where neither photo contains the other.

Tiers nest: an exact pair counts as edited and as a shot, so a tier's groups are the components of its
pairs and the stronger tiers'; a group already listed in a stronger tier is not repeated. The user's knob
is ``strictness`` (:data:`STRICTNESS`: points of the measured curve, README "Duplicates").

Incremental: the per-photo data and the measured pairs are kept (:mod:`app.service.dedup_store`); a run
measures and searches only the items added since the last one, and drops the pairs of removed ones.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.config import Config
from app.core.dedup_metrics import NO_MATCH, choose_keeper, match_pair, union_find_groups
from app.errors import DatasetError
from app.index.pair_search import FaissPairSearch, PairSearch
from app.service.commit import State, read_state
from app.service.dedup_store import PairGraph, PhotoData, pairs_path, photo_data_path, update_photo_data

TIERS = ("exact", "edited", "shots")
CANDIDATE_COS = 0.70  # pairs below this cosine are never candidates
NEIGHBOURS = 16  # nearest neighbours searched per item
LOW_COS = 0.80  # under this cosine a pair needs twice the inliers to count as an edited copy


@dataclass(frozen=True)
class Strictness:
    """One documented point of the curve: edited = containment >= ``min_containment`` and ``inliers >=
    min_inliers`` (twice that for a pair whose cosine is under :data:`LOW_COS`); shots (not edited) =
    ``inliers >= shot_inliers`` (one scene seen from two frames), or cosine >= ``shot_cos``."""

    min_inliers: int
    min_containment: float
    shot_inliers: int
    shot_cos: float


STRICTNESS = {
    "loose": Strictness(min_inliers=12, min_containment=0.80, shot_inliers=20, shot_cos=0.93),
    "default": Strictness(min_inliers=20, min_containment=0.85, shot_inliers=30, shot_cos=0.95),
    "strict": Strictness(min_inliers=30, min_containment=0.90, shot_inliers=40, shot_cos=0.97),
}


@dataclass(frozen=True)
class DuplicateGroup:
    tier: str
    members: tuple[int, ...]  # item ids, sorted
    keeper: int
    score: float  # exact: 1.0; otherwise the mean cosine of the group's pairs

    def to_json(self, paths: dict[int, str]) -> dict[str, Any]:
        return {"tier": self.tier, "members": [{"id": i, "path": paths[i]} for i in self.members],
                "keeper": self.keeper, "score": round(float(self.score), 4)}


@dataclass
class DuplicateReport:
    collection: str
    groups: list[DuplicateGroup]
    paths: dict[int, str]
    measured: int  # photos read this run (new since the last run)
    searched: int  # items whose neighbours were searched this run
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    facts: dict[int, dict[str, Any]] = field(default_factory=dict)  # per member: width, height, bytes, mtime_ns



def tier_of_pairs(graph: PairGraph, point: Strictness) -> np.ndarray:
    """Per measured pair: 1 edited, 2 shot, 0 neither."""
    need = np.where(graph.cos >= LOW_COS, point.min_inliers, 2 * point.min_inliers)
    edited = (graph.inliers >= need) & (graph.containment >= point.min_containment)
    shots = ~edited & ((graph.inliers >= point.shot_inliers) | (graph.cos >= point.shot_cos))
    return np.where(edited, 1, np.where(shots, 2, 0))


def find_duplicates(config: Config, name: str, *, tier: str | None = None, strictness: str = "default",
                    search: PairSearch | None = None, save: bool = True) -> DuplicateReport:
    """The duplicate groups of ``name`` (all tiers, or ``tier``), largest first."""
    if tier is not None and tier not in TIERS:
        raise DatasetError(f"Unknown tier {tier!r}.", hint=f"Use one of: {', '.join(TIERS)}.")
    if strictness not in STRICTNESS:
        raise DatasetError(f"Unknown strictness {strictness!r}.", hint=f"Use one of: {', '.join(STRICTNESS)}.")
    t0 = time.perf_counter()
    state = read_state(config, name)
    data, graph, measured, searched = refresh(config, state, search=search, save=save)
    groups = make_groups(state, data, graph, STRICTNESS[strictness], tiers=(tier,) if tier else TIERS)
    members = sorted({i for g in groups for i in g.members})
    paths = {i: state.table.paths[i] for i in members}
    return DuplicateReport(name, groups, paths, measured, searched, time.perf_counter() - t0,
                           {"pairs": len(graph.i)}, {i: _facts(state, data, i) for i in members})


def refresh(config: Config, state: State, *, search: PairSearch | None = None,
            save: bool = True) -> tuple[PhotoData, PairGraph, int, int]:
    """Bring the photo data and the pair graph up to date with ``state``: only new items are read and searched."""
    table = state.table
    data_file, graph_file = photo_data_path(config.features_dir, state.name), pairs_path(config.features_dir, state.name)
    old = PhotoData.load(data_file)
    data, measured = update_photo_data(old, table)
    if save and measured:
        data.save(data_file)  # kept even if the pairs' check is interrupted
    live = table.live_ids()
    hashes = {i: (table.stamps[i].hash if table.stamps[i] else "") for i in live.tolist()}
    graph = PairGraph.load(graph_file, CANDIDATE_COS, table.weights_id)
    stale = graph.stale_ids(hashes) | (set(old.records) - set(data.records))  # deleted, changed, renumbered
    graph = graph.without(stale)
    new = np.setdiff1d(live, graph.covered)
    graph = extend_graph(graph, data, np.asarray(state.vectors), live, new, search or FaissPairSearch(), hashes)
    if save and (measured or len(new) or stale):
        if stale - set(measured):
            data.save(data_file)
        graph.save(graph_file)
    return data, graph, len(measured), len(new)


def extend_graph(graph: PairGraph, data: PhotoData, vectors: np.ndarray, live: np.ndarray, new: np.ndarray,
                 search: PairSearch, hashes: dict[int, str]) -> PairGraph:
    """``graph`` plus the candidate pairs of the ``new`` ids (against every live item), each checked."""
    if len(new) == 0:
        return graph
    rows = np.searchsorted(live, new)
    found = search.pairs(vectors[live], rows, threshold=graph.floor, k=NEIGHBOURS)
    i, j = live[found.i], live[found.j]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # OpenCV releases the GIL
        matches = list(pool.map(lambda ab: check_pair(data, *ab), zip(i.tolist(), j.tolist(), strict=True)))
    return graph.extended(i, j, found.sim, matches, new, [hashes[int(x)] for x in new.tolist()])


def check_pair(data: PhotoData, a: int, b: int):

    ra, rb = data.records.get(a), data.records.get(b)
    if ra is None or rb is None or ra.local is None or rb.local is None:
        return NO_MATCH
    return match_pair(ra.local, rb.local)


def tier_components(state: State, data: PhotoData, graph: PairGraph,
                    point: Strictness) -> dict[str, list[tuple[tuple[int, ...], float]]]:
    """Per tier, its components (sorted member ids, mean cosine of its pairs): the components of the tier's
    pairs and the stronger tiers' (an exact pair is also an edited pair and a shot)."""
    live = state.table.live_ids()
    index = {int(i): k for k, i in enumerate(live.tolist())}
    ei, ej, escore = exact_pairs(state, data)
    kinds = tier_of_pairs(graph, point)
    out = {}
    for level, name in enumerate(TIERS):
        take = (kinds >= 1) & (kinds <= level)
        i = np.concatenate([ei, graph.i[take]])
        j = np.concatenate([ej, graph.j[take]])
        score = np.concatenate([escore, graph.cos[take]])
        out[name] = _components(i, j, score, index, live)
    return out


def make_groups(state: State, data: PhotoData, graph: PairGraph, point: Strictness, *,
                tiers: tuple[str, ...] = TIERS) -> list[DuplicateGroup]:
    """The groups of each of ``tiers``, largest first (then by their first id); a group already listed in
    a stronger tier is not repeated."""
    seen: set[tuple[int, ...]] = set()
    out: list[DuplicateGroup] = []
    for name, components in tier_components(state, data, graph, point).items():
        for members, mean in components:
            if members in seen:
                continue
            seen.add(members)
            if name in tiers:
                score = 1.0 if name == "exact" else mean
                out.append(DuplicateGroup(name, members, _keeper(state.table, data, members), score))
    out.sort(key=lambda g: (-len(g.members), TIERS.index(g.tier), g.members[0]))
    return out


def exact_pairs(state: State, data: PhotoData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of live items with the same content hash or the same pixel digest (a chain per group)."""
    by_key: dict[str, list[int]] = defaultdict(list)
    table = state.table
    for i in table.live_ids().tolist():
        st = table.stamps[i]
        if st and st.hash:
            by_key["h:" + st.hash].append(i)
        rec = data.records.get(i)
        if rec and rec.digest:
            by_key["p:" + rec.digest].append(i)
    pairs = [(ids[k], ids[k + 1]) for ids in by_key.values() for k in range(len(ids) - 1)]
    i = np.array([p[0] for p in pairs], np.int64)
    j = np.array([p[1] for p in pairs], np.int64)
    return i, j, np.ones(len(pairs), np.float32)


def _components(i: np.ndarray, j: np.ndarray, score: np.ndarray, index: dict[int, int],
                live: np.ndarray) -> list[tuple[tuple[int, ...], float]]:
    keep = np.array([a in index and b in index for a, b in zip(i.tolist(), j.tolist(), strict=True)], bool)
    if not keep.any():
        return []
    i, j, score = i[keep], j[keep], score[keep]
    ri = np.array([index[a] for a in i.tolist()], np.int64)
    rj = np.array([index[b] for b in j.tolist()], np.int64)
    roots = union_find_groups(len(live), ri, rj)
    members: dict[int, list[int]] = defaultdict(list)
    for r in np.unique(np.concatenate([ri, rj])).tolist():
        members[int(roots[r])].append(int(live[r]))
    sums: dict[int, list[float]] = defaultdict(list)
    for a, s in zip(ri.tolist(), score.tolist(), strict=True):
        sums[int(roots[a])].append(s)
    return [(tuple(sorted(m)), float(np.mean(sums[r]))) for r, m in members.items() if len(m) > 1]


def _facts(state: State, data: PhotoData, i: int) -> dict[str, Any]:
    """What a side-by-side review shows of a photo: its size in pixels, file size and date."""
    rec, stamp = data.records.get(i), state.table.stamps[i]
    return {"width": rec.width if rec else 0, "height": rec.height if rec else 0,
            "bytes": stamp.size if stamp else None, "mtime_ns": stamp.mtime_ns if stamp else None}


def _keeper(table, data: PhotoData, members: tuple[int, ...]) -> int:
    pixels = [(data.records[i].width * data.records[i].height) if i in data.records else 0 for i in members]
    mtimes = [(table.stamps[i].mtime_ns if table.stamps[i] else 0) for i in members]
    return choose_keeper(members, pixels, mtimes)
