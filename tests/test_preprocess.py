"""Preprocessing follows each model's registry entry; ResNet-50's matches the weights' own transform
(ResNet50_Weights.DEFAULT.transforms())."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from app.core.models import MODELS, get_model
from app.core.preprocess import preprocess
from tests.helpers import synthetic_image

PP = get_model("resnet50").preprocessing
RESIZE_SIZE, CROP_SIZE, MEAN, STD = PP.resize, PP.crop, np.array(PP.mean), np.array(PP.std)


@pytest.fixture(scope="module")
def reference():
    from torchvision.models import ResNet50_Weights

    return ResNet50_Weights.DEFAULT.transforms()


def test_constants_are_the_weights_own(reference):
    assert list(reference.resize_size) == [RESIZE_SIZE]
    assert list(reference.crop_size) == [CROP_SIZE]
    assert np.allclose(reference.mean, MEAN) and np.allclose(reference.std, STD)
    assert reference.interpolation.value == "bilinear"


@pytest.mark.parametrize("size", [(96, 72), (72, 96), (232, 232), (500, 333), (224, 300), (1200, 800), (50, 40)])
def test_matches_torchvision_transform(reference, size):
    img = synthetic_image(1, 3, size=size, seed=size[0])
    ours = preprocess(img, PP)
    theirs = reference(img).numpy()
    assert ours.shape == theirs.shape == (3, CROP_SIZE, CROP_SIZE)
    assert np.abs(ours - theirs).max() <= 0.04  # two grey levels (1/255/std ~ 0.017 each), rounding
    assert np.abs(ours - theirs).mean() < 1e-3


def test_extreme_aspect_ratio_is_cheap():
    img = Image.new("RGB", (20000, 2), (10, 200, 30))
    t = time.perf_counter()
    out = preprocess(img, PP)
    assert out.shape == (3, CROP_SIZE, CROP_SIZE)
    assert time.perf_counter() - t < 1.0  # resizing the whole strip first took ~6 s and 2 GB
    assert np.allclose(out[1], (200 / 255 - MEAN[1]) / STD[1], atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_gets_its_declared_input(name):
    pp = get_model(name).preprocessing
    img = Image.new("RGB", (640, 480), (127, 255, 0))
    out = preprocess(img, pp)
    assert out.shape == pp.input_shape == (3, pp.crop, pp.crop) and out.dtype == np.float32
    want = (np.array([127, 255, 0]) / 255.0 - np.array(pp.mean)) / np.array(pp.std)
    assert np.allclose(out[:, pp.crop // 2, pp.crop // 2], want, atol=1e-5)


def test_efficientnet_lite_sees_tensorflow_scaling():
    """TF's (x - 127) / 128: 127 -> 0, 255 -> 1, 0 -> -127/128."""
    pp = get_model("efficientnet-lite0").preprocessing
    img = Image.new("RGB", (300, 300), (127, 255, 0))
    out = preprocess(img, pp)
    assert np.allclose(out[:, 100, 100], [0.0, 1.0, -127 / 128], atol=1e-5)
