"""app.core.manifest: the typed manifest, its validation, and the migration of schema-1 manifests.

``tests/data/manifest_v1.json`` was written by the code before the manifest became typed (the
session's small ``shapes`` collection, built with untrained weights), so it is exactly the format
every index built until then carries.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.core.manifest import (
    REQUIRED,
    SCHEMA_VERSION,
    Manifest,
    migrate_v1_to_v2,
    migrate_v2_to_v3,
)
from app.errors import IndexMismatchError, ManifestError
from app.index.faiss_store import load_index, manifest_path, read_manifest

V1 = Path(__file__).parent / "data" / "manifest_v1.json"


def v1_object() -> dict:
    return json.loads(V1.read_text())


# -- schema 1 -> 2 -------------------------------------------------------------------------------


def test_the_committed_v1_manifest_is_in_the_old_format():
    obj = v1_object()
    assert obj["manifest_version"] == 1 and "schema_version" not in obj
    assert set(REQUIRED) <= set(obj)


def test_v1_manifest_migrates_keeping_every_value():
    obj = v1_object()
    m = Manifest.from_json(obj)
    assert m.schema_version == SCHEMA_VERSION == 3
    out = m.to_json()
    assert out["schema_version"] == 3 and "manifest_version" not in out
    # the optional keys of incremental builds, at their defaults: generation 0, trained on the count
    assert (out.pop("generation"), out.pop("trained_count"), out.pop("updates_since_training")) == (0, None, 0)
    assert out.pop("kind") == obj["collection"]  # schema 3's name for the dataset kind
    assert {k: v for k, v in out.items() if k != "schema_version"} == {
        k: v for k, v in obj.items() if k not in ("manifest_version", "collection")}
    assert m.extra == {}  # the schema names every key of the old format
    assert (m.name, m.kind, m.model, m.model_name) == ("shapes", "folder", "resnet50", "resnet50")
    assert (m.dim, m.count, m.nprobe, m.k_factor) == (2048, 24, 2, 2)
    assert m.factory == "PCAR16,IVF2,PQ1x4np,Refine(SQ8)" == m.tuning["chosen"]["factory"]
    assert m.weights_id.startswith("resnet50/untrained") and m.weights_arg == "untrained"
    assert (m.limit, m.include, m.skipped) == (None, (), 0)
    assert m.index_bytes == 141634 and len(m.index_sha256) == 64 and m.normalized is True and m.metric == "l2"
    assert m.dataset_root == m.image_root == "/tmp/ris-v1/build/photos"
    assert m.features_fingerprint and m.features_created and m.built_at and "faiss-cpu" in m.versions


def test_the_migration_is_one_function_from_v1_to_v2():
    obj = v1_object()
    migrated = migrate_v1_to_v2(obj)
    assert migrated == {"schema_version": 2, **{k: v for k, v in obj.items() if k != "manifest_version"}}
    assert obj["manifest_version"] == 1  # the input is not changed
    assert Manifest.from_json(migrated) == Manifest.from_json(obj)


def test_oldest_v1_manifests_get_a_model_and_a_k_factor():
    obj = {k: v for k, v in v1_object().items() if k not in ("model", "k_factor", "manifest_version")}
    m = Manifest.from_json(obj)  # no version key at all: schema 1
    assert (m.model, m.k_factor) == ("resnet50", 1)
    lite = Manifest.from_json({**obj, "weights_id": "efficientnet-lite0/imagenet/0123abcd"})
    assert lite.model == lite.model_name == "efficientnet-lite0"


def test_v2_manifests_get_kind_for_collection():
    v2 = migrate_v1_to_v2(v1_object())
    v3 = migrate_v2_to_v3(v2)
    assert v3["schema_version"] == 3 and v3["kind"] == v2["collection"] == "folder" and "collection" not in v3
    assert {k: v for k, v in v3.items() if k not in ("schema_version", "kind")} == {
        k: v for k, v in v2.items() if k not in ("schema_version", "collection")}
    assert Manifest.from_json(v2) == Manifest.from_json(v3)


def test_v3_round_trips():
    m = Manifest.from_json(v1_object())
    again = Manifest.from_json(json.loads(json.dumps(m.to_json())))
    assert again == m and again.to_json() == m.to_json()
    assert Manifest.from_json(m.to_json()).schema_version == 3


def test_a_v1_manifest_on_disk_loads_its_index(small_collection, tmp_path, embedder):
    """An index built before the typed manifest loads unchanged: its manifest is migrated when read."""
    config, result, _ = small_collection
    indexes = tmp_path / "indexes"
    shutil.copytree(config.indexes_dir, indexes)
    old = {("collection" if k == "kind" else k): v for k, v in result.manifest.to_json().items()
           if k != "schema_version"}  # schema 1 and 2 called the dataset kind "collection"
    manifest_path(indexes, "shapes").write_text(json.dumps({"manifest_version": 1, **old}))
    index, m = load_index(indexes, "shapes", weights_id=embedder.weights_id, dim=2048, model="resnet50")
    assert index.ntotal == 24 and m == result.manifest and m.schema_version == 3
    assert read_manifest(indexes, "shapes") == result.manifest


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED)
def test_a_missing_field_is_named(field):
    obj = {k: v for k, v in v1_object().items() if k != field}
    with pytest.raises(ManifestError, match=f"lacks {field}") as info:
        Manifest.from_json(obj, source="The manifest x.json")
    assert isinstance(info.value, IndexMismatchError) and info.value.fields == (field,)
    assert str(info.value).startswith("The manifest x.json")


@pytest.mark.parametrize("field, bad", [
    ("dim", "2048"), ("count", -1), ("nprobe", None), ("weights_id", 7), ("k_factor", 1.5), ("limit", "120"),
    ("include", "BACKGROUND_Google"), ("tuning", []), ("normalized", "yes"), ("index_bytes", True),
    ("features_fingerprint", 3), ("versions", "3.11"), ("name", None),
])
def test_a_wrong_field_is_named(field, bad):
    with pytest.raises(ManifestError, match=f"invalid {field}") as info:
        Manifest.from_json({**v1_object(), field: bad})
    assert info.value.fields == (field,)


@pytest.mark.parametrize("key, version", [("schema_version", 4), ("schema_version", "3"), ("manifest_version", 7)])
def test_an_unknown_schema_version_is_refused(key, version):
    obj = {k: v for k, v in v1_object().items() if k != "manifest_version"}
    with pytest.raises(ManifestError, match=f"invalid {key}") as info:
        Manifest.from_json({**obj, key: version})
    assert info.value.fields == (key,)


def test_not_an_object_is_refused():
    for bad in ([1, 2], "manifest", None):
        with pytest.raises(ManifestError, match="not a JSON object"):
            Manifest.from_json(bad)


def test_unknown_keys_are_kept():
    m = Manifest.from_json({**v1_object(), "note": {"by": "hand"}})
    assert m.extra == {"note": {"by": "hand"}} and m.to_json()["note"] == {"by": "hand"}
    assert m.build_fields()["note"] == {"by": "hand"}


def test_build_fields_leave_out_what_the_index_file_gives():
    fields = Manifest.from_json(v1_object()).build_fields()
    for key in ("schema_version", "name", "dim", "count", "index_sha256", "index_bytes", "built_at", "versions"):
        assert key not in fields
    assert fields["factory"] and fields["weights_id"] and fields["tuning"]


# -- the mapping view --------------------------------------------------------------------------


def test_mapping_view_reads_like_the_json_object():
    m = Manifest.from_json(v1_object())
    out = m.to_json()
    assert m["count"] == m.count == 24 and m.get("tuning") == out["tuning"] and m.get("nope", 5) == 5
    assert "factory" in m and "manifest_version" not in m
    assert dict(m) == out and m == out and out == m
    assert m != {**out, "count": 25}
    out["tuning"]["chosen"] = None  # to_json is a copy
    assert m.tuning["chosen"] is not None


def test_model_name_of_an_unknown_model_comes_from_the_weights_id():
    m = Manifest.from_json({**v1_object(), "model": "no-such-model",
                            "weights_id": "efficientnet-lite2/imagenet/00ff"})
    assert m.model_name == "efficientnet-lite2"
