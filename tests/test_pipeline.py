"""The one image pipeline: Recipe, decode, the batching loop, and the same input tensor for
classify, extract, patches and training data (bit for bit) on awkward image files."""
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import decaf
from decaf.classify import classify, prob_blob
from decaf.data import Batches, ImageFolder
from decaf.features import extract
from decaf.image import ImageError, decode, preprocess
from decaf.io.blobfile import write_blobfile
from decaf.io.errors import DecafFormatError
from decaf.io.netfile import FORMAT_VERSION, read_netfile
from decaf.patches import patch_features
from decaf.pipeline import batches, image_batches, net_recipe
from decaf.recipe import DEFAULT, EFFICIENTNET_LITE0, Recipe

RECIPE = Recipe(crop=16, resize_shorter=21, resample="bilinear", scale=1 / 255.0, mean=(0.4, 0.5, 0.6),
                std=(0.2, 0.25, 0.3))


def spec(channels=3):
    return {"name": "tiny", "inputs": {"data": [channels, 16, 16]}, "layers": [
        {"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1", "num_output": 4, "kernel_size": 3},
        {"name": "relu1", "type": "ReLU", "bottom": "conv1", "top": "conv1"},
        {"name": "fc1", "type": "InnerProduct", "bottom": "conv1", "top": "fc1", "num_output": 3},
        {"name": "scores", "type": "Softmax", "bottom": "fc1", "top": "p"}]}


def spied_net(recipe, channels=3):
    """A tiny net with the recipe stored, whose forward keeps a copy of every input batch."""
    net = decaf.Net(spec(channels), seed=0)
    net.meta = {"preprocess": recipe, "labels": ["a", "b", "c"]}
    seen, forward = [], net.forward

    def spy(inputs=None, outputs=None, **kw):
        seen.append(np.array(dict(inputs or {}, **kw)["data"]))
        return forward(inputs, outputs, **kw)
    net.forward = spy
    return net, seen


def png16(path, a):
    """A 16-bit PNG (grey for (H, W), RGB for (H, W, 3)) written by hand: Pillow cannot write 16-bit RGB."""
    a = np.asarray(a, ">u2")
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    header = struct.pack(">IIBBBBB", w, h, 16, 0 if a.ndim == 2 else 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def with_orientation(img, path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif)


KINDS = ("rgb", "grey", "palette", "palette_transparent", "rgba", "la", "exif", "grey16", "rgb16", "float")


def write_kind(path, kind, w, h, rng):
    """An image file of the given kind, w x h as displayed; returns its path."""
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "rgb":
        Image.fromarray(rgb).save(path)
    elif kind == "grey":
        Image.fromarray(rgb[..., 0]).save(path)
    elif kind == "palette":
        Image.fromarray(rgb).quantize(16).save(path)
    elif kind == "palette_transparent":
        img = Image.fromarray(rgb).quantize(16)
        img.info["transparency"] = 3
        img.save(path, transparency=3)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (h, w), dtype=np.uint8)])).save(path)
    elif kind == "la":
        Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA").save(path)
    elif kind == "exif":          # stored sideways (h x w), orientation 6: turn 90 degrees clockwise to view
        with_orientation(Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))), path, 6)
    elif kind == "grey16":
        png16(path, rng.integers(0, 65536, (h, w)))
    elif kind == "rgb16":
        png16(path, rng.integers(0, 65536, (h, w, 3)))
    elif kind == "float":
        Image.fromarray(rng.random((h, w), dtype=np.float32) * 1.2 - 0.1).save(path)   # some outside [0, 1]
    return path


def suffix(kind):
    return ".tif" if kind == "float" else ".png"


# ---- Recipe ---------------------------------------------------------------------------------


def test_recipe_round_trip_and_stored_form():
    d = RECIPE.to_dict()
    assert d == {"crop": 16, "resize_shorter": 21, "resize_warp": None, "resample": "bilinear", "channels": "RGB",
                 "scale": 1 / 255.0, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "layout": "CHW"}
    assert Recipe.from_dict(json.loads(json.dumps(d))) == RECIPE
    assert RECIPE["crop"] == 16 and dict(RECIPE) == d and RECIPE.get("nope") is None   # reads as its dict
    # a format-1 dict: missing keys from the default recipe, as format 1 did
    old = Recipe.from_dict({"resize_shorter": 18, "crop": 16})
    assert old.mean == (0.5, 0.5, 0.5) and old.scale == 1 / 255.0 and old.resample == "bicubic"
    assert Recipe.from_dict({"crop": 300}).resize_shorter == 300       # not below the crop
    warp = Recipe.from_dict({"resize_warp": 256, "crop": 227, "channels": "BGR", "mean": [104, 117, 123]})
    assert warp.resize_shorter is None and warp.shape == (3, 227, 227)
    assert DEFAULT is EFFICIENTNET_LITE0 and Recipe.from_dict(None) == DEFAULT


