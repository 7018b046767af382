"""decaf draw: the layer graph (boxes, blob arrows with batch-1 shapes) and the docs images."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from decaf.cli import main
from decaf.draw import draw_net, net_graph
from decaf.models import get_spec

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.size


def test_lenet_graph():
    nodes, edges = net_graph(get_spec("lenet"))
    layers = [n for n in nodes.values() if n.kind == "layer"]
    assert [n.name for n in layers] == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2",
                                        "ip1", "relu3", "ip2", "loss"]
    assert {n.name for n in nodes.values() if n.kind == "input"} == {"data", "label"}
    assert [n.name for n in nodes.values() if n.kind == "output"] == ["loss (output)"]
    shapes = {(e.src, e.dst): (e.blob, e.shape) for e in edges}
    assert shapes[("data", "conv1")] == ("data", (1, 1, 28, 28))
    assert shapes[("conv1", "relu1")] == ("conv1", (1, 20, 24, 24))
    assert shapes[("relu1", "pool1")] == ("conv1", (1, 20, 24, 24))     # after the in-place ReLU
    assert shapes[("pool2", "ip1")] == ("pool2", (1, 50, 4, 4))
    assert shapes[("label", "loss")] == ("label", (1,))
    assert nodes["relu1"].detail == "(in place)"
    assert nodes["conv1"].detail == "5×5, 20"
    # every layer is one row below its deepest parent; the label sits just above the loss
    assert [nodes[n].rank for n in ("data", "conv1", "relu1", "ip2", "loss")] == [0, 1, 2, 9, 10]
    assert nodes["label"].rank == 9 and nodes["label"].x != nodes["ip2"].x


def test_split_layers_are_hidden_and_fan_out_drawn():
    nodes, edges = net_graph(get_spec("efficientnet_lite0"))
    assert not any(n.type_name == "Split" for n in nodes.values())
    add = nodes["b2_add"]
    assert add.type_name == "Eltwise" and len(add.parents) == 2
    skip = next(e for e in edges if e.dst == "b2_add" and add.rank - nodes[e.src].rank > 1)
    assert skip.src == "b1_project_bn" and skip.shape == (1, 24, 56, 56)


def test_draw_caffenet(tmp_path):
    path = tmp_path / "caffenet.png"
    nodes, edges = draw_net(get_spec("caffenet"), path)
    assert path.read_bytes()[:8] == PNG
    width, height = png_size(path)
    assert height > 2000 and 400 < width < 1500           # one tall column
    conv1 = next(e for e in edges if e.src == "conv1")
    assert conv1.shape == (1, 96, 55, 55)
    assert nodes["conv2"].detail == "5×5, 256, pad 2, group 2"
    assert sum(n.kind == "layer" for n in nodes.values()) == 23


def test_draw_accepts_a_net_and_svg(tmp_path):
    import decaf
    net = decaf.Net(get_spec("lenet"), init=False)
    net.reshape(7)                                           # drawn shapes stay at batch 1
    _, edges = draw_net(net, tmp_path / "lenet.svg", title="LeNet")
    assert (tmp_path / "lenet.svg").read_text().lstrip().startswith("<?xml")
    assert all(e.shape[:1] in ((1,), ()) for e in edges)


def test_cli_draw(tmp_path, capsys):
    out = tmp_path / "net.png"
    assert main(["draw", "lenet", "-o", str(out)]) == 0
    assert "10 layers, 12 blob arrows" in capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG
    assert main(["draw", "no_such_model", "-o", str(out)]) == 1
    assert "not a layer type, a zoo model" in capsys.readouterr().err


def test_docs_images_exist():
    for name in ("im2col.png", "lenet.png", "caffenet.png"):
        path = ROOT / "docs" / "img" / name
        assert path.read_bytes()[:8] == PNG, name


def test_im2col_picture_script(tmp_path):
    out = tmp_path / "im2col.png"
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "scripts" / "draw_im2col.py"), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == PNG
    sys.path.insert(0, str(ROOT / "docs" / "scripts"))
    try:
        import draw_im2col
    finally:
        sys.path.pop(0)
    x, cols = draw_im2col.tiny_im2col()
    # the picture's matrix: column o is the 2x2 window of output o in both channels
    for o, (oh, ow) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        assert np.array_equal(cols[:, o], x[0, :, oh:oh + 2, ow:ow + 2].reshape(-1))


@pytest.mark.parametrize("model", ["alexnet"])
def test_other_zoo_models_draw(model, tmp_path):
    nodes, _ = draw_net(get_spec(model), tmp_path / f"{model}.png")
    assert nodes["norm1"].rank < nodes["pool1"].rank       # AlexNet: LRN before pooling
