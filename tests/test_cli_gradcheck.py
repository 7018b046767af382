"""decaf gradcheck: layer types and models, the report, --json, and exit code 1 on a wrong backward."""
import json

import numpy as np
import pytest

from decaf.cli import main
from decaf.layer import LAYERS, Layer, register


def run(capsys, *argv):
    code = main(["gradcheck", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_layer_type_with_params_and_shape(capsys):
    code, out, _ = run(capsys, "Convolution", "--params", '{"num_output": 3, "kernel_size": 3}',
                       "--shape", "2,3,7,7")
    assert code == 0
    assert "eps=1e-06, rtol=0.0001, atol=1e-06" in out                      # the tolerances
    for name in ("input in0", "param convolution.weight", "param convolution.bias"):
        line = next(line for line in out.splitlines() if name in line)
        assert line.startswith("ok ") and "max abs" in line and "max rel" in line
    assert "PASS: all 3 arrays" in out


def test_layer_defaults_loss_and_phase(capsys):
    code, out, _ = run(capsys, "SoftmaxWithLoss")                             # labels get integers
    assert code == 0 and "input scores" in out and "label" not in out.split("\n", 1)[1]
    code, out, _ = run(capsys, "Dropout", "--phase", "train", "--params", '{"dropout_ratio": 0.3}')
    assert code == 0 and "phase train" in out
    code, out, _ = run(capsys, "Pooling", "--params", '{"pool": "ave", "pad": 1}')
    assert code == 0


def test_json_report(capsys):
    code, out, _ = run(capsys, "InnerProduct", "--params", '{"num_output": 2}', "--shape", "3,4", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["passed"] is True and report["rtol"] == 1e-4 and report["atol"] == 1e-6
    assert [r["name"] for r in report["results"]] == ["input in0", "param innerproduct.weight",
                                                      "param innerproduct.bias"]
    assert report["results"][1]["checked"] == 8 and report["results"][1]["max_abs_err"] < 1e-6


def test_lenet_model(capsys):
    code, out, _ = run(capsys, "lenet")
    assert code == 0
    names = [line.split()[2] for line in out.splitlines() if line.startswith(("ok ", "FAIL "))]
    assert names == ["data", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                     "ip1.weight", "ip1.bias", "ip2.weight", "ip2.bias"]
    assert "PASS: all 9 arrays" in out


def test_reduced_input_size_for_big_zoo_models(capsys):
    from decaf.commands.gradcheck import parse_shape, smallest_input_size
    from decaf.models import caffenet
    assert smallest_input_size(caffenet, 227) == 39     # pool5 still gets a 1x1 map
    assert parse_shape("2,3,7,7") == parse_shape("2x3x7x7") == (2, 3, 7, 7)
    code, _, err = run(capsys, "lenet", "--input-size", "20")
    assert code == 1 and "no input_size" in err


class DoubleBrokenBackward(Layer):
    """y = 2x whose backward forgets the factor 2: a bug gradcheck must catch."""
    type_name = "TestDoubleBrokenBackward"
    inplace_ok = False

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, bottom, top):
        np.multiply(bottom[0].data, 2, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff         # should be 2 * top diff


@pytest.fixture
def broken_layer():
    register(DoubleBrokenBackward)
    yield DoubleBrokenBackward.type_name
    LAYERS.pop(DoubleBrokenBackward.type_name)


def test_broken_layer_fails_with_exit_1(capsys, broken_layer):
    code, out, _ = run(capsys, broken_layer, "--shape", "2,3")
    assert code == 1
    line = next(line for line in out.splitlines() if "input in0" in line)
    assert line.startswith("FAIL")
    assert "FAIL: 1 of 1 arrays: input in0" in out
    code, out, _ = run(capsys, broken_layer, "--shape", "2,3", "--json")
    assert code == 1 and json.loads(out)["passed"] is False


def test_broken_layer_inside_a_model_spec_fails(capsys, broken_layer, tmp_path):
    spec = {"name": "with_bug", "inputs": {"x": [4]},
            "layers": [{"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "h", "num_output": 3},
                       {"name": "bug", "type": broken_layer, "bottom": "h", "top": "y"}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    code, out, _ = run(capsys, str(path))
    assert code == 1
    status = {line.split()[2]: line.split()[0] for line in out.splitlines() if line.startswith(("ok ", "FAIL "))}
    assert status == {"x": "FAIL", "ip.weight": "FAIL", "ip.bias": "FAIL"}   # the bug reaches everything below it
    code, _, _ = run(capsys, json.dumps(dict(spec, layers=spec["layers"][:1])))  # inline JSON, no bug
    assert code == 0


def test_errors_are_reported(capsys):
    code, _, err = run(capsys, "NoSuchThing")
    assert code == 1 and "not a layer type, a zoo model" in err
    code, _, err = run(capsys, "ReLU", "--shape", "2,x")
    assert code == 1 and "--shape" in err
    code, _, err = run(capsys, "Convolution", "--params", "{num_output: 3}")
    assert code == 1 and "--params is not valid JSON" in err
    code, _, err = run(capsys, "InnerProduct", "--params", '{"num_outputs": 3}')
    assert code == 1 and "unknown parameter" in err
    code, _, err = run(capsys, "lenet", "--shape", "2,3")
    assert code == 1 and "apply to a layer type" in err


def test_decaf_file_keeps_its_weights(capsys, tmp_path):
    import decaf
    from decaf.models import get_spec
    net = decaf.Net(get_spec("lenet", channels=(2, 3), hidden=8), seed=3)
    path = tmp_path / "small.decaf"
    decaf.save(net, str(path))
    code, out, _ = run(capsys, str(path), "--samples", "5")
    assert code == 0 and "weights from the file" in out and "He-scaled" not in out
    assert "param ip1.weight" in out
