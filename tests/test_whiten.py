"""Whitening for re-ranking (app.index.whiten) and its place in the DBA part (app.service.dba): learned on
the database's raw vectors only, kept exact by incremental changes, refitted past the churn rule, and
used by the search path for ordering only. Generated vectors, plus a small collection of generated images."""

from __future__ import annotations

import numpy as np
import pytest

from app.config import Config
from app.index.rerank import DbaParams, augment
from app.index.whiten import WhitenParams, fit
from app.metrics.heldout import DEFAULT_NAME, DEFAULT_VARIANTS, RerankVariant, evaluate_variants, heldout_split
from app.service import dba
from app.service.build import BuildSpec, build_collection
from app.service.commit import read_state
from app.service.library import delete_items
from app.service.search import SearchService
from tests.fakes import FakeEmbedder
from tests.helpers import labelled_vectors, make_image_folder

SMALL = WhitenParams(dim=16, min_rows=200)


def clustered(n_classes=20, per_class=60, d=48, noise=0.3, nuisance=1.0, seed=0):
    """A few (3) high-variance directions that carry no class: what whitening evens out."""
    return labelled_vectors(n_classes=n_classes, per_class=per_class, d=d, noise=noise, nuisance=nuisance,
                            nuisance_dims=3, seed=seed)