@pytest.mark.parametrize("bad, match", [
    ({"crop": 16, "mean_rgb": [0, 0, 0]}, "unknown key"),
    ({"crop": 0}, "crop must be a positive"),
    ({"crop": 16, "resize_shorter": 8}, "smaller than the crop"),
    ({"crop": 16, "resize_shorter": 20, "resize_warp": 20}, "not both"),
    ({"crop": 16, "resample": "cubic"}, "resample must be one of"),
    ({"crop": 16, "channels": "RGBA"}, "channels must be one of"),
    ({"crop": 16, "mean": [1, 2]}, "mean has 2 values"),
    ({"crop": 16, "std": [1, 0, 1]}, "non-zero"),
])
def test_recipe_errors_name_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        Recipe.from_dict(bad)


def test_recipe_for_a_grey_net():
    grey = Recipe(crop=8, mean=0.5, std=0.25).for_channels(1)
    assert grey.channels == "L" and grey.mean == (0.5,) and grey.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="one mean and std"):
        RECIPE.for_channels(1)
    with pytest.raises(ValueError, match="the net reads 3"):
        grey.for_channels(3)


def test_net_file_stores_the_recipe_and_reads_format_1(tmp_path):
    net = decaf.Net(spec(), seed=0)
    decaf.save(net, tmp_path / "n.decaf", preprocess=RECIPE)
    _, _, meta, _ = read_netfile(tmp_path / "n.decaf")
    assert FORMAT_VERSION == "2" and meta["preprocess"] == RECIPE and isinstance(meta["preprocess"], Recipe)
    assert decaf.load(tmp_path / "n.decaf").meta["preprocess"] == RECIPE
    # a format-1 file with a partial recipe (the form decaf wrote before)
    params = {k: p.data for k, p in net.params.items()}
    write_blobfile(tmp_path / "old.decaf", params, {"decaf.format_version": "1", "decaf.net": json.dumps(net.spec),
                                                    "decaf.preprocess": json.dumps({"crop": 16, "resize_shorter": 18})})
    old = decaf.load(tmp_path / "old.decaf").meta["preprocess"]
    assert old == Recipe.from_dict({"crop": 16, "resize_shorter": 18}) and old.mean == (0.5, 0.5, 0.5)
    write_blobfile(tmp_path / "bad.decaf", params, {"decaf.format_version": "2", "decaf.net": json.dumps(net.spec),
                                                    "decaf.preprocess": json.dumps({"crop": -1})})
    with pytest.raises(DecafFormatError, match="bad.decaf: decaf.preprocess is not a valid recipe"):
        decaf.load(tmp_path / "bad.decaf")
    with pytest.raises(ValueError, match="unknown key"):
        decaf.save(net, tmp_path / "x.decaf", preprocess={"crop": 16, "size": 3})


# ---- decode ---------------------------------------------------------------------------------


def test_decode_modes(tmp_path):
    rng = np.random.default_rng(1)
    v = np.array([[0, 255, 256, 300, 32768, 65280, 65407, 65535]], np.uint16)
    png16(tmp_path / "g16.png", v)
    png16(tmp_path / "c16.png", np.dstack([v, v, v]))
    want = (v >> 8).astype(np.uint8)         # scaled, not saturated (Pillow's own "L" gives 0, 255, 255, ...)
    np.testing.assert_array_equal(np.asarray(decode(tmp_path / "g16.png", "L")), want)
    np.testing.assert_array_equal(np.asarray(decode(tmp_path / "c16.png")), np.dstack([want] * 3))
    np.testing.assert_array_equal(np.asarray(decode(tmp_path / "g16.png")), np.asarray(decode(tmp_path / "c16.png")))

    f = np.array([[-0.5, 0.0, 0.25, 0.5, 1.0, 2.0, np.nan]], np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(np.asarray(decode(tmp_path / "f.tif", "L")), [[0, 0, 64, 128, 255, 255, 0]])

    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    alpha = rgba[..., 3:].astype(np.float64) / 255       # "over" a white background, to within Pillow's rounding
    np.testing.assert_allclose(np.asarray(decode(tmp_path / "a.png"), np.float64),
                               rgba[..., :3] * alpha + 255 * (1 - alpha), atol=1)
    assert np.asarray(decode(tmp_path / "a.png"))[0, 1].tolist() == [255, 255, 255]

    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(np.asarray(decode(tmp_path / "g.png")), np.dstack([grey] * 3))
    np.testing.assert_array_equal(np.asarray(decode(tmp_path / "g.png", "L")), grey)

    pal = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).quantize(8)
    pal.save(tmp_path / "p.png", transparency=2)
    out = np.asarray(decode(tmp_path / "p.png"))
    lut = np.asarray(pal.getpalette()[:24], np.uint8).reshape(8, 3)
    idx = np.asarray(pal)
    np.testing.assert_array_equal(out[idx != 2], lut[idx[idx != 2]])
    assert (out[idx == 2] == 255).all()                  # the transparent index on white

    with pytest.raises(ImageError, match="no such file"):
        decode(tmp_path / "missing.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 nope")
    with pytest.raises(ImageError, match="bad.jpg: cannot read image"):
        decode(tmp_path / "bad.jpg")


