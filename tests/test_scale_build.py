"""build_index_timed: the index of a matrix, given or tuned, with its times and size (for the scale bench)."""

from __future__ import annotations

import faiss
import numpy as np

from app.index.rescore import RESCORE_CHOICES
from app.index.scale_build import build_index_timed
from tests.test_tune import spread


def test_a_given_factory_is_trained_on_a_sample_and_filled(tmp_path):
    x = spread(3000, d=64, seed=21)
    path = tmp_path / "v.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")  # a memory-mapped matrix, as the bench has it
    built = build_index_timed(mm, factory="PCAR32,IVF32,PQ16x4fs", nprobe=8, rescore=50)
    assert built.index.ntotal == 3000 and built.count == 3000
    assert built.config.factory == "PCAR32,IVF32,PQ16x4fs" and built.config.nprobe == 8 and built.rescore == 50
    assert faiss.extract_index_ivf(built.index).nprobe == 8
    assert built.serialized_bytes == len(faiss.serialize_index(built.index))
    assert built.bytes_per_vector == built.serialized_bytes / 3000
    assert built.train_s > 0 and built.add_s > 0 and built.train_sample == 3000
    assert built.to_json()["bytes_per_vector"] == round(built.bytes_per_vector, 2)
    ids = built.index.search(x[:3], 1)[1][:, 0]
    assert ids.tolist() == [0, 1, 2]  # ids follow the row order


def test_the_tuned_index_comes_with_r_and_its_report():
    x = spread(2000, d=64, seed=22)
    built = build_index_timed(x, time_budget_s=20)
    assert built.report is not None and built.rescore == built.report.rescore in RESCORE_CHOICES
    assert built.config == built.report.chosen.config and built.index.ntotal == 2000
    assert built.to_json()["code_bytes_per_vector"] == built.report.chosen.code_bytes
    assert built.add_s > 0 and built.train_s > 0
