"""Query expansion on the search path: the hook :meth:`app.service.search.SearchService._ranked` calls.

After the first search, :func:`requery` orders its candidates by the collection's searched vectors
(the DBA ones, :mod:`app.service.dba`, when the collection has them; else the stored raw ones), expands
the query with the top ``qe_n`` (αQE, :func:`app.index.rerank.expand_query`: no model run, so a
collection item used as the query gets it too), asks the store once more for the same number of
candidates, and orders the union of both candidate sets by their score: the cosine of the searched
vector to the expanded query, or the raw cosine to the query itself when that is higher (so an exact
copy, cosine 1.0, stays first; on the held-out split this rule changes no figure). The scores it
returns stay the raw cosines to the query (what a hit's score means: 1.0 is the same image), so a
re-ranked list is ordered by the re-ranked score, not always by the score it shows.

When the collection's DBA vectors live in a whitened space (``col.whitening``, :mod:`app.index.whiten`),
the query is whitened for ordering and expansion (one (d x 256) product), the second index search gets
the same top ``qe_n`` expansion in the raw space, and "a copy stays first" compares whitened cosines.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from app.index.rerank import RerankOptions, expand_query


def requery(col: Any, vec: np.ndarray, ids: Sequence[int], scores: np.ndarray, k: int, n_candidates: int,
            options: RerankOptions) -> tuple[list[int], np.ndarray]:
    """(ids best first, their raw cosines to ``vec``): the top ``k`` of ``col`` for the αQE-expanded query (see the module docstring).

    ``ids``/``scores``: the first search's valid candidates and their exact cosines to ``vec``."""
    searched = col.vectors if getattr(col, "augmented", None) is None else col.augmented
    whitening = getattr(col, "whitening", None)
    q = vec if whitening is None else whitening.apply(vec)  # the query in the searched vectors' space
    ordering = np.asarray(searched[list(ids)], dtype=np.float32) @ q
    top = np.argsort(-ordering, kind="stable")[: options.qe_n]
    top_ids = [ids[j] for j in top]
    expanded = expand_query(q, np.asarray(searched[top_ids], dtype=np.float32), ordering[top], options.qe_alpha)
    # The index holds raw vectors: with whitening, its second search gets the same expansion in the raw space.
    probe = expanded if whitening is None else expand_query(
        vec, np.asarray(col.vectors[top_ids], dtype=np.float32), np.asarray(scores)[list(top)], options.qe_alpha)
    with col.lock:
        _, found = col.store.search(probe[None], max(1, n_candidates))
    live = col.live_mask
    pool = list(dict.fromkeys([int(i) for i in found[0] if 0 <= i < len(live) and live[i]] + list(ids)))
    cosine = np.asarray(col.vectors[pool], dtype=np.float32) @ np.asarray(vec, dtype=np.float32)
    # A copy of the query stays first: its cosine to the query (in the searched space) counts when higher.
    own = cosine if whitening is None else np.asarray(whitening.raw[pool], dtype=np.float32) @ q
    score = np.maximum(np.asarray(searched[pool], dtype=np.float32) @ expanded, own)
    order = np.argsort(-score, kind="stable")[:k]
    return [pool[j] for j in order], cosine[order]
