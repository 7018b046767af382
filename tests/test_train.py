"""decaf.train and ``decaf train``: digits from scratch (>= 97 % held-out accuracy, Python API and
CLI), bit-identical resume, frozen parameters, fine-tuning surgery, logs, bad input."""
import contextlib
import io
import json
import pathlib
import re
import shlex

import numpy as np
import pytest
from PIL import Image

import decaf
from decaf import data as D
from decaf import train as T
from decaf.cli import main
from decaf.errors import SpecError
from decaf.models import get_spec
from decaf.solvers import SGD, Adam, Schedule, make_solver


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These nets are tiny: one thread is as fast, and on a shared 2-core machine a second
    OpenMP/BLAS thread that gets descheduled can make every iteration ten times slower."""
    kernel, blas = decaf.get_num_threads()
    decaf.set_num_threads(1)
    yield
    decaf.kernels.set_num_threads(kernel)
    if blas:
        from threadpoolctl import threadpool_limits
        threadpool_limits(blas, user_api="blas")


@pytest.fixture(scope="module")
def digits():
    return D.digits(0.25, seed=0)


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", *argv])
    return code, out.getvalue(), err.getvalue()


def small_spec(num_classes=10, dropout=True, batchnorm=True):
    """A small LeNet-like net for 1x8x8 digits with the layers that carry state: BatchNorm
    statistics and a dropout generator."""
    layers = [{"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1", "num_output": 8,
               "kernel_size": 3, "pad": 1, "weight_filler": {"type": "msra"}}]
    if batchnorm:
        layers.append({"name": "bn1", "type": "BatchNorm", "bottom": "conv1", "top": "bn1", "affine": True})
    layers += [{"name": "relu1", "type": "ReLU", "bottom": layers[-1]["top"], "top": layers[-1]["top"]},
               {"name": "pool1", "type": "Pooling", "bottom": layers[-1]["top"], "top": "pool1", "pool": "max",
                "kernel_size": 2, "stride": 2},
               {"name": "ip1", "type": "InnerProduct", "bottom": "pool1", "top": "ip1", "num_output": 32,
                "weight_filler": {"type": "msra"}},
               {"name": "relu2", "type": "ReLU", "bottom": "ip1", "top": "ip1"}]
    if dropout:
        layers.append({"name": "drop1", "type": "Dropout", "bottom": "ip1", "top": "ip1", "dropout_ratio": 0.3})
    layers += [{"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "ip2", "num_output": num_classes},
               {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss"}]
    return {"name": "small", "inputs": {"data": [1, 8, 8], "label": []}, "layers": layers}


# ---- the headline: digits from scratch ---------------------------------------------------------

def test_digits_python_api_reaches_97_percent(digits):
    train, test = digits
    net = decaf.Net(get_spec("lenet", input_shape=(1, 8, 8)), phase="train", seed=0)
    solver = SGD(net, lr=0.05, momentum=0.9, weight_decay=5e-4)
    trainer = T.Trainer(net, solver, D.Batches(train, 64, seed=0), test_data=test, test_interval=100)
    history = trainer.run(500)
    result = trainer.evaluate()
    assert result["n"] == 450 and result["accuracy"] >= 0.97, result
    assert history[-1]["iter"] == 500 and history[-1]["test_accuracy"] == result["accuracy"]
    assert history[0]["iter"] == 0 and history[0]["test_accuracy"] < 0.3       # evaluated before training


def test_digits_cli_reaches_97_percent(tmp_path):
    out = tmp_path / "run"
    code, stdout, err = cli("lenet", "--digits", "--iters", "500", "--lr", "0.05", "--out", str(out),
                            "--no-progress", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["test_accuracy"] >= 0.97 and summary["test_examples"] == 450 and summary["iters"] == 500
    assert {p.name for p in out.iterdir()} == {"model.decaf", "snapshot_iter_500.decaf", "log.csv", "log.json",
                                                "loss.png"}
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0] == ",".join(T.LOG_COLUMNS) and len(rows) == 1 + 1 + 50   # header, iter 0, every 10 iterations
    # the saved model is an inference net with a softmax output and the digit names
    net = decaf.load(out / "model.decaf")
    assert net.meta["labels"] == [str(i) for i in range(10)] and "label" not in net.input_shapes
    _, test = D.digits(0.25, seed=0)
    prob = net.forward(data=test.x)["prob"]
    np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)
    assert np.mean(prob.argmax(axis=1) == test.labels) == pytest.approx(summary["test_accuracy"])


def test_cli_help_has_an_example():
    from decaf.cli import build_parser
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "decaf train lenet --digits" in text and "--replace-classifier" in text and "--resume" in text


# ---- snapshots and resume ---------------------------------------------------------------------

def make_trainer(digits, kind, seed=3, prefix=None):
    train, test = digits
    net = decaf.Net(small_spec(), phase="train", seed=seed)
    kw = {"momentum": 0.9} if kind in ("sgd", "nesterov") else {}
    solver = make_solver(kind, net, lr=Schedule("step", 0.02, gamma=0.5, step=7), weight_decay=1e-3,
                         clip_norm=5.0, **kw)
    data = D.Batches(train, 16, seed=seed, crop=8, pad=1, mirror=True)
    return T.Trainer(net, solver, data, test_data=test.subset(np.arange(60)), test_interval=9, display=4,
                     snapshot_interval=10, snapshot_prefix=prefix)


@pytest.mark.parametrize("kind", ["nesterov", "adam"])
def test_resume_is_bit_identical(tmp_path, digits, kind):
    straight = make_trainer(digits, kind)
    straight.run(24)

    first = make_trainer(digits, kind, prefix=str(tmp_path / "snap"))
    first.run(13)                                  # snapshots at 10 only; stops mid-window
    path = first.snapshot(tmp_path / "at13.decaf")
    del first
    resumed = T.Trainer.resume(path, digits[0], test_data=digits[1].subset(np.arange(60)))
    assert resumed.iter == 13
    resumed.run(24)

    for name, p in straight.net.params.items():
        assert np.array_equal(p.data, resumed.net.params[name].data), name
    s_info, s_arrays = straight.solver.state()
    r_info, r_arrays = resumed.solver.state()
    assert s_info == r_info and all(np.array_equal(s_arrays[k], r_arrays[k]) for k in s_arrays)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in straight.history]
    # the interrupted run logged (and evaluated) its last iteration, 13, besides the regular rows
    assert [row["iter"] for row in resumed.history if row["iter"] not in (13,)] == [r["iter"] for r in strip]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history
                     if row["iter"] != 13]
    assert (tmp_path / "snap_iter_10.decaf").exists()

    # the interval snapshot resumes as well
    again = T.Trainer.resume(tmp_path / "snap_iter_10.decaf", digits[0], test_data=digits[1].subset(np.arange(60)))
    again.run(24)
    assert all(np.array_equal(p.data, again.net.params[n].data) for n, p in straight.net.params.items())


def test_resume_errors(tmp_path, digits):
    trainer = make_trainer(digits, "sgd")
    trainer.run(2)
    path = trainer.snapshot(tmp_path / "s.decaf")
    with pytest.raises(ValueError, match="same training data"):
        T.Trainer.resume(path, digits[0].subset(np.arange(100)))
    model = trainer.save_model(tmp_path / "m.decaf")
    with pytest.raises(T.TrainingError, match="not a training snapshot"):
        T.Trainer.resume(model, digits[0])


def test_cli_resume_matches_an_uninterrupted_run(tmp_path):
    common = ["--digits", "--lr", "0.05", "--no-progress", "--json", "--model-args",
              '{"channels": [4, 8], "hidden": 32}']
    assert cli("lenet", "--iters", "60", "--out", str(tmp_path / "a"), *common)[0] == 0
    assert cli("lenet", "--iters", "30", "--out", str(tmp_path / "b"), *common)[0] == 0
    code, stdout, err = cli("--resume", str(tmp_path / "b" / "snapshot_iter_30.decaf"), "--iters", "60",
                            "--out", str(tmp_path / "b"), "--digits", "--no-progress", "--json")
    assert code == 0, err
    a = decaf.io.netfile.read_netfile(tmp_path / "a" / "model.decaf")[1]
    b = decaf.io.netfile.read_netfile(tmp_path / "b" / "model.decaf")[1]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    log = json.loads((tmp_path / "b" / "log.json").read_text())
    iters = [r["iter"] for r in log["history"]]
    assert iters[0] == 0 and 30 in iters and iters[-1] == 60     # one log across both runs
    code, _, err = cli("--resume", str(tmp_path / "b" / "snapshot_iter_60.decaf"), "--iters", "60", "--digits",
                       "--out", str(tmp_path / "b"))
    assert code == 1 and "already at iteration 60" in err


# ---- frozen parameters and fine-tuning ----------------------------------------------------------

def test_frozen_parameters_are_bit_identical(digits):
    spec = T.freeze(small_spec(), ["ip2"])
    net = decaf.Net(spec, phase="train", seed=1)
    before = net.param_arrays()
    trainer = T.Trainer(net, SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-3), D.Batches(digits[0], 32, seed=1))
    trainer.run(30)
    after = net.param_arrays()
    for name in before:
        if name.startswith("ip2."):
            assert not np.array_equal(before[name], after[name]), name
        else:       # conv, BatchNorm affine and running statistics, ip1
            assert np.array_equal(before[name], after[name]), name
    # nothing below ip2 is trained, so backward stops there
    assert [n for n, need in net.needs_backward.items() if need] == ["ip2", "loss"]
    assert not net.params["ip1.weight"].has_diff()


def test_surgery_helpers():
    spec = get_spec("lenet", input_shape=(1, 8, 8), with_loss=False)
    new = T.replace_classifier(spec, "ip2", 3)
    assert spec["layers"][-2]["name"] == "ip2" and spec["layers"][-2]["num_output"] == 10   # untouched
    assert new["layers"][-2]["name"] == "ip2_new" and new["layers"][-2]["num_output"] == 3
    assert new["layers"][-2]["top"] == "ip2"
    with pytest.raises(SpecError, match="no layer 'fc8'"):
        T.replace_classifier(spec, "fc8", 3)
    with pytest.raises(SpecError, match="ReLU"):
        T.replace_classifier(spec, "relu1", 3)

    train_spec = T.training_spec(new)
    assert T.roles(train_spec) == {"data": "data", "label": "label", "scores": "ip2", "loss": "loss"}
    assert T.deploy_spec(train_spec)["inputs"] == {"data": [1, 8, 8]}
    assert T.deploy_spec(train_spec)["layers"][-1] == {"name": "prob", "type": "Softmax", "bottom": "ip2",
                                                       "top": "prob"}
    with pytest.raises(SpecError, match="neither a SoftmaxWithLoss nor a final Softmax"):
        T.training_spec({"name": "x", "inputs": {"data": [3]},
                         "layers": [{"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip",
                                     "num_output": 2}]})

    frozen = T.freeze(small_spec(), ["ip2"])
    by = {layer["name"]: layer for layer in frozen["layers"]}
    assert by["conv1"]["lr_mult"] == 0 and by["bn1"]["use_global_stats"] is True and "lr_mult" not in by["ip2"]
    with pytest.raises(SpecError, match="no layer"):
        T.freeze(small_spec(), ["fc9"])


def test_adaptation_layers_keep_in_place_chain():
    """On a CaffeNet-shaped tail (fc7 -> relu7 -> in-place drop7 -> fc8 -> prob), adapting on relu7
    keeps drop7 (it writes relu7), drops fc8 and prob, and adds fca / relu_a / fcb / loss."""
    spec = {"name": "tail", "inputs": {"data": [6]},
            "layers": [{"name": "fc7", "type": "InnerProduct", "bottom": "data", "top": "fc7", "num_output": 5},
                       {"name": "relu7", "type": "ReLU", "bottom": "fc7", "top": "relu7"},
                       {"name": "drop7", "type": "Dropout", "bottom": "relu7", "top": "relu7"},
                       {"name": "fc8", "type": "InnerProduct", "bottom": "relu7", "top": "fc8", "num_output": 7},
                       {"name": "prob", "type": "Softmax", "bottom": "fc8", "top": "prob"}]}
    new = T.add_adaptation_layers(spec, "relu7", 3, hidden=4)
    assert [layer["name"] for layer in new["layers"]] == ["fc7", "relu7", "drop7", "fca", "relu_a", "fcb", "loss"]
    assert new["inputs"] == {"data": [6], "label": []}
    net = decaf.Net(T.freeze(new, T.ADAPTATION_LAYERS), phase="train")
    assert net.params["fca.weight"].shape == (4, 5) and net.params["fcb.weight"].shape == (3, 4)
    assert net.params["fc7.weight"].lr_mult == 0 and net.params["fca.weight"].lr_mult == 1
    deploy = T.add_adaptation_layers(spec, "relu7", 3, with_loss=False)
    assert deploy["layers"][-1]["type"] == "Softmax" and deploy["inputs"] == {"data": [6]}
    with pytest.raises(SpecError, match="no blob 'fc9'"):
        T.add_adaptation_layers(spec, "fc9", 3)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, digits):
    """A small LeNet trained briefly on all ten digits, saved as a .decaf file."""
    net = decaf.Net(get_spec("lenet", input_shape=(1, 8, 8), channels=(8, 16), hidden=64), phase="train")
    trainer = T.Trainer(net, SGD(net, lr=0.05, momentum=0.9), D.Batches(digits[0], 64), labels=list("0123456789"))
    trainer.run(150)
    return trainer.save_model(tmp_path_factory.mktemp("pre") / "lenet_digits.decaf")


def three_digits(source):
    keep = np.flatnonzero(source.labels < 3)
    return source.subset(keep)


@pytest.mark.parametrize("how", ["classifier", "adapt"])
def test_finetune_trains_only_new_layers(pretrained, digits, how):
    old = decaf.load(pretrained)
    kw = {"classifier": "ip2"} if how == "classifier" else {"feature_blob": "ip1", "hidden": 32}
    net = T.finetune_net(old, 3, **kw)
    new_layers = ["ip2_new"] if how == "classifier" else list(T.ADAPTATION_LAYERS)
    kept = {n: p.data.copy() for n, p in net.params.items() if n.split(".")[0] not in new_layers}
    assert kept and all(np.array_equal(v, old.params[n].data) for n, v in kept.items())   # copied
    train, test = three_digits(digits[0]), three_digits(digits[1])
    trainer = T.Trainer(net, SGD(net, lr=0.05, momentum=0.9), D.Batches(train, 32), test_data=test)
    trainer.run(60)
    assert trainer.evaluate()["accuracy"] >= 0.95
    assert all(np.array_equal(v, net.params[n].data) for n, v in kept.items())             # frozen


# ---- bad input ----------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_with_the_iteration(digits):
    net = decaf.Net(small_spec(dropout=False, batchnorm=False), phase="train", seed=0)
    trainer = T.Trainer(net, SGD(net, lr=1e8), D.Batches(digits[0], 32, seed=0))
    with pytest.raises(T.TrainingError, match=r"the loss is nan at iteration (\d+) .*lower the learning rate") as e:
        trainer.run(100)
    it = int(e.value.args[0].split("iteration ")[1].split()[0])
    assert it == trainer.iter + 1 and 1 < it < 100


def test_labels_and_shapes_that_do_not_fit(digits):
    x, y = digits[0].x[:20], digits[0].labels[:20].copy()
    net = decaf.Net(small_spec(num_classes=5), phase="train")
    with pytest.raises(ValueError, match="training labels: label 9 is out of range: the net has 5 classes"):
        T.Trainer(net, SGD(net), D.Batches((x, y), 8))
    y5 = y % 5
    with pytest.raises(ValueError, match="test labels: label 7 is out of range"):
        T.Trainer(net, SGD(net), D.Batches((x, y5), 8), test_data=D.ArraySource(x, np.full(20, 7)))
    with pytest.raises(ValueError, match=r"examples of shape \(1, 6, 6\), the net's input 'data' wants \(1, 8, 8\)"):
        T.Trainer(net, SGD(net), D.Batches((x, y5), 8, crop=6))
    with pytest.raises(ValueError, match="19 labels for 20 examples"):
        D.Batches((x, y5[:19]), 8)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cli_bad_input(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((10, 1, 8, 8)), y=np.zeros(9))
    code, _, err = cli("lenet", "--data", str(tmp_path / "bad.npz"), "--iters", "5", "--out", str(tmp_path / "o"))
    assert code == 1 and "9 labels for 10 examples" in err
    np.savez(tmp_path / "nox.npz", images=np.zeros((10, 8, 8)))
    code, _, err = cli("lenet", "--data", str(tmp_path / "nox.npz"), "--out", str(tmp_path / "o"))
    assert code == 1 and "needs arrays x and y" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("lenet", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 1 and "has no class subfolders" in err
    code, _, err = cli("lenet", "--digits", "--iters", "50", "--lr", "1e9", "--no-progress",
                       "--out", str(tmp_path / "nan"))
    assert code == 1 and "the loss is nan at iteration" in err
    assert (tmp_path / "nan" / "log.csv").exists()
    code, _, err = cli("--digits", "--out", str(tmp_path / "o"))
    assert code == 1 and "give a MODEL" in err


def make_pattern_folder(root, per_class=15, seed=0):
    """Three classes of 16x16 grey images: a horizontal bar, a vertical bar, a diagonal, plus noise."""
    rng = np.random.default_rng(seed)
    for name in ("diag", "horizontal", "vertical"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (16, 16))
            k = rng.integers(3, 13)
            if name == "horizontal":
                img[k - 1:k + 2, :] = 255
            elif name == "vertical":
                img[:, k - 1:k + 2] = 255
            else:
                for d in (-1, 0, 1):
                    img[np.arange(16), np.clip(np.arange(16) + d, 0, 15)] = 255
            Image.fromarray(img.astype(np.uint8)).convert("RGB").save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("how", [["--replace-classifier", "ip2"], ["--adapt", "ip1", "--hidden", "32"]])
def test_cli_finetunes_a_decaf_file_on_an_image_folder(tmp_path, pretrained, how):
    folder = make_pattern_folder(tmp_path / "patterns")
    code, stdout, err = cli(str(pretrained), "--data", str(folder), *how, "--iters", "80", "--batch", "16",
                            "--lr", "0.05", "--test-fraction", "0.2", "--mirror", "--out", str(tmp_path / "ft"),
                            "--no-progress")
    assert code == 0, err
    assert "copied" in stdout and "test accuracy" in stdout
    summary = json.loads((tmp_path / "ft" / "log.json").read_text())["summary"]
    assert summary["test_examples"] == 9 and summary["test_accuracy"] >= 0.8
    net = decaf.load(tmp_path / "ft" / "model.decaf")
    assert net.meta["labels"] == ["diag", "horizontal", "vertical"]
    old = decaf.load(pretrained)
    assert np.array_equal(net.params["conv1.weight"].data, old.params["conv1.weight"].data)


def test_cli_lbfgs_on_a_spec_file(tmp_path):
    spec = {"name": "softreg", "inputs": {"data": [1, 8, 8]},
            "layers": [{"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc", "num_output": 10},
                       {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]}
    (tmp_path / "softreg.json").write_text(json.dumps(spec))
    code, stdout, err = cli(str(tmp_path / "softreg.json"), "--digits", "--solver", "lbfgs", "--iters", "40",
                            "--weight-decay", "1e-3", "--out", str(tmp_path / "lb"), "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["test_accuracy"] >= 0.93 and summary["iters"] <= 40
    assert decaf.load(tmp_path / "lb" / "model.decaf").forward(data=np.zeros((2, 1, 8, 8)))["prob"].shape == (2, 10)


def test_logs_and_plot(tmp_path):
    history = [{"iter": 0, "epoch": 0, "lr": 0.1, "loss": None, "accuracy": None, "test_loss": 2.3,
                "test_accuracy": 0.1, "seconds": 0},
               {"iter": 10, "epoch": 0.5, "lr": 0.1, "loss": 1.0, "accuracy": 0.7, "test_loss": None,
                "test_accuracy": None, "seconds": 0.1}]
    T.write_logs(history, tmp_path, {"note": "x"})
    assert (tmp_path / "log.csv").read_text().splitlines()[1] == "0,0,0.1,,,2.3,0.1,0"
    assert json.loads((tmp_path / "log.json").read_text())["summary"] == {"note": "x"}
    T.plot_history(history, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_adam_trains_through_the_trainer(digits):
    net = decaf.Net(small_spec(), phase="train", seed=0)
    trainer = T.Trainer(net, Adam(net, lr=0.005), D.Batches(digits[0], 32, seed=0), test_data=digits[1],
                        progress=True)          # the tqdm bar (switched off: stderr is not a terminal)
    trainer.run(150)
    assert trainer.evaluate()["accuracy"] >= 0.9


# ---- docs/training.md is a real run ---------------------------------------------------------------

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "training.md"
DECIMAL = re.compile(r"[-+]?(\d+\.\d*|\.\d+)(e[-+]?\d+)?")


def masked(text):
    """Lines with decimal numbers (losses, accuracies, seconds) masked; integers stay."""
    return [DECIMAL.sub("#", line.rstrip()) for line in text.strip().splitlines()]


def fenced_blocks(text):
    """[(language, code)] for every fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)


def test_training_page_is_real(tmp_path, monkeypatch):
    """Every ```console block (one `$ decaf ...` command) and ```python block on the page runs, in
    order, in one folder; the output must equal the block's own lines (console) or the ```text
    block that follows (python), decimal numbers masked. Links must resolve."""
    text = DOC.read_text()
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not link.startswith("http"):
            assert (DOC.parent / link).exists(), link
    monkeypatch.chdir(tmp_path)
    blocks = fenced_blocks(text)
    namespace = {}
    ran = 0
    for i, (lang, code) in enumerate(blocks):
        if lang == "console":
            command, *shown = code.rstrip("\n").split("\n")
            assert command.startswith("$ decaf train "), command
            status, out, err = cli(*shlex.split(command[len("$ decaf train "):]))
            expected = "\n".join(shown)
            assert status == (1 if "error:" in expected else 0), err
            assert masked(out + err) == masked(expected), f"block {i}: {command}\n{out}{err}"
        elif lang == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"training.md block {i}", "exec"), namespace)
            if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
                assert masked(out.getvalue()) == masked(blocks[i + 1][1]), f"block {i}:\n{out.getvalue()}"
        else:
            continue
        ran += 1
    assert ran == 7
