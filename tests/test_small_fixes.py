"""Issue 15's small fixes: gradcheck writes no files, forward(x) and outputs="name", extract's
summary with only bad inputs, spec JSON errors naming the file, the random-weights warning,
and Net's notebook table."""
import argparse
import os

import numpy as np
import pytest

import decaf
from decaf.cli import main

SPEC = {"name": "small", "inputs": {"data": [2, 4, 4]}, "layers": [
    {"name": "ip1", "type": "InnerProduct", "bottom": "data", "top": "ip1", "num_output": 3},
    {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "r1"},
    {"name": "ip2", "type": "InnerProduct", "bottom": "r1", "top": "ip2", "num_output": 2}]}


def test_gradcheck_writes_nothing_in_cwd(tmp_path, monkeypatch, capsys):
    import json
    monkeypatch.chdir(tmp_path)
    assert main(["gradcheck", "ReLU"]) == 0
    assert main(["gradcheck", json.dumps(SPEC), "--samples", "5"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


def test_forward_positional_array_and_output_name():
    net = decaf.Net(SPEC, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    by_name = net.forward({"data": x}, outputs=["ip1"])["ip1"]
    np.testing.assert_array_equal(net.forward(x, outputs="ip1")["ip1"], by_name)
    assert list(net.forward(x, outputs="ip1")) == ["ip1"]
    np.testing.assert_array_equal(net.forward(x)["ip2"], net.forward(data=x)["ip2"])
    two = decaf.Net({"name": "two", "inputs": {"a": [3], "b": [3]}, "layers": [
        {"name": "sum", "type": "Eltwise", "bottom": ["a", "b"], "top": "s"}]})
    with pytest.raises(TypeError, match=r"inputs \['a', 'b'\]: pass them by name"):
        two.forward(np.zeros((1, 3)))


def test_forward_positional_picks_the_input_the_outputs_need():
    from decaf.models import get_spec
    net = decaf.Net(get_spec("lenet"), seed=0)          # inputs data and label
    x = np.zeros((1, 1, 28, 28), np.float32)
    assert net.forward(x, outputs="ip2")["ip2"].shape == (1, 10)


def test_net_repr_html():
    net = decaf.Net(SPEC, seed=0)
    page = net._repr_html_()
    assert "<b>Net small</b>: 3 layers, 107 parameters" in page      # (32*3 + 3) + (3*2 + 2)
    assert page.count("<tr>") == 4 and "<td>InnerProduct</td>" in page and "ip1 (3,)" in page


def test_malformed_spec_json_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad_spec.json"
    bad.write_text('{"name": "x",\n "inputs": {"data": [3]},\n "layers": [,]}')
    assert main(["gradcheck", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "line 3" in err and err.count("\n") == 1
    assert main(["draw", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    assert str(bad) in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    assert main(["gradcheck", str(tmp_path / "list.json")]) == 1
    assert "a net spec is a JSON object" in capsys.readouterr().err
    from decaf.commands.train import resolve_model
    args = argparse.Namespace(model=str(bad), pretrained=False, model_args=None, replace_classifier=None, adapt=None)
    with pytest.raises(ValueError, match="bad_spec.json: not valid JSON: .* line 3"):
        resolve_model(args, ["a", "b"], (3, 224, 224))


def test_training_a_pretrained_name_from_scratch_warns(capsys):
    from decaf.commands.train import resolve_model
    args = argparse.Namespace(model="efficientnet_lite0", pretrained=False, model_args=None,
                              replace_classifier=None, adapt=None)
    spec, params, _ = resolve_model(args, ["a", "b"], (3, 224, 224))
    assert params is None
    assert "training efficientnet_lite0 from random weights; add --pretrained" in capsys.readouterr().err
    args.model = "lenet"
    resolve_model(args, ["a", "b"], (1, 28, 28))
    assert "random weights" not in capsys.readouterr().err       # not a pretrained net: nothing to say


def test_extract_with_only_bad_inputs_gives_no_rate(tmp_path, capsys):
    from decaf.io.netfile import save
    from decaf.recipe import Recipe
    spec = {"name": "tiny", "inputs": {"data": [3, 8, 8]}, "layers": [
        {"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc", "num_output": 2}]}
    save(decaf.Net(spec, seed=0), tmp_path / "t.decaf", preprocess=Recipe(crop=8, resize_shorter=8))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    code = main(["extract", str(tmp_path / "bad.jpg"), "--model", str(tmp_path / "t.decaf"), "--blob", "fc",
                 "--quiet", "-o", str(tmp_path / "f.npz")])
    out = capsys.readouterr().out
    assert code == 1
    assert "0 images" in out and "1 skipped" in out and "images/s" not in out
