"""Learned (supervised) whitening from the collection's labels (app.index.learned_whiten) and its place in
the DBA part (app.service.dba): learned from the database's vectors and labels only, the unsupervised
whitening as its fallback, kept exact by incremental changes, stored and reloaded, and the default of a
new build. Generated vectors, plus a small collection of generated images."""

from __future__ import annotations

import io

import numpy as np
import pytest

from app.config import Config
from app.index.learned_whiten import (
    LearnedWhitening,
    LearnedWhitenParams,
    fit_learned,
    fit_space,
    needs_relearn,
    params_arrays,
    params_from,
)
from app.index.rerank import DbaParams, augment
from app.index.whiten import WhitenParams, fit
from app.metrics import heldout
from app.metrics.heldout import (
    DEFAULT_NAME,
    DEFAULT_VARIANTS,
    PCA_NAME,
    RerankVariant,
    evaluate_variants,
    heldout_split,
)
from app.service import dba
from app.service.build import BuildSpec, build_collection
from app.service.commit import read_state
from app.service.library import delete_items
from app.service.search import SearchService
from tests.fakes import FakeEmbedder
from tests.helpers import labelled_vectors, make_image_folder

SMALL = LearnedWhitenParams(dim=16, min_rows=200)


def labelled(n_classes=20, per_class=60, d=48, noise=0.5, nuisance=2.0, seed=0):
    """Strong within-class variation along 6 directions that carry no class: what the labels tell apart and
    the vectors alone do not."""
    return labelled_vectors(n_classes=n_classes, per_class=per_class, d=d, noise=noise, nuisance=nuisance,
                            nuisance_dims=6, seed=seed)


def test_it_is_learned_from_the_vectors_and_labels_it_is_given():
    x, labels = labelled()
    w = fit_learned(x, labels, SMALL)
    assert w is not None and w.rows == len(x) and w.proj.shape == (x.shape[1], 16)
    y = w.apply(x)
    assert y.shape == (len(x), 16) and np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    shuffled = list(np.random.default_rng(1).permutation(np.array(labels, dtype=object)))
    other = fit_learned(x, [tuple(s) for s in shuffled], SMALL)
    assert not np.allclose(other.proj, w.proj, atol=1e-3)  # the labels matter
    with pytest.raises(ValueError):
        fit_learned(x, labels[:-1], SMALL)


def test_the_fallback_rule_gives_the_unsupervised_whitening():
    x, labels = labelled()
    one_label = [("all",)] * len(x)
    too_few_each = [(f"i{i // 4}",) for i in range(len(x))]  # 4 per label, under min_per_label (5)
    unlabelled = [()] * len(x)
    for labs in (one_label, too_few_each, unlabelled, None):
        if labs is not None:
            assert fit_learned(x, labs, SMALL) is None
        got = fit_space(x, SMALL, labs)
        want = fit(x, SMALL.fallback())
        assert got is not None and np.allclose(got.proj, want.proj) and np.allclose(got.mean, want.mean)
    assert fit_space(x[:150], SMALL, labels[:150]) is None  # too few rows for either
    assert fit_learned(x, labels, SMALL) is not None


def test_learned_whitening_beats_the_unsupervised_one_on_the_heldout_split():
    x, labels = labelled(seed=2)
    variants = [RerankVariant("plain"), RerankVariant("pca", whiten=WhitenParams(dim=16, min_rows=200)),
                RerankVariant("learned", whiten=SMALL)]
    r = evaluate_variants(x, labels, variants=variants)["variants"]
    p = {k: m["precision_at_5"] for k, m in r.items()}
    assert p["learned"] > max(p["plain"], p["pca"]) + 0.02, p


def test_the_heldout_evaluation_learns_from_the_database_rows_and_labels_only(monkeypatch):
    x, labels = labelled(seed=3)
    q_pos, db_pos = heldout_split(labels)
    seen = []
    real = heldout.fit_space

    def spy(raw, params, labs=None):
        seen.append((np.asarray(raw).copy(), list(labs)))
        return real(raw, params, labs)

    monkeypatch.setattr(heldout, "fit_space", spy)
    evaluate_variants(x, labels, variants=[RerankVariant("learned", whiten=SMALL)])
    (raw, labs), = seen
    assert len(raw) == len(db_pos) and np.allclose(raw, x[db_pos]) and labs == [labels[i] for i in db_pos]


def test_parameters_round_trip_and_bad_ones_are_refused():
    for p in (SMALL, WhitenParams(dim=8, min_rows=20), LearnedWhitenParams()):
        arrays = params_arrays(p)
        assert params_from(arrays["wp_kind"], arrays["wp_json"]) == p
    with pytest.raises(ValueError):
        params_from("magic", "{}")
    with pytest.raises(ValueError):
        params_from("learned", '{"colour": 3}')


def _variant(params):
    from dataclasses import replace

    return [replace(v, whiten=params) for v in DEFAULT_VARIANTS if v.name == DEFAULT_NAME]