def test_fit_needs_enough_rows_and_learns_from_the_rows_it_is_given():
    x, _ = clustered()
    assert fit(x[:199], SMALL) is None
    w = fit(x, SMALL)
    assert w is not None and w.rows == len(x) and w.proj.shape == (x.shape[1], 16)
    y = w.apply(x)
    assert y.shape == (len(x), 16) and np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    assert np.allclose(w.apply(x[3]), y[3], atol=1e-6)  # one vector as a batch of one
    other = fit(x[: len(x) // 2], SMALL)
    assert not np.allclose(other.mean, w.mean)  # learned from what it is given


def test_whitening_helps_retrieval_when_nuisance_directions_dominate():
    x, labels = clustered()
    plain = [v for v in DEFAULT_VARIANTS if v.name == "plain"]
    whitened = [RerankVariant("w", whiten=SMALL)]
    a = evaluate_variants(x, labels, variants=plain)["variants"]["plain"]["precision_at_5"]
    b = evaluate_variants(x, labels, variants=whitened)["variants"]["w"]["precision_at_5"]
    assert b > a + 0.01


def _variant():
    from dataclasses import replace

    return [replace(v, whiten=SMALL) for v in DEFAULT_VARIANTS if v.name == DEFAULT_NAME]


def test_incremental_changes_keep_dba_exact_in_the_kept_whitening_and_match_a_rebuild():
    x, labels = clustered(seed=1)
    _, db = heldout_split(labels)
    rng = np.random.default_rng(3)
    live0 = np.isin(np.arange(len(x)), db)  # held-out queries are never in the database or its whitening
    late = db[rng.random(len(db)) < 0.10]
    live0[late] = False
    first, s0 = dba.compute(x, live0, None, DbaParams(), SMALL)
    assert s0.mode == "full" and first.whitening is not None and first.whitening.rows == int(live0.sum())
    live1 = live0.copy()
    live1[late] = True
    gone = rng.choice(np.flatnonzero(live0), int(0.02 * len(db)), replace=False)
    live1[gone] = False
    inc, s1 = dba.compute(x, live1, first, DbaParams(), SMALL)
    assert s1.mode == "incremental" and inc.whitening is first.whitening  # under the churn rule: kept
    assert inc.churn == len(late) + len(gone)
    exact, _ = augment(first.whitening.apply(x), live1, DbaParams())
    assert np.abs(inc.vectors[live1] - exact[live1]).max() < 1e-5  # DBA exact in the kept space
    full, s2 = dba.compute(x, live1, None, DbaParams(), SMALL)  # a full rebuild learns it again
    assert s2.mode == "full"
    v = _variant()
    a = evaluate_variants(x, labels, variants=v, augmented=inc.vectors, live=live1, whitening=inc.whitening)
    b = evaluate_variants(x, labels, variants=v, augmented=full.vectors, live=live1, whitening=full.whitening)
    pa, pb = a["variants"][DEFAULT_NAME], b["variants"][DEFAULT_NAME]
    assert 0.5 < pb["precision_at_5"] < 0.999  # a measure that can move
    assert abs(pa["precision_at_5"] - pb["precision_at_5"]) <= 0.002
    assert abs(pa["map_at_10"] - pb["map_at_10"]) <= 0.002


def test_past_the_churn_rule_the_whitening_is_learned_again():
    x, _ = clustered(seed=2)
    live = np.ones(len(x), bool)
    live[-400:] = False
    first, _ = dba.compute(x, live, None, DbaParams(), SMALL)
    small = live.copy()
    small[-400:-300] = True  # 100 of 800 rows: 12.5% churn
    kept, s = dba.compute(x, small, first, DbaParams(), SMALL)
    assert s.mode == "incremental" and kept.whitening is first.whitening
    live[:] = True  # 300 more: 50% churn in all
    again, s = dba.compute(x, live, kept, DbaParams(), SMALL)
    assert s.mode == "full" and again.churn == 0 and again.whitening.rows == len(x)


def test_a_small_collection_grows_into_whitening():
    x, _ = clustered(seed=4)
    live = np.zeros(len(x), bool)
    live[:150] = True
    first, _ = dba.compute(x, live, None, DbaParams(), SMALL)
    assert first.whitening is None and first.vectors.shape[1] == x.shape[1]  # too few rows: raw space
    live[:300] = True
    grown, s = dba.compute(x, live, first, DbaParams(), SMALL)
    assert s.mode == "full" and grown.whitening is not None and grown.vectors.shape[1] == 16


@pytest.fixture
def whitened(tmp_path, monkeypatch):
    monkeypatch.setattr(dba, "DEFAULT_WHITEN", WhitenParams(dim=8, min_rows=20))
    root = tmp_path / "photos"
    make_image_folder(root, per_class=8, seed=5)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    build_collection(config, BuildSpec(data=root, kind="folder", name="pics", factory="IVF4,Flat", nprobe=4),
                     embedder=FakeEmbedder(), progress_bar=False)
    return config


def test_the_part_is_saved_reloaded_and_kept_up_to_date(whitened):
    config = whitened
    stored = dba.load(config.features_dir, "pics")
    assert stored.format == dba.FORMAT and stored.whiten == WhitenParams(dim=8, min_rows=20)
    assert stored.whitening is not None and stored.vectors.shape[1] == 8
    delete_items(config, "pics", ids=[0, 3])
    after = dba.load(config.features_dir, "pics")
    state = read_state(config, "pics", mmap=False)
    live = state.table.live_mask()
    assert after.churn == 2 and after.whitening.rows == stored.whitening.rows
    want, _ = augment(after.whitening.apply(np.asarray(state.vectors, np.float32)), live, DbaParams())
    assert np.abs(after.vectors[live] - want[live]).max() < 1e-5


def test_search_orders_in_the_whitened_space_and_keeps_raw_vectors_everywhere_else(whitened):
    config = whitened
    service = SearchService(config, embedder=FakeEmbedder())
    col = service.collection("pics")
    state = read_state(config, "pics", mmap=False)
    assert col.whitening is not None and col.augmented.shape[1] == 8
    assert col.vectors.shape[1] == np.asarray(state.vectors).shape[1] == FakeEmbedder().dim  # raw, unchanged
    assert col.store.search(np.asarray(col.vectors[:1], np.float32), 3)[1][0][0] == 0  # the index holds raw vectors
    for item in (1, 7, 20):
        hits = service.search_item("pics", item, k=6).hits
        assert hits[0].id == item and hits[0].score == pytest.approx(1.0, abs=1e-5)  # a copy stays first
        for h in hits:  # scores: raw cosines
            assert h.score == pytest.approx(float(col.vectors[h.id] @ col.vectors[item]), abs=1e-5)
        raw = service.search_item("pics", item, k=6, rerank=False).hits
        exact = np.argsort(-(np.asarray(col.vectors) @ col.vectors[item]), kind="stable")[:6]
        assert [h.id for h in raw] == exact.tolist()  # --no-rerank: the raw nearest neighbours


def test_a_format_1_file_is_still_read_and_upgraded_at_the_next_change(whitened):
    import io

    config = whitened
    state = read_state(config, "pics", mmap=False)
    raw, live = np.asarray(state.vectors, np.float32), state.table.live_mask()
    aug, th = augment(raw, live, DbaParams())
    buf = io.BytesIO()
    np.savez(buf, format=1, vectors=aug, thresholds=th, live=live, n=5, alpha=3.0, digest=dba.raw_digest(raw))
    dba.dba_path(config.features_dir, "pics").write_bytes(buf.getvalue())
    old = dba.load(config.features_dir, "pics")
    assert old.format == 1 and old.whitening is None
    vectors, whitening = dba.searched_space(config.features_dir, "pics", raw, live)
    assert whitening is None and np.abs(vectors - aug).max() < 1e-6  # read as before
    delete_items(config, "pics", ids=[5])
    new = dba.load(config.features_dir, "pics")
    assert new.format == dba.FORMAT and new.whitening is not None


def test_the_search_path_ranks_as_the_measured_product_variant():
    """requery with a whitened DBA part gives the ranking app.metrics.heldout measures for the default."""
    import threading
    from types import SimpleNamespace

    from app.index.rerank import RerankOptions, top_k
    from app.metrics.heldout import rank_product
    from app.service.requery import requery
    from tests.test_rerank import _ExactStore

    x, labels = clustered(seed=6)
    q_pos, db_pos = heldout_split(labels)
    raw = x[db_pos]
    w = fit(raw, SMALL)
    aug, _ = augment(w.apply(raw), None, DbaParams())
    col = SimpleNamespace(vectors=raw, augmented=aug, whitening=dba.SearchSpace(w, w.apply(raw)), store=_ExactStore(raw),
                          lock=threading.Lock(), live_mask=np.ones(len(raw), bool))
    (v,) = _variant()
    queries = x[q_pos]
    want = rank_product(queries, raw, aug, v, db_ids=np.arange(len(raw)), self_pos=None,
                        spaced=(w.apply(queries), w.apply(raw)))
    c = max(4 * 10, 10 + 16)
    sims, first = top_k(queries, raw, c)
    got = [requery(col, queries[r], first[r].tolist(), sims[r], 10, c, RerankOptions())[0] for r in range(len(queries))]
    assert np.array_equal(np.array(got), want)
    plain = [first[r][:10].tolist() for r in range(len(queries))]
    assert got != plain  # it does re-rank