@pytest.mark.parametrize("orientation, turn", [(3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)),
                                               (8, lambda a: np.rot90(a, 1))])
def test_decode_applies_exif_orientation(tmp_path, orientation, turn):
    stored = np.random.default_rng(2).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    with_orientation(Image.fromarray(stored), tmp_path / "o.png", orientation)
    assert Image.open(tmp_path / "o.png").getexif()[0x0112] == orientation
    np.testing.assert_array_equal(np.asarray(decode(tmp_path / "o.png")), turn(stored))


# ---- the same tensor for every consumer -------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One class folder per kind of file, two images each; sizes give odd crop offsets."""
    root = tmp_path_factory.mktemp("kinds")
    rng = np.random.default_rng(3)
    for kind in KINDS:
        (root / kind).mkdir()
        for i, (w, h) in enumerate([(30, 23), (22, 27)]):
            write_kind(root / kind / f"{i}{suffix(kind)}", kind, w, h, rng)
    return root


def folder_paths(root):
    return [str(p) for kind in sorted(KINDS) for p in sorted((root / kind).iterdir())]


def training_tensors(root, recipe, channels=3):
    """Training data's input tensors: ImageFolder at the recipe's resize, then Batches' centre crop."""
    src = ImageFolder(root, recipe.resize_shorter, channels, recipe)
    assert src.files == folder_paths(root)
    return np.concatenate([x for x, _ in Batches(src, 4, shuffle=False, crop=recipe.crop).eval_batches()])


def test_classify_extract_and_training_feed_identical_tensors(folder):
    paths = folder_paths(folder)
    want = np.concatenate([preprocess(p, RECIPE) for p in paths])
    assert want.shape == (len(paths), 3, 16, 16)

    net, seen = spied_net(RECIPE)
    results = classify(net, paths, batch_size=3)
    assert all("top" in r for r in results)
    np.testing.assert_array_equal(np.concatenate(seen), want)

    net, seen = spied_net(RECIPE)
    feats = extract(net, folder, blobs=["fc1"], batch_size=4)
    assert len(feats["paths"]) == len(paths) and not len(feats["skipped"])
    np.testing.assert_array_equal(np.concatenate(seen), want)

    np.testing.assert_array_equal(training_tensors(folder, RECIPE), want)


def test_grey_net_training_and_extract_agree(folder):
    recipe = Recipe(crop=16, resize_shorter=21, scale=1 / 255.0, mean=0.5, std=0.25)
    net, seen = spied_net(recipe, channels=1)
    extract(net, folder, blobs=["fc1"], batch_size=5)
    grey = recipe.for_channels(1)
    want = np.concatenate([preprocess(p, grey) for p in folder_paths(folder)])
    np.testing.assert_array_equal(np.concatenate(seen), want)
    np.testing.assert_array_equal(training_tensors(folder, recipe, channels=1), want)
    # the grey value is Pillow's luma of the decoded RGB image
    img = decode(folder_paths(folder)[-1])
    np.testing.assert_array_equal(np.asarray(decode(folder_paths(folder)[-1], "L")), np.asarray(img.convert("L")))


