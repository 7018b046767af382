"""decaf transfer on images: list files with boxes (CUB-style 1.5x crops), --resize warp, the feature cache.

The net in these tests averages each channel of its 16x16 input (a global average pooling), so every
feature is a known function of the pixels the recipe produced: the expected values are computed
here with NumPy from the image arrays."""
import json

import numpy as np
import pytest
from PIL import Image

import decaf
from decaf.cli import main
from decaf.transfer_sources import box_crop, image_feature_file, read_box_list, with_resize

GREY, RED, BLUE = (128, 128, 128), (255, 0, 0), (0, 0, 255)
RECIPE = {"crop": 16, "resize_shorter": 16, "resample": "nearest", "channels": "RGB", "scale": 1 / 255.0,
          "mean": [0.0], "std": [1.0]}


@pytest.fixture
def mean_net(tmp_path):
    spec = {"name": "channel_means", "inputs": {"data": [3, 16, 16]},
            "layers": [{"name": "pool", "type": "Pooling", "bottom": "data", "top": "pool", "pool": "ave",
                        "global_pooling": True}]}
    path = tmp_path / "means.decaf"
    decaf.save(decaf.Net(spec), path, preprocess=RECIPE)
    return path


def test_box_crop_by_hand():
    # box 10x10 at (20, 20): centre 25, half-size 7.5 -> [17.5, 32.5] -> pixels 17..33 (floor / ceil)
    assert box_crop((60, 60), (20, 20, 10, 10)) == (17, 17, 33, 33)
    assert box_crop((60, 60), (20, 20, 10, 10), scale=1.0) == (20, 20, 30, 30)
    assert box_crop((60, 40), (0, 30, 10, 10)) == (0, 27, 13, 40)         # clipped at the image border
    with pytest.raises(ValueError, match="outside the 60x60 image"):
        box_crop((60, 60), (100, 100, 5, 5))
    with pytest.raises(ValueError, match="must be positive"):
        box_crop((60, 60), (1, 1, 0, 5))


def test_read_box_list(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# CUB style\n"
                       "a.png\tcat\t1\t2\t3.5\t4\n"
                       "dir with space/b.png\tdog\n"
                       "\n"
                       "c.png bird 5 6 7 8\n"
                       "d.png person,dog\n"
                       "e.png\n")
    got = [(e.relpath, e.label, e.box) for e in read_box_list(listing)]
    assert got == [("a.png", "cat", (1.0, 2.0, 3.5, 4.0)), ("dir with space/b.png", "dog", None),
                   ("c.png", "bird", (5.0, 6.0, 7.0, 8.0)), ("d.png", "person,dog", None), ("e.png", "", None)]
    assert read_box_list(listing)[0].path == str(tmp_path / "a.png")
    (tmp_path / "bad.txt").write_text("f.png\tx\t1\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected PATH<tab>LABEL"):
        read_box_list(tmp_path / "bad.txt")


def test_box_features_and_warp_match_numpy(tmp_path, mean_net):
    img = np.full((60, 60, 3), GREY, np.uint8)
    img[20:30, 20:30] = RED
    Image.fromarray(img).save(tmp_path / "one.png")
    wide = np.zeros((16, 64, 3), np.uint8)
    wide[:, :48] = RED
    wide[:, 48:] = BLUE
    Image.fromarray(wide).save(tmp_path / "wide.png")
    (tmp_path / "boxes.txt").write_text("one.png red 20 20 10 10\nwide.png w\nmissing.png red 1 1 5 5\n")
    net = decaf.load(mean_net)
    skipped = []
    path = image_feature_file(net, "means", tmp_path / "boxes.txt", ["pool"], box_scale=1.5, cache=tmp_path / "c",
                              on_error=lambda p, m: skipped.append(p))
    feats = np.load(path)
    window = img[17:33, 17:33].reshape(-1, 3).mean(0) / 255          # the 1.5x window: 16x16, no resize needed
    np.testing.assert_allclose(feats["pool"][0], window, atol=1e-5)   # float32 sums
    np.testing.assert_allclose(feats["pool"][1], [1, 0, 0], atol=1e-6)  # shorter side: the centre 16 columns
    assert list(feats["labels"]) == ["red", "w"] and skipped == ["missing.png"]
    assert list(feats["skipped"]) == ["missing.png"]
    warped = np.load(image_feature_file(decaf.load(mean_net), "means", tmp_path / "boxes.txt", ["pool"],
                                        resize="warp", cache=tmp_path / "c"))
    np.testing.assert_allclose(warped["pool"][1], [0.75, 0, 0.25], atol=1e-6)   # 64 -> 16 columns: 12 red, 4 blue
    recipe = decaf.recipe.Recipe.from_dict(RECIPE)
    assert with_resize(recipe, "warp").resize_warp == 16 and with_resize(recipe, "warp").resize_shorter is None
    assert with_resize(with_resize(recipe, "warp"), "shorter") == recipe