def test_incremental_changes_keep_dba_exact_in_the_kept_learned_whitening_and_match_a_rebuild():
    x, labels = labelled(seed=4)
    _, db = heldout_split(labels)
    rng = np.random.default_rng(3)
    live0 = np.isin(np.arange(len(x)), db)  # held-out queries are never in the database or its whitening
    late = db[rng.random(len(db)) < 0.10]
    live0[late] = False
    first, s0 = dba.compute(x, live0, None, DbaParams(), SMALL, labels)
    want = fit_learned(x[live0], [labels[i] for i in np.flatnonzero(live0)], SMALL)
    assert s0.mode == "full" and np.allclose(first.whitening.proj, want.proj)  # learned from the labels
    live1 = live0.copy()
    live1[late] = True
    gone = rng.choice(np.flatnonzero(live0), int(0.02 * len(db)), replace=False)
    live1[gone] = False
    inc, s1 = dba.compute(x, live1, first, DbaParams(), SMALL, labels)
    assert s1.mode == "incremental" and inc.whitening is first.whitening  # under the churn rule: kept
    exact, _ = augment(first.whitening.apply(x), live1, DbaParams())
    assert np.abs(inc.vectors[live1] - exact[live1]).max() < 1e-5  # DBA exact in the kept space
    full, s2 = dba.compute(x, live1, None, DbaParams(), SMALL, labels)  # a full rebuild learns it again
    assert s2.mode == "full" and not np.allclose(full.whitening.proj, first.whitening.proj)
    v = _variant(SMALL)
    a = evaluate_variants(x, labels, variants=v, augmented=inc.vectors, live=live1, whitening=inc.whitening)
    b = evaluate_variants(x, labels, variants=v, augmented=full.vectors, live=live1, whitening=full.whitening)
    pa, pb = a["variants"][DEFAULT_NAME], b["variants"][DEFAULT_NAME]
    assert 0.5 < pb["precision_at_5"] < 0.999  # a measure that can move
    assert abs(pa["precision_at_5"] - pb["precision_at_5"]) <= 0.002
    assert abs(pa["map_at_10"] - pb["map_at_10"]) <= 0.002


def test_a_new_label_past_its_share_makes_a_change_learn_it_again():
    from dataclasses import replace

    params = replace(SMALL, new_label_share=0.04)
    x, labels = labelled(n_classes=21, seed=5)  # 60 per label; c20 arrives later
    live = np.array([lab != ("c20",) for lab in labels])
    first, _ = dba.compute(x, live, None, DbaParams(), params, labels)
    assert isinstance(first.whitening, LearnedWhitening) and first.whitening.taught == {f"c{c}" for c in range(20)}
    few = live.copy()
    few[np.flatnonzero(~live)[:40]] = True  # 40 items of a new label: 3.3% of the 1,200 rows it learned from
    assert not needs_relearn(first.whitening, params, [labels[i] for i in np.flatnonzero(few)])
    kept, s = dba.compute(x, few, first, DbaParams(), params, labels)
    assert s.mode == "incremental" and kept.whitening is first.whitening
    assert needs_relearn(first.whitening, params, labels)  # all 60: 5%
    again, s = dba.compute(x, np.ones(len(x), bool), kept, DbaParams(), params, labels)
    assert s.mode == "full" and "c20" in again.whitening.taught  # 1.7% more churn: the label rule, not the churn one
    unchanged, s = dba.compute(x, np.ones(len(x), bool), kept, DbaParams(), params, None)
    assert s.mode == "incremental"  # no labels given: only the churn rule
    assert not needs_relearn(first.whitening, WhitenParams(dim=16, min_rows=200), labels)
    pca = fit(x, params.fallback())
    assert needs_relearn(pca, params, labels) and not needs_relearn(pca, params, [("one",)] * len(x))


def test_the_default_variant_is_the_learned_one_and_the_pca_one_is_still_measured():
    names = {v.name: v for v in DEFAULT_VARIANTS}
    assert isinstance(names[DEFAULT_NAME].whiten, LearnedWhitenParams) and names[DEFAULT_NAME].product
    assert isinstance(names[PCA_NAME].whiten, WhitenParams)
    assert isinstance(dba.DEFAULT_WHITEN, LearnedWhitenParams)


TINY = LearnedWhitenParams(dim=8, min_rows=20, min_per_label=3)


@pytest.fixture
def learned(tmp_path, monkeypatch):
    """A folder collection taught its folder names (by default only category datasets are: dba.CATEGORY_KINDS)."""
    monkeypatch.setattr(dba, "DEFAULT_WHITEN", TINY)
    monkeypatch.setattr(dba, "CATEGORY_KINDS", ("caltech101", "folder"))
    root = tmp_path / "photos"
    make_image_folder(root, per_class=8, seed=5)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    build_collection(config, BuildSpec(data=root, kind="folder", name="pics", factory="IVF4,Flat", nprobe=4),
                     embedder=FakeEmbedder(dim=1280), progress_bar=False)
    return config