def test_patches_feed_the_same_tensor_as_the_others(tmp_path):
    """A patch box covering a whole square image, warped to the crop, is that image resized to the crop."""
    rng = np.random.default_rng(4)
    recipe = Recipe(crop=16, resize_shorter=16, resample="lanczos", channels="BGR", scale=1 / 255.0,
                    mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    for kind in KINDS:
        (tmp_path / kind).mkdir()
        write_kind(tmp_path / kind / f"a{suffix(kind)}", kind, 24, 24, rng)
    paths = folder_paths(tmp_path)
    want = np.concatenate([preprocess(p, recipe) for p in paths])
    got = []
    for p in paths:
        net, seen = spied_net(recipe)
        patch_features(net, Image.open(p), [(0, 0, 24, 24)], blob="fc1")
        got += seen
    np.testing.assert_array_equal(np.concatenate(got), want)
    net, seen = spied_net(recipe)
    classify(net, paths)
    np.testing.assert_array_equal(np.concatenate(seen), want)
    np.testing.assert_array_equal(training_tensors(tmp_path, recipe), want)


def test_centre_crop_is_the_centre_of_the_central_square():
    img = Image.fromarray(np.arange(23 * 30 * 3, dtype=np.uint8).reshape(23, 30, 3))
    recipe = Recipe(crop=16, scale=1.0)
    x = preprocess(img, recipe)[0]
    left, top = (30 - 23) // 2 + (23 - 16) // 2, (23 - 16) // 2      # 3 + 3, 3
    np.testing.assert_array_equal(x, np.asarray(img, np.float32)[top:top + 16, left:left + 16].transpose(2, 0, 1))
    hwc = preprocess(img, Recipe(crop=16, scale=1.0, layout="HWC"))
    np.testing.assert_array_equal(hwc[0], x.transpose(1, 2, 0))
    ten = preprocess(img, Recipe(crop=16, scale=1.0, layout="HWC"), oversample=True)
    np.testing.assert_array_equal(ten[9], ten[4][:, ::-1, :])         # the mirrored centre, HWC


# ---- the batching loop ----------------------------------------------------------------------


def test_batches_count_rows_and_keep_images_whole(folder, tmp_path):
    paths = folder_paths(folder)[:5]
    bad = str(tmp_path / "missing.png")
    errors = []
    stream = image_batches(paths[:2] + [bad] + paths[2:], RECIPE, batch_size=25, oversample=True,
                           on_error=lambda pos, item, msg: errors.append((pos, item, msg)))
    got = list(stream)
    assert [b.positions for b in got] == [[0, 1], [3, 4], [5]] and all(b.crops == 10 for b in got)
    assert [b.x.shape[0] for b in got] == [20, 20, 10]
    assert errors == [(2, bad, f"{bad}: no such file")]
    np.testing.assert_array_equal(got[1].x[10:], preprocess(paths[3], RECIPE, oversample=True))
    one = list(image_batches(paths[:1], RECIPE, batch_size=4, oversample=True))   # fewer rows than crops
    assert len(one) == 1 and one[0].x.shape[0] == 10
    with pytest.raises(ImageError, match="no such file"):        # without on_error a bad item is raised
        list(image_batches([bad], RECIPE, batch_size=2))
    with pytest.raises(ValueError, match="batch_size"):
        list(batches([1], lambda item: np.zeros((1, 1)), 0))


def test_classify_oversample_averages_crops_across_batch_sizes(folder):
    paths = folder_paths(folder)[:4]
    net, _ = spied_net(RECIPE)
    small = classify(net, paths, oversample=True, batch_size=1, top=3)
    big = classify(net, paths, oversample=True, batch_size=40, top=3)
    for a, b in zip(small, big):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        np.testing.assert_allclose([t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]], rtol=1e-5)


def test_output_and_input_blobs_come_from_the_net():
    s = spec()
    s["inputs"] = {"pixels": [3, 16, 16]}
    s["layers"][0]["bottom"] = "pixels"
    s["layers"][-1]["top"] = "class_probs"
    net = decaf.Net(s, seed=0)
    net.meta = {"preprocess": RECIPE}
    assert prob_blob(net) == "class_probs"
    img = Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    (r,) = classify(net, [img])
    want = net.forward({"pixels": preprocess(img, RECIPE)}, outputs=["class_probs"])["class_probs"][0]
    assert r["top"][0]["prob"] == pytest.approx(float(want.max()), rel=1e-6)
    net.meta = {"preprocess": dict(RECIPE.to_dict(), crop=12, resize_shorter=12)}
    with pytest.raises(ValueError, match=r"the image input 'pixels' is \(3, 16, 16\) but the preprocessing "
                                         r"recipe gives \(3, 12, 12\)"):
        net_recipe(net)
