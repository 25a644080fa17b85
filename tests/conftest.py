"""Shared fixtures: the test backbones and a few real photos from scikit-image."""
from __future__ import annotations

import pytest
from PIL import Image
from skimage import data

from iqa.backbones import load_backbone
from iqa.photos import Photo


@pytest.fixture(scope="session")
def rn_backbone():
    return load_backbone("test-tiny-rn")


@pytest.fixture(scope="session")
def vit_backbone():
    return load_backbone("test-tiny-vit")


@pytest.fixture(scope="session")
def photos() -> list[Photo]:
    """Three real photos of different sizes, downsized to keep the tests fast."""
    images = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee()}
    out = []
    for name, array in images.items():
        image = Image.fromarray(array)
        image.thumbnail((160, 160))
        out.append(Photo(name, image))
    return out
