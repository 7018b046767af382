"""decaf.io.load_model: the one entry point every command resolves its MODEL argument through."""
import numpy as np
import pytest

from decaf import Net, save
from decaf.cli import main
from decaf.io import DecafFormatError, load_model, read_foreign
from decaf.recipe import Recipe

SPEC = {"name": "tiny", "inputs": {"data": [3, 8, 8]}, "layers": [
    {"name": "conv", "type": "Convolution", "bottom": "data", "top": "conv", "num_output": 2, "kernel_size": 3},
    {"name": "fc", "type": "InnerProduct", "bottom": "conv", "top": "fc", "num_output": 3},
    {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]}


@pytest.fixture
def tiny(tmp_path):
    net = Net(SPEC, seed=3)
    path = tmp_path / "tiny.decaf"
    save(net, path, labels=["a", "b", "c"], preprocess=Recipe(crop=8, resize_shorter=8))
    return net, path


def test_a_decaf_file_loads_with_its_meta(tiny):
    net, path = tiny
    loaded = load_model(str(path))
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.array_equal(loaded.forward(data=x)["prob"], net.forward(data=x)["prob"])
    assert loaded.meta["labels"] == ["a", "b", "c"] and loaded.meta["preprocess"].crop == 8


def test_an_onnx_file_is_converted_in_memory_keeping_labels_and_recipe(tiny, tmp_path):
    pytest.importorskip("onnx")
    net, path = tiny
    onnx_path = tmp_path / "tiny.onnx"
    assert main(["export", str(path), "-o", str(onnx_path)]) == 0
    loaded = load_model(str(onnx_path))
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.forward(data=x)["prob"], net.forward(data=x)["prob"], rtol=1e-5, atol=1e-7)
    assert loaded.meta["labels"] == ["a", "b", "c"] and loaded.meta["preprocess"].resize_shorter == 8
    spec, arrays, fmt, carried = read_foreign(onnx_path)
    assert fmt == "onnx" and carried["labels"] == ["a", "b", "c"] and set(arrays) == set(net.params)


def test_zoo_specs_only_where_asked():
    net = load_model("lenet", zoo=True, seed=1)
    assert net.meta["source"] == {"zoo": "lenet", "seed": 1} and net.meta["preprocess"] is None
    with pytest.raises(KeyError, match=r"'lenet' is neither a pretrained network .* nor a model file"):
        load_model("lenet")


@pytest.mark.parametrize("make, error, message", [
    (lambda d: d, IsADirectoryError, "is a directory, not a model file"),
    (lambda d: d / "missing.decaf", FileNotFoundError, "missing.decaf: no such file"),
    (lambda d: d / "weights.pth", ValueError, "convert it once with `decaf convert"),
    (lambda d: d / "net.caffemodel", ValueError, "convert it once with `decaf convert"),
    (lambda d: d / "notes.txt", DecafFormatError, "notes.txt"),
])
def test_bad_model_arguments_name_the_problem(tmp_path, make, error, message):
    target = make(tmp_path)
    if target.suffix in (".pth", ".caffemodel", ".txt"):
        target.write_bytes(b"not a model")
    with pytest.raises(error, match=message):
        load_model(str(target))


def test_commands_say_the_same_thing_about_a_folder(tmp_path, capsys):
    image = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(image)
    for argv in (["classify", "--model", str(tmp_path), str(image)],
                 ["extract", str(image), "--model", str(tmp_path), "-o", str(tmp_path / "f.npz")],
                 ["profile", str(tmp_path)]):
        assert main(argv) == 1
        assert f"{tmp_path}: is a directory, not a model file" in capsys.readouterr().err


def test_a_checkpoint_without_arch_lists_every_arch_and_bad_sizes_are_named(tmp_path):
    from decaf.errors import SpecError
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"not read: the architecture is asked for first")
    with pytest.raises(ValueError, match=r"w.pth: a PyTorch checkpoint holds no architecture") as info:
        read_foreign(ckpt)
    assert "'resnet50'" in str(info.value) and "'efficientnet_lite0'" in str(info.value)
    bad = dict(SPEC, inputs={"data": [3, -5, -5]})
    with pytest.raises(SpecError, match=r"net 'tiny': input 'data' has shape \[3, -5, -5\]; every size must be >= 1"):
        Net(bad)