def _state(config):
    state = read_state(config, "pics", mmap=False)
    return np.asarray(state.vectors, np.float32), state.table


@pytest.mark.slow
def test_a_build_learns_it_from_the_folder_labels_and_a_delete_keeps_it(learned):
    config = learned
    stored = dba.load(config.features_dir, "pics")
    raw, table = _state(config)
    live = table.live_mask()
    assert stored.format == dba.FORMAT == 3 and stored.whiten == TINY
    want = fit_learned(raw[live], [table.labels[i] for i in np.flatnonzero(live)], TINY)
    assert np.allclose(stored.whitening.proj, want.proj, atol=1e-5)  # from the folder names, not the fallback
    assert isinstance(stored.whitening, LearnedWhitening) and stored.whitening.taught == {lab[0] for lab in table.labels}
    delete_items(config, "pics", ids=[0, 3])
    after = dba.load(config.features_dir, "pics")
    raw, table = _state(config)
    live = table.live_mask()
    assert after.churn == 2 and np.array_equal(after.whitening.proj, stored.whitening.proj)
    exact, _ = augment(after.whitening.apply(raw), live, DbaParams())
    assert np.abs(after.vectors[live] - exact[live]).max() < 1e-5


@pytest.mark.slow
def test_search_keeps_raw_scores_and_copies_first_with_the_learned_whitening(learned):
    config = learned
    service = SearchService(config, embedder=FakeEmbedder(dim=1280))
    col = service.collection("pics")
    assert col.whitening is not None and col.augmented.shape[1] == 8
    for item in (1, 7, 20):
        hits = service.search_item("pics", item, k=6).hits
        assert hits[0].id == item and hits[0].score == pytest.approx(1.0, abs=1e-5)
        for h in hits:
            assert h.score == pytest.approx(float(col.vectors[h.id] @ col.vectors[item]), abs=1e-5)


@pytest.mark.slow
def test_a_format_2_file_is_read_as_before_and_gets_the_learned_whitening_at_the_next_change(learned):
    config = learned
    raw, table = _state(config)
    live = table.live_mask()
    old = WhitenParams(dim=8, min_rows=20)
    w = fit(raw[live], old)
    aug, th = augment(w.apply(raw), live, DbaParams())
    buf = io.BytesIO()
    np.savez(buf, format=2, vectors=aug, thresholds=th, live=live, n=5, alpha=3.0, digest=dba.raw_digest(raw),
             whiten_on=True, churn=0, wp_dim=8, wp_power=old.power, wp_shrink=old.shrink,
             wp_feature_power=old.feature_power, wp_min_rows=20, wp_refit_churn=old.refit_churn, w_mean=w.mean,
             w_proj=w.proj, w_feature_power=w.feature_power, w_rows=w.rows)
    dba.dba_path(config.features_dir, "pics").write_bytes(buf.getvalue())
    stored = dba.load(config.features_dir, "pics")
    assert stored.format == 2 and stored.whiten == old
    vectors, space = dba.searched_space(config.features_dir, "pics", raw, live, table.labels)
    assert np.abs(vectors - aug).max() < 1e-6 and np.allclose(space.whitening.proj, w.proj)  # read as before
    delete_items(config, "pics", ids=[5])
    new = dba.load(config.features_dir, "pics")
    assert new.format == 3 and new.whiten == TINY and new.churn == 0  # learned again, from the labels


@pytest.mark.slow
def test_a_file_with_unreadable_parameters_is_recomputed(learned):
    config = learned
    path = dba.dba_path(config.features_dir, "pics")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["wp_kind"] = np.array("magic")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    assert dba.load(config.features_dir, "pics") is None
    delete_items(config, "pics", ids=[2])
    assert dba.load(config.features_dir, "pics").whiten == TINY


@pytest.mark.slow
def test_a_folder_collection_gets_the_unsupervised_whitening_by_default(tmp_path, monkeypatch):
    """Folder names (years, trips) are not categories: a folder collection's whitening is not taught them."""
    monkeypatch.setattr(dba, "DEFAULT_WHITEN", TINY)
    root = tmp_path / "photos"
    make_image_folder(root, per_class=8, seed=5)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    build_collection(config, BuildSpec(data=root, kind="folder", name="pics", factory="IVF4,Flat", nprobe=4),
                     embedder=FakeEmbedder(dim=1280), progress_bar=False)
    stored = dba.load(config.features_dir, "pics")
    raw, table = _state(config)
    assert not isinstance(stored.whitening, LearnedWhitening)
    assert np.allclose(stored.whitening.proj, fit(raw[table.live_mask()], TINY.fallback()).proj, atol=1e-5)
    assert dba.whitening_labels("caltech101", table.labels) is table.labels