def write_scenes(folder, rng, per_class=8):
    """Each image holds a red and a blue square; the box of a 'red' line frames the red one, and so on."""
    lines_box, lines_whole = [], []
    for label in ("red", "blue"):
        for i in range(per_class):
            img = np.full((48, 48, 3), GREY, np.uint8)
            xr, yr = int(rng.integers(0, 14)), int(rng.integers(0, 38))
            xb, yb = int(rng.integers(26, 38)), int(rng.integers(0, 38))
            img[yr:yr + 10, xr:xr + 10] = RED
            img[yb:yb + 10, xb:xb + 10] = BLUE
            name = f"{label}{i}.png"
            Image.fromarray(img).save(folder / name)
            x, y = (xr, yr) if label == "red" else (xb, yb)
            lines_box.append(f"{name}\t{label}\t{x}\t{y}\t10\t10")
            lines_whole.append(f"{name}\t{label}")
    (folder / "boxes.txt").write_text("\n".join(lines_box) + "\n")
    (folder / "whole.txt").write_text("\n".join(lines_whole) + "\n")


def test_cli_transfer_on_box_lists_with_cache(tmp_path, mean_net, rng, capsys, monkeypatch):
    monkeypatch.setenv("DECAF_CACHE", str(tmp_path / "cache"))
    write_scenes(tmp_path, rng)
    common = ["--model", str(mean_net), "--per-class", "2", "--splits", "2", "--json", "-", "--quiet"]
    assert main(["transfer", str(tmp_path / "boxes.txt"), "--box-scale", "1.0", *common]) == 0
    boxed = json.loads(capsys.readouterr().out)["results"][0]
    assert boxed["mean"] == 1.0 and boxed["features"] == "boxes.txt means.decaf:pool (3-d)"
    assert main(["transfer", str(tmp_path / "whole.txt"), *common]) == 0     # both squares in every image
    whole = json.loads(capsys.readouterr().out)["results"][0]
    assert whole["mean"] < 0.8
    cached = sorted((tmp_path / "cache" / "transfer").glob("*.npz"))
    assert len(cached) == 2
    import decaf.transfer_sources as sources
    monkeypatch.setattr(sources, "box_features", lambda *a, **k: pytest.fail("extracted again"))
    assert main(["transfer", str(tmp_path / "boxes.txt"), "--box-scale", "1.0", *common]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["scores"] == boxed["scores"]
    assert sorted((tmp_path / "cache" / "transfer").glob("*.npz")) == cached
    assert main(["transfer", str(tmp_path / "nothing"), *common]) == 1
    assert "no such folder, list file or .npz" in capsys.readouterr().err


def test_unknown_blob_is_named(tmp_path, mean_net):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "l.txt").write_text("a.png x 1 1 5 5\n")
    with pytest.raises(KeyError, match="no blob 'fc7'"):
        image_feature_file(decaf.load(mean_net), "means", tmp_path / "l.txt", ["fc7"], cache=tmp_path / "c")


def test_lfw_example_writes_the_folders(tmp_path):
    """examples/lfw_to_folder.py (docs/transfer.md, Experiment 3): 100 + 100 images, and the pixel baseline."""
    data = pytest.importorskip("skimage.data")
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "lfw_to_folder.py"
    spec = importlib.util.spec_from_file_location("lfw_to_folder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(tmp_path / "lfw")])
    assert len(list((tmp_path / "lfw" / "face").glob("*.png"))) == 100
    assert len(list((tmp_path / "lfw" / "nonface").glob("*.png"))) == 100
    from decaf.transfer import load_feature_set
    X, y, paths, blob = load_feature_set(tmp_path / "lfw" / "pixels.npz")
    faces = data.lfw_subset()
    np.testing.assert_allclose(X, faces.reshape(200, -1), atol=1e-6)
    assert blob == "pixels" and list(y[[0, 199]]) == ["face", "nonface"] and paths[0] == "face/000.png"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "lfw" / "face" / "000.png")),
                                  np.round(faces[0] * 255).astype(np.uint8))
    module.main([str(tmp_path / "shift"), "--domains"])
    for domain in ("source", "target"):
        for label in ("face", "nonface"):
            assert len(list((tmp_path / "shift" / domain / label).glob("*.png"))) == 50
    negative = np.asarray(Image.open(tmp_path / "shift" / "target" / "face" / "050.png"), np.float32)
    assert abs(negative.mean() - (255 - 255 * faces[50].mean())) < 3      # inverted (blur keeps the mean)
