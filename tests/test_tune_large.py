"""Issue 21: a collection past LARGE_N vectors is tuned on a sample, built for its full size (IVF size and
nprobe scaled) and verified at full size (app/index/tune_large.py). Generated clustered vectors; the limits
are lowered so the test runs in seconds."""

from __future__ import annotations

import numpy as np
import pytest

from app.index import tune_large
from app.index.faiss_update import live_count


def clustered(n: int, d: int = 32, centres: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_top_leaves_the_query_out_and_matches_brute_force():
    x = clustered(3000, seed=1)
    q = np.array([0, 17, 2999])
    got = tune_large.exact_top(x, q, 5, block=700)  # several blocks
    sims = x[q] @ x.T
    sims[np.arange(3), q] = -np.inf
    np.testing.assert_array_equal(got, np.argsort(-sims, axis=1)[:, :5])  # best first
    assert not (got == q[:, None]).any()


@pytest.mark.slow
def test_a_large_collection_is_tuned_on_a_sample_scaled_and_verified_at_full_size(monkeypatch):
    monkeypatch.setattr(tune_large, "LARGE_N", 6000)
    monkeypatch.setattr(tune_large, "SAMPLE_N", 4000)
    monkeypatch.setattr(tune_large, "VERIFY_QUERIES", 100)
    x = clustered(20000)
    index, report = tune_large.choose_index(x, target_recall=0.9, max_ms=5.0, time_budget_s=20)
    assert live_count(index) == 20000
    chosen = report.chosen
    assert "tuned on a seeded sample of 4,000" in report.skipped[-1]
    assert report.count == 20000 and chosen.rescore >= 1 and chosen.recall_at_5 >= 0.91 and report.target_met
    # the recall the report claims is the one a fresh check at full size gives
    rng = np.random.default_rng(9)
    q = np.sort(rng.choice(20000, 100, replace=False))
    truth = tune_large.exact_top(x, q, 5)
    assert tune_large._recall(index, x, q, truth, chosen.rescore) >= 0.88


def test_the_code_grows_by_doubling_its_sub_quantisers_within_the_budget():
    assert tune_large._bigger_code("PCAR512,IVF4096,PQ32x4fs") == "PCAR512,IVF4096,PQ64x4fs"
    assert tune_large._bigger_code("PCAR512,IVF4096,PQ64x4fs") == "PCAR512,IVF4096,PQ128x4fs"  # 64 B
    assert tune_large._bigger_code("PCAR512,IVF4096,PQ64np") is None  # 128 B of 8-bit codes: past the budget
    assert tune_large._bigger_code("PCAR48,IVF256,PQ16np") is None  # 32 sub-quantisers do not divide 48
    assert tune_large._bigger_code("IVF256,Flat") is None
    assert tune_large.code_bytes("PCAR512,IVF4096,PQ64x4fs", 0) == 32 and tune_large.code_bytes("IVF8,PQ16np", 0) == 16
